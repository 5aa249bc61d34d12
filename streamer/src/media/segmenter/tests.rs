//! The segmenter on synthetic frames with literal bytes, in simulated time; every init and
//! part is parsed back with `mp4-atom`.

use super::*;
use mp4_atom::{Decode, Ftyp, Mdat, Moof, Moov, TrunEntry};

const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x0c, 0xac, 0xd9, 0x41, 0x41];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];
/// AAC-LC, 48 kHz, stereo.
const ASC: &[u8] = &[0x11, 0x90];
/// 25 fps at 90 kHz.
const FRAME: i64 = 3600;
const AAC_FRAME: i64 = 1024;
/// Arbitrary RTP timestamp bases: tracks do not share one.
const VIDEO_BASE: i64 = 1_000_000;
const AUDIO_BASE: i64 = 7_777_777;

fn avcc(sps: &[u8]) -> Bytes {
    let mut v = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    v.extend_from_slice(sps);
    v.push(1);
    v.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
    v.extend_from_slice(PPS);
    v.into()
}

fn h264(width: u16, height: u16) -> CodecParams {
    CodecParams::H264 {
        avcc: avcc(SPS),
        width,
        height,
        codec: "avc1.64000c".into(),
    }
}

fn aac() -> CodecParams {
    CodecParams::Aac {
        asc: Bytes::from_static(ASC),
        sample_rate: 48_000,
        channels: 2,
        codec: "mp4a.40.2".into(),
    }
}

fn spec(kind: TrackKind) -> TrackSpec {
    let (media, encoding_name, clock_rate, channels) = match kind {
        TrackKind::Video => ("video", "H264", 90_000, None),
        TrackKind::Audio => ("audio", "MPEG4-GENERIC", 48_000, Some(2)),
    };
    TrackSpec {
        kind,
        media: media.into(),
        encoding_name: encoding_name.into(),
        payload_type: 96,
        clock_rate,
        channels,
        fmtp: None,
        control: None,
    }
}

/// Video frame `i`'s sample: one length-prefixed NAL unit naming the frame.
fn video_data(i: i64, key: bool) -> Bytes {
    let nal = if key { 0x65 } else { 0x41 };
    Bytes::from(vec![0, 0, 0, 3, nal, (i >> 8) as u8, i as u8])
}

fn audio_data(j: i64) -> Bytes {
    Bytes::from(vec![0x21, 0x10, (j >> 8) as u8, j as u8])
}

/// A segmenter in simulated time: video frame `i` arrives at `i × 40 ms`, audio frame `j`
/// at `j × 1024 / 48 ms` (plus `audio_delay`).
struct Sim {
    seg: Segmenter,
    t0: Instant,
    video_track: usize,
    audio_track: usize,
    audio_delay: Duration,
    /// Timestamp bases (the tracks' clocks at frame 0).
    video_base: i64,
    audio_base: i64,
    sent_video_params: bool,
    sent_audio_params: bool,
}

impl Sim {
    fn new(tracks: &[TrackKind]) -> Self {
        let specs: Vec<_> = tracks.iter().map(|k| spec(*k)).collect();
        Self {
            seg: Segmenter::new(SegmenterConfig::default(), &specs),
            t0: Instant::now(),
            video_track: tracks
                .iter()
                .position(|k| *k == TrackKind::Video)
                .unwrap_or(9),
            audio_track: tracks
                .iter()
                .position(|k| *k == TrackKind::Audio)
                .unwrap_or(9),
            audio_delay: Duration::ZERO,
            video_base: VIDEO_BASE,
            audio_base: AUDIO_BASE,
            sent_video_params: false,
            sent_audio_params: false,
        }
    }

    fn av() -> Self {
        Self::new(&[TrackKind::Video, TrackKind::Audio])
    }

    /// Video and audio stamped from one clock, as RTMP does: both at 1 s of it at frame 0.
    fn shared_clock() -> Self {
        let mut sim = Self::av();
        let config = SegmenterConfig {
            shared_clock: true,
            ..SegmenterConfig::default()
        };
        sim.seg = Segmenter::new(config, &[spec(TrackKind::Video), spec(TrackKind::Audio)]);
        sim.video_base = 90_000;
        sim.audio_base = 48_000;
        sim
    }

    fn video_only() -> Self {
        Self::new(&[TrackKind::Video])
    }

