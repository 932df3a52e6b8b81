//! `centaur-tool mcp`: an MCP server over stdio (JSON-RPC 2.0, one message per line) offering
//! every ready method of every tool as one MCP tool named `<tool>_<method>`, called through the
//! runner's tools endpoint. stdout carries the protocol only; logs go to stderr. It exits when
//! stdin ends.
//!
//! Calls run concurrently (one waiting for a person's approval does not hold up the others or
//! a `ping`), without a time limit of their own. A tool's failure, a denial or a timeout is a
//! result with `isError` whose text is the server's message, for the model to read; an unknown
//! tool is a JSON-RPC error (-32602).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centaur_protocol::mcp::{
    CallToolParams, CallToolResult, CancelledParams, Content, ErrorResponse, Implementation,
    Incoming, InitializeParams, InitializeResult, ListToolsResult, PROTOCOL_VERSIONS, RequestId,
    Response, ServerCapabilities, Tool, ToolAnnotations, ToolsCapability, code,
};
use centaur_protocol::tools::{MethodInfo, ToolCallAnswer, ToolInfo, ToolList, ToolStatus};
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::link::{Link, LinkError};

/// The longest MCP tool name given: clients allow 64 characters and Codex and Claude Code put
/// `mcp__centaur__` (14) before it.
pub const MAX_NAME: usize = 50;
/// How long `tools/list` waits for tools still loading (their environments being built) before
/// it answers without them.
const LOADING_WAIT: Duration = Duration::from_secs(10);
const LOADING_POLL: Duration = Duration::from_millis(500);

const INSTRUCTIONS: &str = "Centaur's tools: each MCP tool is one method of a Centaur tool, \
named <tool>_<method>. Some methods wait for a person's approval before they run; a denial comes \
back as an error saying who denied it and why.";

/// The MCP tools for `list`: each ready method, its MCP name, and the tool and method it calls.
///
/// A name depends only on its tool and method, never on the other tools or their order: when
/// two methods map to the same name (`a_b` + `c` and `a` + `b_c`), each of them gets its hash,
/// so adding a tool can take a name away but never points it at another method.
pub fn mcp_tools(list: &ToolList) -> Vec<(Tool, String, String)> {
    let ready: Vec<(&ToolInfo, &MethodInfo)> = list
        .tools
        .iter()
        .filter(|info| match info.status {
            ToolStatus::Ready => true,
            ToolStatus::Loading | ToolStatus::Broken => false,
        })
        .flat_map(|info| info.methods.iter().map(move |method| (info, method)))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (info, method) in &ready {
        *seen.entry(mcp_name(&info.name, &method.name)).or_default() += 1;
    }
    let named: Vec<(String, &ToolInfo, &MethodInfo)> = ready
        .into_iter()
        .map(|(info, method)| {
            let name = mcp_name(&info.name, &method.name);
            let name = if seen.get(&name).copied().unwrap_or(0) > 1 {
                with_hash(&name, &info.name, &method.name)
            } else {
                name
            };
            (name, info, method)
        })
        .collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (name, _, _) in &named {
        *count.entry(name.as_str()).or_default() += 1;
    }
    let mut tools = Vec::new();
    for (name, info, method) in &named {
        if count.get(name.as_str()).copied().unwrap_or(0) > 1 {
            // Even with their hashes (or a tool named like another's hashed name).
            tracing::warn!(tool = %info.name, method = %method.name, name, "methods share an MCP name; they are left out");
            continue;
        }
        tools.push((
            tool(name, info, method),
            info.name.clone(),
            method.name.clone(),
        ));
    }
    tools
}

/// `<tool>_<method>`, characters outside `[A-Za-z0-9_-]` as `_`, at most [`MAX_NAME`]
/// characters (a longer one is cut and ends with a hash of the whole).
pub fn mcp_name(tool: &str, method: &str) -> String {
    let name: String = format!("{tool}_{method}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.len() <= MAX_NAME {
        name
    } else {
        with_hash(&name, tool, method)
    }
}

/// `name` cut to leave room for `_` and 8 hex digits of a hash of `tool` and `method`.
fn with_hash(name: &str, tool: &str, method: &str) -> String {
    // FNV-1a: stable across builds, enough to tell a handful of names apart.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in tool.bytes().chain([0]).chain(method.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let keep = name.len().min(MAX_NAME - 9);
    format!("{}_{hash:08x}", &name[..keep])
}

