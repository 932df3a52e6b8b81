//! The Centaur API as the command needs it, and the errors people see. Request bodies are the
//! protocol's request types and answers are read into its response types.

use std::process::ExitCode;
use std::time::Duration;

use centaur_protocol::api::{
    ApprovalDecisionRequest, EgressAuditPage, ExecuteRequest, ExecuteResponse, HarnessList,
    InterruptRequest, InterruptResponse, MessageRequest, MessageResponse, OkResponse, ThreadDetail,
    ThreadList, ThreadSummary,
};
use centaur_protocol::runner::ApprovalPolicy;
use centaur_protocol::sse::Parser;
use centaur_protocol::tools::{ToolCallAnswer, ToolInfo, ToolList};
use centaur_protocol::{Decision, ErrorBody, ErrorCode, Event, Harness, ThreadKey};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::credentials::CredentialsError;

/// How long a stream may stay silent before it is taken for dead and reopened.
const STREAM_SILENCE: Duration = Duration::from_secs(45);

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
    DatabaseUnavailable { url: String, code: ErrorCode },
    #[error("the server refused the token ({0}); run `centaur login` or set CENTAUR_API_TOKEN")]
    Unauthorized(String),
    #[error("no token for {0}: run `centaur login`, or set CENTAUR_API_TOKEN")]
    NotLoggedIn(String),
    #[error("{message} ({code})")]
    Api { code: Code, message: String },
    /// A success whose body is not what the protocol says it is.
    #[error("the server sent {what} I cannot read: {source}")]
    Unreadable {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(
        "thread `{thread_key}` did not appear within {waited:?}; check the key, or wait longer with --timeout"
    )]
    ThreadNeverAppeared {
        thread_key: ThreadKey,
        waited: Duration,
    },
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Unreachable { .. }
            | Failure::DatabaseUnavailable { .. }
            | Failure::Unauthorized(_)
            | Failure::NotLoggedIn(_) => 3,
            Failure::Credentials(error) => error.exit_code(),
            Failure::Api { .. }
            | Failure::Unreadable { .. }
            | Failure::ThreadNeverAppeared { .. } => 1,
        }
    }

    /// Whether the server refused with `code`.
    pub fn is_api(&self, code: ErrorCode) -> bool {
        matches!(self, Failure::Api { code: Code::Known(known), .. } if *known == code)
    }
}

impl From<Failure> for ExitCode {
    fn from(failure: Failure) -> ExitCode {
        ExitCode::from(failure.exit_code())
    }
}

