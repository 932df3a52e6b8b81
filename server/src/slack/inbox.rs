//! The inbox: what Slack sent, stored before it is acknowledged (`slack_inbox`, keyed by Slack's
//! `event_id`, so Slack's retries and other replicas' copies are stored once), then claimed and
//! handled by a worker on any replica. A row whose handling failed is tried again.
//!
//! Storing is one INSERT (the only work done before Slack gets its answer). Workers claim rows
//! with `FOR UPDATE SKIP LOCKED` under a short lease ([`LEASE`]: `claimed_by`, `claimed_replica`,
//! `claimed_until`; each claim also counts `attempts`), renewed while the row is being handled.
//! A row held by someone else is taken when its lease ran out, or when the replica holding it is
//! not alive (not seen in `replicas` for `CENTAUR_REPLICA_DEAD_AFTER_SECS`), whichever comes
//! first: with the defaults (a 15 s lease, 30 s to count as dead) the lease runs out first; a
//! dead-after shorter than the lease makes a dead replica's rows free sooner. A replica that
//! restarts frees its own earlier claims at once. One Slack thread at a time, in the order
//! received: a row waits while an older row of its Slack thread is not done.
//!
//! Only the claim's holder writes its outcome (done, failed, given up): each write checks that
//! the row is still claimed by this worker with this claim's `attempts`. A worker whose renewal
//! finds the row taken by another stops handling it (the handler is dropped; handlers are
//! idempotent, so what it did is not done twice) and writes nothing.
//!
//! A row whose handling fails is tried again, backing off up to a minute between tries, for
//! [`GIVE_UP_AFTER`] since it arrived (a database or Slack outage is waited out; Slack's own
//! retries are deduplicated away, so these are the only ones). Then it is given up: logged, and
//! a person who asked is told in the Slack thread. Handled rows are kept a day (the
//! deduplication outlives Slack's retries), then deleted.

use std::sync::Arc;
use std::time::Duration;

use centaur_protocol::slack::events::{BlockActions, EventCallback};
use serde_json::Value;
use sqlx::postgres::PgQueryResult;

use super::Slack;
use super::{conversation, interactions};
use crate::app::AppState;
use crate::db::stored;

/// Workers per replica: one handles a long step (a first turn's context) while the other goes on.
const WORKERS: usize = 2;
/// How often workers look for rows without being woken (another replica stored them).
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long a claim holds a row unless renewed; a worker that dies gives it up after this.
const LEASE: Duration = Duration::from_secs(15);
/// How often a worker renews the claim on the row it is handling.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long after it arrived a row that keeps failing is given up (logged, marked done with its
/// error, the person told).
const GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);
/// Handled rows are kept this long (Slack retries for minutes; a day leaves room), then deleted.
const KEEP_DONE: Duration = Duration::from_secs(24 * 3600);
/// How often handled rows past [`KEEP_DONE`] are deleted.
const CLEAN_EVERY: Duration = Duration::from_secs(600);

/// What a row holds (`slack_inbox.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An Events API `event_callback`.
    Event,
    /// A `block_actions` payload (a button click).
    Interaction,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Interaction => "interaction",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("expected `event` or `interaction`")]
pub struct UnknownKind;

