//! The execution lifecycle: queued, started, then exactly one terminal event.
//!
//! Every way an execution can end (the runner reports it, an interrupt, the deadline, a
//! release) goes through [`finish_in`], whose conditional update lets exactly one of them win.

use centaur_protocol::ErrorCode;
use std::time::Duration;

use centaur_protocol::api::{ExecuteRequest, ExecuteResponse, InterruptResponse, SpawnRequest};
use centaur_protocol::runner::{
    ApprovalPolicy, Assignment, BatchAccepted, EventBatch, Finish, InputMessage, RunnerEvent,
    RunnerExecution,
};
use centaur_protocol::{ApprovalResolution, Author, EventBody, ExecutionStatus, Harness, Role};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::AppState;
use crate::assignment;
use crate::auth::Principal;
use crate::db::{UnknownStored, stored};
use crate::error::{ApiError, ApiResult, unique_violation};
use crate::events::{NewEvent, ThreadRef, append};
use crate::threads::{self, ThreadRow};

const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;
pub const MAX_BATCH_EVENTS: usize = 10_000;
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);

/// `POST /agent/execute`.
pub async fn execute(state: &AppState, request: ExecuteRequest) -> ApiResult<ExecuteResponse> {
    execute_as(state, request, None).await
}

/// [`execute`], for a turn a chat platform's user asked for (recorded on its `message.created`).
pub async fn execute_as(
    state: &AppState,
    request: ExecuteRequest,
    author: Option<Author>,
) -> ApiResult<ExecuteResponse> {
    let max_duration_ms = match request.max_duration_ms {
        None => state.config.default_execution_ms,
        Some(0) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "max_duration_ms must be positive",
            ));
        }
        Some(ms) if ms > state.config.max_execution_ms => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!(
                    "max_duration_ms must be at most {}",
                    state.config.max_execution_ms
                ),
            ));
        }
        Some(ms) => ms,
    };
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
        ));
    }
    if request
        .message
        .as_deref()
        .is_some_and(|m| m.trim().is_empty())
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "message must not be empty",
        ));
    }

    // A retry of a turn already queued gets its answer.
    let existing = threads::find_optional(state, &request.thread_key).await?;
    if let (Some(thread), Some(key)) = (&existing, &request.idempotency_key)
        && let Some(previous) = by_idempotency_key(state, thread.id, key).await?
    {
        return Ok(previous);
    }
    // Without a message there must be a thread to run; with one, it is created, unless its
    // harness cannot run here: then nothing is stored. (For a thread that exists, the harness
    // is checked only when a new sandbox would start for it: see `assignment::spawn_on`.)
    let (thread, created) = match (existing, &request.message) {
        (Some(thread), _) => (thread, false),
        (None, None) => (threads::find(state, &request.thread_key).await?, false),
        (None, Some(_)) => {
            crate::harnesses::require(
                state,
                request.harness.unwrap_or(state.config.default_harness),
            )?;
            threads::ensure(state, &request.thread_key, request.harness, None).await?
        }
    };
    let mut started = Vec::new();
    let queued = queue(
        state,
        &request,
        author,
        &thread,
        max_duration_ms,
        &mut started,
    )
    .await;
    if queued.is_err() && created {
        // A refused request stores nothing: not the thread it created, nor a sandbox for it.
        assignment::abandon_new_thread(state, &thread, &started).await;
    }
    queued
}

