//! The control API: how the server tells the proxy which sandboxes exist and what each may
//! reach. The server keeps the desired state in PostgreSQL and pushes it here when a sandbox is
//! created, changed or released, plus a full sync now and then (which also repopulates a
//! proxy that restarted). Every state carries a version, so late or duplicated pushes are
//! harmless (see [`crate::registry`]).
//!
//! The routes and bodies are [`centaur_protocol::egress::control`]'s.
//!
//! `POST /v1/sandboxes/{id}/audit/flush` delivers the sandbox's audit records the proxy still
//! holds before it answers, so the server can put a turn's refusals before the turn's end.
//!
//! `POST /v1/secrets/{name}/reveal` gives the server a secret's value for a principal the proxy
//! serves, only if it is a tool's (`tool-<name>`) and the policy pushed for it lists the secret
//! in `reveal` (the operator granted the tool that secret): read through the same sources and
//! cache as a swap, logged and audited under the principal (the secret's name, never its
//! value). The proxy reveals only what a tool principal's pushed policy lists; but whoever
//! holds the control token can push such a policy, so the token holder is trusted as the
//! server is (the check guards against mistakes and a sandbox's principal, not the token).
//!
//! Every route but `/healthz` needs `Authorization: Bearer <CENTAUR_PROXY_TOKEN>`, the token
//! the proxy also uses towards the server.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use centaur_protocol::egress::Policy;
use centaur_protocol::egress::control::{
    AuditFlushed, ControlErrorCode, DesiredSandbox, RemoveQuery, Removed, RevealRequest,
    RevealedSecret, SandboxApplied, SandboxList, SyncRequest, SyncResponse,
};
use centaur_protocol::{ErrorBody, ErrorDetail};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::Proxy;
use crate::audit::{AuditRecord, Decision, FlushError};
use crate::registry::{Applied, Sandbox, SandboxConfig};
use crate::secrets::SecretError;

/// A sandbox absent from a full sync is kept if it was pushed this recently: the push may have
/// raced the server's snapshot. Longer than any request the server makes to the proxy.
pub const SYNC_GRACE: Duration = Duration::from_secs(30);
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const MAX_SANDBOX_ID_BYTES: usize = 64;
/// The principals a secret may be revealed to: tools'.
const TOOL_PRINCIPAL_PREFIX: &str = "tool-";

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("missing or wrong control token")]
    Unauthorized,
    #[error("{0}")]
    Invalid(String),
    #[error("sandbox `{sandbox_id}` was removed at version {version}; push a newer version")]
    Removed { sandbox_id: String, version: u64 },
    #[error("cannot listen for sandbox `{sandbox_id}`: {reason}")]
    Socket { sandbox_id: String, reason: String },
    #[error("{0}; they stay queued and are delivered later")]
    AuditUndelivered(#[from] FlushError),
    #[error("`{0}` is not served by this proxy; push its policy before revealing a secret to it")]
    UnknownPrincipal(String),
    #[error(
        "secret `{name}` may not be revealed to `{principal}`: only a tool's principal (`tool-<name>`) whose policy lists the secret in `reveal` gets a value"
    )]
    RevealNotAllowed { name: String, principal: String },
    #[error(transparent)]
    Secret(SecretError),
}

