//! WHIP's request checks on a table of requests, the answer to offers str0m makes as a
//! publisher would, and the shaping of what a publisher sends.

use super::*;
use crate::media::h264::tests::{PPS, SPS};
use crate::webrtc::peer::Peer;
use crate::webrtc::Crypto;
use slotcast_domain::contract::RefusalCode;
use str0m::media::Direction;

const ID: &str = "7d0c2a5e-0f3b-4a57-9d2e-6f1a1c9b2e10";
const SESSION: &str = "0123456789abcdef0123456789abcdef";

fn post(path: &str, auth: Option<&str>, ct: Option<&str>, len: Option<u64>) -> Result<(), Answer> {
    read_head("POST", path, auth, ct, len).map(|_| ())
}

#[test]
fn a_post_with_the_key_as_bearer_and_an_sdp_offer_publishes() {
    let path = format!("/whip/{ID}");
    let request = read_head(
        "POST",
        &path,
        Some("Bearer 0123abcd"),
        Some("application/sdp"),
        Some(3000),
    )
    .unwrap();
    assert_eq!(
        request,
        Request::Publish {
            reservation_id: ID,
            key: "0123abcd"
        }
    );
    // The scheme in any case, the media type with parameters, no length (chunked).
    let request = read_head(
        "POST",
        &path,
        Some("bearer  k3y "),
        Some("Application/SDP; charset=utf-8"),
        None,
    )
    .unwrap();
    assert!(matches!(request, Request::Publish { key: "k3y", .. }));
    assert!(
        !format!("{request:?}").contains("k3y"),
        "the key is never shown"
    );
}

/// Method, path, `Authorization`, `Content-Type`, `Content-Length`; the status, and words of
/// the body.
type Case<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<u64>,
    u16,
    &'a str,
);

#[test]
fn requests_that_are_not_a_publish_get_their_answers() {
    let resource = format!("/whip/{ID}");
    let session = format!("/whip/{ID}/{SESSION}");
    let sdp = Some("application/sdp");
    let key = Some("Bearer k");
    let too_long = format!("Bearer {}", "k".repeat(MAX_KEY_LEN + 1));
    let cases: [Case; 13] = [
        (
            "POST",
            "/whip/",
            key,
            sdp,
            None,
            404,
            "/whip/<reservation_id>",
        ),
        ("POST", "/whip/a b", key, sdp, None, 404, "not found"),
        ("POST", "/live/x", key, sdp, None, 404, "not found"),
        (
            "POST",
            &format!("/whip/{ID}/nope"),
            key,
            sdp,
            None,
            404,
            "not found",
        ),
        (
            "POST",
            &resource,
            None,
            sdp,
            None,
            401,
            "Bearer <stream_key>",
        ),
        (
            "POST",
            &resource,
            Some("Basic a2V5"),
            sdp,
            None,
            401,
            "bearer token",
        ),
        (
            "POST",
            &resource,
            Some("Bearer"),
            sdp,
            None,
            401,
            "bearer token",
        ),
        (
            "POST",
            &resource,
            Some(&too_long),
            sdp,
            None,
            401,
            "bearer token",
        ),
        (
            "POST",
            &resource,
            key,
            Some("application/json"),
            None,
            415,
            "application/sdp",
        ),
        ("POST", &resource, key, None, None, 415, "application/sdp"),
        (
            "POST",
            &resource,
            key,
            sdp,
            Some(64 * 1024 + 1),
            413,
            "over 65536 bytes",
        ),
        (
            "PATCH",
            &session,
            key,
            Some("application/trickle-ice-sdpfrag"),
            None,
            405,
            "trickle",
        ),
        ("GET", &resource, key, None, None, 405, "GET is not allowed"),
    ];
    for (method, path, auth, ct, len, status, says) in cases {
        let answer = read_head(method, path, auth, ct, len).unwrap_err();
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        assert!(answer.body.contains(says), "{method} {path}: {answer:?}");
        assert!(
            !answer.headers.iter().any(|(h, _)| *h == REFUSAL_HEADER),
            "only the gate's refusals carry a refusal code"
        );
    }
    let asks = post(&resource, None, sdp, None).unwrap_err();
    assert_eq!(asks.headers, [("WWW-Authenticate", "Bearer".to_owned())]);
    assert_eq!(asks.counted, None, "asking for the key is no refusal");
    let patch = read_head("PATCH", &session, key, None, None).unwrap_err();
    assert_eq!(patch.headers, [("Allow", "DELETE, OPTIONS".to_owned())]);
    assert_eq!(
        post(&resource, key, Some("text/plain"), None)
            .unwrap_err()
            .counted,
        Some("malformed")
    );
    // A DELETE names its session; OPTIONS says what is allowed.
    assert_eq!(
        read_head("DELETE", &session, None, None, None).unwrap(),
        Request::End {
            reservation_id: ID,
            session: SESSION
        }
    );
    assert_eq!(
        read_head("DELETE", &resource, key, None, None)
            .unwrap_err()
            .status,
        405
    );
    assert_eq!(
        read_head("OPTIONS", &resource, None, None, None).unwrap(),
        Request::Options {
            allow: "OPTIONS, POST"
        }
    );
}

