//! The inbox: what Slack sent, stored before it is acknowledged (`slack_inbox`, keyed by Slack's
//! `event_id`, so Slack's retries and other replicas' copies are stored once), then claimed and
//! handled by a worker on any replica. A row whose handling failed is tried again.
//!
//! Storing is one INSERT (the only work done before Slack gets its answer). Workers claim rows
//! with `FOR UPDATE SKIP LOCKED` under a lease (`claimed_by`, `claimed_until`: a worker that
//! dies leaves its row to another once the lease runs out), one Slack thread at a time in the
//! order received: a row waits while an older row of its Slack thread is not done. Handled rows
//! are kept a day (the deduplication outlives Slack's retries), then deleted.

use std::sync::Arc;
use std::time::Duration;

use centaur_protocol::slack::events::{BlockActions, EventCallback};
use serde_json::Value;

use super::Slack;
use super::{conversation, interactions};
use crate::app::AppState;

/// Workers per replica: one handles a long step (a first turn's context) while the other goes on.
const WORKERS: usize = 2;
/// How often workers look for rows without being woken (another replica stored them).
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long a claim holds a row; a worker that dies gives it up after this.
const LEASE: Duration = Duration::from_secs(120);
/// Attempts before a row is given up (logged, marked done with its error).
const MAX_ATTEMPTS: i32 = 5;
/// Handled rows are kept this long (Slack retries for minutes; a day leaves room), then deleted.
const KEEP_DONE: Duration = Duration::from_secs(24 * 3600);
/// How often handled rows past [`KEEP_DONE`] are deleted.
const CLEAN_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("cannot store what Slack sent: {0}")]
    Store(#[source] sqlx::Error),
    #[error("cannot encode what Slack sent: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Something Slack sent that the bridge acts on.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Event(Box<EventCallback>),
    Interaction(Box<BlockActions>),
}

/// What storing did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    New,
    /// Already there: Slack's retry, or another replica's copy.
    Duplicate,
}

impl Incoming {
    /// The row's key: Slack's `event_id`; for a click, who clicked what and when.
    pub fn id(&self) -> String {
        match self {
            Incoming::Event(callback) => callback.event_id.clone(),
            Incoming::Interaction(actions) => {
                let first = actions.actions.first();
                format!(
                    "action:{}:{}:{}",
                    actions.user.id,
                    first.map(|a| a.action_ts.as_str()).unwrap_or_default(),
                    first.map(|a| a.action_id.as_str()).unwrap_or_default()
                )
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Incoming::Event(_) => "event",
            Incoming::Interaction(_) => "interaction",
        }
    }

    fn payload(&self) -> Result<Value, serde_json::Error> {
        match self {
            Incoming::Event(callback) => serde_json::to_value(callback),
            Incoming::Interaction(actions) => serde_json::to_value(actions),
        }
    }
}

/// Stores `incoming` once and wakes this replica's workers. Only when this returns `Ok` may
/// Slack be told it arrived.
pub async fn store(state: &AppState, incoming: &Incoming) -> Result<Stored, InboxError> {
    let inserted = sqlx::query(
        "INSERT INTO slack_inbox (id, kind, payload) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(incoming.id())
    .bind(incoming.kind())
    .bind(incoming.payload()?)
    .execute(&state.pool)
    .await
    .map_err(InboxError::Store)?;
    if inserted.rows_affected() == 0 {
        tracing::debug!(id = %incoming.id(), "Slack sent it again; stored already");
        return Ok(Stored::Duplicate);
    }
    if let Some(slack) = &state.slack {
        slack.inbox_wake.notify_one();
    }
    Ok(Stored::New)
}

/// This replica's workers, until shutdown. Rows this replica had claimed before it restarted
/// (killed mid-handling) are taken back first, so they wait for no lease to run out.
pub fn spawn_workers(state: AppState) {
    let Some(slack) = state.slack.clone() else {
        return;
    };
    tokio::spawn(async move {
        while !state.readiness.is_migrated() {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        match take_back_own_claims(&state).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "took back Slack inbox rows claimed before a restart"),
            Err(error) => tracing::warn!(%error, "cannot take back this replica's Slack inbox claims; they wait for their lease"),
        }
        for n in 0..WORKERS {
            let worker = format!("{}/slack-inbox-{n}", state.replica);
            tokio::spawn(work(state.clone(), slack.clone(), worker));
        }
        clean(state).await;
    });
}

/// Frees the rows claimed by this replica's workers in an earlier life (no worker of this
/// process has claimed anything yet).
async fn take_back_own_claims(state: &AppState) -> sqlx::Result<u64> {
    let prefix = format!("{}/", state.replica);
    let freed = sqlx::query(
        "UPDATE slack_inbox SET claimed_by = NULL, claimed_until = NULL \
         WHERE done_at IS NULL AND claimed_until > now() \
           AND left(claimed_by, length($1)) = $1",
    )
    .bind(prefix)
    .execute(&state.pool)
    .await?;
    Ok(freed.rows_affected())
}

/// Deletes rows handled more than [`KEEP_DONE`] ago, until shutdown.
async fn clean(state: AppState) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CLEAN_EVERY) => {}
            _ = state.shutdown.cancelled() => return,
        }
        if !state.readiness.is_migrated() {
            continue;
        }
        let deleted =
            sqlx::query("DELETE FROM slack_inbox WHERE done_at < now() - $1 * interval '1 second'")
                .bind(KEEP_DONE.as_secs() as i64)
                .execute(&state.pool)
                .await;
        match deleted {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::debug!(rows = done.rows_affected(), "old Slack inbox rows deleted");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot delete old Slack inbox rows"),
        }
    }
}

