//! Threads and their sandboxes: spawn (create or reuse), look up, list, release.

use centaur_protocol::api::{
    ExecutionView, ReleaseResponse, SandboxView, SpawnRequest, SpawnResponse, ThreadDetail,
    ThreadList, ThreadStatus, ThreadSummary,
};
use centaur_protocol::runner::{ApprovalPolicy, Attachment, Finish};
use centaur_protocol::{EventBody, ExecutionStatus, Harness, ReadySource, ThreadKey};
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::mint_sandbox_token;
use crate::egress;
use crate::error::{ApiError, ApiResult, unique_violation};
use crate::events::{NewEvent, ThreadRef, append};
use crate::executions::finish_in;
use crate::sandbox::SandboxSpec;

const MAX_SPAWN_ID_BYTES: usize = 200;
const MAX_PERSONA_BYTES: usize = 4096;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ThreadRow {
    pub id: i64,
    pub thread_key: String,
    pub platform: String,
    pub harness: String,
    pub persona: Option<String>,
    pub last_event_id: i64,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
}

macro_rules! thread_columns {
    () => {
        "id, thread_key, platform, harness, persona, last_event_id, created_at, last_activity_at"
    };
}

impl ThreadRow {
    pub fn as_ref(&self) -> ThreadRef {
        ThreadRef {
            id: self.id,
            key: self.key(),
        }
    }

    pub fn key(&self) -> ThreadKey {
        ThreadKey::parse(&self.thread_key).expect("stored thread keys are valid")
    }

    pub fn harness(&self) -> Harness {
        self.harness.parse().unwrap_or(Harness::Shell)
    }
}

/// The thread, or 404.
pub async fn find(state: &AppState, key: &ThreadKey) -> ApiResult<ThreadRow> {
    sqlx::query_as::<_, ThreadRow>(concat!(
        "SELECT ",
        thread_columns!(),
        " FROM threads WHERE thread_key = $1"
    ))
    .bind(key.as_str())
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::thread_not_found(key.as_str()))
}

/// The thread, created (with its `thread.created` event) if it does not exist yet, and whether
/// this call created it: a request that then fails takes a thread it created back with
/// [`abandon_new_thread`].
pub async fn ensure(
    state: &AppState,
    key: &ThreadKey,
    harness: Option<Harness>,
    persona: Option<&str>,
) -> ApiResult<(ThreadRow, bool)> {
    let harness = harness.unwrap_or(state.config.default_harness);
    let mut tx = crate::db::begin(&state.pool).await?;
    let created: Option<ThreadRow> = sqlx::query_as(concat!(
        "INSERT INTO threads (thread_key, platform, harness, persona) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (thread_key) DO NOTHING RETURNING ",
        thread_columns!()
    ))
    .bind(key.as_str())
    .bind(key.platform())
    .bind(harness.as_str())
    .bind(persona)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(thread) = created else {
        tx.rollback().await?;
        let thread = find(state, key).await?;
        if let Some(persona) = persona
            && thread.persona.as_deref() != Some(persona)
        {
            sqlx::query("UPDATE threads SET persona = $2 WHERE id = $1")
                .bind(thread.id)
                .bind(persona)
                .execute(&state.pool)
                .await?;
        }
        return Ok((thread, false));
    };
    let events = append(
        &mut tx,
        &thread.as_ref(),
        &[NewEvent::thread(EventBody::ThreadCreated {
            harness: harness.as_str().to_owned(),
        })],
    )
    .await?;
    if let Err(error) = tx.commit().await {
        // The commit may have reached the database with only its answer lost: then the thread
        // exists, and this refused request must take it back.
        abandon_new_thread(state, &thread, &[]).await;
        return Err(error.into());
    }
    state.hub.publish(thread.id, events);
    tracing::info!(thread_key = %key, %harness, "thread created");
    Ok((thread, true))
}

/// How long a refused request keeps trying to take back the thread it created while the
/// database is away.
const ABANDON_RETRY_FOR: Duration = Duration::from_secs(600);

