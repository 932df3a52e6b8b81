//! Slack delivery: what the bridge shows in Slack for a mention's turn, against the fake Slack
//! and a real local stack (PostgreSQL, bubblewrap sandboxes): the working status, progress
//! streamed (or on the control message where streaming is unavailable), approval messages
//! updated with who decided, the answer exactly once (split, or attached as a file), the
//! reactions; rate limits, expiring streams and a restart mid-turn.

use std::time::Duration;

use centaur_protocol::Harness;
use centaur_protocol::runner::ApprovalPolicy;
use centaur_protocol::slack::blocks::ActionValue;
use centaur_protocol::slack::web::Message;
use centaur_server::Config;
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::process::{ServerProcess, free_port, process_env};
use centaur_test_support::proxy::TestProxy;
use centaur_test_support::slack::{
    BOT_ID, BOT_TOKEN, BOT_USER_ID, FakeSlack, SIGNING_SECRET, SlackMode, TEAM_ID,
};
use centaur_test_support::temp::temp_dir;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

struct Bridge {
    stack: LocalStack,
    fake: FakeSlack,
}

async fn bridge(name: &str, harness: Harness, tweak: impl FnOnce(&mut Config)) -> Bridge {
    let fake = FakeSlack::start().await;
    let stack = LocalStack::start_with(name, 1, json!({}), |config, _| {
        fake.configure(config, SlackMode::Webhook);
        config.slack.harness = Some(harness);
        tweak(config);
    })
    .await;
    fake.deliver_to(&stack.server.url);
    Bridge { stack, fake }
}

fn is_bot(message: &Message) -> bool {
    message.bot_id.as_deref() == Some(BOT_ID) || message.user.as_deref() == Some(BOT_USER_ID)
}

/// The key of a message the bridge posted (its `centaur_delivery` metadata).
fn key_of(message: &Message) -> Option<String> {
    let metadata = message.metadata.as_ref()?;
    (metadata.event_type == "centaur_delivery")
        .then(|| metadata.event_payload["key"].as_str().map(str::to_owned))
        .flatten()
}

/// The bridge's posts in the thread whose key starts with `prefix`.
fn posts(fake: &FakeSlack, ts: &str, prefix: &str) -> Vec<Message> {
    fake.thread("C1", ts)
        .into_iter()
        .filter(|m| key_of(m).is_some_and(|k| k.starts_with(prefix)))
        .collect()
}

/// The bot's messages without metadata: the progress streams.
fn streams(fake: &FakeSlack, ts: &str) -> Vec<Message> {
    fake.thread("C1", ts)
        .into_iter()
        .filter(|m| is_bot(m) && m.metadata.is_none() && m.files.is_empty())
        .collect()
}

fn has_buttons(message: &Message) -> bool {
    message
        .blocks
        .iter()
        .flatten()
        .any(|b| b["type"] == "actions")
}

/// The buttons of a message: (action_id, decoded value).
fn buttons(message: &Message) -> Vec<(String, ActionValue, String)> {
    message
        .blocks
        .iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let raw = e["value"].as_str().unwrap().to_owned();
            (
                e["action_id"].as_str().unwrap().to_owned(),
                ActionValue::decode(&raw).unwrap(),
                raw,
            )
        })
        .collect()
}

/// Everything the message shows, blocks included.
fn shown(message: &Message) -> String {
    let blocks = message
        .blocks
        .as_ref()
        .map(|b| serde_json::to_string(b).unwrap())
        .unwrap_or_default();
    format!("{}\n{blocks}", message.text)
}

async fn wait_done(fake: &FakeSlack, ts: &str, mark: &str) {
    fake.wait_until(WAIT, |f| f.reactions("C1", ts).iter().any(|r| r == mark))
        .await;
}

fn calls_since(fake: &FakeSlack, method: &str) -> Vec<centaur_test_support::slack::Call> {
    fake.calls()
        .into_iter()
        .filter(|c| c.method == method)
        .collect()
}

