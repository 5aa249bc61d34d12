//! The load `slotcast-bench hls` puts on an HTTP server: plain keep-alive HTTP/1.1 GETs over
//! many connections, and what came back (rate, latency percentiles, bytes).
//!
//! Contract: one small client for every server measured, so the same client costs each the
//! same. Each connection sends one GET, reads the whole answer (headers, then exactly
//! `Content-Length` bytes, thrown away), and sends the next; paths are taken in turn, each
//! connection starting at a different one. An answer that is not 200 with the expected
//! length, or a connection that fails, fails the run: a broken run reports no figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One path and the length its answer must have.
#[derive(Clone, Debug)]
pub struct Target {
    pub path: String,
    pub len: usize,
}

/// What one run of the load measured.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    pub requests: u64,
    pub seconds: f64,
    pub per_s: f64,
    pub mib_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// `connections` keep-alive connections to `addr` GETting `targets` in turn for `length`.
pub async fn run(
    addr: &str,
    targets: &[Target],
    connections: usize,
    length: Duration,
) -> Result<Measured> {
    ensure!(!targets.is_empty(), "nothing to fetch");
    let targets: Arc<[Target]> = targets.into();
    let start = Instant::now();
    let until = start + length;
    let mut tasks = Vec::with_capacity(connections);
    for k in 0..connections {
        let (addr, targets) = (addr.to_string(), targets.clone());
        tasks.push(tokio::spawn(async move {
            connection(&addr, &targets, k, until).await
        }));
    }
    let mut latencies_us: Vec<u32> = Vec::new();
    let mut bytes = 0u64;
    for task in tasks {
        let (lat, b) = task.await.context("a load connection panicked")??;
        latencies_us.extend(lat);
        bytes += b;
    }
    let seconds = start.elapsed().as_secs_f64();
    ensure!(!latencies_us.is_empty(), "no request was answered");
    latencies_us.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies_us.len() as f64 - 1.0) * q).round() as usize;
        f64::from(latencies_us[i]) / 1000.0
    };
    let requests = latencies_us.len() as u64;
    Ok(Measured {
        requests,
        seconds,
        per_s: requests as f64 / seconds,
        mib_per_s: bytes as f64 / seconds / (1024.0 * 1024.0),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}

/// One connection's requests until `until`: their latencies (µs) and the body bytes read.
async fn connection(
    addr: &str,
    targets: &[Target],
    k: usize,
    until: Instant,
) -> Result<(Vec<u32>, u64)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let requests: Vec<Vec<u8>> = targets
        .iter()
        .map(|t| format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", t.path).into_bytes())
        .collect();
    let mut buf = vec![0u8; 512 * 1024];
    let (mut filled, mut latencies, mut bytes) = (0usize, Vec::new(), 0u64);
    let mut i = k % targets.len();
    while Instant::now() < until {
        let sent = Instant::now();
        stream.write_all(&requests[i]).await?;
        let (status, len, head) = loop {
            if let Some(head) = parse_head(&buf[..filled])? {
                break head;
            }
            ensure!(filled < buf.len(), "an answer's headers over 512 KiB");
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("{addr} closed the connection");
            }
            filled += n;
        };
        ensure!(
            status == 200 && len == targets[i].len,
            "GET {}: {status} with {len} bytes, expected 200 with {}",
            targets[i].path,
            targets[i].len
        );
        // The body: what is already read, then the rest, thrown away.
        let mut left = len;
        let have = (filled - head).min(left);
        left -= have;
        buf.copy_within(head + have..filled, 0);
        filled -= head + have;
        while left > 0 {
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("{addr} closed the connection mid-answer");
            }
            let body = n.min(left);
            left -= body;
            // Anything past the body is the next answer (there is none: one request at a time).
            buf.copy_within(filled + body..filled + n, filled);
            filled += n - body;
        }
        latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        bytes += len as u64;
        i = (i + 1) % targets.len();
    }
    Ok((latencies, bytes))
}

/// The status, `Content-Length` and header length of the answer at the start of `buf`, once
/// its headers are all there.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("answer headers are not text")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status line in {head:?}"))?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no Content-Length in {head:?}"))?;
    Ok(Some((status, len, end + 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_once_whole() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nX: y\r\n\r\nbody";
        assert_eq!(parse_head(head).unwrap(), Some((200, 12, head.len() - 4)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