async fn work(state: AppState, slack: Arc<Slack>, worker: String) {
    // Nothing is handled before Slack has said who the bot is.
    tokio::select! {
        _ = slack.bot() => {}
        _ = state.shutdown.cancelled() => return,
    }
    loop {
        let mut handled = false;
        if state.readiness.is_migrated() {
            match claim(&state, &worker).await {
                Ok(Some(row)) => {
                    handle(&state, &slack, row).await;
                    handled = true;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot claim from the Slack inbox"),
            }
        }
        if handled {
            // More may be waiting.
            continue;
        }
        tokio::select! {
            _ = slack.inbox_wake.notified() => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: String,
    kind: String,
    payload: Value,
    attempts: i32,
}

/// The Slack thread a row belongs to (`<channel>:<thread_ts>`), in SQL; `NULL` for a click.
macro_rules! place {
    ($row:literal) => {
        concat!(
            "(",
            $row,
            ".payload->'event'->>'channel') || ':' || COALESCE(",
            $row,
            ".payload->'event'->>'thread_ts', ",
            $row,
            ".payload->'event'->>'ts')"
        )
    };
}

/// The oldest row no one holds whose Slack thread has no older row waiting.
async fn claim(state: &AppState, worker: &str) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as(concat!(
        "UPDATE slack_inbox SET claimed_by = $1, claimed_until = now() + $2 * interval '1 millisecond', \
           attempts = attempts + 1 \
         WHERE id = (SELECT i.id FROM slack_inbox i \
           WHERE i.done_at IS NULL AND (i.claimed_until IS NULL OR i.claimed_until < now()) \
             AND NOT EXISTS (SELECT 1 FROM slack_inbox o WHERE o.done_at IS NULL \
               AND (o.received_at, o.id) < (i.received_at, i.id) \
               AND ",
        place!("o"),
        " = ",
        place!("i"),
        ") ORDER BY i.received_at, i.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, kind, payload, attempts"
    ))
    .bind(worker)
    .bind(LEASE.as_millis() as i64)
    .fetch_optional(&state.pool)
    .await
}

/// Handles a claimed row and records the outcome: done, or tried again after a pause.
async fn handle(state: &AppState, slack: &Slack, row: Claimed) {
    let outcome = match row.kind.as_str() {
        "event" => match serde_json::from_value::<EventCallback>(row.payload) {
            Ok(callback) => conversation::handle_event(state, slack, &callback)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(format!("stored event does not parse: {error}")),
        },
        "interaction" => match serde_json::from_value::<BlockActions>(row.payload) {
            Ok(actions) => interactions::handle(state, slack, &actions)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(format!("stored interaction does not parse: {error}")),
        },
        other => Err(format!("unknown slack_inbox.kind `{other}`")),
    };
    let recorded = match &outcome {
        Ok(()) => {
            sqlx::query(
                "UPDATE slack_inbox SET done_at = now(), claimed_until = NULL, error = NULL \
                 WHERE id = $1",
            )
            .bind(&row.id)
            .execute(&state.pool)
            .await
        }
        Err(error) if row.attempts >= MAX_ATTEMPTS => {
            tracing::error!(id = %row.id, attempts = row.attempts, %error, "giving up on what Slack sent");
            sqlx::query(
                "UPDATE slack_inbox SET done_at = now(), claimed_until = NULL, error = $2 \
                 WHERE id = $1",
            )
            .bind(&row.id)
            .bind(error)
            .execute(&state.pool)
            .await
        }
        Err(error) => {
            let pause = backoff(row.attempts);
            tracing::warn!(id = %row.id, attempts = row.attempts, %error, ?pause, "handling what Slack sent failed; will retry");
            // The lease's end is when it is tried again.
            sqlx::query(
                "UPDATE slack_inbox SET claimed_by = NULL, \
                 claimed_until = now() + $2 * interval '1 millisecond', error = $3 WHERE id = $1",
            )
            .bind(&row.id)
            .bind(pause.as_millis() as i64)
            .bind(error)
            .execute(&state.pool)
            .await
        }
    };
    if let Err(error) = recorded {
        // The lease runs out and the row is handled again: the handlers are idempotent.
        tracing::warn!(id = %row.id, %error, "cannot record the outcome of a Slack inbox row");
    }
}

/// 1 s, 2 s, 4 s, 8 s…, at most a minute.
fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(6);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is the test's answer.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rows_are_keyed_by_event_id_and_clicks_by_who_what_when() {
        let callback: EventCallback = serde_json::from_str(
            r#"{"team_id":"T1","event_id":"Ev1","event_time":1,"event":{"type":"app_mention","channel":"C1","user":"U1","text":"hi","ts":"1.2"}}"#,
        )
        .unwrap();
        assert_eq!(Incoming::Event(Box::new(callback)).id(), "Ev1");
        let click: BlockActions = serde_json::from_str(
            r#"{"user":{"id":"U1"},"actions":[{"action_id":"centaur_approve","type":"button","value":"{}","action_ts":"1700.5"}]}"#,
        )
        .unwrap();
        assert_eq!(
            Incoming::Interaction(Box::new(click)).id(),
            "action:U1:1700.5:centaur_approve"
        );
    }

    #[test]
    fn retries_back_off_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(100), Duration::from_secs(60));
    }
}
