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
