//! A camera as a [`Source`]: pulled with retina's client (DESCRIBE, SETUP over TCP, PLAY,
//! demuxed), its H.264 and AAC streams relayed frame by frame as they arrive.
//!
//! Contract: [`open_camera`] returns once every relayed stream's parameters are known (from
//! the camera's SDP, or else from its first frames, which are kept and sent first); after
//! that a task pumps frames into a bounded channel, and ends with an error item when the
//! camera stops or fails. Credentials come from the URL's user info
//! (`rtsp://user:pass@cam/…`) and are not shown back. Only retina's public client API is
//! used here.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions, Transport};
use retina::codec::{
    CodecItem, FrameFormat, ParameterSetInsertion, ParametersRef, VideoParametersCodec,
};

use super::{Codec, Frame, Source};
use crate::camera_url::CameraUrl;

/// Frames held in the channel between the camera and the publisher.
const AHEAD: usize = 256;
/// How long to wait for the streams' parameters after PLAY.
const PARAMETERS_WAIT: Duration = Duration::from_secs(10);
/// Frames kept while waiting for them.
const MAX_EARLY_FRAMES: usize = 600;
const DESCRIBE_WAIT: Duration = Duration::from_secs(15);

/// Connects to the camera at `url` and starts relaying it.
pub async fn open_camera(url: &str) -> Result<Source, String> {
    let camera = CameraUrl::parse(url)?;
    let creds = camera
        .login
        .map(|(username, password)| Credentials { username, password });
    let shown = camera.shown;
    let parsed = camera.url;
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent(concat!("slotcast/", env!("CARGO_PKG_VERSION")).to_string());
    let mut session = tokio::time::timeout(DESCRIBE_WAIT, Session::describe(parsed, options))
        .await
        .map_err(|_| format!("camera {shown}: no answer to DESCRIBE in {DESCRIBE_WAIT:?}"))?
        .map_err(|e| format!("camera {shown}: {}", first_line(&e)))?;

    // The streams we can relay, in the camera's order.
    let chosen: Vec<usize> = session
        .streams()
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            matches!(
                (s.media(), s.encoding_name()),
                ("video", "h264") | ("audio", "mpeg4-generic")
            )
        })
        .map(|(i, _)| i)
        .collect();
    if chosen.is_empty() {
        let offered: Vec<String> = session
            .streams()
            .iter()
            .map(|s| format!("{} {}", s.media(), s.encoding_name()))
            .collect();
        return Err(format!(
            "camera {shown} offers {}; H.264 video or AAC audio is needed",
            offered.join(", ")
        ));
    }
    for &i in &chosen {
        let setup = SetupOptions::default()
            .transport(Transport::Tcp(Default::default()))
            // Length-prefixed NAL units and raw AAC, with the parameter sets in every
            // keyframe, so a camera that changes them mid-stream is still decodable.
            .frame_format(FrameFormat {
                parameter_set_insertion: ParameterSetInsertion::EachKeyFrame,
                ..FrameFormat::MP4
            });
        session
            .setup(i, setup)
            .await
            .map_err(|e| format!("camera {shown}: SETUP: {}", first_line(&e)))?;
    }
    let mut playing = session
        .play(PlayOptions::default())
        .await
        .map_err(|e| format!("camera {shown}: PLAY: {}", first_line(&e)))?
        .demuxed()
        .map_err(|e| format!("camera {shown}: {}", first_line(&e)))?;

    // Parameters from the SDP, or from the first frames.
    let mut early = Vec::new();
    let deadline = tokio::time::Instant::now() + PARAMETERS_WAIT;
    let tracks = loop {
        let known: Option<Vec<Codec>> = chosen
            .iter()
            .map(|&i| codec_of(playing.streams()[i].parameters()))
            .collect();
        if let Some(tracks) = known {
            break tracks;
        }
        if early.len() >= MAX_EARLY_FRAMES {
            return Err(format!(
                "camera {shown}: no codec parameters in its first frames"
            ));
        }
        match tokio::time::timeout_at(deadline, playing.next()).await {
            Err(_) => {
                return Err(format!(
                    "camera {shown}: no codec parameters within {PARAMETERS_WAIT:?}"
                ))
            }
            Ok(None) => return Err(format!("camera {shown} ended before it sent a frame")),
            Ok(Some(Err(e))) => return Err(format!("camera {shown}: {}", first_line(&e))),
            Ok(Some(Ok(item))) => early.push(item),
        }
    };
    let describe = format!(
        "camera {shown} ({})",
        tracks
            .iter()
            .map(Codec::name)
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    tokio::spawn(async move {
        let track_of = |stream: usize| chosen.iter().position(|&c| c == stream);
        for item in early {
            if let Some(frame) = frame_of(item, &track_of) {
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let item = tokio::select! {
                item = playing.next() => item,
                () = tx.closed() => return,
            };
            let last = match item {
                None => Err(format!("camera {shown} ended the stream")),
                Some(Err(e)) => Err(format!("camera {shown}: {}", first_line(&e))),
                Some(Ok(item)) => {
                    if let Some(frame) = frame_of(item, &track_of) {
                        if tx.send(Ok(frame)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            // The end (or a failure) is the last item: the session is not polled again.
            let _ = tx.send(last).await;
            return;
        }
    });
    Ok(Source {
        tracks,
        frames: rx,
        describe,
    })
}

fn codec_of(parameters: Option<ParametersRef<'_>>) -> Option<Codec> {
    match parameters? {
        ParametersRef::Video(video) => match video.codec_params() {
            VideoParametersCodec::H264 { sps, pps } => Some(Codec::H264 {
                sps: sps.to_vec(),
                pps: pps.to_vec(),
                length_size: 4,
            }),
            _ => None,
        },
        ParametersRef::Audio(audio) => Some(Codec::Aac {
            config: audio.extra_data().to_vec(),
            sample_rate: audio.clock_rate(),
            channels: audio.channels().get(),
        }),
        ParametersRef::Message(_) => None,
    }
}

fn frame_of(item: CodecItem, track_of: &impl Fn(usize) -> Option<usize>) -> Option<Frame> {
    match item {
        CodecItem::VideoFrame(frame) => Some(Frame {
            track: track_of(frame.stream_id())?,
            timestamp: frame.timestamp().elapsed(),
            // RTP carries presentation times only.
            decoded: frame.timestamp().elapsed(),
            due: None,
            keyframe: frame.is_random_access_point(),
            data: Bytes::from(frame.into_data()),
        }),
        CodecItem::AudioFrame(frame) => Some(Frame {
            track: track_of(frame.stream_id())?,
            timestamp: frame.timestamp().elapsed(),
            decoded: frame.timestamp().elapsed(),
            due: None,
            keyframe: true,
            data: Bytes::copy_from_slice(frame.data()),
        }),
        _ => None,
    }
}

/// The first line of retina's error (the rest is connection detail over several lines).
fn first_line(e: &retina::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&text)
        .trim()
        .to_string()
}
