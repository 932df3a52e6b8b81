//! Delivery: each Slack thread's events, from the cursor `slack_threads.delivered_event_id`,
//! rendered into Slack by one replica at a time (a lease): the working status, progress streamed
//! (`chat.startStream`/`appendStream`/`stopStream`, or `chat.postMessage` + `chat.update` where
//! streaming is unavailable), approval messages, the final answer (exactly once across restarts),
//! a check mark or a cross.
//!
//! - [`spawn_scheduler`] (here): finds Slack threads with undelivered events (or a turn being
//!   delivered) whose lease is free, run out, or this replica's own from before a restart,
//!   claims them, and runs one follower per thread. It looks when woken (a turn started from
//!   Slack, a follower ended) and, for everything else (a restart's takeover, a message written
//!   in the CLI, another replica's threads), every [`SWEEP_EVERY`].
//! - The lease is fenced: a follower stops (its Slack calls dropped mid-flight) as soon as its
//!   lease may have run out, [`LEASE_MARGIN`] before another replica could take it.
//! - [`follower`]: reads a thread's events after the cursor (then live), renders them, and moves
//!   the cursor with the state ([`state::DeliveryState`]) once their effects are done.
//! - [`outbox`]: the Slack side: retries (429 `Retry-After`, transient errors), and posts that
//!   are not idempotent made exactly once: an intent is committed first, the post carries
//!   `metadata` naming it, and an intent found without its result is looked for in the thread
//!   before posting again. `chat.startStream` has no intent: a follower cut off during it
//!   may start the progress stream again (a progress message twice, never an answer).
//! - [`state`]: what is remembered between events, and how an event reads as progress.

mod follower;
mod outbox;
pub mod state;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::AppState;

/// How often the scheduler looks for work without being woken (its query reads every Slack
/// thread, so not often).
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// A lease lasts this long unless renewed.
const LEASE: Duration = Duration::from_secs(10);
/// A follower renews its lease this often.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// A follower counts its lease as lost this long before it runs out (measured from before the
/// claim or renewal was sent), so it has stopped before another replica can take it.
const LEASE_MARGIN: Duration = Duration::from_secs(3);
/// A thread whose delivery state cannot be read is looked at again after this (logging it).
const UNREADABLE_RETRY: Duration = Duration::from_secs(60);
/// A thread whose lost post could not be looked for (Slack refused to show the thread) is
/// looked at again after this (logging it with its fix).
const SEARCH_REFUSED_RETRY: Duration = Duration::from_secs(10);
/// At most this many threads claimed per scan.
const CLAIM_BATCH: i64 = 32;

/// Why a follower stopped before it was done.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    #[error("the server is shutting down")]
    Shutdown,
    #[error("the lease was lost (another replica took it, or it could not be renewed in time)")]
    LeaseLost,
    #[error("the delivery state is unreadable")]
    UnreadableState,
    #[error("could not finish the turn's Slack messages: {0}")]
    AfterTurn(crate::slack::conversation::after_turn::AfterTurnError),
    /// A post that may have landed could not be looked for (Slack refused to show the thread):
    /// its intent is kept, and it is not posted again until it can be looked for.
    #[error("could not look for the post `{key}` that may have landed: {error}")]
    SearchRefused {
        key: String,
        error: crate::slack::web::WebError,
    },
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
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = slack.delivery_wake.notified() => {}
                _ = sweep.tick() => {}
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
            let claimed_at = tokio::time::Instant::now();
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
                    let lease = Lease::hold(&state, thread_id, claimed_at);
                    // Fenced: the moment the lease may be gone, the follower is dropped, its
                    // Slack calls with it (each post's intent is committed first).
                    let outcome = tokio::select! {
                        outcome = follower::follow(&state, slack.clone(), thread_id, &lease) => outcome,
                        _ = lease.lost.cancelled() => Err(Halt::LeaseLost),
                    };
                    // Caught up: whatever arrived while it wound down is looked for at once. After
                    // a failure, the next sweep takes it again (no hot loop against Slack).
                    let caught_up = outcome.is_ok();
                    match outcome {
                        Ok(()) | Err(Halt::Shutdown) => {}
                        Err(Halt::LeaseLost) => {
                            tracing::info!(thread_id, "Slack delivery: lease lost; stopping")
                        }
                        // Logged by the follower; held (not retried at once) meanwhile.
                        Err(Halt::UnreadableState) => hold(&state, &lease, UNREADABLE_RETRY).await,
                        Err(Halt::SearchRefused { .. }) => {
                            hold(&state, &lease, SEARCH_REFUSED_RETRY).await
                        }
                        Err(error @ (Halt::AfterTurn(_) | Halt::Database(_))) => {
                            tracing::warn!(thread_id, %error, "Slack delivery stopped; will resume")
                        }
                    }
                    lease.stop.cancel();
                    running
                        .lock()
                        .expect("delivery set lock")
                        .remove(&thread_id);
                    if caught_up {
                        slack.delivery_wake.notify_one();
                    }
                });
            }
        }
    });
}

