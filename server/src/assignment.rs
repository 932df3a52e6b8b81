//! Sandbox assignment: how a thread gets a sandbox and gives it back, in one place.
//!
//! A spawn (`POST /agent/spawn`, or an execute that needs a sandbox) reuses the thread's live
//! sandbox, or assigns a new one in these stages:
//!
//! 1. **claim or start**: a ready sandbox from the warm pool when the thread never had one
//!    (`claim_warm`), else a new one (`start_cold`);
//! 2. **attach egress**: the thread's egress policy is recorded and pushed to the proxy
//!    ([`egress::policy::attach`]) before the runner gets the thread;
//! 3. **hand over**: the backend hands the warm sandbox its thread
//!    ([`SandboxBackend::attach`](crate::sandbox::SandboxBackend::attach)), or creates the cold
//!    one with it and waits until it is [ready](crate::sandbox::SandboxBackend::ready);
//! 4. **record**: the sandbox row, the spawn id, the thread's approval policy (for a spawn that
//!    stores one, see [`PolicyKeeper`]) and `sandbox.assigned`, in one transaction (`record`);
//! 5. **discard** on any failure after 2: the sandbox is stopped and leaves the proxy
//!    (`discard`).
//!
//! [`release`] gives a thread's sandbox back (stopped, detached from the proxy); the warm pool
//! starts its sandboxes through [`start_warm`] and the reaper stops unowned ones through
//! [`stop_unowned`]; [`abandon_new_thread`] takes back what a refused request started.

use std::time::Duration;

use centaur_protocol::api::{ReleaseResponse, SandboxState, SpawnRequest, SpawnResponse};
use centaur_protocol::runner::{ApprovalPolicy, Attachment, Finish};
use centaur_protocol::{ErrorCode, EventBody, Harness, ReadySource, ThreadKey};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::mint_sandbox_token;
use crate::db::stored;
use crate::egress::{self, EgressError};
use crate::error::{ApiError, ApiResult, unique_violation};
use crate::events::{NewEvent, append, append_quietly};
use crate::executions::finish_in;
use crate::sandbox::{SandboxError, SandboxSpec};
use crate::threads::{self, ThreadRow};

const MAX_SPAWN_ID_BYTES: usize = 200;
const MAX_PERSONA_BYTES: usize = 4096;

/// How long a refused request keeps trying to take back the thread it created while the
/// database is away.
const ABANDON_RETRY_FOR: Duration = Duration::from_secs(600);

/// `POST /agent/spawn`: the thread's live sandbox, or a new one from the warm pool or cold.
pub async fn spawn(state: &AppState, request: &SpawnRequest) -> ApiResult<SpawnResponse> {
    validate_spawn(request)?;
    if let Some(spawn_id) = &request.spawn_id
        && let Some(answer) = previous_spawn(state, spawn_id, &request.thread_key).await?
    {
        return Ok(answer);
    }
    // A harness that cannot run is refused before the thread is created; for a thread that
    // exists, only when a new sandbox would start for it (`spawn_on`).
    if threads::find_optional(state, &request.thread_key)
        .await?
        .is_none()
    {
        crate::harnesses::require(
            state,
            request.harness.unwrap_or(state.config.default_harness),
        )?;
    }
    let (thread, created) = threads::ensure(
        state,
        &request.thread_key,
        request.harness,
        request.persona.as_deref(),
    )
    .await?;
    let mut started = Vec::new();
    let answer = spawn_on(state, request, &thread, &mut started, PolicyKeeper::Spawn).await;
    if answer.is_err() && created {
        abandon_new_thread(state, &thread, &started).await;
    }
    answer
}

fn validate_spawn(request: &SpawnRequest) -> ApiResult<()> {
    if let Some(spawn_id) = &request.spawn_id
        && (spawn_id.is_empty() || spawn_id.len() > MAX_SPAWN_ID_BYTES)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("spawn_id must be 1 to {MAX_SPAWN_ID_BYTES} bytes"),
        ));
    }
    if request
        .persona
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PERSONA_BYTES)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("persona must be at most {MAX_PERSONA_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Who stores a request's approval policy on the thread, so that it changes only when the
/// request is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKeeper {
    /// The spawn itself, once it succeeded (`POST /agent/spawn`): with the new sandbox's
    /// record, or right after reusing the live one.
    Spawn,
    /// The caller, with what it records: an execute stores it with its execution.
    Caller,
}