/// A mention with the echo harness: the status goes up and comes down, the progress is
/// streamed to the person who asked, the answer lands once, the eyes become a check mark, and
/// the control message's Stop button turns into the outcome line.
#[tokio::test]
async fn a_mention_is_worked_on_visibly_and_answered_once() {
    let Bridge { stack, fake, .. } = bridge("slack-delivery-echo", Harness::Echo, |_| {}).await;
    let ts = fake.post("U1", "C1", "<@U0BOT> hello *there*", None).await;
    wait_done(&fake, &ts, "white_check_mark").await;

    let statuses: Vec<String> = fake
        .calls_to("assistant.threads.setStatus")
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("is working…"),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some(""),
        "{statuses:?}"
    );
    assert!(fake.status("C1", &ts).is_none_or(|s| s.is_empty()));

    let starts = fake.calls_to("chat.startStream");
    assert_eq!(starts.len(), 1, "{}", fake.log());
    assert_eq!(starts[0]["recipient_user_id"], "U1");
    assert_eq!(starts[0]["recipient_team_id"], TEAM_ID);
    assert_eq!(starts[0]["thread_ts"], ts.as_str());
    let streamed = streams(&fake, &ts);
    assert_eq!(streamed.len(), 1);
    assert!(streamed[0].text.contains("hello"), "{:?}", streamed[0]);
    assert!(!fake.is_streaming("C1", &streamed[0].ts));

    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1, "{}", fake.log());
    assert!(
        answers[0].text.contains("hello _there_"),
        "{:?}",
        answers[0]
    );

    let control = posts(&fake, &ts, "control:");
    assert_eq!(control.len(), 1);
    assert!(!has_buttons(&control[0]), "{:?}", control[0]);
    assert!(control[0].text.contains("Done"), "{:?}", control[0]);
    // While it ran, the control message carried Stop for this thread.
    let posted = fake.calls_to("chat.postMessage");
    let first_control = posted
        .iter()
        .find(|c| {
            c["metadata"]["event_payload"]["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("control:"))
        })
        .unwrap();
    let stop = &first_control["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .unwrap()["elements"][0];
    assert_eq!(stop["action_id"], "centaur_stop");
    let value = ActionValue::decode(stop["value"].as_str().unwrap()).unwrap();
    assert_eq!(value.thread_key.as_str(), format!("slack:C1:{ts}"));

    let reactions = fake.reactions("C1", &ts);
    assert!(!reactions.iter().any(|r| r == "eyes"), "{reactions:?}");
    // The people's own messages are not echoed back.
    assert!(posts(&fake, &ts, "message:").is_empty());

    // A message from the CLI into the Slack thread is shown there, briefly, and answered.
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": format!("slack:C1:{ts}"), "message": "from the terminal"}),
        )
        .await;
    fake.wait_until(WAIT, |f| posts(f, &ts, "answer:").len() == 2)
        .await;
    let echoed = posts(&fake, &ts, "message:");
    assert_eq!(echoed.len(), 1);
    assert_eq!(echoed[0].text, "_via Centaur:_ from the terminal");
    assert_eq!(
        fake.calls_to("chat.startStream")[1]["recipient_user_id"],
        "U1"
    );
}

/// The shell harness: the step is the status line, the command and its output are streamed,
/// the output is the answer.
#[tokio::test]
async fn a_shell_mention_streams_its_command_and_answers_with_its_output() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-shell", Harness::Shell, |_| {}).await;
    let ts = fake
        .post(
            "U1",
            "C1",
            "<@U0BOT> echo first; sleep 2; echo second",
            None,
        )
        .await;
    wait_done(&fake, &ts, "white_check_mark").await;
    let statuses: Vec<String> = fake
        .calls_to("assistant.threads.setStatus")
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("is running `echo first")),
        "{statuses:?}"
    );
    assert_eq!(statuses.last().map(String::as_str), Some(""));
    let streamed: String = streams(&fake, &ts).iter().map(|m| m.text.clone()).collect();
    assert!(
        streamed.contains("• running `echo first; sleep 2; echo second`"),
        "{streamed}"
    );
    assert!(streamed.contains("first\nsecond"), "{streamed}");
    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1, "{}", fake.log());
    assert_eq!(answers[0].text.trim(), "first\nsecond");
    assert!(posts(&fake, &ts, "failure:").is_empty());
}

/// A command that fails: a cross, and the error with the output in a code block.
#[tokio::test]
async fn a_failing_command_gets_a_cross_and_its_error() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-fail", Harness::Shell, |_| {}).await;
    let ts = fake
        .post("U1", "C1", "<@U0BOT> echo partial; exit 3", None)
        .await;
    wait_done(&fake, &ts, "x").await;
    let failures = posts(&fake, &ts, "failure:");
    assert_eq!(failures.len(), 1, "{}", fake.log());
    let text = &failures[0].text;
    assert!(text.contains("The turn failed"), "{text}");
    assert!(text.contains("exited with status 3"), "{text}");
    assert!(text.contains("```\npartial\n"), "{text}");
    assert!(posts(&fake, &ts, "answer:").is_empty());
    let reactions = fake.reactions("C1", &ts);
    assert!(
        !reactions
            .iter()
            .any(|r| r == "eyes" || r == "white_check_mark"),
        "{reactions:?}"
    );
    let control = posts(&fake, &ts, "control:");
    assert!(control[0].text.contains("Failed"), "{:?}", control[0]);
}

