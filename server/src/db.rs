//! The PostgreSQL pool, embedded migrations and readiness.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
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

/// How often the background probe asks the database whether it is there.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one probe (connecting, if need be, and `SELECT 1`) may take before it counts as a
/// failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A probe result older than this says nothing any more: `/readyz` answers 503 until a fresh
/// one arrives (the probe task is stuck, or the runtime is starved).
const PROBE_STALE_AFTER: Duration = Duration::from_secs(10);

/// What the server last learned about its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseState {
    /// No probe has finished yet.
    Unknown,
    /// The last probe got an answer.
    Up,
    /// The last probe got none: requests that need the database are refused at once.
    Down,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The server's view of its database, shared by every request: whether migrations have been
/// applied since start-up, and the result and time of the last probe. Reading it never waits
/// on the pool.
#[derive(Debug)]
pub struct Readiness {
    migrated: AtomicBool,
    state: AtomicU8,
    /// When `state` was last set, in milliseconds since `epoch`.
    checked_ms: AtomicU64,
    epoch: Instant,
    /// Wakes the probe early, when a request saw the database fail.
    suspect: Notify,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            migrated: AtomicBool::new(false),
            state: AtomicU8::new(UNKNOWN),
            checked_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            suspect: Notify::new(),
        }
    }
}

impl Readiness {
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    /// The last probe's result.
    pub fn database(&self) -> DatabaseState {
        match self.state.load(Ordering::Acquire) {
            UP => DatabaseState::Up,
            DOWN => DatabaseState::Down,
            _ => DatabaseState::Unknown,
        }
    }

    /// How long ago the last probe finished; `None` before the first.
    pub fn checked_ago(&self) -> Option<Duration> {
        match self.database() {
            DatabaseState::Unknown => None,
            DatabaseState::Up | DatabaseState::Down => {
                let at = Duration::from_millis(self.checked_ms.load(Ordering::Acquire));
                Some(self.epoch.elapsed().saturating_sub(at))
            }
        }
    }

    /// Whether the database is known to be away: requests that need it are refused without
    /// waiting for a connection.
    pub fn is_known_down(&self) -> bool {
        self.database() == DatabaseState::Down
    }

    /// `/readyz`: migrations applied and a recent probe got an answer.
    pub fn is_ready(&self) -> bool {
        self.is_migrated()
            && self.database() == DatabaseState::Up
            && self
                .checked_ago()
                .is_some_and(|ago| ago <= PROBE_STALE_AFTER)
    }

    /// Records a probe's result.
    pub fn record(&self, up: bool) {
        let at = self.epoch.elapsed().as_millis() as u64;
        self.checked_ms.store(at, Ordering::Release);
        let previous = self
            .state
            .swap(if up { UP } else { DOWN }, Ordering::AcqRel);
        match (previous, up) {
            (DOWN, true) => tracing::info!("the database answers again"),
            (UNKNOWN | UP, false) => tracing::warn!("the database does not answer"),
            _ => {}
        }
    }

    /// A request failed as if the database were away: probe now rather than at the next tick.
    pub fn suspect(&self) {
        self.suspect.notify_one();
    }
}

/// Asks the database whether it is there every [`PROBE_EVERY`] (and at once when a request
/// [suspects](Readiness::suspect) it is not), on a connection of its own: a busy pool neither
/// delays the probe nor makes the database look away.
pub async fn probe_until_shutdown(
    pool: PgPool,
    readiness: std::sync::Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let options = pool.connect_options();
    let mut connection: Option<PgConnection> = None;
    loop {
        let reused = connection.is_some();
        let mut up = probe(&options, &mut connection).await;
        if !up && reused {
            // The kept connection may be all that broke (terminated by an administrator, say):
            // only a fresh one that fails too means the database is away.
            up = probe(&options, &mut connection).await;
        }
        readiness.record(up);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = readiness.suspect.notified() => {}
        }
    }
    drop(connection);
}

/// One probe: `SELECT 1` on the kept connection, connecting first if there is none. A failure
/// drops the connection.
async fn probe(options: &PgConnectOptions, connection: &mut Option<PgConnection>) -> bool {
    let attempt = async {
        if connection.is_none() {
            *connection = Some(PgConnection::connect_with(options).await?);
        }
        match connection.as_mut() {
            Some(connection) => sqlx::query("SELECT 1")
                .execute(connection)
                .await
                .map(|_| ()),
            None => Ok(()),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "database probe failed");
            *connection = None;
            false
        }
        Err(_) => {
            tracing::debug!("database probe timed out");
            *connection = None;
            false
        }
    }
}

/// Applies the embedded migrations, retrying with backoff until the database is reachable.
pub async fn migrate_until_done(pool: PgPool, readiness: &Readiness, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match MIGRATOR.run(&pool).await {
            Ok(()) => {
                readiness.migrated.store(true, Ordering::Release);
                readiness.record(true);
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

/// A value in the database that the server does not know: written by a newer server, or by
/// hand. Fails the request (`500`) rather than being read as something it is not.
#[derive(Debug, thiserror::Error)]
#[error("unknown value `{value}` in {column}: {reason}")]
pub struct UnknownStored {
    /// `table.column`.
    pub column: &'static str,
    pub value: String,
    pub reason: String,
}

/// Reads a stored enum: `value` of `column` (`table.column`) as a `T`.
pub fn stored<T>(column: &'static str, value: &str) -> Result<T, UnknownStored>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|reason: T::Err| UnknownStored {
        column,
        value: value.to_owned(),
        reason: reason.to_string(),
    })
}