    fn video_at(i: i64) -> Duration {
        Duration::from_millis(40 * i as u64)
    }

    fn audio_at(&self, j: i64) -> Duration {
        Duration::from_micros(j as u64 * 1024 * 1_000_000 / 48_000) + self.audio_delay
    }

    fn push_video(
        &mut self,
        i: i64,
        key: bool,
        params: Option<CodecParams>,
    ) -> Vec<SegmenterOutput> {
        let params = params.or_else(|| (!self.sent_video_params).then(|| h264(160, 120)));
        self.sent_video_params = true;
        let frame = Frame {
            track: self.video_track,
            pts: self.video_base + i * FRAME,
            dts: self.video_base + i * FRAME,
            keyframe: key,
            data: video_data(i, key),
            params,
        };
        self.seg
            .push(self.t0 + Self::video_at(i), frame)
            .expect("push video");
        self.drain()
    }

    /// Video frame `i`, a keyframe every 25.
    fn video(&mut self, i: i64) -> Vec<SegmenterOutput> {
        self.push_video(i, i % 25 == 0, None)
    }

    fn audio(&mut self, j: i64) -> Vec<SegmenterOutput> {
        let params = (!self.sent_audio_params).then(aac);
        self.sent_audio_params = true;
        let frame = Frame {
            track: self.audio_track,
            pts: self.audio_base + j * AAC_FRAME,
            dts: self.audio_base + j * AAC_FRAME,
            keyframe: false,
            data: audio_data(j),
            params,
        };
        let at = self.t0 + self.audio_at(j);
        self.seg.push(at, frame).expect("push audio");
        self.drain()
    }

    /// Video frames `0..frames` (a keyframe every 25) and the audio frames arriving over the
    /// same span, in arrival order (video first on a tie).
    fn run_av(&mut self, frames: i64) -> Vec<SegmenterOutput> {
        let mut out = Vec::new();
        let mut j = 0;
        for i in 0..frames {
            while self.audio_at(j) < Self::video_at(i) {
                out.extend(self.audio(j));
                j += 1;
            }
            out.extend(self.video(i));
        }
        out
    }

    fn drain(&mut self) -> Vec<SegmenterOutput> {
        std::iter::from_fn(|| self.seg.poll_output()).collect()
    }
}

/// A part parsed back.
struct Parsed {
    moof: Moof,
    data: Bytes,
    duration: Duration,
    independent: bool,
    first_arrival: Instant,
    starts_segment: bool,
}

impl Parsed {
    fn traf(&self, track_id: u32) -> Option<&mp4_atom::Traf> {
        self.moof.traf.iter().find(|t| t.tfhd.track_id == track_id)
    }

    fn entries(&self, track_id: u32) -> Vec<TrunEntry> {
        self.traf(track_id)
            .map(|t| t.trun[0].samples.iter().collect())
            .unwrap_or_default()
    }

    fn tfdt(&self, track_id: u32) -> Option<u64> {
        self.traf(track_id)
            .and_then(|t| t.tfdt.as_ref())
            .map(|t| t.base_media_decode_time)
    }

    fn ticks(&self, track_id: u32) -> u64 {
        self.entries(track_id)
            .iter()
            .map(|e| u64::from(e.duration.expect("duration")))
            .sum()
    }

    /// The samples' bytes, read where each trun's data offset and sizes point.
    fn samples(&self, track_id: u32) -> Vec<Bytes> {
        let Some(traf) = self.traf(track_id) else {
            return Vec::new();
        };
        let mut at = traf.trun[0].data_offset.expect("data offset") as usize;
        self.entries(track_id)
            .iter()
            .map(|e| {
                let size = e.size.expect("size") as usize;
                let s = self.data.slice(at..at + size);
                at += size;
                s
            })
            .collect()
    }
}

