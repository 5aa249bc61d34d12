//! The distribution server: RTSP ingest on the dedicated network inside the reserved window,
//! served to viewers as low-latency HLS.
//!
//! Contract: protocol and media code here is sans-IO (bytes and events in, bytes and events
//! out, time passed in); sockets and files live in thin async edges.

pub mod error;
pub mod media;
pub mod playlist;
pub mod rtsp;
pub use error::{Result, StreamerError};
