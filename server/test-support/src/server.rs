//! The server in this process, on a fresh database and a [`RecordingBackend`] (or the backend
//! its configuration names), on an ephemeral port; calls to it as its admin.

use std::sync::Arc;
use std::time::Duration;

use centaur_server::{Config, RunningServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend::RecordingBackend;
use crate::events::SseReader;
use crate::http::http;
use crate::pg::fresh_database;
use crate::runner::Runner;

/// The admin API key of every server under test.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

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

    /// The real `centaur` binary pointed at this server as admin, with `home` as its home (no
    /// `CENTAUR_HOME`), running `args`.
    pub fn centaur(&self, home: &std::path::Path, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(crate::binaries::cli_binary());
        command
            .args(args)
            .env("CENTAUR_API_URL", &self.url)
            .env("CENTAUR_API_TOKEN", ADMIN_KEY)
            .env("HOME", home)
            .env_remove("CENTAUR_HOME");
        command
    }

    /// Decides approval `approval_id` of thread `key` as admin (`approve`, `deny`, …); the
    /// server must take it.
    pub async fn decide(&self, key: &str, approval_id: &str, decision: &str) {
        let (status, body) = self
            .admin(
                Method::POST,
                &format!("/agent/threads/{key}/approvals/{approval_id}"),
                json!({"decision": decision}),
            )
            .await;
        assert!(status.is_success(), "{decision}: {body}");
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

    /// The runner of the sandbox that was given `token`.
    pub fn runner(&self, token: &str) -> Runner {
        Runner::new(self.http.clone(), &self.url, token)
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

/// The code of an error body (`{"error": {"code": ...}}`); fails the test on any other body.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}