fn parse_part(output: &SegmenterOutput) -> Parsed {
    let SegmenterOutput::Part {
        data,
        duration,
        independent,
        first_arrival,
        starts_segment,
    } = output
    else {
        panic!("not a part: {output:?}");
    };
    let data = Bytes::from(data.concat());
    let mut buf = data.as_ref();
    let moof = Moof::decode(&mut buf).expect("moof");
    let mdat = Mdat::decode(&mut buf).expect("mdat");
    assert!(buf.is_empty(), "trailing bytes after mdat");
    let traf_bytes: usize = moof
        .traf
        .iter()
        .flat_map(|t| t.trun[0].samples.iter())
        .map(|e| e.size.unwrap_or(0) as usize)
        .sum();
    assert_eq!(
        mdat.data.len(),
        traf_bytes,
        "mdat holds exactly the samples"
    );
    for traf in &moof.traf {
        assert!(traf.tfhd.default_base_is_moof);
        assert_eq!(traf.tfhd.base_data_offset, None);
        assert_eq!(traf.trun.len(), 1);
    }
    Parsed {
        moof,
        data,
        duration: *duration,
        independent: *independent,
        first_arrival: *first_arrival,
        starts_segment: *starts_segment,
    }
}

fn parts(outputs: &[SegmenterOutput]) -> Vec<Parsed> {
    outputs
        .iter()
        .filter(|o| matches!(o, SegmenterOutput::Part { .. }))
        .map(parse_part)
        .collect()
}

fn parse_init(output: &SegmenterOutput) -> (Ftyp, Moov) {
    let SegmenterOutput::Init { data, .. } = output else {
        panic!("not an init: {output:?}");
    };
    let mut buf = data.as_ref();
    let ftyp = Ftyp::decode(&mut buf).expect("ftyp");
    let moov = Moov::decode(&mut buf).expect("moov");
    assert!(buf.is_empty());
    (ftyp, moov)
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// `I` init, `P` part, `S` segment end.
fn shape(outputs: &[SegmenterOutput]) -> String {
    outputs
        .iter()
        .map(|o| match o {
            SegmenterOutput::Init { .. } => 'I',
            SegmenterOutput::Part { .. } => 'P',
            SegmenterOutput::SegmentEnd => 'S',
        })
        .collect()
}

#[test]
fn the_init_describes_video_and_audio() {
    let mut sim = Sim::av();
    let out = sim.run_av(5);
    assert_eq!(shape(&out), "IP");
    let SegmenterOutput::Init {
        codecs, resolution, ..
    } = &out[0]
    else {
        unreachable!()
    };
    assert_eq!(codecs, "avc1.64000c,mp4a.40.2");
    assert_eq!(*resolution, Some((160, 120)));

    let (ftyp, moov) = parse_init(&out[0]);
    assert_eq!(ftyp.major_brand, b"iso6".into());
    assert!(ftyp.compatible_brands.contains(&b"cmfc".into()));
    assert_eq!(moov.trak.len(), 2);
    let mvex = moov.mvex.as_ref().expect("mvex");
    assert_eq!(
        mvex.trex.iter().map(|t| t.track_id).collect::<Vec<_>>(),
        [1, 2]
    );

    let video = &moov.trak[0];
    assert_eq!(video.tkhd.track_id, 1);
    assert_eq!(video.tkhd.width.integer(), 160);
    assert_eq!(video.tkhd.height.integer(), 120);
    assert_eq!(video.mdia.mdhd.timescale, 90_000);
    assert_eq!(video.mdia.hdlr.handler, b"vide".into());
    let stbl = &video.mdia.minf.stbl;
    assert!(stbl.stts.entries.is_empty() && stbl.stsc.entries.is_empty());
    assert_eq!(stbl.stco.as_ref().map(|s| s.entries.len()), Some(0));
    let mp4_atom::Codec::Avc1(avc1) = &stbl.stsd.codecs[0] else {
        panic!("not avc1: {:?}", stbl.stsd.codecs);
    };
    assert_eq!((avc1.visual.width, avc1.visual.height), (160, 120));
    assert_eq!(avc1.avcc.sequence_parameter_sets, [SPS.to_vec()]);
    assert_eq!(avc1.avcc.picture_parameter_sets, [PPS.to_vec()]);
    assert_eq!(avc1.avcc.length_size, 4);

    let audio = &moov.trak[1];
    assert_eq!(audio.tkhd.track_id, 2);
    assert_eq!(audio.mdia.mdhd.timescale, 48_000);
    assert_eq!(audio.mdia.hdlr.handler, b"soun".into());
    assert!(audio.mdia.minf.smhd.is_some());
    let mp4_atom::Codec::Mp4a(mp4a) = &audio.mdia.minf.stbl.stsd.codecs[0] else {
        panic!("not mp4a");
    };
    assert_eq!(mp4a.audio.channel_count, 2);
    assert_eq!(mp4a.audio.sample_rate.integer(), 48_000);
    let config = &mp4a.esds.es_desc.dec_config;
    assert_eq!(config.object_type_indication, 0x40);
    let specific = config.dec_specific.as_ref().expect("AudioSpecificConfig");
    assert_eq!(specific.raw, ASC);
    assert_eq!(
        (specific.profile, specific.freq_index, specific.chan_conf),
        (2, 3, 2)
    );
}

#[test]
fn a_part_is_five_frames_published_on_the_arrival_of_its_last() {
    let mut sim = Sim::video_only();
    for i in 0..4 {
        assert!(sim.video(i).is_empty(), "nothing before frame 4 ({i})");
    }
    let out = sim.video(4);
    assert_eq!(shape(&out), "IP");
    let part = parse_part(&out[1]);
    assert_eq!(part.duration, ms(200));
    assert!(part.independent && part.starts_segment);
    assert_eq!(part.first_arrival, sim.t0);
    assert_eq!(part.moof.mfhd.sequence_number, 1);
    assert_eq!(part.tfdt(1), Some(0));
    let entries = part.entries(1);
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e.duration == Some(3600)));
    assert_eq!(entries[0].flags, Some(0x0200_0000), "keyframe: sync");
    assert!(
        entries[1..].iter().all(|e| e.flags == Some(0x0101_0000)),
        "non-sync"
    );
    let samples = part.samples(1);
    assert_eq!(
        samples,
        (0..5).map(|i| video_data(i, i == 0)).collect::<Vec<_>>()
    );

    for i in 5..9 {
        assert!(sim.video(i).is_empty());
    }
    let out = sim.video(9);
    assert_eq!(shape(&out), "P");
    let part = parse_part(&out[0]);
    assert_eq!(part.duration, ms(200));
    assert!(!part.independent && !part.starts_segment);
    assert_eq!(part.first_arrival, sim.t0 + ms(200));
    assert_eq!(part.tfdt(1), Some(18_000));
    assert_eq!(part.moof.mfhd.sequence_number, 2);
}

