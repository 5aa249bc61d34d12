//! The SDP of an ANNOUNCE, read into [`TrackSpec`]s.
//!
//! Contract: parses with sdp-types, then reads each `m=` section's first payload type with
//! its `a=rtpmap`, `a=fmtp` and `a=control`. Audio and video sections become tracks, in
//! order, whether we can ingest them or not ([`unsupported`] says why not); other sections
//! (application, text, ...) and sections over other profiles (SRTP) cannot be a `TrackSpec`
//! and are kept aside only so that a SETUP for them gets a clear answer. What we can ingest: H264 and H265 video at 90 kHz, and
//! MPEG4-GENERIC (AAC) audio in `mode=AAC-hbr` with a `config`, over `RTP/AVP`: what the
//! depacketizer takes (`RTP/AVPF` is read as `RTP/AVP`).
//! At most 8 media sections: each set-up track may cost the host a UDP port pair.

use crate::media::{TrackKind, TrackSpec};

/// Plain RTP profiles (AVPF only adds feedback, which a publisher's packets do not need).
const RTP_PROFILES: [&str; 2] = ["RTP/AVP", "RTP/AVPF"];

/// Each set-up track may cost the host a UDP port pair: a publisher has a few, not hundreds.
const MAX_MEDIA_SECTIONS: usize = 8;

/// What an ANNOUNCE described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Description {
    pub tracks: Vec<TrackSpec>,
    /// Sections that cannot be a track (not audio or video, or not plain RTP): what they
    /// are, and their control.
    pub others: Vec<(String, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SdpError {
    /// Not SDP, or not SDP we can read: 400.
    Malformed(String),
    /// Nothing we can ingest: 415.
    NothingSupported(String),
}

pub(super) fn parse(body: &[u8]) -> Result<Description, SdpError> {
    let session =
        sdp_types::Session::parse(body).map_err(|e| SdpError::Malformed(format!("SDP: {e}")))?;
    if session.medias.len() > MAX_MEDIA_SECTIONS {
        return Err(SdpError::Malformed(format!(
            "SDP with {} media sections; at most {MAX_MEDIA_SECTIONS}",
            session.medias.len()
        )));
    }
    let mut tracks = Vec::new();
    let mut others = Vec::new();
    for (i, media) in session.medias.iter().enumerate() {
        let control = media
            .get_first_attribute_value("control")
            .flatten()
            .map(|c| c.trim().to_owned());
        let kind = match media.media.as_str() {
            _ if !RTP_PROFILES
                .iter()
                .any(|p| media.proto.eq_ignore_ascii_case(p)) =>
            {
                others.push((format!("{} over {}", media.media, media.proto), control));
                continue;
            }
            "video" => TrackKind::Video,
            "audio" => TrackKind::Audio,
            _ => {
                others.push((media.media.clone(), control));
                continue;
            }
        };
        let section = i + 1;
        let first = media
            .fmt
            .split_ascii_whitespace()
            .next()
            .unwrap_or_default();
        let payload_type = first
            .parse::<u8>()
            .ok()
            .filter(|&pt| pt <= 127)
            .ok_or_else(|| {
                SdpError::Malformed(format!(
                    "SDP media section {section}: payload type {first:?}"
                ))
            })?;
        let mut spec = TrackSpec {
            kind,
            media: media.media.clone(),
            encoding_name: String::new(),
            payload_type,
            clock_rate: 0,
            channels: None,
            fmtp: for_payload_type(media.get_attribute_values("fmtp"), payload_type)
                .map(str::to_owned),
            control,
        };
        if let Some(rtpmap) = for_payload_type(media.get_attribute_values("rtpmap"), payload_type) {
            let mut parts = rtpmap.splitn(3, '/');
            spec.encoding_name = parts.next().unwrap_or_default().trim().to_owned();
            spec.clock_rate = parts
                .next()
                .and_then(|rate| rate.trim().parse().ok())
                .ok_or_else(|| {
                    SdpError::Malformed(format!("SDP media section {section}: rtpmap {rtpmap:?}"))
                })?;
            spec.channels = match parts.next() {
                None => None,
                Some(channels) => Some(channels.trim().parse().map_err(|_| {
                    SdpError::Malformed(format!("SDP media section {section}: rtpmap {rtpmap:?}"))
                })?),
            };
        }
        tracks.push(spec);
    }
    if !tracks.iter().any(|t| unsupported(t).is_none()) {
        let mut found: Vec<String> = tracks.iter().map(describe).collect();
        found.extend(others.iter().map(|(media, _)| media.clone()));
        let found = if found.is_empty() {
            "no media".to_owned()
        } else {
            found.join(", ")
        };
        return Err(SdpError::NothingSupported(format!(
            "no supported track ({found}); slotcast takes H264 or H265 video and AAC \
             (MPEG4-GENERIC, AAC-hbr) audio"
        )));
    }
    Ok(Description { tracks, others })
}

/// The attribute value for `pt`, after the payload type: `a=rtpmap:96 H264/90000` -> `H264/90000`.
fn for_payload_type<'a>(values: impl Iterator<Item = Option<&'a str>>, pt: u8) -> Option<&'a str> {
    values.flatten().find_map(|value| {
        let (first, rest) = value.trim().split_once(|c: char| c.is_ascii_whitespace())?;
        (first.parse() == Ok(pt)).then(|| rest.trim())
    })
}

