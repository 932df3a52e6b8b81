//! What the operator grants a tool: a declared `env` setting reaches the worker only when
//! `CENTAUR_TOOL_SETTINGS` grants it to the tool, and a secret taken away in the operator's
//! `CENTAUR_TOOL_EGRESS` file retires the worker that holds it. The real SDK worker in real
//! bubblewrap, a real proxy in this process.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use centaur_server::tools::settings::SecretGrants;
use centaur_test_support::proxy::{PROXY_TOKEN, REAL_ANTHROPIC_KEY, TestProxy};
use centaur_test_support::server::error_code;
use centaur_test_support::temp::temp_dir;
use centaur_test_support::tools::{ToolStack, pyproject, worker_processes, write_tool};

/// A server variable every test process has (cargo sets it) and `env` may name: the server's
/// environment holds it whether or not it is granted.
const SETTING: &str = "CARGO_MANIFEST_DIR";

const READER: &str = r#"
import os

from centaur_tools import Tool


class Reader(Tool):
    def setting(self) -> str | None:
        """The setting as the worker's environment holds it."""
        return os.environ.get("CARGO_MANIFEST_DIR")

    def revealed(self) -> str | None:
        """The revealed secret as the worker's environment holds it."""
        return os.environ.get("ANTHROPIC_API_KEY")
"#;

/// Two tools declare the same `env` setting; only the one it is granted to gets it. The other
/// is ready all the same (a setting has a default in the tool) and sees nothing, though the
/// server's environment has the variable.
#[tokio::test]
async fn a_tool_gets_only_the_settings_granted_to_it() {
    let value = std::env::var(SETTING).expect("cargo sets CARGO_MANIFEST_DIR for test processes");
    let dir = temp_dir("tools-settings");
    let tools = dir.join("tools");
    let manifest = format!("env = [\"{SETTING}\"]");
    for name in ["granted", "ungranted"] {
        write_tool(&tools, name, &pyproject(name, &manifest), READER);
    }
    let stack = ToolStack::start(&dir, vec![tools], |config| {
        config.tools.settings = SecretGrants::parse(&format!("granted={SETTING}")).unwrap();
    })
    .await;
    for (tool, expected) in [("granted", json!(value)), ("ungranted", Value::Null)] {
        stack.wait_ready(tool).await;
        let (status, answer) = stack.call_tool(tool, "setting", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["result"], expected, "{tool}: {answer}");
    }
}

/// A secret revealed to a tool by its `CENTAUR_TOOL_EGRESS` entry, then taken away by an edit of
/// that file: the running worker that holds the value is retired (it ends), and the next call
/// finds the tool broken, naming the grant to add. Its value is never given again.
#[tokio::test]
async fn a_secret_taken_away_retires_the_worker_that_holds_it() {
    let dir = temp_dir("tools-revoke");
    let tools = dir.join("tools");
    write_tool(
        &tools,
        "vault",
        &pyproject(
            "vault",
            "[tool.centaur.secrets.ANTHROPIC_API_KEY]\nreveal = true\n",
        ),
        READER,
    );
    let operator = dir.join("tool-egress.json");
    std::fs::write(&operator, r#"{"vault": {"reveal": ["ANTHROPIC_API_KEY"]}}"#).unwrap();
    let proxy = TestProxy::start(None, dir.join("sockets")).await;
    let control = format!("http://{}", proxy.addr);
    let stack = ToolStack::start(&dir, vec![tools.clone()], |config| {
        config.proxy_token = Some(PROXY_TOKEN.into());
        config.proxy_control_url = Some(control);
        config.egress_sync_ms = 100;
        config.tools.egress = Some(operator.clone());
    })
    .await;
    stack.wait_ready("vault").await;
    let (status, answer) = stack.call_tool("vault", "revealed", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], REAL_ANTHROPIC_KEY, "{answer}");
    let workers = worker_processes(&tools);
    assert!(!workers.is_empty(), "the worker runs");

    // Taken away (a new file, as an editor's rename makes): the worker ends.
    let edited = dir.join("tool-egress.json.new");
    std::fs::write(&edited, "{}").unwrap();
    std::fs::rename(&edited, &operator).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<i32> = worker_processes(&tools)
            .into_iter()
            .filter(|pid| workers.contains(pid))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker holding the revoked secret still runs: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = stack.call_tool("vault", "revealed", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(error_code(&answer), "tool_unavailable");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("CENTAUR_TOOL_SECRETS=vault=ANTHROPIC_API_KEY"),
        "{answer}"
    );
}
