//! The shell harness: a failing command fails its turn (and stops it), and a command approved
//! for the session is not asked about again in the same sandbox.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests stop at the first surprise

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use centaur_protocol::runner::{ApprovalPolicy, Finish, InputMessage};
use centaur_protocol::{ApprovalResolution, EventBody, Harness as Kind, Role};
use centaur_runner::harness;
use centaur_runner::turn::{Approvals, Sandbox, Steering, Turn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn sandbox(name: &str, approval_policy: ApprovalPolicy) -> Sandbox {
    let workspace: PathBuf =
        std::env::temp_dir().join(format!("centaur-shell-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&workspace).unwrap();
    Sandbox {
        workspace,
        env: BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap())]),
        approval_policy,
    }
}

/// Runs one turn of `messages`; every approval it asks for is answered `answer`. Returns how
/// it ended, its events, and how many approvals it asked for.
async fn run_turn(
    shell: &mut Box<dyn harness::Harness>,
    sandbox: &Sandbox,
    messages: &[&str],
    answer: ApprovalResolution,
) -> (Finish, Vec<EventBody>, usize) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_steer, steering) = mpsc::unbounded_channel();
    let input = messages
        .iter()
        .map(|text| InputMessage {
            message_id: Uuid::now_v7(),
            role: Role::User,
            text: (*text).into(),
        })
        .collect();
    let approvals = Arc::new(Approvals::default());
    let mut turn = Turn::new(
        Uuid::now_v7(),
        input,
        sandbox.clone(),
        tx,
        approvals.clone(),
        Steering::unrecorded(steering),
        CancellationToken::new(),
    );
    let answering = tokio::spawn(async move {
        let mut events = Vec::new();
        let mut asked = 0;
        while let Some(event) = rx.recv().await {
            if let EventBody::ApprovalRequested { approval_id, .. } = &event {
                asked += 1;
                approvals.resolve(*approval_id, answer);
            }
            events.push(event);
        }
        (events, asked)
    });
    let finish = tokio::time::timeout(std::time::Duration::from_secs(20), shell.turn(&mut turn))
        .await
        .expect("the turn ends");
    drop(turn);
    let (events, asked) = answering.await.unwrap();
    (finish, events, asked)
}

#[tokio::test]
async fn a_command_that_exits_non_zero_fails_the_turn_and_the_rest_is_not_run() {
    let sandbox = sandbox("fails", ApprovalPolicy::Never);
    let mut shell = harness::for_kind(Kind::Shell, &sandbox);
    let (finish, events, _) = run_turn(
        &mut shell,
        &sandbox,
        &[
            "echo x; exit 3\necho never",
            "touch later",
            "touch too\n# and more",
        ],
        ApprovalResolution::Approve,
    )
    .await;
    assert_eq!(
        finish,
        Finish::Failed {
            error: "`echo x; exit 3` exited with status 3".into(),
            output: Some(
                "x\n[exit status 3]\n[2 later messages not run: `touch later`, `touch too`]\n"
                    .into()
            ),
        }
    );
    assert!(
        !sandbox.workspace.join("later").exists() && !sandbox.workspace.join("too").exists(),
        "a later message ran"
    );
    let started = events
        .iter()
        .filter(|e| matches!(e, EventBody::CommandStarted { .. }))
        .count();
    assert_eq!(started, 1, "{events:?}");

    // A command killed by a signal fails the turn too; one that succeeds completes it.
    let (finish, _, _) = run_turn(
        &mut shell,
        &sandbox,
        &["kill -9 $$", "touch later"],
        ApprovalResolution::Approve,
    )
    .await;
    assert_eq!(
        finish,
        Finish::Failed {
            error: "`kill -9 $$` was killed by a signal".into(),
            output: Some("[killed by a signal]\n[1 later message not run: `touch later`]\n".into()),
        }
    );
    let (finish, _, _) = run_turn(
        &mut shell,
        &sandbox,
        &["echo fine", "echo too"],
        ApprovalResolution::Approve,
    )
    .await;
    assert_eq!(
        finish,
        Finish::Completed {
            result_text: "fine\ntoo\n".into()
        }
    );
    let _ = std::fs::remove_dir_all(&sandbox.workspace);
}

