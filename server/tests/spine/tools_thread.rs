//! Tool calls from a sandbox, recorded in its thread: `tool.call.started` / `tool.call.finished`
//! with arguments, a result preview and the duration; approval-gated methods waiting for a
//! person (approved, denied, approved for the session, the policy `never`, no turn running, the
//! turn interrupted while waiting); files a call saves, downloadable by the thread only; tool
//! errors and bad arguments. The test plays the runner (its sandbox token) against a real tool
//! worker.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use centaur_test_support::server::{ADMIN_KEY, TestServer, enc, error_code};
use centaur_test_support::temp::temp_dir;
use centaur_test_support::tools::{ToolStack, pyproject, write_tool};

const WAIT: Duration = Duration::from_secs(30);

const CLIENT: &str = r#"
import threading

from centaur_tools import Tool, ToolError, context

_gate = threading.Event()


class Desk(Tool):
    def echo(self, text: str) -> dict:
        """Says it back."""
        return {"text": text}

    def big(self, n: int) -> str:
        """A long string."""
        return "é" * n

    def whoami(self) -> dict:
        """Who the call is for."""
        ctx = context()
        return {"thread": ctx.thread, "user": ctx.user}

    def post(self, channel: str, text: str) -> dict:
        """Posts (needs approval)."""
        return {"posted": text, "channel": channel}

    def save(self, name: str, content: str, mime: str) -> dict:
        """Saves a file to the thread."""
        context().attach(name, content.encode("utf-8"), mime)
        return {"saved": name}

    def fail(self, message: str) -> None:
        """Fails as the plugin means to."""
        raise ToolError(message)

    def slow(self) -> dict:
        """Runs until `release` is called."""
        _gate.wait(60)
        return {"done": _gate.is_set()}

    def release(self) -> None:
        """Lets `slow` return."""
        _gate.set()
"#;

/// A server with the `desk` tool (`post` needs approval), ready.
async fn desk(test: &str) -> ToolStack {
    let dir = temp_dir(test);
    let tools = dir.join("tools");
    write_tool(
        &tools,
        "desk",
        &pyproject("desk", "approval = [\"post\"]"),
        CLIENT,
    );
    let stack = ToolStack::start(&dir, vec![tools], |_| {}).await;
    stack.wait_ready("desk").await;
    stack
}

/// `POST /tools/desk/{method}` with a sandbox's token, answered within [`WAIT`].
async fn call(
    server: &TestServer,
    token: &str,
    method: &str,
    arguments: Value,
) -> (StatusCode, Value) {
    let path = format!("/tools/desk/{method}");
    let answer = server.call(Method::POST, &path, Some(token), Some(arguments));
    tokio::time::timeout(WAIT, answer).await.unwrap()
}

/// The thread's events so far, as their `data`.
async fn thread_events(server: &TestServer, key: &str) -> Vec<Value> {
    let last = server.last_event_id(key).await;
    server
        .events(key, "")
        .await
        .until_id(last, WAIT)
        .await
        .into_iter()
        .map(|f| f.data)
        .collect()
}

/// Waits until the thread has an event `pred` holds for; returns it.
async fn wait_event(server: &TestServer, key: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = thread_events(server, key).await.into_iter().find(&pred) {
            return found;
        }
        assert!(Instant::now() < deadline, "no such event in {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

/// The `tool.call.finished` of `call_id`: exactly one.
fn finished_of<'a>(events: &'a [Value], call_id: &str) -> &'a Value {
    let found: Vec<&Value> = of_type(events, "tool.call.finished")
        .into_iter()
        .filter(|e| e["call_id"] == call_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one tool.call.finished for {call_id}: {found:?}"
    );
    found[0]
}

/// A sandbox call that waits for approval, in a task.
fn call_in_background(
    server: &TestServer,
    token: &str,
    method: &'static str,
    arguments: Value,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let request = server
        .request(Method::POST, &format!("/tools/desk/{method}"), Some(token))
        .json(&arguments);
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    })
}

