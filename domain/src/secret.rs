//! Secrets that must travel through events and NATS without being readable there: the
//! deployment's secret key, sealing with it, the RTSP Digest credential of a stream key, and a
//! camera's login.
//!
//! Contract: pure (the caller brings the nonce, so there is no randomness here). A sealed value
//! is `hex(nonce ‖ XChaCha20-Poly1305(plaintext))`, bound to a context string (e.g. the
//! reservation id) as associated data, so it opens only for the record it was sealed for. The
//! same `SLOTCAST_SECRET_KEY` must be given to every role that seals or opens (api, streamer).
//!
//! Digest (RFC 2617, as RTSP clients speak it) needs `HA1 = MD5(username:realm:password)` on
//! the server, and HA1 is a Digest password-equivalent; the api computes it from the stream
//! key when it mints the key and it travels sealed, never in the clear.

use std::fmt;
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use md5::{Digest as _, Md5};

/// The realm the streamer's Digest challenge names.
pub const DIGEST_REALM: &str = "slotcast";
/// The user name a publisher gives with Digest auth (the password is the stream key).
pub const DIGEST_USERNAME: &str = "slotcast";
/// Bytes of a sealing nonce.
pub const NONCE_LEN: usize = 24;

/// A 256-bit key from `SLOTCAST_SECRET_KEY` (64 hex characters). Never printed.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl FromStr for SecretKey {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s.trim()).map_err(|_| "must be 64 hex characters (32 bytes)")?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must be 64 hex characters (32 bytes)")?;
        Ok(Self(key))
    }
}

/// A sealed value that did not open: wrong key, wrong context, or tampered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open with this secret key and context")]
pub struct Unsealable;

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key of its own for `purpose` (HMAC-SHA256 of the purpose under this key), so a key
    /// used for one thing never serves as another's.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(&self.0, &[purpose.as_bytes()])
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }

    /// Seals `plaintext` for `context` under a fresh random `nonce` (never reuse one).
    pub fn seal(&self, nonce: [u8; NONCE_LEN], context: &str, plaintext: &[u8]) -> String {
        let payload = Payload {
            msg: plaintext,
            aad: context.as_bytes(),
        };
        // Encryption fails only for messages beyond the cipher's 256 GiB limit.
        let sealed = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        hex::encode(out)
    }

    /// Opens what [`SecretKey::seal`] made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, Unsealable> {
        let bytes = hex::decode(sealed).map_err(|_| Unsealable)?;
        if bytes.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| Unsealable)
    }
}

/// HMAC-SHA256 under a 32-byte `key` of `parts` one after the other.
pub fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac as _;
    // HMAC pads a key shorter than the hash's block with zeros: padding it here gives the
    // same MAC, through the constructor that takes a whole block and cannot fail.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new(&block.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The context a camera's credentials are sealed for: the reservation id and a purpose, so a
/// sealed camera login never opens as a stream key's HA1 (or the other way round).
pub fn camera_context(reservation_id: &str) -> String {
    format!("{reservation_id}/camera")
}

/// A camera's user name and password, as sealed in [`crate::contract::CameraSource`].
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CameraLogin {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for CameraLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CameraLogin(…)")
    }
}

impl CameraLogin {
    /// Sealed for `reservation_id`'s camera under a fresh random `nonce`.
    pub fn seal(&self, key: &SecretKey, nonce: [u8; NONCE_LEN], reservation_id: &str) -> String {
        // Two strings always serialize.
        let plain = serde_json::to_vec(self).unwrap_or_default();
        key.seal(nonce, &camera_context(reservation_id), &plain)
    }

    /// Opens what [`CameraLogin::seal`] made for the same reservation.
    pub fn open(key: &SecretKey, sealed: &str, reservation_id: &str) -> Result<Self, Unsealable> {
        let plain = key.open(sealed, &camera_context(reservation_id))?;
        serde_json::from_slice(&plain).map_err(|_| Unsealable)
    }
}

/// Whether `a` and `b` are equal, taking the same time wherever they differ (for secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex MD5 of its parts joined by `:`, the building block of Digest.
pub fn md5_hex(parts: &[&str]) -> String {
    let mut md5 = Md5::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            md5.update(b":");
        }
        md5.update(part.as_bytes());
    }
    hex::encode(md5.finalize())
}

/// HA1 of a stream key for slotcast's fixed Digest user name and realm.
pub fn digest_ha1(stream_key: &str) -> String {
    md5_hex(&[DIGEST_USERNAME, DIGEST_REALM, stream_key])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes([byte; 32])
    }

    #[test]
    fn a_camera_login_opens_only_for_its_reservations_camera() {
        let login = CameraLogin {
            username: "admin".into(),
            password: "p:w@d".into(),
        };
        let sealed = login.seal(&key(1), [5; NONCE_LEN], "r-1");
        assert!(!sealed.contains(&hex::encode(b"p:w@d")));
        assert_eq!(
            CameraLogin::open(&key(1), &sealed, "r-1"),
            Ok(login.clone())
        );
        assert_eq!(CameraLogin::open(&key(1), &sealed, "r-2"), Err(Unsealable));
        assert_eq!(CameraLogin::open(&key(2), &sealed, "r-1"), Err(Unsealable));
        // A stream key's sealed HA1 for the same reservation is not a camera login.
        let ha1 = key(1).seal([5; NONCE_LEN], "r-1", b"{}");
        assert_eq!(CameraLogin::open(&key(1), &ha1, "r-1"), Err(Unsealable));
        assert!(!format!("{login:?}").contains("p:w@d"));
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let sealed = key(1).seal([7; NONCE_LEN], "r-1", b"ha1");
        assert!(!sealed.contains(&hex::encode(b"ha1")));
        assert_eq!(key(1).open(&sealed, "r-1").unwrap(), b"ha1");
        assert_eq!(key(2).open(&sealed, "r-1"), Err(Unsealable));
        assert_eq!(key(1).open(&sealed, "r-2"), Err(Unsealable));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(key(1).open(&tampered, "r-1"), Err(Unsealable));
        assert_eq!(key(1).open("zz", "r-1"), Err(Unsealable));
        assert_eq!(key(1).open("00", "r-1"), Err(Unsealable));
    }

    #[test]
    fn secret_keys_parse_from_64_hex_characters_and_never_print() {
        let k: SecretKey = "ab".repeat(32).parse().unwrap();
        assert_eq!(format!("{k:?}"), "SecretKey(…)");
        assert!("ab".repeat(31).parse::<SecretKey>().is_err());
        assert!("zz".repeat(32).parse::<SecretKey>().is_err());
    }

    #[test]
    fn digest_ha1_is_rfc_2617s() {
        // RFC 2617, section 3.5: Mufasa / testrealm@host.com / Circle Of Life.
        assert_eq!(
            md5_hex(&["Mufasa", "testrealm@host.com", "Circle Of Life"]),
            "939e7578ed9e3c518a452acee763bce9"
        );
        assert_eq!(digest_ha1("k"), md5_hex(&["slotcast", "slotcast", "k"]));
    }
}
