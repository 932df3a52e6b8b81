//! The desired egress state and its delivery to the proxy.
//!
//! A thread's policy is its own (`threads.egress_policy`, set by an admin) or the deployment's
//! default (`CENTAUR_EGRESS_POLICY`). Every sandbox the proxy should serve has a row in
//! `sandbox_egress` with the policy in force and a version from one sequence, written before
//! the push, so the database is always at least as new as the proxy. Pushes happen when a
//! sandbox starts, when its thread's policy changes and when it is released; a full sync every
//! `CENTAUR_EGRESS_SYNC_MS` repairs anything a failed push or a restarted proxy left behind.
//!
//! Tools are principals of the proxy too (`tool-<name>`, rows in `tool_egress`, written by
//! [`crate::tools::egress`]); the sync sends them with the sandboxes.

use centaur_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use centaur_protocol::ThreadKey;
use centaur_protocol::api::{EgressPolicyView, PolicySource};
use centaur_protocol::egress::control::{DesiredSandbox, SandboxApplied, SyncEntry, SyncRequest};
use centaur_protocol::egress::{Policy, PolicyError};
use sqlx::types::Json;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::Config;
use crate::egress::proxy_client::{ProxyClient, ProxyClientError};
use crate::error::{ApiError, ApiResult, InternalError};
use crate::reloading::Reloading;
use crate::threads::ThreadRow;

/// Why a thread's policy (or the default one) may not have `reveal`.
pub const REVEAL_IS_FOR_TOOLS: &str = "reveal is for tools: a sandbox's policy cannot list secrets whose values the proxy gives out (bind them to hosts in `secrets`)";

/// Rows of sandboxes that never got recorded (a crash mid-spawn, a warm pool that is gone) are
/// removed after this.
const ORPHAN_AFTER_SECS: i64 = 120;

/// The server's link to the egress proxy.
pub struct Egress {
    client: ProxyClient,
    /// `CENTAUR_EGRESS_POLICY`, read again when the file changes (for sandboxes attached after).
    default_policy: Reloading<Policy, EgressSetupError>,
    /// `CENTAUR_TOOL_EGRESS`: the operator's additions to each tool's policy, read again when
    /// the file changes (the next sync pushes the tools' merged policies).
    tool_policies: Reloading<ToolPolicies, EgressSetupError>,
    sync_every: Duration,
    /// Whether a full sync has succeeded since this server started: until then a proxy that
    /// restarted with it may not know the sandboxes this server adopted.
    synced: tokio::sync::watch::Sender<bool>,
}

/// Until the first full sync succeeds, it is tried this often.
const FIRST_SYNC_RETRY: Duration = Duration::from_millis(200);

