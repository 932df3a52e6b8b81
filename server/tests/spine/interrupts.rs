//! Ending a turn early (an interrupt, the deadline, a release) ends every process it started,
//! for every harness, within a second: commands that ignore SIGTERM, and one that escaped with
//! `setsid` and a double fork. Real bubblewrap sandboxes, the real runner, the real Codex and
//! Claude Code CLIs against mock model APIs. The sandbox's processes are visible from the host,
//! so the test looks for them in the host's `/proc` by markers on their command lines.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use centaur_test_support::events::{is_terminal, last_id, result_text};
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::model::{HELLO, MockModel, Reply};
use centaur_test_support::npm::claude_dir;
use centaur_test_support::proxy::REAL_ANTHROPIC_KEY;

/// How long after the turn ends its processes may still be seen.
const WITHIN: Duration = Duration::from_secs(1);

/// Three markers, unique to this test (`test`) and this test process.
fn markers(test: u32) -> Vec<String> {
    (1..=3)
        .map(|i| format!("617{test}{i}{:07}", std::process::id()))
        .collect()
}

/// A command that leaves three sleeps that ignore SIGTERM: one in the background, one escaped
/// with `setsid` and a double fork (its parent is gone at once), one in the foreground.
fn stubborn(m: &[String]) -> String {
    format!(
        "sh -c 'trap \"\" TERM; sleep {}' >/dev/null 2>&1 & setsid sh -c '(trap \"\" TERM; exec sleep {}) >/dev/null 2>&1 & exit 0'; trap \"\" TERM; sleep {}",
        m[0], m[1], m[2]
    )
}

/// The markers some live process on the machine has on its command line (`sleep <marker>`).
fn alive(markers: &[String]) -> Vec<String> {
    let cmdlines: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        })
        .collect();
    markers
        .iter()
        .filter(|m| {
            let sleep = format!("sleep {m}");
            cmdlines.iter().any(|c| c.contains(&sleep))
        })
        .cloned()
        .collect()
}

async fn until_all_alive(markers: &[String]) {
    let by = Instant::now() + Duration::from_secs(90);
    while alive(markers).len() < markers.len() {
        assert!(
            Instant::now() < by,
            "the command's processes never all ran: {:?} of {markers:?}",
            alive(markers)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long after `since` the last of the markers' processes was gone (at most 5 s of
/// looking).
async fn gone_after(markers: &[String], since: Instant) -> Duration {
    let by = Instant::now() + Duration::from_secs(5);
    loop {
        let left = alive(markers);
        if left.is_empty() {
            return since.elapsed();
        }
        assert!(
            Instant::now() < by,
            "still running 5 s after the turn ended: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Interrupts the running turn of `key` once its processes run; asserts they are all gone
/// within a second and the turn ends cancelled. Returns the last event id.
async fn interrupt_and_check(stack: &LocalStack, key: &str, after: i64, m: &[String]) -> i64 {
    tokio::select! {
        () = until_all_alive(m) => {}
        events = stack.until(key, after, is_terminal) => {
            panic!("the turn ended before its command ran: {events:#?}")
        }
    }
    let interrupted = Instant::now();
    stack
        .server
        .post(&format!("/agent/threads/{key}/interrupt"), json!({}))
        .await;
    let took = gone_after(m, interrupted).await;
    assert!(
        took < WITHIN,
        "the turn's processes outlived the interrupt by {took:?}"
    );
    let events = stack.until(key, after, is_terminal).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "execution.cancelled",
        "{events:#?}"
    );
    last_id(&events)
}

/// The harness process outlived the interrupt: the next turn ran in the same sandbox (a harness
/// that died would have had its sandbox replaced, and the conversation resumed in a new one).
fn assert_same_sandbox(events: &[Value]) {
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "sandbox.released" || e["type"] == "sandbox.assigned"),
        "the sandbox was replaced: {events:#?}"
    );
}

#[tokio::test]
async fn an_interrupted_shell_turn_ends_its_processes_and_spares_what_earlier_turns_left() {
    let stack = LocalStack::start("interrupt-shell", 0, json!({})).await;
    let key = "api:interrupt-shell";
    let m = markers(1);
    let server_marker = format!("617{}{:07}", 19, std::process::id());

    // A turn that ends by itself leaves what it started running, detached or not.
    let end = stack
        .turn(
            key,
            "shell",
            &format!("setsid sleep {server_marker} >/dev/null 2>&1 & echo started"),
        )
        .await;
    assert_eq!(result_text(&end), "started\n");
    let kept = std::slice::from_ref(&server_marker);
    until_all_alive(kept).await;
    let after = stack.server.last_event_id(key).await;

    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": stubborn(&m)}),
        )
        .await;
    interrupt_and_check(&stack, key, after, &m).await;
    assert_eq!(alive(kept), kept, "an earlier turn's process was ended");

    let end = stack.turn(key, "shell", "echo next").await;
    assert_eq!(result_text(&end), "next\n");
}

#[tokio::test]
async fn a_shell_turn_past_its_deadline_ends_its_processes() {
    let stack = LocalStack::start("deadline-shell", 0, json!({})).await;
    let key = "api:deadline-shell";
    let m = markers(2);
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "shell", "message": stubborn(&m), "max_duration_ms": 6000}),
        )
        .await;
    until_all_alive(&m).await;
    let events = stack.until(key, 0, is_terminal).await;
    let failed_seen = Instant::now();
    let end = events.last().unwrap();
    assert_eq!(end["type"], "execution.failed", "{events:#?}");
    assert!(
        end["error"].as_str().unwrap().contains("max_duration_ms"),
        "{end}"
    );
    let took = gone_after(&m, failed_seen).await;
    assert!(
        took < WITHIN,
        "the turn's processes outlived the deadline by {took:?}"
    );

    let end = stack.turn(key, "shell", "echo next").await;
    assert_eq!(result_text(&end), "next\n");
}