impl ControlError {
    fn code(&self) -> (StatusCode, ControlErrorCode) {
        match self {
            ControlError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, ControlErrorCode::Unauthorized)
            }
            ControlError::Invalid(_) => (StatusCode::BAD_REQUEST, ControlErrorCode::InvalidRequest),
            ControlError::Removed { .. } => {
                (StatusCode::CONFLICT, ControlErrorCode::SandboxRemoved)
            }
            ControlError::Socket { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ControlErrorCode::SocketFailed,
            ),
            ControlError::AuditUndelivered(_) => {
                (StatusCode::BAD_GATEWAY, ControlErrorCode::AuditUndelivered)
            }
            ControlError::UnknownPrincipal(_) => {
                (StatusCode::NOT_FOUND, ControlErrorCode::UnknownPrincipal)
            }
            ControlError::RevealNotAllowed { .. } => {
                (StatusCode::FORBIDDEN, ControlErrorCode::RevealNotAllowed)
            }
            ControlError::Secret(SecretError::Unknown(_)) => {
                (StatusCode::NOT_FOUND, ControlErrorCode::UnknownSecret)
            }
            ControlError::Secret(SecretError::Unavailable { .. }) => {
                (StatusCode::BAD_GATEWAY, ControlErrorCode::SecretUnavailable)
            }
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

/// The control side of a proxy: applies pushed state and runs a Unix socket per sandbox.
pub struct Control {
    proxy: Arc<Proxy>,
    /// `None`: the control API refuses every call.
    token: Option<String>,
    socket_dir: Option<PathBuf>,
    /// Sandbox id → its socket listener.
    listeners: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
}

impl Control {
    /// With `socket_dir`, every sandbox gets `<socket_dir>/<sandbox_id>/proxy.sock`. Listeners stop
    /// at `shutdown`.
    pub fn new(
        proxy: Arc<Proxy>,
        token: Option<String>,
        socket_dir: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> Arc<Control> {
        Arc::new(Control {
            proxy,
            token,
            socket_dir,
            listeners: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/healthz",
                get(|| async { Json(serde_json::json!({"ok": true})) }),
            )
            .route("/v1/sandboxes", put(sync).get(list))
            .route("/v1/sandboxes/{sandbox_id}", put(apply).delete(remove))
            .route("/v1/sandboxes/{sandbox_id}/audit/flush", post(flush_audit))
            .route("/v1/secrets/{name}/reveal", post(reveal))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
    }

    /// Serves the control API on `listener` until `shutdown`.
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    /// Applies one sandbox's desired state.
    pub fn apply(
        &self,
        sandbox_id: &str,
        desired: DesiredSandbox,
    ) -> Result<SandboxApplied, ControlError> {
        let config = self.validate(sandbox_id, desired.thread_key, desired.policy)?;
        match self.proxy.registry.apply(config, desired.version) {
            Applied::Applied(sandbox) => {
                self.listen(&sandbox).map(|s| self.view(&sandbox, true, s))
            }
            Applied::Unchanged(sandbox) => {
                let socket = self.socket_path(sandbox_id);
                Ok(self.view(&sandbox, false, socket))
            }
            Applied::Removed { version } => Err(ControlError::Removed {
                sandbox_id: sandbox_id.to_owned(),
                version,
            }),
        }
    }

    /// Registers a sandbox from the proxy's own configuration file (version 0, so any push from
    /// the server replaces it) and opens its socket.
    pub fn register_static(&self, config: SandboxConfig) -> Result<SandboxApplied, ControlError> {
        let id = config.sandbox_id.clone();
        self.validate(&id, None, config.policy.clone())?;
        self.proxy.registry.register(config);
        let sandbox = self.proxy.registry.get(&id).expect("just registered");
        let socket = self.listen(&sandbox)?;
        Ok(self.view(&sandbox, true, socket))
    }

    /// Removes a sandbox (unless a newer state has arrived) and closes its socket.
    pub fn remove(&self, sandbox_id: &str, version: u64) -> bool {
        let removed = self.proxy.registry.remove_at(sandbox_id, version);
        if removed {
            self.unlisten(sandbox_id);
        }
        removed
    }

    /// Makes the proxy's sandboxes match the server's full desired state.
    pub fn sync(&self, request: SyncRequest) -> Result<SyncResponse, ControlError> {
        let mut rejected = Vec::new();
        let mut entries = Vec::with_capacity(request.sandboxes.len());
        for entry in request.sandboxes {
            let id = entry.sandbox_id.clone();
            match self.validate(&id, entry.desired.thread_key, entry.desired.policy) {
                Ok(config) => entries.push((config, entry.desired.version)),
                // A sandbox whose policy is refused is not served (and is removed if it was).
                Err(error) => rejected.push((id, error.to_string())),
            }
        }
        let (applied, removed) = self.proxy.registry.sync(request.as_of, entries, SYNC_GRACE);
        for id in &removed {
            self.unlisten(id);
        }
        let mut sandboxes = Vec::with_capacity(applied.len());
        for outcome in applied {
            // A proxy that restarted has the state but maybe not the sockets; one socket that
            // cannot be made does not keep the others from being made.
            let (sandbox, changed) = match outcome {
                Applied::Applied(sandbox) => (sandbox, true),
                Applied::Unchanged(sandbox) => (sandbox, false),
                Applied::Removed { .. } => continue,
            };
            match self.listen(&sandbox) {
                Ok(socket) => sandboxes.push(self.view(&sandbox, changed, socket)),
                Err(error) => rejected.push((sandbox.config.sandbox_id.clone(), error.to_string())),
            }
        }
        Ok(SyncResponse {
            sandboxes,
            removed,
            rejected,
        })
    }

    pub fn list(&self) -> Vec<SandboxApplied> {
        let mut sandboxes: Vec<SandboxApplied> = self
            .proxy
            .registry
            .list()
            .iter()
            .map(|s| self.view(s, false, self.socket_path(&s.config.sandbox_id)))
            .collect();
        sandboxes.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        sandboxes
    }

    /// A secret's value for `principal`, which must be served by this proxy, be a tool's
    /// (`tool-<name>`), and have the secret in its policy's `reveal`. Every reveal, given or
    /// refused (once the principal is known), is logged and audited under the principal: method
    /// `REVEAL`, no host, the secret's name in `secrets_swapped`, never its value.
    pub async fn reveal(&self, name: &str, principal: &str) -> Result<String, ControlError> {
        let Some(sandbox) = self.proxy.registry.get(principal) else {
            return Err(ControlError::UnknownPrincipal(principal.to_owned()));
        };
        let started = std::time::Instant::now();
        let allowed = principal.starts_with(TOOL_PRINCIPAL_PREFIX)
            && sandbox.config.policy.reveal.iter().any(|r| r == name);
        let outcome = if allowed {
            self.proxy
                .secrets()
                .get(name)
                .await
                .map_err(ControlError::Secret)
        } else {
            Err(ControlError::RevealNotAllowed {
                name: name.to_owned(),
                principal: principal.to_owned(),
            })
        };
        let (decision, status, reason) = match &outcome {
            Ok(_) => {
                tracing::info!(principal, secret = name, "secret revealed");
                (Decision::Allowed, 200, None)
            }
            Err(error) => {
                tracing::warn!(principal, secret = name, %error, "secret not revealed");
                (
                    Decision::Denied,
                    error.code().0.as_u16(),
                    Some(error.to_string()),
                )
            }
        };
        self.proxy.record_audit(AuditRecord {
            at: chrono::Utc::now(),
            sandbox_id: principal.to_owned(),
            thread_key: sandbox.config.thread_key.clone(),
            host: String::new(),
            port: 0,
            method: "REVEAL".into(),
            path: String::new(),
            status: Some(status),
            bytes_up: 0,
            bytes_down: 0,
            decision,
            reason,
            secrets_swapped: vec![name.to_owned()],
            duration_ms: started.elapsed().as_millis() as u64,
            body_placeholders: Vec::new(),
            body_unknown_placeholders: 0,
        });
        outcome
    }

    fn validate(
        &self,
        sandbox_id: &str,
        thread_key: Option<String>,
        policy: Policy,
    ) -> Result<SandboxConfig, ControlError> {
        if sandbox_id.is_empty()
            || sandbox_id.len() > MAX_SANDBOX_ID_BYTES
            || !sandbox_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ControlError::Invalid(format!(
                "sandbox ids are 1 to {MAX_SANDBOX_ID_BYTES} letters, digits, `-` or `_`"
            )));
        }
        policy
            .validate(|name| self.proxy.secrets().knows(name))
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        Ok(SandboxConfig {
            sandbox_id: sandbox_id.to_owned(),
            thread_key,
            proxy_credential: None,
            policy,
        })
    }