/// Queues the execution on `thread`, spawning its sandbox if need be; `started` gets the
/// sandboxes this call started.
async fn queue(
    state: &AppState,
    request: &ExecuteRequest,
    author: Option<Author>,
    thread: &ThreadRow,
    max_duration_ms: u64,
    started: &mut Vec<Uuid>,
) -> ApiResult<ExecuteResponse> {
    if let Some(key) = &request.idempotency_key
        && let Some(existing) = by_idempotency_key(state, thread.id, key).await?
    {
        return Ok(existing);
    }
    let spawned = assignment::spawn_on(
        state,
        &SpawnRequest {
            thread_key: request.thread_key.clone(),
            harness: request.harness,
            persona: None,
            spawn_id: None,
            approval_policy: request.approval_policy,
        },
        thread,
        started,
        // Stored below with the execution: a refused execute leaves the thread's as it was.
        assignment::PolicyKeeper::Caller,
    )
    .await?;

    let execution_id = Uuid::now_v7();
    let mut tx = crate::db::begin(&state.pool).await?;
    let inserted = sqlx::query(
        "INSERT INTO executions (id, thread_id, status, harness, idempotency_key, \
         max_duration_ms, deadline_at, approval_policy) \
         VALUES ($1, $2, 'queued', $3, $4, $5, now() + $5 * interval '1 millisecond', $6)",
    )
    .bind(execution_id)
    .bind(thread.id)
    .bind(spawned.harness.as_str())
    .bind(request.idempotency_key.as_deref())
    .bind(max_duration_ms as i64)
    .bind(request.approval_policy.map(|p| p.as_str()))
    .execute(&mut *tx)
    .await;
    if let Err(error) = inserted {
        drop(tx);
        return match unique_violation(&error).as_deref() {
            Some("executions_one_active_per_thread") => Err(active_conflict(state, thread).await),
            Some("executions_idempotency") => {
                let key = request.idempotency_key.as_deref().unwrap_or_default();
                by_idempotency_key(state, thread.id, key)
                    .await?
                    .ok_or_else(|| {
                        ApiError::conflict(ErrorCode::IdempotencyConflict, "retry the request")
                    })
            }
            _ => Err(error.into()),
        };
    }
    // The thread keeps the policy for its later turns only with the execution it came with.
    if let Some(policy) = request.approval_policy {
        assignment::store_policy(&mut *tx, thread.id, policy).await?;
    }
    let mut new_events = Vec::new();
    let message_id = Uuid::now_v7();
    if let Some(text) = &request.message {
        new_events.push(NewEvent::thread(EventBody::MessageCreated {
            message_id,
            role: Role::User,
            text: text.clone(),
            author,
        }));
    }
    new_events.push(NewEvent::execution(
        execution_id,
        EventBody::ExecutionQueued {},
    ));
    let events = append(&mut tx, &thread.as_ref(), &new_events).await?;
    if let Some(text) = &request.message {
        sqlx::query(
            "INSERT INTO messages (id, thread_id, role, text, event_id) VALUES ($1, $2, 'user', $3, $4)",
        )
        .bind(message_id)
        .bind(thread.id)
        .bind(text)
        .bind(events[0].event_id)
        .execute(&mut *tx)
        .await?;
        threads::set_title_if_none(&mut tx, thread.id, text).await?;
    }
    tx.commit().await?;
    state.hub.publish(thread.id, events);
    tracing::info!(thread_key = %thread.thread_key, %execution_id, "execution queued");
    Ok(ExecuteResponse {
        execution_id,
        status: ExecutionStatus::Queued,
    })
}

async fn by_idempotency_key(
    state: &AppState,
    thread_id: i64,
    key: &str,
) -> ApiResult<Option<ExecuteResponse>> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM executions WHERE thread_id = $1 AND idempotency_key = $2",
    )
    .bind(thread_id)
    .bind(key)
    .fetch_optional(&state.pool)
    .await?;
    row.map(|(execution_id, status)| {
        Ok(ExecuteResponse {
            execution_id,
            status: stored("executions.status", &status)?,
        })
    })
    .transpose()
}

async fn active_conflict(state: &AppState, thread: &ThreadRow) -> ApiError {
    let active: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM executions WHERE thread_id = $1 AND status IN ('queued', 'running')",
    )
    .bind(thread.id)
    .fetch_optional(&state.pool)
    .await
    .ok()
    .flatten();
    let which = active.map(|id| format!(" ({id})")).unwrap_or_default();
    ApiError::conflict(
        ErrorCode::ExecutionActive,
        format!(
            "thread `{}` already has an execution in progress{which}; wait for it or interrupt it",
            thread.thread_key
        ),
    )
}

