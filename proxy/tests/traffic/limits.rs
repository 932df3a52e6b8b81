//! Caps on what sandboxes can make the proxy hold: body size, requests in flight, connections,
//! buffered bytes.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use centaur_proxy::Limits;
use centaur_proxy::audit::{AuditRecord, Decision};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::support::{Harness, serve_http, upstream};

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let mut h = Harness::start(Limits {
        max_body_bytes: 1024,
        ..Limits::default()
    })
    .await;
    let (up, seen) = upstream().await;
    h.sandbox(
        "sb1",
        json!({"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]}),
    );
    let response = h
        .client("sb1")
        .post(format!("http://{up}/"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("1024 bytes")
    );
    assert_eq!(h.next_audit().await.decision, Decision::Denied);
    assert!(seen.lock().unwrap().is_empty());
}

/// A sandbox with as many requests in flight as its limit gets 429 for the next one; the
/// slot comes back when a request has its answer.
#[tokio::test]
async fn requests_in_flight_are_limited_per_sandbox() {
    let mut h = Harness::start(Limits {
        max_requests_per_sandbox: 1,
        ..Limits::default()
    })
    .await;
    let slow = serve_http(|_request: hyper::Request<hyper::body::Incoming>| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hyper::Response::new(Full::new(Bytes::from_static(b"slow")))
    })
    .await;
    h.sandbox(
        "sb1",
        json!({"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]}),
    );
    let client = h.client("sb1");
    let first = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .get(format!("http://{slow}/first"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = client
        .get(format!("http://{slow}/second"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 429);
    assert!(
        second.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("1 requests in flight")
    );
    assert_eq!(h.next_audit().await.decision, Decision::Denied);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        client
            .get(format!("http://{slow}/third"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Serves sandbox `id` on its own Unix socket; returns the socket's path.
async fn unix_socket(h: &Harness, id: &str) -> PathBuf {
    let socket = h.dir.join(format!("{id}.sock"));
    let (proxy, shutdown) = (h.proxy.clone(), h.shutdown.clone());
    let (path, sandbox_id) = (socket.clone(), id.to_owned());
    tokio::spawn(async move { proxy.serve_unix(&path, sandbox_id, shutdown).await });
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    socket
}

/// Sends `request` on a connection the proxy refused, and reads its answer until the proxy
/// closes the connection, which must be soon.
async fn refused_answer(mut stream: UnixStream, request: &str) -> String {
    // The proxy may have answered and closed before the request is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a refused connection is closed promptly");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `request` on a served connection and returns the answer's head (its body, of the
/// length it announces, is read and dropped), leaving the connection open.
async fn answer_head(stream: &mut UnixStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head
}

/// The next `count` audit records that are not `allowed`.
async fn denials(h: &mut Harness, count: usize) -> Vec<AuditRecord> {
    let mut found = Vec::new();
    while found.len() < count {
        let record = h.next_audit().await;
        if record.decision != Decision::Allowed {
            found.push(record);
        }
    }
    found
}

/// One sandbox cannot hold more than its share of connections, nor all sandboxes together more
/// than the proxy's: a connection beyond either cap is answered (429 or 503) and closed at once,
/// audited, and a closed connection gives its place back.
#[tokio::test]
async fn connections_are_capped_per_sandbox_and_for_the_whole_proxy() {
    let mut h = Harness::start(Limits {
        max_connections_per_sandbox: 2,
        max_connections: 3,
        ..Limits::default()
    })
    .await;
    let (up, _seen) = upstream().await;
    let policy = json!({"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]});
    h.sandbox("sb1", policy.clone());
    h.sandbox("sb2", policy);
    let (sb1, sb2) = (unix_socket(&h, "sb1").await, unix_socket(&h, "sb2").await);
    let request = format!("GET http://{up}/ HTTP/1.1\r\nHost: {up}\r\n\r\n");

    // sb1: two connections are served; the third is refused.
    let mut first = UnixStream::connect(&sb1).await.unwrap();
    let mut second = UnixStream::connect(&sb1).await.unwrap();
    let third = UnixStream::connect(&sb1).await.unwrap();
    let answer = refused_answer(third, &request).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.contains("x-centaur-deny-reason: this sandbox already has 2 connections open"),
        "{answer}"
    );
    for served in [&mut first, &mut second] {
        let head = answer_head(served, &request).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    // sb2: one connection is served, which takes the proxy to its 3; the next is refused.
    let mut other = UnixStream::connect(&sb2).await.unwrap();
    let head = answer_head(&mut other, &request).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answer = refused_answer(UnixStream::connect(&sb2).await.unwrap(), &request).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("limit of 3 connections for all sandboxes"),
        "{answer}"
    );

    let refused = denials(&mut h, 2).await;
    assert_eq!(
        refused
            .iter()
            .map(|r| (r.thread_key.as_deref(), r.status, r.decision))
            .collect::<Vec<_>>(),
        [
            (Some("api:sb1"), Some(429), Decision::Denied),
            (Some("api:sb2"), Some(503), Decision::Denied)
        ]
    );
    assert!(
        refused[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("2 connections open")),
        "{refused:?}"
    );

    // A closed connection gives its place back.
    drop(first);
    let mut served = false;
    for _ in 0..100 {
        let mut again = UnixStream::connect(&sb2).await.unwrap();
        if again.write_all(request.as_bytes()).await.is_ok() {
            let mut answer = [0u8; 12];
            if again.read_exact(&mut answer).await.is_ok() && answer.starts_with(b"HTTP/1.1 200") {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "sb2 gets a connection once sb1 closed one");
}

/// Request bodies are held whole for inspection: one sandbox cannot hold more than its budget
/// of bytes (429), nor all sandboxes together more than the proxy's (503); bytes come back when
/// the request is over.
#[tokio::test]
async fn buffered_request_bytes_are_capped_per_sandbox_and_for_the_whole_proxy() {
    const KIB: usize = 1024;
    let mut h = Harness::start(Limits {
        max_buffered_bytes_per_sandbox: 64 * KIB,
        max_buffered_bytes: 96 * KIB,
        ..Limits::default()
    })
    .await;
    let slow = serve_http(|request: hyper::Request<hyper::body::Incoming>| async {
        let _ = request.into_body().collect().await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        hyper::Response::new(Full::new(Bytes::from_static(b"slow")))
    })
    .await;
    let policy = json!({"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]});
    h.sandbox("sb1", policy.clone());
    h.sandbox("sb2", policy);
    let (one, two) = (h.client("sb1"), h.client("sb2"));
    let post = |client: &reqwest::Client, size: usize| {
        client
            .post(format!("http://{slow}/upload"))
            .body(vec![b'x'; size])
            .send()
    };

    // sb1 has 60 KiB held while its upstream thinks...
    let held = tokio::spawn(post(&one, 60 * KIB));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so 10 KiB more would take it over its 64 KiB.
    let response = post(&one, 10 * KIB).await.unwrap();
    assert_eq!(response.status(), 429);
    let reason = response.headers()["x-centaur-deny-reason"]
        .to_str()
        .unwrap();
    assert!(
        reason.contains("65536 bytes of request bodies held"),
        "{reason}"
    );
    // sb2: 40 KiB would take the proxy over its 96 KiB; 30 KiB fits.
    let response = post(&two, 40 * KIB).await.unwrap();
    assert_eq!(response.status(), 503);
    let reason = response.headers()["x-centaur-deny-reason"]
        .to_str()
        .unwrap();
    assert!(
        reason.contains("98304 bytes of request bodies for all sandboxes"),
        "{reason}"
    );
    assert_eq!(post(&two, 30 * KIB).await.unwrap().status(), 200);
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    // Over: sb1's bytes are back.
    assert_eq!(post(&one, 60 * KIB).await.unwrap().status(), 200);

    let refused = denials(&mut h, 2).await;
    assert_eq!(
        refused
            .iter()
            .map(|r| (r.sandbox_id.as_str(), r.status, r.decision))
            .collect::<Vec<_>>(),
        [
            ("sb1", Some(429), Decision::Denied),
            ("sb2", Some(503), Decision::Denied)
        ]
    );
}
