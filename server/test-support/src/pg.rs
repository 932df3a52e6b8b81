//! Throwaway PostgreSQL: `DATABASE_URL`'s server when set, otherwise a private cluster started
//! for this process and removed when it exits; a fresh database per test or benchmark.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::OnceLock;

use centaur_server::pg_cluster::{ClusterOptions, PgCluster};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

/// URL of the `postgres` database of the run's cluster (not durable: tests lose nothing).
fn test_cluster_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            let root = std::env::temp_dir().join(format!("centaur-test-pg-{}", std::process::id()));
            start_cluster(root, false, 500)
        })
    })
}

/// A private cluster under `root`, removed when this process exits; the URL of its `postgres`.
fn start_cluster(root: std::path::PathBuf, durable: bool, max_connections: u32) -> String {
    let cluster = PgCluster::start(&ClusterOptions {
        root,
        durable,
        max_connections,
    })
    .expect("start a throwaway PostgreSQL cluster");
    cluster
        .remove_when_process_exits(std::process::id())
        .expect("watchdog");
    cluster.url("postgres")
}

/// A new, empty database on the run's cluster; returns its URL.
pub async fn fresh_database() -> String {
    let name = format!("centaur_test_{}", Uuid::new_v4().simple());
    create_database(test_cluster_url(), &name, false).await
}

/// A fresh database named after benchmark `name`, on DATABASE_URL's server or on a private
/// durable cluster started here (benchmarks measure what production pays for durability).
pub async fn bench_database(name: &str) -> String {
    let base = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let root =
            std::env::temp_dir().join(format!("centaur-bench-pg-{name}-{}", std::process::id()));
        start_cluster(root, true, 200)
    });
    let database = format!("centaur_bench_{name}_{}", std::process::id());
    create_database(&base, &database, true).await
}

/// Creates `name` on the server of `base_url` (dropping it first if `replace`); its URL.
async fn create_database(base_url: &str, name: &str, replace: bool) -> String {
    let base = PgConnectOptions::from_str(base_url).expect("valid URL");
    let mut conn = base.connect().await.expect("connect to the test cluster");
    if replace {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut conn)
        .await
        .expect("drop an old test database");
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    base.database(name).to_url_lossy().to_string()
}

/// The same database reached through another address (a [`crate::relay::Relay`]).
pub fn via(database_url: &str, addr: SocketAddr) -> String {
    PgConnectOptions::from_str(database_url)
        .unwrap()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .to_url_lossy()
        .to_string()
}
