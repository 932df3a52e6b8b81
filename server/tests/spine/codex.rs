//! The real Codex CLI (`@openai/codex` from npm) in a real sandbox, driven by the runner through
//! `codex app-server`, against a scripted mock of the OpenAI Responses API that it reaches only
//! through the egress proxy, which swaps the sandbox's placeholder for the real key.

use std::time::Duration;

use serde_json::json;

use centaur_test_support::events::{is_terminal, last_id};
use centaur_test_support::model::{MockModel, Reply};
use centaur_test_support::proxy::REAL_OPENAI_KEY;

/// "run" asks for a command that leaves a file behind; "wait" never finishes.
async fn scripted_model() -> MockModel {
    MockModel::start(vec![
        (
            "run",
            Reply::Command {
                cmd: "echo approved > /workspace/approved.txt".into(),
                then: "The command ran; I am done.".into(),
            },
        ),
        ("wait", Reply::Hang),
    ])
    .await
}

#[tokio::test]
async fn codex_turns_with_text_approvals_and_an_interrupt() {
    let model = scripted_model().await;
    let seen = model.seen.clone();
    let stack = model.codex_stack("codex", "always").await;
    let key = "api:codex";

    // A turn with text.
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "codex", "message": "say hello"}),
        )
        .await;
    let events = stack.until(key, 0, is_terminal).await;
    let end = events.last().unwrap();
    assert_eq!(end["type"], "execution.completed", "{events:#?}");
    assert_eq!(end["result_text"], "Hello from the mock model");
    assert!(
        events.iter().any(|e| e["type"] == "agent.message.delta"),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "usage" && e["input_tokens"] == 42),
        "{events:#?}"
    );
    {
        let seen = seen.lock().unwrap();
        assert!(!seen.authorizations.is_empty());
        assert!(
            seen.authorizations
                .iter()
                .all(|a| a == &format!("Bearer {REAL_OPENAI_KEY}")),
            "the model only ever saw the real key, swapped in by the proxy: {:?}",
            seen.authorizations
        );
    }
    let mut after = last_id(&events);

    // A command that needs approval: approved, it runs.
    let approved_file = stack.only_workspace().join("approved.txt");
    for (decision, runs) in [("approve", true), ("deny", false)] {
        let _ = std::fs::remove_file(&approved_file);
        stack
            .server
            .post(
                "/agent/execute",
                json!({"thread_key": key, "message": "run the command"}),
            )
            .await;
        let events = stack
            .until(key, after, |e| e["type"] == "approval.requested")
            .await;
        let request = events.last().unwrap();
        assert_eq!(request["kind"], "command", "{request}");
        assert!(
            request["summary"]
                .as_str()
                .unwrap()
                .contains("echo approved"),
            "{request}"
        );
        let approval_id = request["approval_id"].as_str().unwrap();
        stack.server.decide(key, approval_id, decision).await;
        let events = stack.until(key, last_id(&events), is_terminal).await;
        let end = events.last().unwrap();
        assert_eq!(
            end["type"], "execution.completed",
            "{decision}: {events:#?}"
        );
        assert_eq!(approved_file.exists(), runs, "{decision}: {events:#?}");
        if runs {
            assert!(
                events
                    .iter()
                    .any(|e| e["type"] == "command.finished" && e["exit_code"] == 0),
                "{events:#?}"
            );
        }
        after = last_id(&events);
    }

    // An interrupted turn.
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "wait for me"}),
        )
        .await;
    let events = stack
        .until(key, after, |e| e["type"] == "execution.started")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack
        .server
        .post(&format!("/agent/threads/{key}/interrupt"), json!({}))
        .await;
    let events = stack.until(key, last_id(&events), is_terminal).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "execution.cancelled",
        "{events:#?}"
    );
}

/// The events of one execution: from after `after` to its terminal event.
async fn turn_events(
    stack: &centaur_test_support::local_stack::LocalStack,
    key: &str,
    after: i64,
    message: &str,
) -> Vec<serde_json::Value> {
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "codex", "message": message}),
        )
        .await;
    stack.until(key, after, is_terminal).await
}

