//! Benchmarks of local sandboxes, against the real `centaur-server` binary with the local
//! bubblewrap backend, the real runner, and an egress proxy registering every sandbox:
//!
//! - spawn with a warm pool (`POST /agent/spawn` to the answer, sandbox ready),
//! - cold spawn (bubblewrap started, runner up and attached),
//! - `POST /agent/execute` with the `echo` harness to `execution.completed` on the stream,
//! - 50 sandboxes at once, each running a turn; memory per idle sandbox.
//!
//! Run with `cargo bench -p centaur-server --bench sandboxes` (or `just bench-sandboxes`).
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use centaur_proxy::audit::LogSink;
use centaur_proxy::control::Control;
use centaur_proxy::secrets::SecretStore;
use centaur_proxy::{Limits, Proxy, Registry};
use centaur_test_support::http::http;
use centaur_test_support::measure::{num_cpus, pss_kib, quantile};
use centaur_test_support::pg::bench_database;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "bench-admin-key-0123456789";
const PROXY_TOKEN: &str = "bench-proxy-token-0123456789";

struct Stack {
    url: String,
    http: reqwest::Client,
    server: Child,
    data: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: plain signal delivery; the server stops its sandboxes on SIGTERM.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGTERM) };
        let _ = self.server.wait();
    }
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("centaur-bench-sandboxes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runner = build_runner();
    let proxy = start_proxy(&dir).await;
    println!("centaur local sandbox benchmarks ({} cores)\n", num_cpus());

    // Warm spawns: a pool of 2 echo sandboxes; every spawn is a new thread.
    {
        let stack = start_server(&dir.join("warm"), &runner, &proxy, 2).await;
        let mut warm = Vec::new();
        let mut other = 0;
        for i in 0..100 {
            stack.wait_for_pool(2).await;
            let started = Instant::now();
            let answer = stack
                .post(
                    "/agent/spawn",
                    json!({"thread_key": format!("api:warm-{i}"), "harness": "echo"}),
                )
                .await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if answer["ready_source"] == "warm_pool" {
                warm.push(ms);
            } else {
                other += 1;
            }
            stack
                .post(&format!("/agent/threads/api:warm-{i}/release"), json!({}))
                .await;
        }
        report(
            "spawn from the warm pool (POST /agent/spawn to the answer)",
            &mut warm,
        );
        assert_eq!(other, 0, "every spawn found a warm sandbox");

        // Echo turns on a warm sandbox: execute to execution.completed on the stream.
        stack
            .post(
                "/agent/spawn",
                json!({"thread_key": "api:echo", "harness": "echo"}),
            )
            .await;
        let mut turns = Vec::new();
        for i in 0..100 {
            turns.push(stack.echo_turn("api:echo", &format!("hello {i}")).await);
        }
        report(
            "echo execute to execution.completed on the stream",
            &mut turns,
        );
    }

    // Cold spawns.
    {
        let stack = start_server(&dir.join("cold"), &runner, &proxy, 0).await;
        let mut cold = Vec::new();
        for i in 0..50 {
            let started = Instant::now();
            let answer = stack
                .post(
                    "/agent/spawn",
                    json!({"thread_key": format!("api:cold-{i}"), "harness": "echo"}),
                )
                .await;
            cold.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(answer["ready_source"], "cold");
            stack
                .post(&format!("/agent/threads/api:cold-{i}/release"), json!({}))
                .await;
        }
        report(
            "cold spawn (bubblewrap started, runner up and attached)",
            &mut cold,
        );

        // Interrupts: a shell turn whose command ignores SIGTERM and leaves a setsid'ed
        // grandchild; from the interrupt request to every one of its processes gone.
        let mut answered = Vec::new();
        let mut gone = Vec::new();
        for i in 0..20 {
            let marker = 7_100_000 + i;
            let command = format!(
                "setsid sh -c 'trap \"\" TERM; exec sleep {marker}1' & trap '' TERM; sleep {marker}2"
            );
            stack
                .post(
                    "/agent/execute",
                    json!({"thread_key": "api:interrupts", "harness": "shell", "message": command}),
                )
                .await;
            let markers = [format!("sleep {marker}1"), format!("sleep {marker}2")];
            let deadline = Instant::now() + Duration::from_secs(30);
            while processes_with(&markers) < 2 {
                assert!(
                    Instant::now() < deadline,
                    "the turn's processes never appeared"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let started = Instant::now();
            stack
                .post("/agent/threads/api:interrupts/interrupt", json!({}))
                .await;
            answered.push(started.elapsed().as_secs_f64() * 1000.0);
            while processes_with(&markers) > 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the turn's processes outlived the interrupt"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            gone.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        report("interrupt: the request answered", &mut answered);
        report(
            "interrupt: every process of the turn gone (SIGTERM ignored, setsid grandchild)",
            &mut gone,
        );

        // 50 sandboxes at once.
        let started = Instant::now();
        let spawns = futures_util::future::join_all((0..50).map(|i| {
            let stack = &stack;
            async move {
                stack
                    .try_post(
                        "/agent/spawn",
                        json!({"thread_key": format!("api:many-{i}"), "harness": "echo"}),
                    )
                    .await
            }
        }))
        .await;
        let spawned = spawns.iter().filter(|r| r.is_ok()).count();
        let spawn_secs = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let turns = futures_util::future::join_all((0..50).map(|i| {
            let stack = &stack;
            async move { stack.echo_turn(&format!("api:many-{i}"), "hi").await }
        }))
        .await;
        let turn_secs = started.elapsed().as_secs_f64();
        println!(
            "50 sandboxes at once: {spawned}/50 spawned in {spawn_secs:.2} s, 50/50 turns completed in {turn_secs:.2} s (slowest {:.0} ms)",
            turns.iter().cloned().fold(0.0, f64::max)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (count, pss) = sandbox_memory(&stack.data);
        println!(
            "memory per idle sandbox (PSS of bubblewrap and the runner): {:.2} MiB average over {count} sandboxes",
            pss as f64 / 1024.0 / count.max(1) as f64
        );
        assert_eq!(spawned, 50, "every sandbox started: {spawns:?}");
    }
    proxy.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many processes on this host run a command line holding one of `markers` (sandboxes'
/// processes are visible from the host).
fn processes_with(markers: &[String]) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| markers.iter().any(|m| cmdline.contains(m.as_str())))
        .count()
}

fn report(what: &str, samples: &mut [f64]) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{what}: n={} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        quantile(samples, 0.5),
        quantile(samples, 0.99),
        samples.last().copied().unwrap_or_default()
    );
}

/// PSS of every process of every running sandbox under `data`.
fn sandbox_memory(data: &Path) -> (usize, u64) {
    let mut count = 0;
    let mut total = 0;
    for entry in std::fs::read_dir(data.join("sandboxes")).unwrap().flatten() {
        let Some(pid) = std::fs::read_to_string(entry.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        count += 1;
        let mut stack = vec![pid];
        while let Some(pid) = stack.pop() {
            total += pss_kib(pid);
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    (count, total)
}

fn build_runner() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "centaur-runner",
            "--bin",
            "centaur-runner",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/centaur-runner")
}

struct ProxyHandle {
    control_url: String,
    sockets: PathBuf,
    stop: CancellationToken,
}

impl ProxyHandle {
    fn cancel(&self) {
        self.stop.cancel();
    }
}

async fn start_proxy(dir: &Path) -> ProxyHandle {
    let registry = Arc::new(Registry::new(b"bench-proxy-key-0123456789abcdef".to_vec()));
    let proxy = Proxy::new(
        registry,
        Arc::new(SecretStore::new(
            Default::default(),
            Duration::from_secs(60),
        )),
        Arc::new(LogSink),
        Limits::default(),
        None,
    );
    let stop = CancellationToken::new();
    let sockets = dir.join("proxy");
    let control = Control::new(
        proxy,
        Some(PROXY_TOKEN.into()),
        Some(sockets.clone()),
        stop.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_url = format!("http://{}", listener.local_addr().unwrap());
    let s = stop.clone();
    tokio::spawn(async move { control.serve(listener, s).await });
    ProxyHandle {
        control_url,
        sockets,
        stop,
    }
}

async fn start_server(dir: &Path, runner: &Path, proxy: &ProxyHandle, warm: usize) -> Stack {
    std::fs::create_dir_all(dir).unwrap();
    let _ = &proxy.sockets;
    let database_url = bench_database(&format!("sandboxes_{warm}")).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = dir.join("data");
    let server = Command::new(env!("CARGO_BIN_EXE_centaur-server"))
        .env("DATABASE_URL", database_url)
        .env("CENTAUR_BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("CENTAUR_ADMIN_API_KEY", ADMIN)
        .env("CENTAUR_DATA_DIR", &data)
        .env("CENTAUR_SANDBOX_BACKEND", "local")
        .env("CENTAUR_RUNNER_BIN", runner)
        .env("CENTAUR_PROXY_TOKEN", PROXY_TOKEN)
        .env("CENTAUR_PROXY_CONTROL_URL", &proxy.control_url)
        .env("CENTAUR_WARM_POOL", warm.to_string())
        .env("CENTAUR_WARM_HARNESSES", "echo")
        .env("CENTAUR_DB_MAX_CONNECTIONS", "32")
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("start centaur-server");
    let stack = Stack {
        url: format!("http://127.0.0.1:{port}"),
        http: http().pool_max_idle_per_host(256).build().unwrap(),
        server,
        data,
    };
    for _ in 0..400 {
        if let Ok(r) = stack.http.get(format!("{}/readyz", stack.url)).send().await
            && r.status().is_success()
        {
            return stack;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not become ready");
}

impl Stack {
    async fn try_post(&self, path: &str, body: Value) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{path}: {status} {body}"))
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.try_post(path, body).await.unwrap()
    }

    /// Waits until the pool holds `n` sandboxes (the bench reads the server's data folder: a
    /// warm sandbox is a running sandbox no thread has claimed).
    async fn wait_for_pool(&self, n: usize) {
        for _ in 0..2000 {
            let running = std::fs::read_dir(self.data.join("sandboxes"))
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().join("workspace").is_dir())
                        .count()
                })
                .unwrap_or(0);
            if running >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the warm pool did not refill");
    }

    /// One echo turn, from the execute request to `execution.completed` on an open stream.
    async fn echo_turn(&self, thread_key: &str, message: &str) -> f64 {
        let response = self
            .http
            .get(format!(
                "{}/agent/threads/{thread_key}/events?after_event_id=0",
                self.url
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let mut body = response.bytes_stream();
        // Skip what is already there.
        let mut buffer = String::new();
        let started = Instant::now();
        let accepted = self
            .post(
                "/agent/execute",
                json!({"thread_key": thread_key, "message": message}),
            )
            .await;
        let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if frame.contains("event: execution.completed") && frame.contains(&execution_id) {
                    return started.elapsed().as_secs_f64() * 1000.0;
                }
                assert!(
                    !(frame.contains("event: execution.failed") && frame.contains(&execution_id)),
                    "{frame}"
                );
            }
        }
        panic!("the stream ended before the turn did");
    }
}