/// Takes back what a refused request stored on a thread it created, so that a refused request
/// stores nothing. The thread is deleted with its events and sandbox records, unless something
/// else uses it by now (another request's execution, message or sandbox), and the sandboxes the
/// request started (`started`) are stopped, except one another request now uses. While the
/// database is away, nothing else can take those sandboxes up: they are stopped at once (which
/// needs no database), and the deletion is retried in the background until it answers again.
pub async fn abandon_new_thread(state: &AppState, thread: &ThreadRow, started: &[Uuid]) {
    if !state.readiness.is_known_down() {
        match delete_unused_thread(state, thread.id, started).await {
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
    tokio::spawn(async move {
        let give_up = tokio::time::Instant::now() + ABANDON_RETRY_FOR;
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(crate::db::PROBE_EVERY) => {}
            }
            let outcome = if state.readiness.is_known_down() {
                None
            } else {
                Some(delete_unused_thread(&state, thread.id, &started).await)
            };
            match outcome {
                Some(Ok(deleted)) => {
                    abandoned(&state, &thread, &started, deleted).await;
                    return;
                }
                Some(Err(error)) if tokio::time::Instant::now() >= give_up => {
                    tracing::warn!(%error, thread_key = %thread.thread_key, "gave up deleting the thread of a refused request");
                    return;
                }
                None if tokio::time::Instant::now() >= give_up => {
                    tracing::warn!(thread_key = %thread.thread_key, "gave up deleting the thread of a refused request: the database stayed away");
                    return;
                }
                _ => {}
            }
        }
    });
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

/// After [`delete_unused_thread`]: the stopped sandbox leaves the egress proxy too.
async fn abandoned(state: &AppState, thread: &ThreadRow, started: &[Uuid], deleted: bool) {
    for &sandbox_id in started {
        egress::policy::detach(state, sandbox_id).await;
    }
    if deleted {
        tracing::info!(thread_key = %thread.thread_key, "deleted the thread of a refused request");
    }
}

/// Deletes a thread nothing uses: no execution, no message, no sandbox but `ours`. Whether it
/// was deleted.
async fn delete_unused_thread(
    state: &AppState,
    thread_id: i64,
    ours: &[Uuid],
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(&state.pool).await?;
    // Appends lock the thread row too: nothing is added to the thread while this runs.
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM threads WHERE id = $1 FOR UPDATE")
        .bind(thread_id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        tx.rollback().await?;
        return Ok(false);
    }
    let used: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM executions WHERE thread_id = $1) \
         OR EXISTS (SELECT 1 FROM messages WHERE thread_id = $1) \
         OR EXISTS (SELECT 1 FROM sandboxes WHERE thread_id = $1 AND id <> ALL($2::uuid[]))",
    )
    .bind(thread_id)
    .bind(ours)
    .fetch_one(&mut *tx)
    .await?;
    if used {
        tx.rollback().await?;
        return Ok(false);
    }
    for statement in [
        "DELETE FROM spawn_requests WHERE thread_id = $1",
        "DELETE FROM sandboxes WHERE thread_id = $1",
        "DELETE FROM events WHERE thread_id = $1",
        "DELETE FROM threads WHERE id = $1",
    ] {
        sqlx::query(statement)
            .bind(thread_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
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

/// `POST /agent/spawn`: the thread's live sandbox, or a new one from the warm pool or cold.
pub async fn spawn(state: &AppState, request: &SpawnRequest) -> ApiResult<SpawnResponse> {
    if let Some(spawn_id) = &request.spawn_id
        && (spawn_id.is_empty() || spawn_id.len() > MAX_SPAWN_ID_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("spawn_id must be 1 to {MAX_SPAWN_ID_BYTES} bytes"),
        ));
    }
    if request
        .persona
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PERSONA_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("persona must be at most {MAX_PERSONA_BYTES} bytes"),
        ));
    }
    if let Some(spawn_id) = &request.spawn_id
        && let Some(answer) = previous_spawn(state, spawn_id, &request.thread_key).await?
    {
        return Ok(answer);
    }
    let (thread, created) = ensure(
        state,
        &request.thread_key,
        request.harness,
        request.persona.as_deref(),
    )
    .await?;
    let mut started = Vec::new();
    let answer = spawn_on(state, request, &thread, &mut started).await;
    if answer.is_err() && created {
        abandon_new_thread(state, &thread, &started).await;
    }
    answer
}

