//! An MP4 clip as a [`Source`]: its H.264 and AAC tracks, and their samples in decoding
//! order, each due at its decode time (so a clip plays out in real time), looped if asked.
//!
//! Contract: [`Clip::from_moov`] is pure: it reads the sample tables of a parsed `moov`
//! (stts, ctts, stss, stsc, stsz, stco/co64) into one list of samples in sending order, and
//! refuses what the streamer cannot take, saying why (no H.264 or AAC track, B-frames,
//! fragmented MP4). [`open_file`] is the edge: it finds the `moov` without reading the media,
//! then a blocking thread reads each sample at its offset into a bounded channel; a loop
//! adds the clip's length to every time, so the timeline runs on.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use mp4_atom::{Atom, Codec as Entry, Header, Moov, ReadAtom, ReadFrom, StszSamples};

use super::{Codec, Frame, Source};

/// Frames read ahead of sending.
const AHEAD: usize = 64;
/// A sample larger than this is not media we should send (and AHEAD of them stay bounded).
const MAX_SAMPLE: u32 = 4 * 1024 * 1024;
/// Samples a track may have: about 46 hours at 30 frames a second.
const MAX_SAMPLES: usize = 5_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    track: usize,
    offset: u64,
    size: u32,
    /// Decode time, in the track's timescale.
    dts: u64,
    /// Presentation time, in the track's timescale.
    pts: u64,
    keyframe: bool,
}

/// The tracks and samples of one clip.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    pub tracks: Vec<Codec>,
    timescales: Vec<u32>,
    samples: Vec<Sample>,
    /// The longest track's length.
    pub duration: Duration,
}

impl Clip {
    pub fn from_moov(moov: &Moov) -> Result<Self, String> {
        let mut tracks = Vec::new();
        let mut timescales = Vec::new();
        let mut samples = Vec::new();
        let mut duration = Duration::ZERO;
        let mut skipped = Vec::new();
        for trak in &moov.trak {
            let stbl = &trak.mdia.minf.stbl;
            let timescale = trak.mdia.mdhd.timescale;
            let codec = match stbl.stsd.codecs.first() {
                Some(Entry::Avc1(avc1)) => {
                    let avcc = &avc1.avcc;
                    Codec::H264 {
                        sps: avcc
                            .sequence_parameter_sets
                            .first()
                            .cloned()
                            .unwrap_or_default(),
                        pps: avcc
                            .picture_parameter_sets
                            .first()
                            .cloned()
                            .unwrap_or_default(),
                        length_size: avcc.length_size,
                    }
                }
                Some(Entry::Mp4a(mp4a)) => {
                    let config = mp4a
                        .esds
                        .es_desc
                        .dec_config
                        .dec_specific
                        .as_ref()
                        .map(|d| d.raw.clone())
                        .filter(|raw| raw.len() >= 2)
                        .ok_or("its AAC track has no AudioSpecificConfig")?;
                    Codec::Aac {
                        config,
                        sample_rate: timescale,
                        channels: mp4a.audio.channel_count,
                    }
                }
                Some(other) => {
                    skipped.push(format!("{:?}", std::mem::discriminant(other)));
                    continue;
                }
                None => continue,
            };
            if timescale == 0 {
                return Err("a track with timescale 0".into());
            }
            if let Codec::H264 { sps, pps, .. } = &codec {
                if sps.is_empty() || pps.is_empty() {
                    return Err("its H.264 track has no SPS or PPS in avcC".into());
                }
            }
            let index = tracks.len();
            let (table, end) = sample_table(index, stbl)?;
            let reordered = table.windows(2).any(|w| w[1].pts < w[0].pts);
            if matches!(codec, Codec::H264 { .. }) && reordered {
                return Err(
                    "its video has B-frames (frames out of display order), which the streamer \
                     does not take: re-encode with `-bf 0` (ffmpeg) or an encoder's baseline \
                     profile"
                        .into(),
                );
            }
            duration = duration.max(Duration::from_secs_f64(end as f64 / f64::from(timescale)));
            samples.extend(table);
            tracks.push(codec);
            timescales.push(timescale);
        }
        if tracks.is_empty() {
            return Err("it has no H.264 or AAC track (what the streamer takes)".into());
        }
        if samples.is_empty() {
            return Err("it has no samples (a fragmented MP4? use a plain one)".into());
        }
        // Sending order: by decode time across tracks.
        samples.sort_by(|a, b| {
            let ta = a.dts as u128 * u128::from(timescales[b.track]);
            let tb = b.dts as u128 * u128::from(timescales[a.track]);
            ta.cmp(&tb).then(a.track.cmp(&b.track))
        });
        Ok(Self {
            tracks,
            timescales,
            samples,
            duration: duration.max(Duration::from_millis(1)),
        })
    }