/// Waits `duration` before a halted thread may be taken again (unless shutting down or the
/// lease is gone first).
async fn hold(state: &AppState, lease: &Lease, duration: Duration) {
    tokio::select! {
        _ = state.shutdown.cancelled() => {}
        _ = lease.lost.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

/// Claims up to [`CLAIM_BATCH`] Slack threads with work this replica may take: undelivered
/// events, or a turn still being delivered (its status to refresh, its stream to keep alive).
///
/// Only a lease that is free, has run out, or is this replica's own (from before a restart:
/// the replica id is stable) is taken. Another replica's lease is never taken before it runs
/// out, even when that replica's heartbeat is stale: its follower stops only when its lease
/// may have run out (the fence), so a replica whose heartbeat lags while its renewals succeed
/// would still be posting. A dead replica's threads wait at most [`LEASE`].
async fn claim(state: &AppState, busy: &[i64]) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE slack_threads s SET lease_owner = $1, \
                lease_until = now() + make_interval(secs => $2) \
         WHERE s.thread_id IN ( \
             SELECT c.thread_id FROM slack_threads c JOIN threads t ON t.id = c.thread_id \
             WHERE (c.delivered_event_id < t.last_event_id \
                    OR jsonb_typeof(c.delivery -> 'turn') = 'object') \
               AND NOT (c.thread_id = ANY($3)) \
               AND (c.lease_owner IS NULL OR c.lease_until < now() OR c.lease_owner = $1) \
             ORDER BY c.thread_id LIMIT $4 \
             FOR UPDATE OF c SKIP LOCKED) \
         RETURNING s.thread_id",
    )
    .bind(state.replica.as_ref())
    .bind(LEASE.as_secs_f64())
    .bind(busy)
    .bind(CLAIM_BATCH)
    .fetch_all(&state.pool)
    .await
}

/// A held lease, renewed in the background until `stop`; `lost` is cancelled when another
/// replica took it, or when it was not renewed in time: [`LEASE_MARGIN`] before it would run
/// out, counted from before the last successful claim or renewal was sent (the database's
/// clock started its term later than that).
pub(super) struct Lease {
    pub lost: CancellationToken,
    stop: CancellationToken,
}

impl Lease {
    fn hold(state: &AppState, thread_id: i64, claimed_at: tokio::time::Instant) -> Lease {
        let lost = CancellationToken::new();
        let stop = state.shutdown.child_token();
        let lease = Lease {
            lost: lost.clone(),
            stop: stop.clone(),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut valid_until = claimed_at + (LEASE - LEASE_MARGIN);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(valid_until) => {
                        lost.cancel();
                        return;
                    }
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                }
                let sent_at = tokio::time::Instant::now();
                let renewal = sqlx::query(
                    "UPDATE slack_threads SET lease_until = now() + make_interval(secs => $3) \
                     WHERE thread_id = $1 AND lease_owner = $2",
                )
                .bind(thread_id)
                .bind(state.replica.as_ref())
                .bind(LEASE.as_secs_f64())
                .execute(&state.pool);
                let renewed = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(valid_until) => {
                        lost.cancel();
                        return;
                    }
                    renewed = renewal => renewed,
                };
                match renewed {
                    Ok(done) if done.rows_affected() == 1 => {
                        valid_until = sent_at + (LEASE - LEASE_MARGIN);
                    }
                    Ok(_) => {
                        lost.cancel();
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(thread_id, %error, "Slack delivery: lease not renewed");
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