/// Ends an active execution: stores the outcome and returns the events to append (cancelled
/// approvals, then the terminal event). `None` if the execution had already ended.
pub async fn finish_in(
    conn: &mut PgConnection,
    execution_id: Uuid,
    finish: &Finish,
) -> sqlx::Result<Option<Vec<NewEvent>>> {
    let (status, result_text, error, reason, terminal) = match finish {
        Finish::Completed { result_text } => (
            ExecutionStatus::Completed,
            Some(result_text),
            None,
            None,
            EventBody::ExecutionCompleted {
                result_text: result_text.clone(),
            },
        ),
        Finish::Failed { error, output } => (
            ExecutionStatus::Failed,
            None,
            Some(error),
            None,
            EventBody::ExecutionFailed {
                error: error.clone(),
                output: output.clone(),
            },
        ),
        Finish::Cancelled { reason } => (
            ExecutionStatus::Cancelled,
            None,
            None,
            Some(reason),
            EventBody::ExecutionCancelled {
                reason: reason.clone(),
            },
        ),
    };
    let ended: Option<Uuid> = sqlx::query_scalar(
        "UPDATE executions SET status = $2, finished_at = now(), result_text = $3, error = $4, \
         cancel_reason = $5 WHERE id = $1 AND status IN ('queued', 'running') RETURNING id",
    )
    .bind(execution_id)
    .bind(status.as_str())
    .bind(result_text)
    .bind(error)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    if ended.is_none() {
        return Ok(None);
    }
    let cancelled: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE approvals SET status = 'cancelled', decided_by = 'system', decided_at = now() \
         WHERE execution_id = $1 AND status = 'pending' RETURNING id",
    )
    .bind(execution_id)
    .fetch_all(&mut *conn)
    .await?;
    // Tool calls still open (waiting for one of those approvals, or running) end with it.
    let calls = crate::tools::calls::close_unfinished(conn, execution_id, &cancelled).await?;
    let mut events: Vec<NewEvent> = cancelled
        .into_iter()
        .map(|approval_id| {
            NewEvent::execution(
                execution_id,
                EventBody::ApprovalResolved {
                    approval_id,
                    decision: ApprovalResolution::Cancelled,
                    decided_by: "system".into(),
                },
            )
        })
        .collect();
    events.extend(calls);
    events.push(NewEvent::execution(execution_id, terminal));
    Ok(Some(events))
}

/// `POST /agent/threads/{key}/interrupt`: cancels the queued or running execution; with
/// `all`, also withdraws the messages waiting for a turn (the next turn does not start with
/// them; their events stay in the thread's history).
pub async fn interrupt(
    state: &AppState,
    principal: &Principal,
    thread: &ThreadRow,
    reason: Option<String>,
    all: bool,
) -> ApiResult<InterruptResponse> {
    flush_before_server_end(state, ServerEnd::Interrupt(thread.id)).await?;
    let mut tx = crate::db::begin(&state.pool).await?;
    let active: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM executions WHERE thread_id = $1 AND status IN ('queued', 'running') FOR NO KEY UPDATE",
    )
    .bind(thread.id)
    .fetch_optional(&mut *tx)
    .await?;
    let withdrawn_messages = if all {
        sqlx::query(
            "UPDATE messages SET withdrawn_at = now() \
             WHERE thread_id = $1 AND execution_id IS NULL AND withdrawn_at IS NULL",
        )
        .bind(thread.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
    } else {
        0
    };
    let Some(execution_id) = active else {
        tx.commit().await?;
        return Ok(InterruptResponse {
            interrupted: false,
            execution_id: None,
            withdrawn_messages,
        });
    };
    let reason = reason.unwrap_or_else(|| format!("interrupted by {}", principal.label()));
    let new_events = finish_in(&mut tx, execution_id, &Finish::Cancelled { reason })
        .await?
        .unwrap_or_default();
    let events = append(&mut tx, &thread.as_ref(), &new_events).await?;
    tx.commit().await?;
    state.hub.publish(thread.id, events);
    tracing::info!(thread_key = %thread.thread_key, %execution_id, withdrawn_messages, "execution interrupted");
    Ok(InterruptResponse {
        interrupted: true,
        execution_id: Some(execution_id),
        withdrawn_messages,
    })
}

/// How long a claim waits for the first egress sync after start-up.
const FIRST_EGRESS_SYNC_WAIT: Duration = Duration::from_secs(10);

