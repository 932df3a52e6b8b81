//! Benchmarks of the Slack bridge, against the real `centaur-server` binary (webhook mode, the
//! local bubblewrap backend with a warm pool of `echo` sandboxes) and the fake Slack of
//! test-support (Slack's wire format, signed events, Slack's retries):
//!
//! - the webhook's acknowledgement under 200 events a second (channel chatter: each event is
//!   verified and stored before the answer, then handled and ignored),
//! - a mention to the first thing a person sees in Slack (the 👀 reaction), to the working
//!   status, and to the first streamed progress, with a warm pool,
//! - 100 mentions with the server killed (SIGKILL) at random points and started again: every
//!   mention must get exactly one final answer and one ✓.
//!
//! Run with `cargo bench -p centaur-server --bench slack` (or `just bench-slack`).
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::collections::HashMap;
use std::time::{Duration, Instant};

use centaur_test_support::http::http;
use centaur_test_support::measure::{num_cpus, quantile};
use centaur_test_support::process::{ServerProcess, free_port, process_env};
use centaur_test_support::proxy::TestProxy;
use centaur_test_support::server::ADMIN_KEY;
use centaur_test_support::slack::{self, FakeSlack};
use serde_json::Value;

/// Events a second for the acknowledgement figure, and for how long.
const RATE: u64 = 200;
const RATE_SECONDS: u64 = 10;
const MENTIONS: usize = 30;
const KILL_TURNS: usize = 100;

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("centaur-bench-slack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("centaur Slack bridge benchmarks ({} cores)\n", num_cpus());
    let proxy = TestProxy::start(None, dir.join("proxy")).await;
    let fake = FakeSlack::start().await;
    // Slack retries after about 1 and 5 minutes; seconds here, still longer than a restart.
    fake.set_retry_delays(vec![
        Duration::from_secs(1),
        Duration::from_secs(3),
        Duration::from_secs(8),
    ]);
    let mut env = process_env(&dir, &proxy).await;
    env.extend(
        [
            ("CENTAUR_SLACK_MODE", "webhook".to_owned()),
            ("SLACK_BOT_TOKEN", slack::BOT_TOKEN.to_owned()),
            ("SLACK_SIGNING_SECRET", slack::SIGNING_SECRET.to_owned()),
            ("SLACK_API_URL", fake.api_url()),
            ("CENTAUR_SLACK_HARNESS", "echo".to_owned()),
            ("CENTAUR_WARM_POOL", "2".to_owned()),
            ("CENTAUR_WARM_HARNESSES", "echo".to_owned()),
            (
                "RUST_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let port = free_port();
    let binary = env!("CARGO_BIN_EXE_centaur-server");
    let mut server = ServerProcess::start(binary, &env, port);
    server.wait_ready().await;
    fake.deliver_to(&server.url);
    let data = dir.join("data");

    // BENCH_SLACK_ONLY=kills runs only the kill run (when looking into it).
    let only_kills = std::env::var("BENCH_SLACK_ONLY").is_ok_and(|v| v == "kills");
    if !only_kills {
        acknowledgements(&fake).await;
        first_progress(&fake, &data).await;
    }
    kills(&fake, &mut server, binary, &env, port).await;

    server.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Channel chatter at [`RATE`] a second: the time from sending an event to Slack's having its
/// answer, as Slack's side measures it.
async fn acknowledgements(fake: &FakeSlack) {
    let total = RATE * RATE_SECONDS;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = Vec::new();
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let fake = fake.clone();
        sent.push(tokio::spawn(async move {
            fake.post(
                "U2",
                "C1",
                format!("chatter {i}: nothing for the bot"),
                None,
            )
            .await
        }));
    }
    for task in sent {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let firsts: Vec<_> = fake
        .deliveries()
        .into_iter()
        .filter(|d| d.attempt == 0)
        .collect();
    let failed = firsts.iter().filter(|d| !d.is_success()).count();
    let retried = fake.deliveries().iter().filter(|d| d.attempt > 0).count();
    let mut ms: Vec<f64> = firsts
        .iter()
        .map(|d| d.latency.as_secs_f64() * 1000.0)
        .collect();
    report(
        &format!(
            "webhook acknowledged ({} events at {:.0}/s; {failed} not 2xx, {retried} retried)",
            firsts.len(),
            firsts.len() as f64 / elapsed
        ),
        &mut ms,
    );
}

/// A mention in a new thread, with sandboxes ready: when the person sees 👀, the working
/// status, and the first streamed (or posted) progress.
async fn first_progress(fake: &FakeSlack, data: &std::path::Path) {
    let mut eyes = Vec::new();
    let mut status = Vec::new();
    let mut progress = Vec::new();
    let mut answer = Vec::new();
    for i in 0..MENTIONS {
        wait_for_pool(data, 2).await;
        let sent = Instant::now();
        let ts = fake
            .post("U1", "C1", format!("<@U0BOT> mention {i}"), None)
            .await;
        let done = ts.clone();
        fake.wait_until(Duration::from_secs(30), move |f| {
            final_answers(f, "C1", &done) >= 1
        })
        .await;
        let calls = fake.calls();
        let first = |pred: &dyn Fn(&slack::Call) -> bool| {
            calls
                .iter()
                .filter(|c| c.at >= sent && c.error.is_none() && pred(c))
                .map(|c| (c.at - sent).as_secs_f64() * 1000.0)
                .next()
        };
        let about = |c: &slack::Call, field: &str| c.body[field].as_str() == Some(ts.as_str());
        eyes.extend(first(&|c| {
            c.method == "reactions.add" && about(c, "timestamp") && c.body["name"] == "eyes"
        }));
        status.extend(first(&|c| {
            c.method == "assistant.threads.setStatus"
                && about(c, "thread_ts")
                && c.body["status"].as_str().is_some_and(|s| !s.is_empty())
        }));
        progress.extend(first(&|c| {
            matches!(c.method.as_str(), "chat.startStream" | "chat.postMessage")
                && about(c, "thread_ts")
        }));
        answer.extend(first(&|c| {
            c.method == "chat.postMessage" && about(c, "thread_ts") && is_answer(&c.body)
        }));
    }
    report("mention to 👀 on the message (warm pool)", &mut eyes);
    report("mention to the working status", &mut status);
    report("mention to the first progress in the thread", &mut progress);
    report("mention to the final answer (echo)", &mut answer);
}

/// [`KILL_TURNS`] mentions, each in its own thread; after about half of them the server is
/// killed at a random moment (from at once to 400 ms later) and started again. Then every
/// thread must hold exactly one final answer and one ✓.
async fn kills(
    fake: &FakeSlack,
    server: &mut ServerProcess,
    binary: &str,
    env: &[(String, String)],
    port: u16,
) {
    let mut threads = Vec::new();
    let mut killed = 0;
    let started = Instant::now();
    for i in 0..KILL_TURNS {
        let ts = fake
            .post("U1", "C1", format!("<@U0BOT> survive {i}"), None)
            .await;
        threads.push(ts);
        let roll = random_u64();
        if roll.is_multiple_of(2) {
            tokio::time::sleep(Duration::from_millis((roll >> 8) % 400)).await;
            server.kill();
            killed += 1;
            *server = ServerProcess::start(binary, env, port);
            server.wait_ready().await;
        }
    }
    let posted = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline && !threads.iter().all(|ts| final_answers(fake, "C1", ts) >= 1)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = started.elapsed().as_secs_f64();
    // Anything late would land within this.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut counts: HashMap<usize, usize> = HashMap::new();
    let mut checks_wrong = 0;
    for ts in &threads {
        *counts.entry(final_answers(fake, "C1", ts)).or_default() += 1;
        let reactions = fake.reactions("C1", ts);
        let checks = reactions
            .iter()
            .filter(|r| r.as_str() == "white_check_mark")
            .count();
        if checks != 1 {
            checks_wrong += 1;
        }
    }
    let lost = counts.get(&0).copied().unwrap_or(0);
    let doubled: usize = counts.iter().filter(|(n, _)| **n > 1).map(|(_, c)| c).sum();
    println!(
        "{KILL_TURNS} mentions, server killed {killed} times: {lost} answers lost, {doubled} doubled, {checks_wrong} without exactly one ✓ (all posted after {posted:.1} s, all answered after {settled:.1} s)"
    );
    for ts in &threads {
        let answers = final_answers(fake, "C1", ts);
        if answers != 1 {
            let detail = http()
                .build()
                .unwrap()
                .get(format!("{}/agent/threads/slack:C1:{ts}", server.url))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .ok();
            let detail: Value = match detail {
                Some(response) => response.json().await.unwrap_or_default(),
                None => Value::Null,
            };
            println!(
                "  thread {ts}: {answers} answers, reactions {:?}, {} messages, thread {} / last execution {}",
                fake.reactions("C1", ts),
                fake.thread("C1", ts).len(),
                detail["status"],
                detail["last_execution"]
            );
        }
    }
}

/// The final answers in a thread: the bridge's posts whose delivery key is an answer's.
fn final_answers(fake: &FakeSlack, channel: &str, thread_ts: &str) -> usize {
    fake.thread(channel, thread_ts)
        .iter()
        .filter(|m| {
            m.metadata.as_ref().is_some_and(|meta| {
                meta.event_type == "centaur_delivery" && is_answer_key(&meta.event_payload)
            })
        })
        .count()
}

fn is_answer(body: &Value) -> bool {
    is_answer_key(&body["metadata"]["event_payload"])
}

/// An answer's first (or only) part: `answer:<execution>:0`.
fn is_answer_key(payload: &Value) -> bool {
    payload["key"]
        .as_str()
        .is_some_and(|k| k.starts_with("answer:") && k.ends_with(":0"))
}

async fn wait_for_pool(data: &std::path::Path, n: usize) {
    for _ in 0..4000 {
        let running = std::fs::read_dir(data.join("sandboxes"))
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

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
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
