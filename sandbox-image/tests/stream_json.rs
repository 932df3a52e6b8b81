//! The stream-json harnesses (Amp, Claude Code's format) against scripted CLIs that replay a
//! transcript: what the runner makes of it, resuming, and a CLI that prints garbage.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use centaur_protocol::runner::{ApprovalPolicy, Finish, InputMessage};
use centaur_protocol::{EventBody, Harness as Kind, Role};
use centaur_runner::harness;
use centaur_runner::turn::{Approvals, Sandbox, Steering, Turn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A fake CLI: logs its arguments, then for each user message on stdin prints `transcript`.
fn fake_cli(dir: &Path, transcript: &Path) -> PathBuf {
    let script = dir.join("amp");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {dir}/args\nwhile read -r line; do\n  case \"$line\" in *'\"type\":\"user\"'*) cat {transcript};; *) echo \"unexpected: $line\" >&2; exit 9;; esac\ndone\n",
            dir = dir.display(),
            transcript = transcript.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

fn sandbox(dir: &Path, cli: &Path) -> Sandbox {
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    Sandbox {
        workspace,
        env: BTreeMap::from([
            ("CENTAUR_AMP_BIN".to_owned(), cli.display().to_string()),
            ("PATH".to_owned(), std::env::var("PATH").unwrap()),
        ]),
        approval_policy: ApprovalPolicy::Never,
    }
}

async fn run_turn(
    harness: &mut Box<dyn harness::Harness>,
    sandbox: &Sandbox,
    text: &str,
) -> (Finish, Vec<EventBody>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_steer, steering) = mpsc::unbounded_channel();
    let input = vec![InputMessage {
        message_id: Uuid::now_v7(),
        role: Role::User,
        text: text.into(),
    }];
    let mut turn = Turn::new(
        Uuid::now_v7(),
        input,
        sandbox.clone(),
        tx,
        Arc::new(Approvals::default()),
        Steering::unrecorded(steering),
        CancellationToken::new(),
    );
    let finish = tokio::time::timeout(std::time::Duration::from_secs(20), harness.turn(&mut turn))
        .await
        .expect("the turn ends");
    drop(turn);
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        events.push(event);
    }
    (finish, events)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("centaur-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn an_amp_transcript_becomes_centaur_events_and_the_thread_is_continued() {
    let dir = temp_dir("amp");
    let transcript =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amp-turn.jsonl");
    let cli = fake_cli(&dir, &transcript);
    let sandbox = sandbox(&dir, &cli);
    let mut amp = harness::for_kind(Kind::Amp, &sandbox);

    let (finish, events) = run_turn(&mut amp, &sandbox, "run the tests").await;
    assert_eq!(
        finish,
        Finish::Completed {
            result_text: "All 3 tests pass.".into()
        }
    );
    let expected = vec![
        EventBody::AgentReasoning {
            text: "The user wants the tests run; I will run them.".into(),
        },
        EventBody::AgentMessageDelta {
            text: "Running the tests.".into(),
        },
        EventBody::AgentMessage {
            text: "Running the tests.".into(),
        },
        EventBody::CommandStarted {
            command_id: "toolu_01A".into(),
            command: "cargo test".into(),
        },
        EventBody::CommandOutput {
            command_id: "toolu_01A".into(),
            chunk: "test result: ok. 3 passed".into(),
            at: None,
        },
        EventBody::CommandFinished {
            command_id: "toolu_01A".into(),
            exit_code: Some(0),
        },
        EventBody::ToolCallStarted {
            call_id: "toolu_01B".into(),
            tool: "harness".into(),
            method: "edit_file".into(),
            arguments: serde_json::json!({"path": "/workspace/NOTES.md", "old_str": "", "new_str": "all green"}),
        },
        EventBody::ToolCallFinished {
            call_id: "toolu_01B".into(),
            tool: "harness".into(),
            method: "edit_file".into(),
            result: Some(serde_json::json!("edited")),
            error: None,
            duration_ms: None,
            attachments: Vec::new(),
        },
        EventBody::AgentMessageDelta {
            text: "All 3 tests pass.".into(),
        },
        EventBody::AgentMessage {
            text: "All 3 tests pass.".into(),
        },
        EventBody::Usage {
            input_tokens: 3409,
            output_tokens: 76,
        },
    ];
    assert_eq!(events, expected);

    // The same process takes the next turn.
    let (finish, _) = run_turn(&mut amp, &sandbox, "again").await;
    assert!(matches!(finish, Finish::Completed { .. }));
    let args = std::fs::read_to_string(dir.join("args")).unwrap();
    assert_eq!(
        args.lines().count(),
        1,
        "one process for both turns: {args}"
    );
    assert!(args.starts_with("--execute --stream-json"), "{args}");

    // A new sandbox on the same workspace continues the Amp thread.
    drop(amp);
    let mut amp = harness::for_kind(Kind::Amp, &sandbox);
    run_turn(&mut amp, &sandbox, "and now?").await;
    let args = std::fs::read_to_string(dir.join("args")).unwrap();
    let last = args.lines().last().unwrap();
    assert!(
        last.starts_with("threads continue T-5f6a1b2c-3d4e-4f50-9a8b-7c6d5e4f3a21 --execute"),
        "{last}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_cli_that_prints_garbage_fails_the_turn_and_breaks_the_harness() {
    let dir = temp_dir("garbage");
    let transcript = dir.join("garbage.jsonl");
    std::fs::write(
        &transcript,
        "{\"type\":\"system\",\"subtype\":\"init\"}\nSegmentation fault (core dumped)\n",
    )
    .unwrap();
    let cli = fake_cli(&dir, &transcript);
    let sandbox = sandbox(&dir, &cli);
    let mut amp = harness::for_kind(Kind::Amp, &sandbox);
    let (finish, _) = run_turn(&mut amp, &sandbox, "hello").await;
    match finish {
        Finish::Failed { error, .. } => {
            assert!(
                error.contains("not stream-json: Segmentation fault"),
                "{error}"
            );
            assert!(error.contains("replaced"), "{error}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(amp.broken());

    // A CLI that exits mid-turn says so, too.
    std::fs::write(&transcript, "{\"type\":\"system\",\"subtype\":\"init\"}\n").unwrap();
    std::fs::write(
        &cli,
        format!("#!/bin/sh\nread -r line\ncat {}\n", transcript.display()),
    )
    .unwrap();
    let mut amp = harness::for_kind(Kind::Amp, &sandbox);
    let (finish, _) = run_turn(&mut amp, &sandbox, "hello").await;
    assert!(
        matches!(&finish, Finish::Failed { error, .. } if error.contains("exited in the middle of a turn")),
        "{finish:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether the process `pid` still runs (a zombie does not).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z')
    })
}

/// Waits up to five seconds for `what` to hold.
async fn eventually(what: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if what() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    what()
}

/// Claude Code started again for another approval policy: the running CLI sees its stdin close
/// and exits on its own (having written its session), and what it started (an MCP server, here
/// a `sleep`) ends with it rather than being left behind.
#[tokio::test]
async fn claude_started_again_for_a_policy_ends_gracefully_with_what_it_started() {
    let dir = temp_dir("claude-restart");
    let cli = dir.join("claude");
    std::fs::write(
        &cli,
        format!(
            "#!/bin/sh\nsleep 300 &\necho $! >> {dir}/children\nwhile read -r line; do :; done\necho saved >> {dir}/closed\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cli, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut sandbox = sandbox(&dir, &cli);
    sandbox
        .env
        .insert("CENTAUR_CLAUDE_BIN".into(), cli.display().to_string());
    let mut claude = harness::for_kind(Kind::ClaudeCode, &sandbox);
    claude.prepare(&sandbox).await;
    let children = dir.join("children");
    assert!(eventually(|| children.exists()).await, "the CLI started");
    let first = std::fs::read_to_string(&children)
        .unwrap()
        .trim()
        .to_owned();
    assert!(running(&first));

    sandbox.approval_policy = ApprovalPolicy::Always;
    claude.prepare(&sandbox).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("closed")).ok().as_deref(),
        Some("saved\n"),
        "the CLI exited on its own once its stdin closed"
    );
    assert!(
        eventually(|| !running(&first)).await,
        "what the stopped CLI started is ended"
    );
    // The new CLI runs, with its own child.
    assert!(
        eventually(|| std::fs::read_to_string(&children).unwrap().lines().count() == 2).await,
        "the CLI started again"
    );
    drop(claude);
    for pid in std::fs::read_to_string(&children).unwrap().lines() {
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
    let _ = std::fs::remove_dir_all(dir);
}
