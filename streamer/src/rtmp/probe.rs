//! Between an admitted publish and going live: which tracks the publisher sends, and their
//! codec parameters, before the media path (whose timescales are fixed when it is made) is
//! started.
//!
//! Contract: pure. Tags are held in arrival order, bounded in bytes by the caller's limit;
//! the verdict is `Ready` once every track the publisher announced (in `onMetaData`, or by
//! sending a tag of it) has its sequence header, or, without `onMetaData`, once a video frame
//! followed the AVC header; a codec other than H.264 or AAC is refused at once, by name.
//! When time or bytes run out, the caller goes live with the headers that came
//! ([`Probe::finish`]), or refuses if none did.

use bytes::Bytes;

use super::flv::{parse_audio, parse_video, AudioTag, FlvFramer, VideoTag};
use super::rml::CodecId;

/// A media tag held: (is video, RTMP timestamp, body).
pub(super) type Tag = (bool, u32, Bytes);

const TAKES: &str = "slotcast takes H.264 video and AAC audio over RTMP";

#[derive(Debug, Default)]
pub(super) struct Probe {
    tags: Vec<Tag>,
    bytes: usize,
    /// `onMetaData` came: which tracks it announced.
    announced: Option<(bool, bool)>,
    avcc: Option<Bytes>,
    asc: Option<Bytes>,
    saw_video: bool,
    saw_audio: bool,
    /// A video frame came after the AVC header.
    video_frame: bool,
}

/// Whether the codecs are known.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Wait,
    Ready,
    /// A codec slotcast does not relay; the words say which.
    Unsupported(String),
}

impl Probe {
    /// Media held so far, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `onMetaData`'s codec ids.
    pub fn metadata(&mut self, video: Option<&CodecId>, audio: Option<&CodecId>) -> Verdict {
        let video_ok = |id: &CodecId| match id {
            CodecId::Number(n) => *n == 7,
            CodecId::Name(name) => name.eq_ignore_ascii_case("avc1"),
        };
        let audio_ok = |id: &CodecId| match id {
            CodecId::Number(n) => *n == 10,
            CodecId::Name(name) => name.eq_ignore_ascii_case("mp4a"),
        };
        if let Some(id) = video.filter(|id| !video_ok(id)) {
            return Verdict::Unsupported(format!("video codec {} ({TAKES})", named(id)));
        }
        if let Some(id) = audio.filter(|id| !audio_ok(id)) {
            return Verdict::Unsupported(format!("audio codec {} ({TAKES})", named(id)));
        }
        self.announced = Some((video.is_some(), audio.is_some()));
        self.verdict()
    }

    /// One media tag, held for when the tracks are known.
    pub fn push(&mut self, tag: Tag) -> Verdict {
        let (is_video, _, body) = &tag;
        if *is_video {
            self.saw_video = true;
            match parse_video(body) {
                Ok(VideoTag::AvcHeader(record)) => self.avcc = Some(record),
                Ok(VideoTag::Avc { .. }) if self.avcc.is_some() => self.video_frame = true,
                Ok(VideoTag::Unsupported(what)) => {
                    return Verdict::Unsupported(format!("{what} video ({TAKES})"));
                }
                // Broken tags are the framer's to count, once live.
                _ => {}
            }
        } else {
            self.saw_audio = true;
            match parse_audio(body) {
                Ok(AudioTag::AacHeader(asc)) => self.asc = Some(asc),
                Ok(AudioTag::Unsupported(what)) => {
                    return Verdict::Unsupported(format!("{what} audio ({TAKES})"));
                }
                _ => {}
            }
        }
        self.bytes += body.len();
        self.tags.push(tag);
        self.verdict()
    }

