//! Tools from inside real sandboxes: a `shell` turn runs `centaur-tool`, and the real Codex CLI
//! (npm) calls a tool through the runner's MCP server (`centaur-tool mcp`) when a scripted
//! Responses API asks it to; the real Claude Code CLI does the same against a scripted Messages
//! API. Each call reaches a real tool worker through the runner's tools endpoint and is in the
//! thread once, as the server records it; an approval-gated method denied by a person reaches
//! the model as a tool error that says so.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use centaur_server::Config;
use centaur_server::tools::settings::ToolIsolation;
use centaur_test_support::anthropic::MockMessages;
use centaur_test_support::events::{is_terminal, last_id};
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::model::{MockModel, Reply};
use centaur_test_support::npm::{claude_dir, codex_dir};
use centaur_test_support::tools::{pyproject, uv, write_tool};

const CLIENT: &str = r#"
from centaur_tools import Tool


class Desk(Tool):
    def echo(self, text: str) -> dict:
        """Says the text back."""
        return {"echoed": text}

    def post(self, channel: str, text: str) -> dict:
        """Posts the text to a channel (needs approval)."""
        return {"posted": text, "channel": channel}
"#;

/// Tools for a local stack: the `desk` tool (its `post` needs approval) in `dir/tools`.
fn with_tools(config: &mut Config, dir: &Path) {
    let tools = dir.join("tools");
    write_tool(
        &tools,
        "desk",
        &pyproject("desk", "approval = [\"post\"]"),
        CLIENT,
    );
    config.tools.dirs = vec![tools];
    config.tools.uv = uv();
    config.tools.python = "python3".into();
    config.tools.isolation = ToolIsolation::Bwrap;
    config.tools.reload_ms = 200;
}