/// The answer of a call made with [`call_in_background`], once it comes (within [`WAIT`]).
async fn answer_of(call: tokio::task::JoinHandle<(StatusCode, Value)>) -> (StatusCode, Value) {
    tokio::time::timeout(WAIT, call).await.unwrap().unwrap()
}

/// The `approval.requested` of kind `tool` with this summary, once it is there.
async fn requested(server: &TestServer, key: &str, summary: &str) -> Value {
    wait_event(server, key, |e| {
        e["type"] == "approval.requested" && e["summary"] == summary
    })
    .await
}

async fn decide(
    server: &TestServer,
    key: &str,
    approval: &Value,
    body: Value,
) -> (StatusCode, Value) {
    let path = format!(
        "/agent/threads/{}/approvals/{}",
        enc(key),
        approval["approval_id"].as_str().unwrap()
    );
    server.admin(Method::POST, &path, body).await
}

#[tokio::test]
async fn a_sandbox_call_is_recorded_with_arguments_preview_and_duration() {
    let stack = desk("tools-thread-record").await;
    let server = &stack.server;
    let key = "api:tools-thread-record";
    let (runner, execution_id) = server.running_execution(key).await;

    let (status, answer) = call(server, &runner.token, "echo", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], json!({"text": "hi"}));
    let call_id = answer["call_id"].as_str().unwrap().to_owned();
    assert!(answer["duration_ms"].is_u64());

    let events = thread_events(server, key).await;
    let started: Vec<&Value> = of_type(&events, "tool.call.started");
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["call_id"], call_id.as_str());
    assert_eq!(started[0]["tool"], "desk");
    assert_eq!(started[0]["method"], "echo");
    assert_eq!(started[0]["arguments"], json!({"text": "hi"}));
    assert_eq!(started[0]["execution_id"], execution_id.to_string());
    let finished = finished_of(&events, &call_id);
    assert_eq!(finished["result"], json!({"text": "hi"}));
    assert!(finished.get("error").is_none(), "{finished}");
    assert!(finished["duration_ms"].is_u64(), "{finished}");
    assert_eq!(finished["execution_id"], execution_id.to_string());
    assert!(
        started[0]["event_id"].as_i64() < finished["event_id"].as_i64(),
        "started before finished"
    );

    // A large result: the agent gets all of it, the thread a preview.
    let (status, answer) = call(server, &runner.token, "big", json!({"n": 5000})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let full = answer["result"].as_str().unwrap();
    assert_eq!(full.chars().count(), 5000);
    let events = thread_events(server, key).await;
    let finished = finished_of(&events, answer["call_id"].as_str().unwrap());
    let preview = finished["result"].as_str().unwrap();
    assert!(preview.ends_with('…'), "{preview}");
    assert!(preview.len() <= 4096 + '…'.len_utf8(), "{}", preview.len());
    // The preview is the start of the result's JSON text, cut on a character boundary.
    let json_text = Value::String(full.to_owned()).to_string();
    assert!(json_text.starts_with(preview.trim_end_matches('…')));

    // The plugin's context: the calling thread; no person is recorded behind an API turn.
    let (status, answer) = call(server, &runner.token, "whoami", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], json!({"thread": key, "user": null}));
}

