//! Tools from inside a sandbox, against a fake Centaur server that answers `/tools` in the
//! server's shapes: the runner's endpoint (forwards the three routes with the sandbox's token,
//! nothing else), `centaur-tool` (its output and exit codes), `centaur-tool mcp` (the MCP
//! server a harness starts, over real stdio), and Claude Code given the MCP server.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests stop at the first surprise

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use centaur_protocol::runner::{ApprovalPolicy, Finish, InputMessage};
use centaur_protocol::{EventBody, Harness as Kind, Role};
use centaur_runner::harness;
use centaur_runner::link::{Endpoint, Link};
use centaur_runner::turn::{Approvals, Sandbox, Steering, Turn};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

/// A request the fake server saw: method, path and `Authorization`.
type Heard = (String, String, Option<String>);

/// What the fake server saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Heard>>>);

#[derive(Clone)]
struct Fake {
    seen: Seen,
    /// Whether it has tools (an empty list otherwise).
    tools: bool,
}

fn tool_list(tools: bool) -> Value {
    if !tools {
        return json!({"tools": []});
    }
    let text = json!({"type": "object", "properties": {"text": {"type": "string", "description": "What to say"}},
                      "required": ["text"], "additionalProperties": false});
    let none = json!({"type": "object", "properties": {}, "additionalProperties": false});
    json!({"tools": [
        {"name": "broken", "description": "", "status": "broken", "error": "client.py: SyntaxError", "source": "/tools/broken",
         "hosts": [], "secrets": [], "methods": []},
        {"name": "echo", "description": "Says things", "status": "ready", "source": "/tools/echo", "hosts": [], "secrets": [],
         "methods": [
            {"name": "say", "description": "Says the text back.", "parameters": text, "approval": false},
            {"name": "post", "description": "Posts the text.", "parameters": text, "approval": true},
            {"name": "fail", "description": "Always fails.", "parameters": none, "approval": false},
            {"name": "numbers", "description": "A list.", "parameters": none, "approval": false}
         ]},
        {"name": "slow", "description": "", "status": "ready", "source": "/tools/slow", "hosts": [], "secrets": [],
         "methods": [{"name": "wait", "description": "Never ends.", "parameters": none, "approval": false}]}
    ]})
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl Fake {
    fn note(&self, method: &str, path: String, headers: &HeaderMap) {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        self.seen
            .0
            .lock()
            .unwrap()
            .push((method.to_owned(), path, auth));
    }
}

async fn list(State(fake): State<Fake>, headers: HeaderMap) -> Json<Value> {
    fake.note("GET", "/tools".into(), &headers);
    Json(tool_list(fake.tools))
}

async fn show(
    State(fake): State<Fake>,
    headers: HeaderMap,
    UrlPath(tool): UrlPath<String>,
) -> Response {
    fake.note("GET", format!("/tools/{tool}"), &headers);
    let list = tool_list(fake.tools);
    match list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tool.as_str())
    {
        Some(info) => Json(info.clone()).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            "tool_not_found",
            &format!("no tool `{tool}`"),
        ),
    }
}

async fn call(
    State(fake): State<Fake>,
    headers: HeaderMap,
    UrlPath((tool, method)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    fake.note("POST", format!("/tools/{tool}/{method}"), &headers);
    let arguments: Value = serde_json::from_slice(&body).unwrap();
    let answer = |result: Value| {
        Json(json!({"call_id": Uuid::now_v7(), "result": result, "duration_ms": 3}))
    };
    match (tool.as_str(), method.as_str()) {
        ("echo", "say") => match arguments["text"].as_str() {
            Some(text) => answer(json!({"said": text})).into_response(),
            None => refuse(
                StatusCode::BAD_REQUEST,
                "invalid_arguments",
                "argument \"text\": missing (it is required)",
            ),
        },
        ("echo", "post") => refuse(
            StatusCode::FORBIDDEN,
            "tool_call_denied",
            "denied by Ann: not in this channel",
        ),
        ("echo", "fail") => refuse(StatusCode::BAD_GATEWAY, "tool_failed", "ValueError: boom"),
        ("echo", "numbers") => answer(json!([1, 2])).into_response(),
        ("slow", "wait") => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            answer(json!(null)).into_response()
        }
        _ => refuse(
            StatusCode::NOT_FOUND,
            "tool_method_not_found",
            &format!("`{tool}` has no method `{method}`"),
        ),
    }
}

