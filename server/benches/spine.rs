//! Benchmarks of the spine's figures, against the real `centaur-server` binary and a durable
//! PostgreSQL (fsync on), client and server sharing this machine:
//!
//! - append throughput through the runner API (batched),
//! - append-to-delivery latency to 100 concurrent SSE subscribers,
//! - replay of a 100,000-event thread,
//! - server memory with 100 stalled readers replaying a large thread,
//! - server idle memory.
//!
//! Run with `cargo bench -p centaur-server --bench spine` (or `just bench`). Uses DATABASE_URL
//! when set, otherwise starts its own cluster. `SPINE_BENCH_ONLY` runs one section only:
//! `throughput`, `latency`, `replay` or `stalled-readers`.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use centaur_test_support::http::http;
use centaur_test_support::measure::{num_cpus, rss_kib};
use centaur_test_support::pg::bench_database;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "bench-admin-key-0123456789";

struct Bench {
    url: String,
    http: reqwest::Client,
    server: Child,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[tokio::main]
async fn main() {
    let database_url = bench_database("spine").await;
    let bench = start_server(&database_url).await;
    println!("centaur-server spine benchmarks ({} cores)\n", num_cpus());

    let idle = rss_kib(bench.server.id());
    println!(
        "idle memory (RSS after start-up and migrations): {:.1} MiB",
        idle as f64 / 1024.0
    );

    let only = std::env::var("SPINE_BENCH_ONLY").ok();
    let runs = |section: &str| only.as_deref().is_none_or(|only| only == section);
    if runs("throughput") {
        append_throughput(&bench, 500).await;
        append_throughput(&bench, 100).await;
    }
    if runs("latency") {
        for pause in [10, 1] {
            let pause = Duration::from_millis(pause);
            delivery_latency(&bench, 1, 300, pause).await;
            delivery_latency(&bench, 100, 300, pause).await;
        }
    }
    if runs("replay") {
        replay(&bench, 100_000).await;
    }
    if runs("stalled-readers") {
        stalled_readers(&bench, &database_url, 100).await;
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(bench.server.id());
    println!(
        "\nmemory after the benchmarks, idle again: {:.1} MiB",
        after as f64 / 1024.0
    );
}

async fn start_server(database_url: &str) -> Bench {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Command::new(env!("CARGO_BIN_EXE_centaur-server"))
        .env("DATABASE_URL", database_url)
        .env("CENTAUR_BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("CENTAUR_ADMIN_API_KEY", ADMIN)
        // Every client here uses the admin key; 100 streams at once are more than its default.
        .env("CENTAUR_MAX_STREAMS_PER_TOKEN", "1000")
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("start centaur-server");
    let bench = Bench {
        url: format!("http://127.0.0.1:{port}"),
        http: http().pool_max_idle_per_host(256).build().unwrap(),
        server,
    };
    for _ in 0..400 {
        if let Ok(r) = bench.http.get(format!("{}/readyz", bench.url)).send().await
            && r.status().is_success()
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return bench;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not become ready");
}

impl Bench {
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Value::Null;
        }
        response.json().await.unwrap()
    }

    /// A thread with a running execution; returns the execution id.
    async fn running_execution(&self, key: &str) -> String {
        self.post(
            "/agent/execute",
            json!({"thread_key": key, "message": "bench", "harness": "echo"}),
        )
        .await;
        let claimed = self
            .post(
                &format!("/runner/v1/threads/{key}/claim"),
                json!({"wait_ms": 1000}),
            )
            .await;
        claimed["execution_id"].as_str().unwrap().to_owned()
    }

    fn client(&self) -> BenchClient {
        BenchClient {
            http: self.http.clone(),
            url: self.url.clone(),
        }
    }
}

/// `events` deltas starting at `first_seq`, as a batch body.
fn batch_body(first_seq: u64, events: u64, text: impl Fn(u64) -> String) -> String {
    let mut body = String::with_capacity(events as usize * 90 + 16);
    body.push_str("{\"events\":[");
    for i in 0..events {
        if i > 0 {
            body.push(',');
        }
        let seq = first_seq + i;
        body.push_str(&format!(
            "{{\"seq\":{seq},\"type\":\"agent.message.delta\",\"text\":\"{}\"}}",
            text(seq)
        ));
    }
    body.push_str("]}");
    body
}

/// Sustained appends: four runners (threads) post batches back to back for ten seconds.
async fn append_throughput(bench: &Bench, batch: u64) {
    let runners = 4;
    let duration = Duration::from_secs(10);
    let total = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..runners {
        let key = format!("api:throughput-{batch}-{r}");
        let execution_id = bench.running_execution(&key).await;
        let total = total.clone();
        let client = bench.client();
        tasks.push(tokio::spawn(async move {
            let mut seq = 1;
            while started.elapsed() < duration {
                let body = batch_body(seq, batch, |s| {
                    format!("token {s} of a streamed answer, typical length")
                });
                client.post_batch(&execution_id, body).await;
                seq += batch;
                total.fetch_add(batch, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let events = total.load(Ordering::Relaxed);
    println!(
        "append throughput, batches of {batch:>3}, {runners} runners: {:>8.0} events/s ({events} events in {:.1} s)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

struct BenchClient {
    http: reqwest::Client,
    url: String,
}

impl BenchClient {
    async fn post_batch(&self, execution_id: &str, body: String) {
        let response = self
            .http
            .post(format!(
                "{}/runner/v1/executions/{execution_id}/events",
                self.url
            ))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "batch: {}",
            response.status()
        );
    }
}

/// One event at a time to `subscribers` live streams. Two figures per event and subscriber:
/// from the append (the event's `created_at`, stamped by the server as it writes the event;
/// client and server share this machine's clock) to the subscriber having parsed it, and from
/// the runner sending its POST (the whole path, HTTP request included).
async fn delivery_latency(bench: &Bench, subscribers: usize, events: u64, pause: Duration) {
    let key = format!("api:latency-{subscribers}-{}", pause.as_millis());
    let key = key.as_str();
    let execution_id = bench.running_execution(key).await;
    let origin = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..=events).map(|_| AtomicU64::new(0)).collect());
    // (from append, from POST) in microseconds
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let mut ready = Vec::new();
    for _ in 0..subscribers {
        let response = bench
            .http
            .get(format!(
                "{}/agent/threads/{key}/events?after_event_id=5",
                bench.url
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let (sent_at, tx) = (sent_at.clone(), tx.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(ready_rx);
        tokio::spawn(async move {
            let _ = ready_tx.send(());
            let mut stream = response.bytes_stream();
            let mut buffer = String::new();
            let mut received = 0;
            while let Some(Ok(chunk)) = stream.next().await {
                // Delivered when the bytes arrive; parsing is the client's own work.
                let (now_wall, now) = (chrono::Utc::now(), origin.elapsed().as_micros() as u64);
                buffer.push_str(std::str::from_utf8(&chunk).unwrap());
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    if !frame.contains("\nevent: agent.message.delta\n") {
                        continue;
                    }
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let data: Delta = serde_json::from_str(data).unwrap();
                    let seq: u64 = data.text.parse().unwrap();
                    let created: chrono::DateTime<chrono::Utc> = data.created_at.parse().unwrap();
                    let from_append =
                        (now_wall - created).num_microseconds().unwrap().max(0) as u64;
                    let from_post = now - sent_at[seq as usize].load(Ordering::Acquire);
                    let _ = tx.send((from_append, from_post));
                    received += 1;
                    if received == events {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    for r in ready {
        r.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = bench.client();
    for seq in 1..=events {
        sent_at[seq as usize].store(origin.elapsed().as_micros() as u64, Ordering::Release);
        client
            .post_batch(&execution_id, batch_body(seq, 1, |s| s.to_string()))
            .await;
        tokio::time::sleep(pause).await;
    }
    let (mut from_append, mut from_post) = (Vec::new(), Vec::new());
    while let Some((a, p)) = rx.recv().await {
        from_append.push(a);
        from_post.push(p);
    }
    assert_eq!(
        from_append.len() as u64,
        events * subscribers as u64,
        "every subscriber got every event"
    );
    let pct = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0
    };
    println!(
        "append to delivery, {subscribers:>3} subscribers, {events} events {:>2} ms apart: \
         p50 {:.2} ms, p99 {:.2} ms | from the runner's POST: p50 {:.2} ms, p99 {:.2} ms",
        pause.as_millis(),
        pct(&mut from_append, 0.50),
        pct(&mut from_append, 0.99),
        pct(&mut from_post, 0.50),
        pct(&mut from_post, 0.99),
    );
}

#[derive(serde::Deserialize)]
struct Delta<'a> {
    created_at: &'a str,
    text: &'a str,
}

/// A client reconnecting from the start of a thread with `count` events.
async fn replay(bench: &Bench, count: u64) {
    let key = "api:replay";
    let execution_id = bench.running_execution(key).await;
    let batch = 5000;
    let mut seq = 1;
    while seq <= count {
        let body = batch_body(seq, batch.min(count - seq + 1), |s| {
            format!("replayed token {s}")
        });
        bench.client().post_batch(&execution_id, body).await;
        seq += batch;
    }
    // thread.created, sandbox.assigned, message.created, queued, started before the deltas
    let last = count + 5;
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let response = bench
            .http
            .get(format!("{}/agent/threads/{key}/events", bench.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let mut stream = response.bytes_stream();
        let mut frames = 0u64;
        let mut tail = Vec::new();
        'read: while let Some(Ok(chunk)) = stream.next().await {
            tail.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(pos) = tail[start..].windows(2).position(|w| w == b"\n\n") {
                if tail[start..].starts_with(b"id: ") {
                    frames += 1;
                }
                start += pos + 2;
                if frames == last {
                    break 'read;
                }
            }
            tail.drain(..start);
        }
        assert_eq!(frames, last);
        best = best.min(started.elapsed());
    }
    println!(
        "replay of a {count}-event thread ({} events with the lifecycle ones): {:.0} ms (best of 3)",
        last,
        best.as_secs_f64() * 1000.0
    );
}

/// Server memory while `readers` clients replay a large thread (10,000 events of about 4 KB,
/// 40 MB) and never read: each opens the stream, with a small receive buffer, and stops there.
/// What each may pin is bounded (the connection's write buffer, a page), not the thread.
/// Measured on a second server process over the same database, started after the thread was
/// written, so the memory that writing it left in the allocator does not hide the readers'.
async fn stalled_readers(bench: &Bench, database_url: &str, readers: usize) {
    let key = "api:stalled-readers";
    let execution_id = bench.running_execution(key).await;
    let (count, batch) = (10_000, 1000);
    let filler = "x".repeat(4000);
    let mut seq = 1;
    while seq <= count {
        let body = batch_body(seq, batch, |s| format!("{s} {filler}"));
        bench.client().post_batch(&execution_id, body).await;
        seq += batch;
    }
    let fresh = start_server(database_url).await;
    let pid = fresh.server.id();
    let before = rss_kib(pid);
    let addr: std::net::SocketAddr = fresh.url.trim_start_matches("http://").parse().unwrap();
    let request = format!(
        "GET /agent/threads/{key}/events HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {ADMIN}\r\n\r\n"
    );
    let mut stalled = Vec::with_capacity(readers);
    for _ in 0..readers {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    let (settled, peak) = settled_rss(pid).await;
    for stream in &mut stalled {
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "every reader got its stream");
    }
    drop(stalled);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed = rss_kib(pid);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{readers} stalled readers replaying a {count}-event thread (40 MB): server RSS {:.1} MiB \
         before, {:.1} MiB with them (peak {:.1}), {:.2} MiB per reader; {:.1} MiB once closed",
        mib(before),
        mib(settled),
        mib(peak),
        (mib(settled) - mib(before)) / readers as f64,
        mib(closed),
    );
}

/// A process's RSS once it stops growing (no new high for 3 s, at most 30 s), and its peak.
async fn settled_rss(pid: u32) -> (u64, u64) {
    let started = Instant::now();
    let mut peak = rss_kib(pid);
    let mut peak_at = Instant::now();
    while peak_at.elapsed() < Duration::from_secs(3) && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid);
        if now > peak + peak / 100 {
            peak_at = Instant::now();
        }
        peak = peak.max(now);
    }
    (rss_kib(pid), peak)
}