    fn verdict(&self) -> Verdict {
        let (video, audio) = match self.announced {
            Some((video, audio)) => (video || self.saw_video, audio || self.saw_audio),
            None => (self.saw_video, self.saw_audio),
        };
        let headers = (!video || self.avcc.is_some()) && (!audio || self.asc.is_some());
        let any = self.avcc.is_some() || self.asc.is_some();
        // Without onMetaData, audio may yet come: wait for a video frame after the header.
        let sure = self.announced.is_some() || self.video_frame || (video && audio);
        if headers && any && sure {
            Verdict::Ready
        } else {
            Verdict::Wait
        }
    }

    /// The framer for the headers that came, and the tags held; `Err` says why not.
    pub fn finish(self, waited: &str) -> Result<(FlvFramer, Vec<Tag>), String> {
        if self.avcc.is_none() && self.asc.is_none() {
            return Err(format!(
                "no H.264 or AAC sequence header {waited} after publishing ({TAKES})"
            ));
        }
        let framer = FlvFramer::new(self.avcc.as_ref(), self.asc.as_ref())
            .map_err(|e| format!("the sequence header: {e}"))?;
        Ok((framer, self.tags))
    }
}

fn named(id: &CodecId) -> String {
    match id {
        CodecId::Number(n) => format!("id {n}"),
        CodecId::Name(name) => format!("{name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::tests::{avcc, PPS, SPS};

    fn header() -> Tag {
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&avcc(3, SPS, PPS));
        (true, 0, body.into())
    }

    fn idr() -> Tag {
        (
            true,
            0,
            Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]),
        )
    }

    fn aac_header() -> Tag {
        (false, 0, Bytes::from_static(&[0xaf, 0, 0x11, 0x90]))
    }

    #[test]
    fn ready_when_every_announced_track_has_its_header() {
        let mut probe = Probe::default();
        let (avc, aac) = (CodecId::Number(7), CodecId::Name("mp4a".into()));
        assert_eq!(probe.metadata(Some(&avc), Some(&aac)), Verdict::Wait);
        assert_eq!(probe.push(header()), Verdict::Wait);
        assert_eq!(probe.push(idr()), Verdict::Wait, "audio was announced");
        assert_eq!(probe.push(aac_header()), Verdict::Ready);
        let (framer, tags) = probe.finish("in 2 s").unwrap();
        assert_eq!(framer.tracks().0.len(), 2);
        assert_eq!(tags.len(), 3, "every tag is held for the framer");
    }

    #[test]
    fn without_metadata_a_video_frame_after_the_header_decides() {
        let mut probe = Probe::default();
        assert_eq!(probe.push(header()), Verdict::Wait);
        assert_eq!(probe.push(idr()), Verdict::Ready);
        assert_eq!(probe.finish("").unwrap().0.tracks().0.len(), 1);
        // Both headers decide at once.
        let mut probe = Probe::default();
        assert_eq!(probe.push(aac_header()), Verdict::Wait);
        assert_eq!(probe.push(header()), Verdict::Ready);
    }

    #[test]
    fn other_codecs_are_refused_by_name_and_no_header_is_no_stream() {
        for (video, audio, says) in [
            (Some(CodecId::Number(2)), None, "video codec id 2"),
            (
                None,
                Some(CodecId::Name(".mp3".into())),
                "audio codec \".mp3\"",
            ),
        ] {
            let verdict = Probe::default().metadata(video.as_ref(), audio.as_ref());
            assert!(
                matches!(&verdict, Verdict::Unsupported(w) if w.contains(says)),
                "{verdict:?}"
            );
        }
        let hevc = (true, 0, Bytes::from_static(&[0x1c, 0, 0, 0, 0]));
        assert!(
            matches!(Probe::default().push(hevc), Verdict::Unsupported(w) if w.contains("HEVC"))
        );
        let mp3 = (false, 0, Bytes::from_static(&[0x2f, 0xff]));
        assert!(matches!(Probe::default().push(mp3), Verdict::Unsupported(w) if w.contains("MP3")));
        let err = Probe::default().finish("within 2 s").unwrap_err();
        assert!(
            err.contains("no H.264 or AAC sequence header within 2 s"),
            "{err}"
        );
    }
}
