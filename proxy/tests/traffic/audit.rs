//! Audit: records reach the server in batches despite failures, and every refusal is a denial.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centaur_proxy::Limits;
use centaur_proxy::audit::{AuditRecord, Decision};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
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
            body_placeholders: vec![],
            body_unknown_placeholders: 0,
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

fn denial(sandbox_id: &str, host: &str) -> AuditRecord {
    AuditRecord {
        at: chrono::Utc::now(),
        sandbox_id: sandbox_id.into(),
        thread_key: Some(format!("api:{sandbox_id}")),
        host: host.into(),
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
        body_placeholders: vec![],
        body_unknown_placeholders: 0,
    }
}

/// A stand-in for the server's `POST /proxy/v1/audit` that stores each batch's hosts as it
/// arrives, holding a batch for `hold` first if it holds records of sandbox `held`.
async fn holding_audit_server(
    held: &'static str,
    hold: Duration,
) -> (SocketAddr, Arc<Mutex<Vec<Vec<String>>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let addr = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let body: Value =
                serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes())
                    .unwrap();
            let records = body["records"].as_array().unwrap().clone();
            if records.iter().any(|r| r["sandbox_id"] == held) {
                tokio::time::sleep(hold).await;
            }
            log.lock().unwrap().push(
                records
                    .iter()
                    .map(|r| r["host"].as_str().unwrap().to_owned())
                    .collect(),
            );
            hyper::Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    (addr, received)
}

