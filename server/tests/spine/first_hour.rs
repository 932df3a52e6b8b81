//! The first hour (issue 14), from the server's side: harnesses that cannot run, failed turns,
//! titles, waiting approvals and what "last active" means.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use centaur_protocol::Harness;
use centaur_test_support::local_stack::{LocalStack, kill_sandboxes};
use centaur_test_support::server::{TestServer, enc, error_code};

const OPENAI_HINT: &str = "needs an OpenAI key (`centaur dev keys`)";

async fn detail(server: &TestServer, key: &str) -> Value {
    let (status, body) = server
        .admin(
            Method::GET,
            &format!("/agent/threads/{}", enc(key)),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The thread's entry in `GET /agent/threads`, if it is listed.
async fn listed(server: &TestServer, key: &str) -> Option<Value> {
    let (status, body) = server
        .admin(Method::GET, "/agent/threads?limit=200", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["thread_key"] == key)
        .cloned()
}

async fn harnesses(server: &TestServer) -> Value {
    let (status, body) = server
        .admin(Method::GET, "/agent/harnesses", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn entry<'a>(list: &'a Value, harness: &str) -> &'a Value {
    list["harnesses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["harness"] == harness)
        .unwrap_or_else(|| panic!("{harness} is not listed: {list}"))
}

fn install_fake_cli(harness_dir: &Path, command: &str) {
    let path = harness_dir.join("bin").join(command);
    std::fs::write(&path, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A harness whose CLI is not where the sandbox looks is listed as unavailable, with the hint
/// the server was given (or a sentence naming the missing CLI), and a turn or a spawn for it is
/// refused before anything is stored. A CLI installed meanwhile counts at once.
#[tokio::test]
async fn a_harness_without_its_cli_is_listed_unavailable_and_refused_up_front() {
    let stack = LocalStack::start_with("first-hour-harnesses", 0, json!({}), |config, dir| {
        let harness_dir = dir.join("harnesses");
        std::fs::create_dir_all(harness_dir.join("bin")).unwrap();
        config.harness_dir = Some(harness_dir);
        config.harness_hints = vec![(Harness::Codex, OPENAI_HINT.to_owned())];
    })
    .await;
    let harness_dir = stack.dir.join("harnesses");
    let server = &stack.server;

    let list = harnesses(server).await;
    assert_eq!(list["default"], "codex", "{list}");
    assert_eq!(list["harnesses"].as_array().unwrap().len(), 5, "{list}");
    for always in ["shell", "echo"] {
        assert_eq!(
            entry(&list, always),
            &json!({"harness": always, "available": true})
        );
    }
    assert_eq!(
        entry(&list, "codex"),
        &json!({"harness": "codex", "available": false, "unavailable_reason": OPENAI_HINT})
    );
    // No hint: the sentence names the CLI and where it was looked for.
    let claude = entry(&list, "claude-code");
    assert_eq!(claude["available"], false, "{list}");
    assert_eq!(
        claude["unavailable_reason"],
        format!(
            "needs the claude CLI, which is not installed on this server ({})",
            harness_dir.join("bin/claude").display()
        )
    );

    // A turn for it is refused with the hint, and leaves no thread behind.
    let key = "api:keyless";
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": key, "harness": "codex", "message": "hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "harness_unavailable");
    assert_eq!(body["error"]["message"], format!("codex {OPENAI_HINT}"));
    // The server's default harness is resolved the same way; so is a spawn's.
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": key, "message": "hello"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "harness_unavailable")
    );
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/spawn",
            json!({"thread_key": key, "harness": "claude-code"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "harness_unavailable")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("claude-code needs the claude CLI"),
        "{body}"
    );
    let (status, _) = server
        .admin(
            Method::GET,
            &format!("/agent/threads/{}", enc(key)),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(listed(server, key).await, None);

    // A turn without a message needs a thread: one that does not exist is not found, whatever
    // the default harness.
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": "api:missing"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "thread_not_found"),
        "{body}"
    );

    // A thread whose live sandbox runs another harness: asking for an unavailable one is the
    // conflict it always was.
    let shell_key = "api:shell-live";
    let end = stack.turn(shell_key, "shell", "echo hi").await;
    assert_eq!(end["type"], "execution.completed", "{end}");
    for (path, body) in [
        (
            "/agent/execute",
            json!({"thread_key": shell_key, "harness": "codex", "message": "hello"}),
        ),
        (
            "/agent/spawn",
            json!({"thread_key": shell_key, "harness": "codex"}),
        ),
    ] {
        let (status, body) = server.admin(Method::POST, path, body).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::CONFLICT, "harness_conflict"),
            "{path}: {body}"
        );
    }

    // Installed while the server runs: available on the next look.
    install_fake_cli(&harness_dir, "codex");
    let list = harnesses(server).await;
    assert_eq!(
        entry(&list, "codex"),
        &json!({"harness": "codex", "available": true})
    );
    assert_eq!(entry(&list, "amp")["available"], false);

    // A live sandbox keeps serving its thread when its CLI goes away meanwhile: only a new
    // sandbox (or a new thread) needs it.
    let live = "api:codex-live";
    server
        .post(
            "/agent/spawn",
            json!({"thread_key": live, "harness": "codex"}),
        )
        .await;
    std::fs::remove_file(harness_dir.join("bin/codex")).unwrap();
    assert_eq!(entry(&harnesses(server).await, "codex")["available"], false);
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/spawn",
            json!({"thread_key": live, "harness": "codex"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready_source"], "reused", "{body}");
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": live, "message": "hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    server
        .post(
            &format!("/agent/threads/{}/release", enc(live)),
            Value::Null,
        )
        .await;
    // Released, the thread needs a new sandbox: refused again.
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": live, "message": "hello again"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "harness_unavailable"),
        "{body}"
    );

    // The route takes the user API's credentials only.
    let (status, _) = server
        .call(Method::GET, "/agent/harnesses", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A shell command that exits non-zero fails its turn, with what it printed; the thread shows
/// as failed until a turn goes well. Its title is its first message's first line.
#[tokio::test]
async fn a_failing_shell_command_fails_the_turn_and_the_thread_shows_it() {
    let stack = LocalStack::start("first-hour-failed", 0, json!({})).await;
    let key = "api:fails";
    let end = stack.turn(key, "shell", "echo x; exit 3").await;
    assert_eq!(end["type"], "execution.failed", "{end}");
    assert_eq!(end["error"], "`echo x; exit 3` exited with status 3");
    assert_eq!(end["output"], "x\n[exit status 3]\n");

    let thread = detail(&stack.server, key).await;
    assert_eq!(thread["status"], "failed", "{thread}");
    assert_eq!(thread["title"], "echo x; exit 3");
    assert_eq!(thread["last_execution"]["status"], "failed");
    let summary = listed(&stack.server, key).await.unwrap();
    assert_eq!(summary["status"], "failed", "{summary}");
    assert_eq!(summary["title"], "echo x; exit 3");
    assert_eq!(summary["waiting_approvals"], 0);

    let end = stack.turn(key, "shell", "echo fine").await;
    assert_eq!(end["type"], "execution.completed", "{end}");
    let summary = listed(&stack.server, key).await.unwrap();
    assert_eq!(summary["status"], "idle", "{summary}");
    assert_eq!(summary["title"], "echo x; exit 3");
}

/// Reads the thread's events after `after` until the terminal event of `execution_id`, deciding
/// each approval it asks for with `decision`. Returns how many it asked for and the terminal
/// event.
async fn until_end(
    stack: &LocalStack,
    key: &str,
    execution_id: &str,
    decision: &str,
) -> (usize, Value) {
    let mut stream = stack
        .server
        .events(
            key,
            &format!("execution_id={execution_id}&close_on_terminal=true"),
        )
        .await;
    let mut asked = 0;
    loop {
        let frame = stream
            .next(Duration::from_secs(60))
            .await
            .expect("the turn goes on");
        match frame.data["type"].as_str().unwrap() {
            "approval.requested" => {
                asked += 1;
                let summary = listed(&stack.server, key).await.unwrap();
                assert_eq!(summary["waiting_approvals"], 1, "{summary}");
                let id = frame.data["approval_id"].as_str().unwrap();
                stack.server.decide(key, id, decision).await;
            }
            "execution.completed" | "execution.failed" | "execution.cancelled" => {
                return (asked, frame.data);
            }
            _ => {}
        }
    }
}

async fn execute(stack: &LocalStack, body: Value) -> String {
    let accepted = stack.server.post("/agent/execute", body).await;
    accepted["execution_id"].as_str().unwrap().to_owned()
}

/// A shell thread that asks before every command: while it waits the thread counts the
/// approval, and a command approved for the session runs again without asking.
#[tokio::test]
async fn a_command_approved_for_the_session_is_not_asked_about_again() {
    let stack = LocalStack::start("first-hour-session", 0, json!({})).await;
    let key = "api:session";
    let first = execute(
        &stack,
        json!({"thread_key": key, "harness": "shell", "approval_policy": "always",
               "message": "\n   echo    same  \n# and a second line"}),
    )
    .await;
    let (asked, end) = until_end(&stack, key, &first, "approve_for_session").await;
    assert_eq!(asked, 1);
    assert_eq!(end["result_text"], "same\n", "{end}");
    let summary = listed(&stack.server, key).await.unwrap();
    assert_eq!(summary["waiting_approvals"], 0, "{summary}");
    assert_eq!(summary["title"], "echo same");

    // The identical command: not asked about again (a denial would say it was).
    let again = execute(
        &stack,
        json!({"thread_key": key, "message": "\n   echo    same  \n# and a second line"}),
    )
    .await;
    let (asked, end) = until_end(&stack, key, &again, "deny").await;
    assert_eq!(asked, 0, "{end}");
    assert_eq!(end["result_text"], "same\n", "{end}");

    // Another command is asked about.
    let other = execute(&stack, json!({"thread_key": key, "message": "echo other"})).await;
    let (asked, end) = until_end(&stack, key, &other, "deny").await;
    assert_eq!(asked, 1);
    assert_eq!(
        end["result_text"], "the command was not approved: echo other",
        "{end}"
    );
}

/// The approval policy given with a turn reaches the sandbox that already runs the thread: a
/// shell thread under `never` runs its command without asking; the next turn, sent with
/// `always`, asks before its command on the same sandbox (and a denied one does not run), and
/// the policy stays with the thread for the turns after it.
#[tokio::test]
async fn a_policy_given_with_a_turn_reaches_the_live_sandbox() {
    let stack = LocalStack::start("first-hour-policy", 0, json!({})).await;
    let key = "api:policy";
    let first = execute(
        &stack,
        json!({"thread_key": key, "harness": "shell", "approval_policy": "never",
               "message": "echo free"}),
    )
    .await;
    let (asked, end) = until_end(&stack, key, &first, "deny").await;
    assert_eq!((asked, &end["result_text"]), (0, &json!("free\n")), "{end}");
    let sandbox = detail(&stack.server, key).await["sandbox"]["sandbox_id"].clone();
    assert!(sandbox.is_string(), "{sandbox}");

    let second = execute(
        &stack,
        json!({"thread_key": key, "approval_policy": "always",
               "message": "echo asked > asked.txt"}),
    )
    .await;
    let (asked, end) = until_end(&stack, key, &second, "deny").await;
    assert_eq!(asked, 1, "{end}");
    assert_eq!(
        end["result_text"], "the command was not approved: echo asked > asked.txt",
        "{end}"
    );
    assert!(!stack.only_workspace().join("asked.txt").exists());
    assert_eq!(
        detail(&stack.server, key).await["sandbox"]["sandbox_id"],
        sandbox,
        "the same sandbox served both turns"
    );

    // Without a policy, the turn keeps the thread's.
    let third = execute(&stack, json!({"thread_key": key, "message": "echo kept"})).await;
    let (asked, end) = until_end(&stack, key, &third, "approve").await;
    assert_eq!((asked, &end["result_text"]), (1, &json!("kept\n")), "{end}");

    // A refused request changes nothing: its policy is not the thread's.
    let (status, body) = stack
        .server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": key, "harness": "echo", "approval_policy": "never",
                   "message": "echo refused"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "harness_conflict"),
        "{body}"
    );
    let fourth = execute(&stack, json!({"thread_key": key, "message": "echo still"})).await;
    let (asked, end) = until_end(&stack, key, &fourth, "approve").await;
    assert_eq!(
        (asked, &end["result_text"]),
        (1, &json!("still\n")),
        "{end}"
    );

    // A request refused because a turn runs (it waits for an approval) changes nothing either,
    // though the thread's live sandbox would serve it.
    let fifth = execute(
        &stack,
        json!({"thread_key": key, "message": "echo waiting"}),
    )
    .await;
    let mut stream = stack
        .server
        .events(key, &format!("execution_id={fifth}&close_on_terminal=true"))
        .await;
    let approval_id = loop {
        let frame = stream
            .next(Duration::from_secs(60))
            .await
            .expect("the turn asks");
        if frame.data["type"] == "approval.requested" {
            break frame.data["approval_id"].as_str().unwrap().to_owned();
        }
    };
    let (status, body) = stack
        .server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": key, "approval_policy": "never", "message": "echo refused"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "execution_active"),
        "{body}"
    );
    stack.server.decide(key, &approval_id, "approve").await;
    let end = loop {
        let frame = stream
            .next(Duration::from_secs(60))
            .await
            .expect("the turn ends");
        if centaur_test_support::events::is_terminal(&frame.data) {
            break frame.data;
        }
    };
    assert_eq!(end["result_text"], "waiting\n", "{end}");
    let sixth = execute(&stack, json!({"thread_key": key, "message": "echo asks"})).await;
    let (asked, end) = until_end(&stack, key, &sixth, "approve").await;
    assert_eq!((asked, &end["result_text"]), (1, &json!("asks\n")), "{end}");
}

/// What the stack does on its own does not make a thread "active": neither its shutdown (the
/// restarted server releasing the sandboxes the shutdown stopped), nor releasing an idle
/// sandbox, nor the reaper failing the turn whose sandbox died, moves `last_activity_at`.
#[tokio::test]
async fn last_activity_ignores_the_stack_shutting_down_and_idle_releases() {
    let mut config = None;
    let mut stack = LocalStack::start_with("first-hour-activity", 0, json!({}), |c, _| {
        config = Some(c.clone());
    })
    .await;
    let key = "api:active";
    let end = stack.turn(key, "shell", "echo worked").await;
    assert_eq!(end["type"], "execution.completed", "{end}");
    let before = detail(&stack.server, key).await;
    assert_eq!(before["sandbox"]["state"], "ready", "{before}");
    let worked_at = before["last_activity_at"].clone();

    // The stack stops (its sandboxes with it) and starts again: the new server releases the
    // sandbox it finds gone.
    stack.server.shutdown().await;
    let mut config = config.unwrap();
    config.sandbox_idle_secs = 2;
    stack.server = TestServer::start_configured(config).await;
    let released = wait_released(&stack.server, key).await;
    assert_eq!(released["last_activity_at"], worked_at, "{released}");
    assert_eq!(released["status"], "idle");
    let types = event_types(&stack.server, key).await;
    assert_eq!(types.last().map(String::as_str), Some("sandbox.released"));

    // A turn is activity; the idle sandbox's release after it is not.
    let end = stack.turn(key, "shell", "echo again").await;
    assert_eq!(end["type"], "execution.completed", "{end}");
    let after_turn = detail(&stack.server, key).await;
    assert_ne!(after_turn["last_activity_at"], worked_at);
    let idle = wait_released(&stack.server, key).await;
    assert_eq!(
        idle["last_activity_at"], after_turn["last_activity_at"],
        "{idle}"
    );
    let types = event_types(&stack.server, key).await;
    assert_eq!(types.last().map(String::as_str), Some("sandbox.released"));

    // The sandbox dies mid-turn: the reaper's `execution.failed` (and release) is the server's
    // doing, not the thread's; the turn's own events before it were the last activity.
    let after = stack.server.last_event_id(key).await;
    execute(
        &stack,
        json!({"thread_key": key, "message": "echo sleeping; sleep 30"}),
    )
    .await;
    stack
        .until(key, after, |e| {
            e["type"] == "command.output" && e["chunk"] == "sleeping\n"
        })
        .await;
    let sleeping = detail(&stack.server, key).await;
    assert_ne!(
        sleeping["last_activity_at"], idle["last_activity_at"],
        "the turn is activity"
    );
    kill_sandboxes(&stack.data_dir());
    let events = stack
        .until(key, after, |e| e["type"] == "execution.failed")
        .await;
    let failed = events.last().unwrap();
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("stopped unexpectedly"),
        "{failed}"
    );
    let dead = wait_released(&stack.server, key).await;
    assert_eq!(
        dead["last_activity_at"], sleeping["last_activity_at"],
        "{dead}"
    );
    assert_eq!(dead["status"], "failed", "{dead}");
}