/// A failing command with more output than the result keeps: the output is cut, and the lines
/// that say how the turn ended still end it.
#[tokio::test]
async fn a_failing_command_with_long_output_still_says_how_the_turn_ended() {
    let sandbox = sandbox("long", ApprovalPolicy::Never);
    let mut shell = harness::for_kind(Kind::Shell, &sandbox);
    let (finish, _, _) = run_turn(
        &mut shell,
        &sandbox,
        &[
            "head -c 307200 /dev/zero | tr '\\0' a; exit 4",
            "touch later",
        ],
        ApprovalResolution::Approve,
    )
    .await;
    let Finish::Failed {
        output: Some(output),
        ..
    } = finish
    else {
        panic!("expected a failure with output, got {finish:?}");
    };
    let ending =
        "\n[output truncated]\n[exit status 4]\n[1 later message not run: `touch later`]\n";
    assert!(
        output.ends_with(ending),
        "{:?}",
        &output[output.len().saturating_sub(200)..]
    );
    assert_eq!(output.len(), 256 * 1024 + ending.len());
    assert!(output[..256 * 1024].bytes().all(|b| b == b'a'));
    let _ = std::fs::remove_dir_all(&sandbox.workspace);
}

#[tokio::test]
async fn a_command_approved_for_the_session_is_not_asked_about_again() {
    let sandbox = sandbox("session", ApprovalPolicy::Always);
    let mut shell = harness::for_kind(Kind::Shell, &sandbox);

    // Approved once: asked, and run.
    let (finish, _, asked) = run_turn(
        &mut shell,
        &sandbox,
        &["echo once"],
        ApprovalResolution::Approve,
    )
    .await;
    assert_eq!((asked, finish.clone()), (1, completed("once\n")));
    // Only for this time: asked again.
    let (finish, _, asked) = run_turn(
        &mut shell,
        &sandbox,
        &["echo once"],
        ApprovalResolution::ApproveForSession,
    )
    .await;
    assert_eq!((asked, finish), (1, completed("once\n")));
    // Approved for the session: the same command runs without asking, even twice in a turn.
    let (finish, _, asked) = run_turn(
        &mut shell,
        &sandbox,
        &["echo once", "echo once"],
        ApprovalResolution::Deny,
    )
    .await;
    assert_eq!((asked, finish), (0, completed("once\nonce\n")));
    // Another command is asked about (and, denied, not run; nor are the turn's later
    // messages, as the result says).
    let (finish, _, asked) = run_turn(
        &mut shell,
        &sandbox,
        &["echo twice"],
        ApprovalResolution::Deny,
    )
    .await;
    assert_eq!(
        (asked, finish),
        (1, completed("the command was not approved: echo twice"))
    );
    let (finish, _, asked) = run_turn(
        &mut shell,
        &sandbox,
        &["echo twice", "echo once"],
        ApprovalResolution::Deny,
    )
    .await;
    assert_eq!(
        (asked, finish),
        (
            1,
            completed(
                "the command was not approved: echo twice\n[1 later message not run: `echo once`]"
            )
        )
    );
    // A new sandbox (a new harness) asks again.
    let mut fresh = harness::for_kind(Kind::Shell, &sandbox);
    let (_, _, asked) = run_turn(
        &mut fresh,
        &sandbox,
        &["echo once"],
        ApprovalResolution::Approve,
    )
    .await;
    assert_eq!(asked, 1);
    let _ = std::fs::remove_dir_all(&sandbox.workspace);
}

fn completed(text: &str) -> Finish {
    Finish::Completed {
        result_text: text.into(),
    }
}
