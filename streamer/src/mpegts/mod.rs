//! SRT's payload: MPEG-TS (`demux`), and the SRT stream id a publisher names its
//! reservation and key in (`stream_id`).
//!
//! Contract: sans-IO, no clock; what goes in is bounded (see each module).

pub mod demux;
pub mod framer;
pub mod stream_id;
