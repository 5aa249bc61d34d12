//! The sendfile path against real sockets on loopback: what arrives is what was held, in
//! order with the plain bytes around it, whatever the socket takes at a time, and the held
//! bytes really left by `sendfile`.

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{serve, Limits};

/// `n` bytes of a pattern that shows any byte out of place.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn held_bytes_are_the_pieces_joined_and_known_while_they_live() {
    let files = MappedFiles::new();
    let a = Bytes::from(pattern(1000, 1));
    let b = Bytes::from(pattern(5000, 2));
    let held = files.hold(&[a.clone(), b.clone()]).expect("hold");
    assert_eq!(&held[..1000], &a[..]);
    assert_eq!(&held[1000..], &b[..]);
    assert_eq!(files.len(), 1);
    let (_, offset) = files.find(&held[1500..2500]).expect("a slice is found");
    assert_eq!(offset, 1500);
    assert!(files.find(&a).is_none(), "plain memory is not a file");
    let slice = held.slice(10..20);
    drop(held);
    assert_eq!(files.len(), 1, "a slice keeps the region");
    drop(slice);
    assert!(files.is_empty(), "gone with its last Bytes");
    assert_eq!(files.hold(&[]).expect("empty").len(), 0);
}

#[test]
fn held_bytes_go_to_an_unnamed_file_in_the_directory_given_or_a_memfd() {
    let dir = std::env::temp_dir();
    let on_disk = MappedFiles::in_dir(dir.clone());
    let data = Bytes::from(pattern(70_000, 5));
    let held = on_disk
        .hold(std::slice::from_ref(&data))
        .expect("hold on disk");
    assert!(held == data);
    let (file, _) = on_disk.find(&held).expect("known");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*file);
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("its link");
    let target = target.display().to_string();
    assert!(
        target.starts_with(&dir.display().to_string()) && target.ends_with("(deleted)"),
        "an unnamed file in {}: {target}",
        dir.display()
    );
    // A directory that is not there: a memfd instead.
    let fallback = MappedFiles::in_dir(dir.join("not-there-4c1b"));
    let held = fallback
        .hold(std::slice::from_ref(&data))
        .expect("hold in a memfd");
    let (file, _) = fallback.find(&held).expect("known");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*file);
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("its link");
    assert!(
        target.display().to_string().contains("memfd:"),
        "{target:?}"
    );
}

#[tokio::test]
async fn a_connection_sends_plain_and_held_bytes_in_order_through_a_slow_reader() {
    let files = MappedFiles::new();
    let held = files
        .hold(&[Bytes::from(pattern(3 << 20, 7))])
        .expect("hold");
    let head = Bytes::from_static(b"HEAD\r\n");
    let tail = Bytes::from(pattern(10_000, 9));
    let mut want = head.to_vec();
    want.extend_from_slice(&held);
    want.extend_from_slice(&held[100..200_000]);
    want.extend_from_slice(&tail);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Small reads, so the sender meets a full socket again and again.
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
            tokio::task::yield_now().await;
        }
    });
    let (stream, _) = listener.accept().await.unwrap();
    let mut conn = Connection::new(stream, Some(files.clone()));
    let mut pieces = vec![head, held.clone(), held.slice(100..200_000), tail];
    while !pieces.is_empty() {
        let slices: Vec<IoSlice> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut n = conn.write_vectored(&slices).await.unwrap();
        assert!(n > 0);
        while n > 0 {
            let first = pieces[0].len();
            if n >= first {
                pieces.remove(0);
                n -= first;
            } else {
                pieces[0] = pieces[0].slice(n..);
                n = 0;
            }
        }
    }
    conn.shutdown().await.unwrap();
    drop(conn);
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("read within 30 s")
        .unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the bytes arrived changed or out of order");
    let from_files = (held.len() + 199_900) as u64;
    assert_eq!(
        files.bytes_sent(),
        from_files,
        "the held bytes went by sendfile"
    );
}

#[tokio::test]
async fn an_http_answer_of_held_bytes_arrives_whole() {
    let files = MappedFiles::new();
    let body = files
        .hold(&[Bytes::from(pattern(300_000, 3))])
        .expect("hold");
    let expected = body.clone();
    let router = Router::new().route(
        "/part",
        get(move || {
            let body = body.clone();
            async move { Body::from(body) }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        router,
        Limits::default(),
        Some(files.clone()),
        shutdown.clone(),
        || {},
    ));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Two requests on one connection: the second answer follows the first's held bytes.
    for _ in 0..2 {
        stream
            .write_all(b"GET /part HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-length: 300000"), "{head}");
        let mut got = vec![0u8; 300_000];
        tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut got))
            .await
            .expect("the body within 30 s")
            .unwrap();
        assert!(got[..] == expected[..], "the body arrived changed");
    }
    assert_eq!(files.bytes_sent(), 600_000, "both bodies went by sendfile");
    shutdown.cancel();
}