fn tool(name: &str, info: &ToolInfo, method: &MethodInfo) -> Tool {
    let summary = method.description.trim();
    let mut description = if summary.is_empty() {
        format!("{}.{}", info.name, method.name)
    } else {
        summary.to_owned()
    };
    description.push_str(&format!(
        "\n\n(Centaur tool `{}`, method `{}`{})",
        info.name,
        method.name,
        if method.approval {
            "; each call waits for a person's approval"
        } else {
            ""
        }
    ));
    let input_schema = match method.parameters.as_object() {
        Some(schema) if !schema.is_empty() => Value::Object(schema.clone()),
        // No schema: a method without arguments.
        Some(_) | None => json!({"type": "object", "additionalProperties": false}),
    };
    Tool {
        name: name.to_owned(),
        title: Some(format!("{} {}", info.name, method.name)),
        description: Some(description),
        input_schema,
        annotations: Some(ToolAnnotations {
            read_only_hint: Some(!method.approval),
            ..ToolAnnotations::default()
        }),
    }
}

/// The server: its way to the endpoint and the names it last listed.
struct Server {
    link: Link,
    url: String,
    /// MCP name → (tool, method).
    names: Mutex<HashMap<String, (String, String)>>,
}

/// An answer to write.
type Line = Vec<u8>;

/// Serves MCP on `input`/`output` until `input` ends, calling tools through `link` (the
/// endpoint at `url`, named in messages).
pub async fn serve<R, W>(input: R, output: W, link: Link, url: String)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let server = Arc::new(Server {
        link,
        url,
        names: Mutex::default(),
    });
    let (out, mut answers) = mpsc::unbounded_channel::<Line>();
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(line) = answers.recv().await {
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                // The client is gone; stdin ends next.
                break;
            }
        }
    });
    let mut running: HashMap<RequestId, JoinHandle<()>> = HashMap::new();
    let mut lines = input.split(b'\n');
    loop {
        let bytes = match lines.next_segment().await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "reading stdin failed; stopping");
                break;
            }
        };
        running.retain(|_, task| !task.is_finished());
        // One bad line is answered and skipped: the next ones are served.
        let line = match std::str::from_utf8(&bytes) {
            Ok(line) => line.strip_suffix('\r').unwrap_or(line),
            Err(error) => {
                send_error(&out, None, code::PARSE_ERROR, format!("not UTF-8: {error}"));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(line) {
            Ok(message) => message,
            Err(error) => {
                send_error(&out, None, code::PARSE_ERROR, format!("not JSON: {error}"));
                continue;
            }
        };
        let incoming = match serde_json::from_value::<Incoming>(message.clone()) {
            Ok(incoming) if incoming.jsonrpc == "2.0" => incoming,
            Ok(_) | Err(_) => {
                let id = serde_json::from_value(message["id"].clone()).ok();
                send_error(
                    &out,
                    id,
                    code::INVALID_REQUEST,
                    "not a JSON-RPC 2.0 request or notification",
                );
                continue;
            }
        };
        let Some(method) = incoming.method else {
            // An answer to a request of ours: this server sends none.
            continue;
        };
        let params = incoming.params.unwrap_or(Value::Null);
        let Some(id) = incoming.id else {
            notification(&method, params, &mut running);
            continue;
        };
        match method.as_str() {
            "initialize" => send(&out, id, initialize(params)),
            "ping" => send(&out, id, Ok(json!({}))),
            "tools/list" | "tools/call" => {
                let server = server.clone();
                let out = out.clone();
                let request = id.clone();
                let task = tokio::spawn(async move {
                    let answer = if method == "tools/list" {
                        server.list(params).await
                    } else {
                        server.call(params).await
                    };
                    send(&out, request, answer);
                });
                running.insert(id, task);
            }
            // `server/discover` (the stateless era) included: the client falls back to
            // `initialize` at once.
            other => send_error(
                &out,
                Some(id),
                code::METHOD_NOT_FOUND,
                format!("centaur-tool does not serve `{other}`"),
            ),
        }
    }
    for (_, task) in running {
        task.abort();
    }
    drop(out);
    let _ = writer.await;
}