/// Slack closes a stream mid-turn: the bridge starts another and goes on; nothing streamed after
/// is lost and the answer still lands once.
#[tokio::test]
async fn a_stream_closed_by_slack_mid_turn_is_replaced() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-expire", Harness::Shell, |_| {}).await;
    fake.expire_streams_after(Duration::from_millis(400));
    let ts = fake
        .post(
            "U1",
            "C1",
            "<@U0BOT> echo early; sleep 1.5; echo middle; sleep 1.5; echo late",
            None,
        )
        .await;
    wait_done(&fake, &ts, "white_check_mark").await;
    let starts = fake.calls_to("chat.startStream");
    assert!(starts.len() >= 2, "{}", fake.log());
    let refused = fake
        .calls()
        .into_iter()
        .filter(|c| c.error.as_deref() == Some("message_not_in_streaming_state"))
        .count();
    assert!(refused >= 1, "{}", fake.log());
    let streamed: String = streams(&fake, &ts).iter().map(|m| m.text.clone()).collect();
    for word in ["early", "middle", "late"] {
        assert!(streamed.contains(word), "{word} missing from {streamed}");
    }
    assert_eq!(posts(&fake, &ts, "answer:").len(), 1, "{}", fake.log());
}

/// Where streaming is unavailable, progress goes on the control message (postMessage, then
/// updates), and the answer still lands once.
#[tokio::test]
async fn without_streaming_progress_is_shown_on_the_control_message() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-nostream", Harness::Shell, |_| {}).await;
    fake.disable_streaming();
    let ts = fake
        .post("U1", "C1", "<@U0BOT> echo one; sleep 1.5; echo two", None)
        .await;
    wait_done(&fake, &ts, "white_check_mark").await;
    assert!(streams(&fake, &ts).is_empty(), "{}", fake.log());
    let control = posts(&fake, &ts, "control:");
    assert_eq!(control.len(), 1);
    let updates: Vec<Value> = fake
        .calls_to("chat.update")
        .into_iter()
        .filter(|u| u["ts"] == control[0].ts.as_str())
        .collect();
    assert!(updates.len() >= 2, "{}", fake.log());
    // While working: progress and the Stop button.
    let working = updates
        .iter()
        .find(|u| u.to_string().contains("centaur_stop") && u.to_string().contains("one"))
        .unwrap_or_else(|| panic!("{}", fake.log()));
    assert!(working.to_string().contains("running"), "{working}");
    // At the end: the progress and the outcome, no button.
    let end = shown(&control[0]);
    assert!(end.contains("two") && end.contains("Done"), "{end}");
    assert!(!has_buttons(&control[0]));
    assert_eq!(posts(&fake, &ts, "answer:").len(), 1);
}

/// 429s on appendStream and on postMessage: each `Retry-After` is waited out, and nothing is
/// lost or doubled.
#[tokio::test]
async fn rate_limits_are_waited_out_and_nothing_is_lost() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-429", Harness::Shell, |_| {}).await;
    fake.rate_limit("chat.postMessage", 1, 1);
    fake.rate_limit("chat.appendStream", 2, 1);
    let ts = fake
        .post(
            "U1",
            "C1",
            "<@U0BOT> echo alpha; sleep 1; echo beta; sleep 1; echo gamma; sleep 1; echo delta",
            None,
        )
        .await;
    wait_done(&fake, &ts, "white_check_mark").await;
    for method in ["chat.postMessage", "chat.appendStream"] {
        let calls = calls_since(&fake, method);
        for pair in calls.windows(2) {
            if pair[0].error.as_deref() == Some("ratelimited") {
                let waited = pair[1].at.duration_since(pair[0].at);
                assert!(
                    waited >= Duration::from_millis(950),
                    "{method} retried after {waited:?}"
                );
            }
        }
        assert!(
            calls
                .iter()
                .any(|c| c.error.as_deref() == Some("ratelimited")),
            "{method} was never limited: {}",
            fake.log()
        );
    }
    let streamed: String = streams(&fake, &ts).iter().map(|m| m.text.clone()).collect();
    for word in ["alpha", "beta", "gamma", "delta"] {
        let line = format!("{word}\n");
        assert_eq!(streamed.matches(&line).count(), 1, "{word} in {streamed}");
    }
    assert_eq!(posts(&fake, &ts, "control:").len(), 1);
    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1, "{}", fake.log());
    assert!(answers[0].text.contains("alpha\nbeta\ngamma\ndelta"));
}