#[test]
fn a_refusal_is_answered_with_its_status_code_and_words() {
    for code in RefusalCode::ALL.iter().copied() {
        let answer = refused(&Refusal::new(code, "the words"));
        assert_eq!(answer.status, code.status());
        assert_eq!(answer.body, format!("{}: the words", code.as_str()));
        assert!(answer
            .headers
            .contains(&(REFUSAL_HEADER, code.as_str().to_owned())));
        let challenges = answer.headers.iter().any(|(h, _)| *h == "WWW-Authenticate");
        assert_eq!(challenges, code == RefusalCode::BadKey, "{code}");
    }
}

/// An offer from a str0m peer sending these media, as a WHIP publisher's.
fn offer(media: &[MediaKind], video_codec: fn(str0m::RtcConfig) -> str0m::RtcConfig) -> String {
    let crypto = Crypto::new().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = video_codec(crypto.rtc_config().clear_codecs().enable_opus(true, false));
    let mut publisher = Peer::on_std(config, socket, Instant::now()).unwrap();
    let mut change = publisher.rtc().sdp_api();
    for kind in media {
        change.add_media(*kind, Direction::SendOnly, None, None, None);
    }
    let (offer, _) = change.apply().expect("an offer");
    offer.to_sdp_string()
}

fn whip_peer() -> Peer {
    let crypto = Crypto::new().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    Peer::on_std(rtc_config(&crypto), socket, Instant::now()).unwrap()
}

#[test]
fn an_offer_of_h264_and_opus_is_answered_with_both_tracks() {
    let h264 = |c: str0m::RtcConfig| c.enable_h264(true);
    let sdp = offer(&[MediaKind::Video, MediaKind::Audio], h264);
    let mut peer = whip_peer();
    let offered = answer(&mut peer, &sdp, Instant::now()).unwrap();
    let kinds: Vec<MediaKind> = offered.media.iter().map(|(_, k)| *k).collect();
    assert_eq!(kinds, [MediaKind::Video, MediaKind::Audio]);
    assert!(offered.sdp.contains("a=ice-lite"), "{}", offered.sdp);
    assert!(offered.sdp.contains("H264/90000"), "{}", offered.sdp);
    assert!(offered.sdp.contains("opus/48000/2"), "{}", offered.sdp);
    assert!(offered.sdp.contains("a=recvonly"), "{}", offered.sdp);
    assert!(offered.sdp.contains(&peer.local_addr().port().to_string()));
    let specs = tracks(&offered.media);
    assert_eq!(crate::media::frames::codec_names(&specs), "h264,opus");
    assert_eq!((specs[0].clock_rate, specs[1].clock_rate), (90_000, 48_000));
}

#[test]
fn an_offer_without_h264_or_not_sdp_is_refused_with_why() {
    let vp8 = |c: str0m::RtcConfig| c.enable_vp8(true);
    let sdp = offer(&[MediaKind::Video, MediaKind::Audio], vp8);
    let refused = answer(&mut whip_peer(), &sdp, Instant::now()).unwrap_err();
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("no H.264 video"), "{refused:?}");
    assert_eq!(refused.counted, Some("unsupported_codec"));
    let h264 = |c: str0m::RtcConfig| c.enable_h264(true);
    let audio_only = offer(&[MediaKind::Audio], h264);
    let refused = answer(&mut whip_peer(), &audio_only, Instant::now()).unwrap_err();
    assert!(refused.body.contains("no H.264 video"), "{refused:?}");
    for junk in [
        "",
        "hello",
        "v=0\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video 9",
    ] {
        let refused = answer(&mut whip_peer(), junk, Instant::now()).unwrap_err();
        assert_eq!(refused.status, 400, "{junk:?}: {refused:?}");
        assert_eq!(refused.counted, Some("malformed"), "{junk:?}");
    }
}

fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
    nals.iter()
        .flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat())
        .collect()
}