/// `POST /runner/v1/threads/{key}/claim`: the thread's queued execution, now running, with its
/// input; waits up to `wait` for one to be queued.
pub async fn claim(
    state: &AppState,
    principal: &Principal,
    thread: &ThreadRow,
    wait: Duration,
) -> ApiResult<Option<Assignment>> {
    let deadline = tokio::time::Instant::now() + wait.min(MAX_CLAIM_WAIT);
    // A sandbox adopted after a restart takes no turn before the proxy knows it again.
    if let Some(egress) = &state.egress
        && !egress.first_sync(FIRST_EGRESS_SYNC_WAIT).await
    {
        tracing::warn!("no egress sync yet since start-up; handing out the turn anyway");
    }
    let mut subscription = state.hub.subscribe(thread.id, thread.last_event_id);
    loop {
        if let Some(assignment) = claim_now(state, principal, thread).await? {
            return Ok(Some(assignment));
        }
        tokio::select! {
            _ = subscription.rx.recv() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = state.shutdown.cancelled() => return Ok(None),
        }
    }
}

/// The execution a claim started.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    harness: String,
    deadline_at: DateTime<Utc>,
    runner_seq: i64,
    /// The policy it was queued with, if its request named one.
    approval_policy: Option<String>,
}

/// Waits for the row lock rather than skipping a locked row: a thread has at most one queued
/// execution, and the lock may be a refused request whose rollback is still in flight.
async fn claim_now(
    state: &AppState,
    principal: &Principal,
    thread: &ThreadRow,
) -> ApiResult<Option<Assignment>> {
    let mut tx = crate::db::begin(&state.pool).await?;
    if let Some(sandbox_id) = principal.sandbox_id()
        && let Some(assignment) = held_by(state, &mut tx, thread, sandbox_id).await?
    {
        tx.commit().await?;
        tracing::info!(thread_key = %thread.thread_key, execution_id = %assignment.execution_id, "execution handed back to the sandbox that claimed it");
        return Ok(Some(assignment));
    }
    let claimed: Option<Claimed> = sqlx::query_as(
        "UPDATE executions SET status = 'running', started_at = now(), \
           sandbox_id = COALESCE($2, (SELECT id FROM sandboxes \
                                      WHERE thread_id = $1 AND state <> 'released')) \
         WHERE id = (SELECT id FROM executions WHERE thread_id = $1 AND status = 'queued' \
                     FOR NO KEY UPDATE) \
         RETURNING id, harness, deadline_at, runner_seq, approval_policy",
    )
    .bind(thread.id)
    .bind(principal.sandbox_id())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Claimed {
        id: execution_id,
        harness,
        deadline_at,
        runner_seq,
        approval_policy: own_policy,
    }) = claimed
    else {
        return Ok(None);
    };
    let input: Vec<(Uuid, String, String, i64)> = sqlx::query_as(
        "UPDATE messages SET execution_id = $1 \
         WHERE thread_id = $2 AND execution_id IS NULL AND withdrawn_at IS NULL \
         RETURNING id, role, text, event_id",
    )
    .bind(execution_id)
    .bind(thread.id)
    .fetch_all(&mut *tx)
    .await?;
    let harness: Harness = stored("executions.harness", &harness)?;
    let input = input_messages(input)?;
    let approval_policy = turn_policy(state, &mut tx, thread.id, own_policy).await?;
    let events = append(
        &mut tx,
        &thread.as_ref(),
        &[NewEvent::execution(
            execution_id,
            EventBody::ExecutionStarted {},
        )],
    )
    .await?;
    tx.commit().await?;
    let started_event_id = events[0].event_id;
    state.hub.publish(thread.id, events);
    tracing::info!(thread_key = %thread.thread_key, %execution_id, "execution started");
    Ok(Some(Assignment {
        execution_id,
        thread_key: thread.key(),
        harness,
        deadline_at,
        input,
        runner_seq,
        started_event_id,
        approval_policy: Some(approval_policy),
    }))
}