/// Gives `thread` a sandbox: its live one, or a new one. `started` gets the id of every sandbox
/// this call started, recorded or not, so a caller that is refused later can take them back.
///
/// A new sandbox starts under the request's approval policy (else the thread's); the thread
/// keeps the request's policy only once the spawn succeeded, and only if `keeper` says the
/// spawn stores it.
pub async fn spawn_on(
    state: &AppState,
    request: &SpawnRequest,
    thread: &ThreadRow,
    started: &mut Vec<Uuid>,
    keeper: PolicyKeeper,
) -> ApiResult<SpawnResponse> {
    let to_store = match keeper {
        PolicyKeeper::Spawn => request.approval_policy,
        PolicyKeeper::Caller => None,
    };
    let placed = place(state, request, thread, started, to_store).await?;
    if let Some(policy) = to_store
        && !placed.policy_stored
    {
        store_policy(&state.pool, thread.id, policy).await?;
    }
    Ok(placed.answer)
}

/// Stores `policy` as the thread's: what its later turns run under when they name none.
pub async fn store_policy<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    thread_id: i64,
    policy: ApprovalPolicy,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE threads SET approval_policy = $2 WHERE id = $1")
        .bind(thread_id)
        .bind(policy.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// What [`place`] did.
struct Placed {
    answer: SpawnResponse,
    /// Whether the policy to store was stored with the new sandbox's record.
    policy_stored: bool,
}

/// [`spawn_on`]'s work: the live sandbox, or a new one (recorded with `to_store` as the
/// thread's policy).
async fn place(
    state: &AppState,
    request: &SpawnRequest,
    thread: &ThreadRow,
    started: &mut Vec<Uuid>,
    to_store: Option<ApprovalPolicy>,
) -> ApiResult<Placed> {
    // Two spawns can race for the same thread; the database lets one sandbox win.
    for _ in 0..3 {
        if let Some(live) = live_sandbox(state, thread.id).await? {
            return Ok(Placed {
                answer: reuse(state, request, thread, live).await?,
                policy_stored: false,
            });
        }
        let harness = match request.harness {
            Some(harness) => harness,
            None => thread.harness()?,
        };
        // A live sandbox is reused whatever its harness needs; a new one must be able to run it.
        crate::harnesses::require(state, harness)?;
        let policy = match request.approval_policy {
            Some(policy) => policy,
            None => approval_policy(state, &state.pool, thread.id).await?,
        };
        // Started in a task of its own: a client that goes away mid-spawn must not leave a
        // sandbox (or a claimed warm one) that nobody records or stops.
        let assigning = {
            let (state, thread) = (state.clone(), thread.clone());
            let new = NewSandbox {
                harness,
                spawn_id: request.spawn_id.clone(),
                policy,
                to_store,
            };
            tokio::spawn(async move { assign_new(&state, &thread, &new).await })
        };
        let (sandbox_id, outcome) = assigning
            .await
            .map_err(|e| ApiError::task_failed("starting a sandbox", e))?;
        started.extend(sandbox_id);
        if let Some(placed) = outcome? {
            return Ok(placed);
        }
    }
    Err(ApiError::conflict(
        ErrorCode::SpawnContended,
        "the thread's sandbox kept changing while spawning; retry",
    ))
}

/// What a new sandbox for a thread is started and recorded with.
struct NewSandbox {
    harness: Harness,
    spawn_id: Option<String>,
    /// The approval policy its runner is attached under.
    policy: ApprovalPolicy,
    /// The policy stored as the thread's with its record, if the spawn stores one.
    to_store: Option<ApprovalPolicy>,
}

#[derive(sqlx::FromRow)]
struct LiveSandbox {
    id: Uuid,
    harness: String,
}

async fn live_sandbox(state: &AppState, thread_id: i64) -> ApiResult<Option<LiveSandbox>> {
    Ok(sqlx::query_as(
        "SELECT id, harness FROM sandboxes WHERE thread_id = $1 AND state <> 'released'",
    )
    .bind(thread_id)
    .fetch_optional(&state.pool)
    .await?)
}

/// The answer for a thread whose sandbox is live: that sandbox, if it runs the harness asked for.
async fn reuse(
    state: &AppState,
    request: &SpawnRequest,
    thread: &ThreadRow,
    live: LiveSandbox,
) -> ApiResult<SpawnResponse> {
    let harness: Harness = stored("sandboxes.harness", &live.harness)?;
    if let Some(wanted) = request.harness
        && wanted != harness
    {
        return Err(ApiError::conflict(
            ErrorCode::HarnessConflict,
            format!(
                "thread `{}` runs `{harness}`; release it before switching to `{wanted}`",
                request.thread_key
            ),
        ));
    }
    if let Some(spawn_id) = &request.spawn_id {
        sqlx::query(
            "INSERT INTO spawn_requests (spawn_id, thread_id, sandbox_id, ready_source) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(spawn_id)
        .bind(thread.id)
        .bind(live.id)
        .bind(ReadySource::Reused.as_str())
        .execute(&state.pool)
        .await?;
    }
    Ok(SpawnResponse {
        thread_key: request.thread_key.clone(),
        sandbox_id: live.id,
        harness,
        ready_source: ReadySource::Reused,
    })
}

/// The first answer given for `spawn_id`, if it was used before (for this thread; for another
/// it is a conflict).
async fn previous_spawn(
    state: &AppState,
    spawn_id: &str,
    thread_key: &ThreadKey,
) -> ApiResult<Option<SpawnResponse>> {
    let row: Option<(String, Uuid, String, String)> = sqlx::query_as(
        "SELECT t.thread_key, s.sandbox_id, b.harness, s.ready_source FROM spawn_requests s \
         JOIN threads t ON t.id = s.thread_id JOIN sandboxes b ON b.id = s.sandbox_id \
         WHERE s.spawn_id = $1",
    )
    .bind(spawn_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((key, sandbox_id, harness, ready_source)) = row else {
        return Ok(None);
    };
    if key != thread_key.as_str() {
        return Err(ApiError::conflict(
            ErrorCode::IdempotencyConflict,
            format!("spawn_id `{spawn_id}` was already used for another thread"),
        ));
    }
    Ok(Some(SpawnResponse {
        thread_key: thread_key.clone(),
        sandbox_id,
        harness: stored("sandboxes.harness", &harness)?,
        ready_source: stored("spawn_requests.ready_source", &ready_source)?,
    }))
}

/// A sandbox this request got ready for the thread, not recorded yet.
struct Prepared {
    sandbox_id: Uuid,
    /// The hash of the runner's token, for the sandbox row.
    token_hash: Vec<u8>,
    ready_source: ReadySource,
}

/// Stages 1 to 5 for a thread without a live sandbox: the id of the sandbox it started, if it
/// got that far, and what was placed (`None` when another spawn won the race for the thread).
async fn assign_new(
    state: &AppState,
    thread: &ThreadRow,
    new: &NewSandbox,
) -> (Option<Uuid>, ApiResult<Option<Placed>>) {
    let prepared = match claim_warm(state, thread, new.harness, new.policy).await {
        Ok(Some(warm)) => warm,
        Ok(None) => match start_cold(state, thread, new.harness, new.policy).await {
            Ok(cold) => cold,
            Err(error) => return (None, Err(error)),
        },
        Err(error) => return (None, Err(error)),
    };
    let sandbox_id = prepared.sandbox_id;
    let outcome = record_or_discard(state, thread, new, prepared).await;
    (Some(sandbox_id), outcome)
}

/// Stage 1, warm: a sandbox from the pool, handed this thread, when the pool has one and the
/// thread never had a sandbox (a warm sandbox cannot mount an existing workspace). A sandbox
/// that cannot take the thread is discarded, and `None` says to start one cold.
async fn claim_warm(
    state: &AppState,
    thread: &ThreadRow,
    harness: Harness,
    policy: ApprovalPolicy,
) -> ApiResult<Option<Prepared>> {
    let Some(pool) = &state.warm else {
        return Ok(None);
    };
    let had_sandbox: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sandboxes WHERE thread_id = $1)")
            .bind(thread.id)
            .fetch_one(&state.pool)
            .await?;
    if had_sandbox {
        return Ok(None);
    }
    let Some(sandbox_id) = pool.take(harness) else {
        return Ok(None);
    };
    let give_up = |reason: String| async move {
        tracing::warn!(%sandbox_id, %reason, "could not claim a warm sandbox; starting one cold");
        discard(state, sandbox_id, "claim failed").await;
        pool.claimed(sandbox_id);
    };
    // Stage 2: the thread's policy replaces the empty one, atomically, before the runner gets
    // going.
    let egress = match egress::policy::attach(state, sandbox_id, thread).await {
        Ok(egress) => egress,
        Err(error) => {
            give_up(error.to_string()).await;
            return Err(error.into());
        }
    };
    let token = mint_sandbox_token(sandbox_id);
    let attachment = attachment(
        state,
        sandbox_id,
        thread,
        harness,
        token.token,
        egress.as_ref(),
        policy,
    );
    // Stage 3.
    match state.backend.attach(sandbox_id, &attachment).await {
        Ok(()) => Ok(Some(Prepared {
            sandbox_id,
            token_hash: token.secret_hash,
            ready_source: ReadySource::WarmPool,
        })),
        Err(error) => {
            give_up(error.to_string()).await;
            Ok(None)
        }
    }
}

/// Stage 1, cold: a new sandbox created with the thread, once it is ready.
async fn start_cold(
    state: &AppState,
    thread: &ThreadRow,
    harness: Harness,
    policy: ApprovalPolicy,
) -> ApiResult<Prepared> {
    let sandbox_id = Uuid::now_v7();
    let token = mint_sandbox_token(sandbox_id);
    // Stage 2: the proxy serves the sandbox before it starts.
    let egress = egress::policy::attach(state, sandbox_id, thread).await?;
    let spec = SandboxSpec {
        sandbox_id,
        harness,
        server_url: state.config.public_url(),
        attachment: Some(attachment(
            state,
            sandbox_id,
            thread,
            harness,
            token.token,
            egress.as_ref(),
            policy,
        )),
        egress,
    };
    // Stage 3.
    if let Err(error) = create_ready(state, &spec).await {
        // The backend stops a sandbox that did not come up; the proxy forgets it here.
        egress::policy::detach(state, sandbox_id).await;
        return Err(error.into());
    }
    Ok(Prepared {
        sandbox_id,
        token_hash: token.secret_hash,
        ready_source: ReadySource::Cold,
    })
}

/// Creates the sandbox and waits until its runner serves.
async fn create_ready(state: &AppState, spec: &SandboxSpec) -> Result<(), SandboxError> {
    state.backend.create(spec).await?;
    state.backend.ready(spec.sandbox_id).await
}

/// The thread's approval policy, or the deployment's default: what a new sandbox starts with
/// (when its request names none) and what an execution queued without one runs under (see
/// [`Assignment`](centaur_protocol::runner::Assignment)).
pub async fn approval_policy<'c>(
    state: &AppState,
    conn: impl sqlx::PgExecutor<'c>,
    thread_id: i64,
) -> ApiResult<ApprovalPolicy> {
    let own: Option<String> =
        sqlx::query_scalar("SELECT approval_policy FROM threads WHERE id = $1")
            .bind(thread_id)
            .fetch_one(conn)
            .await?;
    Ok(match own {
        Some(policy) => stored("threads.approval_policy", &policy)?,
        None => state.config.approval_policy,
    })
}

/// What the runner of a sandbox for `thread` gets.
fn attachment(
    state: &AppState,
    sandbox_id: Uuid,
    thread: &ThreadRow,
    harness: Harness,
    token: String,
    egress: Option<&egress::SandboxEgress>,
    approval_policy: ApprovalPolicy,
) -> Attachment {
    let mut env: std::collections::BTreeMap<String, String> =
        state.config.harness_env.iter().cloned().collect();
    // Read now: a new setting (Claude Code's base URL) reaches the next sandbox.
    if let Some(file) = &state.harness_env_file {
        env.extend(file.current().iter().cloned());
    }
    // Placeholders win over settings of the same name.
    env.extend(egress.map(|e| e.placeholders.clone()).unwrap_or_default());
    if harness == Harness::Codex
        && let Some(config) = &state.codex_config
    {
        // Read now, not at start-up: a new endpoint or model reaches the next sandbox.
        env.insert(
            "CENTAUR_CODEX_CONFIG_TOML".into(),
            config.current().to_string(),
        );
    }
    Attachment {
        sandbox_id,
        thread_key: thread.key(),
        harness,
        token,
        env,
        approval_policy,
    }
}

/// Stages 4 and 5: records the prepared sandbox for the thread, or discards it if it cannot be
/// assigned (another spawn won, or the database refused).
async fn record_or_discard(
    state: &AppState,
    thread: &ThreadRow,
    new: &NewSandbox,
    prepared: Prepared,
) -> ApiResult<Option<Placed>> {
    let sandbox_id = prepared.sandbox_id;
    let ready_source = prepared.ready_source;
    let recorded = record(state, thread, new, &prepared).await;
    if let Some(pool) = &state.warm {
        pool.claimed(sandbox_id);
    }
    if !matches!(recorded, Ok(Recorded::Assigned(_))) {
        // Lost a race, or could not record it: do not leak the sandbox.
        discard(state, sandbox_id, "not assigned").await;
    }
    match recorded? {
        Recorded::Assigned(answer) => {
            tracing::info!(thread_key = %thread.thread_key, %sandbox_id, ready_source = ready_source.as_str(), "sandbox assigned");
            Ok(Some(Placed {
                answer,
                policy_stored: true,
            }))
        }
        Recorded::LostRace => Ok(None),
        Recorded::SpawnIdTaken(spawn_id) => previous_spawn(state, &spawn_id, &thread.key())
            .await?
            .map(|answer| {
                Some(Placed {
                    answer,
                    policy_stored: false,
                })
            })
            .ok_or_else(|| ApiError::conflict(ErrorCode::SpawnContended, "retry the spawn")),
    }
}

enum Recorded {
    Assigned(SpawnResponse),
    /// Another spawn recorded a live sandbox for the thread first.
    LostRace,
    /// A concurrent spawn with the same spawn id came first; its answer is this one's.
    SpawnIdTaken(String),
}

/// Stage 4: the sandbox row, the spawn id, the thread's approval policy (when the spawn stores
/// one) and `sandbox.assigned`, in one transaction.
async fn record(
    state: &AppState,
    thread: &ThreadRow,
    new: &NewSandbox,
    prepared: &Prepared,
) -> ApiResult<Recorded> {
    let (harness, spawn_id) = (new.harness, new.spawn_id.as_deref());
    let Prepared {
        sandbox_id,
        ref token_hash,
        ready_source,
    } = *prepared;
    let mut tx = crate::db::begin(&state.pool).await?;
    let inserted = sqlx::query(
        "INSERT INTO sandboxes (id, thread_id, backend, harness, state, ready_source, token_hash, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(sandbox_id)
    .bind(thread.id)
    .bind(state.backend.kind().as_str())
    .bind(harness.as_str())
    .bind(SandboxState::Ready.as_str())
    .bind(ready_source.as_str())
    .bind(token_hash)
    .bind(state.replica.as_ref())
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(e) if unique_violation(&e).as_deref() == Some("sandboxes_one_live_per_thread") => {
            return Ok(Recorded::LostRace);
        }
        other => {
            other?;
        }
    }
    if harness != thread.harness()? {
        sqlx::query("UPDATE threads SET harness = $2 WHERE id = $1")
            .bind(thread.id)
            .bind(harness.as_str())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(policy) = new.to_store {
        store_policy(&mut *tx, thread.id, policy).await?;
    }
    if let Some(spawn_id) = spawn_id {
        let inserted = sqlx::query(
            "INSERT INTO spawn_requests (spawn_id, thread_id, sandbox_id, ready_source) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(spawn_id)
        .bind(thread.id)
        .bind(sandbox_id)
        .bind(ready_source.as_str())
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if unique_violation(&e).is_some() => {
                return Ok(Recorded::SpawnIdTaken(spawn_id.to_owned()));
            }
            other => {
                other?;
            }
        }
    }
    let events = append(
        &mut tx,
        &thread.as_ref(),
        &[NewEvent::thread(EventBody::SandboxAssigned {
            sandbox_id,
            ready_source,
        })],
    )
    .await?;
    tx.commit().await?;
    state.hub.publish(thread.id, events);
    Ok(Recorded::Assigned(SpawnResponse {
        thread_key: thread.key(),
        sandbox_id,
        harness,
        ready_source,
    }))
}

/// Stage 5: a sandbox nobody will use is stopped and leaves the proxy.
async fn discard(state: &AppState, sandbox_id: Uuid, reason: &str) {
    if let Err(error) = state.backend.stop(sandbox_id, reason).await {
        tracing::warn!(%error, %sandbox_id, reason, "could not stop an unassigned sandbox");
    }
    egress::policy::detach(state, sandbox_id).await;
}

/// `POST /agent/threads/{key}/release`: stops the sandbox (cancelling a running execution);
/// the thread and its history stay.
pub async fn release(
    state: &AppState,
    thread: &ThreadRow,
    reason: &str,
) -> ApiResult<ReleaseResponse> {
    let ending = Finish::Cancelled {
        reason: "the sandbox was released".into(),
    };
    release_ending(state, thread, reason, ending, None).await
}

/// A release that only happens if the thread's sandbox is still `sandbox_id` (and, with
/// `idle`, no execution is queued or running): what a sweep saw may be out of date.
#[derive(Clone, Copy, Debug)]
pub struct ReleaseIf {
    pub sandbox_id: Uuid,
    /// Only if nothing happened on the thread since this moment (and nothing runs).
    pub idle_since: Option<DateTime<Utc>>,
}

/// Releases the thread's sandbox; a running execution ends as `ending`. The rows change in one
/// transaction; then the sandbox is stopped and leaves the proxy.
pub async fn release_ending(
    state: &AppState,
    thread: &ThreadRow,
    reason: &str,
    ending: Finish,
    only: Option<ReleaseIf>,
) -> ApiResult<ReleaseResponse> {
    let mut tx = crate::db::begin(&state.pool).await?;
    let held = lock_for_release(&mut tx, thread, only).await?;
    if let Some(only) = only
        && (held.live != Some(only.sandbox_id) || held.touched)
    {
        tx.rollback().await?;
        return Ok(ReleaseResponse {
            released: false,
            sandbox_id: None,
        });
    }
    // A sweep's release (a sandbox gone with the stack's shutdown, or idle) is not the thread's
    // own work: it leaves its last activity alone.
    let quietly = only.is_some();
    let mut new_events = Vec::new();
    // An execution goes too, even one that lost its sandbox to a concurrent release.
    if let Some(execution_id) = held.active {
        new_events.extend(
            finish_in(&mut tx, execution_id, &ending)
                .await?
                .unwrap_or_default(),
        );
    }
    let Some(sandbox_id) = held.live else {
        let events = append_for_release(&mut tx, thread, &new_events, quietly).await?;
        tx.commit().await?;
        state.hub.publish(thread.id, events);
        return Ok(ReleaseResponse {
            released: false,
            sandbox_id: None,
        });
    };
    sqlx::query(
        "UPDATE sandboxes SET state = $3, released_at = now(), release_reason = $2 WHERE id = $1",
    )
    .bind(sandbox_id)
    .bind(reason)
    .bind(SandboxState::Released.as_str())
    .execute(&mut *tx)
    .await?;
    new_events.push(NewEvent::thread(EventBody::SandboxReleased {
        sandbox_id,
        reason: reason.to_owned(),
    }));
    let events = append_for_release(&mut tx, thread, &new_events, quietly).await?;
    tx.commit().await?;
    state.hub.publish(thread.id, events);
    give_back(state, sandbox_id, reason).await;
    tracing::info!(thread_key = %thread.thread_key, %sandbox_id, "sandbox released");
    Ok(ReleaseResponse {
        released: true,
        sandbox_id: Some(sandbox_id),
    })
}

async fn append_for_release(
    tx: &mut sqlx::PgConnection,
    thread: &ThreadRow,
    events: &[NewEvent],
    quietly: bool,
) -> sqlx::Result<Vec<crate::events::StoredEvent>> {
    if quietly {
        append_quietly(tx, &thread.as_ref(), events).await
    } else {
        append(tx, &thread.as_ref(), events).await
    }
}

/// What a release found, with the rows locked.
struct Held {
    /// The thread's live sandbox.
    live: Option<Uuid>,
    /// Its queued or running execution.
    active: Option<Uuid>,
    /// Whether the thread was used since the release's `idle_since`.
    touched: bool,
}

/// Locks the thread's live sandbox and active execution. `FOR NO KEY UPDATE`, the lock an
/// `UPDATE` of their state takes anyway, not `FOR UPDATE`: rows that point at them (an
/// execution claimed onto the sandbox, an event of the execution) take a key-share lock through
/// their foreign key while holding locks of their own, and `FOR UPDATE` would make each wait for
/// the other (a deadlock, answered 503).
async fn lock_for_release(
    tx: &mut sqlx::PgConnection,
    thread: &ThreadRow,
    only: Option<ReleaseIf>,
) -> ApiResult<Held> {
    let live: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM sandboxes WHERE thread_id = $1 AND state <> 'released' FOR NO KEY UPDATE",
    )
    .bind(thread.id)
    .fetch_optional(&mut *tx)
    .await?;
    let active: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM executions WHERE thread_id = $1 AND status IN ('queued', 'running') FOR NO KEY UPDATE",
    )
    .bind(thread.id)
    .fetch_optional(&mut *tx)
    .await?;
    let touched = match only.and_then(|o| o.idle_since) {
        Some(since) => {
            let last: DateTime<Utc> =
                sqlx::query_scalar("SELECT last_activity_at FROM threads WHERE id = $1")
                    .bind(thread.id)
                    .fetch_one(&mut *tx)
                    .await?;
            active.is_some() || last > since
        }
        None => false,
    };
    Ok(Held {
        live,
        active,
        touched,
    })
}

