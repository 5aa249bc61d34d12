//! RTP to frames through retina's depacketizer (being written).