/// The execution `sandbox_id` already runs, when that sandbox claims again. A runner claims
/// only between turns, so a sandbox that claims runs none: the answer to its claim was lost
/// (the server stopped after committing the claim, before answering it). It gets the same
/// execution back, as it was started (no new `execution.started`), instead of the execution
/// staying `running` with no one running it until its deadline.
async fn held_by(
    state: &AppState,
    tx: &mut PgConnection,
    thread: &ThreadRow,
    sandbox_id: Uuid,
) -> ApiResult<Option<Assignment>> {
    let held: Option<Claimed> = sqlx::query_as(
        "SELECT id, harness, deadline_at, runner_seq, approval_policy FROM executions \
         WHERE thread_id = $1 AND sandbox_id = $2 AND status = 'running' FOR NO KEY UPDATE",
    )
    .bind(thread.id)
    .bind(sandbox_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Claimed {
        id: execution_id,
        harness,
        deadline_at,
        runner_seq,
        approval_policy: own_policy,
    }) = held
    else {
        return Ok(None);
    };
    let input: Vec<(Uuid, String, String, i64)> =
        sqlx::query_as("SELECT id, role, text, event_id FROM messages WHERE execution_id = $1")
            .bind(execution_id)
            .fetch_all(&mut *tx)
            .await?;
    let input = input_messages(input)?;
    let started_event_id: Option<i64> = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE thread_id = $1 AND execution_id = $2 \
         AND type = 'execution.started'",
    )
    .bind(thread.id)
    .bind(execution_id)
    .fetch_optional(&mut *tx)
    .await?;
    let approval_policy = turn_policy(state, tx, thread.id, own_policy).await?;
    Ok(Some(Assignment {
        execution_id,
        thread_key: thread.key(),
        harness: stored("executions.harness", &harness)?,
        deadline_at,
        input,
        runner_seq,
        started_event_id: started_event_id.unwrap_or_default(),
        approval_policy: Some(approval_policy),
    }))
}

/// A turn's input as stored (`id, role, text, event_id`), oldest first.
fn input_messages(
    mut rows: Vec<(Uuid, String, String, i64)>,
) -> Result<Vec<InputMessage>, UnknownStored> {
    rows.sort_by_key(|m| m.3);
    rows.into_iter()
        .map(|(message_id, role, text, _)| {
            Ok(InputMessage {
                message_id,
                role: stored("messages.role", &role)?,
                text,
            })
        })
        .collect()
}

/// The policy a claimed turn runs under: the execution's own, else the thread's (read with
/// every claim), else the default: a policy given with a later turn reaches a sandbox that runs.
pub(crate) async fn turn_policy(
    state: &AppState,
    tx: &mut PgConnection,
    thread_id: i64,
    own_policy: Option<String>,
) -> ApiResult<ApprovalPolicy> {
    Ok(match own_policy {
        Some(policy) => stored("executions.approval_policy", &policy)?,
        None => assignment::approval_policy(state, &mut *tx, thread_id).await?,
    })
}

#[derive(sqlx::FromRow)]
struct RunnerRow {
    thread_id: i64,
    thread_key: String,
    status: String,
    runner_seq: i64,
    deadline_at: DateTime<Utc>,
}

async fn runner_row(conn: &mut PgConnection, execution_id: Uuid) -> ApiResult<RunnerRow> {
    sqlx::query_as(
        "SELECT e.thread_id, t.thread_key, e.status, e.runner_seq, e.deadline_at \
         FROM executions e JOIN threads t ON t.id = e.thread_id WHERE e.id = $1",
    )
    .bind(execution_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| execution_not_found(execution_id))
}

fn execution_not_found(execution_id: Uuid) -> ApiError {
    ApiError::not_found(
        ErrorCode::ExecutionNotFound,
        format!("no execution {execution_id}"),
    )
}

/// The thread a runner-API caller is confined to: `None` for the admin (any thread), an error
/// for callers that are not runners.
fn runner_scope(principal: &Principal) -> ApiResult<Option<i64>> {
    match principal {
        Principal::Admin => Ok(None),
        Principal::Sandbox { thread_id, .. } => Ok(Some(*thread_id)),
        Principal::ApiKey { .. } | Principal::Proxy => Err(ApiError::forbidden(
            "the runner API takes a sandbox token or the admin key",
        )),
    }
}

/// `GET /runner/v1/executions/{id}`: where the server is with an execution, for a runner that
/// reconnects.
pub async fn runner_view(
    state: &AppState,
    principal: &Principal,
    execution_id: Uuid,
) -> ApiResult<RunnerExecution> {
    // Who asks comes first; for a sandbox, another thread's execution does not exist.
    let scope = runner_scope(principal)?;
    let mut conn = state.pool.acquire().await?;
    let row = runner_row(&mut conn, execution_id).await?;
    if scope.is_some_and(|thread_id| thread_id != row.thread_id) {
        return Err(execution_not_found(execution_id));
    }
    let thread_key = crate::extract::thread_key(&row.thread_key)?;
    principal.require_runner(&thread_key)?;
    Ok(RunnerExecution {
        execution_id,
        thread_key,
        status: stored("executions.status", &row.status)?,
        runner_seq: row.runner_seq,
        deadline_at: row.deadline_at,
    })
}