/// A proxy delivering its audit to `server`, with its control API; returns the sink (records
/// go in through it) and the control API's base URL.
async fn proxy_auditing_to(
    server: SocketAddr,
    shutdown: &CancellationToken,
) -> (Arc<centaur_proxy::audit::HttpSink>, String) {
    use centaur_proxy::audit::HttpSink;
    use centaur_proxy::secrets::SecretStore;
    use centaur_proxy::{Proxy, Registry};
    let sink = Arc::new(
        HttpSink::start(
            &format!("http://{server}"),
            "proxy-token".into(),
            shutdown.clone(),
        )
        .unwrap(),
    );
    let proxy = Proxy::new(
        Arc::new(Registry::new(b"test-proxy-key-0123456789abcdef!".to_vec())),
        Arc::new(SecretStore::new(
            Default::default(),
            Duration::from_secs(60),
        )),
        sink.clone(),
        Limits::default(),
        None,
    );
    let control = centaur_proxy::control::Control::new(
        proxy,
        Some("control-token".into()),
        None,
        shutdown.clone(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let s = shutdown.clone();
    tokio::spawn(async move { control.serve(listener, s).await });
    (sink, base)
}

async fn flush(base: &str, sandbox_id: &str, token: &str) -> (u16, Value) {
    let response = crate::support::http()
        .build()
        .unwrap()
        .post(format!("{base}/v1/sandboxes/{sandbox_id}/audit/flush"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `POST /v1/sandboxes/{id}/audit/flush` delivers the sandbox's records before it answers, on
/// its own (other sandboxes' records keep their way, even while a flush waits on the server),
/// and waits for a batch already on its way that holds some of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_delivers_a_sandboxs_records_before_it_answers() {
    use centaur_proxy::audit::AuditSink;
    let (server, received) = holding_audit_server("slow", Duration::from_millis(1500)).await;
    let shutdown = CancellationToken::new();
    let (sink, base) = proxy_auditing_to(server, &shutdown).await;
    let hosts = || received.lock().unwrap().concat();

    // Flushed at once, alone: the batching would have waited 200 ms.
    sink.record(denial("sb1", "a.example"));
    sink.record(denial("sb2", "b.example"));
    sink.record(denial("sb1", "c.example"));
    assert_eq!(
        flush(&base, "sb1", "control-token").await,
        (200, json!({"records": 2}))
    );
    assert_eq!(received.lock().unwrap()[0], ["a.example", "c.example"]);
    // Nothing held: nothing to do; the same for a sandbox the proxy never had.
    assert_eq!(
        flush(&base, "sb1", "control-token").await,
        (200, json!({"records": 0}))
    );
    assert_eq!(
        flush(&base, "never-seen", "control-token").await,
        (200, json!({"records": 0}))
    );
    for _ in 0..100 {
        if hosts().contains(&"b.example".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        hosts().contains(&"b.example".to_owned()),
        "the others go their usual way"
    );

    // While a flush waits on the server, other sandboxes' records still arrive.
    sink.record(denial("slow", "slow.example"));
    let waiting = {
        let base = base.clone();
        tokio::spawn(async move { flush(&base, "slow", "control-token").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    sink.record(denial("sb3", "d.example"));
    for _ in 0..50 {
        if hosts().contains(&"d.example".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        hosts().contains(&"d.example".to_owned()),
        "not held up by the flush"
    );
    assert!(
        !waiting.is_finished(),
        "the flush answers once the server took the records"
    );
    assert_eq!(waiting.await.unwrap(), (200, json!({"records": 1})));
    assert!(hosts().contains(&"slow.example".to_owned()));

    // A batch already on its way with some of the sandbox's records: the flush waits for it.
    sink.record(denial("slow", "e.example"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        flush(&base, "slow", "control-token").await,
        (200, json!({"records": 1}))
    );
    assert!(hosts().contains(&"e.example".to_owned()));

    // The token is needed.
    let (status, body) = flush(&base, "sb1", "wrong").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    shutdown.cancel();
}

/// A server that does not take the records: the flush says so (`audit_undelivered`), and the
/// records stay queued for the usual delivery.
#[tokio::test]
async fn a_flush_the_server_refuses_is_an_error_and_the_records_stay() {
    use centaur_proxy::audit::AuditSink;
    let (server, received) = audit_server(1).await;
    let shutdown = CancellationToken::new();
    let (sink, base) = proxy_auditing_to(server, &shutdown).await;
    sink.record(denial("sb1", "a.example"));
    let (status, body) = flush(&base, "sb1", "control-token").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (502, &json!("audit_undelivered")),
        "{body}"
    );
    for _ in 0..100 {
        if !received.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1, "delivered later by the batches");
    assert_eq!(received[0].1["records"][0]["host"], "a.example");
    shutdown.cancel();
}

/// A stand-in for the server's `POST /proxy/v1/audit` that reads each batch, waits `hold`
/// (a server slow to take it), then stores its hosts; `fail_first` calls are answered 503
/// instead (after the wait).
async fn slow_audit_server(
    hold: Duration,
    fail_first: usize,
) -> (SocketAddr, Arc<Mutex<Vec<Vec<String>>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let log = received.clone();
    let addr = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
        let (log, calls) = (log.clone(), calls.clone());
        async move {
            let body: Value =
                serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes())
                    .unwrap();
            tokio::time::sleep(hold).await;
            let mut response = hyper::Response::new(Full::new(Bytes::new()));
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                return response;
            }
            log.lock().unwrap().push(
                body["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["host"].as_str().unwrap().to_owned())
                    .collect(),
            );
            response
        }
    })
    .await;
    (addr, received)
}

/// Waits (up to 5 s) until `received` holds `expected` hosts, then returns what it holds.
async fn hosts_once(received: &Mutex<Vec<Vec<String>>>, expected: usize) -> Vec<String> {
    for _ in 0..250 {
        if received.lock().unwrap().concat().len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anything arriving twice would come now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    received.lock().unwrap().concat()
}

/// A caller that stops waiting for a flush (the server gives up after 300 ms or 2 s) while the
/// audit server is slow to take the records does not cancel their delivery: they reach the
/// server once, whether the caller hangs up on the control API or drops the flush itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_whose_caller_hangs_up_still_delivers_once() {
    use centaur_proxy::audit::AuditSink;
    let (server, received) = slow_audit_server(Duration::from_millis(800), 0).await;
    let shutdown = CancellationToken::new();
    let (sink, base) = proxy_auditing_to(server, &shutdown).await;

    // Hung up on the control API.
    sink.record(denial("sb1", "a.example"));
    sink.record(denial("sb1", "b.example"));
    let hung_up = crate::support::http()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .post(format!("{base}/v1/sandboxes/sb1/audit/flush"))
        .bearer_auth("control-token")
        .send()
        .await;
    assert!(hung_up.is_err_and(|e| e.is_timeout()));
    assert_eq!(
        hosts_once(&received, 2).await,
        ["a.example", "b.example"],
        "delivered once, in order"
    );

    // The flush's future dropped part-way.
    sink.record(denial("sb2", "c.example"));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sink.flush("sb2"))
            .await
            .is_err()
    );
    assert_eq!(
        hosts_once(&received, 3).await,
        ["a.example", "b.example", "c.example"]
    );
    shutdown.cancel();
}

/// A backlog larger than a batch is flushed a batch at a time (the server takes at most
/// 10,000 records a request), all of it once and in order, while the uploader is busy with a
/// batch of another sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_is_flushed_a_batch_at_a_time() {
    use centaur_proxy::audit::AuditSink;
    let (server, received) = holding_audit_server("slow", Duration::from_millis(1000)).await;
    let shutdown = CancellationToken::new();
    let (sink, base) = proxy_auditing_to(server, &shutdown).await;
    // The uploader's batch, held by the server while the flush posts.
    sink.record(denial("slow", "slow.example"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let hosts: Vec<String> = (0..1_200).map(|i| format!("h{i}.example")).collect();
    for host in &hosts {
        sink.record(denial("big", host));
    }
    assert_eq!(
        flush(&base, "big", "control-token").await,
        (200, json!({"records": 1_200}))
    );
    let batches = received.lock().unwrap().clone();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [500, 500, 200], "a batch (500) at a time: {sizes:?}");
    let got = batches.concat();
    assert_eq!(got.len(), hosts.len(), "each delivered once");
    assert!(got == hosts, "in order");
    shutdown.cancel();
}

/// Shutting down while the server refuses a batch: that batch and everything queued behind it
/// (more than a batch) are posted once more, all of them, once each and in order.
#[tokio::test]
async fn shutdown_delivers_everything_queued() {
    use centaur_proxy::audit::{AuditSink, HttpSink};
    let (server, received) = slow_audit_server(Duration::ZERO, 1).await;
    let shutdown = CancellationToken::new();
    let sink = HttpSink::start(
        &format!("http://{server}"),
        "proxy-token".into(),
        shutdown.clone(),
    )
    .unwrap();
    let hosts: Vec<String> = (0..1_200).map(|i| format!("h{i}.example")).collect();
    for host in &hosts {
        sink.record(denial("sb1", host));
    }
    // The first batch is refused; the uploader waits 100 ms to retry it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    // When the sink says it is drained (what the proxy's exit waits for), all of it is there.
    tokio::time::timeout(Duration::from_secs(10), sink.drained())
        .await
        .expect("the sink drains after shutdown");
    let stored: usize = received.lock().unwrap().iter().map(Vec::len).sum();
    assert_eq!(stored, hosts.len(), "delivered before drained() resolved");
    let got = hosts_once(&received, 1_200).await;
    assert_eq!(got.len(), hosts.len(), "each delivered once");
    assert!(got == hosts, "in order");
    let sizes: Vec<usize> = received.lock().unwrap().iter().map(Vec::len).collect();
    assert!(sizes.iter().all(|n| *n <= 500), "{sizes:?}");
}
