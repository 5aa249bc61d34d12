//! The SDP an ANNOUNCE carries: one `m=` section per track, H.264 as payload type 96 + i
//! (`packetization-mode=1`, `sprop-parameter-sets`, `profile-level-id`) and AAC as
//! `MPEG4-GENERIC` in `AAC-hbr` mode with its `config`; each with `a=control:trackID=<i>`.
//!
//! Contract: pure; the text follows RFC 4566 with CRLF line ends, and what it declares is
//! exactly what `rtp` sends.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::Codec;

/// The payload type of track `i`.
pub(super) fn payload_type(i: usize) -> u8 {
    96 + (i as u8 % 32)
}

pub(super) fn describe(tracks: &[Codec]) -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=slotcast live\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
         a=tool:slotcast\r\n",
    );
    for (i, codec) in tracks.iter().enumerate() {
        let pt = payload_type(i);
        match codec {
            Codec::H264 { sps, pps, .. } => {
                sdp.push_str(&format!(
                    "m=video 0 RTP/AVP {pt}\r\na=rtpmap:{pt} H264/90000\r\n"
                ));
                let mut fmtp = format!("a=fmtp:{pt} packetization-mode=1");
                if sps.len() >= 4 {
                    fmtp.push_str(&format!(
                        ";profile-level-id={:02X}{:02X}{:02X}",
                        sps[1], sps[2], sps[3]
                    ));
                }
                if !sps.is_empty() && !pps.is_empty() {
                    fmtp.push_str(&format!(
                        ";sprop-parameter-sets={},{}",
                        STANDARD.encode(sps),
                        STANDARD.encode(pps)
                    ));
                }
                sdp.push_str(&fmtp);
                sdp.push_str("\r\n");
            }
            Codec::Aac {
                config,
                sample_rate,
                channels,
            } => {
                sdp.push_str(&format!(
                    "m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} MPEG4-GENERIC/{sample_rate}/{channels}\r\n\
                     a=fmtp:{pt} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;\
                     indexlength=3;indexdeltalength=3;config={}\r\n",
                    hex(config)
                ));
            }
        }
        sdp.push_str(&format!("a=control:trackID={i}\r\n"));
    }
    sdp
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_and_audio_are_described_as_they_will_be_sent() {
        let tracks = [
            Codec::H264 {
                sps: vec![0x67, 0x64, 0x00, 0x1f, 0xac],
                pps: vec![0x68, 0xee, 0x3c, 0x80],
                length_size: 4,
            },
            Codec::Aac {
                config: vec![0x11, 0x90],
                sample_rate: 48_000,
                channels: 2,
            },
        ];
        let sdp = describe(&tracks);
        assert!(sdp.starts_with("v=0\r\n"));
        assert!(sdp.contains(
            "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
             a=fmtp:96 packetization-mode=1;profile-level-id=64001F;\
             sprop-parameter-sets=Z2QAH6w=,aO48gA==\r\na=control:trackID=0\r\n"
        ));
        assert!(sdp.contains("m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"));
        assert!(sdp.contains("mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190\r\na=control:trackID=1\r\n"));
        let lines: Vec<&str> = sdp.split('\n').collect();
        assert_eq!(lines.last(), Some(&""), "ends with a line end");
        assert!(lines[..lines.len() - 1]
            .iter()
            .all(|l| l.len() > 1 && l.ends_with('\r')));
    }
}