/// `POST /runner/v1/executions/{id}/events`: stores a batch of runner events (each `seq` once)
/// and, with `finish`, the end of the execution, in one transaction.
pub async fn post_events(
    state: &AppState,
    principal: &Principal,
    execution_id: Uuid,
    batch: EventBatch,
) -> ApiResult<BatchAccepted> {
    // Only executions of the caller's own thread are touched, not even locked otherwise.
    let scope = runner_scope(principal)?;
    validate_batch(&batch)?;
    let newest_seq = batch.events.last().map_or(0, |e| e.seq);
    if batch.finish.is_some() {
        flush_egress_audit(state, execution_id, scope).await?;
    }
    let mut tx = crate::db::begin(&state.pool).await?;
    let (thread, row) = lock_for_batch(&mut tx, principal, execution_id, newest_seq, scope).await?;
    let status: ExecutionStatus = stored("executions.status", &row.status)?;
    let received = batch.events.len();
    let fresh: Vec<RunnerEvent> = batch
        .events
        .into_iter()
        .filter(|e| e.seq > row.runner_seq)
        .collect();
    let accepted = fresh.len();
    let duplicates = received - accepted;
    let fits = check_batch_fits(execution_id, status, row.runner_seq, &fresh);
    if !matches!(fits, Ok(None)) {
        if matches!(
            status,
            ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        ) {
            // The harness may have handed these messages to the agent before the server ended
            // the turn (an interrupt, the deadline, a release): the agent saw them, so they are
            // this turn's input all the same, even when the batch's events are refused. A
            // message a later turn has taken stays with it (`take_steered` takes only waiting
            // ones).
            take_steered(&mut tx, &thread, execution_id, &batch.steered).await?;
            tx.commit().await?;
        }
        return Ok(BatchAccepted {
            accepted: 0,
            duplicates,
            runner_seq: fits?.unwrap_or(row.runner_seq),
            status,
        });
    }
    let mut new_events = Vec::with_capacity(accepted + 2);
    let runner_seq = row.runner_seq.max(fresh.last().map_or(0, |e| e.seq));
    for event in fresh {
        record_approval_request(&mut tx, &thread, execution_id, &event.body).await?;
        new_events.push(NewEvent::execution(execution_id, event.body));
    }
    // Before the finish: the turn was still running when the harness took these messages.
    take_steered(&mut tx, &thread, execution_id, &batch.steered).await?;
    let final_status = match &batch.finish {
        Some(finish) => match finish_in(&mut tx, execution_id, finish).await? {
            Some(end) => {
                new_events.extend(end);
                finished_as(finish)
            }
            None => status,
        },
        None => status,
    };
    let events = append(&mut tx, &thread, &new_events).await?;
    tx.commit().await?;
    state.hub.publish(thread.id, events);
    Ok(BatchAccepted {
        accepted,
        duplicates,
        runner_seq,
        status: final_status,
    })
}

/// Before the end of a running execution is stored: the proxy delivers its sandbox's audit
/// first, so the turn's `egress.denied` events come before its terminal event. Outside the
/// transaction, which the delivered refusals need to append to the thread.
async fn flush_egress_audit(
    state: &AppState,
    execution_id: Uuid,
    scope: Option<i64>,
) -> ApiResult<()> {
    if state.egress.is_none() {
        return Ok(());
    }
    let sandbox: Option<Option<Uuid>> = sqlx::query_scalar(
        "SELECT sandbox_id FROM executions \
         WHERE id = $1 AND status = 'running' AND ($2::int8 IS NULL OR thread_id = $2)",
    )
    .bind(execution_id)
    .bind(scope)
    .fetch_optional(&state.pool)
    .await?;
    if let Some(Some(sandbox_id)) = sandbox {
        crate::egress::audit::flush_before_end(
            state,
            sandbox_id,
            crate::egress::audit::REPORTED_END_FLUSH,
        )
        .await;
    }
    Ok(())
}

/// An end the server itself gives running executions.
enum ServerEnd {
    /// The thread's (its row id) running execution is interrupted.
    Interrupt(i64),
    /// Executions past their deadline fail.
    Deadline,
}

