//! Shared test harness: one throwaway PostgreSQL cluster per test run (unless DATABASE_URL is
//! set), a fresh database per test, servers on ephemeral ports, an SSE reader, a played runner,
//! and a TCP relay that can cut the server off its database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use centaur_proxy::audit::LogSink;
use centaur_proxy::control::Control;
use centaur_proxy::secrets::{SecretSource, SecretStore};
use centaur_proxy::{Limits, Proxy, Registry};
use centaur_server::pg_cluster::{ClusterOptions, PgCluster};
use centaur_protocol::api::SandboxBackendKind;
use centaur_server::sandbox::{SandboxBackend, SandboxError, SandboxSpec, SandboxState};
use centaur_server::{Config, RunningServer};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// URL of the `postgres` database of the run's cluster.
fn cluster_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let root = std::env::temp_dir().join(format!("centaur-test-pg-{}", std::process::id()));
        let cluster = PgCluster::start(&ClusterOptions {
            root,
            durable: false,
            max_connections: 500,
        })
        .expect("start a throwaway PostgreSQL cluster");
        cluster
            .remove_when_process_exits(std::process::id())
            .expect("watchdog");
        cluster.url("postgres")
    })
}

/// A new, empty database; returns its URL.
pub async fn fresh_database() -> String {
    let base = PgConnectOptions::from_str(cluster_url()).expect("valid URL");
    let name = format!("centaur_test_{}", Uuid::new_v4().simple());
    let mut conn = base.connect().await.expect("connect to the test cluster");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    base.database(&name).to_url_lossy().to_string()
}

/// The same database reached through another address (the relay).
pub fn via(database_url: &str, addr: SocketAddr) -> String {
    PgConnectOptions::from_str(database_url)
        .unwrap()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .to_url_lossy()
        .to_string()
}

/// A sandbox backend that records what it was asked, so a test can act as the runner.
#[derive(Default)]
pub struct RecordingBackend {
    specs: Mutex<HashMap<Uuid, SandboxSpec>>,
    pub stopped: Mutex<Vec<Uuid>>,
}

impl RecordingBackend {
    pub fn token(&self, sandbox_id: Uuid) -> String {
        self.specs.lock().unwrap()[&sandbox_id]
            .attachment
            .as_ref()
            .expect("cold sandboxes are attached")
            .token
            .clone()
    }

    pub fn spec(&self, sandbox_id: Uuid) -> SandboxSpec {
        self.specs.lock().unwrap()[&sandbox_id].clone()
    }
}

