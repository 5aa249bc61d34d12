//! The `Transport` header of a SETUP: what the publisher offers, and our answer.
//!
//! Contract: parses each comma-separated alternative into what we can take (RTP/AVP unicast
//! over TCP interleaved or UDP, `mode=record` or no mode) or the reason we cannot; choosing
//! among them (same transport for every track, free channels) is the session's business.

/// One transport alternative we can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Requested {
    /// Interleaved in the RTSP connection; channels `(rtp, rtcp)` if the client chose them.
    Tcp { interleaved: Option<(u8, u8)> },
    /// UDP to the client's `(rtp, rtcp)` ports. `spec` is how the client wrote the lower
    /// transport (`RTP/AVP` or `RTP/AVP/UDP`), echoed in the answer.
    Udp {
        client_ports: (u16, u16),
        spec: &'static str,
    },
}

/// Each alternative of a `Transport` header, in the client's order of preference.
pub(super) fn parse(header: &str) -> Vec<Result<Requested, String>> {
    header
        .split(',')
        .map(str::trim)
        .filter(|alt| !alt.is_empty())
        .map(alternative)
        .collect()
}

fn alternative(alt: &str) -> Result<Requested, String> {
    let mut parts = alt.split(';').map(str::trim);
    let spec = parts.next().unwrap_or_default();
    let (tcp, udp_spec) = match spec.to_ascii_uppercase().as_str() {
        "RTP/AVP/TCP" => (true, ""),
        "RTP/AVP" => (false, "RTP/AVP"),
        "RTP/AVP/UDP" => (false, "RTP/AVP/UDP"),
        _ => return Err(format!("transport {spec:?} is not supported (use RTP/AVP)")),
    };
    let mut interleaved = None;
    let mut client_ports = None;
    for param in parts {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "multicast" => return Err("multicast is not supported".to_owned()),
            "interleaved" => {
                interleaved = Some(
                    pair(value)
                        .and_then(|(a, b)| Some((u8::try_from(a).ok()?, u8::try_from(b).ok()?)))
                        .filter(|&(a, b)| a % 2 == 0 && u16::from(b) == u16::from(a) + 1)
                        .ok_or_else(|| {
                            format!("interleaved={value} is not an even-odd channel pair")
                        })?,
                )
            }
            "client_port" => {
                client_ports = Some(
                    pair(value)
                        .filter(|&(a, b)| a != 0 && b != 0)
                        .ok_or_else(|| format!("client_port={value} is not a port pair"))?,
                )
            }
            "mode" => {
                let mode = value.trim_matches('"');
                if !mode.eq_ignore_ascii_case("record") {
                    return Err(format!(
                        "mode={mode} is not supported: this server takes publishers (mode=record)"
                    ));
                }
            }
            _ => {}
        }
    }
    if tcp {
        return Ok(Requested::Tcp { interleaved });
    }
    match client_ports {
        Some(client_ports) => Ok(Requested::Udp {
            client_ports,
            spec: udp_spec,
        }),
        None => Err("UDP transport without client_port".to_owned()),
    }
}

/// `a-b`, or `a` meaning `a-(a+1)`.
fn pair(value: &str) -> Option<(u16, u16)> {
    match value.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: u16 = value.parse().ok()?;
            Some((a, a.checked_add(1)?))
        }
    }
}

pub(super) fn answer_tcp((rtp, rtcp): (u8, u8)) -> String {
    format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp};mode=record")
}

pub(super) fn answer_udp(spec: &str, client: (u16, u16), server: (u16, u16)) -> String {
    format!(
        "{spec};unicast;client_port={}-{};server_port={}-{};mode=record",
        client.0, client.1, server.0, server.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_ffmpeg_and_gstreamer_send() {
        assert_eq!(
            parse("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"),
            vec![Ok(Requested::Tcp {
                interleaved: Some((0, 1))
            })]
        );
        assert_eq!(
            parse("RTP/AVP/UDP;unicast;client_port=5000-5001;mode=record"),
            vec![Ok(Requested::Udp {
                client_ports: (5000, 5001),
                spec: "RTP/AVP/UDP"
            })]
        );
        assert_eq!(
            parse(
                "RTP/AVP;unicast;client_port=6000-6001;mode=\"RECORD\", RTP/AVP/TCP;interleaved=2"
            ),
            vec![
                Ok(Requested::Udp {
                    client_ports: (6000, 6001),
                    spec: "RTP/AVP"
                }),
                Ok(Requested::Tcp {
                    interleaved: Some((2, 3))
                })
            ]
        );
        assert_eq!(
            parse("RTP/AVP/TCP;unicast"),
            vec![Ok(Requested::Tcp { interleaved: None })]
        );
    }

    #[test]
    fn refused() {
        for (header, why) in [
            (
                "RTP/SAVP;unicast",
                "transport \"RTP/SAVP\" is not supported (use RTP/AVP)",
            ),
            ("RTP/AVP;multicast", "multicast is not supported"),
            ("RTP/AVP;unicast", "UDP transport without client_port"),
            (
                "RTP/AVP;client_port=0-1",
                "client_port=0-1 is not a port pair",
            ),
            (
                "RTP/AVP/TCP;interleaved=1-2",
                "interleaved=1-2 is not an even-odd channel pair",
            ),
            (
                "RTP/AVP/TCP;interleaved=255",
                "interleaved=255 is not an even-odd channel pair",
            ),
            (
                "RTP/AVP/TCP;interleaved=0-1;mode=play",
                "mode=play is not supported: this server takes publishers (mode=record)",
            ),
        ] {
            assert_eq!(parse(header), vec![Err(why.to_owned())], "{header}");
        }
    }
}
