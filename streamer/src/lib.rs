//! The distribution server (issue 4, in progress): RTSP ingest on the dedicated network inside
//! the reserved window, served to viewers as low-latency HLS.
//!
//! Contract: protocol and media code here is sans-IO (bytes and events in, bytes and events
//! out, time passed in); sockets and files live in thin async edges. So far: the LL-HLS
//! playlist writer.

pub mod playlist;
