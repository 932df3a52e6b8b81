//! The Centaur API as the command needs it, and the errors people see.

use std::process::ExitCode;
use std::time::Duration;

use centaur_protocol::api::ThreadList;
use centaur_protocol::sse::Parser;
use centaur_protocol::{Event, ThreadKey};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long a stream may stay silent before it is taken for dead and reopened.
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// The error codes of a server that runs but cannot use its database: `database_unavailable`
/// (a query failed because the database went away) and `not_ready` (it has not reached the
/// database since it started).
const DATABASE_CODES: [&str; 2] = ["database_unavailable", "not_ready"];

/// Why a command failed; each maps to an exit code and one line that names the fix.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(
        "cannot reach the Centaur server at {url} ({reason}); is it running? (`centaur dev`, or set CENTAUR_API_URL)"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "the Centaur server at {url} answers, but its database is unavailable ({code}); retry shortly (with `centaur dev`: `centaur dev status`, `centaur dev logs postgres`)"
    )]
    DatabaseUnavailable { url: String, code: String },
    #[error("the server refused the token ({0}); run `centaur login` or set CENTAUR_API_TOKEN")]
    Unauthorized(String),
    #[error("no token for {0}: run `centaur login`, or set CENTAUR_API_TOKEN")]
    NotLoggedIn(String),
    #[error("{message} ({code})")]
    Api { code: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0} are not available on this server yet")]
    Unavailable(&'static str),
    #[error("{0}")]
    Local(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Unreachable { .. }
            | Failure::DatabaseUnavailable { .. }
            | Failure::Unauthorized(_)
            | Failure::NotLoggedIn(_) => 3,
            Failure::Usage(_) => 2,
            Failure::Api { .. } | Failure::Unavailable(_) | Failure::Local(_) => 1,
        }
    }
}

impl From<Failure> for ExitCode {
    fn from(failure: Failure) -> ExitCode {
        ExitCode::from(failure.exit_code())
    }
}