#[async_trait]
impl SandboxBackend for RecordingBackend {
    fn kind(&self) -> SandboxBackendKind {
        SandboxBackendKind::External
    }
    async fn create(&self, spec: &SandboxSpec) -> Result<(), SandboxError> {
        self.specs
            .lock()
            .unwrap()
            .insert(spec.sandbox_id, spec.clone());
        Ok(())
    }
    async fn status(&self, _: Uuid) -> Result<SandboxState, SandboxError> {
        Ok(SandboxState::Ready)
    }
    async fn stop(&self, sandbox_id: Uuid, _: &str) -> Result<(), SandboxError> {
        self.stopped.lock().unwrap().push(sandbox_id);
        Ok(())
    }
    async fn list(&self) -> Result<Vec<Uuid>, SandboxError> {
        Ok(self.specs.lock().unwrap().keys().copied().collect())
    }
}

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub url: String,
    pub database_url: String,
    pub backend: Arc<RecordingBackend>,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let database_url = fresh_database().await;
        TestServer::start_with(Config::new(&database_url), true).await
    }

    /// A server on `config` (its bind address is replaced by an ephemeral port).
    pub async fn start_with(mut config: Config, wait_ready: bool) -> TestServer {
        config.bind_addr = "127.0.0.1:0".parse().unwrap();
        config.admin_api_key = Some(ADMIN_KEY.into());
        let database_url = config.database_url.expose().to_owned();
        let backend = Arc::new(RecordingBackend::default());
        let server = centaur_server::start_with_backend(config, backend.clone())
            .await
            .expect("server starts");
        let server = TestServer {
            url: server.url(),
            server: Some(server),
            database_url,
            backend,
            http: http().build().unwrap(),
        };
        if wait_ready {
            server.wait_ready().await;
        }
        server
    }

    /// A server with the backend its `config` names (the local one, in sandbox tests).
    pub async fn start_configured(mut config: Config) -> TestServer {
        config.bind_addr = "127.0.0.1:0".parse().unwrap();
        config.admin_api_key = Some(ADMIN_KEY.into());
        let database_url = config.database_url.expose().to_owned();
        let server = centaur_server::start(config).await.expect("server starts");
        let server = TestServer {
            url: server.url(),
            server: Some(server),
            database_url,
            backend: Arc::new(RecordingBackend::default()),
            http: http().build().unwrap(),
        };
        server.wait_ready().await;
        server
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.url)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server never became ready");
    }

    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.url));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends `body` as JSON with `token`; returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut builder = self.request(method, path, token);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON answer ({status}): {text}"))
        };
        (status, json)
    }

    pub async fn admin(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let body = if body.is_null() { None } else { Some(body) };
        self.call(method, path, Some(ADMIN_KEY), body).await
    }

    /// The id of the newest event of thread `key`, from its detail.
    pub async fn last_event_id(&self, key: &str) -> i64 {
        let path = format!("/agent/threads/{}", enc(key));
        let (_, detail) = self.admin(Method::GET, &path, Value::Null).await;
        detail["last_event_id"].as_i64().unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, json) = self.admin(Method::POST, path, body).await;
        assert!(status.is_success(), "POST {path} -> {status}: {json}");
        json
    }

    /// Spawns a thread; returns the sandbox id and the sandbox's runner token.
    pub async fn spawn(&self, thread_key: &str) -> (Uuid, String) {
        let answer = self
            .post(
                "/agent/spawn",
                json!({"thread_key": thread_key, "harness": "echo"}),
            )
            .await;
        let sandbox_id: Uuid = answer["sandbox_id"].as_str().unwrap().parse().unwrap();
        (sandbox_id, self.backend.token(sandbox_id))
    }

    /// A thread `key` with an execution claimed by its sandbox's runner: the runner (ready to
    /// post from seq 1) and the execution id.
    pub async fn running_execution(&self, key: &str) -> (Runner, Uuid) {
        let (_, token) = self.spawn(key).await;
        let accepted = self
            .post("/agent/execute", json!({"thread_key": key}))
            .await;
        let execution_id = accepted["execution_id"].as_str().unwrap().parse().unwrap();
        let mut runner = self.runner(&token);
        assert_eq!(runner.must_claim(key).await, execution_id);
        (runner, execution_id)
    }

    pub fn runner(&self, token: &str) -> Runner {
        Runner {
            http: self.http.clone(),
            url: self.url.clone(),
            token: token.to_owned(),
            seq: 0,
        }
    }

    pub async fn events(&self, thread_key: &str, query: &str) -> SseReader {
        SseReader::open(
            &self.http,
            &format!(
                "{}/agent/threads/{}/events?{query}",
                self.url,
                enc(thread_key)
            ),
            ADMIN_KEY,
            None,
        )
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown_token().cancel();
        }
    }
}

