//! The streamer's one error enum.
//!
//! Contract: protocol refusals a peer should see (an RTSP 401, a playlist 404) are answers,
//! not errors; these are failures of our own side or of a whole stream.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StreamerError {
    #[error("configuration: {0}")]
    Config(String),
    /// A listener could not be opened (`what`: for whom).
    #[error("cannot listen {what} on {addr}: {source}")]
    Listen {
        what: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// retina's depacketizer said no (it says why in words only), or a stream broke a rule
    /// of ours.
    #[error("RTP depacketizing: {0}")]
    Depacketize(String),
    #[error("muxing: {0}")]
    Mux(String),
    /// mp4-atom could not read or write a box.
    #[error("muxing: {what}: {source}")]
    Box {
        what: &'static str,
        source: mp4_atom::Error,
    },
    /// A video stream went [`crate::media_path::KEYFRAME_WAIT`] or
    /// [`crate::media_path::KEYFRAME_BYTES`] without a keyframe.
    #[error("no_keyframe: no video keyframe for {seconds} s and {bytes} bytes")]
    NoKeyframe { seconds: u64, bytes: usize },
    /// A WebRTC peer failed (str0m said why in words), or could not be made.
    #[error("webrtc: {0}")]
    WebRtc(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = StreamerError> = std::result::Result<T, E>;
