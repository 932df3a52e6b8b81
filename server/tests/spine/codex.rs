//! The real Codex CLI (`@openai/codex` from npm) in a real sandbox, driven by the runner through
//! `codex app-server`, against a scripted mock of the OpenAI Responses API that it reaches only
//! through the egress proxy, which swaps the sandbox's placeholder for the real key.

use std::time::Duration;

use reqwest::Method;
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
        let (status, body) = stack
            .server
            .admin(
                Method::POST,
                &format!("/agent/threads/{key}/approvals/{approval_id}"),
                json!({"decision": decision}),
            )
            .await;
        assert!(status.is_success(), "{body}");
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
