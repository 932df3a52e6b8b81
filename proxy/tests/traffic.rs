//! Real traffic on loopback: clients (reqwest, curl, raw sockets) through the proxy to local
//! upstream servers, asserting what the upstream received and what was audited.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks stop at the first surprise

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centaur_proxy::audit::{AuditRecord, ChannelSink, Decision};
use centaur_proxy::secrets::{SecretSource, SecretStore};
use centaur_proxy::tls::{Authority, Interception, client_config, generate_ca};
use centaur_proxy::{Limits, Proxy, Registry, SandboxConfig};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_util::sync::CancellationToken;

/// An HTTP client builder; TLS in this workspace goes through ring, installed here once.
fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

const REAL_KEY: &str = "sk-real-0123456789abcdef";

/// What an upstream server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP server that records requests and answers with a JSON echo (including the
/// `authorization` header it got, to test scrubbing).
/// Serves `handler` over HTTP/1.1 on a fresh loopback port; returns the address.
async fn serve_http<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let headers: HashMap<String, String> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let echo = json!({"authorization": headers.get("authorization"), "path": parts.uri.to_string()});
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: headers.clone(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let mut response = hyper::Response::new(Full::new(Bytes::from(echo.to_string())));
            if let Some(auth) = headers.get("authorization") {
                response.headers_mut().insert("x-echo-auth", auth.parse().unwrap());
            }
            response
        }
    })
    .await;
    (addr, seen)
}

/// A TCP echo server (a tunnel's far end).
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct Harness {
    proxy: Arc<Proxy>,
    registry: Arc<Registry>,
    tcp: SocketAddr,
    audit: mpsc::UnboundedReceiver<AuditRecord>,
    dir: PathBuf,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    async fn start(limits: Limits) -> Harness {
        Harness::start_with(limits, None).await
    }

    async fn start_with(limits: Limits, interception: Option<Interception>) -> Harness {
        let dir = std::env::temp_dir().join(format!(
            "centaur-proxy-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("openai"), format!("{REAL_KEY}\n")).unwrap();
        let secrets = HashMap::from([(
            "OPENAI_API_KEY".to_owned(),
            SecretSource::File {
                path: dir.join("openai"),
            },
        )]);
        let registry = Arc::new(Registry::new(b"test-proxy-key-0123456789abcdef!".to_vec()));
        let (tx, audit) = mpsc::unbounded_channel();
        let proxy = Proxy::new(
            registry.clone(),
            Arc::new(SecretStore::new(secrets, Duration::from_secs(60))),
            Arc::new(ChannelSink(tx)),
            limits,
            interception,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (p, s) = (proxy.clone(), shutdown.clone());
        tokio::spawn(async move { p.serve_tcp(listener, s).await });
        Harness {
            proxy,
            registry,
            tcp,
            audit,
            dir,
            shutdown,
        }
    }

    /// Registers a sandbox with a TCP credential; returns its placeholders.
    fn sandbox(&self, id: &str, policy: Value) -> HashMap<String, String> {
        self.registry.register(SandboxConfig {
            sandbox_id: id.into(),
            thread_key: Some(format!("api:{id}")),
            proxy_credential: Some(format!("cred-{id}")),
            policy: serde_json::from_value(policy).unwrap(),
        })
    }

    /// A reqwest client whose proxy is this proxy, as sandbox `id`.
    fn client(&self, id: &str) -> reqwest::Client {
        let proxy = reqwest::Proxy::all(format!("http://{}", self.tcp))
            .unwrap()
            .basic_auth(id, &format!("cred-{id}"));
        http().proxy(proxy).build().unwrap()
    }

    /// Serves sandbox `id` on its own Unix socket and exposes it on a loopback TCP port, the way
    /// the runner's forwarder does inside a sandbox. Returns that port's address.
    async fn unix_forwarder(&self, id: &str) -> SocketAddr {
        let socket = self.dir.join(format!("{id}.sock"));
        let (proxy, shutdown, sid) = (self.proxy.clone(), self.shutdown.clone(), id.to_owned());
        let path = socket.clone();
        tokio::spawn(async move { proxy.serve_unix(&path, sid, shutdown).await });
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let socket = socket.clone();
                tokio::spawn(async move {
                    if let Ok(mut unix) = UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
            }
        });
        addr
    }

    async fn next_audit(&mut self) -> AuditRecord {
        tokio::time::timeout(Duration::from_secs(5), self.audit.recv())
            .await
            .expect("an audit record")
            .expect("audit channel open")
    }
}

fn openai_policy(upstream: SocketAddr) -> Value {
    json!({
        "allow": ["127.0.0.1", "*.allowed.test"],
        "allow_private": ["127.0.0.1"],
        "secrets": [{"name": "OPENAI_API_KEY", "hosts": [format!("127.0.0.1:{}", upstream.port())],
                     "headers": ["authorization"], "format": "Bearer {value}"}],
    })
}

#[tokio::test]
async fn allowed_request_is_forwarded_with_the_credential_swapped_and_the_echo_scrubbed() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let placeholders = h.sandbox("sb1", openai_policy(up));
    let placeholder = &placeholders["OPENAI_API_KEY"];

    let response = h
        .client("sb1")
        .post(format!("http://{up}/v1/responses?stream=true"))
        .header("authorization", format!("Bearer {placeholder}"))
        .header("accept-encoding", "gzip")
        .body("{\"input\":\"hi\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The echo of the real key comes back as the placeholder, in headers and body.
    assert_eq!(
        response.headers()["x-echo-auth"],
        format!("Bearer {placeholder}")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["authorization"], format!("Bearer {placeholder}"));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].uri, "/v1/responses?stream=true");
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );
    assert_eq!(seen[0].body, "{\"input\":\"hi\"}");
    assert!(
        !seen[0].headers.contains_key("proxy-authorization"),
        "proxy credentials stay in the proxy"
    );
    assert_eq!(
        seen[0].headers["accept-encoding"], "identity",
        "no compressed echo past the scrubber"
    );

    let record = h.next_audit().await;
    assert_eq!(record.decision, Decision::Allowed);
    assert_eq!(record.sandbox_id, "sb1");
    assert_eq!(record.thread_key.as_deref(), Some("api:sb1"));
    assert_eq!(record.status, Some(200));
    assert_eq!(record.path, "/v1/responses");
    assert_eq!(record.secrets_swapped, ["OPENAI_API_KEY"]);
    assert_eq!(record.bytes_up, 14);
    assert!(record.bytes_down > 0);
    assert!(
        !serde_json::to_string(&record).unwrap().contains(REAL_KEY),
        "audit never holds a value"
    );
}