/// Before the server itself ends running executions: their sandboxes' audit first, briefly,
/// so the turns' refusals come before their ends.
async fn flush_before_server_end(state: &AppState, end: ServerEnd) -> ApiResult<()> {
    if state.egress.is_none() {
        return Ok(());
    }
    let sandboxes: Vec<Uuid> = match end {
        ServerEnd::Interrupt(thread_id) => {
            sqlx::query_scalar(
                "SELECT sandbox_id FROM executions \
                 WHERE thread_id = $1 AND status = 'running' AND sandbox_id IS NOT NULL",
            )
            .bind(thread_id)
            .fetch_all(&state.pool)
            .await?
        }
        ServerEnd::Deadline => {
            sqlx::query_scalar(
                "SELECT DISTINCT sandbox_id FROM executions \
                 WHERE status = 'running' AND sandbox_id IS NOT NULL AND deadline_at <= now()",
            )
            .fetch_all(&state.pool)
            .await?
        }
    };
    // At once, under one limit: many overdue turns and a proxy that hangs cost 300 ms, not
    // 300 ms each.
    futures_util::future::join_all(sandboxes.into_iter().map(|sandbox_id| {
        crate::egress::audit::flush_before_end(
            state,
            sandbox_id,
            crate::egress::audit::SERVER_END_FLUSH,
        )
    }))
    .await;
    Ok(())
}

/// The status an execution ends with.
fn finished_as(finish: &Finish) -> ExecutionStatus {
    match finish {
        Finish::Completed { .. } => ExecutionStatus::Completed,
        Finish::Failed { .. } => ExecutionStatus::Failed,
        Finish::Cancelled { .. } => ExecutionStatus::Cancelled,
    }
}

/// Locks the execution, reads where it was, and moves its seq forward to `newest_seq`, in one
/// round trip (a refused batch rolls back, undoing the move). For a sandbox, another thread's
/// execution is no execution at all: the answer must not tell it which ids exist.
async fn lock_for_batch(
    tx: &mut PgConnection,
    principal: &Principal,
    execution_id: Uuid,
    newest_seq: i64,
    scope: Option<i64>,
) -> ApiResult<(ThreadRef, RunnerRow)> {
    let row: Option<RunnerRow> = sqlx::query_as(
        "UPDATE executions e SET runner_seq = GREATEST(e.runner_seq, $2) \
         FROM (SELECT runner_seq FROM executions \
               WHERE id = $1 AND ($3::int8 IS NULL OR thread_id = $3) FOR NO KEY UPDATE) AS before, \
              threads t \
         WHERE e.id = $1 AND t.id = e.thread_id \
         RETURNING e.thread_id, t.thread_key, e.status, before.runner_seq, e.deadline_at",
    )
    .bind(execution_id)
    .bind(newest_seq)
    .bind(scope)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(execution_not_found(execution_id));
    };
    let thread = ThreadRef {
        id: row.thread_id,
        key: crate::extract::thread_key(&row.thread_key)?,
    };
    principal.require_runner(&thread.key)?;
    Ok((thread, row))
}

/// Whether the execution takes these events: it must be running, and they must follow the
/// stored ones. `Some(runner_seq)` for a retry of a batch stored before the execution ended,
/// which is answered without storing anything.
fn check_batch_fits(
    execution_id: Uuid,
    status: ExecutionStatus,
    runner_seq: i64,
    fresh: &[RunnerEvent],
) -> ApiResult<Option<i64>> {
    match status {
        ExecutionStatus::Queued => {
            return Err(ApiError::conflict(
                ErrorCode::ExecutionNotStarted,
                "claim the execution before posting its events",
            ));
        }
        ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled => {
            if fresh.is_empty() {
                return Ok(Some(runner_seq));
            }
            return Err(ApiError::conflict(
                ErrorCode::ExecutionFinished,
                format!(
                    "execution {execution_id} has already ended ({}); stop the turn",
                    status.as_str()
                ),
            ));
        }
        ExecutionStatus::Running => {}
    }
    if let Some(first) = fresh.first()
        && first.seq != runner_seq + 1
    {
        return Err(ApiError::conflict(
            ErrorCode::SeqGap,
            format!(
                "the server has events up to seq {runner_seq}; send seq {} next (got {})",
                runner_seq + 1,
                first.seq
            ),
        ));
    }
    Ok(None)
}

