//! Real traffic on loopback: clients (reqwest, curl, raw sockets) through the proxy to local
//! upstream servers, asserting what the upstream received and what was audited.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centaur_proxy::audit::{AuditRecord, ChannelSink, Decision};
use centaur_proxy::secrets::{SecretSource, SecretStore};
use centaur_proxy::{Limits, Proxy, Registry, SandboxConfig};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
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
                        let mut response =
                            hyper::Response::new(Full::new(Bytes::from(echo.to_string())));
                        if let Some(auth) = headers.get("authorization") {
                            response
                                .headers_mut()
                                .insert("x-echo-auth", auth.parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
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
        reqwest::Client::builder().proxy(proxy).build().unwrap()
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
        reqwest::Client::builder()
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
    let anonymous = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", h.tcp)).unwrap())
        .build()
        .unwrap();
    let response = anonymous.get(format!("http://{up}/")).send().await.unwrap();
    assert_eq!(response.status(), 407);
    assert_eq!(
        response.headers()["proxy-authenticate"],
        "Basic realm=\"centaur\""
    );
    let wrong = reqwest::Client::builder()
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