#[test]
fn frames_go_to_their_tracks_on_their_rtp_clocks_and_opus_is_described_once() {
    let (video, audio) = (Mid::from("0"), Mid::from("1"));
    let mut ingest = Ingest::new(&[(video, MediaKind::Video), (audio, MediaKind::Audio)]);
    assert_eq!(ingest.video_mid(), Some(video));
    let t0 = Instant::now();
    let idr: &[u8] = &[0x65, 0x88, 0x84];
    let out = ingest
        .frame(t0, video, 90_000, 90_000, true, &annex_b(&[SPS, PPS, idr]))
        .unwrap();
    let (at, key) = &out[0];
    assert_eq!(*at, t0);
    assert_eq!(
        (key.track, key.pts, key.dts, key.keyframe),
        (0, 90_000, 90_000, true)
    );
    assert!(matches!(key.params, Some(CodecParams::H264 { .. })));
    let first = ingest.frame(t0, audio, 960, 48_000, true, b"opus").unwrap();
    let (_, first) = &first[0];
    assert_eq!((first.track, first.pts), (1, 960));
    assert_eq!(first.params, Some(opus_params()));
    assert_eq!(&first.data[..], b"opus");
    let second = ingest
        .frame(t0, audio, 1920, 48_000, true, b"more")
        .unwrap();
    assert_eq!(second[0].1.params, None);
    // A clock of another rate is put on the track's own.
    let third = ingest.frame(t0, audio, 96, 16_000, true, b"x").unwrap();
    assert_eq!(third[0].1.pts, 288);
    // Another m-line's frames are nobody's; a clock of no rate is an error, not a panic.
    assert!(ingest
        .frame(t0, Mid::from("2"), 0, 48_000, true, b"x")
        .unwrap()
        .is_empty());
    assert!(ingest.frame(t0, audio, 1, 0, true, b"x").is_err());
}

#[test]
fn audio_that_came_while_the_first_keyframe_was_on_its_way_follows_it() {
    let (video, audio) = (Mid::from("0"), Mid::from("1"));
    let mut ingest = Ingest::new(&[(video, MediaKind::Video), (audio, MediaKind::Audio)]);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // Audio every 20 ms from 0 to 1 s; the keyframe's first packet came at 900 ms, the frame
    // whole at 980 ms (handed on then, stamped with its first packet's arrival).
    for n in 0..50u64 {
        let out = ingest
            .frame(at(n * 20), audio, n * 960, 48_000, true, b"o")
            .unwrap();
        assert!(out.is_empty(), "held for the keyframe");
    }
    let idr: &[u8] = &[0x65, 0x88, 0x84];
    let out = ingest
        .frame(at(900), video, 0, 90_000, true, &annex_b(&[SPS, PPS, idr]))
        .unwrap();
    let tracks: Vec<usize> = out.iter().map(|(_, f)| f.track).collect();
    assert_eq!(
        tracks,
        [0, 1, 1, 1, 1, 1],
        "the keyframe, then the audio from 900 ms"
    );
    assert!(out[1..].iter().all(|(arrived, _)| *arrived >= at(900)));
    assert_eq!(
        out[1].1.params,
        Some(opus_params()),
        "described on the first that goes"
    );
    // From then on audio goes at once.
    assert_eq!(
        ingest
            .frame(at(1000), audio, 48_000, 48_000, true, b"o")
            .unwrap()
            .len(),
        1
    );
    // Held audio is bounded in time and count.
    let mut late = Ingest::new(&[(video, MediaKind::Video), (audio, MediaKind::Audio)]);
    for n in 0..500u64 {
        late.frame(at(n * 20), audio, n * 960, 48_000, true, b"o")
            .unwrap();
    }
    assert!(late.held.len() <= 25);
    let out = late
        .frame(at(5000), video, 0, 90_000, true, &annex_b(&[SPS, PPS, idr]))
        .unwrap();
    assert!(out.len() <= 26);
}

#[test]
fn a_keyframe_is_asked_for_until_one_comes_and_again_after_a_loss() {
    let mut ask = KeyframeAsk::default();
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    assert!(ask.due(at(0)), "at the start");
    assert!(!ask.due(at(500)), "not more than once a second");
    ask.saw_video(false, true);
    assert!(ask.due(at(1000)), "still none a second later");
    ask.saw_video(true, true);
    assert!(!ask.due(at(5000)), "a keyframe came");
    ask.saw_video(false, true);
    assert!(!ask.due(at(6000)), "frames follow each other");
    ask.saw_video(false, false);
    assert!(ask.due(at(6001)), "a loss: at once");
    assert!(!ask.due(at(6002)));
    ask.saw_video(false, false);
    assert!(
        !ask.due(at(6500)),
        "a second loss before the keyframe waits its second"
    );
    assert!(ask.due(at(7001)));
}