/// Why the server cannot reach the egress proxy as configured.
#[derive(Debug, thiserror::Error)]
pub enum EgressSetupError {
    #[error("CENTAUR_PROXY_CONTROL_URL needs CENTAUR_PROXY_TOKEN")]
    NoToken,
    #[error(transparent)]
    ProxyUrl(ProxyClientError),
    #[error("cannot read CENTAUR_EGRESS_POLICY {}: {source}", path.display())]
    ReadPolicy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CENTAUR_EGRESS_POLICY {}: {source}", path.display())]
    ParsePolicy {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("CENTAUR_EGRESS_POLICY {}: {source}", path.display())]
    InvalidPolicy { path: PathBuf, source: PolicyError },
    #[error("CENTAUR_EGRESS_POLICY {}: {REVEAL_IS_FOR_TOOLS}", path.display())]
    RevealInPolicy { path: PathBuf },
    #[error("cannot read CENTAUR_TOOL_EGRESS {}: {source}", path.display())]
    ReadToolPolicies {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CENTAUR_TOOL_EGRESS {} must be a JSON object of tool name → policy: {source}", path.display())]
    ParseToolPolicies {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("CENTAUR_TOOL_EGRESS {}, tool `{tool}`: {source}", path.display())]
    InvalidToolPolicy {
        path: PathBuf,
        tool: String,
        source: PolicyError,
    },
}

/// The operator's additions to tools' policies, by tool name.
pub type ToolPolicies = Arc<BTreeMap<String, Policy>>;

/// Why the desired state could not be recorded or delivered.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Proxy(#[from] ProxyClientError),
    #[error("a stored egress policy is unreadable: {0}")]
    StoredPolicy(#[source] serde_json::Error),
}

impl From<EgressError> for ApiError {
    fn from(error: EgressError) -> Self {
        match error {
            EgressError::Database(error) => error.into(),
            EgressError::Proxy(error) => proxy_error(error),
            EgressError::StoredPolicy(error) => InternalError::StoredPolicy(error).into(),
        }
    }
}

impl Egress {
    /// `None` when no proxy is configured.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Egress>>, EgressSetupError> {
        let Some(url) = &config.proxy_control_url else {
            return Ok(None);
        };
        let token = config
            .proxy_token
            .as_ref()
            .ok_or(EgressSetupError::NoToken)?;
        let client =
            ProxyClient::new(url, token.expose().to_owned()).map_err(EgressSetupError::ProxyUrl)?;
        let default_policy = match &config.egress_policy {
            Some(path) => Reloading::open(path, read_policy)?,
            None => Reloading::fixed(Policy::default()),
        };
        let tool_policies = match &config.tools.egress {
            Some(path) => Reloading::open(path, read_tool_policies)?,
            None => Reloading::fixed(ToolPolicies::default()),
        };
        Ok(Some(Arc::new(Egress {
            client,
            default_policy,
            tool_policies,
            sync_every: Duration::from_millis(config.egress_sync_ms),
            synced: tokio::sync::watch::Sender::new(false),
        })))
    }

    /// Waits (at most `limit`) until a full sync has succeeded since start-up; says whether it
    /// has. Turns wait on it, so an adopted sandbox never starts a turn the proxy cannot serve.
    pub async fn first_sync(&self, limit: Duration) -> bool {
        let mut synced = self.synced.subscribe();
        tokio::time::timeout(limit, synced.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The proxy's control API.
    pub fn client(&self) -> &ProxyClient {
        &self.client
    }

    /// The operator's additions to `tool`'s policy (`CENTAUR_TOOL_EGRESS`), as the file says
    /// now.
    pub fn tool_policy(&self, tool: &str) -> Option<Policy> {
        self.tool_policies.current().get(tool).cloned()
    }
}

/// Reads `CENTAUR_TOOL_EGRESS`: `{"<tool>": <policy>}`, each policy checked as a thread's is.
fn read_tool_policies(path: &Path) -> Result<ToolPolicies, EgressSetupError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| EgressSetupError::ReadToolPolicies {
            path: path.to_owned(),
            source,
        })?;
    let policies: BTreeMap<String, Policy> =
        serde_json::from_str(&text).map_err(|source| EgressSetupError::ParseToolPolicies {
            path: path.to_owned(),
            source,
        })?;
    for (tool, policy) in &policies {
        policy
            .validate(|_| true)
            .map_err(|source| EgressSetupError::InvalidToolPolicy {
                path: path.to_owned(),
                tool: tool.clone(),
                source,
            })?;
    }
    Ok(Arc::new(policies))
}

fn read_policy(path: &Path) -> Result<Policy, EgressSetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| EgressSetupError::ReadPolicy {
        path: path.to_owned(),
        source,
    })?;
    let policy: Policy =
        serde_json::from_str(&text).map_err(|source| EgressSetupError::ParsePolicy {
            path: path.to_owned(),
            source,
        })?;
    policy
        .validate(|_| true)
        .map_err(|source| EgressSetupError::InvalidPolicy {
            path: path.to_owned(),
            source,
        })?;
    if !policy.reveal.is_empty() {
        return Err(EgressSetupError::RevealInPolicy {
            path: path.to_owned(),
        });
    }
    Ok(policy)
}

