//! The PostgreSQL pool, embedded migrations and readiness.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub static MIGRATOR: Migrator = sqlx::migrate!();

/// A pool that connects on demand: the server starts (and answers `/healthz`) even while the
/// database is away, and recovers by itself when it comes back.
pub fn lazy_pool(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.database_url.expose())?
        .application_name("centaur-server")
        .options([("statement_timeout", "30s")]);
    Ok(PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_millis(config.db_acquire_timeout_ms))
        // No ping before every acquire (a round trip on every request): connections are
        // checked when they return to the pool, and one that died since fails its request
        // with a 503 and is discarded.
        .test_before_acquire(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(options))
}

/// Whether migrations have been applied since start-up.
#[derive(Debug, Default)]
pub struct Readiness {
    migrated: AtomicBool,
}

impl Readiness {
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }
}

/// Applies the embedded migrations, retrying with backoff until the database is reachable.
pub async fn migrate_until_done(pool: PgPool, readiness: &Readiness, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match MIGRATOR.run(&pool).await {
            Ok(()) => {
                readiness.migrated.store(true, Ordering::Release);
                tracing::info!(
                    migrations = MIGRATOR.iter().count(),
                    "database schema is up to date"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot apply migrations yet");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// `/readyz`: the database answers and the schema is current.
pub async fn is_ready(pool: &PgPool, readiness: &Readiness) -> bool {
    readiness.is_migrated() && sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Starts a transaction without the cancellation hazard of `Pool::begin` on PostgreSQL in sqlx
/// 0.9.0 (transact-rs/sqlx#4393): a `begin` future dropped while `BEGIN` is in flight (a client
/// that disconnects mid-request) would return its connection to the pool inside an open
/// transaction. Here `BEGIN` runs to completion in its own task, so a dropped caller only drops
/// a finished transaction, which rolls back as it should.
pub async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("the BEGIN task failed: {e}")))?
}