#[test]
fn segments_are_cut_on_the_keyframe_at_one_second() {
    let mut sim = Sim::video_only();
    let mut shapes = String::new();
    let mut outputs = Vec::new();
    for i in 0..76 {
        let out = sim.video(i);
        if i == 25 || i == 50 || i == 75 {
            // The keyframe ends the segment; the previous part already closed on frame i-1.
            assert_eq!(shape(&out), "S", "frame {i}");
        }
        shapes += &shape(&out);
        outputs.extend(out);
    }
    assert_eq!(shapes, "IPPPPPSPPPPPSPPPPPS");
    let parts = parts(&outputs);
    for (n, part) in parts.iter().enumerate() {
        assert_eq!(part.duration, ms(200));
        assert_eq!(part.starts_segment, n % 5 == 0, "part {n}");
        assert_eq!(part.independent, n % 5 == 0, "part {n}");
    }
}

#[test]
fn an_early_keyframe_does_not_cut_and_a_late_one_closes_the_part_early() {
    let mut sim = Sim::video_only();
    let mut outputs = Vec::new();
    // Keyframes at 0, 12 (0.48 s: too early) and 28 (1.12 s).
    for i in 0..28 {
        outputs.extend(sim.push_video(i, i == 0 || i == 12, None));
    }
    assert_eq!(shape(&outputs), "IPPPPP");
    let out = sim.push_video(28, true, None);
    assert_eq!(
        shape(&out),
        "PS",
        "the keyframe closes frames 25..27 and the segment"
    );
    let early = parse_part(&out[0]);
    assert_eq!(early.duration, ms(120));
    assert_eq!(early.entries(1).len(), 3);
    assert_eq!(early.first_arrival, sim.t0 + ms(1000));
    for i in 29..32 {
        assert!(sim.push_video(i, false, None).is_empty());
    }
    let out = sim.push_video(32, false, None);
    let next = parse_part(&out[0]);
    assert!(next.starts_segment && next.independent);
    assert_eq!(next.tfdt(1), Some(28 * 3600));
    assert_eq!(next.entries(1)[0].flags, Some(0x0200_0000));
}

