//! Benchmarks of tools, against the real `centaur-server` binary with a tool folder of its own
//! (a Python worker in its bubblewrap jail, the SDK of this build, an environment built by uv):
//!
//! - a warm call through the API: the latency of a method that returns at once (all of it is
//!   overhead: HTTP, auth, the schema check, the frame to the worker and back), and of a method
//!   that sleeps 5 ms, less those 5 ms;
//! - 500 concurrent calls to one tool whose concurrency is 8: every call must succeed, and the
//!   tool itself records how many of its calls ever ran at once;
//! - the first call after a server start (the worker cold, its environment already built):
//!   from the tool being listed `ready` to the answer, and from the process start to the answer.
//!
//! Run with `cargo bench -p centaur-server --bench tools` (or `just bench-tools`).
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::path::Path;
use std::time::{Duration, Instant};

use centaur_test_support::http::http;
use centaur_test_support::measure::{ms, num_cpus, percentile};
use centaur_test_support::process::{ServerProcess, free_port, process_env};
use centaur_test_support::proxy::TestProxy;
use centaur_test_support::server::ADMIN_KEY;
use serde_json::{Value, json};

const WARM_CALLS: usize = 2000;
const SLEEP_CALLS: usize = 300;
const CONCURRENT: usize = 500;
const CONCURRENCY_LIMIT: usize = 8;
const COLD_RUNS: usize = 5;

const PYPROJECT: &str = r#"[project]
name = "centaur-tool-bench"
version = "0.0.0"
requires-python = ">=3.11"
dependencies = []

[tool.centaur]
description = "The tools benchmark's tool"
concurrency = 8
timeout_secs = 60
"#;

const CLIENT: &str = r#"import threading
import time

from centaur_tools import Tool

_lock = threading.Lock()
_running = 0
_peak = 0


class Bench(Tool):
    """Methods whose own cost is known."""

    def echo(self, value: str) -> str:
        """Returns its argument."""
        return value

    def hold(self, ms: int) -> int:
        """Sleeps `ms` milliseconds and returns how many calls ever ran at once."""
        global _running, _peak
        with _lock:
            _running += 1
            _peak = max(_peak, _running)
        try:
            time.sleep(ms / 1000)
        finally:
            with _lock:
                _running -= 1
        return _peak
"#;

