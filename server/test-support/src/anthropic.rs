//! A scripted mock of the Anthropic Messages API (`POST /v1/messages`, server-sent events in
//! the shapes Claude Code accepts), and a [`LocalStack`] whose sandboxes run the real Claude
//! Code CLI against it through the egress proxy.
//!
//! Like [`crate::model`], it answers by rules ([`Reply`]) on the latest user words: the
//! latest user message with text of its own (Claude Code adds reminders of its own after the
//! user's words, and after an interrupt sends the cancelled call's result with the next
//! words). A [`Reply::Command`] asks for the `Bash` tool; once its result is the last message,
//! the model says the rule's closing text. Requests without the real key (swapped in by the
//! proxy) get Anthropic's 401.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::stream;
use serde_json::{Value, json};

use crate::local_stack::LocalStack;
use crate::model::{Reply, owned, serve};
use crate::npm::claude_dir;
use crate::proxy::REAL_ANTHROPIC_KEY;

/// The text every unmatched message gets.
pub const CLAUDE_HELLO: &str = "Hello from the mock Claude";

#[derive(Clone)]
struct Model {
    rules: Arc<Vec<(String, Reply)>>,
    keys: Arc<Mutex<Vec<String>>>,
    conversations: Arc<Mutex<Vec<Value>>>,
}

/// A mock Messages API listening on 127.0.0.1.
pub struct MockMessages {
    pub port: u16,
    /// Every `x-api-key` it was sent, in order.
    pub keys: Arc<Mutex<Vec<String>>>,
    /// The `messages` of every streamed request (the conversation the model was shown), in
    /// order.
    pub conversations: Arc<Mutex<Vec<Value>>>,
}

impl MockMessages {
    /// Starts the API with `rules` (trigger, reply), tried in order.
    pub async fn start(rules: Vec<(&str, Reply)>) -> MockMessages {
        let model = Model {
            rules: owned(rules),
            keys: Arc::default(),
            conversations: Arc::default(),
        };
        let keys = model.keys.clone();
        let conversations = model.conversations.clone();
        let app = axum::Router::new()
            .route("/v1/messages", axum::routing::post(messages))
            .with_state(model);
        MockMessages {
            port: serve(app).await,
            keys,
            conversations,
        }
    }

    /// `host:port`, as the policy and `ANTHROPIC_BASE_URL` name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A local stack whose `claude-code` sandboxes run the real Claude Code CLI against this
    /// API (its key bound to it as `x-api-key`), with `approval_policy`.
    pub async fn claude_stack(&self, name: &str, approval_policy: &str) -> LocalStack {
        let host = self.host();
        let policy = json!({
            "allow": [host], "allow_private": [host],
            "secrets": [{"name": "ANTHROPIC_API_KEY", "hosts": [host], "headers": ["x-api-key"]}],
        });
        LocalStack::start_with(name, 0, policy, |config, _| {
            config.harness_dir = Some(claude_dir());
            config.harness_env = vec![
                ("ANTHROPIC_BASE_URL".into(), format!("http://{host}")),
                (
                    "CENTAUR_CLAUDE_BIN".into(),
                    "/opt/centaur/harness/claude".into(),
                ),
            ];
            config.approval_policy = approval_policy.parse().unwrap();
        })
        .await
    }
}

/// Whether a message's content holds a block of `kind`.
fn holds(message: &Value, kind: &str) -> bool {
    message["content"]
        .as_array()
        .is_some_and(|c| c.iter().any(|b| b["type"] == kind))
}

async fn messages(State(model): State<Model>, headers: HeaderMap, body: String) -> Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    model.keys.lock().unwrap().push(key.clone());
    if key != REAL_ANTHROPIC_KEY {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from(r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#))
            .unwrap();
    }
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    if request["stream"] != json!(true) {
        // Claude Code's own side requests (titles and the like).
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(json!({"id": "msg_0", "type": "message", "role": "assistant", "model": "claude-mock",
                "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}).to_string()))
            .unwrap();
    }
    model
        .conversations
        .lock()
        .unwrap()
        .push(request["messages"].clone());
    let conversation = request["messages"].as_array().cloned().unwrap_or_default();
    let last = conversation.last().cloned().unwrap_or_default();
    let answered = holds(&last, "tool_result") && !holds(&last, "text");
    let words = conversation
        .iter()
        .rev()
        .find(|m| m["role"] == "user" && (m["content"].is_string() || holds(m, "text")))
        .map(|m| m["content"].to_string())
        .unwrap_or_default();
    let reply = model
        .rules
        .iter()
        .find(|(trigger, _)| words.contains(trigger.as_str()))
        .map(|(_, reply)| reply.clone())
        .unwrap_or_else(|| Reply::Text(CLAUDE_HELLO.into()));
    match reply {
        Reply::Command { then, .. } | Reply::Tool { then, .. } if answered => text(&then),
        Reply::Command { cmd, .. } => {
            let input = json!({"command": cmd, "description": "run it"});
            tool_use(conversation.len(), "Bash", &input)
        }
        Reply::Tool {
            name, arguments, ..
        } => {
            let offered: Vec<&str> = request["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["name"].as_str())
                .collect();
            match offered
                .iter()
                .find(|offered| offered.contains(name.as_str()))
            {
                Some(tool) => tool_use(conversation.len(), tool, &arguments),
                None => text(&format!(
                    "no tool named like {name} was offered; offered: {offered:?}"
                )),
            }
        }
        Reply::Hang => sse(stream_of(&[start("msg_hang")]), true),
        Reply::Text(said) => text(&said),
    }
}

/// A response that uses `tool` with `input`.
fn tool_use(turn: usize, tool: &str, input: &Value) -> Response {
    let mut events = vec![
        start("msg_tool"),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": format!("toolu_{turn}"), "name": tool, "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    events.extend(end("tool_use"));
    sse(stream_of(&events), false)
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

/// `said` streamed in two deltas.
fn text(said: &str) -> Response {
    let mut half = said.len() / 2;
    while !said.is_char_boundary(half) {
        half -= 1;
    }
    let (head, tail) = said.split_at(half);
    let mut events = vec![
        start("msg_text"),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": head}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": tail}}),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    events.extend(end("end_turn"));
    sse(stream_of(&events), false)
}

fn stream_of(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

/// The events as a response; `hang` keeps it open for two minutes after them.
fn sse(events: String, hang: bool) -> Response {
    let body = if hang {
        let head = stream::once(async move { Ok::<_, std::io::Error>(events) });
        let rest = stream::once(async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            Ok::<_, std::io::Error>(String::new())
        });
        Body::from_stream(futures_util::StreamExt::chain(head, rest))
    } else {
        Body::from(events)
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}