#[tokio::test]
async fn denied_hosts_get_a_readable_403_and_nothing_reaches_upstream() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    h.sandbox(
        "sb1",
        json!({"allow": ["*.allowed.test"], "deny": ["bad.allowed.test"]}),
    );
    let client = h.client("sb1");

    let response = client.get(format!("http://{up}/")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let reason = response.headers()["x-centaur-deny-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("not on this sandbox's list of allowed hosts"),
        "{reason}"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("ask a person on this thread"), "{body}");
    assert_eq!(h.next_audit().await.decision, Decision::Denied);

    let response = client.get("http://bad.allowed.test/").send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("explicitly denied")
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_after_resolution() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    // Allowed by name, but not allowed to be private: loopback is refused after resolution.
    h.sandbox(
        "sb1",
        json!({"allow": ["127.0.0.1", "localhost", "169.254.169.254"]}),
    );
    let client = h.client("sb1");
    for url in [
        format!("http://{up}/"),
        format!("http://localhost:{}/", up.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 403, "{url}");
        let reason = response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            reason.contains("loopback") || reason.contains("cloud metadata"),
            "{url}: {reason}"
        );
        assert_eq!(h.next_audit().await.decision, Decision::Denied);
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn placeholders_where_they_are_not_bound_are_blocked_as_leaks() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let (other, other_seen) = upstream().await;
    let mut policy = openai_policy(up);
    policy["allow"] = json!(["127.0.0.1"]);
    let placeholder = h.sandbox("sb1", policy)["OPENAI_API_KEY"].clone();
    let client = h.client("sb1");

    // To a host it is not bound to (same address, other port).
    let response = client
        .get(format!("http://{other}/"))
        .header("authorization", format!("Bearer {placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let record = h.next_audit().await;
    assert_eq!(record.decision, Decision::LeakBlocked);
    assert!(record.reason.unwrap().contains("OPENAI_API_KEY"));

    // In another header, and in the body, of the bound host.
    let response = client
        .get(format!("http://{up}/"))
        .header("x-debug", &placeholder)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);
    let response = client
        .post(format!("http://{up}/"))
        .body(format!("key={placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("request body")
    );
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);

    assert!(seen.lock().unwrap().is_empty());
    assert!(other_seen.lock().unwrap().is_empty());
}

/// Two sandboxes on one proxy, each on its own Unix socket: different policies, and one's
/// placeholder is worthless (and blocked) in the other.
#[tokio::test]
async fn two_sandboxes_with_different_policies_on_unix_sockets() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let a_placeholder = h.sandbox("sb-a", openai_policy(up))["OPENAI_API_KEY"].clone();
    h.sandbox("sb-b", json!({"allow": ["*.allowed.test"]}));
    let a = h.unix_forwarder("sb-a").await;
    let b = h.unix_forwarder("sb-b").await;
    let via = |addr: SocketAddr| {
        http()
            .proxy(reqwest::Proxy::all(format!("http://{addr}")).unwrap())
            .build()
            .unwrap()
    };

    let response = via(a)
        .get(format!("http://{up}/a"))
        .header("authorization", format!("Bearer {a_placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(h.next_audit().await.sandbox_id, "sb-a");
    let response = via(b).get(format!("http://{up}/b")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.sandbox_id, "sb-b");

    // B cannot use A's placeholder even where A could.
    h.sandbox("sb-b", openai_policy(up));
    let response = via(b)
        .get(format!("http://{up}/b"))
        .header("authorization", format!("Bearer {a_placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let record = h.next_audit().await;
    assert_eq!(
        (record.sandbox_id.as_str(), record.decision),
        ("sb-b", Decision::LeakBlocked)
    );
    assert!(record.reason.unwrap().contains("unknown placeholder"));
    assert_eq!(seen.lock().unwrap().len(), 1);

    // A sandbox removed from the registry is refused at once on its socket.
    h.registry.remove("sb-a");
    let response = via(a).get(format!("http://{up}/a")).send().await.unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn the_tcp_listener_needs_the_sandbox_credential() {
    let h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    h.sandbox(
        "sb1",
        json!({"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]}),
    );
    let anonymous = http()
        .proxy(reqwest::Proxy::all(format!("http://{}", h.tcp)).unwrap())
        .build()
        .unwrap();
    let response = anonymous.get(format!("http://{up}/")).send().await.unwrap();
    assert_eq!(response.status(), 407);
    assert_eq!(
        response.headers()["proxy-authenticate"],
        "Basic realm=\"centaur\""
    );
    let wrong = http()
        .proxy(
            reqwest::Proxy::all(format!("http://{}", h.tcp))
                .unwrap()
                .basic_auth("sb1", "cred-sb2"),
        )
        .build()
        .unwrap();
    assert_eq!(
        wrong
            .get(format!("http://{up}/"))
            .send()
            .await
            .unwrap()
            .status(),
        407
    );
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(
        h.client("sb1")
            .get(format!("http://{up}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn curl_through_the_proxy() {
    let h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "5",
            "-x",
            &format!("http://sb1:cred-sb1@{}", h.tcp),
        ])
        .args(["-H", &format!("Authorization: Bearer {placeholder}")])
        .arg(format!("http://{up}/from-curl"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains(REAL_KEY),
        "the sandbox never sees the real key: {text}"
    );
    assert_eq!(
        seen.lock().unwrap()[0].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );

    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "5",
            "-x",
            &format!("http://sb1:cred-sb1@{}", h.tcp),
        ])
        .arg("http://not-allowed.example/")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains(
            "x-centaur-deny-reason: not-allowed.example:80 is not on this sandbox's list"
        ),
        "{text}"
    );
}

async fn connect(proxy: SocketAddr, auth: &str, target: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let credentials = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, auth);
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {credentials}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn connect_tunnels_allowed_hosts_and_refuses_the_rest() {
    let mut h = Harness::start(Limits {
        max_tunnels_per_sandbox: 2,
        ..Limits::default()
    })
    .await;
    let echo = echo_server().await;
    h.sandbox(
        "sb1",
        json!({
            "allow": [format!("127.0.0.1:{}", echo.port()), "intercepted.test"],
            "allow_private": ["127.0.0.1"],
            "intercept": ["intercepted.test"],
        }),
    );

    let (mut tunnel, head) = connect(h.tcp, "sb1:cred-sb1", &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the tunnel");

    // Limits: a second tunnel is fine, a third is refused while both are open.
    let (second, head) = connect(h.tcp, "sb1:cred-sb1", &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_third, head) = connect(h.tcp, "sb1:cred-sb1", &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.contains("x-centaur-deny-reason: this sandbox already has 2 tunnels open"),
        "{head}"
    );
    assert_eq!(h.next_audit().await.decision, Decision::Denied);

    // Closing tunnels frees their slots and audits their bytes.
    drop(tunnel);
    drop(second);
    let mut closed = Vec::new();
    for _ in 0..2 {
        closed.push(h.next_audit().await);
    }
    assert!(
        closed
            .iter()
            .all(|r| r.decision == Decision::Allowed && r.method == "CONNECT")
    );
    assert!(
        closed
            .iter()
            .any(|r| r.bytes_up == 23 && r.bytes_down == 23),
        "{closed:?}"
    );
    let (_again, head) = connect(h.tcp, "sb1:cred-sb1", &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Not allowed; and a host that must be intercepted is never tunnelled blind.
    let (_, head) = connect(h.tcp, "sb1:cred-sb1", "example.com:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_, head) = connect(h.tcp, "sb1:cred-sb1", "intercepted.test:443").await;
    assert!(
        head.starts_with("HTTP/1.1 403") && head.contains("must be intercepted"),
        "{head}"
    );
    // SSRF through CONNECT.
    let (_, head) = connect(h.tcp, "sb1:cred-sb1", "169.254.169.254:80").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

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

// ---- TLS interception ----------------------------------------------------------------------

/// An HTTPS upstream (HTTP/1.1 and HTTP/2) with a certificate from its own CA. Records what it
/// received (with the HTTP version) and echoes; answers `Upgrade: websocket` with 101 and then
/// echoes raw bytes. Returns its address, the upstream CA's PEM, and the log.
async fn tls_upstream() -> (SocketAddr, String, Arc<Mutex<Vec<Seen>>>) {
    let (ca_cert, ca_key) = generate_ca().unwrap();
    let authority = Authority::from_pem(&ca_cert, &ca_key).unwrap();
    let server_config = authority.server_config("127.0.0.1").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (log, acceptor) = (
                log.clone(),
                tokio_rustls::TlsAcceptor::from(server_config.clone()),
            );
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let websocket = request
                                .headers()
                                .get("upgrade")
                                .is_some_and(|v| v == "websocket");
                            let on_upgrade = hyper::upgrade::on(&mut request);
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let headers: HashMap<String, String> = parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            log.lock().unwrap().push(Seen {
                                method: format!("{} {:?}", parts.method, parts.version),
                                uri: parts.uri.path().to_owned(),
                                headers: headers.clone(),
                                body: String::from_utf8_lossy(&body).into_owned(),
                            });
                            if websocket {
                                tokio::spawn(async move {
                                    let mut io = TokioIo::new(on_upgrade.await.unwrap());
                                    let mut buf = [0u8; 64];
                                    while let Ok(n) = io.read(&mut buf).await {
                                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                });
                                let mut response = hyper::Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                                response
                                    .headers_mut()
                                    .insert("upgrade", "websocket".parse().unwrap());
                                response
                                    .headers_mut()
                                    .insert("connection", "upgrade".parse().unwrap());
                                return Ok::<_, std::convert::Infallible>(response);
                            }
                            let echo = json!({"authorization": headers.get("authorization"), "version": format!("{:?}", parts.version)});
                            Ok(hyper::Response::new(Full::new(Bytes::from(
                                echo.to_string(),
                            ))))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (addr, ca_cert, seen)
}

/// A proxy that intercepts, trusting the upstream CA; returns it with the proxy CA's PEM.
async fn intercepting(upstream_ca: &str) -> (Harness, String) {
    let (ca_cert, ca_key) = generate_ca().unwrap();
    let interception = Interception {
        authority: Authority::from_pem(&ca_cert, &ca_key).unwrap(),
        client: client_config(&[upstream_ca.to_owned()]).unwrap(),
    };
    (
        Harness::start_with(Limits::default(), Some(interception)).await,
        ca_cert,
    )
}

/// CONNECT through the proxy, then TLS trusting only `trusted_ca`, offering `alpn`.
async fn tls_through(
    proxy: SocketAddr,
    auth: &str,
    target: SocketAddr,
    trusted_ca: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (stream, head) = connect(proxy, auth, &target.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(trusted_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .expect("the sandbox trusts the proxy's certificate")
}

fn intercept_policy(upstream: SocketAddr) -> Value {
    json!({
        "allow": [format!("127.0.0.1:{}", upstream.port())],
        "allow_private": ["127.0.0.1"],
        "secrets": [{"name": "OPENAI_API_KEY", "hosts": [format!("127.0.0.1:{}", upstream.port())],
                     "headers": ["authorization"], "format": "Bearer {value}"}],
    })
}

#[tokio::test]
async fn intercepted_https_swaps_over_http1_and_http2() {
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();

    // HTTP/1.1 from the sandbox; the proxy speaks HTTP/2 upstream (the upstream offers it).
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post("/v1/responses")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .header("authorization", format!("Bearer {placeholder}"))
        .body(Full::new(Bytes::from_static(b"{\"input\":\"hi\"}")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        body.contains(&placeholder) && !body.contains(REAL_KEY),
        "the echo is scrubbed: {body}"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].headers["authorization"],
            format!("Bearer {REAL_KEY}")
        );
        assert_eq!(seen[0].method, "POST HTTP/2.0", "upstream spoke HTTP/2");
        assert_eq!(seen[0].body, "{\"input\":\"hi\"}");
    }
    let record = h.next_audit().await;
    assert_eq!(
        (
            record.decision,
            record.method.as_str(),
            record.path.as_str()
        ),
        (Decision::Allowed, "POST", "/v1/responses")
    );
    assert_eq!(record.secrets_swapped, ["OPENAI_API_KEY"]);

    // HTTP/2 from the sandbox.
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://127.0.0.1:{}/h2", up.port()))
        .header("authorization", format!("Bearer {placeholder}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        seen.lock().unwrap()[1].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );
    assert_eq!(h.next_audit().await.path, "/h2");
}

#[tokio::test]
async fn intercepted_requests_are_checked_like_any_other() {
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);

    // The placeholder in the body.
    let request = hyper::Request::post("/upload")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .body(Full::new(Bytes::from(format!("token={placeholder}"))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);
    // Domain fronting: a tunnel to one host asking for another.
    let request = hyper::Request::get("/")
        .header("host", "evil.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("must open its own")
    );
    assert_eq!(h.next_audit().await.decision, Decision::Denied);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn upstream_certificates_are_verified() {
    let (up, _upstream_ca, seen) = tls_upstream().await;
    // This proxy does not trust the upstream's CA.
    let (unrelated_ca, _) = generate_ca().unwrap();
    let (mut h, proxy_ca) = intercepting(&unrelated_ca).await;
    h.sandbox("sb1", intercept_policy(up));
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 502);
    let reason = response.headers()["x-centaur-deny-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("TLS with 127.0.0.1 failed")
            && reason.to_lowercase().contains("certificate"),
        "{reason}"
    );
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision),
        (Some(502), Decision::Denied)
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn websocket_upgrades_pass_through_interception() {
    let (up, upstream_ca, _seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    h.sandbox("sb1", intercept_policy(up));
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection.with_upgrades());
    let request = hyper::Request::get("/socket")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 101);
    let mut io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    // The upstream echoes bytes as they come, so this frame goes unmasked, as a server's would:
    // the proxy reads what comes back as frames.
    let frame = ws_frame(OpCode::Data(Data::Text), true, false, b"frames both ways");
    io.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 18];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf[..], frame[..]);
    drop(io);
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision),
        (Some(101), Decision::Allowed)
    );
    assert_eq!((record.bytes_up, record.bytes_down), (18, 18));
}

#[tokio::test]
async fn curl_over_https_through_the_intercepting_proxy() {
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let ca_file = h.dir.join("proxy-ca.pem");
    std::fs::write(&ca_file, &proxy_ca).unwrap();
    for version in ["--http1.1", "--http2"] {
        let output = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                version,
                "-x",
                &format!("http://sb1:cred-sb1@{}", h.tcp),
            ])
            .arg("--cacert")
            .arg(&ca_file)
            .args(["-H", &format!("Authorization: Bearer {placeholder}")])
            .arg(format!("https://127.0.0.1:{}/curl", up.port()))
            .output()
            .await
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{version}: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains(&placeholder) && !text.contains(REAL_KEY),
            "{version}: {text}"
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == format!("Bearer {REAL_KEY}"))
    );
}

// ---- From inside a real bubblewrap sandbox -------------------------------------------------

/// A process in a bubblewrap sandbox with no network but the proxy's Unix socket reaches an
/// allowed HTTPS host with its credential swapped in, and nothing else.
#[tokio::test]
async fn a_bubblewrap_sandbox_reaches_only_what_the_proxy_allows() {
    assert!(
        std::process::Command::new("bwrap")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "bubblewrap is required for this test: apt-get install -y bubblewrap"
    );
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let run = h.dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("ca.pem"), &proxy_ca).unwrap();
    let socket = run.join("proxy.sock");
    let (proxy, shutdown, path) = (h.proxy.clone(), h.shutdown.clone(), socket.clone());
    tokio::spawn(async move { proxy.serve_unix(&path, "sb1".into(), shutdown).await });
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let sandboxed = |script: String| {
        let mut command = tokio::process::Command::new("bwrap");
        for dir in ["/usr", "/bin", "/lib", "/lib64", "/etc"] {
            command.args(["--ro-bind-try", dir, dir]);
        }
        command
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .arg("--bind").arg(&run).arg("/run/centaur")
            .arg("--ro-bind").arg(env!("CARGO_BIN_EXE_centaur-proxy")).arg("/run/centaur-proxy")
            .args(["--unshare-all", "--die-with-parent", "--clearenv"])
            .args(["--setenv", "PATH", "/usr/bin:/bin"])
            .args(["--setenv", "OPENAI_API_KEY", &placeholder])
            .args(["--setenv", "SSL_CERT_FILE", "/run/centaur/ca.pem"])
            .args(["--setenv", "CURL_CA_BUNDLE", "/run/centaur/ca.pem"])
            .args(["sh", "-c", &format!("/run/centaur-proxy forward --socket /run/centaur/proxy.sock & \
                 for i in $(seq 50); do [ -n \"$(cat /proc/net/tcp | grep ':0C38')\" ] && break; sleep 0.02; done; {script}")]);
        command.output()
    };
    let via_proxy = "curl -sS --max-time 5 -x http://127.0.0.1:3128";
    let target = format!("https://127.0.0.1:{}", up.port());

    // Allowed host, credential swapped on the way out, echo scrubbed on the way back.
    let out = sandboxed(format!(
        "{via_proxy} -H \"Authorization: Bearer $OPENAI_API_KEY\" {target}/from-sandbox"
    ))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&placeholder) && !text.contains(REAL_KEY),
        "{text}"
    );
    assert_eq!(
        seen.lock().unwrap()[0].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );
    assert_eq!(h.next_audit().await.secrets_swapped, ["OPENAI_API_KEY"]);

    // Nothing else: not the same host directly, not another host through the proxy, and the
    // environment holds only the placeholder.
    let out = sandboxed(format!(
        "curl -sS --max-time 3 {target}/direct; echo \"exit=$?\""
    ))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("exit=0"),
        "direct network access must fail: {text}"
    );
    let out = sandboxed(format!(
        "{via_proxy} -o /dev/null -w '%{{http_code}}' https://example.com/ ; echo"
    ))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("200"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sandboxed("env".into()).await.unwrap();
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(
        env.contains(&placeholder) && !env.contains(REAL_KEY),
        "{env}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

// ---- Audit delivery to the server -----------------------------------------------------------

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

/// A policy change reaches requests inside an already open intercepted tunnel.
#[tokio::test]
async fn policy_changes_apply_inside_open_tunnels() {
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = |auth: String| {
        hyper::Request::get("/")
            .header("host", format!("127.0.0.1:{}", up.port()))
            .header("authorization", auth)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let response = sender
        .send_request(request(format!("Bearer {placeholder}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    assert_eq!(h.next_audit().await.decision, Decision::Allowed);

    // The host is taken off the list while the tunnel is open.
    h.sandbox("sb1", json!({"allow": ["*.allowed.test"]}));
    let response = sender
        .send_request(request("Bearer x".into()))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.decision, Decision::Denied);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A secret that cannot be read breaks only the hosts it is bound to.
#[tokio::test]
async fn a_missing_secret_only_affects_its_own_hosts() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let (other, other_seen) = upstream().await;
    let mut policy = openai_policy(up);
    policy["secrets"][0]["name"] = json!("NOT_CONFIGURED");
    h.sandbox("sb1", policy);
    let client = h.client("sb1");
    assert_eq!(
        client
            .get(format!("http://{other}/fine"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(h.next_audit().await.decision, Decision::Allowed);
    let response = client
        .get(format!("http://{up}/needs-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("NOT_CONFIGURED")
    );
    assert_eq!(h.next_audit().await.decision, Decision::Denied);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(other_seen.lock().unwrap().len(), 1);
}

/// Credentials never travel in cleartext to a public address.
#[tokio::test]
async fn credentials_are_not_sent_over_plain_http_to_public_hosts() {
    let mut h = Harness::start(Limits::default()).await;
    // 192.31.196.1 (AS112, a globally reachable special-purpose block) counts as public; the
    // request must be refused before any dial.
    let placeholder = h.sandbox("sb1", json!({
        "allow": ["192.31.196.1"],
        "secrets": [{"name": "OPENAI_API_KEY", "hosts": ["192.31.196.1"], "headers": ["authorization"]}],
    }))["OPENAI_API_KEY"].clone();
    let response = h
        .client("sb1")
        .get("http://192.31.196.1/v1")
        .header("authorization", &placeholder)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("only over HTTPS")
    );
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);
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

// ---- Caps on what sandboxes can make the proxy hold ------------------------------------------

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

/// Documentation ranges, and private addresses wrapped in NAT64 or 6to4, are refused like any
/// other non-public address.
#[tokio::test]
async fn documentation_and_wrapped_private_addresses_are_refused() {
    let mut h = Harness::start(Limits::default()).await;
    let targets = [
        "192.0.2.10",
        "198.51.100.10",
        "203.0.113.10",
        "[2001:db8::1]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a00:1::1]",
    ];
    let hosts: Vec<&str> = targets.iter().map(|t| t.trim_matches(['[', ']'])).collect();
    h.sandbox("sb1", json!({ "allow": hosts }));
    let client = h.client("sb1");
    for target in targets {
        let response = client
            .get(format!("http://{target}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{target}");
        let reason = response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            ["documentation", "cloud metadata", "private"]
                .iter()
                .any(|class| reason.contains(&format!("a {class} address"))),
            "{target}: {reason}"
        );
        assert_eq!(h.next_audit().await.decision, Decision::Denied, "{target}");
    }
}

/// A loopback TCP port that forwards to the Unix socket at `socket`, like the sandbox's
/// forwarder.
async fn forward_to(socket: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    addr
}

fn via(proxy: SocketAddr) -> reqwest::Client {
    http()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .build()
        .unwrap()
}

async fn control_api(h: &Harness) -> (SocketAddr, Arc<centaur_proxy::control::Control>) {
    let control = centaur_proxy::control::Control::new(
        h.proxy.clone(),
        Some("control-token".into()),
        Some(h.dir.join("sockets")),
        h.shutdown.clone(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (c, s) = (control.clone(), h.shutdown.clone());
    tokio::spawn(async move { c.serve(listener, s).await });
    (addr, control)
}

/// The control API as the server calls it, with the protocol's bodies.
struct ControlApi {
    base: String,
    token: &'static str,
}

/// A refusal: status, error code, message.
#[derive(Debug)]
struct Refused(u16, String, String);

impl ControlApi {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Refused> {
        let response = request.bearer_auth(self.token).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        if status >= 400 {
            let error: centaur_protocol::ErrorBody = serde_json::from_slice(&body).unwrap();
            return Err(Refused(status, error.error.code, error.error.message));
        }
        Ok(serde_json::from_slice(&body).unwrap())
    }

    async fn apply(
        &self,
        id: &str,
        desired: &centaur_protocol::egress::control::DesiredSandbox,
    ) -> Result<centaur_protocol::egress::control::SandboxApplied, Refused> {
        let url = format!("{}/v1/sandboxes/{id}", self.base);
        self.call(http().build().unwrap().put(url).json(desired))
            .await
    }

    async fn sync(
        &self,
        request: &centaur_protocol::egress::control::SyncRequest,
    ) -> Result<centaur_protocol::egress::control::SyncResponse, Refused> {
        let url = format!("{}/v1/sandboxes", self.base);
        self.call(http().build().unwrap().put(url).json(request))
            .await
    }

    async fn remove(&self, id: &str, version: u64) -> Result<bool, Refused> {
        let url = format!("{}/v1/sandboxes/{id}?version={version}", self.base);
        let removed: centaur_protocol::egress::control::Removed =
            self.call(http().build().unwrap().delete(url)).await?;
        Ok(removed.removed)
    }

    async fn list(
        &self,
    ) -> Result<Vec<centaur_protocol::egress::control::SandboxApplied>, Refused> {
        let url = format!("{}/v1/sandboxes", self.base);
        let list: centaur_protocol::egress::control::SandboxList =
            self.call(http().build().unwrap().get(url)).await?;
        Ok(list.sandboxes)
    }
}

#[tokio::test]
async fn the_server_pushes_sandboxes_and_policies_through_the_control_api() {
    use centaur_protocol::egress::control::{DesiredSandbox, SyncEntry, SyncRequest};
    let h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let (addr, _control) = control_api(&h).await;
    let client = ControlApi {
        base: format!("http://{addr}"),
        token: "control-token",
    };
    let desired = |version: u64, policy: Value| DesiredSandbox {
        version,
        thread_key: Some("api:pushed".into()),
        policy: serde_json::from_value(policy).unwrap(),
    };

    // Created: the answer carries the socket (already accepting), placeholders and the TCP
    // credential.
    let applied = client
        .apply("sb-pushed", &desired(10, openai_policy(up)))
        .await
        .unwrap();
    assert!(applied.applied);
    let socket = applied.socket.clone().expect("a socket per sandbox");
    assert!(socket.exists());
    let placeholder = applied.placeholders["OPENAI_API_KEY"].clone();
    assert!(placeholder.starts_with("cph_"));
    let sandbox = via(forward_to(socket.clone()).await);
    let request = |client: &reqwest::Client| {
        client
            .get(format!("http://{up}/models"))
            .header("authorization", format!("Bearer {placeholder}"))
            .send()
    };
    assert_eq!(request(&sandbox).await.unwrap().status(), 200);
    assert_eq!(
        seen.lock().unwrap()[0].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );
    // The same sandbox over TCP with the credential from the answer.
    let tcp = http()
        .proxy(
            reqwest::Proxy::all(format!("http://{}", h.tcp))
                .unwrap()
                .basic_auth("sb-pushed", &applied.proxy_credential),
        )
        .build()
        .unwrap();
    assert_eq!(request(&tcp).await.unwrap().status(), 200);

    // Narrowed: takes effect for the next request. A late, older push changes nothing.
    let narrowed = json!({"allow": ["*.allowed.test"]});
    assert!(
        client
            .apply("sb-pushed", &desired(11, narrowed))
            .await
            .unwrap()
            .applied
    );
    assert_eq!(request(&sandbox).await.unwrap().status(), 403);
    let stale = client
        .apply("sb-pushed", &desired(10, openai_policy(up)))
        .await
        .unwrap();
    assert!(!stale.applied);
    assert_eq!(stale.version, 11);
    assert_eq!(request(&sandbox).await.unwrap().status(), 403);

    // The full sync re-applies what the server wants.
    let synced = client
        .sync(&SyncRequest {
            as_of: 12,
            sandboxes: vec![SyncEntry {
                sandbox_id: "sb-pushed".into(),
                desired: desired(12, openai_policy(up)),
            }],
        })
        .await
        .unwrap();
    assert_eq!(synced.sandboxes.len(), 1);
    assert!(synced.removed.is_empty());
    assert_eq!(request(&sandbox).await.unwrap().status(), 200);
    assert_eq!(client.list().await.unwrap()[0].version, 12);

    // Released: the socket goes away and a late push cannot bring it back.
    assert!(client.remove("sb-pushed", 13).await.unwrap());
    assert!(!socket.exists());
    assert!(request(&sandbox).await.is_err() || request(&sandbox).await.unwrap().status() != 200);
    match client
        .apply("sb-pushed", &desired(12, openai_policy(up)))
        .await
    {
        Err(Refused(409, code, _)) => assert_eq!(code, "sandbox_removed"),
        other => panic!("expected a 409, got {other:?}"),
    }
    assert!(client.list().await.unwrap().is_empty());

    // Bad pushes are refused with reasons, and change nothing.
    let refused = |r: Result<_, Refused>| match r {
        Err(Refused(status, _, message)) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (status, message) = refused(
        client
            .apply("sb-2", &desired(20, json!({"allow": ["x.test"], "secrets": [{"name": "NOPE", "hosts": ["x.test"], "headers": ["authorization"]}]})))
            .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("`NOPE` is not configured"), "{message}");
    let (status, message) = refused(client.apply("..%2Fescape", &desired(20, json!({}))).await);
    assert_eq!(status, 400, "{message}");
    let wrong = ControlApi {
        base: format!("http://{addr}"),
        token: "wrong",
    };
    assert!(matches!(wrong.list().await, Err(Refused(401, _, _))));
    let raw = http()
        .build()
        .unwrap()
        .put(format!("http://{addr}/v1/sandboxes/sb-3"))
        .bearer_auth("control-token")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(client.list().await.unwrap().is_empty());
}

/// A credential rotated at its source is picked up as soon as the upstream rejects the old
/// one: the request is sent again with the new value, and the sandbox never notices.
#[tokio::test]
async fn a_rejected_credential_is_read_again_and_the_request_retried() {
    let mut h = Harness::start(Limits::default()).await;
    let accepted = Arc::new(Mutex::new(REAL_KEY.to_owned()));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (accepted_by_upstream, log) = (accepted.clone(), seen.clone());
    let up = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
        let (accepted, log) = (accepted_by_upstream.clone(), log.clone());
        async move {
            let auth = request.headers()["authorization"]
                .to_str()
                .unwrap()
                .to_owned();
            log.lock().unwrap().push(auth.clone());
            let ok = auth == format!("Bearer {}", accepted.lock().unwrap());
            let mut response = hyper::Response::new(Full::new(Bytes::from(if ok {
                "ok"
            } else {
                "invalid key"
            })));
            if !ok {
                *response.status_mut() = hyper::StatusCode::UNAUTHORIZED;
            }
            response
        }
    })
    .await;
    let placeholders = h.sandbox("sb-rot", openai_policy(up));
    let placeholder = &placeholders["OPENAI_API_KEY"];
    let send = || {
        h.client("sb-rot")
            .post(format!("http://{up}/v1/responses"))
            .header("authorization", format!("Bearer {placeholder}"))
            .body("{}")
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);

    // Rotated: the upstream takes only the new key, and the proxy's cache still holds the old.
    *accepted.lock().unwrap() = "sk-rotated-9876".into();
    std::fs::write(h.dir.join("openai"), "sk-rotated-9876\n").unwrap();
    let response = send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("Bearer {REAL_KEY}"),
            format!("Bearer {REAL_KEY}"),
            "Bearer sk-rotated-9876".to_owned()
        ]
    );
    // From now on the new value goes first.
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(seen.lock().unwrap().len(), 4);

    // A key that is simply wrong is not retried: the 401 reaches the sandbox.
    *accepted.lock().unwrap() = "sk-something-else".into();
    let response = send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        seen.lock().unwrap().len(),
        5,
        "one attempt: the source still has the same value"
    );
    for _ in 0..3 {
        assert_eq!(h.next_audit().await.status, Some(200));
    }
    assert_eq!(h.next_audit().await.status, Some(401));
}

// ---- Echoes the scrubber must catch ------------------------------------------------------

/// Reads an HTTP head byte by byte, so nothing after it (a body, WebSocket frames) is taken.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An upstream that answers every request with `answer`, byte for byte (a status line, headers
/// and a body, or a 101 and WebSocket frames), then waits for the other side to close. Returns
/// its address and the request heads it received, lowercased.
async fn raw_upstream(answer: Vec<u8>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let log = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                log.lock().unwrap().push(head.to_ascii_lowercase());
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
                let mut rest = [0u8; 1024];
                while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, heads)
}

/// Sends a request head (request line and headers, each ending in CRLF) to the proxy as
/// sandbox `id` on a raw socket; returns the socket, positioned after the answer's head, and
/// that head.
async fn raw_through(proxy: SocketAddr, id: &str, head: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let credentials = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{id}:cred-{id}"),
    );
    stream
        .write_all(format!("{head}Proxy-Authorization: Basic {credentials}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    (stream, head)
}

/// One WebSocket frame as a server sends it (unmasked).
fn ws_frame(opcode: OpCode, is_final: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final,
        rsv1,
        opcode,
        ..FrameHeader::default()
    };
    let mut frame = Vec::new();
    header.format(payload.len() as u64, &mut frame).unwrap();
    frame.extend_from_slice(payload);
    frame
}

/// A 101 answer to a WebSocket handshake with `extra` headers (each ending in CRLF), and the
/// frames that follow it.
fn switching(reason: &str, extra: &str, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 101 {reason}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
    )
    .into_bytes();
    for frame in frames {
        answer.extend_from_slice(frame);
    }
    answer
}

/// The head of a WebSocket handshake through the proxy, offering compression.
fn websocket_request(up: SocketAddr, placeholder: &str, protocol: &str) -> String {
    format!(
        "GET http://{up}/socket HTTP/1.1\r\nHost: {up}\r\nAuthorization: Bearer {placeholder}\r\n\
         Connection: Upgrade\r\nUpgrade: {protocol}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    )
}

/// An upstream that writes the key as its status line's reason phrase: the sandbox gets the
/// canonical phrase instead.
#[tokio::test]
async fn a_reason_phrase_never_carries_a_secret() {
    let mut h = Harness::start(Limits::default()).await;
    let answer = format!("HTTP/1.1 200 {REAL_KEY}\r\ncontent-length: 2\r\n\r\nok");
    let (up, heads) = raw_upstream(answer.into_bytes()).await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let request = format!(
        "GET http://{up}/ HTTP/1.1\r\nHost: {up}\r\nAuthorization: Bearer {placeholder}\r\n"
    );
    let (_stream, head) = raw_through(h.tcp, "sb1", &request).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(!head.contains(REAL_KEY), "{head}");
    assert!(
        heads.lock().unwrap()[0].contains(&format!("authorization: bearer {REAL_KEY}")),
        "the upstream got the real key"
    );
    assert_eq!(h.next_audit().await.decision, Decision::Allowed);
}

/// Headers named after the key (whole, or as part of the name) reach the sandbox named after the
/// placeholder.
#[tokio::test]
async fn response_header_names_never_carry_a_secret() {
    let h = Harness::start(Limits::default()).await;
    let answer = format!(
        "HTTP/1.1 200 OK\r\n{REAL_KEY}: 1\r\nx-{REAL_KEY}-echo: {REAL_KEY}\r\ncontent-length: 2\r\n\r\nok"
    );
    let (up, _) = raw_upstream(answer.into_bytes()).await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let response = h
        .client("sb1")
        .get(format!("http://{up}/"))
        .header("authorization", format!("Bearer {placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for (name, value) in response.headers() {
        assert!(!name.as_str().contains(REAL_KEY), "{name}");
        assert!(
            !value.to_str().unwrap().contains(REAL_KEY),
            "{name}: {value:?}"
        );
    }
    assert_eq!(response.headers()[placeholder.as_str()], "1");
    assert_eq!(
        response.headers()[format!("x-{placeholder}-echo").as_str()],
        placeholder.as_str()
    );
}

/// Every coding counts, not only the first `Content-Encoding`: a body the scrubber cannot read
/// is refused with a 502 (and audited), never passed on.
#[tokio::test]
async fn bodies_in_codings_the_scrubber_cannot_read_are_refused() {
    let mut h = Harness::start(Limits::default()).await;
    // Stands for a compressed body: the scrubber cannot see the key inside it.
    let body = "\u{1f}\u{8b}compressed";
    let cases = [
        (
            "two headers",
            format!(
                "content-encoding: identity\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            Some("gzip"),
        ),
        (
            "a list",
            format!(
                "content-encoding: identity, br\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            Some("br"),
        ),
        (
            "a transfer coding",
            format!(
                "transfer-encoding: gzip, chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            ),
            Some("gzip"),
        ),
        (
            "identity only",
            format!(
                "content-encoding: identity\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            None,
        ),
    ];
    for (i, (case, rest, refused)) in cases.into_iter().enumerate() {
        let (up, heads) = raw_upstream(format!("HTTP/1.1 200 OK\r\n{rest}").into_bytes()).await;
        let id = format!("sb{i}");
        let placeholder = h.sandbox(&id, openai_policy(up))["OPENAI_API_KEY"].clone();
        let response = h
            .client(&id)
            .get(format!("http://{up}/"))
            .header("authorization", format!("Bearer {placeholder}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            heads.lock().unwrap().len(),
            1,
            "{case}: the request went out"
        );
        let record = h.next_audit().await;
        let Some(coding) = refused else {
            assert_eq!(response.status(), 200, "{case}");
            assert_eq!(record.decision, Decision::Allowed, "{case}");
            continue;
        };
        assert_eq!(response.status(), 502, "{case}");
        let reason = response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            reason.contains(coding) && reason.contains("cannot check"),
            "{case}: {reason}"
        );
        assert!(
            !response.text().await.unwrap().contains("compressed"),
            "{case}"
        );
        assert_eq!(record.decision, Decision::Denied, "{case}");
        assert_eq!(record.reason.as_deref(), Some(reason.as_str()), "{case}");
    }
}

/// After a 101, what the upstream sends is read as WebSocket frames and the key is replaced in
/// every payload: text, binary (also across the proxy's reads), control frames, and a message
/// fragmented with the key split across its frames. The sandbox's offer of compression never
/// reaches the upstream.
#[tokio::test]
async fn websocket_frames_from_upstream_are_scrubbed() {
    let mut h = Harness::start(Limits::default()).await;
    let text = OpCode::Data(Data::Text);
    let mut large = vec![b'x'; 40_000];
    large[16_380..16_380 + REAL_KEY.len()].copy_from_slice(REAL_KEY.as_bytes());
    let (head, tail) = REAL_KEY.split_at(10);
    let frames = [
        ws_frame(text, true, false, format!("you sent {REAL_KEY}").as_bytes()),
        ws_frame(OpCode::Data(Data::Binary), true, false, &large),
        ws_frame(text, false, false, format!("split {head}").as_bytes()),
        ws_frame(
            OpCode::Control(Control::Ping),
            true,
            false,
            REAL_KEY.as_bytes(),
        ),
        ws_frame(OpCode::Data(Data::Continue), false, false, tail.as_bytes()),
        ws_frame(OpCode::Data(Data::Continue), true, false, b" across frames"),
        ws_frame(
            OpCode::Control(Control::Close),
            true,
            false,
            &[
                &1000u16.to_be_bytes()[..],
                format!("bye {REAL_KEY}").as_bytes(),
            ]
            .concat(),
        ),
    ];
    let (up, heads) = raw_upstream(switching(REAL_KEY, "", &frames)).await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let (stream, head) = raw_through(
        h.tcp,
        "sb1",
        &websocket_request(up, &placeholder, "websocket"),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(!head.contains(REAL_KEY), "{head}");
    {
        let heads = heads.lock().unwrap();
        assert!(heads[0].contains(&format!("authorization: bearer {REAL_KEY}")));
        assert!(
            !heads[0].contains("sec-websocket-extensions"),
            "no compression offered upstream: {}",
            heads[0]
        );
    }

    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("a valid message")
    };
    assert_eq!(
        next().await,
        Message::text(format!("you sent {placeholder}"))
    );
    let mut expected = large.clone();
    expected.splice(
        16_380..16_380 + REAL_KEY.len(),
        placeholder.bytes().collect::<Vec<_>>(),
    );
    assert_eq!(next().await, Message::binary(expected));
    assert_eq!(next().await, Message::Ping(placeholder.clone().into()));
    assert_eq!(
        next().await,
        Message::text(format!("split {placeholder} across frames"))
    );
    let Message::Close(Some(close)) = next().await else {
        panic!("a close frame");
    };
    assert_eq!(close.reason.as_str(), format!("bye {placeholder}"));
    drop(ws);

    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision),
        (Some(101), Decision::Allowed)
    );
}

/// What the proxy cannot scrub after a 101 is refused: an upstream that turns compression on
/// anyway, a protocol other than WebSocket on a host with bound credentials, and compressed
/// frames (which end the connection with a close frame saying why).
#[tokio::test]
async fn upgrades_the_proxy_cannot_scrub_are_refused() {
    let mut h = Harness::start(Limits::default()).await;
    for (case, answer, protocol) in [
        (
            "compression",
            switching("Switching Protocols", "sec-websocket-extensions: permessage-deflate\r\n", &[]),
            "websocket",
        ),
        (
            "another protocol",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: raw-bytes\r\nconnection: upgrade\r\n\r\n"
                .to_vec(),
            "raw-bytes",
        ),
    ] {
        let (up, heads) = raw_upstream(answer).await;
        let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
        let (_stream, head) =
            raw_through(h.tcp, "sb1", &websocket_request(up, &placeholder, protocol)).await;
        assert!(head.starts_with("HTTP/1.1 502"), "{case}: {head}");
        assert!(head.contains("cannot check"), "{case}: {head}");
        assert_eq!(heads.lock().unwrap().len(), 1);
        assert_eq!(h.next_audit().await.decision, Decision::Denied, "{case}");
    }

    let compressed = ws_frame(OpCode::Data(Data::Text), true, true, REAL_KEY.as_bytes());
    let (up, _) = raw_upstream(switching("Switching Protocols", "", &[compressed])).await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let (stream, head) = raw_through(
        h.tcp,
        "sb1",
        &websocket_request(up, &placeholder, "websocket"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message in time");
    let Some(Ok(Message::Close(Some(close)))) = message else {
        panic!("a close frame, not {message:?}");
    };
    assert_eq!(close.code, CloseCode::Policy);
    assert!(
        close.reason.as_str().contains("reserved bits"),
        "{}",
        close.reason.as_str()
    );
    drop(ws);
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision),
        (Some(101), Decision::Denied)
    );
    assert!(
        record.reason.unwrap().contains("reserved bits"),
        "the refusal is audited"
    );
}