    /// "H.264 + AAC 48 kHz 2 ch, 10.0 s"
    pub fn describe(&self) -> String {
        let tracks: Vec<String> = self
            .tracks
            .iter()
            .map(|t| match t {
                Codec::Aac {
                    sample_rate,
                    channels,
                    ..
                } => format!("AAC {} kHz {channels} ch", f64::from(*sample_rate) / 1000.0),
                other => other.name().to_string(),
            })
            .collect();
        format!(
            "{}, {:.1} s",
            tracks.join(" + "),
            self.duration.as_secs_f64()
        )
    }

    /// The frame of sample `i` on loop `round`, with its data.
    fn frame(&self, i: usize, round: u32, data: Bytes) -> Frame {
        let s = self.samples[i];
        let timescale = u64::from(self.timescales[s.track]);
        let clock = u64::from(self.tracks[s.track].clock_rate());
        let shift = self.duration * round;
        let shift_ticks = (shift.as_nanos() * u128::from(timescale) / 1_000_000_000) as u64;
        let pts = s.pts + shift_ticks;
        let dts = s.dts + shift_ticks;
        let in_clock = |t: u64| (u128::from(t) * u128::from(clock) / u128::from(timescale)) as i64;
        Frame {
            track: s.track,
            timestamp: in_clock(pts),
            decoded: in_clock(dts),
            due: Some(
                Duration::from_nanos(
                    (u128::from(s.dts) * 1_000_000_000 / u128::from(timescale)) as u64,
                ) + shift,
            ),
            keyframe: s.keyframe,
            data,
        }
    }
}

/// One track's samples, and where its timeline ends (in its timescale).
fn sample_table(track: usize, stbl: &mp4_atom::Stbl) -> Result<(Vec<Sample>, u64), String> {
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        StszSamples::Identical { count, .. } if *count as usize > MAX_SAMPLES => {
            return Err(format!(
                "a track of {count} samples (at most {MAX_SAMPLES})"
            ))
        }
        StszSamples::Identical { count, size } => vec![*size; *count as usize],
        StszSamples::Different { sizes } if sizes.len() > MAX_SAMPLES => {
            return Err(format!(
                "a track of {} samples (at most {MAX_SAMPLES})",
                sizes.len()
            ))
        }
        StszSamples::Different { sizes } => sizes.clone(),
    };
    let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|o| u64::from(*o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => return Err("a track without chunk offsets (stco / co64)".into()),
    };
    // Decode times from stts.
    let mut dts = Vec::with_capacity(sizes.len());
    let mut t = 0u64;
    for entry in &stbl.stts.entries {
        for _ in 0..entry.sample_count {
            if dts.len() == sizes.len() {
                break;
            }
            dts.push(t);
            t += u64::from(entry.sample_delta);
        }
    }
    if dts.len() != sizes.len() {
        return Err(format!(
            "a track's time table (stts) has {} samples and its size table {}",
            dts.len(),
            sizes.len()
        ));
    }
    // Composition offsets from ctts.
    let mut offsets = vec![0i64; sizes.len()];
    if let Some(ctts) = &stbl.ctts {
        let mut i = 0;
        for entry in &ctts.entries {
            let n = (entry.sample_count as usize).min(offsets.len().saturating_sub(i));
            offsets[i..i + n].fill(entry.sample_offset);
            i += n;
        }
    }
    let keyframes: Option<Vec<u32>> = stbl.stss.as_ref().map(|s| s.entries.clone());
    // Chunk → samples from stsc; offsets within a chunk add up the sizes.
    let mut samples = Vec::with_capacity(sizes.len());
    let mut next = 0usize;
    let runs = &stbl.stsc.entries;
    let mut run = 0;
    for (ci, chunk_offset) in chunk_offsets.iter().enumerate() {
        if next == sizes.len() {
            break;
        }
        let chunk = ci as u32 + 1;
        // The stsc run this chunk is in (runs are in chunk order).
        while run + 1 < runs.len() && runs[run + 1].first_chunk <= chunk {
            run += 1;
        }
        let per_chunk = runs
            .get(run)
            .filter(|r| r.first_chunk <= chunk)
            .map_or(0, |r| r.samples_per_chunk);
        let mut offset = *chunk_offset;
        for _ in 0..per_chunk {
            let Some(&size) = sizes.get(next) else { break };
            if size > MAX_SAMPLE {
                return Err(format!("a sample of {size} bytes"));
            }
            let number = next as u32 + 1;
            let pts = (dts[next] as i64 + offsets[next]).max(0) as u64;
            samples.push(Sample {
                track,
                offset,
                size,
                dts: dts[next],
                pts,
                keyframe: keyframes
                    .as_ref()
                    .is_none_or(|k| k.binary_search(&number).is_ok()),
            });
            offset += u64::from(size);
            next += 1;
        }
    }
    if samples.len() != sizes.len() {
        return Err(format!(
            "a track's chunk table (stsc / stco) places {} of its {} samples",
            samples.len(),
            sizes.len()
        ));
    }
    Ok((samples, t))
}

