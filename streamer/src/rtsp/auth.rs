//! Who is asking for what: the request target (`/live/<reservation>[/<control>]`) and the
//! credential: the stream key (`?key=` in the URL, or the password of `Authorization: Basic`),
//! or a Digest answer (RFC 2617, user `slotcast`, password the stream key) to the
//! connection's challenge.
//!
//! Contract: pure string work on what the client sent, no policy: whether the credential is
//! right, and whether the reservation is open, is the host's decision (`Host::admit`), which
//! checks a Digest answer with [`DigestAnswer::matches`] against the reservation's HA1.
//!
//! Query strings may sit anywhere in a URL, because clients build SETUP URLs by appending
//! `/<control>` to whatever URL they were given: ffmpeg turns `rtsp://h/live/R?key=K` into
//! `rtsp://h/live/R?key=K/streamid=0`, others put the query last. So a query here runs from
//! a `?` to the next `/`, and is cut out of the path wherever it is. Stream keys are hex and
//! reservation ids are `[A-Za-z0-9_-]`, so neither can contain a `/`.

use base64::Engine as _;
use slotcast_domain::secret::{constant_time_eq, md5_hex, DIGEST_REALM, DIGEST_USERNAME};
use url::Url;

/// The longest stream key passed to the host (keys are 32 hex characters).
pub(crate) const MAX_KEY_LEN: usize = 256;
const MAX_RESERVATION_ID_LEN: usize = 64;
const PREFIX: &str = "/live/";

/// Its `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub reservation_id: String,
    /// What follows `/live/<reservation>/`, queries cut out; empty for the base URL.
    pub control: String,
    /// The first `key` query parameter, percent-decoded.
    pub key: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("reservation_id", &self.reservation_id)
            .field("control", &self.control)
            .field("key", &self.key.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// Reads `rtsp://host[:port]/live/<reservation>[/<control>]`, with queries anywhere.
pub(super) fn target(url: &Url) -> Result<Target, &'static str> {
    let mut raw = url.path().to_owned();
    if let Some(query) = url.query() {
        raw.push('?');
        raw.push_str(query);
    }
    let (path, queries) = cut_queries(&raw);
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err("publish to rtsp://<host>:<port>/live/<reservation-id>");
    };
    let (reservation_id, control) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_reservation_id(reservation_id) {
        return Err("not a reservation id");
    }
    let key = queries.iter().find_map(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "key")
            .map(|(_, value)| value.into_owned())
    });
    Ok(Target {
        reservation_id: reservation_id.to_owned(),
        control: control.trim_end_matches('/').to_owned(),
        key,
    })
}

/// An SDP `a=control` value as it will appear in a SETUP target's `control`: relative values
/// as they are (queries cut out), absolute ones by their part after the reservation.
pub(super) fn control_of(sdp_control: &str) -> Option<String> {
    let lower = sdp_control.get(..8).map(str::to_ascii_lowercase);
    if lower.is_some_and(|l| l.starts_with("rtsp://") || l.starts_with("rtsps://")) {
        let url = Url::parse(sdp_control).ok()?;
        return target(&url).ok().map(|t| t.control);
    }
    let (path, _) = cut_queries(sdp_control);
    Some(path.trim_matches('/').to_owned())
}

/// Splits `raw` into the path without its queries, and the queries.
fn cut_queries(raw: &str) -> (String, Vec<&str>) {
    let mut path = String::with_capacity(raw.len());
    let mut queries = Vec::new();
    let mut rest = raw;
    while let Some(q) = rest.find('?') {
        path.push_str(&rest[..q]);
        let after = &rest[q + 1..];
        let end = after.find('/').unwrap_or(after.len());
        queries.push(&after[..end]);
        rest = &after[end..];
    }
    path.push_str(rest);
    (path, queries)
}

pub(crate) fn valid_reservation_id(id: &str) -> bool {
    (1..=MAX_RESERVATION_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The password of `Authorization: Basic base64(user:password)`; the user is ignored.
pub(super) fn basic_password(header: &str) -> Option<String> {
    let (scheme, credentials) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// What a publisher offers as proof that it holds the stream key. Its `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The key itself: `?key=`, or the Basic password.
    Key(String),
    /// A Digest answer to this connection's challenge.
    Digest(DigestAnswer),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(_) => f.write_str("Key(hidden)"),
            Self::Digest(answer) => f.debug_tuple("Digest").field(answer).finish(),
        }
    }
}

/// The parts of `Authorization: Digest …` that the response is computed from, with the
/// request method; the user name and realm were checked when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestAnswer {
    pub method: String,
    pub uri: String,
    pub nonce: String,
    pub response: String,
    /// `(nc, cnonce)` when the client used `qop=auth`.
    pub qop_auth: Option<(String, String)>,
}