/// A long answer is split into messages within Slack's limits; a very long one is attached as a
/// file, whole, with its beginning as the message (once, though the share's answer was lost).
#[tokio::test]
async fn long_answers_are_split_and_very_long_ones_attached() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-long", Harness::Shell, |_| {}).await;
    let ts = fake
        .post(
            "U1",
            "C1",
            "<@U0BOT> seq -f 'line %05g of the answer' 1 300",
            None,
        )
        .await;
    wait_done(&fake, &ts, "white_check_mark").await;
    let answers = posts(&fake, &ts, "answer:");
    assert!(
        answers.len() >= 2 && answers.len() <= 4,
        "{}",
        answers.len()
    );
    for answer in &answers {
        assert!(answer.text.chars().count() <= 3500);
    }
    let joined: String = answers.iter().map(|a| format!("{}\n", a.text)).collect();
    for i in [1, 150, 300] {
        assert!(joined.contains(&format!("line {i:05} of the answer")));
    }

    // The file's share is carried out but its answer lost: it is found by its title, not
    // shared again.
    fake.lose_answers("files.completeUploadExternal", 1);
    let ts = fake
        .post(
            "U1",
            "C1",
            "<@U0BOT> seq -f 'line %05g of the answer' 1 2000",
            None,
        )
        .await;
    wait_done(&fake, &ts, "white_check_mark").await;
    assert!(posts(&fake, &ts, "answer:").is_empty(), "{}", fake.log());
    let completed = fake.calls_to("files.completeUploadExternal");
    assert_eq!(completed.len(), 1, "{}", fake.log());
    assert_eq!(completed[0]["thread_ts"], ts.as_str());
    let shared: Vec<Message> = fake
        .thread("C1", &ts)
        .into_iter()
        .filter(|m| !m.files.is_empty())
        .collect();
    assert_eq!(shared.len(), 1, "{}", fake.log());
    let file_id = completed[0]["files"][0]["id"].as_str().unwrap();
    let bytes = String::from_utf8(fake.file_bytes(file_id).unwrap()).unwrap();
    assert!(bytes.contains("line 00001 of the answer"));
    assert!(bytes.contains("line 02000 of the answer"));
    let comment = completed[0]["initial_comment"].as_str().unwrap();
    assert!(
        comment.contains("line 00001") && comment.contains("attached"),
        "{comment}"
    );
}

/// The approval message of a thread, once posted.
async fn approval_message(fake: &FakeSlack, ts: &str) -> Message {
    fake.wait_until(WAIT, |f| !posts(f, ts, "approval:").is_empty())
        .await;
    posts(fake, ts, "approval:").remove(0)
}

/// An approval clicked in Slack and one decided in the CLI (`centaur approve --deny`): each
/// message loses its buttons and says who decided.
#[tokio::test]
async fn approvals_are_posted_with_buttons_and_updated_when_decided() {
    let Bridge { stack, fake, .. } = bridge("slack-delivery-approve", Harness::Shell, |config| {
        config.approval_policy = ApprovalPolicy::Always;
    })
    .await;
    let ts = fake.post("U1", "C1", "<@U0BOT> echo approved", None).await;
    let message = approval_message(&fake, &ts).await;
    assert!(shown(&message).contains("echo approved"), "{message:?}");
    let found = buttons(&message);
    let ids: Vec<&str> = found.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        ids,
        ["centaur_approve", "centaur_approve_session", "centaur_deny"]
    );
    fake.wait_until(WAIT, |f| {
        f.status("C1", &ts).as_deref() == Some("is waiting for approval")
    })
    .await;
    let (_, _, raw) = &found[0];
    fake.click("U1", "C1", &message.ts, "centaur_approve", raw)
        .await;
    wait_done(&fake, &ts, "white_check_mark").await;
    let decided = fake.message("C1", &message.ts).unwrap();
    assert!(!has_buttons(&decided), "{decided:?}");
    assert!(shown(&decided).contains("Approved by Ann"), "{decided:?}");
    assert_eq!(posts(&fake, &ts, "answer:")[0].text.trim(), "approved");

    // Decided in the CLI: the Slack message shows it too.
    let ts = fake.post("U2", "C1", "<@U0BOT> echo refused", None).await;
    let message = approval_message(&fake, &ts).await;
    let (_, value, _) = buttons(&message).remove(0);
    let home = stack.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let approval_id = value.approval_id.unwrap().to_string();
    let out = stack
        .server
        .centaur(
            &home,
            &["approve", value.thread_key.as_str(), &approval_id, "--deny"],
        )
        .output()
        .await
        .expect("centaur runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fake.wait_until(WAIT, |f| {
        f.message("C1", &message.ts)
            .is_some_and(|m| !has_buttons(&m))
    })
    .await;
    let decided = fake.message("C1", &message.ts).unwrap();
    assert!(
        shown(&decided).contains("Denied by an admin"),
        "{decided:?}"
    );
    wait_done(&fake, &ts, "white_check_mark").await;
    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1);
    assert!(answers[0].text.contains("not approved"), "{:?}", answers[0]);
}