fn notification(method: &str, params: Value, running: &mut HashMap<RequestId, JoinHandle<()>>) {
    // `notifications/initialized` and the others need nothing done.
    if method != "notifications/cancelled" {
        return;
    }
    // Stopped without an answer; an unknown or finished id is ignored.
    if let Ok(cancelled) = serde_json::from_value::<CancelledParams>(params)
        && let Some(task) = running.remove(&cancelled.request_id)
    {
        tracing::info!(request = ?cancelled.request_id, reason = ?cancelled.reason, "a call was cancelled");
        task.abort();
    }
}

type Answer = Result<Value, (i64, String)>;

fn initialize(params: Value) -> Answer {
    let asked = serde_json::from_value::<InitializeParams>(params)
        .map(|p| p.protocol_version)
        .unwrap_or_default();
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| **v == asked)
        .unwrap_or(&PROTOCOL_VERSIONS[0]);
    let result = InitializeResult {
        protocol_version: (*version).to_owned(),
        capabilities: ServerCapabilities {
            tools: Some(ToolsCapability {
                list_changed: false,
            }),
        },
        server_info: Implementation {
            name: super::MCP_SERVER.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            title: Some("Centaur tools".into()),
        },
        instructions: Some(INSTRUCTIONS.into()),
    };
    Ok(serde_json::to_value(result).expect("serializable"))
}

impl Server {
    /// `GET /tools`, waiting a little for tools still loading.
    async fn fetch(&self) -> Result<ToolList, String> {
        let started = tokio::time::Instant::now();
        loop {
            let list = self
                .link
                .call::<(), ToolList>(Method::GET, "/tools", None)
                .await
                .map_err(|e| self.unreachable(&e))?
                .unwrap_or(ToolList { tools: Vec::new() });
            let loading = list.tools.iter().any(|t| match t.status {
                ToolStatus::Loading => true,
                ToolStatus::Ready | ToolStatus::Broken => false,
            });
            if !loading || started.elapsed() >= LOADING_WAIT {
                let tools = mcp_tools(&list);
                *self.names.lock().expect("names lock") = tools
                    .iter()
                    .map(|(tool, t, m)| (tool.name.clone(), (t.clone(), m.clone())))
                    .collect();
                return Ok(list);
            }
            tokio::time::sleep(LOADING_POLL).await;
        }
    }

    fn unreachable(&self, error: &LinkError) -> String {
        match error {
            LinkError::Status { message, .. } => message.clone(),
            LinkError::Unreachable(_) | LinkError::Protocol(_) => {
                format!("cannot reach Centaur's tools at {}: {error}", self.url)
            }
        }
    }

    async fn list(&self, params: Value) -> Answer {
        // One page holds every tool: a cursor can only be one this server never gave.
        if params.get("cursor").is_some_and(|c| !c.is_null()) {
            return Err((code::INVALID_PARAMS, "unknown cursor".into()));
        }
        let list = self
            .fetch()
            .await
            .map_err(|message| (code::INTERNAL_ERROR, message))?;
        let result = ListToolsResult {
            tools: mcp_tools(&list)
                .into_iter()
                .map(|(tool, _, _)| tool)
                .collect(),
            next_cursor: None,
        };
        Ok(serde_json::to_value(result).expect("serializable"))
    }

    fn lookup(&self, name: &str) -> Option<(String, String)> {
        self.names.lock().expect("names lock").get(name).cloned()
    }

    async fn call(&self, params: Value) -> Answer {
        let params: CallToolParams = serde_json::from_value(params).map_err(|e| {
            (
                code::INVALID_PARAMS,
                format!("bad tools/call parameters: {e}"),
            )
        })?;
        let found = match self.lookup(&params.name) {
            Some(found) => Some(found),
            None => {
                // Listed by another process, or new since: look again.
                self.fetch()
                    .await
                    .map_err(|message| (code::INTERNAL_ERROR, message))?;
                self.lookup(&params.name)
            }
        };
        let Some((tool, method)) = found else {
            return Err((
                code::INVALID_PARAMS,
                format!("unknown tool `{}`", params.name),
            ));
        };
        let arguments = Value::Object(params.arguments.unwrap_or_default());
        let path = format!("/tools/{tool}/{method}");
        let result = match self
            .link
            .call::<Value, ToolCallAnswer>(Method::POST, &path, Some(&arguments))
            .await
        {
            Ok(Some(answer)) => CallToolResult {
                content: vec![Content::Text {
                    text: serde_json::to_string(&answer.result).expect("serializable"),
                }],
                structured_content: answer.result.is_object().then_some(answer.result),
                is_error: None,
            },
            Ok(None) => failed("the server answered the call with no content".into()),
            Err(error) => failed(failure_text(&error, &self.url)),
        };
        Ok(serde_json::to_value(result).expect("serializable"))
    }
}