/// Opens an MP4 clip: reads its `moov`, then streams its samples (forever with `looped`).
pub fn open_file(path: &Path, looped: bool) -> Result<Source, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let moov = find_moov(&file)
        .map_err(|e| format!("{} is not an MP4 we can read: {e}", path.display()))?;
    let clip =
        Clip::from_moov(&moov).map_err(|e| format!("{} cannot be sent: {e}", path.display()))?;
    let describe = format!(
        "{} ({}{})",
        path.display(),
        clip.describe(),
        if looped { ", looped" } else { "" }
    );
    let tracks = clip.tracks.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    std::thread::Builder::new()
        .name("slotcast-clip".into())
        .spawn(move || {
            let mut round = 0u32;
            loop {
                for i in 0..clip.samples.len() {
                    let s = clip.samples[i];
                    let mut data = vec![0u8; s.size as usize];
                    let frame = file
                        .read_exact_at(&mut data, s.offset)
                        .map(|()| clip.frame(i, round, Bytes::from(data)))
                        .map_err(|e| format!("reading the clip: {e}"));
                    let failed = frame.is_err();
                    if tx.blocking_send(frame).is_err() || failed {
                        return;
                    }
                }
                if !looped {
                    return;
                }
                round += 1;
            }
        })
        .map_err(|e| format!("cannot start the clip reader: {e}"))?;
    Ok(Source {
        tracks,
        frames: rx,
        describe,
    })
}

