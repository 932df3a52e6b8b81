//! A tool call, from the route to its answer: the arguments checked against the method's
//! schema, then, for a sandbox, the call recorded in its thread (`tool.call.started`, an
//! approval when the method needs one, `tool.call.finished` with any attachments), and the
//! method run in the tool's worker.
//!
//! A sandbox's call:
//! - Bad arguments (not an object, failing the schema) are answered `400 invalid_arguments`
//!   before anything is recorded: no `tool.call.started`. Every other call is recorded.
//! - `tool.call.started` (and, when the method needs approval, the approval and its
//!   `approval.requested`) are appended in one transaction that holds the thread's running
//!   execution (`FOR SHARE`), so the execution cannot end between the two.
//! - Approval: a method listed in `[tool.centaur] approval` asks under the thread's policies
//!   `on-request` and `always`, unless a person approved the same tool and method for the
//!   session in this sandbox (as commands are: a session is the sandbox's life); under `never`
//!   it runs without asking. The call waits for the decision on the hub (any replica's
//!   `approval.resolved`) and re-reads the approval row every 2 s. An approval belongs to a
//!   running execution: with none running, a call that would ask is refused (`409`).
//! - The call runs in a task of its own, so the record is completed even when the caller goes
//!   away: while waiting for approval, the approval is cancelled and the call finished with an
//!   error; once the method runs, its result is recorded as usual.
//! - No `tool.call.started` stays alone: the call's own end finishes it (a `tool_calls` row is
//!   marked finished in the transaction that appends `tool.call.finished`); the end of its
//!   execution ([`close_unfinished`], from `executions::finish_in`) finishes any call still
//!   open (waiting for approval, running, or cut short by a restart); and at a replica's start
//!   [`spawn_sweep`] finishes the calls a previous process of this replica (or a replica dead
//!   for good) left open, with the error "the server restarted during the call".
//! - A call's end that cannot be recorded (the database away) is tried again a few times; after
//!   that, every minute [`spawn_sweep`] finishes this process's calls that have ended without a
//!   record (a call made outside a turn has no turn's end to do it), with [`NOT_RECORDED`].

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use centaur_protocol::runner::ApprovalPolicy;
use centaur_protocol::tools::{CallContext, MethodInfo, ToolCallAnswer};
use centaur_protocol::{
    ApprovalKind, ApprovalResolution, AttachmentRef, Author, ErrorCode, EventBody,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::attachments::{self, MAX_ATTACHMENT_BYTES, NewAttachment};
use super::{ToolError, schema};
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::stored;
use crate::error::{ApiError, ApiResult};
use crate::events::{NewEvent, ThreadRef, append, append_quietly};
use crate::hub::Live;

/// A result whose JSON is longer than this is previewed in `tool.call.finished`.
pub const PREVIEW_BYTES: usize = 4096;
/// The arguments in an approval's summary are cut at this many characters.
const SUMMARY_ARGUMENTS_CHARS: usize = 120;
/// How often a call waiting for approval re-reads the approval, besides the hub's word.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// The error of a call whose execution ended while it waited for approval.
pub const ENDED_WHILE_WAITING: &str =
    "the turn ended while the call waited for approval; the method did not run";
/// The error of a call whose execution ended while the method ran.
pub const ENDED_WHILE_RUNNING: &str =
    "the turn ended before the call finished; its result is not recorded";
/// The error of a call a server restart cut short.
pub const RESTARTED: &str = "the server restarted during the call";
/// The error of a call whose end could not be recorded when it ended (the database away).
pub const NOT_RECORDED: &str = "the call ended, but its end could not be recorded then (the database was unavailable); its result is lost";
/// How often recording a call's end is tried, and the pauses between the tries.
const FINISH_RETRIES: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];
/// How often this process looks for its calls that ended without a record.
const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// This process, among the restarts of its replica: calls of the same replica under another
/// incarnation were cut short by a restart.
static INCARNATION: LazyLock<Uuid> = LazyLock::new(Uuid::new_v4);