/// Waits until the thread's sandbox is released; returns the thread's detail then.
async fn wait_released(server: &TestServer, key: &str) -> Value {
    for _ in 0..300 {
        let thread = detail(server, key).await;
        if thread["sandbox"]["state"] == "released" {
            return thread;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sandbox of {key} was never released");
}

/// The types of the thread's events so far.
async fn event_types(server: &TestServer, key: &str) -> Vec<String> {
    let last = server.last_event_id(key).await;
    let mut stream = server.events(key, "after_event_id=0").await;
    stream
        .until_id(last, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|frame| frame.event)
        .collect()
}

/// Threads from before titles get theirs from the migration, as the server computes them for a
/// new message: the migration's backfill, run again on threads whose title is cleared, gives
/// back the same titles.
#[tokio::test]
async fn the_migration_titles_existing_threads_as_the_server_does() {
    const KEYS: [&str; 5] = [
        "api:old-1",
        "api:old-2",
        "api:old-3",
        "api:old-4",
        "api:assistant-only",
    ];
    let server = TestServer::start().await;
    let long = format!("{} and then {}", "é".repeat(60), "x".repeat(30));
    let firsts = [
        ("api:old-1", "\n \t\n  deploy   the\tthing  \nand more"),
        ("api:old-2", long.as_str()),
        ("api:old-3", "plain"),
        // Unicode whitespace: a blank first line, and spaces Rust's `split_whitespace` splits
        // at (no-break, ideographic, em, narrow no-break, next line).
        (
            "api:old-4",
            "\u{a0}\u{3000}\r\n\u{2003}ship\u{a0}\u{a0}it\u{202f}now\u{85}\u{3000}\nlater",
        ),
    ];
    for (key, text) in firsts {
        server
            .post(
                "/agent/execute",
                json!({"thread_key": key, "harness": "echo", "message": text}),
            )
            .await;
    }
    // A later message does not change the title; an assistant's first does not set one.
    server
        .post(
            "/agent/message",
            json!({"thread_key": "api:old-3", "text": "second"}),
        )
        .await;
    server.spawn("api:assistant-only").await;
    server
        .post(
            "/agent/message",
            json!({"thread_key": "api:assistant-only", "role": "assistant", "text": "hello"}),
        )
        .await;
    let mut by_server = Vec::new();
    for key in KEYS {
        by_server.push(detail(&server, key).await["title"].clone());
    }
    assert_eq!(
        by_server[..2],
        [
            json!("deploy the thing"),
            json!(format!("{} and then {}…", "é".repeat(60), "x".repeat(9)))
        ]
    );
    assert_eq!(
        by_server[2..],
        [json!("plain"), json!("ship it now"), Value::Null]
    );

    let migration = include_str!("../../migrations/20261130000001_thread_titles.sql");
    let start = migration.find("UPDATE threads").unwrap();
    let backfill = &migration[start..start + migration[start..].find(';').unwrap()];
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE threads SET title = NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(backfill).execute(&mut conn).await.unwrap();
    let mut by_migration = Vec::new();
    for key in KEYS {
        by_migration.push(detail(&server, key).await["title"].clone());
    }
    assert_eq!(by_migration, by_server);
}

/// Claude Code follows the policy given with each turn on its live sandbox: under `never` it
/// runs the command without asking (no approval event), under `always` the next turn asks and
/// a denied command does not run, and back under `never` it runs again without asking; the
/// conversation goes on through each restart of the CLI.
#[tokio::test]
async fn claude_code_takes_a_policy_given_with_a_later_turn() {
    use centaur_test_support::anthropic::MockMessages;
    use centaur_test_support::events::{is_terminal, last_id};
    use centaur_test_support::model::Reply;

    let model = MockMessages::start(vec![(
        "run the command",
        Reply::Command {
            cmd: "echo approved > approved.txt".into(),
            then: "The command is done.".into(),
        },
    )])
    .await;
    let stack = model
        .claude_stack("first-hour-claude-policy", "always")
        .await;
    let key = "api:claude-policy";
    let mut after = 0;
    let mut sandbox = Value::Null;
    for (turn, (policy, decision, runs)) in [
        ("never", None, true),
        ("always", Some("deny"), false),
        ("never", None, true),
    ]
    .into_iter()
    .enumerate()
    {
        if after > 0 {
            let _ = std::fs::remove_file(stack.only_workspace().join("approved.txt"));
        }
        stack
            .server
            .post(
                "/agent/execute",
                json!({"thread_key": key, "harness": "claude-code", "approval_policy": policy,
                       "message": format!("please run the command (turn {turn})")}),
            )
            .await;
        let events = match decision {
            Some(decision) => {
                let asked = stack
                    .until(key, after, |e| e["type"] == "approval.requested")
                    .await;
                let approval_id = asked.last().unwrap()["approval_id"].as_str().unwrap();
                stack.server.decide(key, approval_id, decision).await;
                stack.until(key, last_id(&asked), is_terminal).await
            }
            None => stack.until(key, after, is_terminal).await,
        };
        assert_eq!(
            events.last().unwrap()["type"],
            "execution.completed",
            "{policy}: {events:#?}"
        );
        if decision.is_none() {
            assert!(
                !events.iter().any(|e| e["type"] == "approval.requested"),
                "{policy} asks nothing: {events:#?}"
            );
        }
        assert_eq!(
            stack.only_workspace().join("approved.txt").exists(),
            runs,
            "{policy}: {events:#?}"
        );
        let now = detail(&stack.server, key).await["sandbox"]["sandbox_id"].clone();
        if after > 0 {
            assert_eq!(now, sandbox, "the same sandbox");
        }
        sandbox = now;
        after = last_id(&events);
        // The CLI started again resumed its session: the model is shown every earlier turn.
        let shown = model.conversations.lock().unwrap().last().cloned();
        let shown = shown.expect("the model was asked").to_string();
        for earlier in 0..=turn {
            assert!(
                shown.contains(&format!("please run the command (turn {earlier})")),
                "{policy}: turn {earlier} is missing from {shown}"
            );
        }
    }
}
