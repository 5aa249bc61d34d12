//! The RTMP publishing name: `<reservation-id>?key=<stream-key>`, which is what OBS calls the
//! stream key and what ffmpeg sends when it publishes to
//! `rtmp://host:port/live/<reservation-id>?key=<stream-key>` (ffmpeg takes the application
//! from the first path segment and the rest as the name).
//!
//! Contract: pure string work, no policy: whether the key is right is the host's decision.
//! The reservation id follows the RTSP path's rules; the query is read as a form
//! (`key=` percent-decoded, the first one counts), and its other parameters are ignored.

use crate::rtsp::auth::{valid_reservation_id, MAX_KEY_LEN};

/// What a publishing name says. Its `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Name {
    pub reservation_id: String,
    /// `None` when the name has no `key=`.
    pub key: Option<String>,
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Name")
            .field("reservation_id", &self.reservation_id)
            .field("key", &self.key.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// How to publish, for the words of a refusal.
pub const HOW: &str = "publish to rtmp://<host>:<port>/live with the stream key \
                       <reservation-id>?key=<stream-key>";

/// Reads a publishing name; the error says what is wrong with it.
pub fn parse(name: &str) -> Result<Name, String> {
    let (id, query) = name.split_once('?').unwrap_or((name, ""));
    if !valid_reservation_id(id) {
        return Err(format!(
            "the stream name is not <reservation-id>?key=<stream-key>: {HOW}"
        ));
    }
    let key = url::form_urlencoded::parse(query.as_bytes())
        .find(|(field, _)| field == "key")
        .map(|(_, value)| value.into_owned());
    if key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN) {
        return Err(format!("the stream key is longer than {MAX_KEY_LEN} bytes"));
    }
    Ok(Name {
        reservation_id: id.to_owned(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_the_reservation_and_the_key() {
        let name = parse("res-123_x?key=0123abcd").unwrap();
        assert_eq!(name.reservation_id, "res-123_x");
        assert_eq!(name.key.as_deref(), Some("0123abcd"));
        // Percent-decoded, the first `key` counts, other fields are ignored.
        let name = parse("r1?flashver=x&key=a%2Fb&key=second").unwrap();
        assert_eq!(name.key.as_deref(), Some("a/b"));
        // No key: the host refuses it, with words that say so.
        assert_eq!(parse("r1").unwrap().key, None);
        assert_eq!(parse("r1?other=1").unwrap().key, None);
        assert!(!format!("{name:?}").contains("a/b"), "the key is hidden");
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        let long_key = format!("r1?key={}", "k".repeat(MAX_KEY_LEN + 1));
        let long_id = format!("{}?key=k", "r".repeat(65));
        for (bad, says) in [
            ("", "not <reservation-id>?key=<stream-key>"),
            ("?key=k", "not <reservation-id>"),
            ("live/r1?key=k", "not <reservation-id>"),
            ("r 1?key=k", "not <reservation-id>"),
            (long_id.as_str(), "not <reservation-id>"),
            (long_key.as_str(), "longer than 256 bytes"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
