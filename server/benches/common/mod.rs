#![allow(dead_code)] // each benchmark uses a part of it
//! What the server's benchmarks share: a PostgreSQL to run against, and process measurements.

use std::str::FromStr;

use centaur_server::pg_cluster::{ClusterOptions, PgCluster};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

/// A fresh database on DATABASE_URL's server, or on a private durable cluster started here.
pub async fn database(name: &str) -> String {
    let base = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let root = std::env::temp_dir()
                .join(format!("centaur-bench-pg-{name}-{}", std::process::id()));
            let cluster = PgCluster::start(&ClusterOptions {
                root,
                durable: true,
                max_connections: 200,
            })
            .expect("start PostgreSQL");
            cluster
                .remove_when_process_exits(std::process::id())
                .unwrap();
            cluster.url("postgres")
        }
    };
    let base = PgConnectOptions::from_str(&base).unwrap();
    let db = format!("centaur_bench_{name}_{}", std::process::id());
    let mut conn = base.connect().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    base.database(&db).to_url_lossy().to_string()
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:").unwrap_or(0)
}

/// Proportional set size (shared pages split among their users), in KiB.
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The value at quantile `q` of sorted `samples`.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[index.min(samples.len() - 1)]
}

/// An HTTP client builder; TLS in this workspace goes through ring, installed here once.
pub fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