/// The server is killed (SIGKILL, its own process) while a shell turn runs and started again on
/// the same environment and port: the sandbox's turn goes on, the delivery resumes from its
/// cursor, and the control message, the answer (with the output after the kill) and the check
/// mark land exactly once.
#[tokio::test]
async fn a_server_killed_mid_turn_delivers_the_answer_once() {
    let dir = temp_dir("slack-delivery-kill");
    let proxy = TestProxy::start(None, dir.join("proxy")).await;
    let fake = FakeSlack::start().await;
    let port = free_port();
    let mut env = process_env(&dir, &proxy).await;
    for (name, value) in [
        ("CENTAUR_SLACK_MODE", "webhook".to_owned()),
        ("SLACK_BOT_TOKEN", BOT_TOKEN.to_owned()),
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_owned()),
        ("SLACK_API_URL", fake.api_url()),
        ("CENTAUR_SLACK_HARNESS", "shell".to_owned()),
    ] {
        env.push((name.to_owned(), value));
    }
    let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_centaur-server"), &env, port);
    server.wait_ready().await;
    fake.deliver_to(&server.url);
    let ts = fake
        .post(
            "U1",
            "C1",
            "<@U0BOT> echo before; sleep 2; echo after",
            None,
        )
        .await;
    fake.wait_until(WAIT, |f| {
        streams(f, &ts).iter().any(|m| m.text.contains("before"))
    })
    .await;
    server.kill();
    assert!(
        !fake
            .reactions("C1", &ts)
            .iter()
            .any(|r| r == "white_check_mark"),
        "the turn ended before the kill: {}",
        fake.log()
    );
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_centaur-server"), &env, port);
    server.wait_ready().await;
    wait_done(&fake, &ts, "white_check_mark").await;
    // Let a doubled delivery show itself, if there were one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(posts(&fake, &ts, "control:").len(), 1, "{}", fake.log());
    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1, "{}", fake.log());
    assert!(answers[0].text.contains("after"), "{:?}", answers[0]);
    assert!(posts(&fake, &ts, "failure:").is_empty(), "{}", fake.log());
    let marks: Vec<String> = fake
        .calls_to("reactions.add")
        .into_iter()
        .filter(|c| c["timestamp"] == ts.as_str() && c["name"] == "white_check_mark")
        .map(|c| c.to_string())
        .collect();
    assert_eq!(marks.len(), 1, "{}", fake.log());
    assert!(!fake.reactions("C1", &ts).iter().any(|r| r == "x"));
}