impl DigestAnswer {
    /// Whether the answer was computed from `ha1` (lower-case hex), compared in constant time.
    pub fn matches(&self, ha1: &str) -> bool {
        let ha2 = md5_hex(&[&self.method, &self.uri]);
        let expected = match &self.qop_auth {
            None => md5_hex(&[ha1, &self.nonce, &ha2]),
            Some((nc, cnonce)) => md5_hex(&[ha1, &self.nonce, nc, cnonce, "auth", &ha2]),
        };
        constant_time_eq(
            expected.as_bytes(),
            self.response.to_ascii_lowercase().as_bytes(),
        )
    }
}

/// The `WWW-Authenticate` value challenging for Digest with `nonce`.
pub(super) fn digest_challenge(nonce: &str) -> String {
    format!("Digest realm=\"{DIGEST_REALM}\", nonce=\"{nonce}\", algorithm=MD5")
}

/// The `WWW-Authenticate` value offering Basic.
pub(super) const BASIC_CHALLENGE: &str = "Basic realm=\"slotcast\"";

/// Reads `Authorization: Digest …` sent with `method`, answering `nonce` (this connection's).
/// `Ok(None)`: not a Digest header. `Err`: a Digest header this server cannot accept, and why
/// (shown to the publisher).
pub(super) fn digest_answer(
    header: &str,
    method: &str,
    nonce: &str,
) -> Result<Option<DigestAnswer>, &'static str> {
    let header = header.trim();
    let Some((scheme, rest)) = header.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("digest") {
        return Ok(None);
    }
    let params = digest_params(rest).ok_or("malformed Digest authorization")?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
        return Err("Digest algorithm must be MD5");
    }
    if get("username") != Some(DIGEST_USERNAME) {
        return Err("Digest user name must be slotcast (the password is the stream key)");
    }
    if get("realm") != Some(DIGEST_REALM) || get("nonce") != Some(nonce) {
        return Err("stale Digest nonce or wrong realm: answer this connection's challenge");
    }
    let (Some(uri), Some(response)) = (get("uri"), get("response")) else {
        return Err("Digest authorization without uri or response");
    };
    let qop_auth = match get("qop") {
        None => None,
        Some(qop) if qop.eq_ignore_ascii_case("auth") => match (get("nc"), get("cnonce")) {
            (Some(nc), Some(cnonce)) => Some((nc.to_owned(), cnonce.to_owned())),
            _ => return Err("Digest qop=auth without nc or cnonce"),
        },
        Some(_) => return Err("Digest qop must be auth"),
    };
    Ok(Some(DigestAnswer {
        method: method.to_owned(),
        uri: uri.to_owned(),
        nonce: nonce.to_owned(),
        response: response.to_owned(),
        qop_auth,
    }))
}

