//! The real Claude Code CLI (`@anthropic-ai/claude-code` from npm) in a real sandbox, driven by
//! the runner over stream-json, against a scripted mock of the Anthropic Messages API that it
//! reaches only through the egress proxy (which swaps the `x-api-key` placeholder).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use reqwest::Method;
use serde_json::{Value, json};

use centaur_test_support::events::{is_terminal, last_id};
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::npm::claude_dir;
use centaur_test_support::proxy::REAL_ANTHROPIC_KEY;

type Keys = Arc<Mutex<Vec<String>>>;

fn sse(events: &[Value]) -> Response {
    let body: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}

fn start(id: &str) -> Value {
    json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": "claude-mock",
           "content": [], "stop_reason": null, "usage": {"input_tokens": 30, "output_tokens": 1}}})
}

fn end(stop: &str) -> [Value; 2] {
    [
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ]
}

/// "run" gets a Bash tool call (then text once its result comes back); anything else, text.
async fn messages(State(keys): State<Keys>, headers: HeaderMap, body: String) -> Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    keys.lock().unwrap().push(key.clone());
    if key != REAL_ANTHROPIC_KEY {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from(r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#))
            .unwrap();
    }
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    if request["stream"] != json!(true) {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(json!({"id": "msg_0", "type": "message", "role": "assistant", "model": "claude-mock",
                "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}).to_string()))
            .unwrap();
    }
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    let tool_result = last["content"]
        .as_array()
        .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
    if !tool_result && last["content"].to_string().contains("run the command") {
        let input =
            json!({"command": "echo approved > approved.txt", "description": "write a file"})
                .to_string();
        let mut events = vec![
            start("msg_tool"),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input}}),
            json!({"type": "content_block_stop", "index": 0}),
        ];
        events.extend(end("tool_use"));
        return sse(&events);
    }
    let text = if tool_result {
        "The command is done."
    } else {
        "Hello from the mock Claude"
    };
    let (head, tail) = text.split_at(text.len() / 2);
    let mut events = vec![
        start("msg_text"),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": head}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": tail}}),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    events.extend(end("end_turn"));
    sse(&events)
}

async fn mock_messages_api() -> (u16, Keys) {
    let keys = Keys::default();
    let app = axum::Router::new()
        .route("/v1/messages", axum::routing::post(messages))
        .with_state(keys.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, keys)
}

#[tokio::test]
async fn claude_code_turns_with_text_and_approvals() {
    let (port, keys) = mock_messages_api().await;
    let host = format!("127.0.0.1:{port}");
    let policy = json!({
        "allow": [host], "allow_private": [host],
        "secrets": [{"name": "ANTHROPIC_API_KEY", "hosts": [host], "headers": ["x-api-key"]}],
    });
    let stack = LocalStack::start_with("claude", 0, policy, |config, _| {
        config.harness_dir = Some(claude_dir());
        config.harness_env = vec![
            ("ANTHROPIC_BASE_URL".into(), format!("http://{host}")),
            (
                "CENTAUR_CLAUDE_BIN".into(),
                "/opt/centaur/harness/claude".into(),
            ),
        ];
        config.approval_policy = "always".parse().unwrap();
    })
    .await;
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
        let (status, body) = stack
            .server
            .admin(
                Method::POST,
                &format!("/agent/threads/{key}/approvals/{approval_id}"),
                json!({"decision": decision}),
            )
            .await;
        assert!(status.is_success(), "{body}");
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
