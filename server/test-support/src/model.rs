//! A scripted mock of the OpenAI Responses API (`POST /v1/responses`, server-sent events in
//! the shapes Codex 0.169.0 accepts), and a [`LocalStack`] whose sandboxes run the real Codex
//! CLI against it through the egress proxy.
//!
//! The model answers by rules on the latest user message: the first rule whose trigger the
//! message contains decides. A [`Reply::Command`] asks Codex to run a shell command; once the
//! command's output comes back (a `function_call_output` item), the model says the rule's
//! closing text. Requests without the real key (swapped in by the proxy) get OpenAI's 401.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::stream;
use serde_json::{Value, json};

use crate::local_stack::LocalStack;
use crate::npm::codex_dir;
use crate::proxy::REAL_OPENAI_KEY;

/// What the model does when the latest user message contains a rule's trigger.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Streams this text as the assistant's message.
    Text(String),
    /// Calls the shell tool with `cmd`; says `then` once the output is back.
    Command { cmd: String, then: String },
    /// Calls the offered tool whose name contains `name` (an MCP tool, say) with `arguments`;
    /// says `then` once its output is back. Offered no such tool, it says which it was offered.
    Tool {
        name: String,
        arguments: Value,
        then: String,
    },
    /// Starts a response and never finishes it.
    Hang,
}

/// What the model was sent.
#[derive(Default, Debug)]
pub struct Seen {
    pub authorizations: Vec<String>,
    /// Every request body, in order.
    pub bodies: Vec<Value>,
    /// Every `function_call_output` item's `output`, in order of arrival.
    pub outputs: Vec<String>,
}

/// The text every unmatched message gets.
pub const HELLO: &str = "Hello from the mock model";

#[derive(Clone)]
struct Model {
    rules: Arc<Vec<(String, Reply)>>,
    seen: Arc<Mutex<Seen>>,
}

/// A mock model listening on 127.0.0.1.
pub struct MockModel {
    pub port: u16,
    pub seen: Arc<Mutex<Seen>>,
}

impl MockModel {
    /// Starts the model with `rules` (trigger, reply), tried in order.
    pub async fn start(rules: Vec<(&str, Reply)>) -> MockModel {
        let model = Model {
            rules: owned(rules),
            seen: Arc::default(),
        };
        let seen = model.seen.clone();
        let app = axum::Router::new()
            .route("/v1/responses", axum::routing::post(responses))
            .with_state(model);
        MockModel {
            port: serve(app).await,
            seen,
        }
    }

    /// `host:port`, as the policy and Codex's provider name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Codex's `config.toml` for this model: a custom provider whose key is the sandbox's
    /// `OPENAI_API_KEY` placeholder, no retries, no WebSocket, and a model name that gets the
    /// classic tool layout.
    pub fn codex_config(&self) -> String {
        format!(
            r#"model = "mock-model"
model_provider = "mock"

[model_providers.mock]
name = "mock"
base_url = "http://{}/v1"
wire_api = "responses"
env_key = "OPENAI_API_KEY"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = false
"#,
            self.host()
        )
    }

    /// The egress policy that lets sandboxes reach this model, with the OpenAI key bound to it.
    pub fn policy(&self) -> Value {
        let host = self.host();
        json!({
            "allow": [host], "allow_private": [host],
            "secrets": [{"name": "OPENAI_API_KEY", "hosts": [host], "headers": ["authorization"], "format": "Bearer {value}"}],
        })
    }

    /// A local stack whose `codex` sandboxes run the real Codex CLI against this model, with
    /// `approval_policy` (`never`, `on-request` or `always`).
    pub async fn codex_stack(&self, name: &str, approval_policy: &str) -> LocalStack {
        let config_text = self.codex_config();
        LocalStack::start_with(name, 0, self.policy(), |config, dir| {
            std::fs::write(dir.join("codex.toml"), config_text).unwrap();
            config.codex_config = Some(dir.join("codex.toml"));
            config.harness_dir = Some(codex_dir());
            config.approval_policy = approval_policy.parse().unwrap();
        })
        .await
    }
}

/// Rules as the mocks keep them.
pub(crate) fn owned(rules: Vec<(&str, Reply)>) -> Arc<Vec<(String, Reply)>> {
    Arc::new(
        rules
            .into_iter()
            .map(|(trigger, reply)| (trigger.to_owned(), reply))
            .collect(),
    )
}