#[test]
fn audio_is_interleaved_and_timelines_are_continuous() {
    let mut sim = Sim::av();
    let outputs = sim.run_av(76);
    assert_eq!(shape(&outputs), "IPPPPPSPPPPPSPPPPPS");
    let parts = parts(&outputs);
    let mut audio_frames = 0;
    for (n, pair) in parts.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b.moof.mfhd.sequence_number, a.moof.mfhd.sequence_number + 1);
        for track in [1, 2] {
            let (ta, tb) = (a.tfdt(track).expect("tfdt"), b.tfdt(track).expect("tfdt"));
            assert_eq!(
                tb,
                ta + a.ticks(track),
                "track {track}, part {n} → {}",
                n + 1
            );
        }
    }
    for part in &parts {
        assert_eq!(part.moof.traf.len(), 2, "every part has video and audio");
        let audio = part.entries(2);
        assert!(audio.iter().all(|e| e.duration == Some(1024)));
        assert!(audio.iter().all(|e| e.flags == Some(0x0200_0000)));
        // The bytes at the audio run's data offset are the audio frames, in order.
        let samples = part.samples(2);
        let tfdt = part.tfdt(2).expect("tfdt") as i64;
        for (k, s) in samples.iter().enumerate() {
            assert_eq!(*s, audio_data(tfdt / 1024 + k as i64));
        }
        audio_frames += samples.len();
        assert_eq!(part.samples(1).len(), 5);
    }
    // Frames 0..=74 are in parts (frame 75 opens the next, unpublished); audio frames
    // arriving up to frame 74's arrival (2.96 s): 0..=138.
    assert_eq!(audio_frames, 139);
    // Aligned by arrival: audio frame 0 arrived with video frame 0.
    assert_eq!(parts[0].tfdt(2), Some(0));
    assert_eq!(parts[0].first_arrival, sim.t0);
}

#[test]
fn audio_is_aligned_with_video_by_arrival() {
    let mut sim = Sim::av();
    sim.audio_delay = ms(10);
    let out = sim.run_av(5);
    let part = parse_part(&out[1]);
    // The first audio frame arrived 10 ms after the keyframe: 480 ticks at 48 kHz.
    assert_eq!(part.tfdt(2), Some(480));
    assert_eq!(part.tfdt(1), Some(0));
}

#[test]
fn on_a_shared_clock_audio_is_placed_by_its_timestamps_however_late_it_arrives() {
    // Audio arriving 360 ms after the video of the same instant (a muxer packing audio into
    // large PES packets does that): by arrival it would be 360 ms late on the timeline.
    let mut sim = Sim::shared_clock();
    sim.audio_delay = ms(360);
    sim.seg.set_params(sim.audio_track, aac()).unwrap();
    let outputs = sim.run_av(76);
    let parts = parts(&outputs);
    let with_audio: Vec<&Parsed> = parts.iter().filter(|p| p.traf(2).is_some()).collect();
    assert!(with_audio.len() >= 10, "{}", shape(&outputs));
    // Audio frame 0 was stamped with video frame 0: both start the timeline.
    assert_eq!(with_audio[0].tfdt(2), Some(0));
    assert_eq!(parts[0].tfdt(1), Some(0));
    // Every audio sample sits where its timestamp says, and the run is continuous.
    let mut next = 0;
    for part in &with_audio {
        let tfdt = part.tfdt(2).expect("tfdt");
        assert_eq!(tfdt, next);
        for (k, sample) in part.samples(2).iter().enumerate() {
            assert_eq!(*sample, audio_data(tfdt as i64 / 1024 + k as i64));
        }
        next = tfdt + part.ticks(2);
    }
}

#[test]
fn on_a_shared_clock_audio_stamped_before_the_first_keyframe_is_dropped() {
    let mut sim = Sim::shared_clock();
    // Audio starts 100 ms of the clock before the video's first keyframe, arriving with it.
    sim.audio_base = 48_000 - 4_800;
    sim.seg.set_params(sim.audio_track, aac()).unwrap();
    let outputs = sim.run_av(10);
    let part = parse_part(&outputs[1]);
    // Frames 0..=4 (the first 100 ms of audio) are before the keyframe: dropped, no error.
    // Frame 5 is at 106.7 ms of the audio clock, 6.7 ms of the timeline: 320 ticks.
    assert_eq!(part.tfdt(2), Some(320));
    assert_eq!(part.samples(2)[0], audio_data(5));
}