/// `name=value, name="quoted, value", …` into pairs; `None` if it does not parse.
fn digest_params(text: &str) -> Option<Vec<(String, String)>> {
    const MAX_PARAMS: usize = 16;
    let mut params = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if params.len() == MAX_PARAMS {
            return None;
        }
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            };
            (value, &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((name.to_owned(), value));
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(params)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn no_debug_shows_the_stream_key() {
        let key = "0123456789abcdef0123456789abcdef";
        let target = t(&format!("rtsp://h/live/r1?key={key}")).unwrap();
        let shown = format!("{target:?} {:?}", Credential::Key(key.into()));
        assert!(!shown.contains(key), "{shown}");
        assert!(shown.contains("hidden"), "{shown}");
    }

    fn t(url: &str) -> Result<Target, &'static str> {
        target(&Url::parse(url).unwrap())
    }

    fn ok(id: &str, control: &str, key: Option<&str>) -> Result<Target, &'static str> {
        Ok(Target {
            reservation_id: id.to_owned(),
            control: control.to_owned(),
            key: key.map(str::to_owned),
        })
    }

    #[test]
    fn targets() {
        assert_eq!(t("rtsp://h:8554/live/r-1"), ok("r-1", "", None));
        assert_eq!(t("rtsp://h/live/r_1/"), ok("r_1", "", None));
        assert_eq!(t("rtsp://h/live/R1?key=abc"), ok("R1", "", Some("abc")));
        // ffmpeg appends the control after the query.
        assert_eq!(
            t("rtsp://h:8554/live/R1?key=abc/streamid=0"),
            ok("R1", "streamid=0", Some("abc"))
        );
        assert_eq!(
            t("rtsp://h/live/R1/trackID=1?x=1&key=a%62c"),
            ok("R1", "trackID=1", Some("abc"))
        );
        assert_eq!(
            t("rtsp://h/live/R1?a=b/trackID=1?key=k"),
            ok("R1", "trackID=1", Some("k"))
        );
        assert!(t("rtsp://h/other/R1").is_err());
        assert!(t("rtsp://h/live/").is_err());
        assert!(t("rtsp://h/live/a.b").is_err());
        assert!(t(&format!("rtsp://h/live/{}", "a".repeat(65))).is_err());
        assert!(t(&format!("rtsp://h/live/{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn controls() {
        assert_eq!(control_of("streamid=0").as_deref(), Some("streamid=0"));
        assert_eq!(
            control_of("rtsp://h:1/live/R1/trackID=1").as_deref(),
            Some("trackID=1")
        );
        assert_eq!(
            control_of("RTSP://h/live/R1?key=k/trackID=2").as_deref(),
            Some("trackID=2")
        );
        assert_eq!(control_of("rtsp://h/elsewhere/x"), None);
    }

    #[test]
    fn basic() {
        // "publisher:s3cret"
        assert_eq!(
            basic_password("Basic cHVibGlzaGVyOnMzY3JldA==").as_deref(),
            Some("s3cret")
        );
        // ":k:with:colons"
        assert_eq!(
            basic_password("basic Oms6d2l0aDpjb2xvbnM=").as_deref(),
            Some("k:with:colons")
        );
        assert_eq!(basic_password("Digest username=\"x\""), None);
        assert_eq!(basic_password("Basic !!!"), None);
        // "user:" (no password)
        assert_eq!(basic_password("Basic dXNlcjo="), None);
    }

    /// A client's side of Digest, as ffmpeg and GStreamer compute it (no qop).
    pub(crate) fn digest_header(key: &str, method: &str, uri: &str, nonce: &str) -> String {
        let ha1 = slotcast_domain::secret::digest_ha1(key);
        let response = md5_hex(&[&ha1, nonce, &md5_hex(&[method, uri])]);
        format!(
            "Digest username=\"slotcast\", realm=\"slotcast\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\""
        )
    }

    #[test]
    fn digest_answers_match_the_key_they_were_made_with() {
        let header = digest_header("k3y", "ANNOUNCE", "rtsp://h/live/r?x=1,2", "n0nce");
        let answer = digest_answer(&header, "ANNOUNCE", "n0nce")
            .unwrap()
            .unwrap();
        assert_eq!(answer.uri, "rtsp://h/live/r?x=1,2");
        let ha1 = slotcast_domain::secret::digest_ha1("k3y");
        assert!(answer.matches(&ha1));
        assert!(!answer.matches(&slotcast_domain::secret::digest_ha1("other")));
        // The method is part of the answer: replayed under another method it fails.
        let replayed = digest_answer(&header, "RECORD", "n0nce").unwrap().unwrap();
        assert!(!replayed.matches(&ha1));
    }

    #[test]
    fn digest_with_qop_auth_is_rfc_2617s_worked_example() {
        // RFC 2617 section 3.5, with the example's values.
        let header = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
            nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
            nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", \
            opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let params = digest_params(header.split_once(' ').unwrap().1).unwrap();
        let get = |n: &str| params.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let answer = DigestAnswer {
            method: "GET".into(),
            uri: get("uri"),
            nonce: get("nonce"),
            response: get("response"),
            qop_auth: Some((get("nc"), get("cnonce"))),
        };
        assert!(answer.matches(&md5_hex(&[
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life"
        ])));
    }

    #[test]
    fn digest_headers_this_server_cannot_take_say_why() {
        let ok = digest_header("k", "ANNOUNCE", "rtsp://h/live/r", "n");
        assert!(digest_answer(&ok, "ANNOUNCE", "n").unwrap().is_some());
        assert_eq!(digest_answer("Basic eDp5", "ANNOUNCE", "n"), Ok(None));
        assert_eq!(
            digest_answer(&ok, "ANNOUNCE", "other-nonce").unwrap_err(),
            "stale Digest nonce or wrong realm: answer this connection's challenge"
        );
        let wrong_user = ok.replace("username=\"slotcast\"", "username=\"admin\"");
        assert!(digest_answer(&wrong_user, "ANNOUNCE", "n")
            .unwrap_err()
            .contains("user name must be slotcast"));
        let sha = format!("{ok}, algorithm=SHA-256");
        assert_eq!(
            digest_answer(&sha, "ANNOUNCE", "n").unwrap_err(),
            "Digest algorithm must be MD5"
        );
        for bad in [
            "Digest username=\"slotcast",
            "Digest =x",
            "Digest a=\"1\" b=2",
            "Digest username=\"slotcast\", realm=\"slotcast\", nonce=\"n\"",
        ] {
            assert!(digest_answer(bad, "ANNOUNCE", "n").is_err(), "{bad}");
        }
    }
}