/// The code of an error answer: one of the protocol's, or what stands in for it (a code this
/// client does not know, or the HTTP status of an answer without the error body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    Known(ErrorCode),
    Other(String),
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Code::Known(code) => f.write_str(code.as_str()),
            Code::Other(code) => f.write_str(code),
        }
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

    pub fn url(&self) -> &str {
        &self.url
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

    /// A success read as `T` (`what` names it for people), or the server's refusal.
    async fn answer<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
        what: &'static str,
    ) -> Result<T, Failure> {
        if !response.status().is_success() {
            return Err(self.refusal(response).await);
        }
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&body).map_err(|source| Failure::Unreadable { what, source })
    }

    /// An error answer as a [`Failure`].
    async fn refusal(&self, response: reqwest::Response) -> Failure {
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        // A code this client does not know still has its message and its name.
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(known) => (Some(Code::Known(known.error.code)), known.error.message),
            Err(_) => match serde_json::from_slice::<ErrorBody<String>>(&body) {
                Ok(other) => (
                    Some(other.error.code)
                        .filter(|c| !c.is_empty())
                        .map(Code::Other),
                    other.error.message,
                ),
                Err(_) => (None, String::new()),
            },
        };
        match (status, code) {
            // A person denying a tool call's approval is the call's failure, not the token's.
            (StatusCode::FORBIDDEN, Some(Code::Known(ErrorCode::ToolCallDenied))) => Failure::Api {
                code: Code::Known(ErrorCode::ToolCallDenied),
                message,
            },
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => Failure::Unauthorized(message),
            // A server that runs but cannot use its database: a query failed because the
            // database went away, or it has not reached it since it started.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Code::Known(code @ (ErrorCode::DatabaseUnavailable | ErrorCode::NotReady))),
            ) => Failure::DatabaseUnavailable {
                url: self.url.clone(),
                code,
            },
            (status, code) => Failure::Api {
                code: code.unwrap_or_else(|| Code::Other(status.to_string())),
                message: if message.is_empty() {
                    format!("the server answered {status}")
                } else {
                    message
                },
            },
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, what: &'static str) -> Result<T, Failure> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.answer(response, what).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        what: &'static str,
    ) -> Result<T, Failure> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.answer(response, what).await
    }

    /// Whether the server is ready (`/readyz`: it reaches its database).
    pub async fn ready(&self) -> Result<(), Failure> {
        self.get::<OkResponse>("/readyz", "a readiness answer")
            .await
            .map(|_| ())
    }

    /// Checks the URL and the token with the smallest request that needs both.
    pub async fn check(&self) -> Result<(), Failure> {
        self.get::<ThreadList>("/agent/threads?limit=1", "a thread list")
            .await
            .map(|_| ())
    }

    /// Starts a turn; the id of its execution.
    pub async fn execute(
        &self,
        key: &ThreadKey,
        harness: Option<Harness>,
        message: &str,
        max_duration_ms: Option<u64>,
        approval_policy: Option<ApprovalPolicy>,
    ) -> Result<Uuid, Failure> {
        let request = ExecuteRequest {
            thread_key: key.clone(),
            idempotency_key: None,
            message: Some(message.to_owned()),
            harness,
            max_duration_ms,
            approval_policy,
        };
        let accepted: ExecuteResponse = self
            .post(
                "/agent/execute",
                &request,
                "an answer to the turn it was asked to run",
            )
            .await?;
        Ok(accepted.execution_id)
    }

    pub async fn thread(&self, key: &ThreadKey) -> Result<ThreadDetail, Failure> {
        self.get(
            &format!("/agent/threads/{}", key.to_path_segment()),
            "a thread",
        )
        .await
    }

    /// The thread's latest execution (if any) and its newest event id.
    pub async fn latest(&self, key: &ThreadKey) -> Result<(Option<Uuid>, i64), Failure> {
        let detail = self.thread(key).await?;
        Ok((
            detail.last_execution.map(|e| e.execution_id),
            detail.summary.last_event_id,
        ))
    }

    /// The thread holding Slack message `message_ts` of channel `channel_id` (a reply's link
    /// copied without its `thread_ts` names only the reply): `GET
    /// /agent/slack/messages/{channel_id}/{message_ts}`; `thread_not_found` when none does.
    /// Both parts come from a parsed [`centaur_protocol::slack::link::SlackLink`] (letters,
    /// digits and a dot), so they go into the path as they are.
    pub async fn slack_message_thread(
        &self,
        channel_id: &str,
        message_ts: &str,
    ) -> Result<ThreadSummary, Failure> {
        self.get(
            &format!("/agent/slack/messages/{channel_id}/{message_ts}"),
            "the thread of a Slack message",
        )
        .await
    }

    /// The most recently active threads (up to 100).
    pub async fn threads(&self) -> Result<ThreadList, Failure> {
        self.get("/agent/threads?limit=100", "a thread list").await
    }

    /// The harnesses the server offers, and which of them can run a turn now.
    pub async fn harnesses(&self) -> Result<HarnessList, Failure> {
        self.get("/agent/harnesses", "the harness list").await
    }

    /// A message on the thread; while a turn runs, the harness takes it as steering.
    pub async fn message(&self, key: &ThreadKey, text: &str) -> Result<MessageResponse, Failure> {
        let request = MessageRequest {
            thread_key: key.clone(),
            role: None,
            text: text.to_owned(),
            client_message_id: Some(Uuid::new_v4().to_string()),
        };
        self.post("/agent/message", &request, "an answer to the message")
            .await
    }

    pub async fn interrupt(&self, key: &ThreadKey) -> Result<InterruptResponse, Failure> {
        self.interrupt_thread(key, false).await
    }

    /// Cancels the thread's queued or running execution; with `all`, also withdraws the
    /// messages waiting for a turn.
    pub async fn interrupt_thread(
        &self,
        key: &ThreadKey,
        all: bool,
    ) -> Result<InterruptResponse, Failure> {
        let request = InterruptRequest {
            reason: Some("interrupted from the terminal".to_owned()),
        };
        let query = if all { "?all=true" } else { "" };
        self.post(
            &format!("/agent/threads/{}/interrupt{query}", key.to_path_segment()),
            &request,
            "an answer to the interrupt",
        )
        .await
    }

    /// Waits until thread `key` exists (a script may attach before its `send` created it),
    /// for at most `limit` (`None`: as long as it takes).
    pub async fn wait_for_thread(
        &self,
        key: &ThreadKey,
        limit: Option<Duration>,
    ) -> Result<(), Failure> {
        let start = tokio::time::Instant::now();
        let mut told = false;
        loop {
            match self.thread(key).await {
                Ok(_) => return Ok(()),
                Err(failure) if failure.is_api(ErrorCode::ThreadNotFound) => {}
                Err(failure) => return Err(failure),
            }
            if let Some(limit) = limit
                && start.elapsed() >= limit
            {
                return Err(Failure::ThreadNeverAppeared {
                    thread_key: key.clone(),
                    waited: limit,
                });
            }
            if !std::mem::replace(&mut told, true) {
                eprintln!("centaur: waiting for thread `{key}` to be created…");
            }
            let pause = Duration::from_millis(200);
            let pause = limit.map_or(pause, |limit| {
                pause.min(limit.saturating_sub(start.elapsed()))
            });
            tokio::time::sleep(pause).await;
        }
    }

    /// Every tool the server found, ready or not: `GET /tools`.
    pub async fn tools(&self) -> Result<ToolList, Failure> {
        self.get("/tools", "the tool list").await
    }

    /// One tool with its methods: `GET /tools/{tool}`; `tool_not_found` when there is none.
    pub async fn tool(&self, name: &str) -> Result<ToolInfo, Failure> {
        self.get(&format!("/tools/{}", segment(name)), "a tool")
            .await
    }

    /// Calls `tool`'s `method` with `arguments` (a JSON object): `POST /tools/{tool}/{method}`.
    /// A refusal keeps its code: `invalid_arguments` (the message names the argument),
    /// `tool_failed`, `tool_timeout`, `tool_call_denied`, `tool_unavailable`, `tool_not_found`,
    /// `tool_method_not_found`.
    pub async fn call_tool(
        &self,
        tool: &str,
        method: &str,
        arguments: &serde_json::Value,
    ) -> Result<ToolCallAnswer, Failure> {
        self.post(
            &format!("/tools/{}/{}", segment(tool), segment(method)),
            arguments,
            "a tool call's answer",
        )
        .await
    }

    /// One page of the egress proxy's audit (admin only): `GET /admin/egress-audit`.
    pub async fn egress_audit(&self, query: &AuditQuery) -> Result<EgressAuditPage, Failure> {
        let mut params = vec![format!("limit={}", query.limit)];
        if let Some(key) = &query.thread_key {
            params.push(format!("thread_key={}", key.to_path_segment()));
        }
        if query.denied {
            params.push("denied=true".to_owned());
        }
        if let Some(after) = query.after {
            params.push(format!("after={after}"));
        }
        self.get(
            &format!("/admin/egress-audit?{}", params.join("&")),
            "a page of the egress audit",
        )
        .await
    }

    pub async fn approve(
        &self,
        key: &ThreadKey,
        approval_id: Uuid,
        decision: Decision,
    ) -> Result<(), Failure> {
        let request = ApprovalDecisionRequest {
            decision,
            reason: None,
        };
        self.post::<_, OkResponse>(
            &format!(
                "/agent/threads/{}/approvals/{}",
                key.to_path_segment(),
                approval_id
            ),
            &request,
            "an answer to the decision",
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
                    let refusal = self.refusal(response).await;
                    return Err(if matches!(refusal, Failure::DatabaseUnavailable { .. }) {
                        refusal
                    } else {
                        Failure::Unreachable {
                            url: self.url.clone(),
                            reason: format!("it answered {status}"),
                        }
                    });
                }
                Ok(response) => return Err(self.refusal(response).await),
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

/// A name typed by a person as one path segment: characters other than unreserved ones are
/// percent-encoded, so `a/b` or `..` asks for a tool of that name rather than another route.
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What to read of the egress audit.
#[derive(Clone, Debug)]
pub struct AuditQuery {
    pub thread_key: Option<ThreadKey>,
    /// Only refusals (`denied`, `leak_blocked`).
    pub denied: bool,
    /// Records after this id, oldest first; without it, the newest.
    pub after: Option<i64>,
    pub limit: u32,
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
                    let event = Event {
                        event_id: id,
                        thread_key: ThreadKey::parse("api:t").unwrap(),
                        created_at: "2026-11-22T00:00:00Z".parse().unwrap(),
                        execution_id: None,
                        body: centaur_protocol::EventBody::AgentMessageDelta {
                            text: format!("part {id} "),
                        },
                    };
                    let event = serde_json::to_string(&event).unwrap();
                    body.push_str(&format!(
                        "id: {id}\nevent: agent.message.delta\ndata: {event}\n\n"
                    ));
                }
                let _ = stream.write_all(body.as_bytes()).await;
            }
        });
        url
    }

    /// A server that answers every request with `status` and `body`.
    async fn answering(status: &'static str, body: &'static str) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        Client::new(url, "token".into())
    }

    /// Error answers become failures by their code, whatever their message says.
    #[tokio::test]
    async fn refusals_are_told_apart_by_their_code() {
        let key = ThreadKey::parse("api:t").unwrap();
        let decided = answering(
            "409 Conflict",
            r#"{"error":{"code":"approval_already_decided","message":"decided"}}"#,
        )
        .await;
        let failure = decided
            .approve(&key, Uuid::nil(), Decision::Approve)
            .await
            .unwrap_err();
        assert!(
            failure.is_api(ErrorCode::ApprovalAlreadyDecided),
            "{failure:?}"
        );
        assert!(!failure.is_api(ErrorCode::ApprovalExpired), "{failure:?}");
        assert_eq!(failure.to_string(), "decided (approval_already_decided)");

        let down = answering(
            "503 Service Unavailable",
            r#"{"error":{"code":"not_ready","message":"no database"}}"#,
        )
        .await;
        let failure = down.ready().await.unwrap_err();
        assert!(
            matches!(
                failure,
                Failure::DatabaseUnavailable {
                    code: ErrorCode::NotReady,
                    ..
                }
            ),
            "{failure:?}"
        );
        assert_eq!(failure.exit_code(), 3);

        // A code this client does not know keeps its name; no body at all, the status.
        let newer = answering(
            "409 Conflict",
            r#"{"error":{"code":"something_new","message":"new"}}"#,
        )
        .await;
        let failure = newer.interrupt(&key).await.unwrap_err();
        assert_eq!(failure.to_string(), "new (something_new)");
        let gateway = answering("502 Bad Gateway", "").await;
        let failure = gateway.threads().await.unwrap_err();
        assert_eq!(
            failure.to_string(),
            "the server answered 502 Bad Gateway (502 Bad Gateway)"
        );
        assert_eq!(failure.exit_code(), 1);

        // A denied tool call is the call's failure (exit 1), not a refused token (exit 3).
        let denied = answering(
            "403 Forbidden",
            r#"{"error":{"code":"tool_call_denied","message":"Ann denied the call"}}"#,
        )
        .await;
        let failure = denied
            .call_tool("slack", "post_message", &serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(failure.is_api(ErrorCode::ToolCallDenied), "{failure:?}");
        assert_eq!(failure.exit_code(), 1);
        let forbidden = answering(
            "403 Forbidden",
            r#"{"error":{"code":"forbidden","message":"admin only"}}"#,
        )
        .await;
        let failure = forbidden.tools().await.unwrap_err();
        assert!(matches!(failure, Failure::Unauthorized(_)), "{failure:?}");

        // A success the protocol cannot read says so.
        let odd = answering("200 OK", r#"{"threads":"none"}"#).await;
        let failure = odd.threads().await.unwrap_err();
        assert!(
            matches!(
                failure,
                Failure::Unreadable {
                    what: "a thread list",
                    ..
                }
            ),
            "{failure:?}"
        );
    }

    /// Names typed by a person stay one path segment each.
    #[test]
    fn tool_and_method_names_are_one_segment_each() {
        assert_eq!(segment("github"), "github");
        assert_eq!(segment("my_tool-2"), "my_tool-2");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment("x?y#z"), "x%3Fy%23z");
        assert_eq!(segment("é"), "%C3%A9");
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