impl std::str::FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "event" => Ok(Kind::Event),
            "interaction" => Ok(Kind::Interaction),
            _ => Err(UnknownKind),
        }
    }
}

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

    fn kind(&self) -> Kind {
        match self {
            Incoming::Event(_) => Kind::Event,
            Incoming::Interaction(_) => Kind::Interaction,
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
    .bind(incoming.kind().as_str())
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
            Err(error) => {
                tracing::warn!(%error, "cannot take back this replica's Slack inbox claims; they wait for their lease")
            }
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
    let freed = sqlx::query(
        "UPDATE slack_inbox SET claimed_by = NULL, claimed_replica = NULL, claimed_until = NULL \
         WHERE done_at IS NULL AND claimed_replica = $1",
    )
    .bind(state.replica.as_ref())
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
                    handle(&state, &slack, &worker, row).await;
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
    /// The row arrived more than [`GIVE_UP_AFTER`] ago.
    overdue: bool,
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

/// The oldest row no one holds (unclaimed, its lease run out, or held by another replica that is
/// not alive: either suffices) whose Slack thread has no older row waiting.
async fn claim(state: &AppState, worker: &str) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as(concat!(
        "UPDATE slack_inbox SET claimed_by = $1, claimed_replica = $3, \
           claimed_until = now() + $2 * interval '1 millisecond', attempts = attempts + 1 \
         WHERE id = (SELECT i.id FROM slack_inbox i \
           WHERE i.done_at IS NULL \
             AND (i.claimed_until IS NULL OR i.claimed_until < now() \
                  OR (i.claimed_replica IS NOT NULL AND i.claimed_replica <> $3 \
                      AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = i.claimed_replica \
                                      AND r.seen_at > now() - make_interval(secs => $4)))) \
             AND NOT EXISTS (SELECT 1 FROM slack_inbox o WHERE o.done_at IS NULL \
               AND (o.received_at, o.id) < (i.received_at, i.id) \
               AND ",
        place!("o"),
        " = ",
        place!("i"),
        ") ORDER BY i.received_at, i.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, kind, payload, attempts, \
           received_at < now() - $5 * interval '1 second' AS overdue"
    ))
    .bind(worker)
    .bind(LEASE.as_millis() as i64)
    .bind(state.replica.as_ref())
    .bind(state.config.replica_dead_after_secs as f64)
    .bind(GIVE_UP_AFTER.as_secs() as i64)
    .fetch_optional(&state.pool)
    .await
}

/// Keeps the claim on `row` while it is being handled. `false` when the claim was lost (another
/// worker took the row after the lease ran out, or it is done).
async fn renew(state: &AppState, worker: &str, row: &Claimed) -> sqlx::Result<bool> {
    let renewed = sqlx::query(
        "UPDATE slack_inbox SET claimed_until = now() + $3 * interval '1 millisecond' \
         WHERE id = $1 AND claimed_by = $2 AND attempts = $4 AND done_at IS NULL",
    )
    .bind(&row.id)
    .bind(worker)
    .bind(LEASE.as_millis() as i64)
    .bind(row.attempts)
    .execute(&state.pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// What handling a row came to.
enum Outcome {
    Done,
    /// Failed; may work when tried again (the database, Slack, the server away).
    Failed(String),
    /// Cannot be handled, however often it is tried (a stored row this server does not read).
    Unreadable(String),
}

/// Handles a claimed row, its claim renewed meanwhile, and records the outcome: done, tried
/// again after a pause, or given up. A row found taken by another worker is dropped: its
/// handling stops and nothing is recorded.
async fn handle(state: &AppState, slack: &Slack, worker: &str, row: Claimed) {
    let handling = dispatch(state, slack, &row);
    tokio::pin!(handling);
    let outcome = loop {
        tokio::select! {
            outcome = &mut handling => break outcome,
            _ = tokio::time::sleep(RENEW_EVERY) => match renew(state, worker, &row).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(id = %row.id, "another worker took this Slack inbox row (its claim ran out); stopped handling it");
                    return;
                }
                // Not known to be lost: go on; the outcome is written only if it is still ours.
                Err(error) => tracing::warn!(id = %row.id, %error, "cannot renew the claim on a Slack inbox row"),
            },
        }
    };
    let recorded = match &outcome {
        Outcome::Done => {
            sqlx::query(
                "UPDATE slack_inbox SET done_at = now(), claimed_until = NULL, error = NULL \
                 WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND done_at IS NULL",
            )
            .bind(&row.id)
            .bind(worker)
            .bind(row.attempts)
            .execute(&state.pool)
            .await
        }
        Outcome::Unreadable(error) => give_up(state, worker, &row, error).await,
        Outcome::Failed(error) if row.overdue => {
            let given_up = give_up(state, worker, &row, error).await;
            // The person is told once, by the worker whose claim gave it up.
            if given_up
                .as_ref()
                .is_ok_and(|done| done.rows_affected() == 1)
                && let Ok(Kind::Event) = stored::<Kind>("slack_inbox.kind", &row.kind)
                && let Ok(callback) = serde_json::from_value::<EventCallback>(row.payload.clone())
            {
                conversation::gave_up(slack, &callback).await;
            }
            given_up
        }
        Outcome::Failed(error) => {
            let pause = backoff(row.attempts);
            tracing::warn!(id = %row.id, attempts = row.attempts, %error, ?pause, "handling what Slack sent failed; will retry");
            // The lease's end is when it is tried again.
            sqlx::query(
                "UPDATE slack_inbox SET claimed_by = NULL, claimed_replica = NULL, \
                 claimed_until = now() + $4 * interval '1 millisecond', error = $5 \
                 WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND done_at IS NULL",
            )
            .bind(&row.id)
            .bind(worker)
            .bind(row.attempts)
            .bind(pause.as_millis() as i64)
            .bind(error)
            .execute(&state.pool)
            .await
        }
    };
    match recorded {
        Ok(written) if written.rows_affected() == 0 => {
            tracing::warn!(id = %row.id, "this worker's claim on a Slack inbox row was lost; its outcome is not recorded");
        }
        Ok(_) => {}
        // The lease runs out and the row is handled again: the handlers are idempotent.
        Err(error) => {
            tracing::warn!(id = %row.id, %error, "cannot record the outcome of a Slack inbox row");
        }
    }
}

/// Marks the row done with its error, if `worker` still holds this claim on it.
async fn give_up(
    state: &AppState,
    worker: &str,
    row: &Claimed,
    error: &str,
) -> sqlx::Result<PgQueryResult> {
    tracing::error!(id = %row.id, attempts = row.attempts, %error, "giving up on what Slack sent");
    sqlx::query(
        "UPDATE slack_inbox SET done_at = now(), claimed_until = NULL, error = $4 \
         WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND done_at IS NULL",
    )
    .bind(&row.id)
    .bind(worker)
    .bind(row.attempts)
    .bind(error)
    .execute(&state.pool)
    .await
}

/// Hands the row to its handler.
async fn dispatch(state: &AppState, slack: &Slack, row: &Claimed) -> Outcome {
    let kind = match stored::<Kind>("slack_inbox.kind", &row.kind) {
        Ok(kind) => kind,
        Err(error) => return Outcome::Unreadable(error.to_string()),
    };
    let handled = match kind {
        Kind::Event => match serde_json::from_value::<EventCallback>(row.payload.clone()) {
            Ok(callback) => conversation::handle_event(state, slack, &callback).await,
            Err(error) => {
                return Outcome::Unreadable(format!("stored event does not parse: {error}"));
            }
        },
        Kind::Interaction => match serde_json::from_value::<BlockActions>(row.payload.clone()) {
            Ok(actions) => interactions::handle(state, slack, &actions).await,
            Err(error) => {
                return Outcome::Unreadable(format!("stored interaction does not parse: {error}"));
            }
        },
    };
    match handled {
        Ok(()) => Outcome::Done,
        Err(error) => Outcome::Failed(error.to_string()),
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
    fn kinds_are_stored_as_text_and_unknown_ones_refused() {
        for kind in [Kind::Event, Kind::Interaction] {
            assert_eq!(kind.as_str().parse::<Kind>().unwrap(), kind);
        }
        let error = stored::<Kind>("slack_inbox.kind", "reaction").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown value `reaction` in slack_inbox.kind: expected `event` or `interaction`"
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