fn uv() -> String {
    if let Ok(uv) = std::env::var("CENTAUR_UV") {
        return uv;
    }
    let on_path = std::process::Command::new("uv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return "uv".into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let local = Path::new(&home).join(".local/bin/uv");
    assert!(local.exists(), "install uv: pip install --user uv");
    local.display().to_string()
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("centaur-bench-tools-{}", std::process::id()));
    let tools = dir.join("tools");
    std::fs::create_dir_all(tools.join("bench")).unwrap();
    std::fs::write(tools.join("bench/pyproject.toml"), PYPROJECT).unwrap();
    std::fs::write(tools.join("bench/client.py"), CLIENT).unwrap();
    println!("centaur tools benchmarks ({} cores)\n", num_cpus());

    let proxy = TestProxy::start(None, dir.join("proxy")).await;
    let mut env = process_env(&dir, &proxy).await;
    env.extend(
        [
            ("TOOL_DIRS", tools.display().to_string()),
            ("CENTAUR_UV", uv()),
            (
                "RUST_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let binary = env!("CARGO_BIN_EXE_centaur-server");
    let port = free_port();
    let started = Instant::now();
    let mut server = ServerProcess::start(binary, &env, port);
    server.wait_ready().await;
    let client = http().build().unwrap();
    let built = wait_tool_ready(&client, &server.url).await;
    println!(
        "first start: the tool ready {} after the process started (its environment built by uv)\n",
        ms(built.duration_since(started))
    );

    warm(&client, &server.url).await;
    concurrent(&client, &server.url).await;

    server.terminate();
    cold(&client, binary, &env).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `GET /tools/bench` until it is ready; when it was seen ready.
async fn wait_tool_ready(client: &reqwest::Client, url: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let answer = client
            .get(format!("{url}/tools/bench"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status().is_success()
        {
            let info: Value = answer.json().await.unwrap();
            match info["status"].as_str() {
                Some("ready") => return Instant::now(),
                Some("broken") => panic!("the bench tool is broken: {}", info["error"]),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "the bench tool never got ready");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn call(client: &reqwest::Client, url: &str, method: &str, arguments: Value) -> Value {
    let answer = client
        .post(format!("{url}/tools/bench/{method}"))
        .bearer_auth(ADMIN_KEY)
        .json(&arguments)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    assert!(status.is_success(), "{method}: {status} {body}");
    body
}

async fn warm(client: &reqwest::Client, url: &str) {
    // Warm the worker and the connection.
    for _ in 0..50 {
        call(client, url, "echo", json!({"value": "x"})).await;
    }
    let mut samples = Vec::with_capacity(WARM_CALLS);
    for i in 0..WARM_CALLS {
        let value = format!("v{i}");
        let sent = Instant::now();
        let body = call(client, url, "echo", json!({ "value": value })).await;
        samples.push(sent.elapsed());
        assert_eq!(body["result"], json!(value));
    }
    println!(
        "warm call of a method that returns at once ({WARM_CALLS} calls, one at a time): p50 {}  p99 {}  max {}",
        ms(percentile(&mut samples, 0.50)),
        ms(percentile(&mut samples, 0.99)),
        ms(percentile(&mut samples, 1.0)),
    );
    let mut overhead = Vec::with_capacity(SLEEP_CALLS);
    for _ in 0..SLEEP_CALLS {
        let sent = Instant::now();
        call(client, url, "hold", json!({"ms": 5})).await;
        overhead.push(sent.elapsed().saturating_sub(Duration::from_millis(5)));
    }
    println!(
        "warm call of a method that sleeps 5 ms, less the 5 ms ({SLEEP_CALLS} calls): p50 {}  p99 {}\n",
        ms(percentile(&mut overhead, 0.50)),
        ms(percentile(&mut overhead, 0.99)),
    );
}

async fn concurrent(client: &reqwest::Client, url: &str) {
    let started = Instant::now();
    let calls = (0..CONCURRENT).map(|_| {
        let client = client.clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            let answer = client
                .post(format!("{url}/tools/bench/hold"))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"ms": 20}))
                .send()
                .await;
            match answer {
                Ok(answer) if answer.status().is_success() => {
                    let body: Value = answer.json().await.unwrap();
                    Ok(body["result"].as_u64().unwrap())
                }
                Ok(answer) => Err(format!(
                    "{} {}",
                    answer.status(),
                    answer.text().await.unwrap_or_default()
                )),
                Err(error) => Err(error.to_string()),
            }
        })
    });
    let mut failed = Vec::new();
    let mut peak = 0;
    for call in futures_util::future::join_all(calls).await {
        match call.unwrap() {
            Ok(seen) => peak = peak.max(seen),
            Err(error) => failed.push(error),
        }
    }
    let took = started.elapsed();
    println!(
        "{CONCURRENT} concurrent calls (each sleeping 20 ms) to a tool of concurrency {CONCURRENCY_LIMIT}: {} failed; at most {peak} ran at once; all done in {} ({:.0} calls/s; the floor is {} at 8 at once)\n",
        failed.len(),
        ms(took),
        CONCURRENT as f64 / took.as_secs_f64(),
        ms(Duration::from_millis(
            (CONCURRENT / CONCURRENCY_LIMIT * 20) as u64
        )),
    );
    if let Some(first) = failed.first() {
        println!("  first failure: {first}");
    }
    assert!(failed.is_empty(), "every call succeeds");
    assert!(peak as usize <= CONCURRENCY_LIMIT, "the limit held");
}

/// The server started again on the same data folder (the environment built), and its first
/// call.
async fn cold(client: &reqwest::Client, binary: &str, env: &[(String, String)]) {
    let mut from_ready = Vec::new();
    let mut from_start = Vec::new();
    for _ in 0..COLD_RUNS {
        let port = free_port();
        let started = Instant::now();
        let mut server = ServerProcess::start(binary, env, port);
        server.wait_ready().await;
        let ready = wait_tool_ready(client, &server.url).await;
        call(client, &server.url, "echo", json!({"value": "cold"})).await;
        from_ready.push(ready.elapsed());
        from_start.push(started.elapsed());
        server.terminate();
    }
    println!(
        "first call after a server start, worker cold, environment built ({COLD_RUNS} starts): from the tool listed ready p50 {}  max {}; from the process start p50 {}  max {}",
        ms(percentile(&mut from_ready, 0.50)),
        ms(percentile(&mut from_ready, 1.0)),
        ms(percentile(&mut from_start, 0.50)),
        ms(percentile(&mut from_start, 1.0)),
    );
}