/// The calls this process is running (from before their row is written to after their end is
/// recorded, or given up): an open row of this incarnation that is not here has ended without
/// a record.
static LIVE: LazyLock<Mutex<HashSet<Uuid>>> = LazyLock::new(Mutex::default);

/// Holds a call in [`LIVE`] while it lives (a panic included).
struct LiveCall(Uuid);

impl LiveCall {
    fn new(call_id: Uuid) -> Self {
        LIVE.lock().expect("live calls lock").insert(call_id);
        LiveCall(call_id)
    }
}

impl Drop for LiveCall {
    fn drop(&mut self) {
        if let Ok(mut live) = LIVE.lock() {
            live.remove(&self.0);
        }
    }
}

/// `POST /tools/{tool}/{method}` for `principal`.
pub async fn call(
    state: &AppState,
    principal: &Principal,
    tool: &str,
    method: &str,
    arguments: Value,
) -> ApiResult<ToolCallAnswer> {
    let started = Instant::now();
    let Value::Object(arguments) = arguments else {
        return Err(ToolError::NotAnObject.into());
    };
    let info = state.tools.method(tool, method)?;
    schema::check(&info.parameters, &arguments)?;
    let user = match principal {
        Principal::Admin => "admin".to_owned(),
        Principal::ApiKey { name, .. } => format!("api_key:{name}"),
        Principal::Sandbox {
            sandbox_id,
            thread_id,
            thread_key,
        } => {
            let call = SandboxCall {
                call_id: Uuid::now_v7(),
                thread: ThreadRef {
                    id: *thread_id,
                    key: thread_key.clone(),
                },
                sandbox_id: *sandbox_id,
                tool: tool.to_owned(),
                method: method.to_owned(),
                info,
                arguments,
                started,
            };
            return from_sandbox(state, call).await;
        }
        Principal::Proxy => {
            return Err(ApiError::forbidden(
                "the proxy token may only report audit records",
            ));
        }
    };
    let call_id = Uuid::now_v7();
    let invoked = state
        .tools
        .invoke(
            state,
            tool,
            method,
            arguments,
            CallContext {
                thread: None,
                user: Some(user),
            },
        )
        .await?;
    if !invoked.attachments.is_empty() {
        tracing::info!(tool, method, %call_id, files = invoked.attachments.len(), "a call without a thread saved files; they are dropped");
    }
    Ok(ToolCallAnswer {
        call_id,
        result: invoked.value,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The value as `tool.call.finished` shows it: itself when its JSON is at most
/// [`PREVIEW_BYTES`], else a string of its JSON's first bytes (cut on a character boundary)
/// ending in `…`.
pub fn preview(value: &Value) -> Value {
    let text = value.to_string();
    if text.len() <= PREVIEW_BYTES {
        return value.clone();
    }
    let mut end = PREVIEW_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(format!("{}…", &text[..end]))
}

/// `<tool>.<method>(<name>=<json>, …)`, the arguments cut short.
fn summary(tool: &str, method: &str, arguments: &Map<String, Value>) -> String {
    let shown = arguments
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ");
    let shown = match shown.char_indices().nth(SUMMARY_ARGUMENTS_CHARS) {
        Some((end, _)) => format!("{}…", &shown[..end]),
        None => shown,
    };
    format!("{tool}.{method}({shown})")
}

/// A call from a thread's sandbox.
struct SandboxCall {
    call_id: Uuid,
    thread: ThreadRef,
    sandbox_id: Uuid,
    tool: String,
    method: String,
    info: MethodInfo,
    arguments: Map<String, Value>,
    started: Instant,
}

/// What was recorded when the call started.
struct Opened {
    execution_id: Option<Uuid>,
    /// The approval it waits for, and the thread's last event id once it was asked.
    approval: Option<(Uuid, i64)>,
    /// The person behind the current turn.
    user: Option<String>,
}

/// How an approval ended, for the call waiting on it.
enum Verdict {
    Approved,
    Denied {
        decided_by: String,
        reason: Option<String>,
    },
    /// The execution ended first.
    Cancelled,
    /// The call stopped waiting on its own: its caller went away, or the server stops.
    Abandoned(&'static str),
}

/// How a call ends, as `tool.call.finished` records it.
struct Ending {
    result: Option<Value>,
    error: Option<String>,
    files: Vec<NewAttachment>,
    /// A pending approval to cancel with it.
    cancel_approval: Option<Uuid>,
}

impl Ending {
    fn failed(error: impl Into<String>) -> Self {
        Ending {
            result: None,
            error: Some(error.into()),
            files: Vec::new(),
            cancel_approval: None,
        }
    }
}

/// Runs the call in a task of its own, which completes its record even if the caller goes
/// away (it is told through `gone`).
async fn from_sandbox(state: &AppState, call: SandboxCall) -> ApiResult<ToolCallAnswer> {
    let gone = CancellationToken::new();
    let _gone_when_dropped = gone.clone().drop_guard();
    let state = state.clone();
    tokio::spawn(async move { call.run(&state, gone).await })
        .await
        .map_err(|e| ApiError::task_failed("the tool call", e))?
}

impl SandboxCall {
    async fn run(self, state: &AppState, gone: CancellationToken) -> ApiResult<ToolCallAnswer> {
        let _live = LiveCall::new(self.call_id);
        let opened = self.open(state).await?;
        if let Some((approval_id, known_last)) = opened.approval {
            let verdict =
                wait_for_decision(state, self.thread.id, approval_id, known_last, &gone).await;
            match verdict {
                Verdict::Approved => {}
                Verdict::Denied { decided_by, reason } => {
                    let error = ToolError::Denied { decided_by, reason };
                    self.finish(state, &opened, Ending::failed(error.to_string()))
                        .await;
                    return Err(error.into());
                }
                Verdict::Cancelled => {
                    // The execution's end has finished the call already; this is a no-op then.
                    self.finish(state, &opened, Ending::failed(ENDED_WHILE_WAITING))
                        .await;
                    return Err(ApiError::conflict(
                        ErrorCode::ApprovalExpired,
                        ENDED_WHILE_WAITING,
                    ));
                }
                Verdict::Abandoned(why) => {
                    let ending = Ending {
                        cancel_approval: Some(approval_id),
                        ..Ending::failed(why)
                    };
                    self.finish(state, &opened, ending).await;
                    return Err(ApiError::Unavailable {
                        code: ErrorCode::ToolUnavailable,
                        message: why.to_owned(),
                    });
                }
            }
        }
        let invoked = state
            .tools
            .invoke(
                state,
                &self.tool,
                &self.method,
                self.arguments.clone(),
                CallContext {
                    thread: Some(self.thread.key.to_string()),
                    user: opened.user.clone(),
                },
            )
            .await
            .and_then(
                |invoked| match attachments::too_large(&invoked.attachments) {
                    Some((name, size)) => Err(ToolError::Failed(format!(
                        "the method saved {name:?} of {size} bytes; a file saved to a thread is at \
                     most {MAX_ATTACHMENT_BYTES} bytes"
                    ))),
                    None => Ok(invoked),
                },
            );
        match invoked {
            Ok(invoked) => {
                let ending = Ending {
                    result: Some(preview(&invoked.value)),
                    error: None,
                    files: invoked.attachments,
                    cancel_approval: None,
                };
                self.finish(state, &opened, ending).await;
                Ok(ToolCallAnswer {
                    call_id: self.call_id,
                    result: invoked.value,
                    duration_ms: self.duration_ms(),
                })
            }
            Err(error) => {
                self.finish(state, &opened, Ending::failed(error.to_string()))
                    .await;
                Err(error.into())
            }
        }
    }

    fn duration_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records the start (and the approval it asks for), in one transaction that holds the
    /// running execution.
    async fn open(&self, state: &AppState) -> ApiResult<Opened> {
        let mut tx = crate::db::begin(&state.pool).await?;
        let running: Option<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT id, approval_policy FROM executions \
             WHERE thread_id = $1 AND status = 'running' FOR SHARE",
        )
        .bind(self.thread.id)
        .fetch_optional(&mut *tx)
        .await?;
        let asks = self.info.approval && {
            let policy = match &running {
                Some((_, own)) => {
                    crate::executions::turn_policy(state, &mut tx, self.thread.id, own.clone())
                        .await?
                }
                None => crate::assignment::approval_policy(state, &mut *tx, self.thread.id).await?,
            };
            match policy {
                ApprovalPolicy::Never => false,
                ApprovalPolicy::OnRequest | ApprovalPolicy::Always => {
                    !self.approved_for_session(&mut tx).await?
                }
            }
        };
        let execution_id = running.map(|(id, _)| id);
        if asks && execution_id.is_none() {
            return Err(ApiError::conflict(
                ErrorCode::ExecutionNotStarted,
                format!(
                    "{}.{} waits for a person's approval, and an approval belongs to a running \
                     turn; thread `{}` has none running, so call it during a turn",
                    self.tool, self.method, self.thread.key
                ),
            ));
        }
        let user = match execution_id {
            Some(execution_id) => person_behind(&mut tx, self.thread.id, execution_id).await?,
            None => None,
        };
        let approval_id = asks.then(Uuid::now_v7);
        sqlx::query(
            "INSERT INTO tool_calls (id, thread_id, execution_id, sandbox_id, tool, method, \
                                     approval_id, replica, incarnation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(self.call_id)
        .bind(self.thread.id)
        .bind(execution_id)
        .bind(self.sandbox_id)
        .bind(&self.tool)
        .bind(&self.method)
        .bind(approval_id)
        .bind(state.replica.as_ref())
        .bind(*INCARNATION)
        .execute(&mut *tx)
        .await?;
        let arguments = Value::Object(self.arguments.clone());
        let mut events = vec![NewEvent {
            execution_id,
            body: EventBody::ToolCallStarted {
                call_id: self.call_id.to_string(),
                tool: self.tool.clone(),
                method: self.method.clone(),
                arguments: arguments.clone(),
            },
        }];
        if let (Some(approval_id), Some(execution_id)) = (approval_id, execution_id) {
            let summary = summary(&self.tool, &self.method, &self.arguments);
            sqlx::query(
                "INSERT INTO approvals (id, thread_id, execution_id, kind, summary) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(approval_id)
            .bind(self.thread.id)
            .bind(execution_id)
            .bind(ApprovalKind::Tool.as_str())
            .bind(&summary)
            .execute(&mut *tx)
            .await?;
            events.push(NewEvent::execution(
                execution_id,
                EventBody::ApprovalRequested {
                    approval_id,
                    kind: ApprovalKind::Tool,
                    summary,
                    details: json!({
                        "tool": self.tool,
                        "method": self.method,
                        "arguments": arguments,
                    }),
                },
            ));
        }
        let stored = append(&mut tx, &self.thread, &events).await?;
        tx.commit().await?;
        let last = stored.last().map_or(0, |e| e.event_id);
        state.hub.publish(self.thread.id, stored);
        Ok(Opened {
            execution_id,
            approval: approval_id.map(|id| (id, last)),
            user,
        })
    }

    /// Whether a person approved this tool's method for the session in this sandbox.
    async fn approved_for_session(&self, conn: &mut PgConnection) -> ApiResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tool_calls c JOIN approvals a ON a.id = c.approval_id \
                            WHERE c.sandbox_id = $1 AND c.tool = $2 AND c.method = $3 \
                              AND a.status = 'approve_for_session')",
        )
        .bind(self.sandbox_id)
        .bind(&self.tool)
        .bind(&self.method)
        .fetch_one(&mut *conn)
        .await?)
    }

    /// Records the end (with its files), unless the call was finished already (by the end of
    /// its execution), trying again a few times. A failure to record is logged: the call has
    /// ended all the same, and the end of its execution or, for a call outside a turn, this
    /// process's sweep of calls ended without a record ([`spawn_sweep`]) records it.
    async fn finish(&self, state: &AppState, opened: &Opened, ending: Ending) {
        let mut ending = ending;
        for pause in FINISH_RETRIES {
            let attempt = Ending {
                result: ending.result.clone(),
                error: ending.error.clone(),
                files: std::mem::take(&mut ending.files),
                cancel_approval: ending.cancel_approval,
            };
            let files = copy_files(&attempt.files);
            match self.try_finish(state, opened, attempt).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(call_id = %self.call_id, %error, "recording the end of a tool call failed; trying again");
                    ending.files = files;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = state.shutdown.cancelled() => break,
            }
        }
        if let Err(error) = self.try_finish(state, opened, ending).await {
            tracing::warn!(call_id = %self.call_id, tool = %self.tool, method = %self.method, %error,
                "could not record the end of a tool call; the end of its turn, or the sweep of calls ended without a record, will");
        }
    }

    async fn try_finish(&self, state: &AppState, opened: &Opened, ending: Ending) -> ApiResult<()> {
        let mut tx = crate::db::begin(&state.pool).await?;
        let mut events = Vec::with_capacity(2);
        if let Some(approval_id) = ending.cancel_approval {
            events.extend(cancel_approval(&mut tx, approval_id).await?);
        }
        let open: Option<Uuid> = sqlx::query_scalar(
            "UPDATE tool_calls SET finished_at = now() \
             WHERE id = $1 AND finished_at IS NULL RETURNING id",
        )
        .bind(self.call_id)
        .fetch_optional(&mut *tx)
        .await?;
        if open.is_none() {
            drop(tx);
            if !ending.files.is_empty() {
                tracing::info!(call_id = %self.call_id, tool = %self.tool, files = ending.files.len(),
                    "the call's turn ended before it did; the files it saved are dropped");
            }
            return Ok(());
        }
        let files = attachments::store(
            &mut tx,
            self.thread.id,
            self.call_id,
            &self.tool,
            ending.files,
        )
        .await?;
        events.push(NewEvent {
            execution_id: opened.execution_id,
            body: finished(
                self.call_id,
                &self.tool,
                &self.method,
                ending.result,
                ending.error,
                self.duration_ms(),
                files,
            ),
        });
        let stored = append(&mut tx, &self.thread, &events).await?;
        tx.commit().await?;
        state.hub.publish(self.thread.id, stored);
        Ok(())
    }
}

