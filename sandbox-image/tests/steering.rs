//! Messages that arrive while a turn runs: a harness that hands one to its CLI says so (the
//! runner reports it to the server as the turn's input); one that does not, or one the CLI
//! refused, is not reported (it waits for the next turn). Against scripted CLIs.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests stop at the first surprise

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use centaur_protocol::runner::{ApprovalPolicy, Finish, InputMessage};
use centaur_protocol::{Harness as Kind, Role};
use centaur_runner::harness;
use centaur_runner::turn::{Approvals, Sandbox, Steering, SteeringMessage, Turn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("centaur-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("workspace")).unwrap();
    dir
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn sandbox(dir: &Path, env: &[(&str, PathBuf)]) -> Sandbox {
    let mut vars = BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap())]);
    for (name, value) in env {
        vars.insert((*name).to_owned(), value.display().to_string());
    }
    Sandbox {
        workspace: dir.join("workspace"),
        env: vars,
        approval_policy: ApprovalPolicy::Never,
    }
}

/// Runs a turn of `text` with `steering` waiting from its beginning; returns how it ended and
/// the ids the harness said it delivered, in order.
async fn steered_turn(
    harness: &mut Box<dyn harness::Harness>,
    sandbox: &Sandbox,
    text: &str,
    steering: &[SteeringMessage],
) -> (Finish, Vec<Uuid>) {
    let (events, mut emitted) = mpsc::unbounded_channel();
    let (steer, messages) = mpsc::unbounded_channel();
    for message in steering {
        steer.send(message.clone()).unwrap();
    }
    let (delivered_tx, mut delivered) = mpsc::unbounded_channel();
    let mut turn = Turn::new(
        Uuid::now_v7(),
        vec![InputMessage {
            message_id: Uuid::now_v7(),
            role: Role::User,
            text: text.into(),
        }],
        sandbox.clone(),
        events,
        Arc::new(Approvals::default()),
        Steering::new(messages, delivered_tx),
        CancellationToken::new(),
    );
    let finish = tokio::time::timeout(std::time::Duration::from_secs(20), harness.turn(&mut turn))
        .await
        .expect("the turn ends");
    drop(turn);
    drop(steer);
    while emitted.recv().await.is_some() {}
    let mut ids = Vec::new();
    while let Some(id) = delivered.recv().await {
        ids.push(id);
    }
    (finish, ids)
}

fn message(text: &str) -> SteeringMessage {
    SteeringMessage {
        message_id: Uuid::now_v7(),
        text: text.into(),
    }
}

/// A Codex app-server that starts a turn and keeps it open: it accepts each `turn/steer`
/// (logging it) except one whose text says "refuse", and completes the turn after the one
/// saying "last".
const FAKE_CODEX: &str = r#"#!/bin/sh
while read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/^{"id":\([0-9]*\),.*/\1/p')
  case "$line" in
    *'"method":"initialize"'*) echo "{\"id\":$id,\"result\":{}}";;
    *'"method":"thread/start"'*) echo "{\"id\":$id,\"result\":{\"thread\":{\"id\":\"th-1\"}}}";;
    *'"method":"turn/start"'*) echo "{\"id\":$id,\"result\":{\"turn\":{\"id\":\"turn-1\"}}}";;
    *'"method":"turn/steer"'*)
      echo "$line" >> "$STEERS"
      case "$line" in
        *refuse*) echo "{\"id\":$id,\"error\":{\"code\":-32600,\"message\":\"no active turn to steer\"}}";;
        *) echo "{\"id\":$id,\"result\":{\"turnId\":\"turn-1\"}}";;
      esac
      case "$line" in
        *last*) echo '{"method":"item/agentMessage/delta","params":{"turnId":"turn-1","itemId":"m","delta":"ok"}}'
                echo '{"method":"turn/completed","params":{"threadId":"th-1","turn":{"id":"turn-1","status":"completed"}}}';;
      esac;;
  esac