/// Why we cannot ingest this track, or `None` if we can.
pub(super) fn unsupported(track: &TrackSpec) -> Option<String> {
    let name = track.encoding_name.to_ascii_uppercase();
    let ok = match (track.kind, name.as_str()) {
        (TrackKind::Video, "H264" | "H265") => track.clock_rate == 90_000,
        (TrackKind::Audio, "MPEG4-GENERIC") => {
            let mode = fmtp_param(track, "mode");
            track.clock_rate > 0
                && mode.is_some_and(|m| m.eq_ignore_ascii_case("AAC-hbr"))
                && fmtp_param(track, "config").is_some_and(|c| !c.is_empty())
        }
        _ => false,
    };
    (!ok).then(|| format!("{} is not supported", describe(track)))
}

fn describe(track: &TrackSpec) -> String {
    if track.encoding_name.is_empty() {
        format!(
            "{} payload type {} without rtpmap",
            track.media, track.payload_type
        )
    } else {
        format!(
            "{} {}/{}",
            track.media, track.encoding_name, track.clock_rate
        )
    }
}

fn fmtp_param<'a>(track: &'a TrackSpec, name: &str) -> Option<&'a str> {
    track.fmtp.as_deref()?.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// What ffmpeg 6 announces for `-c:v libx264 -c:a aac -f rtsp`.
    pub(in crate::rtsp) const FFMPEG_SDP: &str = "v=0\r\n\
o=- 0 0 IN IP4 127.0.0.1\r\n\
s=No Name\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
a=tool:libavformat 60.16.100\r\n\
m=video 0 RTP/AVP 96\r\n\
b=AS:1000\r\n\
a=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFAFuwEQAAADABAAAAMDIPGDGWA=,aOvjyyLA; profile-level-id=64001F\r\n\
a=control:streamid=0\r\n\
m=audio 0 RTP/AVP 97\r\n\
b=AS:128\r\n\
a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=119056E500\r\n\
a=control:streamid=1\r\n";

    pub(in crate::rtsp) fn ffmpeg_tracks() -> Vec<TrackSpec> {
        vec![
            TrackSpec {
                kind: TrackKind::Video,
                media: "video".into(),
                encoding_name: "H264".into(),
                payload_type: 96,
                clock_rate: 90_000,
                channels: None,
                fmtp: Some(
                    "packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFAFuwEQAAADABAAAAMDIPGDGWA=,aOvjyyLA; profile-level-id=64001F"
                        .into(),
                ),
                control: Some("streamid=0".into()),
            },
            TrackSpec {
                kind: TrackKind::Audio,
                media: "audio".into(),
                encoding_name: "MPEG4-GENERIC".into(),
                payload_type: 97,
                clock_rate: 48_000,
                channels: Some(2),
                fmtp: Some(
                    "profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=119056E500"
                        .into(),
                ),
                control: Some("streamid=1".into()),
            },
        ]
    }

    #[test]
    fn ffmpeg() {
        let d = parse(FFMPEG_SDP.as_bytes()).unwrap();
        assert_eq!(d.tracks, ffmpeg_tracks());
        assert!(d.others.is_empty());
        assert!(d.tracks.iter().all(|t| unsupported(t).is_none()));
    }

    #[test]
    fn h265_with_an_unsupported_opus_and_a_data_track() {
        let sdp = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=x\r\nt=0 0\r\n\
m=video 0 RTP/AVP 98\r\na=rtpmap:98 H265/90000\r\na=control:trackID=0\r\n\
m=audio 0 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=control:trackID=1\r\n\
m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\na=control:trackID=2\r\n";
        let d = parse(sdp.as_bytes()).unwrap();
        assert_eq!(d.tracks.len(), 2);
        assert_eq!(unsupported(&d.tracks[0]), None);
        assert_eq!(
            unsupported(&d.tracks[1]).as_deref(),
            Some("audio opus/48000 is not supported")
        );
        assert_eq!(
            d.others,
            vec![("application".to_owned(), Some("trackID=2".to_owned()))]
        );
    }

    #[test]
    fn refusals() {
        let table: [(&str, SdpError); 5] = [
            (
                "hello",
                SdpError::Malformed(
                    "SDP: Invalid formatted line 1: \"Line not in key=value format\"".to_owned(),
                ),
            ),
            (
                "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
                SdpError::NothingSupported(
                    "no supported track (video VP8/90000); slotcast takes H264 or H265 video \
                     and AAC (MPEG4-GENERIC, AAC-hbr) audio"
                        .to_owned(),
                ),
            ),
            (
                "v=0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
                 a=fmtp:97 mode=AAC-lbr;config=1210\r\n",
                SdpError::NothingSupported(
                    "no supported track (audio MPEG4-GENERIC/44100); slotcast takes H264 or \
                     H265 video and AAC (MPEG4-GENERIC, AAC-hbr) audio"
                        .to_owned(),
                ),
            ),
            (
                "v=0\r\nm=video 0 RTP/AVP 26\r\n",
                SdpError::NothingSupported(
                    "no supported track (video payload type 26 without rtpmap); slotcast takes \
                     H264 or H265 video and AAC (MPEG4-GENERIC, AAC-hbr) audio"
                        .to_owned(),
                ),
            ),
            (
                "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/fast\r\n",
                SdpError::Malformed("SDP media section 1: rtpmap \"H264/fast\"".to_owned()),
            ),
        ];
        for (sdp, want) in table {
            assert_eq!(parse(sdp.as_bytes()), Err(want), "{sdp}");
        }
        let many = format!(
            "v=0\r\n{}",
            "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n".repeat(9)
        );
        assert_eq!(
            parse(many.as_bytes()),
            Err(SdpError::Malformed(
                "SDP with 9 media sections; at most 8".to_owned()
            ))
        );
    }
}
