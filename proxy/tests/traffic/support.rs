//! The harness: a proxy on loopback with one secret, upstreams (HTTP, HTTPS with its own CA,
//! echo, raw bytes), clients (reqwest through the proxy, CONNECT, TLS through an intercepting
//! tunnel, raw sockets) and the control API as the server calls it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centaur_protocol::egress::control::ControlErrorCode;
use centaur_proxy::audit::{AuditRecord, ChannelSink};
use centaur_proxy::secrets::{SecretSource, SecretStore};
use centaur_proxy::tls::{Authority, Interception, client_config, generate_ca};
use centaur_proxy::{Limits, Proxy, Registry, SandboxConfig};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An HTTP client builder; TLS in this workspace goes through ring, installed here once.
pub fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

pub const REAL_KEY: &str = "sk-real-0123456789abcdef";

/// What an upstream server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// An HTTP server that records requests and answers with a JSON echo (including the
/// `authorization` header it got, to test scrubbing).
/// Serves `handler` over HTTP/1.1 on a fresh loopback port; returns the address.
pub async fn serve_http<F, Fut>(handler: F) -> SocketAddr
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

pub async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
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
pub async fn echo_server() -> SocketAddr {
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

pub struct Harness {
    pub proxy: Arc<Proxy>,
    pub registry: Arc<Registry>,
    pub tcp: SocketAddr,
    pub audit: mpsc::UnboundedReceiver<AuditRecord>,
    pub dir: PathBuf,
    pub shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    pub async fn start(limits: Limits) -> Harness {
        Harness::start_with(limits, None).await
    }

    pub async fn start_with(limits: Limits, interception: Option<Interception>) -> Harness {
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
    pub fn sandbox(&self, id: &str, policy: Value) -> HashMap<String, String> {
        self.registry.register(SandboxConfig {
            sandbox_id: id.into(),
            thread_key: Some(format!("api:{id}")),
            proxy_credential: Some(format!("cred-{id}")),
            policy: serde_json::from_value(policy).unwrap(),
        })
    }

    /// A reqwest client whose proxy is this proxy, as sandbox `id`.
    pub fn client(&self, id: &str) -> reqwest::Client {
        let proxy = reqwest::Proxy::all(format!("http://{}", self.tcp))
            .unwrap()
            .basic_auth(id, &format!("cred-{id}"));
        http().proxy(proxy).build().unwrap()
    }

    /// Serves sandbox `id` on its own Unix socket and exposes it on a loopback TCP port, the way
    /// the runner's forwarder does inside a sandbox. Returns that port's address.
    pub async fn unix_forwarder(&self, id: &str) -> SocketAddr {
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

    pub async fn next_audit(&mut self) -> AuditRecord {
        tokio::time::timeout(Duration::from_secs(5), self.audit.recv())
            .await
            .expect("an audit record")
            .expect("audit channel open")
    }
}

pub fn openai_policy(upstream: SocketAddr) -> Value {
    json!({
        "allow": ["127.0.0.1", "*.allowed.test"],
        "allow_private": ["127.0.0.1"],
        "secrets": [{"name": "OPENAI_API_KEY", "hosts": [format!("127.0.0.1:{}", upstream.port())],
                     "headers": ["authorization"], "format": "Bearer {value}"}],
    })
}

pub async fn connect(proxy: SocketAddr, auth: &str, target: &str) -> (TcpStream, String) {
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

/// An HTTPS upstream (HTTP/1.1 and HTTP/2) with a certificate from its own CA. Records what it
/// received (with the HTTP version) and echoes; answers `Upgrade: websocket` with 101 and then
/// echoes raw bytes. Returns its address, the upstream CA's PEM, and the log.
pub async fn tls_upstream() -> (SocketAddr, String, Arc<Mutex<Vec<Seen>>>) {
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

/// An HTTPS upstream that offers only HTTP/1.1 (like many gateways and local model servers),
/// answering every request with `{"ok":true}`. Returns its address, its CA's PEM and how many
/// connections it has accepted.
pub async fn tls_http1_upstream() -> (SocketAddr, String, Arc<AtomicUsize>) {
    let (ca_cert, ca_key) = generate_ca().unwrap();
    let authority = Authority::from_pem(&ca_cert, &ca_key).unwrap();
    let mut config = (*authority.server_config("127.0.0.1").unwrap()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async {
                    request.into_body().collect().await.unwrap();
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"{\"ok\":true}"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_cert, accepted)
}

/// A proxy that intercepts, trusting the upstream CA; returns it with the proxy CA's PEM.
pub async fn intercepting(upstream_ca: &str) -> (Harness, String) {
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
pub async fn tls_through(
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

pub fn intercept_policy(upstream: SocketAddr) -> Value {
    json!({
        "allow": [format!("127.0.0.1:{}", upstream.port())],
        "allow_private": ["127.0.0.1"],
        "secrets": [{"name": "OPENAI_API_KEY", "hosts": [format!("127.0.0.1:{}", upstream.port())],
                     "headers": ["authorization"], "format": "Bearer {value}"}],
    })
}

/// A loopback TCP port that forwards to the Unix socket at `socket`, like the sandbox's
/// forwarder.
pub async fn forward_to(socket: PathBuf) -> SocketAddr {
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

pub fn via(proxy: SocketAddr) -> reqwest::Client {
    http()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .build()
        .unwrap()
}

pub async fn control_api(h: &Harness) -> (SocketAddr, Arc<centaur_proxy::control::Control>) {
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
pub struct ControlApi {
    pub base: String,
    pub token: &'static str,
}

/// A refusal: status, error code, message.
#[derive(Debug)]
pub struct Refused(pub u16, pub ControlErrorCode, pub String);

impl ControlApi {
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Refused> {
        let response = request.bearer_auth(self.token).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        if status >= 400 {
            let error: centaur_protocol::ErrorBody<ControlErrorCode> =
                serde_json::from_slice(&body).unwrap();
            return Err(Refused(status, error.error.code, error.error.message));
        }
        Ok(serde_json::from_slice(&body).unwrap())
    }

    pub async fn apply(
        &self,
        id: &str,
        desired: &centaur_protocol::egress::control::DesiredSandbox,
    ) -> Result<centaur_protocol::egress::control::SandboxApplied, Refused> {
        let url = format!("{}/v1/sandboxes/{id}", self.base);
        self.call(http().build().unwrap().put(url).json(desired))
            .await
    }

    pub async fn sync(
        &self,
        request: &centaur_protocol::egress::control::SyncRequest,
    ) -> Result<centaur_protocol::egress::control::SyncResponse, Refused> {
        let url = format!("{}/v1/sandboxes", self.base);
        self.call(http().build().unwrap().put(url).json(request))
            .await
    }

    pub async fn remove(&self, id: &str, version: u64) -> Result<bool, Refused> {
        let url = format!("{}/v1/sandboxes/{id}?version={version}", self.base);
        let removed: centaur_protocol::egress::control::Removed =
            self.call(http().build().unwrap().delete(url)).await?;
        Ok(removed.removed)
    }

    /// `POST /v1/secrets/{name}/reveal` for `principal`.
    pub async fn reveal(&self, name: &str, principal: &str) -> Result<String, Refused> {
        let url = format!("{}/v1/secrets/{name}/reveal", self.base);
        let request = centaur_protocol::egress::control::RevealRequest {
            principal: principal.into(),
        };
        let revealed: centaur_protocol::egress::control::RevealedSecret = self
            .call(http().build().unwrap().post(url).json(&request))
            .await?;
        Ok(revealed.value)
    }

    pub async fn list(
        &self,
    ) -> Result<Vec<centaur_protocol::egress::control::SandboxApplied>, Refused> {
        let url = format!("{}/v1/sandboxes", self.base);
        let list: centaur_protocol::egress::control::SandboxList =
            self.call(http().build().unwrap().get(url)).await?;
        Ok(list.sandboxes)
    }
}

/// Reads an HTTP head byte by byte, so nothing after it (a body, WebSocket frames) is taken.
pub async fn read_head(stream: &mut TcpStream) -> String {
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
pub async fn raw_upstream(answer: Vec<u8>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
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
pub async fn raw_through(proxy: SocketAddr, id: &str, head: &str) -> (TcpStream, String) {
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