/// Gives `thread` a sandbox: its live one, or a new one. `started` gets the id of every sandbox
/// this call started, recorded or not, so a caller that is refused later can take them back.
pub async fn spawn_on(
    state: &AppState,
    request: &SpawnRequest,
    thread: &ThreadRow,
    started: &mut Vec<Uuid>,
) -> ApiResult<SpawnResponse> {
    if let Some(policy) = request.approval_policy {
        sqlx::query("UPDATE threads SET approval_policy = $2 WHERE id = $1")
            .bind(thread.id)
            .bind(policy.as_str())
            .execute(&state.pool)
            .await?;
    }
    // Two spawns can race for the same thread; the database lets one sandbox win.
    for _ in 0..3 {
        if let Some(live) = live_sandbox(state, thread.id).await? {
            let harness: Harness = live.harness.parse().unwrap_or(Harness::Shell);
            if let Some(wanted) = request.harness
                && wanted != harness
            {
                return Err(ApiError::conflict(
                    "harness_conflict",
                    format!(
                        "thread `{}` runs `{harness}`; release it before switching to `{wanted}`",
                        request.thread_key
                    ),
                ));
            }
            if let Some(spawn_id) = &request.spawn_id {
                sqlx::query(
                    "INSERT INTO spawn_requests (spawn_id, thread_id, sandbox_id, ready_source) \
                     VALUES ($1, $2, $3, 'reused') ON CONFLICT DO NOTHING",
                )
                .bind(spawn_id)
                .bind(thread.id)
                .bind(live.id)
                .execute(&state.pool)
                .await?;
            }
            return Ok(SpawnResponse {
                thread_key: request.thread_key.clone(),
                sandbox_id: live.id,
                harness,
                ready_source: ReadySource::Reused,
            });
        }
        let harness = request.harness.unwrap_or_else(|| thread.harness());
        // Started in a task of its own: a client that goes away mid-spawn must not leave a
        // sandbox (or a claimed warm one) that nobody records or stops.
        let starting = {
            let (state, thread, spawn_id) =
                (state.clone(), thread.clone(), request.spawn_id.clone());
            tokio::spawn(async move {
                start_sandbox(&state, &thread, harness, spawn_id.as_deref()).await
            })
        };
        let (sandbox_id, outcome) = starting
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("starting a sandbox failed: {e}")))?;
        started.extend(sandbox_id);
        if let Some(answer) = outcome? {
            return Ok(answer);
        }
    }
    Err(ApiError::conflict(
        "spawn_contended",
        "the thread's sandbox kept changing while spawning; retry",
    ))
}

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
            "idempotency_conflict",
            format!("spawn_id `{spawn_id}` was already used for another thread"),
        ));
    }
    Ok(Some(SpawnResponse {
        thread_key: thread_key.clone(),
        sandbox_id,
        harness: harness.parse().unwrap_or(Harness::Shell),
        ready_source: parse_ready_source(&ready_source),
    }))
}

fn parse_ready_source(s: &str) -> ReadySource {
    match s {
        "warm_pool" => ReadySource::WarmPool,
        "cold" => ReadySource::Cold,
        _ => ReadySource::Reused,
    }
}

/// Starts a sandbox (from the warm pool when one is ready and the thread is new, else cold) and
/// records it: the id of the sandbox it started, if it got that far, and the answer (`None`
/// when another spawn won the race for the thread).
async fn start_sandbox(
    state: &AppState,
    thread: &ThreadRow,
    harness: Harness,
    spawn_id: Option<&str>,
) -> (Option<Uuid>, ApiResult<Option<SpawnResponse>>) {
    let started = match claim_warm(state, thread, harness).await {
        Ok(Some(warm)) => warm,
        Ok(None) => match start_cold(state, thread, harness).await {
            Ok(cold) => cold,
            Err(error) => return (None, Err(error)),
        },
        Err(error) => return (None, Err(error)),
    };
    let sandbox_id = started.0;
    let outcome = record_started(state, thread, harness, spawn_id, started).await;
    (Some(sandbox_id), outcome)
}