/// The `command.*` events of `events`, as (type, command_id, chunk or exit code).
fn command_events(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .unwrap_or_default()
                .starts_with("command.")
        })
        .collect()
}

/// What a command's `command.output` events say, joined in the order they arrived.
fn streamed_output(events: &[serde_json::Value], command_id: &str) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "command.output" && e["command_id"] == command_id)
        .map(|e| e["chunk"].as_str().unwrap())
        .collect()
}

/// A command's output reaches the thread whole, once and in order, between its
/// `command.started` and its `command.finished`: for a command that prints over seconds and
/// for one that prints at once. A command turn's `usage` is the total of its two model calls.
#[tokio::test]
async fn codex_command_output_arrives_whole_once_and_in_order() {
    let model = MockModel::start(vec![
        (
            "slow",
            Reply::Command {
                cmd: "for i in 1 2 3; do echo line$i; sleep 1; done".into(),
                then: "Counted.".into(),
            },
        ),
        (
            "fast",
            Reply::Command {
                cmd: "echo fast1; echo fast2".into(),
                then: "Said it.".into(),
            },
        ),
    ])
    .await;
    let stack = model.codex_stack("codex-output", "never").await;
    let key = "api:codex-output";
    let mut after = 0;
    for (message, expected) in [
        ("count slowly", "line1\nline2\nline3\n"),
        ("be fast", "fast1\nfast2\n"),
    ] {
        let events = turn_events(&stack, key, after, message).await;
        assert_eq!(
            events.last().unwrap()["type"],
            "execution.completed",
            "{events:#?}"
        );
        let commands = command_events(&events);
        let started: Vec<_> = commands
            .iter()
            .filter(|e| e["type"] == "command.started")
            .collect();
        assert_eq!(started.len(), 1, "{commands:#?}");
        let command_id = started[0]["command_id"].as_str().unwrap();
        assert_eq!(
            streamed_output(&events, command_id),
            expected,
            "{message}: {commands:#?}"
        );
        // started, the output, finished: in that order, nothing after.
        assert_eq!(commands.first().unwrap()["type"], "command.started");
        let last = commands.last().unwrap();
        assert_eq!(last["type"], "command.finished", "{commands:#?}");
        assert_eq!(last["exit_code"], 0, "{commands:#?}");
        assert_eq!(
            commands
                .iter()
                .filter(|e| e["type"] == "command.finished")
                .count(),
            1,
            "{commands:#?}"
        );
        // The model got the same output back.
        assert!(
            model
                .seen
                .lock()
                .unwrap()
                .outputs
                .last()
                .unwrap()
                .contains(expected),
            "{:?}",
            model.seen.lock().unwrap().outputs
        );
        // Two model calls of 42 input and 7 output tokens each: one `usage` with the total.
        let usage: Vec<_> = events.iter().filter(|e| e["type"] == "usage").collect();
        assert_eq!(usage.len(), 1, "{events:#?}");
        assert_eq!(
            (&usage[0]["input_tokens"], &usage[0]["output_tokens"]),
            (&json!(84), &json!(14)),
            "{usage:#?}"
        );
        after = last_id(&events);
    }
}

