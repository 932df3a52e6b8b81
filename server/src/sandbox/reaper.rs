//! Keeps sandboxes honest: releases the ones whose process died (the thread gets a fresh one on
//! its next turn), that sat idle too long or reached their maximum lifetime, and stops the ones
//! no thread owns (left over from a crash).
//!
//! A replica judges only the sandboxes it runs ([`crate::replicas`]): another replica's are not
//! dead because this one's backend does not know them. The sandboxes of a replica that has not
//! been heard from for `CENTAUR_REPLICA_DEAD_AFTER_SECS` are released by whichever live replica
//! sees them first (a release is conditional and happens once).

use std::collections::HashSet;
use std::time::Duration;

use centaur_protocol::runner::Finish;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SandboxError, SandboxState};
use crate::app::AppState;
use crate::error::ApiError;
use crate::{assignment, threads};

#[derive(sqlx::FromRow)]
struct Live {
    id: Uuid,
    thread_key: String,
    created_at: DateTime<Utc>,
    /// The thread's last activity, or the sandbox's start if later (getting a sandbox is not
    /// activity, but a new sandbox is not idle).
    idle_since: DateTime<Utc>,
    busy: bool,
    /// Another replica's, that replica dead; `None` for this replica's own.
    dead_owner: Option<String>,
}

pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        let every = Duration::from_millis(state.config.reaper_ms);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if !state.readiness.is_migrated() {
                continue;
            }
            if let Err(error) = sweep(&state).await {
                tracing::debug!(%error, "sandbox sweep failed");
            }
        }
    });
}

/// Why a sweep stopped short (it is tried again at the next tick).
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error(transparent)]
    Backend(#[from] SandboxError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Release(#[from] ApiError),
}

async fn sweep(state: &AppState) -> Result<(), SweepError> {
    // What the backend runs and the pool holds, before the database is read: a sandbox claimed
    // from the pool meanwhile is then in the database's list.
    let running = state.backend.list().await?;
    let warm: Vec<Uuid> = state.warm.iter().flat_map(|pool| pool.ids()).collect();
    let live = judged_here(state).await?;
    for sandbox in &live {
        if let Some(verdict) = judge(state, sandbox).await {
            release(state, sandbox, verdict).await?;
        }
    }
    // Sandboxes the backend runs that no thread (and no warm pool) owns.
    let owned: HashSet<Uuid> = live.iter().map(|s| s.id).chain(warm).collect();
    for id in running {
        if !owned.contains(&id) && !recently_created(id) {
            assignment::stop_unowned(state, id).await;
        }
    }
    Ok(())
}

/// The live sandboxes this replica judges: its own (and rows from before owners were
/// recorded), and those of replicas not seen for too long.
async fn judged_here(state: &AppState) -> Result<Vec<Live>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, t.thread_key, s.created_at, \
           GREATEST(t.last_activity_at, s.created_at) AS idle_since, \
           EXISTS (SELECT 1 FROM executions e WHERE e.thread_id = t.id \
                   AND e.status IN ('queued', 'running')) AS busy, \
           CASE WHEN s.owner IS NULL OR s.owner = $2 THEN NULL ELSE s.owner END AS dead_owner \
         FROM sandboxes s JOIN threads t ON t.id = s.thread_id \
         WHERE s.state <> 'released' AND s.backend = $1 \
           AND (s.owner IS NULL OR s.owner = $2 OR ( \
                s.created_at < now() - make_interval(secs => $3) AND NOT EXISTS ( \
                  SELECT 1 FROM replicas r WHERE r.id = s.owner \
                    AND r.seen_at > now() - make_interval(secs => $3))))",
    )
    .bind(state.backend.kind().as_str())
    .bind(state.replica.as_ref())
    .bind(state.config.replica_dead_after_secs as f64)
    .fetch_all(&state.pool)
    .await
}

/// Why a sandbox goes.
struct Verdict {
    reason: String,
    /// It is gone already (its turn fails); otherwise it is released between turns.
    died: bool,
}

/// Whether `sandbox` goes, and why: it died (or its replica did), idled, or lived too long.
async fn judge(state: &AppState, sandbox: &Live) -> Option<Verdict> {
    let status = match &sandbox.dead_owner {
        // Not ours to ask about: its replica is gone, and with it whatever ran it.
        Some(_) => Ok(SandboxState::Missing),
        None => state.backend.status(sandbox.id).await,
    };
    let gone = matches!(status, Ok(SandboxState::Stopped | SandboxState::Missing));
    if gone {
        let reason = match &sandbox.dead_owner {
            Some(owner) => format!(
                "the server replica that ran the sandbox ({owner}) has not been heard from for {} s; the next turn starts a new one",
                state.config.replica_dead_after_secs
            ),
            None => state.backend.why_stopped(sandbox.id).await.unwrap_or_else(|| {
                "the sandbox stopped unexpectedly (its harness crashed or was killed); the next turn starts a new one".to_owned()
            }),
        };
        return Some(Verdict { reason, died: true });
    }
    let now = Utc::now();
    let idle = chrono::Duration::seconds(state.config.sandbox_idle_secs as i64);
    let lifetime = chrono::Duration::seconds(state.config.sandbox_max_lifetime_secs as i64);
    let reason = if sandbox.busy {
        None
    } else if now - sandbox.idle_since > idle {
        Some(format!(
            "idle for more than {} s",
            state.config.sandbox_idle_secs
        ))
    } else if now - sandbox.created_at > lifetime {
        Some(format!(
            "reached its maximum lifetime of {} s",
            state.config.sandbox_max_lifetime_secs
        ))
    } else {
        None
    };
    reason.map(|reason| Verdict {
        reason,
        died: false,
    })
}

/// Releases the sandbox, if the thread still has it (and, unless it died, still idles).
async fn release(state: &AppState, sandbox: &Live, verdict: Verdict) -> Result<(), SweepError> {
    let Ok(key) = centaur_protocol::ThreadKey::parse(&sandbox.thread_key) else {
        return Ok(());
    };
    let thread = threads::find(state, &key).await?;
    let Verdict { reason, died } = verdict;
    tracing::info!(sandbox_id = %sandbox.id, thread_key = %sandbox.thread_key, %reason, "releasing a sandbox");
    let ending = if died {
        Finish::Failed {
            error: reason.clone(),
            output: None,
        }
    } else {
        Finish::Cancelled {
            reason: reason.clone(),
        }
    };
    let only = assignment::ReleaseIf {
        sandbox_id: sandbox.id,
        idle_since: (!died).then_some(sandbox.idle_since),
    };
    assignment::release_ending(state, &thread, &reason, ending, Some(only)).await?;
    Ok(())
}

/// A sandbox being started right now is not recorded yet; ids are UUIDv7, so their age is known.
fn recently_created(id: Uuid) -> bool {
    let Some(timestamp) = id.get_timestamp() else {
        return false;
    };
    let (secs, _) = timestamp.to_unix();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    now.saturating_sub(secs) < 60
}