/// Records a sandbox [`start_sandbox`] started, or stops it if it cannot be assigned.
async fn record_started(
    state: &AppState,
    thread: &ThreadRow,
    harness: Harness,
    spawn_id: Option<&str>,
    started: (Uuid, Vec<u8>, ReadySource),
) -> ApiResult<Option<SpawnResponse>> {
    let (sandbox_id, token_hash, ready_source) = started;
    let recorded = record_sandbox(
        state,
        thread,
        harness,
        sandbox_id,
        &token_hash,
        ready_source,
        spawn_id,
    )
    .await;
    if let Some(pool) = &state.warm {
        pool.claimed(sandbox_id);
    }
    if !matches!(recorded, Ok(Recorded::Assigned(_))) {
        // Lost a race, or could not record it: do not leak the sandbox.
        if let Err(error) = state.backend.stop(sandbox_id, "not assigned").await {
            tracing::warn!(%error, %sandbox_id, "could not stop an unassigned sandbox");
        }
        egress::policy::detach(state, sandbox_id).await;
    }
    match recorded? {
        Recorded::Assigned(answer) => {
            tracing::info!(thread_key = %thread.thread_key, %sandbox_id, ready_source = ready_source.as_str(), "sandbox assigned");
            Ok(Some(answer))
        }
        Recorded::LostRace => Ok(None),
        Recorded::SpawnIdTaken => {
            let key = thread.key();
            let spawn_id = spawn_id.expect("only with a spawn id");
            previous_spawn(state, spawn_id, &key)
                .await?
                .map(Some)
                .ok_or_else(|| ApiError::conflict("spawn_contended", "retry the spawn"))
        }
    }
}

