//! Who is asking for what: the request target (`/live/<reservation>[/<control>]`) and the
//! stream key (`?key=` in the URL, or the password of `Authorization: Basic`).
//!
//! Contract: pure string work on what the client sent, no policy: whether the key is right,
//! and whether the reservation is open, is the host's decision (`Host::admit`).
//!
//! Query strings may sit anywhere in a URL, because clients build SETUP URLs by appending
//! `/<control>` to whatever URL they were given: ffmpeg turns `rtsp://h/live/R?key=K` into
//! `rtsp://h/live/R?key=K/streamid=0`, others put the query last. So a query here runs from
//! a `?` to the next `/`, and is cut out of the path wherever it is. Stream keys are hex and
//! reservation ids are `[A-Za-z0-9_-]`, so neither can contain a `/`.

use base64::Engine as _;
use url::Url;

/// The longest stream key passed to the host (keys are 32 hex characters).
pub(super) const MAX_KEY_LEN: usize = 256;
const MAX_RESERVATION_ID_LEN: usize = 64;
const PREFIX: &str = "/live/";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub reservation_id: String,
    /// What follows `/live/<reservation>/`, queries cut out; empty for the base URL.
    pub control: String,
    /// The first `key` query parameter, percent-decoded.
    pub key: Option<String>,
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

pub(super) fn valid_reservation_id(id: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