/// Serves `app` on a free port of 127.0.0.1 for the rest of the test; returns the port.
pub(crate) async fn serve(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

async fn responses(State(model): State<Model>, headers: HeaderMap, body: String) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    let input = request["input"].as_array().cloned().unwrap_or_default();
    {
        let mut seen = model.seen.lock().unwrap();
        seen.authorizations.push(auth.clone());
        seen.bodies.push(request.clone());
        if let Some(item) = input.last()
            && item["type"] == "function_call_output"
        {
            let output = match &item["output"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            seen.outputs.push(output);
        }
    }
    if auth != format!("Bearer {REAL_OPENAI_KEY}") {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from(r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#))
            .unwrap();
    }
    let last = input.last().cloned().unwrap_or_default();
    let user_text = input
        .iter()
        .rev()
        .find(|item| item["role"] == "user")
        .map(|item| item["content"].to_string())
        .unwrap_or_default();
    let reply = model
        .rules
        .iter()
        .find(|(trigger, _)| user_text.contains(trigger.as_str()))
        .map(|(_, reply)| reply.clone())
        .unwrap_or_else(|| Reply::Text(HELLO.into()));
    let mut events = vec![sse(
        "response.created",
        json!({"type": "response.created", "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}}),
    )];
    match reply {
        Reply::Command { then, .. } | Reply::Tool { then, .. }
            if last["type"] == "function_call_output" =>
        {
            events.extend(message(&then));
        }
        Reply::Tool {
            name, arguments, ..
        } => {
            let offered = tool_names(&request["tools"]);
            match offered
                .iter()
                .find(|(_, offered)| offered.contains(name.as_str()))
            {
                Some((namespace, tool)) => {
                    let mut call = json!({"type": "function_call", "id": "fc_1", "call_id": format!("call_{}", input.len()), "name": tool, "arguments": arguments.to_string(), "status": "completed"});
                    if let Some(namespace) = namespace {
                        call["namespace"] = json!(namespace);
                    }
                    events.push(sse(
                        "response.output_item.added",
                        json!({"type": "response.output_item.added", "output_index": 0, "item": call}),
                    ));
                    events.push(sse(
                        "response.output_item.done",
                        json!({"type": "response.output_item.done", "output_index": 0, "item": call}),
                    ));
                    events.push(completed(vec![call]));
                }
                None => events.extend(message(&format!(
                    "no tool named like {name} was offered; offered: {offered:?}"
                ))),
            }
        }
        Reply::Command { cmd, .. } => {
            let tool = request["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["name"].as_str())
                .find(|name| *name == "exec_command" || *name == "shell")
                .unwrap_or("exec_command")
                .to_owned();
            let arguments = json!({"cmd": cmd}).to_string();
            let call = json!({"type": "function_call", "id": "fc_1", "call_id": format!("call_{}", input.len()), "name": tool, "arguments": arguments, "status": "completed"});
            events.push(sse(
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0, "item": call}),
            ));
            events.push(sse(
                "response.output_item.done",
                json!({"type": "response.output_item.done", "output_index": 0, "item": call}),
            ));
            events.push(completed(vec![call]));
        }
        Reply::Hang => {
            let head = stream::iter(events.into_iter().map(Ok::<_, std::io::Error>));
            let hang = stream::once(async {
                tokio::time::sleep(Duration::from_secs(120)).await;
                Ok::<_, std::io::Error>(String::new())
            });
            return sse_response(Body::from_stream(futures_util::StreamExt::chain(
                head, hang,
            )));
        }
        Reply::Text(text) => events.extend(message(&text)),
    }
    sse_response(Body::from(events.concat()))
}

/// The tools a request offers: each one's namespace (Codex puts an MCP server's tools in one,
/// `mcp__<server>`) and name.
fn tool_names(tools: &Value) -> Vec<(Option<String>, String)> {
    let mut names = Vec::new();
    for tool in tools.as_array().into_iter().flatten() {
        if tool["type"] == "namespace" {
            let namespace = tool["name"].as_str().map(str::to_owned);
            for inner in tool["tools"].as_array().into_iter().flatten() {
                if let Some(name) = inner["name"].as_str() {
                    names.push((namespace.clone(), name.to_owned()));
                }
            }
        } else if let Some(name) = tool["name"].as_str() {
            names.push((None, name.to_owned()));
        }
    }
    names
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

/// Every response reports 42 input and 7 output tokens.
fn completed(output: Vec<Value>) -> String {
    sse(
        "response.completed",
        json!({"type": "response.completed", "response": {"id": "resp_1", "object": "response", "status": "completed", "output": output,
               "usage": {"input_tokens": 42, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
                         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 49}}}),
    )
}

fn message(text: &str) -> Vec<String> {
    let mut half = text.len() / 2;
    while !text.is_char_boundary(half) {
        half -= 1;
    }
    let (head, tail) = text.split_at(half);
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