#[test]
fn frames_before_the_first_keyframe_are_dropped() {
    let mut sim = Sim::av();
    let mut out = Vec::new();
    // Params on the first (non-key) frame; audio too before the keyframe.
    out.extend(sim.push_video(0, false, None));
    out.extend(sim.audio(0));
    out.extend(sim.push_video(1, false, None));
    out.extend(sim.audio(1));
    out.extend(sim.audio(2));
    assert!(out.is_empty());
    for i in 2..7 {
        out.extend(sim.push_video(i, i == 2, None));
    }
    assert_eq!(shape(&out), "IP");
    let part = parse_part(&out[1]);
    assert_eq!(part.tfdt(1), Some(0));
    assert_eq!(part.samples(1)[0], video_data(2, true));
    assert!(part.independent);
    assert_eq!(part.first_arrival, sim.t0 + Sim::video_at(2));
    // Audio params came with a dropped frame; the track is still in the init.
    let (_, moov) = parse_init(&out[0]);
    assert_eq!(moov.trak.len(), 2);
}

#[test]
fn flush_emits_the_partial_part_and_ends_the_segment() {
    let mut sim = Sim::video_only();
    let mut out = Vec::new();
    for i in 0..7 {
        out.extend(sim.video(i));
    }
    assert_eq!(shape(&out), "IP");
    sim.seg.flush(sim.t0 + ms(300));
    let tail = sim.drain();
    assert_eq!(shape(&tail), "PS");
    let part = parse_part(&tail[0]);
    assert_eq!(part.entries(1).len(), 2);
    assert_eq!(
        part.duration,
        ms(80),
        "the last frame's duration is estimated"
    );
    assert!(sim.seg.poll_output().is_none());

    // Fed again (the publisher came back with new timestamps): a new init, and the
    // timeline carries on from the end of the first run.
    let mut sim2_out = Vec::new();
    for i in 0..5 {
        let frame = Frame {
            track: 0,
            pts: 42 + i * FRAME,
            dts: 42 + i * FRAME,
            keyframe: i == 0,
            data: video_data(i, i == 0),
            params: (i == 0).then(|| h264(160, 120)),
        };
        sim.seg
            .push(sim.t0 + ms(5000 + 40 * i as u64), frame)
            .expect("push");
        sim2_out.extend(sim.drain());
    }
    assert_eq!(shape(&sim2_out), "IP");
    let part = parse_part(&sim2_out[1]);
    assert_eq!(part.tfdt(1), Some(7 * 3600));
    assert!(part.starts_segment);
    assert_eq!(part.moof.mfhd.sequence_number, 3);
}

#[test]
fn flush_before_the_first_keyframe_emits_nothing() {
    let mut sim = Sim::video_only();
    sim.push_video(0, false, None);
    sim.seg.flush(sim.t0);
    assert!(sim.seg.poll_output().is_none());
}

#[test]
fn a_params_change_on_a_keyframe_cuts_and_emits_a_new_init() {
    let mut sim = Sim::video_only();
    let mut out = Vec::new();
    for i in 0..12 {
        out.extend(sim.video(i));
    }
    assert_eq!(shape(&out), "IPP");
    // 0.48 s into the segment: the new resolution cuts at once.
    let out = sim.push_video(12, true, Some(h264(320, 240)));
    assert_eq!(shape(&out), "PS");
    assert_eq!(parse_part(&out[0]).entries(1).len(), 2);
    let mut out = Vec::new();
    for i in 13..17 {
        out.extend(sim.push_video(i, false, None));
    }
    assert_eq!(shape(&out), "IP");
    let SegmenterOutput::Init { resolution, .. } = &out[0] else {
        unreachable!()
    };
    assert_eq!(*resolution, Some((320, 240)));
    let (_, moov) = parse_init(&out[0]);
    assert_eq!(moov.trak[0].tkhd.width.integer(), 320);
    let part = parse_part(&out[1]);
    assert!(part.starts_segment && part.independent);
    assert_eq!(part.tfdt(1), Some(12 * 3600), "the timeline carries on");
}

