//! WebRTC on str0m: what every WebRTC peer of the streamer shares, receiving (WHIP, `whip`)
//! or sending (WHEP).
//!
//! Contract: str0m does ICE, DTLS, SRTP, RTP/RTCP and depacketizing, sans-IO; here is how
//! the streamer makes its peers ([`Crypto`]: one crypto provider and one DTLS certificate for
//! the process, so a peer's setup cannot fail on them), drives one ([`peer::Peer`]: the `Rtc`
//! and its UDP socket) and what WHIP asks of it (`whip`). No tokio here: a peer is polled by
//! whoever holds it.

pub mod peer;
pub mod whip;

use std::sync::Arc;

use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::{Rtc, RtcConfig};

use crate::StreamerError;

/// The crypto every peer of this process uses: str0m's aws-lc-rs provider
/// (docs/dependencies.md says why that one) and one self-signed DTLS certificate, made once.
/// A peer checks the other's certificate by the fingerprint in the SDP, never by a chain, so
/// one certificate for all is as good as one each and costs a key generation once.
#[derive(Clone)]
pub struct Crypto {
    provider: Arc<CryptoProvider>,
    cert: DtlsCert,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto(aws-lc-rs)")
    }
}

impl Crypto {
    /// The process's one provider and certificate, made by the first caller (WHIP's edge or
    /// the first WHEP viewer); every later caller gets the same.
    pub fn shared() -> Result<Self, StreamerError> {
        static SHARED: std::sync::OnceLock<Result<Crypto, String>> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| Self::new().map_err(|e| e.to_string()))
            .clone()
            .map_err(StreamerError::WebRtc)
    }

    /// The provider and a fresh certificate.
    pub fn new() -> Result<Self, StreamerError> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| {
                StreamerError::WebRtc("the crypto provider made no DTLS certificate".into())
            })?;
        Ok(Self {
            provider: Arc::new(provider),
            cert,
        })
    }

    /// A peer's configuration with this crypto: building an [`Rtc`] from it cannot fail for
    /// want of a provider or a certificate (str0m's `build` would panic then).
    pub fn rtc_config(&self) -> RtcConfig {
        Rtc::builder()
            .set_crypto_provider(self.provider.clone())
            .set_dtls_cert(self.cert.clone())
    }
}

#[cfg(test)]
mod crypto_tests {
    use super::*;

    #[test]
    fn every_peer_of_the_process_shares_one_certificate() {
        let (a, b) = (Crypto::shared().unwrap(), Crypto::shared().unwrap());
        assert!(Arc::ptr_eq(&a.provider, &b.provider));
        let fresh = Crypto::new().unwrap();
        assert!(!Arc::ptr_eq(&a.provider, &fresh.provider));
    }
}