/// Waits (a first environment build may be slow) until `tool` is ready.
async fn wait_ready(stack: &LocalStack, tool: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, list) = stack.server.admin(Method::GET, "/tools", Value::Null).await;
        let status = list["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == tool)
            .map(|t| t["status"].clone());
        if status == Some(json!("ready")) {
            return;
        }
        assert!(Instant::now() < deadline, "{tool} never got ready: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The turn's tool calls are the server's record of the desk's `method`, once: no second pair
/// from the harness's own view of the call.
fn assert_recorded_once(events: &[Value], method: &str, arguments: Value) -> Value {
    let started = of_type(events, "tool.call.started");
    let finished = of_type(events, "tool.call.finished");
    assert_eq!(started.len(), 1, "{events:#?}");
    assert_eq!(finished.len(), 1, "{events:#?}");
    assert_eq!(started[0]["tool"], "desk", "{events:#?}");
    assert_eq!(started[0]["method"], method, "{events:#?}");
    assert_eq!(started[0]["arguments"], arguments, "{events:#?}");
    assert_eq!(finished[0]["call_id"], started[0]["call_id"]);
    finished[0].clone()
}

#[tokio::test]
async fn a_shell_turn_calls_a_tool_with_centaur_tool_and_the_thread_records_it() {
    let stack = LocalStack::start_with("tools-shell", 0, json!({}), with_tools).await;
    wait_ready(&stack, "desk").await;
    let key = "api:tools-shell";

    let done = stack
        .turn(
            key,
            "shell",
            r#"centaur-tool call desk echo '{"text": "from the shell"}'"#,
        )
        .await;
    assert_eq!(done["type"], "execution.completed", "{done}");
    let printed: Value = serde_json::from_str(done["result_text"].as_str().unwrap().trim())
        .unwrap_or_else(|_| panic!("the result as JSON: {done}"));
    assert_eq!(printed, json!({"echoed": "from the shell"}));
    let events = stack.until(key, 0, is_terminal).await;
    let finished = assert_recorded_once(&events, "echo", json!({"text": "from the shell"}));
    assert!(finished["error"].is_null(), "{finished}");
    assert!(
        finished["result"].to_string().contains("from the shell"),
        "{finished}"
    );

    // The list, and a call the method refuses: the shell's command exits 2 with the reason.
    let done = stack.turn(key, "shell", "centaur-tool list").await;
    assert_eq!(done["type"], "execution.completed", "{done}");
    let listed = done["result_text"].as_str().unwrap();
    assert!(listed.contains("desk (ready)"), "{listed}");
    assert!(
        listed.contains("post(channel, text) [needs approval]"),
        "{listed}"
    );
    let done = stack
        .turn(key, "shell", "centaur-tool call desk echo '{}'")
        .await;
    assert_eq!(done["type"], "execution.failed", "{done}");
    let said = done.to_string();
    assert!(said.contains("argument") && said.contains("text"), "{said}");
    assert!(said.contains("status 2"), "{said}");
    // The server's token never reached the agent's environment.
    let done = stack.turn(key, "shell", "env").await;
    let env = done["result_text"].as_str().unwrap();
    assert!(
        env.contains("CENTAUR_TOOLS_URL=http://127.0.0.1:3129"),
        "{env}"
    );
    assert!(!env.contains("CENTAUR_ATTACHMENT"), "{env}");
    // A script reaches the endpoint with an ordinary HTTP client, bypassing the egress proxy
    // for it (`NO_PROXY` is empty: loopback through the proxy is the host's).
    let done = stack
        .turn(
            key,
            "shell",
            r#"curl -sS --noproxy '*' "$CENTAUR_TOOLS_URL/tools""#,
        )
        .await;
    assert_eq!(done["type"], "execution.completed", "{done}");
    let listed: Value = serde_json::from_str(done["result_text"].as_str().unwrap().trim())
        .unwrap_or_else(|_| panic!("GET /tools as JSON: {done}"));
    assert!(listed.to_string().contains(r#""name":"desk""#), "{listed}");
}

#[tokio::test]
async fn codex_calls_a_tool_through_the_mcp_server_and_a_denial_reads_as_one() {
    let model = MockModel::start(vec![
        (
            "use the desk",
            Reply::Tool {
                name: "desk_echo".into(),
                arguments: json!({"text": "via mcp"}),
                then: "The desk answered.".into(),
            },
        ),
        (
            "post to the desk",
            Reply::Tool {
                name: "desk_post".into(),
                arguments: json!({"channel": "#general", "text": "hello"}),
                then: "Posting was refused.".into(),
            },
        ),
    ])
    .await;
    let seen = model.seen.clone();
    let codex_config = model.codex_config();
    let stack = LocalStack::start_with("tools-codex", 0, model.policy(), |config, dir| {
        std::fs::write(dir.join("codex.toml"), codex_config).unwrap();
        config.codex_config = Some(dir.join("codex.toml"));
        config.harness_dir = Some(codex_dir());
        config.approval_policy = "always".parse().unwrap();
        with_tools(config, dir);
    })
    .await;
    wait_ready(&stack, "desk").await;
    let key = "api:tools-codex";

    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "codex", "message": "please use the desk tool"}),
        )
        .await;
    let events = stack.until(key, 0, is_terminal).await;
    let end = events.last().unwrap();
    let offered = |seen: &centaur_test_support::model::Seen| {
        seen.bodies
            .first()
            .map(|b| b["tools"].to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        end["type"],
        "execution.completed",
        "{events:#?}\noffered: {}",
        offered(&seen.lock().unwrap())
    );
    assert_eq!(end["result_text"], "The desk answered.", "{events:#?}");
    {
        let seen = seen.lock().unwrap();
        let output = seen.outputs.last().expect("the call's output went back");
        assert!(
            output.contains("via mcp"),
            "{output}\noffered: {}",
            offered(&seen)
        );
        assert!(output.contains("echoed"), "{output}");
    }
    assert_recorded_once(&events, "echo", json!({"text": "via mcp"}));
    let after = last_id(&events);

    // An approval-gated method: the person is asked; denied, the model reads who and why.
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "now post to the desk"}),
        )
        .await;
    let events = stack
        .until(key, after, |e| e["type"] == "approval.requested")
        .await;
    let request = events.last().unwrap();
    assert_eq!(request["kind"], "tool", "{request}");
    let approval_id = request["approval_id"].as_str().unwrap();
    stack.server.decide(key, approval_id, "deny").await;
    let events = stack.until(key, last_id(&events), is_terminal).await;
    let end = events.last().unwrap();
    assert_eq!(end["type"], "execution.completed", "{events:#?}");
    assert_eq!(end["result_text"], "Posting was refused.");
    {
        let seen = seen.lock().unwrap();
        let output = seen.outputs.last().expect("the call's output went back");
        // Who denied it, for the model to read.
        assert!(output.contains("admin denied the call"), "{output}");
        assert!(!output.contains("posted"), "{output}");
    }
    let finished = of_type(&events, "tool.call.finished");
    assert_eq!(finished.len(), 1, "{events:#?}");
    assert!(finished[0]["error"].is_string(), "{events:#?}");
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "tool.call.started" && e["tool"] == "harness"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn claude_code_calls_a_tool_through_the_mcp_server() {
    let model = MockMessages::start(vec![(
        "use the desk",
        Reply::Tool {
            name: "desk_echo".into(),
            arguments: json!({"text": "via claude"}),
            then: "The desk answered Claude.".into(),
        },
    )])
    .await;
    let conversations = model.conversations.clone();
    let host = model.host();
    let policy = json!({
        "allow": [host], "allow_private": [host],
        "secrets": [{"name": "ANTHROPIC_API_KEY", "hosts": [host], "headers": ["x-api-key"]}],
    });
    let stack = LocalStack::start_with("tools-claude", 0, policy, |config, dir| {
        config.harness_dir = Some(claude_dir());
        config.harness_env = vec![
            ("ANTHROPIC_BASE_URL".into(), format!("http://{host}")),
            (
                "CENTAUR_CLAUDE_BIN".into(),
                "/opt/centaur/harness/claude".into(),
            ),
        ];
        config.approval_policy = "always".parse().unwrap();
        with_tools(config, dir);
    })
    .await;
    wait_ready(&stack, "desk").await;
    let key = "api:tools-claude";
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "claude-code", "message": "please use the desk tool"}),
        )
        .await;
    let events = stack.until(key, 0, is_terminal).await;
    let end = events.last().unwrap();
    assert_eq!(end["type"], "execution.completed", "{events:#?}");
    assert_eq!(
        end["result_text"], "The desk answered Claude.",
        "{events:#?}"
    );
    // Allowed without a prompt of Claude Code's own: the server asks for what needs asking.
    assert!(
        of_type(&events, "approval.requested").is_empty(),
        "{events:#?}"
    );
    assert_recorded_once(&events, "echo", json!({"text": "via claude"}));
    let answered = conversations.lock().unwrap().last().unwrap().to_string();
    assert!(answered.contains("via claude"), "{answered}");
}
