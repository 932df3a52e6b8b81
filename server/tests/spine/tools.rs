//! Tools, from discovery to a worker's answer: real `uv` environments, the real SDK worker in
//! real bubblewrap, over the real API.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use centaur_test_support::temp::temp_dir;
use centaur_test_support::tools::{
    ToolStack, pyproject, wait_no_workers, worker_processes, write_tool,
};

const GREET_V1: &str = r#"
from centaur_tools import Tool


class Greet(Tool):
    def hello(self, name: str) -> str:
        """Says hello."""
        return f"hello {name} from the base"
"#;

const GREET_V2: &str = r#"
from pathlib import Path

from centaur_tools import Tool


class Greet(Tool):
    def hello(self, name: str) -> str:
        """Says hello."""
        return f"hello {name} from the overlay"

    def search(self, query: str, limit: int = 10, tags: list[str] | None = None) -> list[str]:
        """Searches the notes.

        Returns what matches, best first.

        Args:
            query: Words to look for.
            limit: How many results at most.
            tags: Only notes with all of these tags.
        """
        with open(Path.home() / "calls.log", "a") as log:
            log.write(f"search {query}\n")
        return [query] * min(limit, 2)
"#;

/// `GET /tools` lists the overlay's version of a tool with what it shadows; its schema comes
/// from its type hints and docstring; bad arguments are refused naming the argument, before
/// the worker sees them.
#[tokio::test]
async fn tools_discovery_shadows_and_describes_methods() {
    let dir = temp_dir("tools-discovery");
    let (base, overlay) = (dir.join("base"), dir.join("overlay"));
    write_tool(&base, "greet", &pyproject("greet", ""), GREET_V1);
    write_tool(&base, "plain", &pyproject("plain", ""), GREET_V1);
    write_tool(
        &overlay,
        "greet",
        &pyproject(
            "greet",
            "description = \"Greets, from the overlay\"\napproval = [\"search\"]\nhosts = [\"api.example.com\"]",
        ),
        GREET_V2,
    );
    // The SDK's own folder has a pyproject.toml without [tool.centaur]: not a tool.
    std::fs::create_dir_all(base.join("sdk")).unwrap();
    std::fs::write(
        base.join("sdk/pyproject.toml"),
        "[project]\nname = \"centaur-tools\"\n",
    )
    .unwrap();
    let stack = ToolStack::start(
        &dir,
        vec![base.clone(), overlay.clone(), dir.join("missing")],
        |_| {},
    )
    .await;
    let greet = stack.wait_ready("greet").await;
    stack.wait_ready("plain").await;
    let list = stack.list().await;
    let names: Vec<&str> = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greet", "plain"], "only the two tools are listed");
    let base_path = base.canonicalize().unwrap().display().to_string();
    let overlay_path = overlay.canonicalize().unwrap().display().to_string();
    assert_eq!(greet["source"], overlay_path);
    assert_eq!(greet["shadows"], json!([base_path]));
    assert_eq!(greet["description"], "Greets, from the overlay");
    assert_eq!(greet["hosts"], json!(["api.example.com"]));

    let (status, shown) = stack
        .server
        .admin(Method::GET, "/tools/greet", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let search = shown["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "search")
        .unwrap()
        .clone();
    assert_eq!(search["approval"], true);
    assert!(
        search["description"]
            .as_str()
            .unwrap()
            .starts_with("Searches the notes."),
        "{search}"
    );
    let parameters = &search["parameters"];
    assert_eq!(parameters["type"], "object");
    assert_eq!(parameters["additionalProperties"], false);
    assert_eq!(parameters["required"], json!(["query"]));
    let properties = &parameters["properties"];
    assert_eq!(properties["query"]["type"], "string");
    assert_eq!(properties["query"]["description"], "Words to look for.");
    assert_eq!(properties["limit"]["type"], "integer");
    assert_eq!(properties["limit"]["default"], 10);
    assert_eq!(
        properties["tags"]["anyOf"],
        json!([{"type": "array", "items": {"type": "string"}}, {"type": "null"}]),
        "{properties}"
    );
    assert_eq!(search["returns"]["type"], "array");
    let hello = shown["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "hello")
        .unwrap();
    assert_eq!(hello["approval"], false);

    let (status, answer) = stack
        .call_tool("greet", "hello", json!({"name": "ann"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], "hello ann from the overlay");
    assert!(answer["call_id"].is_string() && answer["duration_ms"].is_u64());
    let (status, answer) = stack
        .call_tool("greet", "search", json!({"query": "q", "tags": ["a"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], json!(["q", "q"]));

    // Bad arguments: 400 naming the argument, and the worker never sees the call.
    for (arguments, argument) in [
        (json!({}), "query"),
        (json!({"query": 5}), "query"),
        (json!({"query": "q", "limit": "ten"}), "limit"),
        (json!({"query": "q", "tags": ["a", 1]}), "tags"),
        (json!({"query": "q", "colour": "red"}), "colour"),
    ] {
        let (status, body) = stack.call_tool("greet", "search", arguments.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{arguments}: {body}");
        assert_eq!(body["error"]["code"], "invalid_arguments", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("argument \"{argument}\": ")),
            "{arguments}: {message}"
        );
    }
    let (status, body) = stack.call_tool("greet", "search", json!([1])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_arguments", "{body}");
    assert_eq!(
        body["error"]["message"], "the body must be a JSON object of the method's arguments",
        "{body}"
    );
    let calls =
        std::fs::read_to_string(stack.data_dir().join("tools/homes/greet/calls.log")).unwrap();
    assert_eq!(calls, "search q\n", "only the good call reached the worker");

    let (status, body) = stack.call_tool("nope", "hello", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "tool_not_found");
    let (status, body) = stack
        .server
        .admin(Method::GET, "/tools/nope", Value::Null)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "tool_not_found");
    let (status, body) = stack.call_tool("greet", "goodbye", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "tool_method_not_found");
    let (status, body) = stack
        .call_tool("plain", "hello", json!({"name": "bo"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "hello bo from the base");
}

const ALPHA_V1: &str = r#"
from centaur_tools import Tool


class Alpha(Tool):
    def one(self) -> int:
        return 1
"#;

const ALPHA_V2: &str = r#"
from centaur_tools import Tool


class Alpha(Tool):
    def one(self) -> int:
        return 1

    def two(self, x: int) -> int:
        return 2 * x
"#;

const BETA: &str = r#"
from centaur_tools import Tool


class Beta(Tool):
    def ping(self) -> str:
        return "pong"
"#;

/// Without a restart: an edited tool gains its new method; one whose pyproject.toml breaks is
/// reported broken while the others keep answering; fixed, it is ready again; deleted, gone.
#[tokio::test]
async fn tools_reload_on_change() {
    let dir = temp_dir("tools-reload");
    let tools = dir.join("tools");
    write_tool(&tools, "alpha", &pyproject("alpha", ""), ALPHA_V1);
    write_tool(&tools, "beta", &pyproject("beta", ""), BETA);
    let mut stack = ToolStack::start(&dir, vec![tools.clone()], |_| {}).await;
    stack.wait_ready("alpha").await;
    stack.wait_ready("beta").await;
    let (status, body) = stack.call_tool("alpha", "one", json!({})).await;
    assert_eq!(
        (status, &body["result"]),
        (StatusCode::OK, &json!(1)),
        "{body}"
    );

    std::fs::write(tools.join("alpha/client.py"), ALPHA_V2).unwrap();
    stack
        .wait_for("alpha", |t| {
            t.is_some_and(|t| {
                t["methods"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["name"] == "two"))
            })
        })
        .await;
    let (status, body) = stack.call_tool("alpha", "two", json!({"x": 21})).await;
    assert_eq!(
        (status, &body["result"]),
        (StatusCode::OK, &json!(42)),
        "{body}"
    );

    std::fs::write(tools.join("alpha/pyproject.toml"), "[tool.centaur\nbroken").unwrap();
    let broken = stack.wait_status("alpha", "broken").await;
    let error = broken["error"].as_str().unwrap();
    assert!(error.contains("pyproject.toml"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
    let (status, body) = stack.call_tool("alpha", "one", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "tool_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pyproject.toml"),
        "{body}"
    );
    // Shown as it is, broken with the reason (`centaur tools show` says why).
    let (status, body) = stack
        .server
        .admin(Method::GET, "/tools/alpha", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "broken", "{body}");
    assert_eq!(body["error"], broken["error"], "{body}");
    let (status, body) = stack.call_tool("beta", "ping", json!({})).await;
    assert_eq!(
        (status, &body["result"]),
        (StatusCode::OK, &json!("pong")),
        "{body}"
    );

    std::fs::write(tools.join("alpha/pyproject.toml"), pyproject("alpha", "")).unwrap();
    stack.wait_ready("alpha").await;
    let (status, body) = stack.call_tool("alpha", "two", json!({"x": 2})).await;
    assert_eq!(
        (status, &body["result"]),
        (StatusCode::OK, &json!(4)),
        "{body}"
    );

    let envs = stack.data_dir().join("tools/envs");
    let first_alpha = environments(&envs, "alpha-");
    assert_eq!(first_alpha.len(), 1, "{first_alpha:?}");
    // A new pyproject.toml is a new environment; the old one goes once nothing runs from it.
    std::fs::write(
        tools.join("alpha/pyproject.toml"),
        pyproject("alpha", "") + "\n# changed\n",
    )
    .unwrap();
    stack.wait_ready("alpha").await;
    let (status, body) = stack.call_tool("alpha", "two", json!({"x": 2})).await;
    assert_eq!(
        (status, &body["result"]),
        (StatusCode::OK, &json!(4)),
        "{body}"
    );
    until_environments(&envs, "alpha-", |now| {
        now.len() == 1 && now != first_alpha.as_slice()
    })
    .await;
    let beta = environments(&envs, "beta-");
    assert_eq!(beta.len(), 1, "{beta:?}");

    std::fs::remove_dir_all(tools.join("alpha")).unwrap();
    stack.wait_for("alpha", |t| t.is_none()).await;
    until_environments(&envs, "alpha-", <[String]>::is_empty).await;
    assert_eq!(environments(&envs, "beta-"), beta);
    let (status, body) = stack.call_tool("alpha", "one", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = stack.call_tool("beta", "ping", json!({})).await;
    assert_eq!(
        (status, &body["result"]),
        (StatusCode::OK, &json!("pong")),
        "{body}"
    );
    stack.shutdown().await;
}

/// The environments under `envs` whose names start with `prefix`, sorted.
fn environments(envs: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(envs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Waits (up to 30 s) until the environments starting with `prefix` satisfy `done`.
async fn until_environments(envs: &Path, prefix: &str, done: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = environments(envs, prefix);
        if done(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "environments: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ROUGH: &str = r#"
import os
import subprocess
import sys
import time
import uuid

from centaur_tools import Tool

WORKER = uuid.uuid4().hex


class Rough(Tool):
    def whoami(self) -> str:
        return WORKER

    def crash(self) -> None:
        print("going down now", file=sys.stderr, flush=True)
        os._exit(3)

    def noisy(self) -> dict:
        print("plain print to stdout")
        print("{\"type\": \"result\", \"id\": \"00000000-0000-0000-0000-000000000000\", \"value\": 1}")
        sys.stdout.write("no newline")
        sys.stdout.flush()
        os.write(1, b"\nstraight to fd 1\n")
        subprocess.run(["echo", "from a subprocess"], check=True)
        return {"ok": True, "text": "intact"}

    def hang(self) -> None:
        time.sleep(3600)

    def quick(self) -> str:
        return "quick"
"#;

/// A method that kills its worker fails with `tool_failed` naming the exit and the worker's
/// last words, and the next call gets a new worker; printing to stdout does not corrupt the
/// protocol; a call that hangs times out (504) while other calls go on, and its worker is
/// retired and ended.
#[tokio::test]
async fn tools_crash_hang_and_print() {
    let dir = temp_dir("tools-rough");
    let tools = dir.join("tools");
    write_tool(&tools, "rough", &pyproject("rough", ""), ROUGH);
    write_tool(
        &tools,
        "sleepy",
        &pyproject("sleepy", "timeout_secs = 1"),
        ROUGH,
    );
    let mut stack = ToolStack::start(&dir, vec![tools.clone()], |_| {}).await;
    stack.wait_ready("rough").await;
    stack.wait_ready("sleepy").await;

    let (status, body) = stack.call_tool("rough", "noisy", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!({"ok": true, "text": "intact"}));

    let (status, first) = stack.call_tool("rough", "whoami", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, body) = stack.call_tool("rough", "crash", json!({})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "tool_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("exited with status 3"), "{message}");
    assert!(message.contains("going down now"), "{message}");
    let (status, second) = stack.call_tool("rough", "whoami", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(first["result"], second["result"], "a new worker");
    let (status, body) = stack.call_tool("rough", "noisy", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The hang: its own tool, with a one-second limit.
    let sleepy = tools.join("sleepy");
    let (status, before) = stack.call_tool("sleepy", "whoami", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let old_processes = worker_processes(&sleepy);
    assert!(!old_processes.is_empty());
    let hang = stack.call_tool("sleepy", "hang", json!({}));
    let others = async {
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(stack.call_tool("sleepy", "quick", json!({})).await);
        }
        answers
    };
    let ((status, body), answers) = tokio::join!(hang, others);
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "tool_timeout");
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"], "quick");
    }
    let (status, after) = stack.call_tool("sleepy", "whoami", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_ne!(
        before["result"], after["result"],
        "a new worker after the timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<i32> = worker_processes(&sleepy)
            .into_iter()
            .filter(|p| old_processes.contains(p))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retired worker still runs: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!worker_processes(&sleepy).is_empty(), "the new worker runs");
    stack.shutdown().await;
    wait_no_workers(&tools).await;
}

const BUSY: &str = r#"
import asyncio
import threading

from centaur_tools import Tool

LOCK = threading.Lock()
STATE = {"now": 0, "peak": 0}


class Busy(Tool):
    async def work(self, n: int) -> int:
        with LOCK:
            STATE["now"] += 1
            STATE["peak"] = max(STATE["peak"], STATE["now"])
        await asyncio.sleep(0.02)
        with LOCK:
            STATE["now"] -= 1
        return n

    def peak(self) -> int:
        return STATE["peak"]
"#;

/// Many calls at once to a tool with `concurrency = 2`: every one answered, never more than two
/// inside the worker at a time (its methods are `async def`, which the worker does not bound).
#[tokio::test]
async fn tools_concurrency_limit_holds() {
    let dir = temp_dir("tools-busy");
    let tools = dir.join("tools");
    write_tool(&tools, "busy", &pyproject("busy", "concurrency = 2"), BUSY);
    let mut stack = ToolStack::start(&dir, vec![tools.clone()], |_| {}).await;
    stack.wait_ready("busy").await;
    let calls = (0..60).map(|n| {
        let stack = &stack;
        async move { (n, stack.call_tool("busy", "work", json!({"n": n})).await) }
    });
    for (n, (status, body)) in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"], n);
    }
    let (status, body) = stack.call_tool("busy", "peak", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let peak = body["result"].as_u64().unwrap();
    assert!((1..=2).contains(&peak), "peak parallelism {peak}");
    stack.shutdown().await;
}

const NAPPER: &str = r#"
import os
import time

from centaur_tools import Tool


class Napper(Tool):
    def nap(self, secs: float) -> int:
        time.sleep(secs)
        return os.getpid()
"#;

/// A call waits for one of the tool's slots at most its timeout: behind slow calls it is
/// refused as busy (503, saying why), and the worker, which is not stuck, keeps its calls.
#[tokio::test]
async fn tools_a_call_waits_for_a_slot_at_most_its_timeout() {
    let dir = temp_dir("tools-queue");
    let tools = dir.join("tools");
    write_tool(
        &tools,
        "napper",
        &pyproject("napper", "concurrency = 1\ntimeout_secs = 1"),
        NAPPER,
    );
    let mut stack = ToolStack::start(&dir, vec![tools.clone()], |_| {}).await;
    stack.wait_ready("napper").await;
    let (status, warm) = stack.call_tool("napper", "nap", json!({"secs": 0})).await;
    assert_eq!(status, StatusCode::OK, "{warm}");
    // Three calls of 0.6 s through one slot: the third cannot start within a second.
    let calls = (0..3).map(|_| stack.call_tool("napper", "nap", json!({"secs": 0.6})));
    let answers = futures_util::future::join_all(calls).await;
    let done = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let busy: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .map(|(_, body)| body)
        .collect();
    assert!(done >= 1, "{answers:?}");
    assert_eq!(done + busy.len(), 3, "{answers:?}");
    assert!(!busy.is_empty(), "{answers:?}");
    for body in busy {
        assert_eq!(body["error"]["code"], "tool_unavailable", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("napper is busy: all 1 of its call slots stayed taken for 1 s"),
            "{message}"
        );
    }
    // The same worker answers on: a busy tool is not a stuck one.
    let (status, after) = stack.call_tool("napper", "nap", json!({"secs": 0})).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["result"], warm["result"]);
    for (status, body) in &answers {
        if *status == StatusCode::OK {
            assert_eq!(body["result"], warm["result"]);
        }
    }
    stack.shutdown().await;
}

/// A plugin with a syntax error, one whose manifest is wrong, one whose approval names no
/// method, and one that asks for the server's own secrets in `env` are each reported broken
/// with the reason (in the list and by `GET /tools/{tool}`); the good one is callable.
#[tokio::test]
async fn tools_broken_plugins_are_reported() {
    let dir = temp_dir("tools-broken");
    let tools = dir.join("tools");
    write_tool(&tools, "good", &pyproject("good", ""), BETA);
    write_tool(
        &tools,
        "syntax",
        &pyproject("syntax", ""),
        "from centaur_tools import Tool\n\nclass Syntax(Tool)\n    def x(self) -> int:\n        return 1\n",
    );
    write_tool(
        &tools,
        "manifest",
        &pyproject("manifest", "hostz = [\"x\"]"),
        BETA,
    );
    write_tool(
        &tools,
        "approval",
        &pyproject("approval", "approval = [\"pong\"]"),
        BETA,
    );
    write_tool(
        &tools,
        "greedy",
        &pyproject(
            "greedy",
            "env = [\"GITHUB_API_URL\", \"CENTAUR_ADMIN_API_KEY\", \"DATABASE_URL\"]",
        ),
        BETA,
    );
    write_tool(
        &tools,
        "pathy",
        &pyproject("pathy", "env = [\"PYTHONPATH\"]"),
        BETA,
    );
    let mut stack = ToolStack::start(&dir, vec![tools.clone()], |_| {}).await;
    stack.wait_ready("good").await;
    let syntax = stack.wait_status("syntax", "broken").await;
    let error = syntax["error"].as_str().unwrap();
    assert!(
        error.contains("SyntaxError") || error.contains("syntax"),
        "{error}"
    );
    assert!(error.contains("client.py"), "{error}");
    let manifest = stack.wait_status("manifest", "broken").await;
    let error = manifest["error"].as_str().unwrap();
    assert!(
        error.contains("pyproject.toml") && error.contains("hostz"),
        "{error}"
    );
    let approval = stack.wait_status("approval", "broken").await;
    let error = approval["error"].as_str().unwrap();
    assert!(
        error.contains("approval") && error.contains("pong"),
        "{error}"
    );
    let greedy = stack.wait_status("greedy", "broken").await;
    let error = greedy["error"].as_str().unwrap();
    assert!(
        error.contains("\"CENTAUR_ADMIN_API_KEY\"") && error.contains("server's own"),
        "{error}"
    );
    assert!(!error.contains('\n'), "one line: {error}");
    let pathy = stack.wait_status("pathy", "broken").await;
    let error = pathy["error"].as_str().unwrap();
    assert!(
        error.contains("\"PYTHONPATH\"") && error.contains("jail sets"),
        "{error}"
    );
    let (status, body) = stack.call_tool("syntax", "x", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "tool_unavailable");
    let (status, body) = stack
        .server
        .admin(Method::GET, "/tools/syntax", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "broken", "{body}");
    assert_eq!(body["error"], syntax["error"], "{body}");
    let (status, body) = stack.call_tool("good", "ping", json!({})).await;
    assert_eq!(
        (status, &body["result"]),
        (StatusCode::OK, &json!("pong")),
        "{body}"
    );
    stack.shutdown().await;
}

/// Without uv every tool is broken, saying how to install it.
#[tokio::test]
async fn tools_without_uv_are_broken() {
    let dir = temp_dir("tools-no-uv");
    let tools = dir.join("tools");
    write_tool(&tools, "good", &pyproject("good", ""), BETA);
    let stack = ToolStack::start(&dir, vec![tools], |config| {
        config.tools.uv = dir.join("no-such-uv");
    })
    .await;
    let good = stack.wait_status("good", "broken").await;
    assert_eq!(
        good["error"],
        "uv is not installed: pip install --user uv, or set CENTAUR_UV"
    );
}

const PEEK: &str = r#"
import os
import socket

from centaur_tools import Tool


class Peek(Tool):
    def read(self, path: str) -> str:
        try:
            with open(path) as f:
                return "read: " + f.read()
        except OSError as error:
            return f"refused: {type(error).__name__}"

    def write(self, path: str) -> str:
        try:
            with open(path, "w") as f:
                f.write("x")
            return "written"
        except OSError as error:
            return f"refused: {type(error).__name__}"

    def connect(self, host: str, port: int) -> str:
        try:
            socket.create_connection((host, port), timeout=3).close()
            return "connected"
        except OSError as error:
            return f"refused: {type(error).__name__}"

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def env(self) -> dict:
        return dict(os.environ)
"#;

/// The `env` setting of the jail test's tool: a variable `cargo test` gives this process (the
/// server's), so the test needs no `set_var` (unsound beside other tests' threads).
const PEEK_SETTING: &str = "CARGO_PKG_NAME";

/// Inside its jail a worker cannot read the server's data folder, the host's files beside it
/// or in the server's user's home, or the system's private keys; it cannot write its own
/// folder or open a network connection; it can write its home; its environment is only what it
/// is given. (That no value of it reaches a command line: `tools_egress.rs`, with a revealed
/// secret.)
#[tokio::test]
async fn tools_jail_hides_data_and_network() {
    let dir = temp_dir("tools-jail");
    let tools = dir.join("tools");
    // The server's value, when it has one (the test binary run outside cargo has none: then the
    // worker has no such variable either).
    let setting = std::env::var(PEEK_SETTING).ok();
    write_tool(
        &tools,
        "peek",
        &pyproject("peek", &format!("env = [\"{PEEK_SETTING}\"]")),
        PEEK,
    );
    // The operator grants the tool that setting (`CENTAUR_TOOL_SETTINGS`).
    let mut stack = ToolStack::start(&dir, vec![tools.clone()], |config| {
        config.tools.settings =
            centaur_server::tools::settings::SecretGrants::parse(&format!("peek={PEEK_SETTING}"))
                .unwrap();
    })
    .await;
    stack.wait_ready("peek").await;
    let secret = stack.data_dir().join("secret.txt");
    std::fs::write(&secret, "the server's").unwrap();
    let call = |method: &'static str, arguments: Value| {
        let stack = &stack;
        async move {
            let (status, body) = stack.call_tool("peek", method, arguments).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["result"].clone()
        }
    };
    let result = call("read", json!({"path": secret.display().to_string()})).await;
    assert_eq!(result, "refused: FileNotFoundError");
    // Nothing of the host but its system: not a file beside the tools (as `centaur dev` keeps
    // model keys beside its data folder), not a file in the server's user's home.
    let beside = dir.join("keys.txt");
    std::fs::write(&beside, "a model key").unwrap();
    let result = call("read", json!({"path": beside.display().to_string()})).await;
    assert_eq!(result, "refused: FileNotFoundError");
    let in_home = HomeFile::write();
    let result = call("read", json!({"path": in_home.0.display().to_string()})).await;
    assert_eq!(
        result,
        "refused: FileNotFoundError",
        "{}",
        in_home.0.display()
    );
    drop(in_home);
    // The system's certificates, not its private keys.
    assert_eq!(
        call("exists", json!({"path": "/etc/ssl/certs"})).await,
        json!(true)
    );
    for private in [
        "/etc/ssl/private",
        "/etc/pki/tls/private",
        "/etc/pki/CA/private",
    ] {
        assert_eq!(
            call("exists", json!({"path": private})).await,
            json!(false),
            "{private} is visible"
        );
    }
    let result = call(
        "write",
        json!({"path": tools.join("peek/new.txt").display().to_string()}),
    )
    .await;
    assert!(result.as_str().unwrap().starts_with("refused"), "{result}");
    let home = stack.data_dir().join("tools/homes/peek");
    let result = call(
        "write",
        json!({"path": home.join("note.txt").display().to_string()}),
    )
    .await;
    assert_eq!(result, "written");
    assert!(home.join("note.txt").is_file());
    let port = stack
        .server
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let result = call("connect", json!({"host": "127.0.0.1", "port": port})).await;
    assert!(result.as_str().unwrap().starts_with("refused"), "{result}");
    let env = call("env", json!({})).await;
    let mut names: Vec<&str> = env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    let mut expected = vec![
        "CENTAUR_TOOL",
        "CENTAUR_TOOL_CONCURRENCY",
        "HOME",
        "LANG",
        "PATH",
        "PWD",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
    ];
    if setting.is_some() {
        expected.push(PEEK_SETTING);
        expected.sort_unstable();
    }
    assert_eq!(names, expected, "{env}");
    assert_eq!(env["CENTAUR_TOOL"], "peek");
    assert_eq!(env["CENTAUR_TOOL_CONCURRENCY"], "8");
    if let Some(setting) = &setting {
        assert_eq!(env[PEEK_SETTING], setting.as_str());
    }
    stack.shutdown().await;
}

/// A file the test writes in the home of the user it runs as (the server's), removed when
/// dropped.
struct HomeFile(std::path::PathBuf);

impl HomeFile {
    fn write() -> HomeFile {
        let home = std::path::PathBuf::from(std::env::var("HOME").unwrap());
        let path = home.join(format!(
            ".centaur-jail-probe-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, "the server's user's").unwrap();
        HomeFile(path)
    }
}

impl Drop for HomeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// After the server stops, no worker of its tools is left running.
#[tokio::test]
async fn tools_no_workers_after_shutdown() {
    let dir = temp_dir("tools-shutdown");
    let tools = dir.join("tools");
    write_tool(&tools, "rough", &pyproject("rough", ""), ROUGH);
    write_tool(&tools, "beta", &pyproject("beta", ""), BETA);
    let mut stack = ToolStack::start(&dir, vec![tools.clone()], |_| {}).await;
    stack.wait_ready("rough").await;
    stack.wait_ready("beta").await;
    let (status, body) = stack.call_tool("beta", "ping", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // One call still running when the server stops.
    let hang = {
        let url = format!("{}/tools/rough/hang", stack.server.url);
        let http = stack.server.http.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(centaur_test_support::server::ADMIN_KEY)
                .json(&json!({}))
                .send()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker_processes(&tools.join("rough")).is_empty() {
        assert!(Instant::now() < deadline, "the rough worker never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!worker_processes(&tools.join("beta")).is_empty());
    stack.shutdown().await;
    wait_no_workers(&tools).await;
    hang.abort();
}

const GREEDY: &str = r#"
from centaur_tools import Tool


class Greedy(Tool):
    """Asks for more memory than a worker may have."""

    def allocate(self, mib: int) -> int:
        """Holds `mib` MiB for a moment and says how many it got."""
        block = bytearray(mib * 1024 * 1024)
        return len(block) // (1024 * 1024)
"#;

/// A worker's address space is limited (`CENTAUR_TOOL_MEMORY_MB`): a call asking for more fails
/// with the worker's `MemoryError`, and the tool keeps answering calls within the limit.
#[tokio::test]
async fn tools_memory_limit_holds() {
    let dir = temp_dir("tools-memory");
    let tools = dir.join("tools");
    write_tool(&tools, "greedy", &pyproject("greedy", ""), GREEDY);
    let mut stack = ToolStack::start(&dir, vec![tools.clone()], |config| {
        config.tools.memory_mb = 512;
    })
    .await;
    stack.wait_ready("greedy").await;
    let (status, body) = stack
        .call_tool("greedy", "allocate", json!({"mib": 2048}))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "tool_failed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MemoryError"),
        "{body}"
    );
    let (status, body) = stack
        .call_tool("greedy", "allocate", json!({"mib": 16}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], 16);
    stack.shutdown().await;
}
