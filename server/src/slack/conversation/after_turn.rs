//! A turn's end, as the Slack side sees it: which Slack messages the turn took (their ✓ or ✗
//! goes with its outcome), and a next turn for the messages still waiting.
//!
//! What a turn took is recorded by the server, not guessed: `messages.execution_id` is set for
//! the messages an execution claims when it starts and for those its runner reports having
//! given it mid-turn (steering). After the turn, a message with `execution_id IS NULL` (and not
//! withdrawn) still waits.

use centaur_protocol::api::ExecuteRequest;
use centaur_protocol::{ErrorCode, ExecutionStatus, Harness, ThreadKey};
use uuid::Uuid;

use super::ConversationError;
use crate::app::AppState;
use crate::db::stored;
use crate::error::ApiError;
use crate::executions;

/// Whether a harness takes a message that arrives while its turn runs into that turn (the
/// runner forwards it: Codex's `turn/steer`, a user message on Claude Code's and Amp's stdin).
/// `shell` and `echo` do not: such a message waits for the next turn.
pub fn steers(harness: Harness) -> bool {
    match harness {
        Harness::Codex | Harness::ClaudeCode | Harness::Amp => true,
        Harness::Shell | Harness::Echo => false,
    }
}

/// After a thread's turn ended (delivery calls this before putting its ✓ or ✗ on, and the
/// inbox after storing a message while a turn ran): the Slack messages the ended turn took are
/// pointed at it, so its outcome goes on them; messages still waiting start the next turn, and
/// their Slack messages are pointed at that one.
///
/// Idempotent: calling it again (delivery retrying, or both delivery and the inbox) changes
/// nothing more and starts at most one turn (its idempotency key is `slack:after:<ended>`). An
/// error means nothing is lost by calling it again.
pub async fn after_turn(state: &AppState, thread_id: i64) -> Result<(), ConversationError> {
    let last: Option<(Uuid, String, String)> = sqlx::query_as(
        "SELECT e.id, e.status, t.thread_key FROM executions e \
         JOIN threads t ON t.id = e.thread_id WHERE e.thread_id = $1 \
         ORDER BY e.created_at DESC, e.id DESC LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((ended, status, thread_key)) = last else {
        return Ok(());
    };
    let status: ExecutionStatus = stored("executions.status", &status).map_err(ApiError::from)?;
    match status {
        // Not ended: that turn takes the waiting messages, and this is called at its end.
        ExecutionStatus::Queued | ExecutionStatus::Running => return Ok(()),
        ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled => {}
    }
    let took = point_taken_messages(state, thread_id, ended).await?;
    if took > 0 {
        tracing::debug!(%thread_key, %ended, took, "Slack messages taken by the ended turn");
    }
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE thread_id = $1 AND execution_id IS NULL \
         AND withdrawn_at IS NULL",
    )
    .bind(thread_id)
    .fetch_one(&state.pool)
    .await?;
    if waiting == 0 {
        return Ok(());
    }
    let key =
        ThreadKey::parse(&thread_key).map_err(|source| ConversationError::StoredThreadKey {
            thread_key: thread_key.clone(),
            source,
        })?;
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
    let next = match executed {
        Ok(response) => response.execution_id,
        // Another turn started meanwhile (from the API, the CLI): it claims the waiting
        // messages when it starts, and its own end points them at it.
        Err(error) if error.code() == ErrorCode::ExecutionActive => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    // Their ✓ or ✗ goes on the turn that takes them. (Should another turn claim them first,
    // that turn's end points them at it.)
    sqlx::query(
        "UPDATE slack_messages sm SET execution_id = $2 FROM messages m \
         WHERE sm.thread_id = $1 AND sm.execution_id IS NULL \
           AND m.thread_id = $1 AND m.execution_id IS NULL AND m.withdrawn_at IS NULL \
           AND m.client_message_id = 'slack:' || sm.channel_id || ':' || sm.ts",
    )
    .bind(thread_id)
    .bind(next)
    .execute(&state.pool)
    .await?;
    tracing::info!(thread_key = %key, execution_id = %next, "turn started for messages sent during the last one");
    if let Some(slack) = &state.slack {
        slack.delivery_wake.notify_one();
    }
    Ok(())
}

/// Points the Slack messages `ended` took (claimed at its start, or given to it mid-turn) at
/// it. Returns how many changed.
async fn point_taken_messages(state: &AppState, thread_id: i64, ended: Uuid) -> sqlx::Result<u64> {
    let pointed = sqlx::query(
        "UPDATE slack_messages sm SET execution_id = m.execution_id FROM messages m \
         WHERE sm.thread_id = $1 AND m.thread_id = $1 AND m.execution_id = $2 \
           AND m.client_message_id = 'slack:' || sm.channel_id || ':' || sm.ts \
           AND sm.execution_id IS DISTINCT FROM m.execution_id",
    )
    .bind(thread_id)
    .bind(ended)
    .execute(&state.pool)
    .await?;
    Ok(pointed.rows_affected())
}
