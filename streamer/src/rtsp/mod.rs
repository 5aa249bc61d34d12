//! RTSP publish server core (being written).