    /// `<socket_dir>/<folder>/proxy.sock`: a folder per sandbox, so a backend can mount the
    /// folder (which survives a proxy restart) without showing other sandboxes' sockets. The
    /// folder's name is a short hash of the sandbox id: socket paths must fit in 108 bytes.
    fn socket_path(&self, sandbox_id: &str) -> Option<PathBuf> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(sandbox_id.as_bytes());
        let folder: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.socket_dir
            .as_ref()
            .map(|dir| dir.join(folder).join("proxy.sock"))
    }

    /// Starts the sandbox's socket listener if it has none; returns the socket's path. The
    /// socket accepts connections when this returns.
    fn listen(&self, sandbox: &Sandbox) -> Result<Option<PathBuf>, ControlError> {
        let id = &sandbox.config.sandbox_id;
        let Some(path) = self.socket_path(id) else {
            return Ok(None);
        };
        let mut listeners = self.listeners.lock().expect("listeners lock");
        // Removed since it was applied (removal takes this lock too): no socket for it.
        if self.proxy.registry.get(id).is_none() {
            return Ok(None);
        }
        if listeners.contains_key(id) && path.exists() {
            return Ok(Some(path));
        }
        let failed = |reason: String| ControlError::Socket {
            sandbox_id: id.clone(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
            // Searchable, not listable: only a sandbox that has its folder mounted (or knows
            // its name) reaches its socket; other host users cannot list the others.
            for folder in [Some(dir), dir.parent()].into_iter().flatten() {
                std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o711))
                    .map_err(|e| failed(format!("{}: {e}", folder.display())))?;
            }
        }
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        // The sandbox connects as its own unprivileged host uid; only that sandbox has the
        // socket's folder mounted, so anyone who can reach the socket may use it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let stop = self.shutdown.child_token();
        if let Some(previous) = listeners.insert(id.clone(), stop.clone()) {
            previous.cancel();
        }
        let (proxy, id) = (self.proxy.clone(), id.clone());
        tokio::spawn(async move {
            if let Err(error) = proxy.serve_unix_listener(listener, id.clone(), stop).await {
                tracing::warn!(sandbox_id = %id, %error, "sandbox socket failed");
            }
        });
        Ok(Some(path))
    }

    /// Closes the sandbox's socket. Its folder stays: a running sandbox may have it mounted, and
    /// a later push makes the socket there again.
    fn unlisten(&self, sandbox_id: &str) {
        let mut listeners = self.listeners.lock().expect("listeners lock");
        if let Some(stop) = listeners.remove(sandbox_id) {
            stop.cancel();
        }
        if let Some(path) = self.socket_path(sandbox_id) {
            let _ = std::fs::remove_file(&path);
        }
    }

    fn view(&self, sandbox: &Sandbox, applied: bool, socket: Option<PathBuf>) -> SandboxApplied {
        SandboxApplied {
            sandbox_id: sandbox.config.sandbox_id.clone(),
            version: sandbox.version,
            applied,
            socket,
            proxy_credential: sandbox.proxy_credential.clone(),
            placeholders: sandbox
                .placeholders
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ControlError> {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ControlError::Unauthorized)?;
        let expected = self.token.as_deref().ok_or(ControlError::Unauthorized)?;
        if !presented.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(ControlError::Unauthorized)
        }
    }
}