/// The files of an end, for another try at recording it.
fn copy_files(files: &[NewAttachment]) -> Vec<NewAttachment> {
    files
        .iter()
        .map(|file| NewAttachment {
            name: file.name.clone(),
            mime: file.mime.clone(),
            bytes: file.bytes.clone(),
        })
        .collect()
}

fn finished(
    call_id: Uuid,
    tool: &str,
    method: &str,
    result: Option<Value>,
    error: Option<String>,
    duration_ms: u64,
    attachments: Vec<AttachmentRef>,
) -> EventBody {
    EventBody::ToolCallFinished {
        call_id: call_id.to_string(),
        tool: tool.to_owned(),
        method: method.to_owned(),
        result,
        error,
        duration_ms: Some(duration_ms),
        attachments,
    }
}

/// Cancels a pending approval (`approval.resolved` `cancelled` by `system`); nothing if it was
/// decided meanwhile.
async fn cancel_approval(conn: &mut PgConnection, approval_id: Uuid) -> ApiResult<Vec<NewEvent>> {
    let execution_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE approvals SET status = 'cancelled', decided_by = 'system', decided_at = now() \
         WHERE id = $1 AND status = 'pending' RETURNING execution_id",
    )
    .bind(approval_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(execution_id
        .map(|execution_id| {
            NewEvent::execution(
                execution_id,
                EventBody::ApprovalResolved {
                    approval_id,
                    decision: ApprovalResolution::Cancelled,
                    decided_by: "system".into(),
                },
            )
        })
        .into_iter()
        .collect())
}

