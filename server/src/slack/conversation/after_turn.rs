//! A turn's end, as the Slack side sees it: which Slack messages the turn took (their ✓ or ✗
//! goes with its outcome), and a next turn for the messages still waiting.
//!
//! What a turn took is recorded by the server, not guessed: `messages.execution_id` is set for
//! the messages an execution claims when it starts and for those its runner reports having
//! given it mid-turn (steering). After the turn, a message with `execution_id IS NULL` (and not
//! withdrawn) still waits. A Slack message is linked to its message row by the row's
//! `client_message_id` (`slack:<channel>:<ts>`, a reply stored while a turn ran), or, for the
//! message that started a turn, by that execution's idempotency key (the same string; the
//! execution takes its own first message when it starts).

use centaur_protocol::api::ExecuteRequest;
use centaur_protocol::{ErrorCode, ExecutionStatus, ThreadKey};
use uuid::Uuid;

use super::ConversationError;
use crate::app::AppState;
use crate::db::{UnknownStored, stored};
use crate::error::ApiError;
use crate::executions;

/// Why handling a turn's end failed.
#[derive(Debug, thiserror::Error)]
pub enum AfterTurnError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The server did not start the next turn (see [`AfterTurnError::is_transient`]).
    #[error("the next turn could not start: {0}")]
    Start(#[source] ApiError),
    #[error(transparent)]
    Stored(#[from] UnknownStored),
    /// A stored thread key that no longer parses.
    #[error("the stored thread key `{thread_key}` is invalid: {source}")]
    StoredThreadKey {
        thread_key: String,
        #[source]
        source: centaur_protocol::ThreadKeyError,
    },
}

impl AfterTurnError {
    /// Whether trying again later may succeed: the database away or failing, or the server
    /// unable to start the turn right now (a 5xx: sandbox capacity, the backend unavailable).
    /// A refused start (a 4xx: the harness unavailable here, the thread gone, a bad request)
    /// and unreadable stored data stay as they are however often it is tried.
    pub fn is_transient(&self) -> bool {
        match self {
            AfterTurnError::Database(_) => true,
            AfterTurnError::Start(error) => error.status().is_server_error(),
            AfterTurnError::Stored(_) | AfterTurnError::StoredThreadKey { .. } => false,
        }
    }
}

/// After the turn `ended` of a thread ended (delivery calls this before putting its ✓ or ✗ on,
/// and the inbox after storing a message while a turn ran):
/// - every Slack message of the thread is pointed at the turn that took it (whatever runs now:
///   the ended turn's outcome goes on the messages it took even when another turn has started);
/// - if `ended` is the thread's latest execution and messages still wait, the next turn starts
///   for them (idempotency key `slack:after:<ended>`). It takes them when it starts, and its own
///   end points their Slack messages at it. No message waiting, no turn.
///
/// Idempotent: calling it again (delivery retrying, or both delivery and the inbox) changes
/// nothing more and starts at most one turn. An error means nothing is lost by calling it
/// again; [`AfterTurnError::is_transient`] says whether that may help.
pub async fn after_turn_of(
    state: &AppState,
    thread_id: i64,
    ended: Uuid,
) -> Result<(), AfterTurnError> {
    let pointed = point_taken_messages(state, thread_id).await?;
    if pointed > 0 {
        tracing::debug!(thread_id, %ended, pointed, "Slack messages pointed at the turns that took them");
    }
    // Checked together, right before starting: `ended` is the latest execution and has ended,
    // and a message waits. (Should a turn start meanwhile from elsewhere, the server refuses
    // this one as `execution_active`; should a turn started meanwhile have ended too, the key
    // finds nothing of this turn's and this start is the one the waiting messages need.)
    let next: Option<String> = sqlx::query_scalar(
        "SELECT t.thread_key FROM threads t \
         JOIN LATERAL (SELECT e.id, e.status FROM executions e WHERE e.thread_id = t.id \
                       ORDER BY e.created_at DESC, e.id DESC LIMIT 1) last ON true \
         WHERE t.id = $1 AND last.id = $2 AND last.status IN ('completed', 'failed', 'cancelled') \
           AND EXISTS (SELECT 1 FROM messages m WHERE m.thread_id = t.id \
                       AND m.execution_id IS NULL AND m.withdrawn_at IS NULL)",
    )
    .bind(thread_id)
    .bind(ended)
    .fetch_optional(&state.pool)
    .await?;
    let Some(thread_key) = next else {
        return Ok(());
    };
    let key = ThreadKey::parse(&thread_key)
        .map_err(|source| AfterTurnError::StoredThreadKey { thread_key, source })?;
    let executed = executions::execute_as(
        state,
        ExecuteRequest {
            thread_key: key.clone(),
            idempotency_key: Some(format!("slack:after:{ended}")),
            message: None,
            harness: None,
            max_duration_ms: None,
            approval_policy: None,
        },
        None,
    )
    .await;
    match executed {
        Ok(response) => match response.status {
            ExecutionStatus::Queued | ExecutionStatus::Running => {
                tracing::info!(thread_key = %key, execution_id = %response.execution_id, "turn started for messages sent during the last one");
            }
            // The key named a turn that has ended already (a replay): nothing of it is pointed
            // at the messages that wait; they wait for the thread's next turn.
            ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled => {
                tracing::warn!(thread_key = %key, execution_id = %response.execution_id, "the turn after this one ended already; the messages waiting wait for the next turn");
            }
        },
        // Another turn started meanwhile (from the API, the CLI): it claims the waiting
        // messages when it starts, and its own end points them at it.
        Err(error) if error.code() == ErrorCode::ExecutionActive => {}
        Err(error) => return Err(AfterTurnError::Start(error)),
    }
    if let Some(slack) = &state.slack {
        slack.delivery_wake.notify_one();
    }
    Ok(())
}

/// [`after_turn_of`] for the thread's latest execution, if it has ended (with one queued or
/// running, only the Slack messages are pointed: that turn's end does the rest). For a caller
/// that does not know which turn ended: a reply stored while a turn ran.
pub async fn after_turn(state: &AppState, thread_id: i64) -> Result<(), ConversationError> {
    let last: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM executions WHERE thread_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((last, status)) = last else {
        return Ok(());
    };
    let status: ExecutionStatus = stored("executions.status", &status).map_err(ApiError::from)?;
    match status {
        ExecutionStatus::Queued | ExecutionStatus::Running => {
            point_taken_messages(state, thread_id).await?;
        }
        ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled => {
            after_turn_of(state, thread_id, last).await?;
        }
    }
    Ok(())
}

/// Points every Slack message of the thread at the turn that took it (claimed at its start, or
/// given to it mid-turn), in one statement. Returns how many changed.
async fn point_taken_messages(state: &AppState, thread_id: i64) -> sqlx::Result<u64> {
    let pointed = sqlx::query(
        "UPDATE slack_messages sm SET execution_id = taken.execution_id FROM ( \
             SELECT m.client_message_id AS link, m.execution_id FROM messages m \
             WHERE m.thread_id = $1 AND m.execution_id IS NOT NULL \
               AND m.client_message_id LIKE 'slack:%' \
           UNION ALL \
             SELECT e.idempotency_key, e.id FROM executions e \
             WHERE e.thread_id = $1 AND e.idempotency_key LIKE 'slack:%' \
               AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.thread_id = $1 \
                               AND m.client_message_id = e.idempotency_key) \
         ) taken \
         WHERE sm.thread_id = $1 AND taken.link = 'slack:' || sm.channel_id || ':' || sm.ts \
           AND sm.execution_id IS DISTINCT FROM taken.execution_id",
    )
    .bind(thread_id)
    .execute(&state.pool)
    .await?;
    Ok(pointed.rows_affected())
}