/// A command whose output holds `<!here>` and a user mention (made by the command: mentions in
/// the message itself arrive as names): the streamed progress shows them as text, inert, and
/// the answer escapes them; nobody is notified.
#[tokio::test]
async fn mentions_in_progress_and_answers_notify_nobody() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-mentions", Harness::Shell, |_| {}).await;
    let ts = fake
        .post("U1", "C1", r"<@U0BOT> printf '\074!here> \074@U2>\n'", None)
        .await;
    wait_done(&fake, &ts, "white_check_mark").await;
    let streamed: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "chat.startStream" || c.method == "chat.appendStream")
        .map(|c| {
            c.body["markdown_text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let streamed = streamed.concat();
    assert!(streamed.contains("here>"), "{}", fake.log());
    for live in ["<!here>", "<@U2>"] {
        assert!(!streamed.contains(live), "{live} streamed: {streamed}");
    }
    let answer = posts(&fake, &ts, "answer:").remove(0);
    assert!(!answer.text.contains("<!here>"), "{answer:?}");
    assert!(answer.text.contains("&lt;!here&gt;"), "{answer:?}");
}

/// Slack carries out a post but its answer is lost (HTTP 500): before trying again, the bridge
/// looks for the post in the thread, finds it, and does not post it a second time. Both the
/// control message and the answer land once.
#[tokio::test]
async fn a_post_whose_answer_was_lost_is_not_posted_twice() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-lost-answer", Harness::Echo, |_| {}).await;
    fake.lose_answers("chat.postMessage", 2);
    let ts = fake.post("U1", "C1", "<@U0BOT> just once", None).await;
    wait_done(&fake, &ts, "white_check_mark").await;
    assert_eq!(posts(&fake, &ts, "control:").len(), 1, "{}", fake.log());
    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1, "{}", fake.log());
    assert!(answers[0].text.contains("just once"));
    assert!(
        fake.calls_to("conversations.replies")
            .iter()
            .any(|r| r["include_all_metadata"] == true),
        "the thread was not searched: {}",
        fake.log()
    );
    // Each was posted once: found after its lost answer, not posted again.
    assert_eq!(fake.calls_to("chat.postMessage").len(), 2, "{}", fake.log());
}

