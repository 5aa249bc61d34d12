//! The SRT stream id a publisher names its reservation and key in:
//! `#!::r=<reservation_id>,k=<stream_key>`, SRT's access-control syntax, and this form only.
//!
//! Contract: pure. Exactly one `r` and one `k`, nothing else, no nesting (`{…}`); the id
//! obeys the same rule as in an RTSP path, the key the same length bound as an RTSP key.
//! Anything else is refused with the reason a publisher can act on; the key is never in it.

use crate::rtsp::auth::{valid_reservation_id, MAX_KEY_LEN};

/// A publisher's reservation and stream key, as its stream id names them.
#[derive(Clone, PartialEq, Eq)]
pub struct Named {
    pub reservation_id: String,
    pub key: String,
}

impl std::fmt::Debug for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Named")
            .field("reservation_id", &self.reservation_id)
            .field("key", &"(hidden)")
            .finish()
    }
}

/// What the stream id must look like, for the refusal.
pub const FORM: &str = "#!::r=<reservation_id>,k=<stream_key>";

/// The reservation and key `stream_id` names; why not, otherwise.
pub fn parse(stream_id: &str) -> Result<Named, String> {
    let bad = |why: &str| format!("the stream id must be {FORM}: {why}");
    let body = stream_id
        .strip_prefix("#!::")
        .ok_or_else(|| bad("it does not start with #!::"))?;
    if body.contains(['{', '}']) {
        return Err(bad("nested keys are not taken"));
    }
    let (mut reservation, mut key) = (None, None);
    for pair in body.split(',') {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("every entry is name=value"))?;
        let slot = match name {
            "r" => &mut reservation,
            "k" => &mut key,
            _ => return Err(bad(&format!("{name:?} is not r or k"))),
        };
        if slot.replace(value).is_some() {
            return Err(bad(&format!("{name} is given twice")));
        }
    }
    let reservation = reservation.ok_or_else(|| bad("r (the reservation id) is missing"))?;
    let key = key.ok_or_else(|| bad("k (the stream key) is missing"))?;
    if !valid_reservation_id(reservation) {
        return Err(bad("r is not a reservation id"));
    }
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(bad("k is empty or too long"));
    }
    Ok(Named {
        reservation_id: reservation.to_string(),
        key: key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reservation_and_the_key_are_read_in_either_order() {
        for id in ["#!::r=r-1,k=abc", "#!::k=abc,r=r-1"] {
            let named = parse(id).unwrap();
            assert_eq!(
                (named.reservation_id.as_str(), named.key.as_str()),
                ("r-1", "abc")
            );
        }
        assert!(!format!("{:?}", parse("#!::r=r-1,k=secret").unwrap()).contains("secret"));
    }

    #[test]
    fn any_other_form_is_refused_saying_what_is_wrong_and_never_the_key() {
        for (id, says) in [
            ("", "does not start"),
            ("r=r-1,k=abc", "does not start"),
            ("#!::r=r-1", "k (the stream key) is missing"),
            ("#!::k=abc", "r (the reservation id) is missing"),
            ("#!::r=r-1,k=abc,m=publish", "\"m\" is not r or k"),
            ("#!::r=r-1,r=r-2,k=abc", "r is given twice"),
            ("#!::{r=r-1,k=abc}", "nested"),
            ("#!::r=../x,k=abc", "not a reservation id"),
            ("#!::r=r-1,k=", "empty or too long"),
            ("#!::r=r-1,kabc", "name=value"),
        ] {
            let err = parse(id).unwrap_err();
            assert!(err.contains(says), "{id:?}: {err}");
            assert!(err.contains(FORM), "{err}");
        }
        let long = format!("#!::r=r-1,k={}", "x".repeat(MAX_KEY_LEN + 1));
        assert!(parse(&long).is_err());
        assert!(!parse("#!::r=r-1,k=topsecret,x=1")
            .unwrap_err()
            .contains("topsecret"));
    }
}
