//! Audit: records reach the server in batches despite failures, and every refusal is a denial.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centaur_proxy::Limits;
use centaur_proxy::audit::{AuditRecord, Decision};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::{Harness, openai_policy, serve_http};

/// A stand-in for the server's `POST /proxy/v1/audit`: fails the first `fail_first` calls with
/// 503, then stores batches.
async fn audit_server(fail_first: usize) -> (SocketAddr, Arc<Mutex<Vec<(String, Value)>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let log = received.clone();
    let addr = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
        let (log, calls) = (log.clone(), calls.clone());
        async move {
            assert_eq!(request.uri().path(), "/proxy/v1/audit");
            let auth = request.headers()["authorization"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: Value =
                serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes())
                    .unwrap();
            let mut response = hyper::Response::new(Full::new(Bytes::new()));
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
            } else {
                log.lock().unwrap().push((auth, body));
            }
            response
        }
    })
    .await;
    (addr, received)
}

#[tokio::test]
async fn audit_records_reach_the_server_in_batches_despite_failures() {
    use centaur_proxy::audit::{AuditSink, HttpSink};
    let (server, received) = audit_server(2).await;
    let shutdown = CancellationToken::new();
    let sink = HttpSink::start(
        &format!("http://{server}"),
        "proxy-token".into(),
        shutdown.clone(),
    )
    .unwrap();
    for i in 0..3 {
        sink.record(AuditRecord {
            at: chrono::Utc::now(),
            sandbox_id: "sb1".into(),
            thread_key: Some("api:t".into()),
            host: format!("host{i}.example"),
            port: 443,
            method: "GET".into(),
            path: "/".into(),
            status: Some(403),
            bytes_up: 0,
            bytes_down: 0,
            decision: Decision::Denied,
            reason: Some("not allowed".into()),
            secrets_swapped: vec![],
            duration_ms: 1,
        });
    }
    let mut hosts = Vec::new();
    for _ in 0..100 {
        hosts = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| {
                b["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["host"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        if hosts.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        hosts,
        ["host0.example", "host1.example", "host2.example"],
        "delivered once each, in order, after two 503s"
    );
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1, "one batch");
    assert_eq!(received[0].0, "Bearer proxy-token");
    assert!(HttpSink::start("https://x", "t".into(), shutdown.clone()).is_err());
    shutdown.cancel();
}

/// Every refusal the sandbox is answered with is audited as a denial (so it reaches the thread
/// as `egress.denied`): a body the proxy cannot check, an upstream it cannot reach, a request it
/// cannot parse.
#[tokio::test]
async fn every_refusal_is_audited_as_a_denial() {
    let mut h = Harness::start(Limits::default()).await;
    let encoded = serve_http(|_request: hyper::Request<hyper::body::Incoming>| async {
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"\x1f\x8b")));
        response
            .headers_mut()
            .insert("content-encoding", "gzip".parse().unwrap());
        response
    })
    .await;
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let placeholder = h.sandbox("sb1", openai_policy(encoded))["OPENAI_API_KEY"].clone();
    let client = h.client("sb1");

    let response = client
        .get(format!("http://{encoded}/compressed"))
        .header("authorization", &placeholder)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision, record.path.as_str()),
        (Some(502), Decision::Denied, "/compressed")
    );

    let response = client
        .get(format!("http://{closed}/unreachable"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision, record.path.as_str()),
        (Some(502), Decision::Denied, "/unreachable")
    );
    assert!(
        record
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("cannot connect")),
        "{record:?}"
    );

    // Origin-form is for servers, not proxies.
    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    let credentials =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "sb1:cred-sb1");
    stream
        .write_all(
            format!("GET /origin-form HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic {credentials}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 400");
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision, record.path.as_str()),
        (Some(400), Decision::Denied, "/origin-form")
    );
}
