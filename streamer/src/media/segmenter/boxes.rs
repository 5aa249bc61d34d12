//! ISO BMFF boxes for the segmenter: the CMAF header (`ftyp` + `moov`) and one fragment
//! (`moof` + `mdat`) per LL-HLS part.
//!
//! Contract: pure functions from already-validated inputs to bytes, built with `mp4-atom`.
//! The only box written by hand is the `mdat` header (see [`fragment`]). Nothing here knows
//! about time, parts or segments.

use bytes::{BufMut as _, Bytes};
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Atom, Audio, Avc1, Avcc, Codec, Dinf, Dops, Dref, Encode, Esds, Ftyp, Hdlr, Hev1, Hvc1, Hvcc,
    Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsc, Stsd, Stsz,
    Stts, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd,
};

use crate::media::{CodecParams, Pieces, TrackKind};
use crate::StreamerError;

/// `sample_depends_on = 2` (depends on no other sample): a keyframe or an audio frame.
pub(super) const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `sample_depends_on = 1` and `sample_is_non_sync_sample`: an inter-coded video frame.
pub(super) const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

fn mux_err(what: &'static str, source: mp4_atom::Error) -> StreamerError {
    StreamerError::Box { what, source }
}

/// The `stsd` sample entry for `params`. Called when params arrive, so that bad
/// configuration records are refused there (as an error on that frame) and building the init
/// segment later cannot fail on them.
pub(super) fn sample_entry(params: &CodecParams) -> Result<Codec, StreamerError> {
    match params {
        CodecParams::H264 {
            avcc,
            width,
            height,
            ..
        } => {
            let avcc = Avcc::decode_body(&mut avcc.as_ref())
                .map_err(|e| mux_err("H.264 decoder configuration record", e))?;
            if avcc.length_size != 4 {
                // Frame data is promised 4-byte length prefixed (`media::Frame`).
                return Err(StreamerError::Mux(format!(
                    "H.264 decoder configuration record: NAL length size {} (need 4)",
                    avcc.length_size
                )));
            }
            Ok(Avc1 {
                visual: visual(*width, *height),
                avcc,
                ..Default::default()
            }
            .into())
        }
        CodecParams::H265 {
            hvcc,
            width,
            height,
            codec,
        } => {
            let hvcc = Hvcc::decode_body(&mut hvcc.as_ref())
                .map_err(|e| mux_err("H.265 decoder configuration record", e))?;
            if hvcc.length_size_minus_one != 3 {
                return Err(StreamerError::Mux(format!(
                    "H.265 decoder configuration record: NAL length size {} (need 4)",
                    hvcc.length_size_minus_one + 1
                )));
            }
            let visual = visual(*width, *height);
            // The sample entry must match the codec string the playlist announces. `hvc1`
            // (parameter sets in the sample entry) is what Apple players require, so it is
            // the default; `hev1` only when the adapter says so.
            if codec.starts_with("hev1") {
                Ok(Hev1 {
                    visual,
                    hvcc,
                    ..Default::default()
                }
                .into())
            } else {
                Ok(Hvc1 {
                    visual,
                    hvcc,
                    ..Default::default()
                }
                .into())
            }
        }
        CodecParams::Aac {
            asc,
            sample_rate,
            channels,
            ..
        } => {
            if asc.len() < 2 {
                return Err(StreamerError::Mux(format!(
                    "AAC AudioSpecificConfig of {} bytes (need at least 2)",
                    asc.len()
                )));
            }
            let object_type = asc[0] >> 3;
            let freq_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
            let chan_conf = (asc[1] >> 3) & 0x0F;
            Ok(Mp4a {
                audio: Audio {
                    data_reference_index: 1,
                    channel_count: *channels,
                    sample_size: 16,
                    // A 16.16 field: rates above 65535 Hz do not fit and are written as 0;
                    // decoders take the rate from the AudioSpecificConfig anyway.
                    sample_rate: u16::try_from(*sample_rate).unwrap_or(0).into(),
                },
                esds: Esds {
                    es_desc: EsDescriptor {
                        es_id: 0,
                        dec_config: DecoderConfig {
                            object_type_indication: 0x40, // MPEG-4 Audio
                            stream_type: 0x05,            // audio stream
                            dec_specific: Some(DecoderSpecific {
                                profile: object_type,
                                freq_index,
                                chan_conf,
                                raw: asc.to_vec(),
                            }),
                            ..Default::default()
                        },
                        sl_config: SLConfig {},
                        ..Default::default()
                    },
                },
                btrt: None,
                taic: None,
            }
            .into())
        }
        CodecParams::Opus {
            channels, pre_skip, ..
        } => {
            // Channel mapping family 0: mono or stereo, no table (what WebRTC sends).
            let count = u8::try_from(*channels)
                .ok()
                .filter(|c| (1..=2).contains(c))
                .ok_or_else(|| {
                    StreamerError::Mux(format!("Opus with {channels} channels (need 1 or 2)"))
                })?;
            Ok(Opus {
                audio: Audio {
                    data_reference_index: 1,
                    channel_count: *channels,
                    sample_size: 16,
                    // Opus in ISO BMFF: always 48 kHz, and the track's timescale with it.
                    sample_rate: OPUS_RATE.into(),
                },
                dops: Dops {
                    output_channel_count: count,
                    pre_skip: *pre_skip,
                    input_sample_rate: u32::from(OPUS_RATE),
                    output_gain: 0,
                    channel_mapping: None,
                },
                btrt: None,
            }
            .into())
        }
    }
}

/// Opus's one clock rate in ISO BMFF (and on RTP).
const OPUS_RATE: u16 = 48_000;

