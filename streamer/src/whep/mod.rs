//! WHEP playback: the live stream to browsers by WebRTC, well under a second behind.
//!
//! Contract: `POST /whep/<reservation_id>` on the viewer port with a browser's SDP offer
//! answers with an SDP answer and a session (`Location`), while the reservation is live; the
//! viewer then gets the playout's live tap (`crate::live_tap`) through the reservation's one
//! [`relay`]: H.264 passed through ([`feed`]), AAC turned into Opus in-process
//! ([`transcode`], [`opus`]) once for every viewer. The session ends
//! with `DELETE` on its `Location`, when the peer goes, or when the playout ends.

pub mod edge;
pub mod feed;
pub mod opus;
pub mod relay;
pub mod transcode;
