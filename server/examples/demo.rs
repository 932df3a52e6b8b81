//! The spine, running: a private PostgreSQL, `centaur-server`, and a played runner that
//! answers every execution on every thread by streaming "You said: ..." word by word.
//!
//!     cargo run --release -p centaur-server --example demo
//!
//! Then follow a thread with `curl -N` (the commands are printed at start-up). The real
//! runner and sandboxes replace the played runner in a later release; `centaur dev` will
//! replace this example.

use std::time::Duration;

use centaur_server::pg_cluster::{ClusterOptions, PgCluster};
use centaur_server::{Config, logging};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::new("postgres://unused");
    logging::init(config.log_format);

    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let root = std::env::temp_dir().join(format!("centaur-demo-{uid}"));
    let cluster = PgCluster::start(&ClusterOptions {
        root,
        durable: true,
        max_connections: 100,
    })?;
    let admin_key = std::env::var("CENTAUR_ADMIN_API_KEY")
        .unwrap_or_else(|_| format!("demo-{}", centaur_server::crypto::random_hex(16)));
    config.database_url = cluster.url("postgres").into();
    config.admin_api_key = Some(admin_key.as_str().into());
    config.bind_addr = std::env::var("CENTAUR_BIND_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let server = centaur_server::start(config).await?;
    let url = server.url();

    println!(
        "\nCentaur spine demo: server at {url}, PostgreSQL on port {port} (data in {data})\n\n\
         In another terminal, start a turn and follow the thread from its first event:\n\n  \
         export CENTAUR_API_TOKEN={admin_key}\n  \
         curl -s -H \"Authorization: Bearer $CENTAUR_API_TOKEN\" -H 'content-type: application/json' \\\n       \
         -d '{{\"thread_key\":\"api:hello\",\"message\":\"streams are fun\"}}' {url}/agent/execute\n  \
         curl -N -H \"Authorization: Bearer $CENTAUR_API_TOKEN\" {url}/agent/threads/api:hello/events\n\n\
         Stop curl at any point and resume after the last id it printed, say 7 (or pass\n\
         -H 'Last-Event-ID: 7'): every later event arrives exactly once.\n\n  \
         curl -N -H \"Authorization: Bearer $CENTAUR_API_TOKEN\" '{url}/agent/threads/api:hello/events?after_event_id=7'\n\n\
         Ctrl-C stops the server and PostgreSQL; the data stays for the next run.\n",
        port = cluster.port(),
        data = cluster.root().display(),
    );

    let runner = tokio::spawn(played_runner(url, admin_key));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    runner.abort();
    server.shutdown().await;
    cluster.stop()?;
    Ok(())
}

/// Claims queued executions on any thread and answers them.
async fn played_runner(url: String, token: String) {
    // TLS in this workspace goes through ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    loop {
        if let Err(error) = answer_queued(&http, &url, &token).await {
            tracing::warn!(%error, "played runner");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn answer_queued(http: &reqwest::Client, url: &str, token: &str) -> reqwest::Result<()> {
    let threads: Value = http
        .get(format!("{url}/agent/threads?limit=200"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    for thread in threads["threads"].as_array().into_iter().flatten() {
        if thread["status"] != "queued" {
            continue;
        }
        let key = thread["thread_key"].as_str().unwrap_or_default().to_owned();
        let claim = http
            .post(format!("{url}/runner/v1/threads/{key}/claim"))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await?;
        if claim.status() != reqwest::StatusCode::OK {
            continue;
        }
        let assignment: Value = claim.json().await?;
        let execution_id = assignment["execution_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let said: Vec<&str> = assignment["input"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["text"].as_str())
            .collect();
        let reply = format!("You said: {}", said.join(" / "));
        let events_url = format!("{url}/runner/v1/executions/{execution_id}/events");
        let mut seq = 0;
        for word in reply.split_inclusive(' ') {
            seq += 1;
            let body =
                json!({"events": [{"seq": seq, "type": "agent.message.delta", "text": word}]});
            let answer = http
                .post(&events_url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            if answer.status() == reqwest::StatusCode::CONFLICT {
                break; // interrupted
            }
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        let words = reply.split_whitespace().count() as u64;
        let finish = json!({
            "events": [
                {"seq": seq + 1, "type": "agent.message", "text": reply},
                {"seq": seq + 2, "type": "usage", "input_tokens": words, "output_tokens": words},
            ],
            "finish": {"status": "completed", "result_text": reply},
        });
        http.post(&events_url)
            .bearer_auth(token)
            .json(&finish)
            .send()
            .await?;
    }
    Ok(())
}
