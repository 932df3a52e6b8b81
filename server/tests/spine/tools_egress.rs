//! A tool's egress: the tool is the proxy's principal `tool-<name>`, reaching only its declared
//! hosts and the operator's (`CENTAUR_TOOL_EGRESS`), holding placeholders that the proxy swaps
//! for the real values on bound hosts only, and a revealed secret's value; its requests are
//! audited under `tool-<name>`. It has only the secrets the operator granted it
//! (`CENTAUR_TOOL_SECRETS`, or its `CENTAUR_TOOL_EGRESS` entry). A tool whose egress cannot
//! work is broken with the reason; a proxy that is away fails calls with 503 and is asked
//! again after a back-off. A real proxy (in this process), the real SDK worker in real
//! bubblewrap, real HTTP servers on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use centaur_server::tools::settings::SecretGrants;
use centaur_test_support::proxy::{PROXY_TOKEN, REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, TestProxy};
use centaur_test_support::server::{TestServer, error_code};
use centaur_test_support::temp::temp_dir;
use centaur_test_support::tools::{
    ToolStack, pyproject, tool_config, worker_processes, write_tool,
};

const PROBE: &str = r#"
import os

from centaur_tools import Tool, http


class Probe(Tool):
    def fetch(self, url: str) -> dict:
        """Fetches url with the bound secret's placeholder in the authorization header."""
        answer = http.get(url, headers={"authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"})
        return {"status": answer.status, "body": answer.text()}

    def placeholder(self) -> str:
        """What the worker's environment holds for the bound secret."""
        return os.environ["OPENAI_API_KEY"]

    def revealed(self) -> str:
        """The revealed secret, as the worker's environment holds it."""
        return os.environ["ANTHROPIC_API_KEY"]
"#;

/// The bound secret is declared for a host the tool never reaches in the test; the operator
/// moves the binding to the fake at `bound` and allows `unbound` (both loopback, so private).
const MANIFEST: &str = r#"hosts = ["api.example.test"]

[tool.centaur.secrets.OPENAI_API_KEY]
hosts = ["api.example.test"]
headers = ["authorization"]

[tool.centaur.secrets.ANTHROPIC_API_KEY]
reveal = true
"#;