/// The person behind the execution's turn: the author of its first input message that has one
/// (`slack:U1 (Ann)`). Who queued a turn through the API is not recorded, so otherwise none.
async fn person_behind(
    conn: &mut PgConnection,
    thread_id: i64,
    execution_id: Uuid,
) -> ApiResult<Option<String>> {
    let author: Option<String> = sqlx::query_scalar(
        "SELECT (ev.data -> 'author')::text FROM messages m \
         JOIN events ev ON ev.thread_id = m.thread_id AND ev.event_id = m.event_id \
         WHERE m.thread_id = $1 AND m.execution_id = $2 AND ev.data -> 'author' IS NOT NULL \
         ORDER BY m.event_id LIMIT 1",
    )
    .bind(thread_id)
    .bind(execution_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(author
        .and_then(|text| serde_json::from_str::<Author>(&text).ok())
        .map(|author| author.decided_by()))
}

/// Waits for the approval's decision: woken by the thread's `approval.resolved` events on the
/// hub (from any replica), and re-reading the row every [`RECHECK_EVERY`] in case a word is
/// lost. A database error is retried at the next check.
async fn wait_for_decision(
    state: &AppState,
    thread_id: i64,
    approval_id: Uuid,
    known_last: i64,
    gone: &CancellationToken,
) -> Verdict {
    let mut subscription = state.hub.subscribe(thread_id, known_last);
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = recheck.tick() => {}
            live = subscription.rx.recv() => match live {
                Live::Batch(batch)
                    if !batch.iter().any(|e| &*e.event_type == "approval.resolved") => continue,
                Live::Batch(_) | Live::Lagged => {}
            },
            _ = gone.cancelled() => {
                return Verdict::Abandoned("the caller went away while the call waited for approval");
            }
            _ = state.shutdown.cancelled() => {
                return Verdict::Abandoned("the server stopped while the call waited for approval; call again");
            }
        }
        match read_verdict(state, approval_id).await {
            Ok(Some(verdict)) => return verdict,
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%approval_id, %error, "reading a tool call's approval failed; will retry");
            }
        }
    }
}