/// The thread's approval policy, or the deployment's default.
async fn approval_policy(state: &AppState, thread: &ThreadRow) -> ApiResult<ApprovalPolicy> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT approval_policy FROM threads WHERE id = $1")
            .bind(thread.id)
            .fetch_one(&state.pool)
            .await?;
    Ok(stored
        .and_then(|p| p.parse().ok())
        .unwrap_or(state.config.approval_policy))
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
    // Placeholders win over settings of the same name.
    env.extend(egress.map(|e| e.placeholders.clone()).unwrap_or_default());
    if harness == Harness::Codex
        && let Some(config) = &state.codex_config
    {
        env.insert("CENTAUR_CODEX_CONFIG_TOML".into(), config.to_string());
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

/// A warm sandbox handed this thread, when the pool has one and the thread never had a
/// sandbox (a warm sandbox cannot mount an existing workspace).
async fn claim_warm(
    state: &AppState,
    thread: &ThreadRow,
    harness: Harness,
) -> ApiResult<Option<(Uuid, Vec<u8>, ReadySource)>> {
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
    let policy = approval_policy(state, thread).await?;
    let Some(sandbox_id) = pool.take(harness) else {
        return Ok(None);
    };
    let give_up = |reason: String| async move {
        tracing::warn!(%sandbox_id, %reason, "could not claim a warm sandbox; starting one cold");
        let _ = state.backend.stop(sandbox_id, "claim failed").await;
        egress::policy::detach(state, sandbox_id).await;
        pool.claimed(sandbox_id);
    };
    // The thread's policy replaces the empty one, atomically, before the runner gets going.
    let egress = match egress::policy::attach(state, sandbox_id, thread).await {
        Ok(egress) => egress,
        Err(error) => {
            give_up(error.to_string()).await;
            return Err(error);
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
    match state.backend.attach(sandbox_id, &attachment).await {
        Ok(()) => Ok(Some((sandbox_id, token.secret_hash, ReadySource::WarmPool))),
        Err(error) => {
            give_up(error.to_string()).await;
            Ok(None)
        }
    }
}

async fn start_cold(
    state: &AppState,
    thread: &ThreadRow,
    harness: Harness,
) -> ApiResult<(Uuid, Vec<u8>, ReadySource)> {
    let sandbox_id = Uuid::now_v7();
    let token = mint_sandbox_token(sandbox_id);
    let policy = approval_policy(state, thread).await?;
    // The proxy serves the sandbox before it starts.
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
    if let Err(error) = state.backend.create(&spec).await {
        egress::policy::detach(state, sandbox_id).await;
        return Err(error.into());
    }
    Ok((sandbox_id, token.secret_hash, ReadySource::Cold))
}

enum Recorded {
    Assigned(SpawnResponse),
    LostRace,
    SpawnIdTaken,
}

async fn record_sandbox(
    state: &AppState,
    thread: &ThreadRow,
    harness: Harness,
    sandbox_id: Uuid,
    token_hash: &[u8],
    ready_source: ReadySource,
    spawn_id: Option<&str>,
) -> ApiResult<Recorded> {
    let mut tx = crate::db::begin(&state.pool).await?;
    let inserted = sqlx::query(
        "INSERT INTO sandboxes (id, thread_id, backend, harness, state, ready_source, token_hash, owner) \
         VALUES ($1, $2, $3, $4, 'ready', $5, $6, $7)",
    )
    .bind(sandbox_id)
    .bind(thread.id)
    .bind(state.backend.name())
    .bind(harness.as_str())
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
    if harness != thread.harness() {
        sqlx::query("UPDATE threads SET harness = $2 WHERE id = $1")
            .bind(thread.id)
            .bind(harness.as_str())
            .execute(&mut *tx)
            .await?;
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
            Err(e) if unique_violation(&e).is_some() => return Ok(Recorded::SpawnIdTaken),
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

/// Releases the thread's sandbox; a running execution ends as `ending`.
pub async fn release_ending(
    state: &AppState,
    thread: &ThreadRow,
    reason: &str,
    ending: Finish,
    only: Option<ReleaseIf>,
) -> ApiResult<ReleaseResponse> {
    let mut tx = crate::db::begin(&state.pool).await?;
    let live: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM sandboxes WHERE thread_id = $1 AND state <> 'released' FOR UPDATE",
    )
    .bind(thread.id)
    .fetch_optional(&mut *tx)
    .await?;
    let active: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM executions WHERE thread_id = $1 AND status IN ('queued', 'running') FOR UPDATE",
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
    if let Some(only) = only
        && (live != Some(only.sandbox_id) || touched)
    {
        tx.rollback().await?;
        return Ok(ReleaseResponse {
            released: false,
            sandbox_id: None,
        });
    }
    let mut new_events = Vec::new();
    // An execution goes too, even one that lost its sandbox to a concurrent release.
    if let Some(execution_id) = active {
        new_events.extend(
            finish_in(&mut tx, execution_id, &ending)
                .await?
                .unwrap_or_default(),
        );
    }
    let Some(sandbox_id) = live else {
        let events = append(&mut tx, &thread.as_ref(), &new_events).await?;
        tx.commit().await?;
        state.hub.publish(thread.id, events);
        return Ok(ReleaseResponse {
            released: false,
            sandbox_id: None,
        });
    };
    sqlx::query(
        "UPDATE sandboxes SET state = 'released', released_at = now(), release_reason = $2 WHERE id = $1",
    )
    .bind(sandbox_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    new_events.push(NewEvent::thread(EventBody::SandboxReleased {
        sandbox_id,
        reason: reason.to_owned(),
    }));
    let events = append(&mut tx, &thread.as_ref(), &new_events).await?;
    tx.commit().await?;
    state.hub.publish(thread.id, events);
    if let Err(error) = state.backend.stop(sandbox_id, reason).await {
        tracing::warn!(%error, %sandbox_id, "sandbox backend could not stop a released sandbox");
    }
    egress::policy::detach(state, sandbox_id).await;
    tracing::info!(thread_key = %thread.thread_key, %sandbox_id, "sandbox released");
    Ok(ReleaseResponse {
        released: true,
        sandbox_id: Some(sandbox_id),
    })
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    thread: ThreadRow,
    active_status: Option<String>,
}

macro_rules! summary_select {
    () => {
        "SELECT t.id, t.thread_key, t.platform, t.harness, t.persona, \
     t.last_event_id, t.created_at, t.last_activity_at, \
     (SELECT e.status FROM executions e WHERE e.thread_id = t.id \
      AND e.status IN ('queued', 'running') LIMIT 1) AS active_status FROM threads t"
    };
}

fn summary(row: SummaryRow) -> ThreadSummary {
    let status = match row.active_status.as_deref() {
        Some("running") => ThreadStatus::Running,
        Some(_) => ThreadStatus::Queued,
        None => ThreadStatus::Idle,
    };
    let thread = row.thread;
    ThreadSummary {
        thread_key: thread.key(),
        harness: thread.harness(),
        platform: thread.platform,
        persona: thread.persona,
        status,
        created_at: thread.created_at,
        last_activity_at: thread.last_activity_at,
        last_event_id: thread.last_event_id,
    }
}

/// A page of threads, most recently active first. `before` is a cursor from the previous page.
pub async fn list(state: &AppState, limit: i64, before: Option<&str>) -> ApiResult<ThreadList> {
    let cursor = before.map(parse_cursor).transpose()?;
    let (at, id) = cursor.unzip();
    let rows: Vec<SummaryRow> = sqlx::query_as(concat!(
        summary_select!(),
        " WHERE $1::timestamptz IS NULL OR (t.last_activity_at, t.id) < ($1, $2) \
         ORDER BY t.last_activity_at DESC, t.id DESC LIMIT $3"
    ))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| {
            rows.last()
                .map(|r| format_cursor(r.thread.last_activity_at, r.thread.id))
        })
        .flatten();
    Ok(ThreadList {
        threads: rows.into_iter().map(summary).collect(),
        next_before,
    })
}

fn format_cursor(at: DateTime<Utc>, id: i64) -> String {
    format!("{}.{id}", at.timestamp_micros())
}

fn parse_cursor(raw: &str) -> ApiResult<(DateTime<Utc>, i64)> {
    let bad = || {
        ApiError::bad_request(
            "invalid_query",
            "`before` must be a cursor from `next_before`",
        )
    };
    let (micros, id) = raw.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let id: i64 = id.parse().map_err(|_| bad())?;
    Ok((DateTime::from_timestamp_micros(micros).ok_or_else(bad)?, id))
}

/// `GET /agent/threads/{key}`.
pub async fn detail(state: &AppState, key: &ThreadKey) -> ApiResult<ThreadDetail> {
    let row: SummaryRow = sqlx::query_as(concat!(summary_select!(), " WHERE t.thread_key = $1"))
        .bind(key.as_str())
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(|| ApiError::thread_not_found(key.as_str()))?;
    let thread_id = row.thread.id;
    let sandbox: Option<(Uuid, String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, backend, state, ready_source, created_at FROM sandboxes \
         WHERE thread_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(&state.pool)
    .await?;
    let last_execution: Option<ExecutionRow> = sqlx::query_as(
        "SELECT id, status, harness, created_at, started_at, finished_at, deadline_at, \
         result_text, error, cancel_reason FROM executions WHERE thread_id = $1 \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(ThreadDetail {
        summary: summary(row),
        sandbox: sandbox.map(|(sandbox_id, backend, state, ready_source, created_at)| {
            SandboxView {
                sandbox_id,
                backend,
                state,
                ready_source: parse_ready_source(&ready_source),
                created_at,
            }
        }),
        last_execution: last_execution.map(ExecutionRow::into_view),
    })
}

#[derive(sqlx::FromRow)]
struct ExecutionRow {
    id: Uuid,
    status: String,
    harness: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    deadline_at: DateTime<Utc>,
    result_text: Option<String>,
    error: Option<String>,
    cancel_reason: Option<String>,
}

impl ExecutionRow {
    fn into_view(self) -> ExecutionView {
        ExecutionView {
            execution_id: self.id,
            status: self.status.parse().unwrap_or(ExecutionStatus::Failed),
            harness: self.harness.parse().unwrap_or(Harness::Shell),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            deadline_at: self.deadline_at,
            result_text: self.result_text,
            error: self.error,
            cancel_reason: self.cancel_reason,
        }
    }
}
