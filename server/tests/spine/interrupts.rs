//! Ending a turn early (an interrupt, the deadline, a release) ends every process it started,
//! for every harness, within a second: commands that ignore SIGTERM, and one that escaped with
//! `setsid` and a double fork. Real bubblewrap sandboxes, the real runner, the real Codex and
//! Claude Code CLIs against mock model APIs. The sandbox's processes are visible from the host,
//! so the test looks for them in the host's `/proc` by markers on their command lines.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use centaur_test_support::anthropic::{CLAUDE_HELLO, MockMessages};
use centaur_test_support::events::{is_terminal, last_id, result_text};
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::model::{HELLO, MockModel, Reply};

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
async fn an_interrupt_spares_what_an_earlier_turns_server_starts_during_the_turn() {
    let stack = LocalStack::start("interrupt-server", 0, json!({})).await;
    let key = "api:interrupt-server";
    let m = markers(6);
    let (server, child, command) = (&m[0], &m[1], &m[2]);

    // Turn 1 leaves a server-like process running: it starts a `sleep` child (a backend, a
    // worker) whenever `fork-now` appears, with the duration written in it. Its own command
    // line ends in `sleep <server>` ($0 and $1 of the script) so it can be found like the rest.
    let end = stack
        .turn(
            key,
            "shell",
            &format!(
                "setsid sh -c 'while :; do if [ -e fork-now ]; then n=$(cat fork-now); rm -f fork-now; sleep $n & fi; sleep 0.05; done' sleep {server} >/dev/null 2>&1 & echo started"
            ),
        )
        .await;
    assert_eq!(result_text(&end), "started\n");
    until_all_alive(std::slice::from_ref(server)).await;
    let after = stack.server.last_event_id(key).await;

    // Turn 2 asks the server for a child, then runs until it is interrupted.
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": format!("echo {child} > fork-now; trap '' TERM; sleep {command}")}),
        )
        .await;
    let started = [child.clone(), command.clone()];
    tokio::select! {
        () = until_all_alive(&started) => {}
        events = stack.until(key, after, is_terminal) => {
            panic!("the turn ended before its processes ran: {events:#?}")
        }
    }
    interrupt_and_check(&stack, key, after, std::slice::from_ref(command)).await;
    // Well past the sweeps: the earlier turn's server and the child it started this turn live.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        alive(&[server.clone(), child.clone()]),
        [server.clone(), child.clone()],
        "the interrupt ended what an earlier turn's process started"
    );

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

/// The stubborn command every harness's model asks for.
fn stubborn_rule(m: &[String]) -> Vec<(&'static str, Reply)> {
    vec![(
        "stubborn",
        Reply::Command {
            cmd: stubborn(m),
            then: "The command ended.".into(),
        },
    )]
}

/// A turn of `harness` that runs the stubborn command, interrupted: its processes are gone
/// within a second, and the harness lives on: the thread's next turn gets `hello` in the same
/// sandbox.
async fn interrupted_harness_turn(stack: &LocalStack, harness: &str, m: &[String], hello: &str) {
    let key = format!("api:interrupt-{harness}");
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": harness, "message": "run the stubborn command"}),
        )
        .await;
    let after = interrupt_and_check(stack, &key, 0, m).await;
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "say hello"}),
        )
        .await;
    let events = stack.until(&key, after, is_terminal).await;
    assert_eq!(result_text(events.last().unwrap()), hello, "{events:#?}");
    assert_same_sandbox(&events);
}

#[tokio::test]
async fn an_interrupted_codex_turn_ends_the_commands_processes() {
    let m = markers(4);
    let model = MockModel::start(stubborn_rule(&m)).await;
    let stack = model.codex_stack("interrupt-codex", "never").await;
    interrupted_harness_turn(&stack, "codex", &m, HELLO).await;
}

#[tokio::test]
async fn an_interrupted_claude_code_turn_ends_the_commands_processes() {
    let m = markers(5);
    let model = MockMessages::start(stubborn_rule(&m)).await;
    let stack = model.claude_stack("interrupt-claude", "never").await;
    interrupted_harness_turn(&stack, "claude-code", &m, CLAUDE_HELLO).await;
}