/// `approvals.status`: waiting for a decision, or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApprovalState {
    Pending,
    Resolved(ApprovalResolution),
}

impl FromStr for ApprovalState {
    type Err = <ApprovalResolution as FromStr>::Err;

    fn from_str(status: &str) -> Result<Self, Self::Err> {
        match status {
            "pending" => Ok(ApprovalState::Pending),
            resolved => resolved.parse().map(ApprovalState::Resolved),
        }
    }
}

async fn read_verdict(state: &AppState, approval_id: Uuid) -> ApiResult<Option<Verdict>> {
    let (status, decided_by, reason): (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT status, decided_by, reason FROM approvals WHERE id = $1")
            .bind(approval_id)
            .fetch_one(&state.pool)
            .await?;
    let resolution = match stored::<ApprovalState>("approvals.status", &status)? {
        ApprovalState::Pending => return Ok(None),
        ApprovalState::Resolved(resolution) => resolution,
    };
    Ok(Some(match resolution {
        ApprovalResolution::Approve | ApprovalResolution::ApproveForSession => Verdict::Approved,
        ApprovalResolution::Deny => Verdict::Denied {
            decided_by: decided_by.unwrap_or_else(|| "someone".into()),
            reason,
        },
        ApprovalResolution::Cancelled => Verdict::Cancelled,
    }))
}

/// A call still open when its execution ends: id, tool, method, approval, start.
type OpenCall = (Uuid, String, String, Option<Uuid>, DateTime<Utc>);

/// For `executions::finish_in`, ending `execution_id`: finishes its calls still open, in the
/// same transaction (their events come before the terminal one). `cancelled` are the approvals
/// the end cancelled: a call waiting for one of them did not run.
pub async fn close_unfinished(
    conn: &mut PgConnection,
    execution_id: Uuid,
    cancelled: &[Uuid],
) -> sqlx::Result<Vec<NewEvent>> {
    let open: Vec<OpenCall> = sqlx::query_as(
        "UPDATE tool_calls SET finished_at = now() \
         WHERE execution_id = $1 AND finished_at IS NULL \
         RETURNING id, tool, method, approval_id, started_at",
    )
    .bind(execution_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(open
        .into_iter()
        .map(|(call_id, tool, method, approval_id, started_at)| {
            let error = match approval_id {
                Some(id) if cancelled.contains(&id) => ENDED_WHILE_WAITING,
                Some(_) | None => ENDED_WHILE_RUNNING,
            };
            NewEvent::execution(
                execution_id,
                finished(
                    call_id,
                    &tool,
                    &method,
                    None,
                    Some(error.into()),
                    since(started_at),
                    Vec::new(),
                ),
            )
        })
        .collect())
}

fn since(started_at: DateTime<Utc>) -> u64 {
    (Utc::now() - started_at).num_milliseconds().max(0) as u64
}

/// At this replica's start (once the database is migrated): finishes the calls a previous
/// process of this replica left open, and those of replicas dead for good, with
/// [`RESTARTED`]; their pending approvals are cancelled. Then, every minute until the server
/// stops, finishes this process's calls that ended without a record, with [`NOT_RECORDED`].
pub fn spawn_sweep(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        sweep_at_start(&state).await;
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(ORPHAN_SWEEP_EVERY) => {}
            }
            match sweep_ended(&state).await {
                Ok(0) => {}
                Ok(closed) => {
                    tracing::info!(
                        closed,
                        "tool calls that ended without a record were finished"
                    );
                }
                Err(error) => {
                    tracing::debug!(%error, "finishing tool calls that ended without a record failed; will retry");
                }
            }
        }
    });
}

