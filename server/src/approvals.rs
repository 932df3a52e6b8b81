//! Deciding approvals. Runners request them (an `approval.requested` event); people decide
//! them here, once; the decision reaches the runner as `approval.resolved` on the stream.

use centaur_protocol::ErrorCode;
use centaur_protocol::{ApprovalResolution, Decision, EventBody};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::db::stored;
use crate::error::{ApiError, ApiResult};
use crate::events::{NewEvent, append};
use crate::threads::ThreadRow;

const MAX_REASON_BYTES: usize = 4096;
/// `approvals.status` until a decision (or the execution's end) resolves it.
const PENDING: &str = "pending";

pub async fn decide(
    state: &AppState,
    principal: &Principal,
    thread: &ThreadRow,
    approval_id: Uuid,
    decision: Decision,
    reason: Option<String>,
) -> ApiResult<()> {
    decide_as(
        state,
        principal.label(),
        thread,
        approval_id,
        decision,
        reason,
    )
    .await
}

/// [`decide`], recording `decided_by` as given (`slack:U123 (Ann Lee)` for a click in Slack).
pub async fn decide_as(
    state: &AppState,
    decided_by: String,
    thread: &ThreadRow,
    approval_id: Uuid,
    decision: Decision,
    reason: Option<String>,
) -> ApiResult<()> {
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("reason must be at most {MAX_REASON_BYTES} bytes"),
        ));
    }
    let mut tx = crate::db::begin(&state.pool).await?;
    let execution_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE approvals SET status = $3, decided_by = $4, reason = $5, decided_at = now() \
         WHERE id = $1 AND thread_id = $2 AND status = 'pending' RETURNING execution_id",
    )
    .bind(approval_id)
    .bind(thread.id)
    .bind(decision.as_str())
    .bind(&decided_by)
    .bind(reason)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(execution_id) = execution_id else {
        drop(tx);
        return Err(why_not_pending(state, thread.id, approval_id).await?);
    };
    let events = append(
        &mut tx,
        &thread.as_ref(),
        &[NewEvent::execution(
            execution_id,
            EventBody::ApprovalResolved {
                approval_id,
                decision: decision.into(),
                decided_by,
            },
        )],
    )
    .await?;
    tx.commit().await?;
    state.hub.publish(thread.id, events);
    Ok(())
}

async fn why_not_pending(
    state: &AppState,
    thread_id: i64,
    approval_id: Uuid,
) -> ApiResult<ApiError> {
    let status: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT status, decided_by FROM approvals WHERE id = $1 AND thread_id = $2")
            .bind(approval_id)
            .bind(thread_id)
            .fetch_optional(&state.pool)
            .await?;
    let Some((status, decided_by)) = status else {
        return Ok(ApiError::not_found(
            ErrorCode::ApprovalNotFound,
            format!("no approval {approval_id} on this thread"),
        ));
    };
    // Still `pending` only if the runner's batch that asked committed after the update.
    let resolution: Option<ApprovalResolution> = match status.as_str() {
        PENDING => None,
        resolved => Some(stored("approvals.status", resolved)?),
    };
    Ok(match resolution {
        Some(ApprovalResolution::Cancelled) => ApiError::conflict(
            ErrorCode::ApprovalExpired,
            "the execution that asked for this approval has ended",
        ),
        None
        | Some(
            ApprovalResolution::Approve
            | ApprovalResolution::ApproveForSession
            | ApprovalResolution::Deny,
        ) => ApiError::conflict(
            ErrorCode::ApprovalAlreadyDecided,
            format!(
                "approval {approval_id} was already decided ({status} by {})",
                decided_by.unwrap_or_default()
            ),
        ),
    })
}