/// What a sandbox backend needs to connect a sandbox to the proxy.
#[derive(Clone)]
pub struct SandboxEgress {
    /// The proxy's Unix socket for this sandbox (local backend).
    pub socket: Option<PathBuf>,
    /// For the proxy's TCP listener (sandboxes that reach the proxy over the network).
    pub proxy_credential: String,
    /// Secret name → placeholder, for the sandbox's environment.
    pub placeholders: BTreeMap<String, String>,
}

impl std::fmt::Debug for SandboxEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxEgress")
            .field("socket", &self.socket)
            .field("proxy_credential", &"<redacted>")
            .field("secrets", &self.placeholders.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl From<SandboxApplied> for SandboxEgress {
    fn from(applied: SandboxApplied) -> Self {
        SandboxEgress {
            socket: applied.socket,
            proxy_credential: applied.proxy_credential,
            placeholders: applied.placeholders,
        }
    }
}

fn proxy_error(error: ProxyClientError) -> ApiError {
    match error {
        ProxyClientError::Unreachable { .. } => ApiError::Unavailable {
            code: ErrorCode::EgressUnavailable,
            message: format!("{error}; sandboxes cannot start until it is back"),
        },
        ProxyClientError::Refused { status: 400, .. } => ApiError::BadGateway {
            code: ErrorCode::EgressPolicyRefused,
            message: error.to_string(),
        },
        ProxyClientError::Refused { .. }
        | ProxyClientError::BadUrl(_)
        | ProxyClientError::Protocol(_) => ApiError::BadGateway {
            code: ErrorCode::EgressFailed,
            message: error.to_string(),
        },
    }
}

/// The thread's own policy, if it has one.
async fn own_policy(state: &AppState, thread_id: i64) -> Result<Option<Policy>, EgressError> {
    let stored: Option<Json<serde_json::Value>> =
        sqlx::query_scalar("SELECT egress_policy FROM threads WHERE id = $1")
            .bind(thread_id)
            .fetch_one(&state.pool)
            .await?;
    stored_policy(stored)
}

/// A policy as `threads.egress_policy` holds it.
fn stored_policy(stored: Option<Json<serde_json::Value>>) -> Result<Option<Policy>, EgressError> {
    stored
        .map(|Json(value)| serde_json::from_value(value).map_err(EgressError::StoredPolicy))
        .transpose()
}

/// Records the sandbox's desired state and pushes it, before the sandbox starts. `None` when no
/// proxy is configured.
pub async fn attach(
    state: &AppState,
    sandbox_id: Uuid,
    thread: &ThreadRow,
) -> Result<Option<SandboxEgress>, EgressError> {
    let Some(egress) = &state.egress else {
        return Ok(None);
    };
    // The thread's row is share-locked while the state is recorded, so a concurrent policy
    // change either comes before (and is read here) or after (and updates this row).
    let mut tx = crate::db::begin(&state.pool).await?;
    let own: Option<Json<serde_json::Value>> =
        sqlx::query_scalar("SELECT egress_policy FROM threads WHERE id = $1 FOR SHARE")
            .bind(thread.id)
            .fetch_one(&mut *tx)
            .await?;
    let policy = stored_policy(own)?.unwrap_or_else(|| egress.default_policy.current());
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO sandbox_egress (sandbox_id, thread_key, policy, version) \
         VALUES ($1, $2, $3, nextval('egress_versions')) \
         ON CONFLICT (sandbox_id) DO UPDATE SET thread_key = EXCLUDED.thread_key, \
           policy = EXCLUDED.policy, version = EXCLUDED.version, updated_at = now() \
         RETURNING version",
    )
    .bind(sandbox_id)
    .bind(&thread.thread_key)
    .bind(Json(&policy))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let desired = DesiredSandbox {
        version: version as u64,
        thread_key: Some(thread.thread_key.clone()),
        policy,
    };
    match egress.client.apply(&sandbox_id.to_string(), &desired).await {
        Ok(applied) => Ok(Some(applied.into())),
        Err(error) => {
            forget(state, sandbox_id).await;
            Err(error.into())
        }
    }
}