/// Walks the top-level boxes to the `moov`, skipping the media without reading it.
fn find_moov(file: &File) -> Result<Moov, String> {
    let mut reader = BufReader::new(file);
    loop {
        let header = match <Option<Header>>::read_from(&mut reader) {
            Ok(Some(header)) => header,
            Ok(None) => return Err("no moov box".into()),
            Err(e) => return Err(e.to_string()),
        };
        if header.kind == Moov::KIND {
            return Moov::read_atom(&header, &mut reader).map_err(|e| format!("moov: {e}"));
        }
        match header.size {
            Some(size) => {
                reader
                    .seek(SeekFrom::Current(size as i64))
                    .map_err(|e| e.to_string())?;
            }
            None => return Err("no moov box before the media that runs to the end".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::*;

    fn stbl(
        codec: mp4_atom::Codec,
        deltas: &[(u32, u32)],
        sizes: Vec<u32>,
        stsc: &[(u32, u32)],
        stco: Vec<u32>,
    ) -> Stbl {
        Stbl {
            stsd: Stsd {
                codecs: vec![codec],
            },
            stts: Stts {
                entries: deltas
                    .iter()
                    .map(|&(sample_count, sample_delta)| SttsEntry {
                        sample_count,
                        sample_delta,
                    })
                    .collect(),
            },
            stsc: Stsc {
                entries: stsc
                    .iter()
                    .map(|&(first_chunk, samples_per_chunk)| StscEntry {
                        first_chunk,
                        samples_per_chunk,
                        sample_description_index: 1,
                    })
                    .collect(),
            },
            stsz: Stsz {
                samples: StszSamples::Different { sizes },
            },
            stco: Some(Stco { entries: stco }),
            stss: Some(Stss {
                entries: vec![1, 3],
            }),
            ..Default::default()
        }
    }

    fn trak(timescale: u32, stbl: Stbl) -> Trak {
        Trak {
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale,
                    ..Default::default()
                },
                minf: Minf {
                    stbl,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn avc1() -> mp4_atom::Codec {
        Avc1 {
            avcc: Avcc {
                length_size: 4,
                sequence_parameter_sets: vec![vec![0x67, 0x42, 0xc0, 0x1e]],
                picture_parameter_sets: vec![vec![0x68, 0xce]],
                ..Default::default()
            },
            ..Default::default()
        }
        .into()
    }

    fn mp4a() -> mp4_atom::Codec {
        let mut esds = Esds::default();
        esds.es_desc.dec_config.dec_specific = Some(esds::DecoderSpecific {
            raw: vec![0x11, 0x90],
            ..Default::default()
        });
        Mp4a {
            audio: Audio {
                data_reference_index: 1,
                channel_count: 2,
                sample_size: 16,
                sample_rate: 48_000.into(),
            },
            esds,
            btrt: None,
            taic: None,
        }
        .into()
    }

    #[test]
    fn samples_come_in_decode_order_across_tracks_with_offsets_from_the_chunk_tables() {
        // Video: 4 frames at 25 fps in a 12800 timescale, two chunks of two.
        let video = trak(
            12_800,
            stbl(
                avc1(),
                &[(4, 512)],
                vec![10, 20, 30, 40],
                &[(1, 2)],
                vec![1000, 5000],
            ),
        );
        // Audio: 3 frames of 1024 at 48 kHz, chunk of one then chunk of two.
        let audio = trak(
            48_000,
            stbl(
                mp4a(),
                &[(3, 1024)],
                vec![5, 6, 7],
                &[(1, 1), (2, 2)],
                vec![2000, 3000],
            ),
        );
        let moov = Moov {
            trak: vec![video, audio],
            ..Default::default()
        };
        let clip = Clip::from_moov(&moov).unwrap();
        assert_eq!(clip.tracks.len(), 2);
        assert_eq!(clip.duration, Duration::from_millis(160));
        let order: Vec<(usize, u64, u32)> = clip
            .samples
            .iter()
            .map(|s| (s.track, s.offset, s.size))
            .collect();
        assert_eq!(
            order,
            [
                (0, 1000, 10),
                (1, 2000, 5),
                (1, 3000, 6),
                (0, 1010, 20),
                (1, 3006, 7),
                (0, 5000, 30),
                (0, 5030, 40)
            ]
        );
        let keys: Vec<bool> = clip
            .samples
            .iter()
            .filter(|s| s.track == 0)
            .map(|s| s.keyframe)
            .collect();
        assert_eq!(keys, [true, false, true, false]);

        // Timestamps in the RTP clock, due times from decode times, loops continue the line.
        let f = clip.frame(3, 0, Bytes::new());
        assert_eq!(
            (f.track, f.timestamp, f.due),
            (0, 3600, Some(Duration::from_millis(40)))
        );
        let f = clip.frame(3, 2, Bytes::new());
        assert_eq!(f.timestamp, 3600 + 2 * 14_400);
        assert_eq!(f.due, Some(Duration::from_millis(360)));
        assert_eq!(clip.describe(), "H.264 + AAC 48 kHz 2 ch, 0.2 s");
    }

    #[test]
    fn what_the_streamer_cannot_take_is_refused_with_the_reason() {
        let mut b = stbl(avc1(), &[(2, 512)], vec![1, 1], &[(1, 2)], vec![0]);
        // The first frame shows after the second: B-frames.
        b.ctts = Some(Ctts {
            entries: vec![CttsEntry {
                sample_count: 1,
                sample_offset: 1024,
            }],
        });
        let moov = Moov {
            trak: vec![trak(12_800, b)],
            ..Default::default()
        };
        assert!(Clip::from_moov(&moov).unwrap_err().contains("B-frames"));

        let moov = Moov {
            trak: vec![],
            ..Default::default()
        };
        assert!(Clip::from_moov(&moov)
            .unwrap_err()
            .contains("no H.264 or AAC"));

        let short = stbl(avc1(), &[(1, 512)], vec![1, 1], &[(1, 2)], vec![0]);
        let moov = Moov {
            trak: vec![trak(12_800, short)],
            ..Default::default()
        };
        assert!(Clip::from_moov(&moov).unwrap_err().contains("stts"));

        // A table that claims four billion samples is refused before anything is allocated.
        let mut huge = stbl(avc1(), &[(1, 512)], vec![1], &[(1, 1)], vec![0]);
        huge.stsz.samples = StszSamples::Identical {
            count: u32::MAX,
            size: 1,
        };
        let moov = Moov {
            trak: vec![trak(12_800, huge)],
            ..Default::default()
        };
        assert!(Clip::from_moov(&moov).unwrap_err().contains("at most"));
    }
}