/// The body as JSON, with a readable error for anything else.
fn json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|e| ControlError::Invalid(format!("bad JSON body: {e}")))
}

async fn apply(
    State(control): State<Arc<Control>>,
    Path(sandbox_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SandboxApplied>, ControlError> {
    control.authorize(&headers)?;
    let desired: DesiredSandbox = json(&body)?;
    let applied = control.apply(&sandbox_id, desired)?;
    if applied.applied {
        tracing::info!(sandbox_id = %applied.sandbox_id, version = applied.version, "sandbox policy applied");
    }
    Ok(Json(applied))
}

async fn remove(
    State(control): State<Arc<Control>>,
    Path(sandbox_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Removed>, ControlError> {
    control.authorize(&headers)?;
    let Query(query) = query
        .map_err(|_| ControlError::Invalid("give the removal's version: ?version=N".into()))?;
    let removed = control.remove(&sandbox_id, query.version);
    if removed {
        tracing::info!(%sandbox_id, version = query.version, "sandbox removed");
    }
    Ok(Json(Removed { removed }))
}

async fn sync(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SyncResponse>, ControlError> {
    control.authorize(&headers)?;
    let request: SyncRequest = json(&body)?;
    let response = control.sync(request)?;
    if !response.removed.is_empty() {
        tracing::info!(removed = ?response.removed, "sync removed sandboxes");
    }
    Ok(Json(response))
}

async fn list(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
) -> Result<Json<SandboxList>, ControlError> {
    control.authorize(&headers)?;
    Ok(Json(SandboxList {
        sandboxes: control.list(),
    }))
}

async fn reveal(
    State(control): State<Arc<Control>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RevealedSecret>, ControlError> {
    control.authorize(&headers)?;
    let request: RevealRequest = json(&body)?;
    let value = control.reveal(&name, &request.principal).await?;
    Ok(Json(RevealedSecret { value }))
}

/// Delivers the sandbox's audit records the proxy still holds to the server, then answers; a
/// sandbox the proxy holds nothing of (unknown, or already delivered) answers `records: 0`.
async fn flush_audit(
    State(control): State<Arc<Control>>,
    Path(sandbox_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AuditFlushed>, ControlError> {
    control.authorize(&headers)?;
    let records = control.proxy.flush_audit(&sandbox_id).await?;
    Ok(Json(AuditFlushed { records }))
}