/// Registers a warm sandbox, which has no thread yet, under an empty policy: it can reach
/// nothing until it is claimed.
pub async fn attach_warm(
    state: &AppState,
    sandbox_id: Uuid,
) -> Result<Option<SandboxEgress>, EgressError> {
    let Some(egress) = &state.egress else {
        return Ok(None);
    };
    let policy = Policy::default();
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO sandbox_egress (sandbox_id, thread_key, policy, version) \
         VALUES ($1, NULL, $2, nextval('egress_versions')) RETURNING version",
    )
    .bind(sandbox_id)
    .bind(Json(&policy))
    .fetch_one(&state.pool)
    .await?;
    let desired = DesiredSandbox {
        version: version as u64,
        thread_key: None,
        policy,
    };
    match egress.client.apply(&sandbox_id.to_string(), &desired).await {
        Ok(applied) => Ok(Some(applied.into())),
        Err(error) => {
            forget(state, sandbox_id).await;
            Err(error.into())
        }
    }
}

/// Keeps the rows of warm sandboxes (which have no sandbox row yet) from being swept.
pub async fn heartbeat(state: &AppState, sandbox_ids: &[Uuid]) {
    if state.egress.is_none() || sandbox_ids.is_empty() {
        return;
    }
    if let Err(error) =
        sqlx::query("UPDATE sandbox_egress SET updated_at = now() WHERE sandbox_id = ANY($1)")
            .bind(sandbox_ids)
            .execute(&state.pool)
            .await
    {
        tracing::warn!(%error, "could not refresh the warm sandboxes' egress rows");
    }
}

/// Removes the sandbox's desired state and tells the proxy; a failed push is repaired by the
/// next sync.
pub async fn detach(state: &AppState, sandbox_id: Uuid) {
    let Some(egress) = &state.egress else {
        return;
    };
    let Some(version) = forget(state, sandbox_id).await else {
        return;
    };
    if let Err(error) = egress
        .client
        .remove(&sandbox_id.to_string(), version as u64)
        .await
    {
        tracing::warn!(%sandbox_id, %error, "could not remove a sandbox from the egress proxy; the next sync will");
    }
}

/// Deletes the row; returns the removal's version.
async fn forget(state: &AppState, sandbox_id: Uuid) -> Option<i64> {
    let removed = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM sandbox_egress WHERE sandbox_id = $1 RETURNING 1) \
         SELECT nextval('egress_versions') FROM gone",
    )
    .bind(sandbox_id)
    .fetch_optional(&state.pool)
    .await;
    match removed {
        Ok(version) => version,
        Err(error) => {
            tracing::warn!(%sandbox_id, %error, "could not remove a sandbox's egress row; the orphan sweep will");
            None
        }
    }
}

#[derive(sqlx::FromRow)]
struct LiveEgress {
    sandbox_id: Uuid,
    version: i64,
}

async fn live_egress(
    state: &AppState,
    thread: &ThreadRow,
) -> Result<Option<LiveEgress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.sandbox_id, e.version FROM sandbox_egress e \
         JOIN sandboxes s ON s.id = e.sandbox_id \
         WHERE s.thread_id = $1 AND s.state <> 'released'",
    )
    .bind(thread.id)
    .fetch_optional(&state.pool)
    .await
}

/// `GET /admin/threads/{key}/egress-policy`.
pub async fn view(state: &AppState, thread: &ThreadRow) -> ApiResult<EgressPolicyView> {
    let egress = configured(state)?;
    let own = own_policy(state, thread.id).await?;
    let live = live_egress(state, thread).await?;
    Ok(policy_view(
        thread.key(),
        own,
        &egress.default_policy.current(),
        live,
    ))
}

/// `PUT` (with a policy) or `DELETE` (`None`: back to the default) of a thread's policy. Every
/// sandbox of the thread (running or starting) gets it at once. It runs in a task of its own, so
/// a client that goes away midway cannot leave the proxy and the database apart.
pub async fn set(
    state: &AppState,
    thread: &ThreadRow,
    policy: Option<Policy>,
) -> ApiResult<EgressPolicyView> {
    let (state, thread) = (state.clone(), thread.clone());
    tokio::spawn(async move { set_now(&state, &thread, policy).await })
        .await
        .map_err(|e| ApiError::task_failed("the policy change", e))?
}