#[tokio::test]
async fn releasing_a_sandbox_mid_turn_ends_its_processes() {
    let stack = LocalStack::start("release-shell", 0, json!({})).await;
    let key = "api:release-shell";
    let m = markers(3);
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "shell", "message": stubborn(&m)}),
        )
        .await;
    until_all_alive(&m).await;
    let released = Instant::now();
    let answer = stack
        .server
        .post(&format!("/agent/threads/{key}/release"), json!(null))
        .await;
    assert_eq!(answer["released"], true, "{answer}");
    let took = gone_after(&m, released).await;
    assert!(
        took < WITHIN,
        "the turn's processes outlived the release by {took:?}"
    );
    let events = stack.until(key, 0, is_terminal).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "execution.cancelled",
        "{events:#?}"
    );

    // The thread goes on in a new sandbox.
    let end = stack.turn(key, "shell", "echo next").await;
    assert_eq!(result_text(&end), "next\n");
}

#[tokio::test]
async fn an_interrupted_codex_turn_ends_the_commands_processes() {
    let m = markers(4);
    let model = MockModel::start(vec![(
        "stubborn",
        Reply::Command {
            cmd: stubborn(&m),
            then: "The command ended.".into(),
        },
    )])
    .await;
    let stack = model.codex_stack("interrupt-codex", "never").await;
    let key = "api:interrupt-codex";
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "codex", "message": "run the stubborn command"}),
        )
        .await;
    let after = interrupt_and_check(&stack, key, 0, &m).await;

    // codex app-server lives on: the thread's next turn works in the same sandbox.
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "say hello"}),
        )
        .await;
    let events = stack.until(key, after, is_terminal).await;
    assert_eq!(result_text(events.last().unwrap()), HELLO, "{events:#?}");
    assert_same_sandbox(&events);
}

#[tokio::test]
async fn an_interrupted_claude_code_turn_ends_the_commands_processes() {
    let m = markers(5);
    let port = mock_messages_api(stubborn(&m)).await;
    let host = format!("127.0.0.1:{port}");
    let policy = json!({
        "allow": [host], "allow_private": [host],
        "secrets": [{"name": "ANTHROPIC_API_KEY", "hosts": [host], "headers": ["x-api-key"]}],
    });
    let stack = LocalStack::start_with("interrupt-claude", 0, policy, |config, _| {
        config.harness_dir = Some(claude_dir());
        config.harness_env = vec![
            ("ANTHROPIC_BASE_URL".into(), format!("http://{host}")),
            (
                "CENTAUR_CLAUDE_BIN".into(),
                "/opt/centaur/harness/claude".into(),
            ),
        ];
        config.approval_policy = "never".parse().unwrap();
    })
    .await;
    let key = "api:interrupt-claude";
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "claude-code", "message": "run the stubborn command"}),
        )
        .await;
    let after = interrupt_and_check(&stack, key, 0, &m).await;

    // claude lives on: the thread's next turn works in the same sandbox.
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "say hello"}),
        )
        .await;
    let events = stack.until(key, after, is_terminal).await;
    assert_eq!(
        result_text(events.last().unwrap()),
        CLAUDE_HELLO,
        "{events:#?}"
    );
    assert_same_sandbox(&events);
}

const CLAUDE_HELLO: &str = "Hello from the mock Claude";

fn sse(events: &[Value]) -> Response {
    let body: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}

/// A mock of the Messages API: a conversation that asks for "stubborn" (and not yet to "say
/// hello") gets a `Bash` tool call running `command`; anything else (a tool result included)
/// gets text.
async fn mock_messages_api(command: String) -> u16 {
    let app = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let command = command.clone();
            async move { messages(&command, &headers, &body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn messages(command: &str, headers: &HeaderMap, body: &str) -> Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if key != REAL_ANTHROPIC_KEY {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from(r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#))
            .unwrap();
    }
    let request: Value = serde_json::from_str(body).unwrap_or_default();
    if request["stream"] != json!(true) {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(json!({"id": "msg_0", "type": "message", "role": "assistant", "model": "claude-mock",
                "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}).to_string()))
            .unwrap();
    }
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    let tool_result = last["content"]
        .as_array()
        .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
    let start = |id: &str| {
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": "claude-mock",
               "content": [], "stop_reason": null, "usage": {"input_tokens": 30, "output_tokens": 1}}})
    };
    let end = |stop: &str| {
        [
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ]
    };
    // Claude Code puts reminders of its own after the user's words: look at the whole
    // conversation (whose next turn says hello).
    let said = request["messages"].to_string();
    if !tool_result && said.contains("stubborn") && !said.contains("say hello") {
        let input = json!({"command": command, "description": "run it"}).to_string();
        let mut events = vec![
            start("msg_tool"),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input}}),
            json!({"type": "content_block_stop", "index": 0}),
        ];
        events.extend(end("tool_use"));
        return sse(&events);
    }
    // After an interrupt Claude Code sends the cancelled call's result with the next words.
    let text = if tool_result && !said.contains("say hello") {
        "The command ended."
    } else {
        CLAUDE_HELLO
    };
    let mut events = vec![
        start("msg_text"),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    events.extend(end("end_turn"));
    sse(&events)
}