#[test]
fn a_params_change_on_a_non_keyframe_ends_the_segment_and_waits_for_a_keyframe() {
    let mut sim = Sim::video_only();
    for i in 0..7 {
        sim.video(i);
    }
    let out = sim.push_video(7, false, Some(h264(320, 240)));
    assert_eq!(shape(&out), "PS");
    assert!(sim.push_video(8, false, None).is_empty());
    let mut out = sim.push_video(9, true, None);
    for i in 10..14 {
        out.extend(sim.push_video(i, false, None));
    }
    assert_eq!(shape(&out), "IP");
    assert_eq!(parse_part(&out[1]).tfdt(1), Some(9 * 3600));
}

#[test]
fn late_audio_joins_with_a_new_init_at_the_next_keyframe() {
    let mut sim = Sim::av();
    let mut out = Vec::new();
    for i in 0..25 {
        out.extend(sim.video(i));
        if i >= 12 {
            // Audio starts half a second late: dropped until the next keyframe.
            let j = i * 2;
            out.extend(sim.audio(j));
        }
    }
    assert_eq!(shape(&out), "IPPPPP");
    let (_, moov) = parse_init(&out[0]);
    assert_eq!(moov.trak.len(), 1, "video was not held back for audio");
    assert!(parts(&out).iter().all(|p| p.traf(2).is_none()));

    let mut out = sim.video(25);
    out.extend(sim.audio(50));
    for i in 26..30 {
        out.extend(sim.video(i));
        out.extend(sim.audio(i * 2));
    }
    assert_eq!(shape(&out), "SIP");
    let SegmenterOutput::Init { codecs, .. } = &out[1] else {
        unreachable!()
    };
    assert_eq!(codecs, "avc1.64000c,mp4a.40.2");
    let part = parse_part(&out[2]);
    // Audio 50, 52, 54 and 56: 58 arrives after video 29 closed the part.
    assert_eq!(part.samples(2).len(), 4);
    assert!(part.starts_segment);
}

#[test]
fn an_audio_only_stream_cuts_parts_and_segments_on_audio() {
    let mut sim = Sim::new(&[TrackKind::Audio]);
    let mut out = Vec::new();
    for j in 0..100 {
        out.extend(sim.audio(j));
    }
    // 10 frames (213 ms) per part; segments of ≥ 1 s: 47 frames → cut at frame 47, i.e.
    // parts of 10, 10, 10, 10, 7.
    assert!(shape(&out).starts_with("IPPPPPSP"), "{}", shape(&out));
    let parts = parts(&out);
    assert!(parts.iter().all(|p| p.independent));
    assert_eq!(parts[0].entries(1).len(), 10);
    assert_eq!(parts[4].entries(1).len(), 7);
    assert!(parts[5].starts_segment);
    assert_eq!(parts[5].tfdt(1), Some(47 * 1024));
}

#[test]
fn a_part_is_bounded_in_bytes() {
    let mut sim = Sim::video_only();
    let big = Bytes::from(vec![0u8; 3 << 20]);
    let mut out = Vec::new();
    for i in 0..3 {
        let frame = Frame {
            track: 0,
            pts: i * FRAME,
            dts: i * FRAME,
            keyframe: i == 0,
            data: big.clone(),
            params: (i == 0).then(|| h264(160, 120)),
        };
        sim.seg
            .push(sim.t0 + Sim::video_at(i), frame)
            .expect("push");
        out.extend(sim.drain());
    }
    // Frame 2 would take the part past 8 MiB: frames 0 and 1 go out first.
    assert_eq!(shape(&out), "IP");
    assert_eq!(parse_part(&out[1]).entries(1).len(), 2);

    let huge = Frame {
        track: 0,
        pts: 3 * FRAME,
        dts: 3 * FRAME,
        keyframe: false,
        data: Bytes::from(vec![0u8; MAX_PART_BYTES + 1]),
        params: None,
    };
    assert!(matches!(
        sim.seg.push(sim.t0 + ms(120), huge),
        Err(StreamerError::Mux(_))
    ));
}