fn failed(text: String) -> CallToolResult {
    CallToolResult {
        content: vec![Content::Text { text }],
        structured_content: None,
        is_error: Some(true),
    }
}

/// What the model reads when a call did not succeed: the server's message; a denial whose
/// message does not say so is marked as one.
pub fn failure_text(error: &LinkError, url: &str) -> String {
    match error {
        LinkError::Status { code, message, .. } => {
            let message = if message.is_empty() {
                code.clone()
            } else {
                message.clone()
            };
            // The server says who denied it and why (`Ann denied the call: not now`).
            if code == "tool_call_denied" && !message.to_lowercase().contains("denied") {
                format!("denied: {message}")
            } else {
                message
            }
        }
        LinkError::Unreachable(_) | LinkError::Protocol(_) => {
            format!("cannot reach Centaur's tools at {url}: {error}")
        }
    }
}

fn send(out: &mpsc::UnboundedSender<Line>, id: RequestId, answer: Answer) {
    match answer {
        Ok(result) => write(out, &Response::new(id, result)),
        Err((code, message)) => send_error(out, Some(id), code, message),
    }
}

fn send_error(
    out: &mpsc::UnboundedSender<Line>,
    id: Option<RequestId>,
    code: i64,
    message: impl Into<String>,
) {
    write(out, &ErrorResponse::new(id, code, message));
}

fn write(out: &mpsc::UnboundedSender<Line>, message: &impl serde::Serialize) {
    // serde_json escapes newlines inside strings: one message, one line.
    let mut line = serde_json::to_vec(message).expect("serializable");
    line.push(b'\n');
    let _ = out.send(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_short_and_distinct() {
        assert_eq!(mcp_name("github", "search_issues"), "github_search_issues");
        assert_eq!(mcp_name("my.tool", "x"), "my_tool_x");
        let long = mcp_name(&"t".repeat(40), &"m".repeat(40));
        assert_eq!(long.len(), MAX_NAME);
        assert_ne!(long, mcp_name(&"t".repeat(40), &"m".repeat(41)));
        let method = |name: &str| MethodInfo {
            name: name.into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
            returns: None,
            approval: false,
        };
        let info = |name: &str, methods: Vec<MethodInfo>| ToolInfo {
            name: name.into(),
            description: String::new(),
            status: ToolStatus::Ready,
            error: None,
            source: String::new(),
            shadows: Vec::new(),
            hosts: Vec::new(),
            secrets: Vec::new(),
            methods,
        };
        let list = ToolList {
            tools: vec![
                info("a", vec![method("b_c")]),
                info("a_b", vec![method("c")]),
            ],
        };
        let names = |list: &ToolList| -> Vec<(String, String, String)> {
            mcp_tools(list)
                .into_iter()
                .map(|(tool, t, m)| (tool.name, t, m))
                .collect()
        };
        // Alone, a method has its plain name.
        let alone = ToolList {
            tools: vec![info("a", vec![method("b_c")])],
        };
        assert_eq!(names(&alone)[0].0, "a_b_c");
        // Colliding, both get their hash, whichever comes first: the name `a_b_c` is gone
        // rather than pointing at the other method.
        let both = names(&list);
        assert_eq!(both.len(), 2);
        for (name, _, _) in &both {
            assert!(name.starts_with("a_b_c_") && name.len() == "a_b_c".len() + 9);
        }
        assert_ne!(both[0].0, both[1].0);
        let mut reversed = list.clone();
        reversed.tools.reverse();
        let mut again = names(&reversed);
        again.reverse();
        assert_eq!(again, both);
        // Every name fits the client's 64 characters after `mcp__centaur__`.
        let long = ToolList {
            tools: vec![info(&"t".repeat(60), vec![method(&"m".repeat(60))])],
        };
        assert_eq!(names(&long)[0].0.len(), MAX_NAME);
        assert!("mcp__centaur__".len() + MAX_NAME <= 64);
    }
}