/// Percent-encodes a thread key for a path segment.
pub fn enc(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The test playing `centaur-runner`.
pub struct Runner {
    http: reqwest::Client,
    url: String,
    pub token: String,
    pub seq: i64,
}

impl Runner {
    pub async fn claim(&self, thread_key: &str, wait_ms: u64) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!(
                "{}/runner/v1/threads/{}/claim",
                self.url,
                enc(thread_key)
            ))
            .bearer_auth(&self.token)
            .json(&json!({"wait_ms": wait_ms}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    }

    /// Claims, and fails the test if there is nothing to claim. Returns the execution id.
    pub async fn must_claim(&mut self, thread_key: &str) -> Uuid {
        let (status, body) = self.claim(thread_key, 2000).await;
        assert_eq!(status, StatusCode::OK, "claim: {body}");
        self.seq = body["runner_seq"].as_i64().unwrap();
        body["execution_id"].as_str().unwrap().parse().unwrap()
    }

    /// Posts events (numbered from the runner's next seq) and an optional finish.
    pub async fn post(
        &mut self,
        execution_id: Uuid,
        events: Vec<Value>,
        finish: Option<Value>,
    ) -> (StatusCode, Value) {
        let events: Vec<Value> = events
            .into_iter()
            .map(|mut e| {
                self.seq += 1;
                e["seq"] = json!(self.seq);
                e
            })
            .collect();
        self.post_raw(execution_id, json!({"events": events, "finish": finish}))
            .await
    }

    pub async fn post_raw(&self, execution_id: Uuid, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!(
                "{}/runner/v1/executions/{execution_id}/events",
                self.url
            ))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

/// One parsed Server-Sent Event.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// Reads an SSE response frame by frame.
pub struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    pub comments: usize,
    pub ended: bool,
}

impl SseReader {
    pub async fn open(
        http: &reqwest::Client,
        url: &str,
        token: &str,
        last_event_id: Option<i64>,
    ) -> SseReader {
        let mut request = http.get(url).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            response.text().await.unwrap_or_default()
        );
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            comments: 0,
            ended: false,
        }
    }

    /// The next event, or `None` if the stream ended or `timeout` passed.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                if let Some(frame) = self.parse(&block) {
                    return Some(frame);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => panic!("stream error: {e}"),
                Ok(Some(Ok(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
            }
        }
    }

    fn parse(&mut self, block: &str) -> Option<Frame> {
        let (mut id, mut event, mut data) = (None, None, None);
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).unwrap());
            }
        }
        Some(Frame {
            id: id?,
            event: event?,
            data: data?,
        })
    }

    /// Reads frames until one with id `last_id` (inclusive); panics after `timeout`.
    pub async fn until_id(&mut self, last_id: i64, timeout: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        while frames.last().is_none_or(|f: &Frame| f.id < last_id) {
            match self.next(timeout).await {
                Some(frame) => frames.push(frame),
                None => panic!(
                    "stream stopped before event {last_id}; got {:?}",
                    frames.iter().map(|f| f.id).collect::<Vec<_>>()
                ),
            }
        }
        frames
    }

    /// Reads until the stream ends; panics after `timeout`.
    pub async fn read_to_end(&mut self, timeout: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(frame) => frames.push(frame),
                None if self.ended => return frames,
                None => panic!("stream did not end within {timeout:?}"),
            }
        }
    }
}

/// A TCP relay in front of PostgreSQL that a test can cut and restore.
pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<Mutex<(bool, Vec<tokio::task::AbortHandle>)>>,
    /// While cut: new connections are held open, unanswered, instead of being dropped.
    hanging: Arc<Mutex<Option<Vec<TcpStream>>>>,
}

impl Relay {
    pub async fn start(target_database_url: &str) -> Relay {
        let target = PgConnectOptions::from_str(target_database_url).unwrap();
        let target = format!("{}:{}", target.get_host(), target.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(Mutex::new((true, Vec::new())));
        let hanging: Arc<Mutex<Option<Vec<TcpStream>>>> = Arc::new(Mutex::new(None));
        let shared = up.clone();
        let held = hanging.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !shared.lock().unwrap().0 {
                    match held.lock().unwrap().as_mut() {
                        Some(held) => held.push(client),
                        None => drop(client),
                    }
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                shared.lock().unwrap().1.push(task.abort_handle());
            }
        });
        Relay { addr, up, hanging }
    }

    /// Like [`Relay::cut`], but new connections hang, unanswered, as they do when the
    /// database's host is gone (rather than refusing them at once).
    pub fn hang(&self) {
        *self.hanging.lock().unwrap() = Some(Vec::new());
        self.cut();
    }

    /// Drops every connection and refuses new ones: the database "goes away".
    pub fn cut(&self) {
        let mut state = self.up.lock().unwrap();
        state.0 = false;
        for task in state.1.drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.lock().unwrap().0 = true;
        self.hanging.lock().unwrap().take();
    }
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

pub const PROXY_TOKEN: &str = "test-proxy-token-0123456789";
/// The real credential behind the sandboxes' `OPENAI_API_KEY` placeholder.
pub const REAL_OPENAI_KEY: &str = "sk-test-real-0123456789";
/// The real credential behind `ANTHROPIC_API_KEY`.
pub const REAL_ANTHROPIC_KEY: &str = "sk-ant-test-real-0123456789";