#[test]
fn bad_frames_are_refused_and_the_stream_goes_on() {
    let mut sim = Sim::video_only();
    for i in 0..3 {
        sim.video(i);
    }
    let backwards = Frame {
        track: 0,
        pts: VIDEO_BASE,
        dts: VIDEO_BASE,
        keyframe: false,
        data: video_data(99, false),
        params: None,
    };
    let err = sim.seg.push(sim.t0 + ms(100), backwards).unwrap_err();
    assert!(err.to_string().contains("does not follow"), "{err}");
    let unknown = Frame {
        track: 5,
        pts: 0,
        dts: 0,
        keyframe: true,
        data: video_data(0, true),
        params: None,
    };
    assert!(sim.seg.push(sim.t0, unknown).is_err());
    let bad_avcc = Frame {
        track: 0,
        pts: VIDEO_BASE + 3 * FRAME,
        dts: VIDEO_BASE + 3 * FRAME,
        keyframe: false,
        data: video_data(3, false),
        params: Some(CodecParams::H264 {
            avcc: Bytes::from_static(&[1, 2]),
            width: 1,
            height: 1,
            codec: "avc1.000000".into(),
        }),
    };
    assert!(sim.seg.push(sim.t0 + ms(120), bad_avcc).is_err());
    let out = sim.video(4);
    assert_eq!(shape(&out), "IP");
    assert_eq!(
        parse_part(&out[1]).entries(1).len(),
        4,
        "frames 0, 1, 2 and 4"
    );
}

fn hvcc_record() -> Bytes {
    use mp4_atom::{Encode, HvcCArray, Hvcc};
    let array = |nal_unit_type: u8, nal: &[u8]| HvcCArray {
        completeness: true,
        nal_unit_type,
        nalus: vec![nal.to_vec()],
    };
    let hvcc = Hvcc {
        configuration_version: 1,
        general_profile_idc: 1,
        general_profile_compatibility_flags: [0x60, 0, 0, 0],
        general_level_idc: 93,
        chroma_format_idc: 1,
        length_size_minus_one: 3,
        arrays: vec![
            array(32, &[0x40, 0x01, 0x0c]),
            array(33, &[0x42, 0x01, 0x01]),
            array(34, &[0x44, 0x01, 0xc0]),
        ],
        ..Default::default()
    };
    let mut boxed = Vec::new();
    hvcc.encode(&mut boxed).expect("encode hvcC");
    // The params carry the record, not the box: drop the 8-byte box header.
    Bytes::from(boxed.split_off(8))
}

#[test]
fn h265_is_hvc1_unless_the_codec_says_hev1() {
    for (codec, hev1) in [("hvc1.1.6.L93.B0", false), ("hev1.1.6.L93.B0", true)] {
        let mut seg = Segmenter::new(SegmenterConfig::default(), &[spec(TrackKind::Video)]);
        let t0 = Instant::now();
        for i in 0..5 {
            let frame = Frame {
                track: 0,
                pts: i * FRAME,
                dts: i * FRAME,
                keyframe: i == 0,
                data: video_data(i, i == 0),
                params: (i == 0).then(|| CodecParams::H265 {
                    hvcc: hvcc_record(),
                    width: 640,
                    height: 360,
                    codec: codec.into(),
                }),
            };
            seg.push(t0 + Sim::video_at(i), frame).expect("push");
        }
        let out: Vec<_> = std::iter::from_fn(|| seg.poll_output()).collect();
        assert_eq!(shape(&out), "IP");
        let SegmenterOutput::Init {
            codecs, resolution, ..
        } = &out[0]
        else {
            unreachable!()
        };
        assert_eq!((codecs.as_str(), *resolution), (codec, Some((640, 360))));
        let (_, moov) = parse_init(&out[0]);
        let entry = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0];
        let (visual, hvcc) = match entry {
            mp4_atom::Codec::Hvc1(e) if !hev1 => (&e.visual, &e.hvcc),
            mp4_atom::Codec::Hev1(e) if hev1 => (&e.visual, &e.hvcc),
            other => panic!("{codec}: unexpected sample entry {other:?}"),
        };
        assert_eq!((visual.width, visual.height), (640, 360));
        assert_eq!(hvcc.arrays.len(), 3);
        assert_eq!(hvcc.length_size_minus_one, 3);
    }
}

#[test]
fn a_part_is_bounded_in_samples_when_video_stalls() {
    let mut sim = Sim::av();
    sim.video(0);
    sim.video(1);
    let mut out = Vec::new();
    // Video stops; audio goes on.
    for j in 0..1100 {
        out.extend(sim.audio(j));
    }
    assert_eq!(shape(&out), "IP");
    let part = parse_part(&out[1]);
    assert_eq!(
        part.entries(1).len() + part.entries(2).len(),
        MAX_PART_SAMPLES
    );
}