done
"#;

#[tokio::test]
async fn codex_reports_the_steering_it_accepted_and_not_the_one_it_refused() {
    let dir = temp_dir("codex-steer");
    let cli = dir.join("codex");
    script(&cli, FAKE_CODEX);
    let steers = dir.join("steers");
    let sandbox = sandbox(
        &dir,
        &[("CENTAUR_CODEX_BIN", cli), ("STEERS", steers.clone())],
    );
    let mut codex = harness::for_kind(Kind::Codex, &sandbox);

    let (one, refused, last) = (message("one"), message("refuse this"), message("last"));
    let (finish, delivered) = steered_turn(
        &mut codex,
        &sandbox,
        "start",
        &[one.clone(), refused.clone(), last.clone()],
    )
    .await;
    assert!(matches!(finish, Finish::Completed { .. }), "{finish:?}");
    // All three went out as `turn/steer` (after Codex named its turn), in order.
    let sent = std::fs::read_to_string(&steers).unwrap();
    let lines: Vec<&str> = sent.lines().collect();
    assert_eq!(lines.len(), 3, "{sent}");
    for (line, text) in lines.iter().zip(["one", "refuse this", "last"]) {
        assert!(
            line.contains(&format!(r#""text":"{text}""#))
                && line.contains(r#""expectedTurnId":"turn-1""#),
            "{line}"
        );
    }
    assert_eq!(delivered, [one.message_id, last.message_id]);
}

/// A stream-json CLI (Amp's) that, after the turn's message, waits for one more line (the
/// steering), logs it, then plays the transcript that ends the turn.
#[tokio::test]
async fn a_stream_json_harness_reports_what_it_wrote_to_the_cli() {
    let dir = temp_dir("amp-steer");
    let transcript =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amp-turn.jsonl");
    let cli = dir.join("amp");
    script(
        &cli,
        &format!(
            "#!/bin/sh\nread -r first\nread -r steered\necho \"$steered\" > {dir}/steered\ncat {transcript}\nwhile read -r line; do :; done\n",
            dir = dir.display(),
            transcript = transcript.display()
        ),
    );
    let sandbox = sandbox(&dir, &[("CENTAUR_AMP_BIN", cli)]);
    let mut amp = harness::for_kind(Kind::Amp, &sandbox);

    let steer = message("also update the notes");
    let (finish, delivered) = steered_turn(
        &mut amp,
        &sandbox,
        "run the tests",
        std::slice::from_ref(&steer),
    )
    .await;
    assert!(matches!(finish, Finish::Completed { .. }), "{finish:?}");
    let line = std::fs::read_to_string(dir.join("steered")).unwrap();
    assert!(
        line.contains(r#""type":"user""#) && line.contains("also update the notes"),
        "{line}"
    );
    assert_eq!(delivered, [steer.message_id]);
}

/// The echo and shell harnesses never read new messages: nothing is reported, so they wait for
/// the next turn.
#[tokio::test]
async fn echo_and_shell_report_nothing() {
    let dir = temp_dir("echo-steer");
    let sandbox = sandbox(&dir, &[]);
    for kind in [Kind::Echo, Kind::Shell] {
        let mut harness = harness::for_kind(kind, &sandbox);
        let (finish, delivered) =
            steered_turn(&mut harness, &sandbox, "true", &[message("too late")]).await;
        assert!(
            matches!(finish, Finish::Completed { .. }),
            "{kind:?}: {finish:?}"
        );
        assert!(delivered.is_empty(), "{kind:?}: {delivered:?}");
    }
}

/// A Claude Code that queues a message written while the model writes its final answer, as the
/// real one does: that turn's request did not have it, so the CLI answers it after the turn's
/// `result` (once the test has looked: `$DIR/go`), with a model response and a `result` of its
/// own. Then it answers the next prompt.
const FAKE_CLAUDE_QUEUEING: &str = r#"#!/bin/sh
start() { echo "{\"type\":\"stream_event\",\"event\":{\"type\":\"message_start\",\"message\":{\"id\":\"$1\"}}}"; }
answer() {
  echo "{\"type\":\"assistant\",\"message\":{\"id\":\"$1\",\"content\":[{\"type\":\"text\",\"text\":\"$2\"}]}}"
  echo "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"$2\"}"
}
read -r prompt
echo '{"type":"system","subtype":"init","session_id":"s-1"}'
start msg_1
echo '{"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"answer "}}}'
read -r reply
echo "$reply" > "$DIR/reply"
answer msg_1 "answer one"
while [ ! -e "$DIR/go" ]; do sleep 0.02; done
start msg_2
answer msg_2 "answer to the reply"
read -r prompt
start msg_3
answer msg_3 "answer two"
while read -r line; do :; done
"#;

/// A reply written while Claude Code writes its final answer is answered after that answer's
/// `result`: the turn goes on to the next `result` (its text is both answers), reports the
/// reply as delivered only once a model response after the write began, and the next turn gets
/// its own answer. (Before, the reply was reported once written, the turn ended at the first
/// `result`, and the next turn's answer was the answer to the reply.)
#[tokio::test]
async fn a_reply_claude_code_queued_past_the_final_answer_is_answered_in_the_same_turn() {
    let dir = temp_dir("claude-queued");
    let cli = dir.join("claude");
    script(&cli, FAKE_CLAUDE_QUEUEING);
    let sandbox = sandbox(&dir, &[("CENTAUR_CLAUDE_BIN", cli), ("DIR", dir.clone())]);
    let mut claude = harness::for_kind(Kind::ClaudeCode, &sandbox);

    let (events, mut emitted) = mpsc::unbounded_channel();
    let (steer, messages) = mpsc::unbounded_channel();
    let (delivered_tx, mut delivered) = mpsc::unbounded_channel();
    let mut turn = Turn::new(
        Uuid::now_v7(),
        vec![InputMessage {
            message_id: Uuid::now_v7(),
            role: Role::User,
            text: "first".into(),
        }],
        sandbox.clone(),
        events,
        Arc::new(Approvals::default()),
        Steering::new(messages, delivered_tx),
        CancellationToken::new(),
    );
    let reply = message("and one more thing");
    let watch = async {
        // The reply arrives while the final answer is being written.
        while !matches!(
            emitted.recv().await.unwrap(),
            centaur_protocol::EventBody::AgentMessageDelta { .. }
        ) {}
        steer.send(reply.clone()).unwrap();
        // Written, but no model response has had it yet when the first answer comes.
        while !matches!(
            emitted.recv().await.unwrap(),
            centaur_protocol::EventBody::AgentMessage { text } if text == "answer one"
        ) {}
        assert!(
            delivered.try_recv().is_err(),
            "reported before a model had it"
        );
        std::fs::write(dir.join("go"), "").unwrap();
    };
    let (finish, ()) = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        futures_util::future::join(claude.turn(&mut turn), watch),
    )
    .await
    .expect("the turn ends");
    drop(turn);
    let line = std::fs::read_to_string(dir.join("reply")).unwrap();
    assert!(line.contains("and one more thing"), "{line}");
    match finish {
        Finish::Completed { result_text } => {
            assert_eq!(result_text, "answer one\n\nanswer to the reply");
        }
        other => panic!("{other:?}"),
    }
    let mut ids = Vec::new();
    while let Some(id) = delivered.recv().await {
        ids.push(id);
    }
    assert_eq!(ids, [reply.message_id]);

    let (finish, ids) = steered_turn(&mut claude, &sandbox, "second", &[]).await;
    match finish {
        Finish::Completed { result_text } => assert_eq!(result_text, "answer two"),
        other => panic!("{other:?}"),
    }
    assert!(ids.is_empty(), "{ids:?}");
}