/// An HTTP server on loopback that records the `authorization` header of every request.
async fn recording_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    async fn record(State(seen): State<Arc<Mutex<Vec<String>>>>, headers: HeaderMap) -> String {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        seen.lock().unwrap().push(authorization);
        "fetched".to_owned()
    }
    let app = axum::Router::new()
        .fallback(record)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn operator_file(path: &Path, allow: &[SocketAddr], bound: SocketAddr) {
    let allow: Vec<String> = allow.iter().map(ToString::to_string).collect();
    let policies = json!({"probe": {
        "allow": allow,
        "allow_private": ["127.0.0.1"],
        "secrets": [{"name": "OPENAI_API_KEY", "hosts": [bound.to_string()],
                     "headers": ["authorization"]}],
    }});
    // Replaced whole, as an editor or a deploy does.
    let next = path.with_extension("next");
    std::fs::write(&next, policies.to_string()).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Every process's command line on the host, arguments joined by spaces.
fn command_lines() -> Vec<(i32, String)> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        lines.push((pid, line));
    }
    lines
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tool's audit records with `query` (`GET /admin/egress-audit?sandbox_id=tool-probe…`),
/// once one matches `pred`.
async fn audited(stack: &ToolStack, query: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, page) = stack
            .server
            .admin(
                Method::GET,
                &format!("/admin/egress-audit?sandbox_id=tool-probe&{query}"),
                Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if let Some(record) = page["records"].as_array().unwrap().iter().find(|r| pred(r)) {
            return record.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no such audit record for tool-probe: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_tools_requests_go_through_the_proxy_as_its_principal() {
    let dir = temp_dir("tools-egress");
    let tools = dir.join("tools");
    write_tool(&tools, "probe", &pyproject("probe", MANIFEST), PROBE);
    let (bound, bound_seen) = recording_server().await;
    let (unbound, unbound_seen) = recording_server().await;
    let (undeclared, undeclared_seen) = recording_server().await;
    let operator = dir.join("tool-egress.json");
    operator_file(&operator, &[unbound], bound);

    let sockets = dir.join("sockets");
    let proxy = TestProxy::start(None, sockets.clone()).await;
    let control = format!("http://{}", proxy.addr);
    // The binding is granted by the operator's file; the revealed model key by name.
    let stack = ToolStack::start(&dir, vec![tools.clone()], |config| {
        config.proxy_token = Some(PROXY_TOKEN.into());
        config.proxy_control_url = Some(control);
        config.egress_sync_ms = 100;
        config.tools.egress = Some(operator.clone());
        config.tools.secrets = SecretGrants::parse("probe=ANTHROPIC_API_KEY").unwrap();
    })
    .await;
    proxy.deliver_audit_to(&stack.server.url);
    let listed = stack.wait_ready("probe").await;
    // Declared, then the operator's, then the hosts of the bindings in force.
    assert_eq!(
        listed["hosts"],
        json!(["api.example.test", unbound.to_string(), bound.to_string()]),
        "{listed}"
    );
    let call = |method: &'static str, arguments: Value| stack.call_tool("probe", method, arguments);

    // The worker holds the placeholder; the bound host receives the real value in its place.
    let (status, answer) = call("placeholder", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let placeholder = answer["result"].as_str().unwrap().to_owned();
    assert!(placeholder.starts_with("cph_"), "{placeholder}");
    assert_ne!(placeholder, REAL_OPENAI_KEY);
    let (status, answer) = call("fetch", json!({"url": format!("http://{bound}/v1/models")})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], json!({"status": 200, "body": "fetched"}));
    assert_eq!(
        *bound_seen.lock().unwrap(),
        [format!("Bearer {REAL_OPENAI_KEY}")]
    );
    let allowed = audited(&stack, "", |r| {
        r["port"] == bound.port() && r["decision"] == "allowed"
    })
    .await;
    assert_eq!(allowed["secrets"], json!(["OPENAI_API_KEY"]));
    assert!(allowed["thread_key"].is_null(), "{allowed}");

    // A revealed secret is the real value in the worker's environment, and the reveal is
    // audited under the tool, by name.
    let (status, answer) = call("revealed", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], REAL_ANTHROPIC_KEY);
    let reveal = audited(&stack, "", |r| r["method"] == "REVEAL").await;
    assert_eq!(reveal["secrets"], json!(["ANTHROPIC_API_KEY"]));
    assert_eq!(reveal["decision"], "allowed");
    // The value reached the worker through its environment, never a command line, which `ps`
    // shows every user: while the worker runs, no process on the host has it in its arguments.
    let workers = worker_processes(&tools);
    assert!(!workers.is_empty(), "the worker runs");
    let shown: Vec<String> = command_lines()
        .into_iter()
        .filter(|(_, line)| line.contains(REAL_ANTHROPIC_KEY))
        .map(|(pid, line)| format!("{pid}: {line}"))
        .collect();
    assert!(
        shown.is_empty(),
        "the revealed value is on a command line: {shown:?}"
    );

    // A host the tool did not declare (nor the operator allow) is refused: the call says so,
    // the host sees nothing, the refusal is in the audit under the tool.
    let (status, answer) = call("fetch", json!({"url": format!("http://{undeclared}/")})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert_eq!(error_code(&answer), "tool_failed");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not allowed for this tool") && message.contains("egress proxy"),
        "{message}"
    );
    assert!(undeclared_seen.lock().unwrap().is_empty());
    let refused = audited(&stack, "denied=true", |r| r["port"] == undeclared.port()).await;
    assert_eq!(refused["decision"], "denied");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("not on this sandbox's list of allowed hosts"),
        "{refused}"
    );

    // An allowed host the secret is not bound to never gets it: the placeholder there is an
    // attempted leak, refused before the request leaves.
    let (status, answer) = call("fetch", json!({"url": format!("http://{unbound}/")})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert!(unbound_seen.lock().unwrap().is_empty());
    let leak = audited(&stack, "denied=true", |r| r["port"] == unbound.port()).await;
    assert_eq!(leak["decision"], "leak_blocked");

    // The operator's file changes: the next sync pushes the tool's new policy, no restart.
    operator_file(&operator, &[unbound, undeclared], bound);
    eventually("the operator's change reaches the proxy", || {
        proxy.registry.get("tool-probe").is_some_and(|s| {
            s.config
                .policy
                .allow
                .iter()
                .any(|p| p.matches("127.0.0.1", undeclared.port()))
        })
    })
    .await;
    let (status, answer) = call("fetch", json!({"url": format!("http://{undeclared}/")})).await;
    // Allowed now, and still no secret for it (the placeholder is refused as a leak).
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OPENAI_API_KEY"),
        "{answer}"
    );
    assert!(undeclared_seen.lock().unwrap().is_empty());

    // A proxy that restarts empty gets the tool back from the periodic sync, and the running
    // worker reaches it again with the same placeholder.
    proxy.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let restarted = TestProxy::start(Some(proxy.addr), sockets.clone()).await;
    eventually("the sync brings the tool back", || {
        restarted.registry.get("tool-probe").is_some()
    })
    .await;
    let served = restarted.registry.get("tool-probe").unwrap();
    assert_eq!(served.config.thread_key, None);
    assert_eq!(served.placeholders["OPENAI_API_KEY"], placeholder);
    let (status, answer) = call("fetch", json!({"url": format!("http://{bound}/again")})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(bound_seen.lock().unwrap().len(), 2);

    // The tool is gone from its folder: its principal goes from the proxy and the database.
    std::fs::remove_dir_all(tools.join("probe")).unwrap();
    stack.wait_for("probe", |listed| listed.is_none()).await;
    eventually("the tool's principal is removed", || {
        restarted.registry.get("tool-probe").is_none()
    })
    .await;
    let pool = sqlx::PgPool::connect(&stack.server.database_url)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tool_egress")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// Without a proxy, the worker has no network: a call that reaches out fails.
#[tokio::test]
async fn without_a_proxy_a_tool_reaches_nothing() {
    let dir = temp_dir("tools-no-egress");
    let tools = dir.join("tools");
    write_tool(&tools, "probe", &pyproject("probe", MANIFEST), PROBE);
    let (server, seen) = recording_server().await;
    let stack = ToolStack::start(&dir, vec![tools], |config| {
        config.tools.secrets =
            SecretGrants::parse("probe=OPENAI_API_KEY,ANTHROPIC_API_KEY").unwrap();
    })
    .await;
    stack.wait_ready("probe").await;
    let (status, answer) = stack
        .call_tool(
            "probe",
            "fetch",
            json!({"url": format!("http://{server}/")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert_eq!(error_code(&answer), "tool_failed");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no egress proxy is configured"),
        "{answer}"
    );
    assert!(seen.lock().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

const PLAIN: &str = r#"
from centaur_tools import Tool


class Plain(Tool):
    def ping(self) -> str:
        """Answers without reaching out."""
        return "pong"
"#;

/// A server of tools `tools` with the proxy at `control` (`http://addr`).
fn with_proxy(control: String) -> impl FnOnce(&mut centaur_server::Config) {
    move |config| {
        config.proxy_token = Some(PROXY_TOKEN.into());
        config.proxy_control_url = Some(control);
        config.egress_sync_ms = 100;
    }
}

/// A tool gets no secret the operator did not grant it: one asking for a model key's value
/// (granted to nobody) or binding another's token is broken with the grant to add, is never
/// registered at the proxy, and no reveal happens. Another name granted to every tool (`*`)
/// grants nothing else. A granted secret the proxy has no source for breaks the tool at its
/// first call (503, not a 502 per call), and its principal is not kept for the sync to push.
#[tokio::test]
async fn a_tool_gets_only_the_secrets_the_operator_granted() {
    let dir = temp_dir("tools-grants");
    let tools = dir.join("tools");
    write_tool(
        &tools,
        "thief",
        &pyproject(
            "thief",
            "[tool.centaur.secrets.OPENAI_API_KEY]\nreveal = true\n",
        ),
        PLAIN,
    );
    write_tool(
        &tools,
        "poster",
        &pyproject(
            "poster",
            "[tool.centaur.secrets.ANTHROPIC_API_KEY]\nhosts = [\"api.anthropic.com\"]\nheaders = [\"x-api-key\"]\n",
        ),
        PLAIN,
    );
    write_tool(
        &tools,
        "unsourced",
        &pyproject(
            "unsourced",
            "[tool.centaur.secrets.NOT_AT_PROXY]\nhosts = [\"api.example.test\"]\nheaders = [\"authorization\"]\n",
        ),
        PLAIN,
    );
    let proxy = TestProxy::start(None, dir.join("sockets")).await;
    let stack = ToolStack::start(&dir, vec![tools], |config| {
        with_proxy(format!("http://{}", proxy.addr))(config);
        config.tools.secrets =
            SecretGrants::parse("*=GITHUB_TOKEN;unsourced=NOT_AT_PROXY").unwrap();
    })
    .await;
    proxy.deliver_audit_to(&stack.server.url);

    for (tool, secret) in [("thief", "OPENAI_API_KEY"), ("poster", "ANTHROPIC_API_KEY")] {
        let listed = stack.wait_status(tool, "broken").await;
        let error = listed["error"].as_str().unwrap();
        assert!(
            error.contains(&format!(
                "grant it with CENTAUR_TOOL_SECRETS={tool}={secret}"
            )),
            "{listed}"
        );
        let (status, answer) = stack.call_tool(tool, "ping", json!({})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert_eq!(error_code(&answer), "tool_unavailable");
        assert!(
            proxy.registry.get(&format!("tool-{tool}")).is_none(),
            "{tool} is registered at the proxy"
        );
    }

    // Granted, but the proxy has no source for it: the first call breaks the tool, with why.
    stack.wait_ready("unsourced").await;
    let (status, answer) = stack.call_tool("unsourced", "ping", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(error_code(&answer), "tool_unavailable");
    let listed = stack.wait_status("unsourced", "broken").await;
    let error = listed["error"].as_str().unwrap();
    assert!(
        error.contains("refused the tool's policy") && error.contains("NOT_AT_PROXY"),
        "{listed}"
    );
    let (status, answer) = stack.call_tool("unsourced", "ping", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NOT_AT_PROXY"),
        "{answer}"
    );
    let pool = sqlx::PgPool::connect(&stack.server.database_url)
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT tool FROM tool_egress")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
    assert!(proxy.registry.get("tool-unsourced").is_none());

    // No reveal was asked for or given.
    let (status, page) = stack
        .server
        .admin(Method::GET, "/admin/egress-audit", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        !page["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["method"] == "REVEAL"),
        "{page}"
    );
}

/// A proxy that is away fails a call with 503 `tool_unavailable` (the tool stays ready), and is
/// not asked again for that tool until a back-off delay has passed; once it is back, calls
/// work without a restart.
#[tokio::test]
async fn a_proxy_that_is_away_fails_calls_with_503_and_is_asked_again_later() {
    let dir = temp_dir("tools-proxy-away");
    let tools = dir.join("tools");
    write_tool(
        &tools,
        "plain",
        &pyproject("plain", "hosts = [\"api.example.test\"]\n"),
        PLAIN,
    );
    // A port nothing listens on (yet).
    let away = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let stack = ToolStack::start(&dir, vec![tools], with_proxy(format!("http://{away}"))).await;
    stack.wait_ready("plain").await;
    let (status, answer) = stack.call_tool("plain", "ping", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(error_code(&answer), "tool_unavailable");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("unreachable"), "{message}");
    // At once again: answered from the back-off, without asking the proxy.
    let (status, answer) = stack.call_tool("plain", "ping", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("trying again in"), "{message}");
    assert_eq!(stack.listed("plain").await.unwrap()["status"], "ready");

    let proxy = TestProxy::start(Some(away), dir.join("sockets")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = stack.call_tool("plain", "ping", json!({})).await;
        if status == StatusCode::OK {
            assert_eq!(answer["result"], "pong");
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert!(Instant::now() < deadline, "never answered: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(proxy.registry.get("tool-plain").is_some());
}

/// A tool removed while the server was down loses its principal when the server is back: the
/// first look through the folders forgets the rows of tools it did not find (and only those),
/// and the proxy stops serving them.
#[tokio::test]
async fn a_tool_removed_while_the_server_was_down_is_forgotten() {
    let dir = temp_dir("tools-gone-while-down");
    let tools = dir.join("tools");
    for name in ["kept", "gone"] {
        write_tool(
            &tools,
            name,
            &pyproject(name, "hosts = [\"api.example.test\"]\n"),
            PLAIN,
        );
    }
    let proxy = TestProxy::start(None, dir.join("sockets")).await;
    let control = format!("http://{}", proxy.addr);
    let mut first = ToolStack::start(&dir, vec![tools.clone()], with_proxy(control.clone())).await;
    for name in ["kept", "gone"] {
        first.wait_ready(name).await;
        let (status, answer) = first.call_tool(name, "ping", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let database_url = first.server.database_url.clone();
    first.shutdown().await;

    std::fs::remove_dir_all(tools.join("gone")).unwrap();
    let mut config = tool_config(&database_url, &dir, vec![tools]);
    with_proxy(control)(&mut config);
    let second = ToolStack {
        server: TestServer::start_with(config, true).await,
        dir: dir.clone(),
    };
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<String> = sqlx::query_scalar("SELECT tool FROM tool_egress ORDER BY tool")
            .fetch_all(&pool)
            .await
            .unwrap();
        if rows == ["kept"] {
            break;
        }
        assert!(Instant::now() < deadline, "rows: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("the proxy stops serving the removed tool", || {
        proxy.registry.get("tool-gone").is_none()
    })
    .await;
    assert!(proxy.registry.get("tool-kept").is_some());
    second.wait_ready("kept").await;
    drop(first);
}
