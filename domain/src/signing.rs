//! Signatures on what crosses NATS, so that whoever can publish there cannot open a gate or
//! write the audit trail.
//!
//! Contract: with `SLOTCAST_SECRET_KEY` set, every slot message and ingest report carries the
//! NATS header [`HEADER`] = `v1=<hex HMAC-SHA256>` under a key derived from the secret key for
//! this purpose alone ([`PURPOSE`]), over the subject and the payload exactly as sent (the
//! subject length-prefixed, so no two (subject, payload) pairs sign alike, and a message
//! cannot be replayed onto another server's or reservation's subject). Receivers with the key
//! take only messages whose signature checks ([`Check::Signed`]); unsigned and badly signed
//! ones are the receiver's to log, count and drop. Pure: no I/O.

use std::fmt;

use crate::secret::{constant_time_eq, hmac_sha256, SecretKey};

/// The NATS header the signature travels in.
pub const HEADER: &str = "Slotcast-Signature";
/// What the signing key is derived for.
pub const PURPOSE: &str = "slotcast nats message signature v1";
const VERSION: &str = "v1=";

/// Signs and checks messages; holds the derived key only.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(…)")
    }
}

/// What a received message's signature came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Signed,
    /// No signature header.
    Unsigned,
    /// A signature that is not ours for this subject and payload.
    Forged,
}

impl Check {
    /// A fixed word for metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Signed => "signed",
            Self::Unsigned => "unsigned",
            Self::Forged => "bad_signature",
        }
    }
}

impl Signer {
    pub fn new(secret: &SecretKey) -> Self {
        Self {
            key: secret.derive(PURPOSE),
        }
    }

    fn mac(&self, subject: &str, payload: &[u8]) -> [u8; 32] {
        let length = (subject.len() as u64).to_be_bytes();
        hmac_sha256(&self.key, &[&length, subject.as_bytes(), payload])
    }

    /// The header value for `payload` sent on `subject`.
    pub fn sign(&self, subject: &str, payload: &[u8]) -> String {
        format!("{VERSION}{}", hex::encode(self.mac(subject, payload)))
    }

    /// Checks `header` (the [`HEADER`] value received, if any) against `subject` and `payload`.
    pub fn check(&self, subject: &str, payload: &[u8], header: Option<&str>) -> Check {
        let Some(header) = header else {
            return Check::Unsigned;
        };
        let given = header
            .trim()
            .strip_prefix(VERSION)
            .and_then(|h| hex::decode(h).ok());
        match given {
            Some(given) if constant_time_eq(&given, &self.mac(subject, payload)) => Check::Signed,
            _ => Check::Forged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> Signer {
        Signer::new(&SecretKey::from_bytes([byte; 32]))
    }

    #[test]
    fn a_signed_message_checks_and_any_change_does_not() {
        let s = signer(7);
        let subject = "slotcast.slots.srv-1";
        let payload = br#"{"kind":"opened","reservation_id":"r1"}"#;
        let sig = s.sign(subject, payload);
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64, "{sig}");
        assert_eq!(s.check(subject, payload, Some(&sig)), Check::Signed);
        assert_eq!(s.check(subject, payload, None), Check::Unsigned);
        // Another payload, another subject, another key, a mangled header: all forged.
        assert_eq!(s.check(subject, b"{}", Some(&sig)), Check::Forged);
        assert_eq!(
            s.check("slotcast.slots.srv-2", payload, Some(&sig)),
            Check::Forged
        );
        assert_eq!(signer(8).check(subject, payload, Some(&sig)), Check::Forged);
        for bad in ["", "v1=", "v2=00", "v1=zz", &sig[..sig.len() - 2]] {
            assert_eq!(s.check(subject, payload, Some(bad)), Check::Forged, "{bad}");
        }
    }

    #[test]
    fn the_subject_is_bound_by_its_length_so_a_split_cannot_move() {
        let s = signer(1);
        // Without the length, ("a.b", "cd") and ("a.bc", "d") would sign alike.
        assert_ne!(s.sign("a.b", b"cd"), s.sign("a.bc", b"d"));
    }

    #[test]
    fn the_mac_is_hmac_sha256_by_rfc_4231() {
        // Test case 2: key "Jefe" (a short key is zero-padded, as HMAC itself does).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_signing_key_is_not_the_secret_key() {
        let secret = SecretKey::from_bytes([9; 32]);
        assert_ne!(secret.derive(PURPOSE), [9; 32]);
        assert_ne!(secret.derive(PURPOSE), secret.derive("another purpose"));
    }
}
