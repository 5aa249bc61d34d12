//! Who a viewer is when a trusted proxy (a cache in front of the viewer port) stands
//! between: `SLOTCAST_HLS_TRUSTED_PROXIES` and `X-Forwarded-For`, sans-IO.
//!
//! Contract: the TCP peer is the viewer unless it is a trusted proxy. Behind one, the viewer
//! is the right-most address in `X-Forwarded-For` that is not itself a trusted proxy: each
//! proxy appends the address it was connected from, so everything to the left of the first
//! untrusted address was written by someone who could write anything. An entry that is not
//! an address stops the walk at the nearest hop known so far; so does [`MAX_HOPS`]. Used for
//! counting viewers; nothing here decides access.

use std::net::{IpAddr, SocketAddr};

use crate::{Result, StreamerError};

/// `X-Forwarded-For` entries looked at, at most, from the right.
pub const MAX_HOPS: usize = 32;

/// The proxies whose `X-Forwarded-For` is believed (empty: none, the default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// `127.0.0.1,10.0.0.0/8,::1` (a bare address is a /32 or /128); empty text: none.
    pub fn parse(text: &str) -> Result<Self> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        StreamerError::Config(format!(
                            "trusted proxy {item:?} is neither an address nor a CIDR network \
                             (e.g. 127.0.0.1 or 10.0.0.0/8)"
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The viewer of a request from TCP peer `peer` with these `headers` (its
    /// `X-Forwarded-For` lines), as [`TrustedProxies::client`] reads them.
    pub fn viewer(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        self.client(
            peer,
            headers
                .get_all("x-forwarded-for")
                .iter()
                .map(axum::http::HeaderValue::as_bytes),
        )
    }

    /// The viewer behind `peer`, the TCP peer of a request whose `X-Forwarded-For` field
    /// lines are `forwarded_for`, in order.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let lines: Vec<&[u8]> = forwarded_for.into_iter().collect();
        let entries = lines
            .iter()
            .rev()
            .flat_map(|line| line.rsplit(|b| *b == b','))
            .take(MAX_HOPS);
        for entry in entries {
            let Some(hop) = address(entry) else {
                return client;
            };
            client = hop;
            if !self.trusts(hop) {
                return hop;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, maybe bracketed (IPv6) or with a port.
fn address(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(text)
                .parse::<IpAddr>()
        })
        .ok()?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn proxies_parse_and_errors_say_which() {
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        let p = TrustedProxies::parse(" 127.0.0.1, 10.0.0.0/8 ,::1,").unwrap();
        assert!(p.trusts(ip("127.0.0.1")) && p.trusts(ip("10.200.1.1")) && p.trusts(ip("::1")));
        assert!(!p.trusts(ip("127.0.0.2")) && !p.trusts(ip("11.0.0.1")));
        for bad in ["localhost", "10.0.0.0/33", "127.0.0.1:80", "any"] {
            let err = TrustedProxies::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
            assert!(err.contains("trusted proxy"), "{err}");
        }
    }

    #[test]
    fn the_viewer_is_the_right_most_untrusted_address_behind_a_trusted_peer() {
        let proxies = TrustedProxies::parse("127.0.0.1,10.0.0.0/8").unwrap();
        let cases: &[(&str, &[&str], &str)] = &[
            // Not from a trusted proxy: the header is anyone's.
            ("203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            // A cache on loopback, one viewer.
            ("127.0.0.1", &["198.51.100.7"], "198.51.100.7"),
            // The viewer wrote a header of its own; the cache appended the real address.
            ("127.0.0.1", &["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
            // Two caches: an edge in 10/8, then the one on loopback.
            (
                "127.0.0.1",
                &["6.6.6.6, 198.51.100.7, 10.1.2.3"],
                "198.51.100.7",
            ),
            // Over two field lines, in order.
            ("127.0.0.1", &["198.51.100.7", "10.1.2.3"], "198.51.100.7"),
            // No header: the proxy itself.
            ("127.0.0.1", &[], "127.0.0.1"),
            // Every hop trusted: the farthest.
            ("127.0.0.1", &["10.0.0.5, 10.0.0.6"], "10.0.0.5"),
            // Garbage stops the walk at the nearest hop known.
            (
                "127.0.0.1",
                &["198.51.100.7, unknown, 10.1.2.3"],
                "10.1.2.3",
            ),
            ("127.0.0.1", &["nope"], "127.0.0.1"),
            // Ports, brackets, IPv4 as IPv6.
            ("::ffff:127.0.0.1", &["[2001:db8::1]:4431"], "2001:db8::1"),
            ("127.0.0.1", &["198.51.100.7:5000"], "198.51.100.7"),
            ("127.0.0.1", &["::ffff:198.51.100.7"], "198.51.100.7"),
        ];
        for (peer, lines, viewer) in cases {
            let got = proxies.client(ip(peer), lines.iter().map(|l| l.as_bytes()));
            assert_eq!(got, ip(viewer), "{peer} {lines:?}");
        }
        // With no trusted proxy, the peer, whatever the header says.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("127.0.0.1"), [&b"198.51.100.7"[..]]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_long_chain_of_trusted_hops_is_walked_only_so_far() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let mut hops: Vec<String> = vec!["198.51.100.7".into()];
        hops.extend((0..MAX_HOPS).map(|i| format!("10.0.0.{i}")));
        let line = hops.join(",");
        // Only the last MAX_HOPS entries, all trusted, are read: the farthest of them.
        assert_eq!(
            proxies.client(ip("10.9.9.9"), [line.as_bytes()]),
            ip("10.0.0.0")
        );
    }
}