/// A fake server on a free loopback port; its address and what it saw.
async fn fake_server(tools: bool) -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/tools", get(list))
        .route("/tools/{tool}", get(show))
        .route("/tools/{tool}/{method}", post(call))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(Fake {
            seen: seen.clone(),
            tools,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// The runner's endpoint in front of a fake server, with the token `sandbox-token`; its URL.
async fn endpoint(server: &str) -> String {
    let link = Link::new(Endpoint::Tcp(server.to_owned()), "sandbox-token".to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(centaur_runner::tools::endpoint::serve(listener, link));
    url
}

async fn request(url: &str, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let link = centaur_runner::tools::endpoint_link(url).unwrap();
    let answer = link
        .send(
            method,
            path,
            body.map(|b| Bytes::from(b.to_owned())),
            &[("authorization", "Bearer the-agents-own".into())],
        )
        .await
        .unwrap();
    let status = answer.status();
    let bytes = answer.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_endpoint_forwards_the_tool_routes_with_the_sandbox_token_and_nothing_else() {
    let (server, seen) = fake_server(true).await;
    let url = endpoint(&server).await;

    let (status, list) = request(&url, Method::GET, "/tools", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, tool_list(true));
    let (status, info) = request(&url, Method::GET, "/tools/echo", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["name"], "echo");
    let (status, answer) = request(
        &url,
        Method::POST,
        "/tools/echo/say",
        Some(r#"{"text":"hi"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["result"], json!({"said": "hi"}));
    // The server's refusals come back as they are.
    let (status, refused) = request(&url, Method::POST, "/tools/echo/post", Some("{}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refused["error"]["code"], "tool_call_denied");
    assert_eq!(
        refused["error"]["message"],
        "denied by Ann: not in this channel"
    );

    // Each went to the server with the sandbox's token, not the caller's.
    {
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.len(), 4);
        assert!(
            seen.iter()
                .all(|(_, _, auth)| auth.as_deref() == Some("Bearer sandbox-token")),
            "{:?}",
            *seen
        );
    }

    // Anything else is 404 here, and the server never hears of it.
    for (method, path) in [
        (Method::GET, "/runner/v1/threads/api:x/claim"),
        (Method::POST, "/runner/v1/executions/x/events"),
        (Method::GET, "/agent/threads"),
        (Method::POST, "/tools"),
        (Method::GET, "/tools/echo/say"),
        (Method::POST, "/tools/echo/say/again"),
        (Method::GET, "/tools/../agent/threads"),
        (Method::GET, "/"),
    ] {
        let (status, body) = request(&url, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(body["error"]["code"], "not_found", "{method} {path}");
    }
    assert_eq!(seen.0.lock().unwrap().len(), 4);

    // A body past the limit is refused before it is sent on.
    let big = format!(
        r#"{{"text":"{}"}}"#,
        "x".repeat(centaur_runner::tools::endpoint::MAX_BODY_BYTES)
    );
    let (status, body) = request(&url, Method::POST, "/tools/echo/say", Some(&big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(seen.0.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn the_endpoint_says_so_when_the_server_is_away() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = listener.local_addr().unwrap().to_string();
    drop(listener);
    let url = endpoint(&gone).await;
    let (status, body) = request(&url, Method::GET, "/tools", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "tool_unavailable");
}

/// `centaur-tool` with `args` against the endpoint at `url`: exit code, stdout, stderr.
async fn centaur_tool(url: &str, args: &[&str]) -> (i32, String, String) {
    // Under its own name: the binary is `centaur-tool` by its name.
    let dir = temp_dir("tool-bin");
    let tool = dir.join("centaur-tool");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_centaur-runner"), &tool).unwrap();
    let output = tokio::process::Command::new(&tool)
        .args(args)
        .env("CENTAUR_TOOLS_URL", url)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn centaur_tool_lists_shows_and_calls_with_exit_codes_that_tell_failures_apart() {
    let (server, seen) = fake_server(true).await;
    let url = endpoint(&server).await;

    let (code, out, _) = centaur_tool(&url, &["call", "echo", "say", r#"{"text": "hi"}"#]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"said": "hi"})
    );

    let (code, out, _) = centaur_tool(&url, &["list"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("echo (ready): Says things"), "{out}");
    assert!(out.contains("  say(text)  Says the text back."), "{out}");
    assert!(out.contains("  post(text) [needs approval]"), "{out}");
    assert!(
        out.contains("broken (broken)\n  client.py: SyntaxError"),
        "{out}"
    );
    let (code, out, _) = centaur_tool(&url, &["list", "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        tool_list(true)
    );
    let (code, out, _) = centaur_tool(&url, &["show", "echo"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["methods"][0]["parameters"]["required"],
        json!(["text"])
    );

    // A denial and a failure: 1, with the server's message.
    let (code, out, err) = centaur_tool(&url, &["call", "echo", "post", r#"{"text": "x"}"#]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err.trim(),
        "centaur-tool: denied by Ann: not in this channel"
    );
    let (code, _, err) = centaur_tool(&url, &["call", "echo", "fail"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("ValueError: boom"), "{err}");
    // Bad usage: 2.
    let (code, _, err) = centaur_tool(&url, &["call", "echo", "say", "{}"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("argument \"text\""), "{err}");
    // No such tool or method: 1, as `centaur tools call` (a 404 is not a usage error).
    let (code, _, err) = centaur_tool(&url, &["call", "echo", "nope"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = centaur_tool(&url, &["show", "nope"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = centaur_tool(&url, &["call", "echo", "say", "{not json"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("not JSON"), "{err}");
    let (code, _, err) = centaur_tool(&url, &["call", "echo", "say", "[1]"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("JSON object"), "{err}");
    let (code, _, _) = centaur_tool(&url, &["frobnicate"]).await;
    assert_eq!(code, 2);
    // The same command as `centaur-runner tool`.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_centaur-runner"))
        .args(["tool", "call", "echo", "say", r#"{"text": "again"}"#])
        .env("CENTAUR_TOOLS_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        json!({"said": "again"})
    );
    // Calls the server never saw (bad JSON) were not sent.
    let calls = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(method, _, _)| method == "POST")
        .count();
    assert_eq!(calls, 6);

    // Nothing listening: 1.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (code, _, err) = centaur_tool(&gone, &["list"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
}

/// `centaur-tool mcp` over its real stdio.
struct Mcp {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Mcp {
    fn start(url: &str) -> Mcp {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_centaur-runner"))
            .args(["tool", "mcp"])
            .env("CENTAUR_TOOLS_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Mcp {
            child,
            stdin,
            stdout,
        }
    }

    async fn write(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn send(&mut self, message: Value) {
        self.write(&message.to_string()).await;
    }

    /// The next message: every line on stdout is one JSON-RPC message.
    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(DEADLINE, self.stdout.next_line())
            .await
            .expect("an answer in time")
            .unwrap()
            .expect("stdout open");
        let message: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("stdout carries only the protocol: {line}"));
        assert_eq!(message["jsonrpc"], "2.0", "{message}");
        message
    }

    async fn request(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let answer = self.recv().await;
        assert_eq!(answer["id"], id, "{answer}");
        answer
    }

    async fn call(&mut self, id: i64, name: &str, arguments: Value) -> Value {
        self.request(
            json!(id),
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
        .await
    }
}

#[tokio::test]
async fn the_mcp_server_offers_every_ready_method_and_calls_it_through_the_endpoint() {
    let (server, seen) = fake_server(true).await;
    let url = endpoint(&server).await;
    let mut mcp = Mcp::start(&url);

    // The stateless era's probe is refused at once; the handshake answers the client's
    // version when it is one of ours, the latest otherwise.
    let discover = mcp.request(json!(0), "server/discover", json!({})).await;
    assert_eq!(discover["error"]["code"], -32601);
    let init = mcp
        .request(
            json!(1),
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
        )
        .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "centaur");
    assert!(init["result"]["capabilities"]["tools"].is_object());
    let init = mcp
        .request(
            json!(2),
            "initialize",
            json!({"protocolVersion": "2099-01-01", "capabilities": {}}),
        )
        .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    mcp.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    let pong = mcp.request(json!("p"), "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));

    let listed = mcp.request(json!(3), "tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "echo_say",
            "echo_post",
            "echo_fail",
            "echo_numbers",
            "slow_wait"
        ]
    );
    let say = &tools[0];
    assert_eq!(
        say["inputSchema"],
        tool_list(true)["tools"][1]["methods"][0]["parameters"]
    );
    assert!(
        say["description"]
            .as_str()
            .unwrap()
            .starts_with("Says the text back.")
    );
    assert_eq!(say["annotations"]["readOnlyHint"], true);
    assert_eq!(tools[1]["annotations"]["readOnlyHint"], false);
    assert!(
        tools[1]["description"]
            .as_str()
            .unwrap()
            .contains("approval")
    );

    // A call: its result as text, and as structured content when it is an object.
    let said = mcp.call(4, "echo_say", json!({"text": "hi"})).await;
    let result = &said["result"];
    assert_eq!(
        serde_json::from_str::<Value>(result["content"][0]["text"].as_str().unwrap()).unwrap(),
        json!({"said": "hi"})
    );
    assert_eq!(result["content"][0]["type"], "text");
    assert_eq!(result["structuredContent"], json!({"said": "hi"}));
    assert!(result.get("isError").is_none(), "{result}");
    let numbers = mcp.call(5, "echo_numbers", json!({})).await;
    assert_eq!(numbers["result"]["content"][0]["text"], "[1,2]");
    assert!(numbers["result"].get("structuredContent").is_none());

    // Failures are results the model reads.
    let denied = mcp.call(6, "echo_post", json!({"text": "x"})).await;
    assert_eq!(denied["result"]["isError"], true);
    assert_eq!(
        denied["result"]["content"][0]["text"],
        "denied by Ann: not in this channel"
    );
    let failed = mcp.call(7, "echo_fail", json!({})).await;
    assert_eq!(failed["result"]["isError"], true);
    assert_eq!(failed["result"]["content"][0]["text"], "ValueError: boom");
    let bad = mcp.call(8, "echo_say", json!({})).await;
    assert_eq!(bad["result"]["isError"], true);
    assert!(
        bad["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("argument \"text\"")
    );
    // An unknown tool is the client's mistake.
    let unknown = mcp.call(9, "nope_nothing", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32602);
    let unknown = mcp.request(json!(10), "resources/list", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32601);

    // Garbage gets a parse error and the server goes on.
    mcp.write("{this is not json").await;
    let parse = mcp.recv().await;
    assert_eq!(parse["error"]["code"], -32700);
    assert!(parse["id"].is_null());
    mcp.write(r#"{"id": 11, "method": "ping"}"#).await;
    let invalid = mcp.recv().await;
    assert_eq!(invalid["error"]["code"], -32600);
    assert_eq!(invalid["id"], 11);
    // A line that is not UTF-8 (one bad byte) too: it is answered and the next one served.
    mcp.stdin
        .write_all(b"{\"jsonrpc\": \"2.0\", \"id\": 12, \"method\": \"caf\xe9\"}\n")
        .await
        .unwrap();
    let parse = mcp.recv().await;
    assert_eq!(parse["error"]["code"], -32700);
    assert!(
        parse["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("not UTF-8"),
        "{parse}"
    );
    let pong = mcp.request(json!(13), "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));

    // A call that waits does not hold up the others; cancelled, it is never answered.
    mcp.send(json!({"jsonrpc": "2.0", "id": 20, "method": "tools/call", "params": {"name": "slow_wait"}}))
        .await;
    let said = mcp.call(21, "echo_say", json!({"text": "meanwhile"})).await;
    assert_eq!(said["result"]["structuredContent"]["said"], "meanwhile");
    mcp.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 20, "reason": "user"}}))
        .await;
    let pong = mcp.request(json!(22), "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));

    // The token was never this process's to send.
    assert!(
        seen.0
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, auth)| auth.as_deref() == Some("Bearer sandbox-token"))
    );

    // stdin ends: it exits, having said nothing more.
    drop(mcp.stdin);
    assert!(
        tokio::time::timeout(DEADLINE, mcp.stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
    let status = tokio::time::timeout(DEADLINE, mcp.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("centaur-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fake `claude`: logs its arguments, then answers each user message with a turn that calls
/// a Centaur tool through MCP and a tool of its own.
fn fake_claude(dir: &Path) -> PathBuf {
    let transcript = dir.join("turn.jsonl");
    let lines = [
        json!({"type": "system", "subtype": "init", "session_id": "0a1b2c3d-0000-4000-8000-000000000001"}),
        json!({"type": "assistant", "message": {"id": "m1", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "mcp__centaur__echo_say", "input": {"text": "hi"}},
            {"type": "tool_use", "id": "toolu_2", "name": "WebFetch", "input": {"url": "https://example.com"}}]}}),
        json!({"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "{\"said\":\"hi\"}"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "fetched"}]}}),
        json!({"type": "result", "subtype": "success", "result": "done", "is_error": false}),
    ];
    std::fs::write(
        &transcript,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let script = dir.join("claude");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\" >> {dir}/args; done\nwhile read -r line; do\n  case \"$line\" in *'\"type\":\"user\"'*) cat {transcript};; esac\ndone\n",
            dir = dir.display(),
            transcript = transcript.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

async fn claude_turn(url: &str) -> (Vec<String>, Vec<EventBody>) {
    let dir = temp_dir("claude-tools");
    let cli = fake_claude(&dir);
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    let sandbox = Sandbox {
        workspace,
        env: BTreeMap::from([
            ("CENTAUR_CLAUDE_BIN".to_owned(), cli.display().to_string()),
            ("CENTAUR_TOOLS_URL".to_owned(), url.to_owned()),
            ("PATH".to_owned(), std::env::var("PATH").unwrap()),
        ]),
        approval_policy: ApprovalPolicy::Never,
    };
    let mut claude = harness::for_kind(Kind::ClaudeCode, &sandbox);
    claude.prepare(&sandbox).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut turn = Turn::new(
        Uuid::now_v7(),
        vec![InputMessage {
            message_id: Uuid::now_v7(),
            role: Role::User,
            text: "say hi".into(),
        }],
        sandbox.clone(),
        tx,
        Arc::new(Approvals::default()),
        Steering::unrecorded(mpsc::unbounded_channel().1),
        CancellationToken::new(),
    );
    let finish = tokio::time::timeout(DEADLINE, claude.turn(&mut turn))
        .await
        .unwrap();
    assert_eq!(
        finish,
        Finish::Completed {
            result_text: "done".into()
        }
    );
    drop(turn);
    drop(claude);
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        events.push(event);
    }
    let args = std::fs::read_to_string(dir.join("args")).unwrap();
    (args.lines().map(str::to_owned).collect(), events)
}

#[tokio::test]
async fn claude_code_is_given_centaurs_tools_and_their_calls_are_not_recorded_twice() {
    let (server, _) = fake_server(true).await;
    let url = endpoint(&server).await;
    let (args, events) = claude_turn(&url).await;
    let at = args
        .iter()
        .position(|a| a == "--mcp-config")
        .expect("--mcp-config");
    let config: Value = serde_json::from_str(&args[at + 1]).unwrap();
    assert_eq!(
        config,
        json!({"mcpServers": {"centaur": {"type": "stdio", "command": "centaur-tool", "args": ["mcp"],
                                           "env": {"CENTAUR_TOOLS_URL": url}}}})
    );
    let at = args
        .iter()
        .position(|a| a == "--allowedTools")
        .expect("--allowedTools");
    assert_eq!(args[at + 1], "mcp__centaur");
    // The Centaur tool's call is the server's to record; the CLI's own tool is recorded here.
    let calls: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::ToolCallStarted { method, .. }
            | EventBody::ToolCallFinished { method, .. } => Some(method.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, ["WebFetch", "WebFetch"]);

    // A server without tools: no MCP server.
    let (server, _) = fake_server(false).await;
    let url = endpoint(&server).await;
    let (args, _) = claude_turn(&url).await;
    assert!(!args.iter().any(|a| a == "--mcp-config"), "{args:?}");
    assert!(!args.iter().any(|a| a == "--allowedTools"), "{args:?}");
}
