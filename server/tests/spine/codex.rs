//! The real Codex CLI (`@openai/codex` from npm) in a real sandbox, driven by the runner through
//! `codex app-server`, against a scripted mock of the OpenAI Responses API that it reaches only
//! through the egress proxy, which swaps the sandbox's placeholder for the real key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::stream;
use reqwest::Method;
use serde_json::{Value, json};

use centaur_test_support::events::{is_terminal, last_id};
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::npm::codex_dir;
use centaur_test_support::proxy::REAL_OPENAI_KEY;

/// What the mock model was sent.
#[derive(Default)]
struct Seen {
    authorizations: Vec<String>,
    bodies: Vec<Value>,
}

type Shared = Arc<Mutex<Seen>>;

/// A scripted model: "hello" gets text; "run" gets a shell call, then text once the call's
/// output comes back; "wait" starts a response and never finishes it.
async fn responses(State(seen): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    {
        let mut seen = seen.lock().unwrap();
        seen.authorizations.push(auth.clone());
        seen.bodies.push(request.clone());
    }
    if auth != format!("Bearer {REAL_OPENAI_KEY}") {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from(r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#))
            .unwrap();
    }
    let input = request["input"].as_array().cloned().unwrap_or_default();
    let last = input.last().cloned().unwrap_or_default();
    let user_text = input
        .iter()
        .rev()
        .find(|item| item["role"] == "user")
        .map(|item| item["content"].to_string())
        .unwrap_or_default();
    let mut events = vec![sse(
        "response.created",
        json!({"type": "response.created", "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}}),
    )];
    if last["type"] == "function_call_output" {
        events.extend(message("The command ran; I am done."));
    } else if user_text.contains("wait") {
        let head = stream::iter(events.into_iter().map(Ok::<_, std::io::Error>));
        let hang = stream::once(async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            Ok::<_, std::io::Error>(String::new())
        });
        return sse_response(Body::from_stream(futures_util::StreamExt::chain(
            head, hang,
        )));
    } else if user_text.contains("run") {
        let tool = request["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str())
            .find(|name| *name == "exec_command" || *name == "shell")
            .unwrap_or("exec_command")
            .to_owned();
        let arguments = json!({"cmd": "echo approved > /workspace/approved.txt"}).to_string();
        let call = json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": tool, "arguments": arguments, "status": "completed"});
        events.push(sse(
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0, "item": call}),
        ));
        events.push(sse(
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": 0, "item": call}),
        ));
        events.push(completed(vec![call]));
    } else {
        events.extend(message("Hello from the mock model"));
    }
    sse_response(Body::from(events.concat()))
}

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn completed(output: Vec<Value>) -> String {
    sse(
        "response.completed",
        json!({"type": "response.completed", "response": {"id": "resp_1", "object": "response", "status": "completed", "output": output,
               "usage": {"input_tokens": 42, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
                         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 49}}}),
    )
}

fn message(text: &str) -> Vec<String> {
    let (head, tail) = text.split_at(text.len() / 2);
    let done = json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": text, "annotations": []}]});
    vec![
        sse(
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}}),
        ),
        sse(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": head}),
        ),
        sse(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": tail}),
        ),
        sse(
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": 0, "item": done}),
        ),
        completed(vec![done]),
    ]
}

async fn mock_model() -> (u16, Shared) {
    let seen = Shared::default();
    let app = axum::Router::new()
        .route("/v1/responses", axum::routing::post(responses))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

async fn codex_stack(port: u16) -> LocalStack {
    let host = format!("127.0.0.1:{port}");
    let policy = json!({
        "allow": [host], "allow_private": [host],
        "secrets": [{"name": "OPENAI_API_KEY", "hosts": [host], "headers": ["authorization"], "format": "Bearer {value}"}],
    });
    LocalStack::start_with("codex", 0, policy, |config, dir| {
        let codex_config = format!(
            r#"model = "mock-model"
model_provider = "mock"

[model_providers.mock]
name = "mock"
base_url = "http://{host}/v1"
wire_api = "responses"
env_key = "OPENAI_API_KEY"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = false
"#
        );
        std::fs::write(dir.join("codex.toml"), codex_config).unwrap();
        config.codex_config = Some(dir.join("codex.toml"));
        config.harness_dir = Some(codex_dir());
        config.approval_policy = "always".parse().unwrap();
    })
    .await
}

#[tokio::test]
async fn codex_turns_with_text_approvals_and_an_interrupt() {
    let (port, seen) = mock_model().await;
    let stack = codex_stack(port).await;
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