/// A released sandbox is stopped and leaves the proxy.
async fn give_back(state: &AppState, sandbox_id: Uuid, reason: &str) {
    if let Err(error) = state.backend.stop(sandbox_id, reason).await {
        tracing::warn!(%error, %sandbox_id, "sandbox backend could not stop a released sandbox");
    }
    egress::policy::detach(state, sandbox_id).await;
}

/// Why a warm sandbox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WarmStartError {
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Starts a sandbox for the warm pool: registered with the proxy under an empty policy (it can
/// reach nothing until it is claimed), created without a thread, and ready.
pub async fn start_warm(state: &AppState, harness: Harness) -> Result<Uuid, WarmStartError> {
    let sandbox_id = Uuid::now_v7();
    let egress = egress::policy::attach_warm(state, sandbox_id).await?;
    let spec = SandboxSpec {
        sandbox_id,
        harness,
        server_url: state.config.public_url(),
        egress,
        attachment: None,
    };
    if let Err(error) = create_ready(state, &spec).await {
        egress::policy::detach(state, sandbox_id).await;
        return Err(error.into());
    }
    tracing::debug!(%sandbox_id, %harness, "warm sandbox ready");
    Ok(sandbox_id)
}

/// Stops a sandbox the backend runs that no thread (and no warm pool) owns.
pub async fn stop_unowned(state: &AppState, sandbox_id: Uuid) {
    tracing::info!(%sandbox_id, "stopping a sandbox no thread owns");
    let _ = state.backend.stop(sandbox_id, "no thread owns it").await;
    egress::policy::detach(state, sandbox_id).await;
}

/// Takes back what a refused request stored on a thread it created, so that a refused request
/// stores nothing. The thread is deleted with its events and sandbox records, unless something
/// else uses it by now (another request's execution, message or sandbox), and the sandboxes the
/// request started (`started`) are stopped, except one another request now uses. While the
/// database is away, nothing else can take those sandboxes up: they are stopped at once (which
/// needs no database), and the deletion is retried in the background until it answers again.
pub async fn abandon_new_thread(state: &AppState, thread: &ThreadRow, started: &[Uuid]) {
    if !state.readiness.is_known_down() {
        match threads::delete_unused_thread(state, thread.id, started).await {
            Ok(deleted) => {
                // Kept: the thread is another request's now, and so may be its live sandbox.
                let unused = if deleted {
                    started.to_vec()
                } else {
                    not_recorded_live(state, started).await
                };
                stop_started(state, &unused).await;
                abandoned(state, thread, &unused, deleted).await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, thread_key = %thread.thread_key, "cannot delete a refused request's thread yet");
            }
        }
    }
    stop_started(state, started).await;
    let (state, thread, started) = (state.clone(), thread.clone(), started.to_vec());
    tokio::spawn(async move { abandon_later(&state, &thread, &started).await });
}

