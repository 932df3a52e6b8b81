//! The egress audit over the admin API and `centaur audit`; refusals on the thread's stream
//! carry their execution, once per host and reason, before the turn's end.

use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use centaur_protocol::egress::control::{
    AuditFlushed, DesiredSandbox, Removed, SandboxApplied, SandboxList, SyncRequest, SyncResponse,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use centaur_test_support::binaries::text;
use centaur_test_support::events::last_id;
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::pg::fresh_database;
use centaur_test_support::proxy::PROXY_TOKEN;
use centaur_test_support::server::{ADMIN_KEY, TestServer, enc, error_code};
use centaur_test_support::temp::temp_dir;

/// An audit record of `sandbox_id` seen now. An allowed one is a model request whose body
/// carried the sandbox's placeholder (an agent's `env` output in its history) and one of
/// another sandbox.
fn record(sandbox_id: &str, decision: &str, host: &str, reason: Option<&str>) -> Value {
    let allowed = decision == "allowed";
    json!({
        "at": chrono::Utc::now(), "sandbox_id": sandbox_id, "thread_key": null,
        "host": host, "port": 443, "method": "GET", "path": "/v1/x", "status": 403,
        "bytes_up": 10, "bytes_down": 20, "decision": decision, "reason": reason,
        "secrets_swapped": if decision == "allowed" { json!(["OPENAI_API_KEY"]) } else { json!([]) },
        "duration_ms": 3,
        "body_placeholders": if allowed { json!(["OPENAI_API_KEY"]) } else { json!([]) },
        "body_unknown_placeholders": u32::from(allowed),
    })
}

/// Reports `records` as the proxy does; returns how many events they added.
async fn report(server: &TestServer, records: Vec<Value>) -> u64 {
    let (status, answer) = server
        .call(
            Method::POST,
            "/proxy/v1/audit",
            Some(PROXY_TOKEN),
            Some(json!({ "records": records })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["events"].as_u64().unwrap()
}

/// The thread's `egress.denied` events: (host, reason, execution_id).
async fn denials(server: &TestServer, key: &str) -> Vec<(String, String, Option<String>)> {
    let last = server.last_event_id(key).await;
    let mut stream = server.events(key, "after_event_id=0").await;
    stream
        .until_id(last, Duration::from_secs(5))
        .await
        .into_iter()
        .filter(|f| f.event == "egress.denied")
        .map(|f| {
            (
                f.data["host"].as_str().unwrap().to_owned(),
                f.data["reason"].as_str().unwrap().to_owned(),
                f.data["execution_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

async fn audit(server: &TestServer, query: &str, token: Option<&str>) -> (StatusCode, Value) {
    server
        .call(
            Method::GET,
            &format!("/admin/egress-audit{query}"),
            token,
            None,
        )
        .await
}

fn hosts(page: &Value) -> Vec<&str> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect()
}

const REASON: &str = "evil.example:443 is not on this sandbox's list of allowed hosts";

/// Refusals during a turn carry its execution; the same host and reason again within that
/// execution (in the same batch or a later one) adds no event, while the audit keeps every
/// attempt; the admin API reads it back by thread, refusals only, and page by page.
#[tokio::test]
async fn refusals_carry_their_execution_once_and_the_audit_reads_them_back() {
    let database_url = fresh_database().await;
    let mut config = centaur_server::Config::new(&database_url);
    config.proxy_token = Some(PROXY_TOKEN.into());
    let server = TestServer::start_with(config, true).await;
    let key = "api:audit";
    let (sandbox, _) = server.spawn(key).await;
    let sandbox = sandbox.to_string();

    // Before any turn: a refusal of no execution.
    assert_eq!(
        report(
            &server,
            vec![record(&sandbox, "denied", "early.example", None)]
        )
        .await,
        1
    );
    let (mut runner, execution_id) = server.running_execution(key).await;
    let execution = execution_id.to_string();
    let events = report(
        &server,
        vec![
            record(&sandbox, "allowed", "api.openai.com", None),
            record(&sandbox, "denied", "evil.example", Some(REASON)),
            record(&sandbox, "denied", "evil.example", Some(REASON)),
            record(&sandbox, "denied", "evil.example", Some(REASON)),
            record(
                &sandbox,
                "leak_blocked",
                "paste.example",
                Some("placeholder in body"),
            ),
        ],
    )
    .await;
    assert_eq!(events, 2, "one event per host and reason");
    // The same refusal in a later batch of the same turn: stored, no event; a new one: an event.
    let events = report(
        &server,
        vec![
            record(&sandbox, "denied", "evil.example", Some(REASON)),
            record(&sandbox, "denied", "other.example", Some(REASON)),
        ],
    )
    .await;
    assert_eq!(events, 1);
    let (status, _) = runner
        .post(
            execution_id,
            vec![],
            Some(json!({"status": "completed", "result_text": "done"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // After the turn: no execution again, and the same host is told again.
    assert_eq!(
        report(
            &server,
            vec![record(&sandbox, "denied", "evil.example", Some(REASON))]
        )
        .await,
        1
    );

    let reason = |r: &str| r.to_owned();
    assert_eq!(
        denials(&server, key).await,
        vec![
            (reason("early.example"), reason("denied"), None),
            (
                reason("evil.example"),
                reason(REASON),
                Some(execution.clone())
            ),
            (
                reason("paste.example"),
                reason("placeholder in body"),
                Some(execution.clone())
            ),
            (
                reason("other.example"),
                reason(REASON),
                Some(execution.clone())
            ),
            (reason("evil.example"), reason(REASON), None),
        ]
    );

    // Every record, oldest first, each with the execution running when the proxy saw it.
    let (status, page) = audit(&server, "", Some(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 9, "{page}");
    let ids: Vec<i64> = records.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(page["next_after"], json!(ids[8]));
    let executions: Vec<Option<&str>> =
        records.iter().map(|r| r["execution_id"].as_str()).collect();
    let during = Some(execution.as_str());
    assert_eq!(
        executions,
        [
            None, during, during, during, during, during, during, during, None
        ]
    );
    let allowed = &records[1];
    assert_eq!(allowed["decision"], "allowed");
    assert_eq!(allowed["secrets"], json!(["OPENAI_API_KEY"]));
    assert_eq!(allowed["body_placeholders"], json!(["OPENAI_API_KEY"]));
    assert_eq!(allowed["body_unknown_placeholders"], 1);
    assert_eq!(records[2]["body_placeholders"], json!([]));
    assert_eq!(allowed["thread_key"], key);
    assert_eq!(
        (allowed["method"].as_str(), allowed["path"].as_str()),
        (Some("GET"), Some("/v1/x"))
    );
    assert_eq!(allowed["status"], 403);

    // Refusals only (denied and leak_blocked), of this thread.
    let (_, page) = audit(
        &server,
        &format!("?thread_key={}&denied=true", enc(key)),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(
        hosts(&page),
        [
            "early.example",
            "evil.example",
            "evil.example",
            "evil.example",
            "paste.example",
            "evil.example",
            "other.example",
            "evil.example"
        ]
    );
    let (_, page) = audit(&server, "?thread_key=api:someone-else", Some(ADMIN_KEY)).await;
    assert_eq!(page["records"], json!([]));
    // The newest two; then page by page after a cursor; nothing new keeps the cursor.
    let (_, page) = audit(&server, "?limit=2", Some(ADMIN_KEY)).await;
    assert_eq!(hosts(&page), ["other.example", "evil.example"]);
    let (_, page) = audit(
        &server,
        &format!("?after={}&limit=3", ids[0]),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(
        hosts(&page),
        ["api.openai.com", "evil.example", "evil.example"]
    );
    assert_eq!(page["next_after"], json!(ids[3]));
    let (_, page) = audit(&server, &format!("?after={}", ids[8]), Some(ADMIN_KEY)).await;
    assert_eq!(page, json!({"records": [], "next_after": ids[8]}));

    // Bad input, each refused with what was wrong.
    for query in [
        "?thread_key=no-colon",
        "?limit=0",
        "?limit=1001",
        "?limit=many",
        "?after=-1",
        "?denied=maybe",
        "?thread=api:audit",
    ] {
        let (status, body) = audit(&server, query, Some(ADMIN_KEY)).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{query}: {body}"
        );
    }
    let (_, body) = audit(&server, "?thread_key=no-colon", Some(ADMIN_KEY)).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-colon"),
        "{body}"
    );
    // Admins only: not API keys, not the proxy, not sandboxes.
    let created = server
        .post("/admin/api-keys", json!({"name": "reader"}))
        .await;
    let api_key = created["token"].as_str().unwrap();
    for (token, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(api_key), StatusCode::FORBIDDEN),
        (Some(PROXY_TOKEN), StatusCode::FORBIDDEN),
        (Some(runner.token.as_str()), StatusCode::FORBIDDEN),
    ] {
        let (status, _) = audit(&server, "", token).await;
        assert_eq!(status, want, "{token:?}");
    }
}

/// What the fake proxy does when asked to flush a sandbox's audit.
#[derive(Clone, Copy, Debug)]
enum Flush {
    /// Delivers three identical refusals to the server, then answers.
    Deliver,
    /// An older proxy without the route.
    Unknown,
    /// Never answers.
    Hang,
}

#[derive(Clone)]
struct FakeProxy {
    flush: Flush,
    /// The server's URL, once it runs.
    server: Arc<Mutex<Option<String>>>,
    flushed: Arc<Mutex<Vec<String>>>,
}

fn applied(sandbox_id: &str, version: u64) -> SandboxApplied {
    SandboxApplied {
        sandbox_id: sandbox_id.to_owned(),
        version,
        applied: true,
        socket: None,
        proxy_credential: "credential".into(),
        placeholders: Default::default(),
    }
}

/// The proxy's control API as far as a server with a recording backend needs it, with a flush
/// route that behaves as `flush` says.
async fn fake_proxy(flush: Flush) -> (String, FakeProxy) {
    async fn apply(Path(id): Path<String>, Json(d): Json<DesiredSandbox>) -> Json<SandboxApplied> {
        Json(applied(&id, d.version))
    }
    async fn remove(Path(_): Path<String>) -> Json<Removed> {
        Json(Removed { removed: true })
    }
    async fn sync(Json(request): Json<SyncRequest>) -> Json<SyncResponse> {
        Json(SyncResponse {
            sandboxes: request
                .sandboxes
                .iter()
                .map(|e| applied(&e.sandbox_id, e.desired.version))
                .collect(),
            removed: vec![],
            rejected: vec![],
        })
    }
    async fn list() -> Json<SandboxList> {
        Json(SandboxList { sandboxes: vec![] })
    }
    async fn flush_audit(
        State(fake): State<FakeProxy>,
        Path(id): Path<String>,
    ) -> Result<Json<AuditFlushed>, StatusCode> {
        fake.flushed.lock().unwrap().push(id.clone());
        match fake.flush {
            Flush::Unknown => Err(StatusCode::NOT_FOUND),
            Flush::Hang => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Err(StatusCode::GATEWAY_TIMEOUT)
            }
            Flush::Deliver => {
                let url = fake.server.lock().unwrap().clone().unwrap();
                let records: Vec<Value> = (0..3)
                    .map(|_| record(&id, "denied", "evil.example", Some(REASON)))
                    .collect();
                let response = reqwest::Client::new()
                    .post(format!("{url}/proxy/v1/audit"))
                    .bearer_auth(PROXY_TOKEN)
                    .json(&json!({ "records": records }))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                Ok(Json(AuditFlushed { records: 3 }))
            }
        }
    }
    let fake = FakeProxy {
        flush,
        server: Arc::default(),
        flushed: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/sandboxes", put(sync).get(list))
        .route("/v1/sandboxes/{id}", put(apply).delete(remove))
        .route("/v1/sandboxes/{id}/audit/flush", post(flush_audit))
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

/// A server whose proxy is the fake one.
async fn server_with(flush: Flush) -> (TestServer, FakeProxy) {
    let (proxy_url, fake) = fake_proxy(flush).await;
    let mut config = centaur_server::Config::new(fresh_database().await);
    config.proxy_token = Some(PROXY_TOKEN.into());
    config.proxy_control_url = Some(proxy_url);
    let server = TestServer::start_with(config, true).await;
    *fake.server.lock().unwrap() = Some(server.url.clone());
    (server, fake)
}

/// Before storing the end of a turn its runner reported, the server has the proxy deliver the
/// sandbox's audit: the turn's refusal (three attempts, one event) is on the stream with its
/// execution, before `execution.completed`.
#[tokio::test]
async fn a_turns_refusals_come_before_its_end() {
    let (server, fake) = server_with(Flush::Deliver).await;
    let key = "api:flushed";
    let (mut runner, execution_id) = server.running_execution(key).await;
    let after = server.last_event_id(key).await;
    let (status, body) = runner
        .post(
            execution_id,
            vec![json!({"type": "agent.message", "text": "tried"})],
            Some(json!({"status": "completed", "result_text": "done"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut stream = server.events(key, &format!("after_event_id={after}")).await;
    let frames = stream.until_id(after + 3, Duration::from_secs(5)).await;
    let seen: Vec<(&str, Option<&str>)> = frames
        .iter()
        .map(|f| (f.event.as_str(), f.data["execution_id"].as_str()))
        .collect();
    let execution = execution_id.to_string();
    let during = Some(execution.as_str());
    // The refusals are delivered before the final batch is stored: before its events too.
    assert_eq!(
        seen,
        [
            ("egress.denied", during),
            ("agent.message", during),
            ("execution.completed", during)
        ]
    );
    assert_eq!(frames[0].data["host"], "evil.example");
    assert!(stream.next(Duration::from_millis(300)).await.is_none());
    let sandbox: Vec<String> = fake.flushed.lock().unwrap().clone();
    assert_eq!(sandbox.len(), 1, "flushed once: {sandbox:?}");
    // The audit kept all three attempts.
    let (_, page) = audit(&server, "?denied=true", Some(ADMIN_KEY)).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 3, "{page}");
}

/// A proxy that does not know the flush route, or never answers it, delays the end of a turn
/// by a bounded wait at most.
#[tokio::test]
async fn an_old_or_stuck_proxy_does_not_hold_a_turns_end() {
    for flush in [Flush::Unknown, Flush::Hang] {
        let (server, fake) = server_with(flush).await;
        let key = "api:stuck";
        let (mut runner, execution_id) = server.running_execution(key).await;
        let started = tokio::time::Instant::now();
        let (status, body) = runner
            .post(
                execution_id,
                vec![],
                Some(json!({"status": "completed", "result_text": "done"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{flush:?}: {body}");
        assert_eq!(body["status"], "completed");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(5), "{flush:?}: {waited:?}");
        assert_eq!(fake.flushed.lock().unwrap().len(), 1, "{flush:?}");
    }
}

/// `centaur audit` run as a person would.
async fn centaur(server: &TestServer, home: &std::path::Path, args: &[&str]) -> Output {
    server
        .centaur(home, args)
        .output()
        .await
        .expect("centaur runs")
}

/// `centaur audit` prints the audit (filtered by thread and to refusals, as JSON), follows new
/// records, says clearly when the server goes away, and refuses bad input.
#[tokio::test]
async fn centaur_audit_prints_filters_and_follows() {
    let database_url = fresh_database().await;
    let mut config = centaur_server::Config::new(&database_url);
    config.proxy_token = Some(PROXY_TOKEN.into());
    let mut server = TestServer::start_with(config, true).await;
    let home = temp_dir("cli-audit");
    let (sandbox, _) = server.spawn("api:audited").await;
    let (other, _) = server.spawn("api:bystander").await;
    let (sandbox, other) = (sandbox.to_string(), other.to_string());
    report(
        &server,
        vec![
            record(&sandbox, "allowed", "api.openai.com", None),
            record(&sandbox, "denied", "evil.example", Some(REASON)),
            record(&other, "denied", "elsewhere.example", None),
        ],
    )
    .await;

    let out = centaur(&server, &home, &["audit"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].contains("allowed")
            && lines[0].contains("GET")
            && lines[0].contains("api.openai.com:443/v1/x")
            && lines[0].contains("thread=api:audited")
            && lines[0].contains("secrets=OPENAI_API_KEY")
            && lines[0].contains("body_placeholders=OPENAI_API_KEY")
            && lines[0].contains("unknown_placeholders=1"),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-"), "{stdout}");
    assert!(
        lines[1].contains("denied") && lines[1].contains(REASON),
        "{stdout}"
    );

    let out = centaur(
        &server,
        &home,
        &["audit", "--thread", "api:audited", "--denied", "--json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (
            records[0]["host"].as_str(),
            records[0]["decision"].as_str(),
            records[0]["thread_key"].as_str()
        ),
        (Some("evil.example"), Some("denied"), Some("api:audited"))
    );

    // Bad input: usage errors, before asking the server.
    for args in [
        &["audit", "--thread", "no-colon"][..],
        &["audit", "--limit", "0"][..],
        &["audit", "--limit", "5000"][..],
    ] {
        let out = centaur(&server, &home, args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // Following: the newest records, then each new one as it is stored.
    let mut follow = server
        .centaur(&home, &["audit", "--follow", "--denied", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut next_host = async || {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a record in time")
            .unwrap()
            .expect("a line");
        let record: Value = serde_json::from_str(&line).unwrap();
        record["host"].as_str().unwrap().to_owned()
    };
    assert_eq!(next_host().await, "evil.example");
    assert_eq!(next_host().await, "elsewhere.example");
    report(
        &server,
        vec![
            record(&sandbox, "allowed", "api.openai.com", None),
            record(&sandbox, "denied", "late.example", None),
        ],
    )
    .await;
    assert_eq!(next_host().await, "late.example");

    // The server goes away: a clear error (and where to resume), not a hang.
    server.shutdown().await;
    let out = tokio::time::timeout(Duration::from_secs(30), follow.wait_with_output())
        .await
        .expect("audit --follow gives up on a server that is gone")
        .unwrap();
    let error = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{error}");
    assert!(
        error.contains("lost the Centaur server") && error.contains("--after"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// A real turn through the real proxy: a shell command tries a host the policy does not allow
/// three times and the turn ends at once. The thread gets exactly one `egress.denied`, with the
/// turn's execution, before `execution.completed`; the audit has all three attempts.
#[tokio::test]
async fn a_real_turns_repeated_denial_is_one_event_before_its_end() {
    let stack = LocalStack::start("audit-denied", 0, json!({})).await;
    let key = "api:denied-turn";
    let script = "for i in 1 2 3; do \
                    curl -s -o /dev/null -w 'status=%{http_code}\\n' -x \"$HTTP_PROXY\" http://evil.example/; \
                  done";
    let accepted = stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "shell", "message": script}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    let done = stack.terminal(key, &execution_id).await;
    assert_eq!(done["type"], "execution.completed", "{done}");
    assert_eq!(
        done["result_text"]
            .as_str()
            .unwrap()
            .matches("status=403")
            .count(),
        3,
        "{done}"
    );
    // The stream up to the turn's end, as `send --json` and `attach --exit-on-terminal` read it.
    let events = stack
        .until(key, 0, |e| e["type"] == "execution.completed")
        .await;
    let denials: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "egress.denied")
        .collect();
    assert_eq!(denials.len(), 1, "{events:#?}");
    assert_eq!(denials[0]["host"], "evil.example");
    assert_eq!(denials[0]["execution_id"], execution_id.as_str());
    // Nothing more arrives after the end.
    let last = events.last().unwrap()["event_id"].as_i64().unwrap();
    let mut stream = stack
        .server
        .events(key, &format!("after_event_id={last}"))
        .await;
    assert!(stream.next(Duration::from_secs(1)).await.is_none());
    let (_, page) = audit(
        &stack.server,
        &format!("?thread_key={}&denied=true", enc(key)),
        Some(ADMIN_KEY),
    )
    .await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{page}");
    assert!(
        records
            .iter()
            .all(|r| r["execution_id"] == execution_id.as_str() && r["host"] == "evil.example"),
        "{page}"
    );
}

/// A turn interrupted right after a refusal: the refusal is on the thread, with the turn's
/// execution, before the turn's end (the server has the proxy deliver it before it stores the
/// cancellation), so `attach --exit-on-terminal` shows it.
#[tokio::test]
async fn a_refusal_just_before_an_interrupt_comes_before_the_cancellation() {
    let stack = LocalStack::start("audit-interrupted", 0, json!({})).await;
    let key = "api:denied-then-interrupted";
    let script = "curl -s -o /dev/null -w 'status=%{http_code}\\n' -x \"$HTTP_PROXY\" http://evil.example/; \
                  sleep 30";
    let accepted = stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "shell", "message": script}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    // Interrupted as soon as the refusal shows in the command's output.
    let seen = stack
        .until(key, 0, |e| {
            e["type"] == "command.output" && e["chunk"].as_str().unwrap().contains("status=403")
        })
        .await;
    stack
        .server
        .post(&format!("/agent/threads/{key}/interrupt"), json!({}))
        .await;
    let events = stack
        .until(key, last_id(&seen), |e| e["type"] == "execution.cancelled")
        .await;
    let all: Vec<&Value> = seen.iter().chain(&events).collect();
    let denials: Vec<&&Value> = all
        .iter()
        .filter(|e| e["type"] == "egress.denied")
        .collect();
    assert_eq!(denials.len(), 1, "{all:#?}");
    assert_eq!(denials[0]["host"], "evil.example");
    assert_eq!(denials[0]["execution_id"], execution_id.as_str());
}

/// Following the audit by id misses nothing while several batches are stored at once: record
/// ids are committed in the order they are handed out.
#[tokio::test]
async fn following_the_audit_by_id_misses_no_record_under_concurrent_batches() {
    let database_url = fresh_database().await;
    let mut config = centaur_server::Config::new(&database_url);
    config.proxy_token = Some(PROXY_TOKEN.into());
    let server = Arc::new(TestServer::start_with(config, true).await);
    let (writers, batches, per_batch) = (8, 20, 100);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..batches {
                let records = (0..per_batch)
                    .map(|i| {
                        record(
                            "sb-unknown",
                            "allowed",
                            &format!("w{writer}-b{batch}-r{i}.example"),
                            None,
                        )
                    })
                    .collect();
                report(&server, records).await;
            }
        }));
    }
    let total = writers * batches * per_batch;
    let mut seen = std::collections::BTreeSet::new();
    let mut after = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < total && tokio::time::Instant::now() < deadline {
        // Whether every batch was stored, asked before the page is read: a page read before
        // the last commits may be empty although the writers have finished since.
        let all_stored = tasks.iter().all(|t| t.is_finished());
        let (status, page) = audit(
            &server,
            &format!("?after={after}&limit=1000"),
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for record in page["records"].as_array().unwrap() {
            assert!(
                seen.insert(record["host"].as_str().unwrap().to_owned()),
                "seen twice: {record}"
            );
        }
        after = page["next_after"].as_i64().unwrap();
        if page["records"] == json!([]) {
            if all_stored {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(seen.len(), total, "the follower missed records");
}