async fn set_now(
    state: &AppState,
    thread: &ThreadRow,
    policy: Option<Policy>,
) -> ApiResult<EgressPolicyView> {
    let egress = configured(state)?;
    if let Some(policy) = &policy {
        policy
            .validate(|_| true)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPolicy, e.to_string()))?;
        if !policy.reveal.is_empty() {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidPolicy,
                REVEAL_IS_FOR_TOOLS,
            ));
        }
    }
    let in_force = policy
        .clone()
        .unwrap_or_else(|| egress.default_policy.current());
    // The proxy checks what the server cannot (that bound secrets exist); its answer decides
    // whether the change is committed. The thread's row stays locked meanwhile, so a sandbox
    // starting now reads either the old policy (and is updated here) or the new one.
    let mut tx = crate::db::begin(&state.pool).await?;
    sqlx::query("UPDATE threads SET egress_policy = $2 WHERE id = $1")
        .bind(thread.id)
        .bind(policy.as_ref().map(Json))
        .execute(&mut *tx)
        .await?;
    let rows: Vec<LiveEgress> = sqlx::query_as(
        "UPDATE sandbox_egress SET policy = $2, version = nextval('egress_versions'), \
           updated_at = now() WHERE thread_key = $1 RETURNING sandbox_id, version",
    )
    .bind(&thread.thread_key)
    .bind(Json(&in_force))
    .fetch_all(&mut *tx)
    .await?;
    let mut pushed = Vec::new();
    for row in &rows {
        let desired = DesiredSandbox {
            version: row.version as u64,
            thread_key: Some(thread.thread_key.clone()),
            policy: in_force.clone(),
        };
        if let Err(error) = egress
            .client
            .apply(&row.sandbox_id.to_string(), &desired)
            .await
        {
            // Rolled back first: restoring updates rows this transaction holds.
            let _ = tx.rollback().await;
            restore(state, &pushed).await;
            return Err(proxy_error(error));
        }
        pushed.push(row.sandbox_id);
    }
    if let Err(error) = tx.commit().await {
        restore(state, &pushed).await;
        return Err(error.into());
    }
    tracing::info!(thread_key = %thread.thread_key, own = policy.is_some(), sandboxes = rows.len(), "egress policy changed");
    let live = live_egress(state, thread).await?;
    Ok(policy_view(
        thread.key(),
        policy,
        &egress.default_policy.current(),
        live,
    ))
}

/// After a change was pushed but not committed: pushes the committed state again, with newer
/// versions, so the proxy goes back to what the database says.
async fn restore(state: &AppState, sandbox_ids: &[Uuid]) {
    let Some(egress) = &state.egress else {
        return;
    };
    if sandbox_ids.is_empty() {
        return;
    }
    let rows: Result<Vec<DesiredRow>, _> = sqlx::query_as(
        "UPDATE sandbox_egress SET version = nextval('egress_versions'), updated_at = now() \
         WHERE sandbox_id = ANY($1) RETURNING sandbox_id, thread_key, policy, version",
    )
    .bind(sandbox_ids)
    .fetch_all(&state.pool)
    .await;
    let Ok(rows) = rows else {
        tracing::error!(
            "could not restore the egress policy of sandboxes after a failed change; the next sync will"
        );
        return;
    };
    for row in rows {
        let Ok(policy) = serde_json::from_value::<Policy>(row.policy.0) else {
            continue;
        };
        let desired = DesiredSandbox {
            version: row.version as u64,
            thread_key: row.thread_key,
            policy,
        };
        if let Err(error) = egress
            .client
            .apply(&row.sandbox_id.to_string(), &desired)
            .await
        {
            tracing::warn!(sandbox_id = %row.sandbox_id, %error, "could not restore a sandbox's egress policy; the next sync will");
        }
    }
}