/// With policy `always`, a command waits for its approval before anything says it started; a
/// denied command never starts: the thread records the request and its denial, and no
/// `command.*` event. An approved one starts after its approval and runs.
#[tokio::test]
async fn codex_asks_before_a_command_starts_and_a_denied_one_never_starts() {
    let model = scripted_model().await;
    let stack = model.codex_stack("codex-approval", "always").await;
    let key = "api:codex-approval";
    let approved_file = || stack.only_workspace().join("approved.txt");
    let mut after = 0;
    for decision in ["deny", "approve"] {
        stack
            .server
            .post(
                "/agent/execute",
                json!({"thread_key": key, "harness": "codex", "message": "run the command"}),
            )
            .await;
        let asked = stack
            .until(key, after, |e| e["type"] == "approval.requested")
            .await;
        assert!(
            command_events(&asked).is_empty(),
            "a command waiting for approval has not started: {asked:#?}"
        );
        let request = asked.last().unwrap();
        let approval_id = request["approval_id"].as_str().unwrap();
        stack.server.decide(key, approval_id, decision).await;
        let events = stack.until(key, last_id(&asked), is_terminal).await;
        assert_eq!(
            events.last().unwrap()["type"],
            "execution.completed",
            "{decision}: {events:#?}"
        );
        let resolved = events
            .iter()
            .position(|e| e["type"] == "approval.resolved")
            .unwrap_or_else(|| panic!("{events:#?}"));
        assert_eq!(events[resolved]["decision"], decision);
        let commands = command_events(&events);
        if decision == "deny" {
            assert!(
                command_events(&events).is_empty(),
                "a denied command never started: {events:#?}"
            );
            assert!(!approved_file().exists());
        } else {
            let started = events
                .iter()
                .position(|e| e["type"] == "command.started")
                .unwrap_or_else(|| panic!("{events:#?}"));
            assert!(
                resolved < started,
                "started after its approval: {events:#?}"
            );
            assert_eq!(commands.len(), 2, "{commands:#?}");
            assert_eq!(commands[1]["type"], "command.finished");
            assert_eq!(commands[1]["exit_code"], 0);
            assert!(approved_file().exists());
        }
        after = last_id(&events);
    }
}

/// The policy given with a turn reaches the app-server that already runs: under `never` a
/// command runs without asking; the next turn, sent with `always` to the same sandbox, asks
/// before its command starts, and a denied one never does.
#[tokio::test]
async fn codex_takes_a_policy_given_with_a_later_turn() {
    let model = scripted_model().await;
    let stack = model.codex_stack("codex-policy-switch", "never").await;
    let key = "api:codex-policy-switch";

    let events = turn_events(&stack, key, 0, "run the command").await;
    let approved_file = stack.only_workspace().join("approved.txt");
    assert_eq!(
        events.last().unwrap()["type"],
        "execution.completed",
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "approval.requested"),
        "never asks: {events:#?}"
    );
    assert_eq!(command_events(&events).len(), 2, "{events:#?}");
    assert!(approved_file.exists());
    std::fs::remove_file(&approved_file).unwrap();
    let sandbox = sandbox_of(&stack, key).await;
    assert!(sandbox.is_string(), "{sandbox}");

    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "approval_policy": "always", "message": "run the command"}),
        )
        .await;
    let asked = stack
        .until(key, last_id(&events), |e| e["type"] == "approval.requested")
        .await;
    assert!(command_events(&asked).is_empty(), "{asked:#?}");
    let approval_id = asked.last().unwrap()["approval_id"].as_str().unwrap();
    stack.server.decide(key, approval_id, "deny").await;
    let events = stack.until(key, last_id(&asked), is_terminal).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "execution.completed",
        "{events:#?}"
    );
    assert!(command_events(&events).is_empty(), "{events:#?}");
    assert!(!approved_file.exists());
    assert_eq!(sandbox_of(&stack, key).await, sandbox, "the same sandbox");
}

/// The id of the thread's sandbox, from its detail.
async fn sandbox_of(
    stack: &centaur_test_support::local_stack::LocalStack,
    key: &str,
) -> serde_json::Value {
    let path = format!("/agent/threads/{}", centaur_test_support::server::enc(key));
    let (_, detail) = stack
        .server
        .admin(reqwest::Method::GET, &path, serde_json::Value::Null)
        .await;
    detail["sandbox"]["sandbox_id"].clone()
}