fn visual(width: u16, height: u16) -> Visual {
    Visual {
        data_reference_index: 1,
        width,
        height,
        ..Default::default()
    }
}

/// One track of the init segment.
pub(super) struct InitTrack<'a> {
    pub track_id: u32,
    pub kind: TrackKind,
    pub timescale: u32,
    pub params: &'a CodecParams,
    pub entry: &'a Codec,
}

/// `ftyp` + `moov` (CMAF header): empty sample tables, `mvex` with one `trex` per track.
pub(super) fn init_segment(tracks: &[InitTrack<'_>]) -> Result<Bytes, StreamerError> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"isom".into()],
    };
    let trak = tracks.iter().map(trak).collect();
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: tracks.iter().map(|t| t.track_id).max().unwrap_or(0) + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: tracks
                .iter()
                .map(|t| Trex {
                    track_id: t.track_id,
                    default_sample_description_index: 1,
                    ..Default::default()
                })
                .collect(),
        }),
        trak,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out).map_err(|e| mux_err("ftyp", e))?;
    moov.encode(&mut out).map_err(|e| mux_err("moov", e))?;
    Ok(out.into())
}

fn trak(t: &InitTrack<'_>) -> Trak {
    let (width, height) = match t.params {
        CodecParams::H264 { width, height, .. } | CodecParams::H265 { width, height, .. } => {
            (*width, *height)
        }
        CodecParams::Aac { .. } | CodecParams::Opus { .. } => (0, 0),
    };
    let video = t.kind == TrackKind::Video;
    Trak {
        tkhd: Tkhd {
            track_id: t.track_id,
            enabled: true,
            in_movie: true,
            volume: if video { 0.into() } else { 1.into() },
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: t.timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: if video { b"vide" } else { b"soun" }.into(),
                name: if video {
                    "VideoHandler"
                } else {
                    "SoundHandler"
                }
                .into(),
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![Url::default().into()],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![t.entry.clone()],
                    },
                    stts: Stts::default(),
                    stsc: Stsc::default(),
                    stsz: Stsz::default(),
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// One sample of a fragment, its duration resolved.
pub(super) struct FragSample<'a> {
    pub duration: u32,
    pub flags: u32,
    /// pts − dts.
    pub cts: i32,
    pub data: &'a Bytes,
}

/// One track's run in a fragment.
pub(super) struct FragTrack<'a> {
    pub track_id: u32,
    pub base_decode_time: u64,
    pub samples: Vec<FragSample<'a>>,
}

/// `moof` + `mdat`: one `traf` per track (`tfhd` with default-base-is-moof, `tfdt`, one
/// `trun` with per-sample duration, size and flags), the tracks' data one after another in
/// the `mdat`.
pub(super) fn fragment(sequence: u32, tracks: &[FragTrack<'_>]) -> Result<Pieces, StreamerError> {
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: tracks.iter().map(traf).collect(),
    };
    // The data offsets are relative to the start of the moof, so its size must be known
    // first; the offsets are fixed-width, so encoding once with zeros measures it.
    let mut probe = Vec::with_capacity(256 + 16 * tracks.len());
    moof.encode(&mut probe).map_err(|e| mux_err("moof", e))?;
    let payload: usize = tracks
        .iter()
        .flat_map(|t| t.samples.iter())
        .map(|s| s.data.len())
        .sum();
    const MDAT_HEADER: usize = 8;
    let mut offset = probe.len() + MDAT_HEADER;
    for (traf, track) in moof.traf.iter_mut().zip(tracks) {
        for trun in &mut traf.trun {
            trun.data_offset = Some(
                i32::try_from(offset)
                    .map_err(|_| StreamerError::Mux("fragment data offset over 2 GiB".into()))?,
            );
        }
        offset += track.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let mdat_size = u32::try_from(MDAT_HEADER + payload)
        .map_err(|_| StreamerError::Mux("mdat over 4 GiB".into()))?;

    let mut head = Vec::with_capacity(probe.len() + MDAT_HEADER);
    moof.encode(&mut head).map_err(|e| mux_err("moof", e))?;
    if head.len() != probe.len() {
        return Err(StreamerError::Mux(
            "moof size changed between encodings".into(),
        ));
    }
    // mdat header by hand: `mp4_atom::Mdat` owns its payload as one `Vec`. The samples follow
    // as the pieces they are, so no sample is copied to make a part.
    head.put_u32(mdat_size);
    head.put_slice(b"mdat");
    let mut pieces = Vec::with_capacity(1 + tracks.iter().map(|t| t.samples.len()).sum::<usize>());
    pieces.push(Bytes::from(head));
    pieces.extend(
        tracks
            .iter()
            .flat_map(|t| t.samples.iter())
            .map(|s| s.data.clone()),
    );
    Ok(Pieces::new(pieces))
}

fn traf(track: &FragTrack<'_>) -> Traf {
    let with_cts = track.samples.iter().any(|s| s.cts != 0);
    let entries = track
        .samples
        .iter()
        .map(|s| TrunEntry {
            duration: Some(s.duration),
            // Bounded by the segmenter's part size limit, far below 4 GiB.
            size: Some(u32::try_from(s.data.len()).unwrap_or(u32::MAX)),
            flags: Some(s.flags),
            cts: with_cts.then_some(i64::from(s.cts)),
        })
        .collect::<Vec<_>>();
    Traf {
        tfhd: Tfhd {
            track_id: track.track_id,
            default_base_is_moof: true,
            ..Default::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: track.base_decode_time,
        }),
        trun: vec![Trun {
            data_offset: Some(0),
            samples: entries.into(),
        }],
        ..Default::default()
    }
}
