//! Delivery: each Slack thread's events, from the cursor `slack_threads.delivered_event_id`,
//! rendered into Slack by one replica at a time (a lease): the working status, progress streamed
//! (`chat.startStream`/`appendStream`/`stopStream`, or `chat.postMessage` + `chat.update` where
//! streaming is unavailable), approval messages, the final answer (exactly once across restarts),
//! a check mark or a cross.
//!
//! - [`spawn_scheduler`] (here): finds Slack threads with undelivered events (or a turn being
//!   delivered) whose lease is free, expired, this replica's own from before a restart, or held
//!   by a replica that is not alive, claims them, and runs one follower per thread.
//! - [`follower`]: reads a thread's events after the cursor (then live), renders them, and moves
//!   the cursor with the state ([`state::DeliveryState`]) once their effects are done.
//! - [`outbox`]: the Slack side: retries (429 `Retry-After`, transient errors), and posts that
//!   are not idempotent made exactly once: an intent is committed first, the post carries
//!   `metadata` naming it, and an intent found without its result is looked for in the thread
//!   before posting again.
//! - [`state`]: what is remembered between events, and how an event reads as progress.

mod follower;
mod outbox;
pub mod state;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::AppState;

/// How often the scheduler looks for work without being woken.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// A lease lasts this long unless renewed.
const LEASE: Duration = Duration::from_secs(10);
/// A follower renews its lease this often.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// At most this many threads claimed per scan.
const CLAIM_BATCH: i64 = 32;

/// Why a follower stopped before it was done.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    #[error("the server is shutting down")]
    Shutdown,
    #[error("the lease was lost to another replica")]
    LeaseLost,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// This replica's scheduler: takes Slack threads with undelivered events, until shutdown.
pub fn spawn_scheduler(state: AppState) {
    let Some(slack) = state.slack.clone() else {
        return;
    };
    tokio::spawn(async move {
        let running: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let mut scan = tokio::time::interval(SCAN_EVERY);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = slack.delivery_wake.notified() => {}
                _ = scan.tick() => {}
            }
            if !state.readiness.is_migrated() {
                continue;
            }
            let busy: Vec<i64> = running
                .lock()
                .expect("delivery set lock")
                .iter()
                .copied()
                .collect();
            let claimed = match claim(&state, &busy).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::debug!(%error, "Slack delivery: cannot look for work; will retry");
                    continue;
                }
            };
            for thread_id in claimed {
                if !running.lock().expect("delivery set lock").insert(thread_id) {
                    continue;
                }
                let state = state.clone();
                let slack = slack.clone();
                let running = running.clone();
                tokio::spawn(async move {
                    let lease = Lease::hold(&state, thread_id);
                    let outcome = follower::follow(&state, slack, thread_id, &lease).await;
                    lease.stop.cancel();
                    match outcome {
                        Ok(()) | Err(Halt::Shutdown) => {}
                        Err(Halt::LeaseLost) => {
                            tracing::info!(thread_id, "Slack delivery: lease lost; stopping")
                        }
                        Err(Halt::Database(error)) => {
                            tracing::warn!(thread_id, %error, "Slack delivery stopped; will resume")
                        }
                    }
                    running
                        .lock()
                        .expect("delivery set lock")
                        .remove(&thread_id);
                    // Whatever arrived while it wound down is picked up on the next scan.
                });
            }
        }
    });
}

/// Claims up to [`CLAIM_BATCH`] Slack threads with work this replica may take: undelivered
/// events, or a turn still being delivered (its status to refresh, its stream to keep alive).
async fn claim(state: &AppState, busy: &[i64]) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE slack_threads s SET lease_owner = $1, \
                lease_until = now() + make_interval(secs => $2) \
         WHERE s.thread_id IN ( \
             SELECT c.thread_id FROM slack_threads c JOIN threads t ON t.id = c.thread_id \
             WHERE (c.delivered_event_id < t.last_event_id \
                    OR jsonb_typeof(c.delivery -> 'turn') = 'object') \
               AND NOT (c.thread_id = ANY($3)) \
               AND (c.lease_owner IS NULL OR c.lease_until < now() OR c.lease_owner = $1 \
                    OR NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = c.lease_owner \
                                   AND r.seen_at > now() - make_interval(secs => $4))) \
             ORDER BY c.thread_id LIMIT $5 \
             FOR UPDATE OF c SKIP LOCKED) \
         RETURNING s.thread_id",
    )
    .bind(state.replica.as_ref())
    .bind(LEASE.as_secs_f64())
    .bind(busy)
    .bind(state.config.replica_dead_after_secs as f64)
    .bind(CLAIM_BATCH)
    .fetch_all(&state.pool)
    .await
}

/// A held lease, renewed in the background until `stop`; `lost` is cancelled when it could not
/// be renewed (another replica took it, or the database was out of reach for its whole term).
pub(super) struct Lease {
    pub lost: CancellationToken,
    stop: CancellationToken,
}

impl Lease {
    fn hold(state: &AppState, thread_id: i64) -> Lease {
        let lost = CancellationToken::new();
        let stop = state.shutdown.child_token();
        let lease = Lease {
            lost: lost.clone(),
            stop: stop.clone(),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut renewed_at = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                }
                let renewed = sqlx::query(
                    "UPDATE slack_threads SET lease_until = now() + make_interval(secs => $3) \
                     WHERE thread_id = $1 AND lease_owner = $2",
                )
                .bind(thread_id)
                .bind(state.replica.as_ref())
                .bind(LEASE.as_secs_f64())
                .execute(&state.pool)
                .await;
                match renewed {
                    Ok(done) if done.rows_affected() == 1 => {
                        renewed_at = tokio::time::Instant::now()
                    }
                    Ok(_) => {
                        lost.cancel();
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(thread_id, %error, "Slack delivery: lease not renewed");
                        if renewed_at.elapsed() >= LEASE {
                            lost.cancel();
                            return;
                        }
                    }
                }
            }
        });
        lease
    }
}

/// Gives the lease up (the thread is caught up and no turn runs).
async fn release(state: &AppState, thread_id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE slack_threads SET lease_owner = NULL, lease_until = NULL \
         WHERE thread_id = $1 AND lease_owner = $2",
    )
    .bind(thread_id)
    .bind(state.replica.as_ref())
    .execute(&state.pool)
    .await?;
    Ok(())
}