fn configured(state: &AppState) -> ApiResult<&Arc<Egress>> {
    state.egress.as_ref().ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::EgressNotConfigured,
            "this server has no egress proxy (set CENTAUR_PROXY_CONTROL_URL)",
        )
    })
}

fn policy_view(
    thread_key: ThreadKey,
    own: Option<Policy>,
    default: &Policy,
    live: Option<LiveEgress>,
) -> EgressPolicyView {
    let source = match own {
        Some(_) => PolicySource::Thread,
        None => PolicySource::Default,
    };
    let policy = own.unwrap_or_else(|| default.clone());
    EgressPolicyView {
        thread_key,
        source,
        policy,
        sandbox_id: live.as_ref().map(|l| l.sandbox_id),
        version: live.map(|l| l.version),
    }
}

#[derive(sqlx::FromRow)]
struct DesiredRow {
    sandbox_id: Uuid,
    thread_key: Option<String>,
    policy: Json<serde_json::Value>,
    version: i64,
}

/// Pushes the whole desired state to the proxy (which removes what is no longer wanted), and
/// sweeps rows of sandboxes that were never recorded.
pub async fn sync(state: &AppState) -> Result<(), EgressError> {
    let Some(egress) = &state.egress else {
        return Ok(());
    };
    sqlx::query(
        "DELETE FROM sandbox_egress e WHERE e.updated_at < now() - make_interval(secs => $1) \
         AND NOT EXISTS (SELECT 1 FROM sandboxes s WHERE s.id = e.sandbox_id AND s.state <> 'released')",
    )
    .bind(ORPHAN_AFTER_SECS as f64)
    .execute(&state.pool)
    .await?;
    // A row written after the snapshot below either has a newer version than `as_of` or was
    // pushed within the proxy's grace period, so the proxy keeps it.
    let as_of: i64 = sqlx::query_scalar("SELECT nextval('egress_versions')")
        .fetch_one(&state.pool)
        .await?;
    let rows: Vec<DesiredRow> =
        sqlx::query_as("SELECT sandbox_id, thread_key, policy, version FROM sandbox_egress")
            .fetch_all(&state.pool)
            .await?;
    let mut sandboxes = Vec::with_capacity(rows.len());
    for row in rows {
        match serde_json::from_value::<Policy>(row.policy.0) {
            Ok(policy) => sandboxes.push(SyncEntry {
                sandbox_id: row.sandbox_id.to_string(),
                desired: DesiredSandbox {
                    version: row.version as u64,
                    thread_key: row.thread_key,
                    policy,
                },
            }),
            Err(error) => {
                tracing::error!(sandbox_id = %row.sandbox_id, %error, "a stored egress policy is unreadable; the sandbox gets none")
            }
        }
    }
    // The tools' principals: never swept as orphans (a tool's row goes when its tool does).
    sandboxes.extend(crate::tools::egress::sync_entries(state, egress).await?);
    let request = SyncRequest {
        as_of: as_of as u64,
        sandboxes,
    };
    let response = egress.client.sync(&request).await?;
    if !response.removed.is_empty() {
        tracing::info!(removed = ?response.removed, "egress sync removed sandboxes the server no longer runs");
    }
    for (sandbox_id, reason) in &response.rejected {
        tracing::error!(%sandbox_id, %reason, "the egress proxy refused a sandbox's policy; it can reach nothing");
    }
    Ok(())
}

/// Syncs now and every `CENTAUR_EGRESS_SYNC_MS` until shutdown. A failure is logged once until
/// the next success.
pub fn spawn_sync(state: AppState) {
    let Some(egress) = state.egress.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            // At once when the server is ready, then every `sync_every`; quickly until the
            // first sync since start-up has succeeded.
            if state.readiness.is_migrated() {
                match sync(&state).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("egress sync works again");
                        }
                        failing = false;
                        egress.synced.send_replace(true);
                    }
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "egress sync failed; retrying");
                    }
                    Err(_) => {}
                }
            }
            let pause = if *egress.synced.borrow() {
                egress.sync_every
            } else {
                FIRST_SYNC_RETRY
            };
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    });
}
