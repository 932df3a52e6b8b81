//! The real Claude Code CLI (`@anthropic-ai/claude-code` from npm) in a real sandbox, driven by
//! the runner over stream-json, against a scripted mock of the Anthropic Messages API that it
//! reaches only through the egress proxy (which swaps the `x-api-key` placeholder).

use serde_json::json;

use centaur_test_support::anthropic::MockMessages;
use centaur_test_support::events::{is_terminal, last_id};
use centaur_test_support::model::Reply;
use centaur_test_support::proxy::REAL_ANTHROPIC_KEY;

#[tokio::test]
async fn claude_code_turns_with_text_and_approvals() {
    let model = MockMessages::start(vec![(
        "run the command",
        Reply::Command {
            cmd: "echo approved > approved.txt".into(),
            then: "The command is done.".into(),
        },
    )])
    .await;
    let keys = model.keys.clone();
    let stack = model.claude_stack("claude", "always").await;
    let key = "api:claude";

    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "claude-code", "message": "say hello"}),
        )
        .await;
    let events = stack.until(key, 0, is_terminal).await;
    let end = events.last().unwrap();
    assert_eq!(end["type"], "execution.completed", "{events:#?}");
    assert_eq!(end["result_text"], "Hello from the mock Claude");
    assert!(
        events.iter().any(|e| e["type"] == "agent.message.delta"),
        "{events:#?}"
    );
    assert!(events.iter().any(|e| e["type"] == "usage"), "{events:#?}");
    {
        let keys = keys.lock().unwrap();
        assert!(!keys.is_empty());
        assert!(
            keys.iter().all(|k| k == REAL_ANTHROPIC_KEY),
            "only the real key, swapped in by the proxy: {keys:?}"
        );
    }
    let mut after = last_id(&events);

    let approved_file = stack.only_workspace().join("approved.txt");
    for (decision, runs) in [("approve", true), ("deny", false)] {
        let _ = std::fs::remove_file(&approved_file);
        stack
            .server
            .post(
                "/agent/execute",
                json!({"thread_key": key, "message": "please run the command"}),
            )
            .await;
        let before = stack
            .until(key, after, |e| e["type"] == "approval.requested")
            .await;
        let request = before.last().unwrap();
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
        let events = stack.until(key, last_id(&before), is_terminal).await;
        assert_eq!(
            events.last().unwrap()["type"],
            "execution.completed",
            "{decision}: {events:#?}"
        );
        assert_eq!(approved_file.exists(), runs, "{decision}: {events:#?}");
        // The command waited for its approval: nothing of it came before the request, and a
        // denied one never started.
        assert!(
            !before
                .iter()
                .any(|e| e["type"].as_str().unwrap().starts_with("command.")),
            "{decision}: {before:#?}"
        );
        let commands: Vec<&str> = events
            .iter()
            .filter_map(|e| e["type"].as_str())
            .filter(|t| t.starts_with("command."))
            .collect();
        if runs {
            assert_eq!(commands.first(), Some(&"command.started"), "{events:#?}");
            assert!(
                events
                    .iter()
                    .any(|e| e["type"] == "command.finished" && e["exit_code"] == 0),
                "{events:#?}"
            );
        } else {
            assert!(
                commands.is_empty(),
                "a denied command never ran: {events:#?}"
            );
        }
        after = last_id(&events);
    }
}

/// A message posted while Claude Code's turn runs (here: waiting for an approval) goes to the
/// CLI's stdin, and once the model's next request had it (after the approval), the runner
/// reports it: the server records it as that turn's input while the turn still runs, so the
/// next turn does not start with it again and `?all` does not withdraw it. (Before, it stayed
/// waiting and the next turn started with it a second time.)
#[tokio::test]
async fn a_message_steered_into_a_claude_code_turn_is_that_turns_input() {
    let model = MockMessages::start(vec![(
        "run the command",
        Reply::Command {
            cmd: "echo approved > approved.txt".into(),
            then: "The command is done.".into(),
        },
    )])
    .await;
    let stack = model.claude_stack("claude-steer", "always").await;
    let key = "api:claude-steer";

    let accepted = stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "claude-code", "message": "please run the command"}),
        )
        .await;
    let execution_id: uuid::Uuid = accepted["execution_id"].as_str().unwrap().parse().unwrap();
    let before = stack
        .until(key, 0, |e| e["type"] == "approval.requested")
        .await;
    let approval_id = before.last().unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let posted = stack
        .server
        .post(
            "/agent/message",
            json!({"thread_key": key, "text": "and say thanks afterwards"}),
        )
        .await;
    let message_id: uuid::Uuid = posted["message_id"].as_str().unwrap().parse().unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&stack.server.database_url)
        .await
        .unwrap();
    let taken_by = async |conn: &mut sqlx::PgConnection| -> Option<uuid::Uuid> {
        sqlx::query_scalar("SELECT execution_id FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_one(conn)
            .await
            .unwrap()
    };
    // Approved, the command runs, and the model is shown the message with its result, in the
    // same turn (Claude Code adds it to the conversation). The mock, answering on the person's
    // first words, asks for the command again: the turn is interrupted there.
    stack.server.decide(key, &approval_id, "approve").await;
    let events = stack
        .until(key, last_id(&before), |e| {
            is_terminal(e) || e["type"] == "approval.requested"
        })
        .await;
    assert_eq!(
        events.last().unwrap()["type"],
        "approval.requested",
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "command.finished" && e["exit_code"] == 0),
        "{events:#?}"
    );
    assert!(
        model
            .conversations
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.to_string().contains("and say thanks afterwards")),
        "the model was shown the message within the turn"
    );
    // Recorded while the turn still runs (now waiting for the second approval).
    let waited = std::time::Instant::now();
    while taken_by(&mut conn).await.is_none() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "the steered message is still waiting for a turn"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(taken_by(&mut conn).await, Some(execution_id));
    let answer = stack
        .server
        .post(&format!("/agent/threads/{key}/interrupt"), json!(null))
        .await;
    assert_eq!(answer["execution_id"], json!(execution_id), "{answer}");
    let end = stack.until(key, last_id(&events), is_terminal).await;
    assert_eq!(
        end.last().unwrap()["type"],
        "execution.cancelled",
        "{end:#?}"
    );
    assert_eq!(taken_by(&mut conn).await, Some(execution_id));
    // Nothing waits for the next turn.
    let answer = stack
        .server
        .post(
            &format!("/agent/threads/{key}/interrupt?all=true"),
            json!(null),
        )
        .await;
    assert_eq!(answer["withdrawn_messages"], 0, "{answer}");
}