/// The messages the runner delivered to the running turn as steering become its input, as the
/// ones it was claimed with are: the next turn does not start with them, and an interrupt with
/// `all` does not withdraw them. Only this thread's waiting messages are taken; other ids (a
/// message of another thread, one a turn already took, a withdrawn one, an unknown id, the same
/// batch sent again) change nothing.
async fn take_steered(
    tx: &mut PgConnection,
    thread: &ThreadRef,
    execution_id: Uuid,
    steered: &[Uuid],
) -> ApiResult<()> {
    if steered.is_empty() {
        return Ok(());
    }
    let taken = sqlx::query(
        "UPDATE messages SET execution_id = $1 \
         WHERE thread_id = $2 AND id = ANY($3) AND execution_id IS NULL AND withdrawn_at IS NULL",
    )
    .bind(execution_id)
    .bind(thread.id)
    .bind(steered)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if taken < steered.len() as u64 {
        tracing::debug!(
            %execution_id,
            reported = steered.len(),
            taken,
            "steered messages already taken, withdrawn or not this thread's were left as they were"
        );
    }
    Ok(())
}

/// An `approval.requested` event also opens the approval a person decides.
async fn record_approval_request(
    tx: &mut PgConnection,
    thread: &ThreadRef,
    execution_id: Uuid,
    body: &EventBody,
) -> ApiResult<()> {
    let EventBody::ApprovalRequested {
        approval_id,
        kind,
        summary,
        ..
    } = body
    else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO approvals (id, thread_id, execution_id, kind, summary) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(approval_id)
    .bind(thread.id)
    .bind(execution_id)
    .bind(kind.as_str())
    .bind(summary)
    .execute(&mut *tx)
    .await
    .map_err(|e| match unique_violation(&e) {
        Some(_) => ApiError::conflict(
            ErrorCode::ApprovalExists,
            format!("approval {approval_id} already exists"),
        ),
        None => e.into(),
    })?;
    Ok(())
}

fn validate_batch(batch: &EventBatch) -> ApiResult<()> {
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("a batch holds at most {MAX_BATCH_EVENTS} events"),
        ));
    }
    if batch.steered.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("a batch reports at most {MAX_BATCH_EVENTS} steered messages"),
        ));
    }
    let mut previous = 0;
    for event in &batch.events {
        if event.seq <= previous {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidSeq,
                format!(
                    "event seq must start at 1 and grow within a batch (got {} after {previous})",
                    event.seq
                ),
            ));
        }
        previous = event.seq;
        if !event.body.is_runner_event() {
            return Err(ApiError::bad_request(
                ErrorCode::EventNotAllowed,
                format!("runners cannot post `{}` events", event.body.event_type()),
            ));
        }
    }
    Ok(())
}

/// Fails executions that ran past their deadline. Safe to run on every replica at once.
pub async fn fail_overdue(state: &AppState) -> ApiResult<usize> {
    flush_before_server_end(state, ServerEnd::Deadline).await?;
    let mut failed = 0;
    loop {
        let mut tx = crate::db::begin(&state.pool).await?;
        let overdue: Option<(Uuid, i64, String, i64)> = sqlx::query_as(
            "SELECT e.id, e.thread_id, t.thread_key, e.max_duration_ms FROM executions e \
             JOIN threads t ON t.id = e.thread_id \
             WHERE e.status IN ('queued', 'running') AND e.deadline_at <= now() \
             ORDER BY e.deadline_at LIMIT 1 FOR NO KEY UPDATE OF e SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((execution_id, thread_id, thread_key, max_ms)) = overdue else {
            return Ok(failed);
        };
        let error = format!("the execution ran past its max_duration_ms of {max_ms} ms");
        let new_events = finish_in(
            &mut tx,
            execution_id,
            &Finish::Failed {
                error,
                output: None,
            },
        )
        .await?
        .unwrap_or_default();
        let thread = ThreadRef {
            id: thread_id,
            key: crate::extract::thread_key(&thread_key)?,
        };
        let events = append(&mut tx, &thread, &new_events).await?;
        tx.commit().await?;
        state.hub.publish(thread_id, events);
        tracing::info!(%thread_key, %execution_id, "execution ran past its deadline");
        failed += 1;
    }
}