async fn sweep_at_start(state: &AppState) {
    let mut attempts = 0;
    loop {
        if state.readiness.is_migrated() {
            match sweep(state).await {
                Ok(0) => return,
                Ok(closed) => {
                    tracing::info!(closed, "tool calls a restart cut short were finished");
                    return;
                }
                Err(error) => {
                    attempts += 1;
                    tracing::debug!(%error, attempts, "finishing tool calls cut short failed; will retry");
                }
            }
        }
        if attempts >= 20 {
            tracing::warn!("gave up finishing tool calls cut short; their turns' ends will");
            return;
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(if attempts == 0 { 100 } else { 3000 })) => {}
        }
    }
}

/// A call [`sweep`] finishes.
type CutShort = (
    Uuid,
    i64,
    String,
    Option<Uuid>,
    String,
    String,
    Option<Uuid>,
    DateTime<Utc>,
);

async fn sweep(state: &AppState) -> ApiResult<usize> {
    let dead_after = state.config.replica_dead_after_secs as f64;
    let calls: Vec<CutShort> = sqlx::query_as(
        "SELECT c.id, c.thread_id, t.thread_key, c.execution_id, c.tool, c.method, \
                c.approval_id, c.started_at \
         FROM tool_calls c JOIN threads t ON t.id = c.thread_id \
         WHERE c.finished_at IS NULL \
           AND ((c.replica = $1 AND c.incarnation <> $2) \
                OR (c.replica <> $1 AND c.started_at < now() - make_interval(secs => $3) \
                    AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = c.replica \
                                    AND r.seen_at > now() - make_interval(secs => $3))))",
    )
    .bind(state.replica.as_ref())
    .bind(*INCARNATION)
    .bind(dead_after)
    .fetch_all(&state.pool)
    .await?;
    close(state, calls, RESTARTED).await
}