/// A thread whose delivery state cannot be read is not delivered afresh (which would forget
/// its posts' intents and post them again): its delivery stops, nothing is posted.
#[tokio::test]
async fn an_unreadable_delivery_state_stops_the_thread_instead_of_posting_again() {
    let Bridge { stack, fake, .. } =
        bridge("slack-delivery-unreadable", Harness::Echo, |_| {}).await;
    let ts = fake.post("U1", "C1", "<@U0BOT> once", None).await;
    wait_done(&fake, &ts, "white_check_mark").await;
    let pool = sqlx::PgPool::connect(&stack.server.database_url)
        .await
        .unwrap();
    let key = format!("slack:C1:{ts}");
    let (thread_id, end_id) = turn_end(&pool, &key).await;
    let posted_before = fake.calls_to("chat.postMessage").len();
    // The turn's end undelivered, and a state this version cannot read.
    sqlx::query(
        "UPDATE slack_threads SET delivered_event_id = $2, delivery = $3, lease_owner = NULL, \
         lease_until = NULL WHERE thread_id = $1",
    )
    .bind(thread_id)
    .bind(end_id - 1)
    .bind(json!({"posts": 7, "turn": "not a turn"}))
    .execute(&pool)
    .await
    .unwrap();
    // Taken (the lease), looked at, and left alone.
    let mut taken = false;
    for _ in 0..100 {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT lease_owner FROM slack_threads WHERE thread_id = $1")
                .bind(thread_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        if owner.is_some() {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(taken, "the scheduler never looked at the thread");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fake.calls_to("chat.postMessage").len(),
        posted_before,
        "{}",
        fake.log()
    );
    assert_eq!(posts(&fake, &ts, "answer:").len(), 1);
    let cursor: i64 =
        sqlx::query_scalar("SELECT delivered_event_id FROM slack_threads WHERE thread_id = $1")
            .bind(thread_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(cursor, end_id - 1);
}

/// The server died between committing a post's intent and recording its result: the follower
/// that takes over finds the post in the thread (by its metadata) and does not post it again.
#[tokio::test]
async fn an_interrupted_post_found_in_the_thread_is_not_posted_again() {
    let Bridge { stack, fake, .. } = bridge("slack-delivery-intent", Harness::Echo, |_| {}).await;
    let ts = fake.post("U1", "C1", "<@U0BOT> only once", None).await;
    wait_done(&fake, &ts, "white_check_mark").await;
    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1);
    let answer_key = key_of(&answers[0]).unwrap();
    let control = posts(&fake, &ts, "control:").remove(0);
    let execution_id = key_of(&control).unwrap()["control:".len()..].to_owned();

    // As it was mid-post: the cursor before the turn's end, the answer's intent without result.
    let pool = sqlx::PgPool::connect(&stack.server.database_url)
        .await
        .unwrap();
    let key = format!("slack:C1:{ts}");
    let (thread_id, end_id) = turn_end(&pool, &key).await;
    let delivery = json!({
        "turn": {"execution_id": execution_id, "control_ts": control.ts, "pending": "",
                 "shown": "", "step": "is working…"},
        "posts": {format!("control:{execution_id}"): control.ts, answer_key.clone(): null},
    });
    let posted_before = fake.calls_to("chat.postMessage").len();
    let replies_before = fake.calls_to("conversations.replies").len();
    sqlx::query(
        "UPDATE slack_threads SET delivered_event_id = $2, delivery = $3, lease_owner = NULL, \
         lease_until = NULL WHERE thread_id = $1",
    )
    .bind(thread_id)
    .bind(end_id - 1)
    .bind(&delivery)
    .execute(&pool)
    .await
    .unwrap();

    // Taken over and caught up again.
    for _ in 0..400 {
        let (cursor, turn): (i64, Option<Value>) = sqlx::query_as(
            "SELECT delivered_event_id, delivery -> 'turn' FROM slack_threads WHERE thread_id = $1",
        )
        .bind(thread_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        if cursor >= end_id && turn.is_none_or(|t| t.is_null()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replies: Vec<Value> = fake.calls_to("conversations.replies")[replies_before..].to_vec();
    assert!(
        replies.iter().any(|r| r["include_all_metadata"] == true),
        "the thread was not searched: {}",
        fake.log()
    );
    assert_eq!(
        fake.calls_to("chat.postMessage").len(),
        posted_before,
        "{}",
        fake.log()
    );
    assert_eq!(posts(&fake, &ts, "answer:").len(), 1);
}

/// The Stop button on the control message interrupts the turn: the control message says who
/// stopped it, the turn's message gets a cross, no answer is posted.
#[tokio::test]
async fn the_stop_button_on_the_control_message_stops_the_turn() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-stop", Harness::Shell, |_| {}).await;
    let ts = fake
        .post("U1", "C1", "<@U0BOT> echo started; sleep 60", None)
        .await;
    fake.wait_until(WAIT, |f| {
        streams(f, &ts).iter().any(|m| m.text.contains("started"))
    })
    .await;
    let control = posts(&fake, &ts, "control:").remove(0);
    let (action, value, raw) = buttons(&control).remove(0);
    assert_eq!(action, "centaur_stop");
    assert_eq!(value.thread_key.as_str(), format!("slack:C1:{ts}"));
    fake.click("U1", "C1", &control.ts, "centaur_stop", &raw)
        .await;
    wait_done(&fake, &ts, "x").await;
    let control = fake.message("C1", &control.ts).unwrap();
    assert!(!has_buttons(&control));
    assert!(control.text.contains("Stopped"), "{control:?}");
    assert!(posts(&fake, &ts, "answer:").is_empty());
    assert!(posts(&fake, &ts, "failure:").is_empty());
    assert!(fake.status("C1", &ts).is_none_or(|s| s.is_empty()));
}

/// Slack refuses posts for good (`not_in_channel`): each refusal is skipped, the delivery does
/// not stall on it, and the next turn is delivered in full.
#[tokio::test]
async fn a_permanent_refusal_is_skipped_and_delivery_goes_on() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-delivery-refused", Harness::Echo, |_| {}).await;
    // The control message and the answer of the first turn are refused.
    fake.fail("chat.postMessage", "not_in_channel", 2);
    let first = fake.post("U1", "C1", "<@U0BOT> lost", None).await;
    wait_done(&fake, &first, "white_check_mark").await;
    assert!(posts(&fake, &first, "answer:").is_empty());
    assert!(posts(&fake, &first, "control:").is_empty());
    let refused = fake.calls_to("chat.postMessage").len();
    assert_eq!(refused, 2, "a refusal is not retried: {}", fake.log());

    let second = fake.post("U1", "C1", "<@U0BOT> delivered", None).await;
    wait_done(&fake, &second, "white_check_mark").await;
    assert_eq!(posts(&fake, &second, "control:").len(), 1);
    let answers = posts(&fake, &second, "answer:");
    assert_eq!(answers.len(), 1);
    assert!(answers[0].text.contains("delivered"));
}

/// The replies that waited for a turn cannot start the next one (its harness cannot run here:
/// a 409 that no retry changes): the turn's end is still completed, once: one answer, the
/// check mark, one line in the thread saying why; and it is not done again.
#[tokio::test]
async fn a_next_turn_that_cannot_start_is_said_once_and_the_end_completes() {
    let Bridge { stack, fake, .. } = bridge("slack-after-refused", Harness::Shell, |c| {
        c.harness_env.push((
            "CENTAUR_CODEX_BIN".into(),
            "/usr/bin/centaur-test-no-such-codex".into(),
        ));
    })
    .await;
    let ts = fake
        .post("U1", "C1", "<@U0BOT> sleep 3; echo first", None)
        .await;
    // Running (not just queued: a reply before its start would be its input too).
    fake.wait_until(WAIT, |f| {
        streams(f, &ts).iter().any(|m| m.text.contains("sleep 3"))
    })
    .await;
    // A reply while the shell turn runs waits for its end (shell does not steer).
    fake.post("U2", "C1", "echo second", Some(&ts)).await;
    // The answer held back a few seconds: time to make the next turn impossible once this one
    // has ended (its sandbox released, the thread switched to a harness this server lacks).
    fake.rate_limit("chat.postMessage", 1, 5);
    let pool = sqlx::PgPool::connect(&stack.server.database_url)
        .await
        .unwrap();
    let key = format!("slack:C1:{ts}");
    let mut ended = false;
    for _ in 0..400 {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT e.status FROM executions e JOIN threads t ON t.id = e.thread_id \
             WHERE t.thread_key = $1 ORDER BY e.created_at LIMIT 1",
        )
        .bind(&key)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if status.as_deref() == Some("completed") {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ended, "the first turn did not complete");
    stack
        .server
        .post(&format!("/agent/threads/{key}/release"), json!({}))
        .await;
    sqlx::query("UPDATE threads SET harness = 'codex' WHERE thread_key = $1")
        .bind(&key)
        .execute(&pool)
        .await
        .unwrap();

    wait_done(&fake, &ts, "white_check_mark").await;
    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1, "{}", fake.log());
    assert!(answers[0].text.contains("first"));
    let said = posts(&fake, &ts, "after:");
    assert_eq!(said.len(), 1, "{}", fake.log());
    assert!(said[0].text.contains("could not start"), "{:?}", said[0]);
    assert!(said[0].text.contains("codex"), "{:?}", said[0]);
    // Done: the end is not redone (no more posts, no searches), the cursor past it.
    let posted = fake.calls_to("chat.postMessage").len();
    let updated = fake.calls_to("chat.update").len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        fake.calls_to("chat.postMessage").len(),
        posted,
        "{}",
        fake.log()
    );
    assert_eq!(
        fake.calls_to("chat.update").len(),
        updated,
        "{}",
        fake.log()
    );
    assert!(
        fake.calls_to("conversations.replies").is_empty(),
        "{}",
        fake.log()
    );
    let turn: Option<Value> = sqlx::query_scalar(
        "SELECT s.delivery -> 'turn' FROM slack_threads s JOIN threads t ON t.id = s.thread_id \
         WHERE t.thread_key = $1",
    )
    .bind(&key)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(turn.as_ref().is_none_or(Value::is_null), "{turn:?}");
}

/// A post's answer is lost and Slack then refuses to show the thread (a missing history
/// scope): the post is not made again blindly; delivery waits until the thread can be searched,
/// finds the post and goes on. Each message lands once.
#[tokio::test]
async fn a_refused_search_after_a_lost_answer_does_not_post_again() {
    let Bridge {
        stack: _stack,
        fake,
        ..
    } = bridge("slack-search-refused", Harness::Echo, |_| {}).await;
    fake.lose_answers("chat.postMessage", 2);
    fake.fail("conversations.replies", "missing_scope", 1);
    let ts = fake.post("U1", "C1", "<@U0BOT> not twice", None).await;
    wait_done(&fake, &ts, "white_check_mark").await;
    assert_eq!(posts(&fake, &ts, "control:").len(), 1, "{}", fake.log());
    let answers = posts(&fake, &ts, "answer:");
    assert_eq!(answers.len(), 1, "{}", fake.log());
    assert!(answers[0].text.contains("not twice"));
    assert_eq!(fake.calls_to("chat.postMessage").len(), 2, "{}", fake.log());
    assert!(fake.calls_to("conversations.replies").len() >= 2);
}

/// The thread's id and the event id of its (only) turn's `execution.completed`.
async fn turn_end(pool: &sqlx::PgPool, key: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT t.id, e.event_id FROM threads t JOIN events e ON e.thread_id = t.id \
         WHERE t.thread_key = $1 AND e.type = 'execution.completed'",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap()
}