/// Everything the egress proxy of this process logs to its audit target, captured (the test
/// runtime runs the proxy's tasks on the test's own thread).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Codex makes no requests of its own besides the model's (plugin syncs, update checks,
/// telemetry): no request of a turn is refused, none reaches the thread as `egress.denied`,
/// even when the user's `codex.toml` turns plugins and analytics on.
#[tokio::test]
async fn codex_turns_make_no_background_requests() {
    let captured = Captured::default();
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .with_env_filter("centaur_proxy::audit=info")
            .finish(),
    );
    let model = scripted_model().await;
    let config_text = format!(
        "{}\n[features]\nplugins = true\n\n[analytics]\nenabled = true\n",
        model.codex_config()
    );
    let stack = centaur_test_support::local_stack::LocalStack::start_with(
        "codex-quiet",
        0,
        model.policy(),
        |config, dir| {
            std::fs::write(dir.join("codex.toml"), config_text).unwrap();
            config.codex_config = Some(dir.join("codex.toml"));
            config.harness_dir = Some(centaur_test_support::npm::codex_dir());
            config.approval_policy = "never".parse().unwrap();
        },
    )
    .await;
    let key = "api:codex-quiet";
    let events = turn_events(&stack, key, 0, "say hello").await;
    assert_eq!(events.last().unwrap()["type"], "execution.completed");
    let events = turn_events(&stack, key, last_id(&events), "run the command").await;
    assert_eq!(
        events.last().unwrap()["type"],
        "execution.completed",
        "{events:#?}"
    );
    // Codex's background requests start with it; the audit is reported within a fraction of
    // a second.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // What the proxy audited: its log here, or the server's table if the proxy reports there.
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let mut records: Vec<(String, String)> = logged
        .lines()
        .filter(|l| l.contains("centaur_proxy::audit"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("host"), field("decision").to_lowercase())
        })
        .collect();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&stack.server.database_url)
        .await
        .unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT host, decision FROM egress_audit ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    records.extend(rows);
    assert!(
        records.iter().any(|(host, _)| host == "127.0.0.1"),
        "the model's requests are audited: {records:?}\n{logged}"
    );
    assert!(
        records
            .iter()
            .all(|(host, decision)| host == "127.0.0.1" && decision == "allowed"),
        "only the model was asked, and allowed: {records:?}"
    );
    let newest = stack.server.last_event_id(key).await;
    let all = stack
        .until(key, 0, |e| e["event_id"] == json!(newest))
        .await;
    assert!(all.iter().all(|e| e["type"] != "egress.denied"), "{all:#?}");
}

/// An interrupt while Codex runs a command: the execution is cancelled at once (the server
/// ends it; the runner interrupts Codex's turn, and Codex reports it interrupted), nothing of
/// the execution follows its terminal event, and the thread's next turn works.
#[tokio::test]
async fn codex_interrupt_during_a_command_cancels_the_turn() {
    let model = MockModel::start(vec![(
        "sleep",
        Reply::Command {
            cmd: "echo started; sleep 30; echo never".into(),
            then: "Slept.".into(),
        },
    )])
    .await;
    let stack = model.codex_stack("codex-interrupt", "never").await;
    let key = "api:codex-interrupt";
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "codex", "message": "sleep a while"}),
        )
        .await;
    let started = stack
        .until(key, 0, |e| e["type"] == "command.started")
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let interrupted_at = std::time::Instant::now();
    stack
        .server
        .post(&format!("/agent/threads/{key}/interrupt"), json!({}))
        .await;
    let events = stack.until(key, last_id(&started), is_terminal).await;
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(5),
        "{events:#?}"
    );
    let end = events.last().unwrap();
    assert_eq!(end["type"], "execution.cancelled", "{events:#?}");

    // The next turn: Codex is still there, and nothing of the interrupted one comes after
    // its end.
    let next = turn_events(&stack, key, last_id(&events), "say hello").await;
    assert_eq!(
        next.last().unwrap()["result_text"],
        centaur_test_support::model::HELLO,
        "{next:#?}"
    );
    assert!(
        next.iter()
            .all(|e| e["execution_id"] != end["execution_id"]),
        "{next:#?}"
    );
}