/// Finishes this process's calls that are open but no longer running: their end could not be
/// recorded when they ended.
async fn sweep_ended(state: &AppState) -> ApiResult<usize> {
    let open: Vec<CutShort> = sqlx::query_as(
        "SELECT c.id, c.thread_id, t.thread_key, c.execution_id, c.tool, c.method, \
                c.approval_id, c.started_at \
         FROM tool_calls c JOIN threads t ON t.id = c.thread_id \
         WHERE c.finished_at IS NULL AND c.replica = $1 AND c.incarnation = $2",
    )
    .bind(state.replica.as_ref())
    .bind(*INCARNATION)
    .fetch_all(&state.pool)
    .await?;
    // Read after the rows: a call is live from before its row is written, so a row read is
    // either of a live call or of one that has ended.
    let ended = {
        let live = LIVE.lock().expect("live calls lock");
        open.into_iter()
            .filter(|call| !live.contains(&call.0))
            .collect::<Vec<_>>()
    };
    close(state, ended, NOT_RECORDED).await
}

/// Finishes `calls` with `error` (cancelling their pending approvals), each in a transaction of
/// its own; one already finished meanwhile is left as it is.
async fn close(state: &AppState, calls: Vec<CutShort>, error: &str) -> ApiResult<usize> {
    let mut closed = 0;
    for (call_id, thread_id, thread_key, execution_id, tool, method, approval_id, started_at) in
        calls
    {
        let thread = ThreadRef {
            id: thread_id,
            key: crate::extract::thread_key(&thread_key)?,
        };
        let mut tx = crate::db::begin(&state.pool).await?;
        let mut events = match approval_id {
            Some(approval_id) => cancel_approval(&mut tx, approval_id).await?,
            None => Vec::new(),
        };
        let open: Option<Uuid> = sqlx::query_scalar(
            "UPDATE tool_calls SET finished_at = now() \
             WHERE id = $1 AND finished_at IS NULL RETURNING id",
        )
        .bind(call_id)
        .fetch_optional(&mut *tx)
        .await?;
        if open.is_none() {
            continue;
        }
        events.push(NewEvent {
            execution_id,
            body: finished(
                call_id,
                &tool,
                &method,
                None,
                Some(error.into()),
                since(started_at),
                Vec::new(),
            ),
        });
        let stored = append_quietly(&mut tx, &thread, &events).await?;
        tx.commit().await?;
        state.hub.publish(thread_id, stored);
        closed += 1;
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_results_are_kept_and_large_ones_previewed() {
        let small = json!({"ok": true, "items": [1, 2, 3]});
        assert_eq!(preview(&small), small);
        let large = json!({"text": "é".repeat(5000)});
        let Value::String(shown) = preview(&large) else {
            panic!("a large result is previewed as a string");
        };
        assert!(shown.ends_with('…'));
        assert!(shown.len() <= PREVIEW_BYTES + '…'.len_utf8());
        assert!(large.to_string().starts_with(shown.trim_end_matches('…')));
    }

    #[test]
    fn approval_states_are_read_as_an_enum() {
        assert_eq!("pending".parse().ok(), Some(ApprovalState::Pending));
        for resolution in ApprovalResolution::ALL {
            assert_eq!(
                resolution.as_str().parse().ok(),
                Some(ApprovalState::Resolved(resolution))
            );
        }
        assert!("maybe".parse::<ApprovalState>().is_err());
    }

    #[test]
    fn a_call_is_live_until_its_guard_goes() {
        let id = Uuid::now_v7();
        let guard = LiveCall::new(id);
        assert!(LIVE.lock().unwrap().contains(&id));
        drop(guard);
        assert!(!LIVE.lock().unwrap().contains(&id));
    }

    #[test]
    fn summaries_name_the_call_and_cut_long_arguments() {
        let arguments = json!({"channel": "C1", "text": "hello"});
        assert_eq!(
            summary("slack", "post_message", arguments.as_object().unwrap()),
            r#"slack.post_message(channel="C1", text="hello")"#
        );
        let long = json!({"text": "x".repeat(500)});
        let shown = summary("slack", "post_message", long.as_object().unwrap());
        assert!(shown.ends_with("…)"));
        assert!(shown.chars().count() < 160);
    }
}