/// An egress proxy with its control API on `addr` (a fresh port when `None`).
pub struct TestProxy {
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
}

impl TestProxy {
    pub async fn start(addr: Option<SocketAddr>, sockets: PathBuf) -> TestProxy {
        let registry = Arc::new(Registry::new(b"server-test-proxy-key-0123456789".to_vec()));
        std::fs::create_dir_all(&sockets).unwrap();
        let key_file = sockets.join("openai-key");
        std::fs::write(&key_file, format!("{REAL_OPENAI_KEY}\n")).unwrap();
        let anthropic_file = sockets.join("anthropic-key");
        std::fs::write(&anthropic_file, REAL_ANTHROPIC_KEY).unwrap();
        let secrets = HashMap::from([
            (
                "OPENAI_API_KEY".to_owned(),
                SecretSource::File { path: key_file },
            ),
            (
                "ANTHROPIC_API_KEY".to_owned(),
                SecretSource::File {
                    path: anthropic_file,
                },
            ),
        ]);
        let proxy = Proxy::new(
            registry.clone(),
            Arc::new(SecretStore::new(secrets, Duration::from_secs(60))),
            Arc::new(LogSink),
            Limits::default(),
            None,
        );
        let shutdown = CancellationToken::new();
        let control = Control::new(
            proxy,
            Some(PROXY_TOKEN.into()),
            Some(sockets),
            shutdown.clone(),
        );
        let listener = TcpListener::bind(addr.unwrap_or("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let s = shutdown.clone();
        tokio::spawn(async move { control.serve(listener, s).await });
        TestProxy {
            addr,
            registry,
            shutdown,
        }
    }

    pub fn allows(&self, sandbox_id: Uuid, host: &str) -> bool {
        self.registry
            .get(&sandbox_id.to_string())
            .is_some_and(|s| s.config.policy.allow.iter().any(|p| p.matches(host, 443)))
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("centaur-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `centaur-runner` binary, built once per test run.
/// Cargo, without the variables it sets for a running test: build scripts (ring's) watch
/// `CARGO_MANIFEST_DIR`, and a different value rebuilds them and everything above them.
fn cargo() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}

pub fn runner_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| built("centaur-runner", "centaur-runner"))
        .clone()
}

/// `bin` of `package`, built (debug) with this workspace's cargo.
fn built(package: &str, bin: &str) -> PathBuf {
    let status = cargo()
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {bin} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(bin);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// A process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An npm package installed into the harness cache folder (`CENTAUR_HARNESS_CACHE`, default
/// `target/harness-cache`) unless `probe` (relative to its `node_modules`) is there already.
fn npm_package(package: &str, probe: &str) -> PathBuf {
    let cache = std::env::var_os("CENTAUR_HARNESS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/harness-cache")
        });
    let path = cache.join("node_modules").join(probe);
    if !path.exists() {
        std::fs::create_dir_all(&cache).unwrap();
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&cache)
            .arg(package)
            .status()
            .expect("npm runs (install Node.js and npm)");
        assert!(status.success(), "npm install {package} failed");
    }
    assert!(
        path.exists(),
        "{} is missing after npm install {package}",
        path.display()
    );
    path
}

/// The folder with Claude Code's Linux binary (`claude`), from npm.
pub fn claude_dir() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            npm_package(
                "@anthropic-ai/claude-code@2.1.197",
                "@anthropic-ai/claude-code-linux-x64/claude",
            )
            .parent()
            .unwrap()
            .to_owned()
        })
        .clone()
}

/// The folder with the Codex CLI's Linux binary (`bin/codex`), installed from npm into a cache
/// folder the first time (`CENTAUR_HARNESS_CACHE`, default `target/harness-cache`).
pub fn codex_dir() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            npm_package(
                "@openai/codex@0.169.0",
                "@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
            )
            .ancestors()
            .nth(2)
            .unwrap()
            .to_owned()
        })
        .clone()
}

/// The `centaur` binary, built once per test run.
pub fn cli_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| built("centaur", "centaur")).clone()
}

/// An HTTP client builder; TLS in this workspace goes through ring, installed here once.
pub fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