/// Retries deleting a refused request's thread until the database answers (or
/// [`ABANDON_RETRY_FOR`] has passed).
async fn abandon_later(state: &AppState, thread: &ThreadRow, started: &[Uuid]) {
    let give_up = tokio::time::Instant::now() + ABANDON_RETRY_FOR;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(crate::db::PROBE_EVERY) => {}
        }
        let out_of_time = || tokio::time::Instant::now() >= give_up;
        if state.readiness.is_known_down() {
            if out_of_time() {
                tracing::warn!(thread_key = %thread.thread_key, "gave up deleting the thread of a refused request: the database stayed away");
                return;
            }
            continue;
        }
        match threads::delete_unused_thread(state, thread.id, started).await {
            Ok(deleted) => {
                abandoned(state, thread, started, deleted).await;
                return;
            }
            Err(error) if out_of_time() => {
                tracing::warn!(%error, thread_key = %thread.thread_key, "gave up deleting the thread of a refused request");
                return;
            }
            Err(_) => {}
        }
    }
}

/// Stops the sandboxes a refused request started.
async fn stop_started(state: &AppState, started: &[Uuid]) {
    for &sandbox_id in started {
        if let Err(error) = state
            .backend
            .stop(sandbox_id, "its request was refused")
            .await
        {
            tracing::warn!(%error, %sandbox_id, "could not stop the sandbox of a refused request");
        }
    }
}

/// Those of `started` with no live sandbox row (never recorded, or released): no other request
/// can be using them. When the database cannot tell, none (the reaper stops unowned sandboxes).
async fn not_recorded_live(state: &AppState, started: &[Uuid]) -> Vec<Uuid> {
    let live: Result<Vec<Uuid>, sqlx::Error> =
        sqlx::query_scalar("SELECT id FROM sandboxes WHERE id = ANY($1) AND state <> 'released'")
            .bind(started)
            .fetch_all(&state.pool)
            .await;
    match live {
        Ok(live) => started
            .iter()
            .copied()
            .filter(|id| !live.contains(id))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// After [`threads::delete_unused_thread`]: the stopped sandboxes leave the egress proxy too.
async fn abandoned(state: &AppState, thread: &ThreadRow, started: &[Uuid], deleted: bool) {
    for &sandbox_id in started {
        egress::policy::detach(state, sandbox_id).await;
    }
    if deleted {
        tracing::info!(thread_key = %thread.thread_key, "deleted the thread of a refused request");
    }
}