#[tokio::test]
async fn an_approval_gated_call_waits_for_a_person() {
    let stack = desk("tools-thread-approval").await;
    let server = &stack.server;
    let key = "api:tools-thread-approval";
    let (runner, execution_id) = server.running_execution(key).await;
    let token = runner.token.clone();

    // Approved: the call runs once the person says so.
    let waiting = call_in_background(
        server,
        &token,
        "post",
        json!({"channel": "C1", "text": "hi"}),
    );
    let approval = requested(server, key, r#"desk.post(channel="C1", text="hi")"#).await;
    assert_eq!(approval["kind"], "tool");
    assert_eq!(approval["execution_id"], execution_id.to_string());
    assert_eq!(
        approval["details"],
        json!({"tool": "desk", "method": "post", "arguments": {"channel": "C1", "text": "hi"}})
    );
    assert!(!waiting.is_finished(), "the call waits for the decision");
    let (status, body) = decide(server, key, &approval, json!({"decision": "approve"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, answer) = answer_of(waiting).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], json!({"posted": "hi", "channel": "C1"}));
    let events_now = thread_events(server, key).await;
    let finished = finished_of(&events_now, answer["call_id"].as_str().unwrap());
    assert_eq!(finished["result"], json!({"posted": "hi", "channel": "C1"}));

    // Denied with a reason: a 403 that says who and why, and the thread says the same.
    let waiting = call_in_background(
        server,
        &token,
        "post",
        json!({"channel": "C1", "text": "no"}),
    );
    let approval = requested(server, key, r#"desk.post(channel="C1", text="no")"#).await;
    let (status, body) = decide(
        server,
        key,
        &approval,
        json!({"decision": "deny", "reason": "not in that channel"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, answer) = answer_of(waiting).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(error_code(&answer), "tool_call_denied");
    assert_eq!(
        answer["error"]["message"],
        "admin denied the call: not in that channel"
    );
    let events_now = thread_events(server, key).await;
    let started = of_type(&events_now, "tool.call.started");
    let denied = started
        .iter()
        .find(|e| e["arguments"]["text"] == "no")
        .unwrap();
    let finished = finished_of(&events_now, denied["call_id"].as_str().unwrap());
    assert_eq!(
        finished["error"],
        "admin denied the call: not in that channel"
    );
    assert!(finished.get("result").is_none(), "{finished}");

    // Approved for the session: the same method runs again without asking, in this sandbox.
    let waiting = call_in_background(
        server,
        &token,
        "post",
        json!({"channel": "C2", "text": "a"}),
    );
    let approval = requested(server, key, r#"desk.post(channel="C2", text="a")"#).await;
    decide(
        server,
        key,
        &approval,
        json!({"decision": "approve_for_session"}),
    )
    .await;
    let (status, _) = answer_of(waiting).await;
    assert_eq!(status, StatusCode::OK);
    let asked_before = of_type(&thread_events(server, key).await, "approval.requested").len();
    let (status, answer) = call(
        server,
        &token,
        "post",
        json!({"channel": "C2", "text": "b"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        of_type(&thread_events(server, key).await, "approval.requested").len(),
        asked_before,
        "approved for the session: not asked again"
    );

    // With the turn over, this sandbox's session approval still holds.
    let mut runner = runner;
    let (status, body) = runner
        .post(
            execution_id,
            vec![],
            Some(json!({"status": "completed", "result_text": "done"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        server,
        &token,
        "post",
        json!({"channel": "C2", "text": "c"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // No turn running and a method that asks: an approval has nothing to belong to, so the
    // call is refused and nothing is recorded; a method without approval still runs, recorded
    // outside any execution.
    let idle = "api:tools-thread-approval-idle";
    let (_, idle_token) = server.spawn(idle).await;
    let (status, body) = call(
        server,
        &idle_token,
        "post",
        json!({"channel": "C1", "text": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "execution_not_started");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has none running"),
        "{body}"
    );
    assert!(of_type(&thread_events(server, idle).await, "tool.call.started").is_empty());
    let (status, body) = call(
        server,
        &idle_token,
        "echo",
        json!({"text": "between turns"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let idle_events = thread_events(server, idle).await;
    assert_eq!(of_type(&idle_events, "tool.call.started").len(), 1);
    let finished = finished_of(&idle_events, body["call_id"].as_str().unwrap());
    assert!(finished["execution_id"].is_null(), "{finished}");
}

#[tokio::test]
async fn the_policy_never_runs_gated_methods_without_asking() {
    let stack = desk("tools-thread-never").await;
    let server = &stack.server;
    let key = "api:tools-thread-never";
    let (_, token) = server.spawn(key).await;
    let accepted = server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "approval_policy": "never"}),
        )
        .await;
    let execution_id: uuid::Uuid = accepted["execution_id"].as_str().unwrap().parse().unwrap();
    let mut runner = server.runner(&token);
    assert_eq!(runner.must_claim(key).await, execution_id);
    let (status, answer) = call(
        server,
        &token,
        "post",
        json!({"channel": "C1", "text": "hi"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let events = thread_events(server, key).await;
    assert!(of_type(&events, "approval.requested").is_empty());
    finished_of(&events, answer["call_id"].as_str().unwrap());
}

#[tokio::test]
async fn an_interrupt_while_the_call_waits_ends_it_cleanly() {
    let stack = desk("tools-thread-interrupt").await;
    let server = &stack.server;
    let key = "api:tools-thread-interrupt";
    let (runner, _) = server.running_execution(key).await;

    let waiting = call_in_background(
        server,
        &runner.token,
        "post",
        json!({"channel": "C1", "text": "hi"}),
    );
    let approval = requested(server, key, r#"desk.post(channel="C1", text="hi")"#).await;
    server
        .post(
            &format!("/agent/threads/{}/interrupt", enc(key)),
            json!({"reason": "stop"}),
        )
        .await;
    let (status, answer) = answer_of(waiting).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(error_code(&answer), "approval_expired");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the method did not run"),
        "{answer}"
    );

    let events = thread_events(server, key).await;
    let started = of_type(&events, "tool.call.started");
    assert_eq!(started.len(), 1);
    let finished = finished_of(&events, started[0]["call_id"].as_str().unwrap());
    assert_eq!(
        finished["error"],
        "the turn ended while the call waited for approval; the method did not run"
    );
    let resolved = of_type(&events, "approval.resolved");
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["decision"], "cancelled");
    // In order: the approval cancelled, the call finished, then the turn's end.
    let cancelled = of_type(&events, "execution.cancelled");
    assert_eq!(cancelled.len(), 1);
    let id = |e: &Value| e["event_id"].as_i64().unwrap();
    assert!(id(resolved[0]) < id(finished) && id(finished) < id(cancelled[0]));
    // Nothing is left to decide.
    let (status, body) = decide(server, key, &approval, json!({"decision": "approve"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "approval_expired");
}

#[tokio::test]
async fn a_saved_file_is_listed_and_downloadable_by_its_thread_only() {
    let stack = desk("tools-thread-files").await;
    let server = &stack.server;
    let key = "api:tools-thread-files";
    let (runner, _) = server.running_execution(key).await;
    let content = "id,name\n1,Ann\n";
    let (status, answer) = call(
        server,
        &runner.token,
        "save",
        json!({"name": "../../out/report \"q1\".csv", "content": content, "mime": "text/csv"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let events = thread_events(server, key).await;
    let finished = finished_of(&events, answer["call_id"].as_str().unwrap());
    let files = finished["attachments"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{finished}");
    assert_eq!(files[0]["name"], "report \"q1\".csv");
    assert_eq!(files[0]["mime"], "text/csv");
    assert_eq!(files[0]["size"], content.len());
    let path = format!(
        "/agent/threads/{}/attachments/{}",
        enc(key),
        files[0]["attachment_id"].as_str().unwrap()
    );

    for token in [runner.token.as_str(), ADMIN_KEY] {
        let response = server
            .request(Method::GET, &path, Some(token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/csv");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(
            headers["content-disposition"],
            "attachment; filename=\"report _q1_.csv\"; filename*=UTF-8''report%20%22q1%22.csv"
        );
        assert_eq!(response.bytes().await.unwrap(), content.as_bytes());
    }

    // Another thread's sandbox may not read it; an unknown id is not found.
    let (_, other_token) = server.spawn("api:tools-thread-files-other").await;
    let (status, body) = server
        .call(Method::GET, &path, Some(&other_token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let unknown = format!(
        "/agent/threads/{}/attachments/{}",
        enc(key),
        uuid::Uuid::now_v7()
    );
    let (status, body) = server.admin(Method::GET, &unknown, Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn tool_errors_and_bad_arguments_from_a_sandbox() {
    let stack = desk("tools-thread-errors").await;
    let server = &stack.server;
    let key = "api:tools-thread-errors";
    let (runner, _) = server.running_execution(key).await;

    // The plugin's own error: answered 502 tool_failed with its message, and recorded.
    let (status, body) = call(
        server,
        &runner.token,
        "fail",
        json!({"message": "the repository is archived"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "tool_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("the repository is archived"), "{body}");
    let events_now = thread_events(server, key).await;
    let started = of_type(&events_now, "tool.call.started");
    assert_eq!(started.len(), 1);
    let finished = finished_of(&events_now, started[0]["call_id"].as_str().unwrap());
    assert_eq!(finished["error"], message);
    assert!(finished["duration_ms"].is_u64());

    // Bad arguments are refused before the call: 400 naming the argument, nothing recorded.
    let before = thread_events(server, key).await.len();
    let (status, body) = call(server, &runner.token, "echo", json!({"text": 5})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_arguments");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("argument \"text\""),
        "{body}"
    );
    let (status, body) = call(server, &runner.token, "echo", json!({"txt": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(server, &runner.token, "nope", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "tool_method_not_found");
    assert_eq!(
        thread_events(server, key).await.len(),
        before,
        "nothing recorded"
    );
}

#[tokio::test]
async fn a_turn_that_ends_while_the_method_runs_finishes_the_call_first() {
    let stack = desk("tools-thread-ends").await;
    let server = &stack.server;
    let key = "api:tools-thread-ends";
    let (runner, _) = server.running_execution(key).await;
    let running = call_in_background(server, &runner.token, "slow", json!({}));
    let started = wait_event(server, key, |e| e["type"] == "tool.call.started").await;
    server
        .post(
            &format!("/agent/threads/{}/interrupt", enc(key)),
            json!({"reason": "stop"}),
        )
        .await;
    // The method goes on; its answer still reaches the caller.
    let (status, body) = stack.call_tool("desk", "release", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, answer) = answer_of(running).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], json!({"done": true}));

    // The thread: the call finished by the turn's end, before it, and only once.
    let events = thread_events(server, key).await;
    let finished = finished_of(&events, started["call_id"].as_str().unwrap());
    assert_eq!(
        finished["error"],
        "the turn ended before the call finished; its result is not recorded"
    );
    let cancelled = of_type(&events, "execution.cancelled");
    assert_eq!(cancelled.len(), 1);
    assert!(finished["event_id"].as_i64() < cancelled[0]["event_id"].as_i64());
}

/// A call a crash cut short (its row left open by an earlier process of the same replica) is
/// finished when the replica starts again. The open call is written by hand: a crash cannot be
/// staged in this process (the server's shutdown is always graceful here).
#[tokio::test]
async fn a_call_cut_short_by_a_restart_is_finished_at_the_next_start() {
    let replica = format!("tools-thread-restart-{}", uuid::Uuid::new_v4().simple());
    let mut config = centaur_server::Config::new(centaur_test_support::pg::fresh_database().await);
    config.replica_id = Some(replica.clone());
    let mut first = TestServer::start_with(config, true).await;
    let database_url = first.database_url.clone();
    let key = "api:tools-thread-restart";
    let (sandbox_id, _) = first.spawn(key).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url)
        .await
        .unwrap();
    let call_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tool_calls (id, thread_id, sandbox_id, tool, method, replica, incarnation) \
         SELECT $1, id, $2, 'desk', 'echo', $3, $4 FROM threads WHERE thread_key = $5",
    )
    .bind(call_id)
    .bind(sandbox_id)
    .bind(&replica)
    .bind(uuid::Uuid::new_v4())
    .bind(key)
    .execute(&mut conn)
    .await
    .unwrap();
    first.shutdown().await;

    let mut config = centaur_server::Config::new(&database_url);
    config.replica_id = Some(replica);
    let second = TestServer::start_with(config, true).await;
    let finished = wait_event(&second, key, |e| e["type"] == "tool.call.finished").await;
    assert_eq!(finished["call_id"], call_id.to_string());
    assert_eq!(finished["error"], "the server restarted during the call");
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM tool_calls WHERE finished_at IS NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(open, 0);
}