#[derive(Clone)]
pub struct Client {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(url: String, token: String) -> Client {
        // TLS through ring, like the rest of Centaur; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            url,
            token,
            http: reqwest::Client::new(),
        }
    }

    fn unreachable(&self, error: reqwest::Error) -> Failure {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason = cause.to_string();
            source = cause.source();
        }
        Failure::Unreachable {
            url: self.url.clone(),
            reason,
        }
    }

    async fn answer(&self, response: reqwest::Response) -> Result<Value, Failure> {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
        let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
        match status {
            s if s.is_success() => Ok(body),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Failure::Unauthorized(message)),
            StatusCode::SERVICE_UNAVAILABLE if DATABASE_CODES.contains(&code.as_str()) => {
                Err(Failure::DatabaseUnavailable {
                    url: self.url.clone(),
                    code,
                })
            }
            _ => Err(Failure::Api {
                code: if code.is_empty() {
                    status.to_string()
                } else {
                    code
                },
                message: if message.is_empty() {
                    format!("the server answered {status}")
                } else {
                    message
                },
            }),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.answer(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.answer(response).await
    }

    pub async fn execute(
        &self,
        key: &ThreadKey,
        harness: Option<&str>,
        message: &str,
        max_duration_ms: Option<u64>,
    ) -> Result<Uuid, Failure> {
        let mut body = json!({"thread_key": key, "message": message});
        if let Some(harness) = harness {
            body["harness"] = json!(harness);
        }
        if let Some(ms) = max_duration_ms {
            body["max_duration_ms"] = json!(ms);
        }
        let accepted = self.post("/agent/execute", body).await?;
        accepted["execution_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| {
                Failure::Local("the server did not say which execution it started".into())
            })
    }

    /// The thread's latest execution (if any) and its newest event id.
    pub async fn latest(&self, key: &ThreadKey) -> Result<(Option<Uuid>, i64), Failure> {
        let detail = self
            .get(&format!("/agent/threads/{}", key.to_path_segment()))
            .await?;
        let execution = detail["last_execution"]["execution_id"]
            .as_str()
            .and_then(|id| id.parse().ok());
        Ok((execution, detail["last_event_id"].as_i64().unwrap_or(0)))
    }

    pub async fn threads(&self) -> Result<Value, Failure> {
        self.get("/agent/threads?limit=100").await
    }

    pub async fn thread_list(&self) -> Result<ThreadList, Failure> {
        let list = self.threads().await?;
        serde_json::from_value(list).map_err(|e| {
            Failure::Local(format!("the server sent a thread list I cannot read: {e}"))
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A message on the thread; while a turn runs, the harness takes it as steering.
    pub async fn message(&self, key: &ThreadKey, text: &str) -> Result<(), Failure> {
        self.post(
            "/agent/message",
            json!({"thread_key": key, "text": text, "client_message_id": Uuid::new_v4().to_string()}),
        )
        .await
        .map(|_| ())
    }

    pub async fn interrupt(&self, key: &ThreadKey) -> Result<(), Failure> {
        self.post(
            &format!("/agent/threads/{}/interrupt", key.to_path_segment()),
            json!({"reason": "interrupted from the terminal"}),
        )
        .await
        .map(|_| ())
    }

    pub async fn approve(
        &self,
        key: &ThreadKey,
        approval_id: Uuid,
        decision: &str,
    ) -> Result<(), Failure> {
        self.post(
            &format!(
                "/agent/threads/{}/approvals/{}",
                key.to_path_segment(),
                approval_id
            ),
            json!({"decision": decision}),
        )
        .await
        .map(|_| ())
    }

    /// Follows a thread's events after `after`, handing each to `handle` exactly once and in
    /// order, until `handle` returns false. Connection changes are told on stderr.
    pub async fn follow(
        &self,
        key: &ThreadKey,
        after: i64,
        execution: Option<Uuid>,
        handle: impl FnMut(&Event) -> bool,
    ) -> Result<(), Failure> {
        let mut dropped = false;
        let url = self.url.clone();
        let tell = move |connection: Connection| match connection {
            Connection::Reconnecting => {
                eprintln!("centaur: the connection to {url} dropped; reconnecting…");
                dropped = true;
            }
            Connection::Live if std::mem::take(&mut dropped) => eprintln!("centaur: reconnected"),
            Connection::Live => {}
        };
        self.follow_with(key, after, execution, tell, handle).await
    }

    /// Like [`Client::follow`], telling connection changes to `on_connection` instead. A
    /// dropped connection is resumed after the last event seen (`Last-Event-ID`); the server
    /// being away is waited out.
    pub async fn follow_with(
        &self,
        key: &ThreadKey,
        after: i64,
        execution: Option<Uuid>,
        mut on_connection: impl FnMut(Connection),
        mut handle: impl FnMut(&Event) -> bool,
    ) -> Result<(), Failure> {
        let mut last = after;
        let mut backoff = Duration::from_millis(100);
        let mut reconnecting = false;
        loop {
            let mut url = format!(
                "{}/agent/threads/{}/events?after_event_id={after}",
                self.url,
                key.to_path_segment()
            );
            if let Some(execution) = execution {
                url.push_str(&format!("&execution_id={execution}"));
            }
            let request = self
                .http
                .get(url)
                .bearer_auth(&self.token)
                .header("Last-Event-ID", last.to_string());
            let response = match request.send().await {
                Ok(response) if response.status().is_success() => response,
                // A server that is restarting: wait, once it has been reached at all.
                Ok(response)
                    if response.status().is_server_error() && (reconnecting || last > after) =>
                {
                    wait(&mut backoff, &mut reconnecting, &mut on_connection).await;
                    continue;
                }
                Ok(response) if response.status().is_server_error() => {
                    let status = response.status();
                    return Err(match self.answer(response).await {
                        Err(unavailable @ Failure::DatabaseUnavailable { .. }) => unavailable,
                        _ => Failure::Unreachable {
                            url: self.url.clone(),
                            reason: format!("it answered {status}"),
                        },
                    });
                }
                Ok(response) => return self.answer(response).await.map(|_| ()),
                Err(_) if reconnecting || last > after => {
                    wait(&mut backoff, &mut reconnecting, &mut on_connection).await;
                    continue;
                }
                Err(error) => return Err(self.unreachable(error)),
            };
            reconnecting = false;
            backoff = Duration::from_millis(100);
            on_connection(Connection::Live);
            let mut parser = Parser::default();
            let mut frames = Vec::new();
            let mut body = response.bytes_stream();
            // The server sends a keep-alive at least every 15 s: silence for longer is a
            // connection that died without closing.
            while let Ok(Some(chunk)) = tokio::time::timeout(STREAM_SILENCE, body.next()).await {
                let Ok(chunk) = chunk else { break };
                parser.push(&chunk, &mut frames);
                for frame in frames.drain(..) {
                    let Some(id) = frame.id.filter(|id| *id > last) else {
                        continue;
                    };
                    let Ok(event) = serde_json::from_str::<Event>(&frame.data) else {
                        continue;
                    };
                    last = id;
                    if !handle(&event) {
                        return Ok(());
                    }
                }
            }
            // The stream ended without the caller being done: the server went away or closed
            // it (shutting down). Resume after the last event.
            wait(&mut backoff, &mut reconnecting, &mut on_connection).await;
        }
    }
}

/// Waits before the next attempt to reach a stream, telling once that it dropped.
async fn wait(
    backoff: &mut Duration,
    reconnecting: &mut bool,
    on_connection: &mut impl FnMut(Connection),
) {
    if !std::mem::replace(reconnecting, true) {
        on_connection(Connection::Reconnecting);
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
}

/// The state of a followed stream, as a person would want to see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Connected: events arrive as they happen.
    Live,
    /// The connection dropped; resuming after the last event seen.
    Reconnecting,
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A thread's stream of `total` events, served by a fake server that closes the first
    /// connection after `cut` events (as a dying server or network would).
    async fn flaky_stream(total: i64, cut: i64) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                let after: i64 = request
                    .lines()
                    .find_map(|l| l.strip_prefix("last-event-id:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                let mut body = String::from(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n: hello\n\n",
                );
                let until = if first { cut.min(total) } else { total };
                first = false;
                for id in after + 1..=until {
                    let event = json!({"event_id": id, "thread_key": "api:t", "type": "agent.message.delta",
                        "created_at": "2026-11-22T00:00:00Z", "execution_id": null, "text": format!("part {id} ")});
                    body.push_str(&format!(
                        "id: {id}\nevent: agent.message.delta\ndata: {event}\n\n"
                    ));
                }
                let _ = stream.write_all(body.as_bytes()).await;
            }
        });
        url
    }

    /// Cut anywhere, the events handed on are the same as without a cut: each once, in order.
    #[tokio::test]
    async fn a_dropped_stream_resumes_without_gaps_or_repeats() {
        let total = 6;
        let key = ThreadKey::parse("api:t").unwrap();
        for cut in 0..=total {
            let client = Client::new(flaky_stream(total, cut).await, "token".into());
            let mut seen = Vec::new();
            client
                .follow(&key, 0, None, |event| {
                    seen.push(event.event_id);
                    event.event_id < total
                })
                .await
                .unwrap();
            assert_eq!(seen, (1..=total).collect::<Vec<_>>(), "cut after {cut}");
        }
    }
}
