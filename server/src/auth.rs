//! Who is calling: the admin key, an API key, or a sandbox token scoped to one thread.
//!
//! Tokens are `cak_<id>_<secret>` (API keys) and `cst_<sandbox_id>_<secret>` (sandbox tokens);
//! only the SHA-256 of the secret is stored, and it is compared in constant time. Anything else
//! is checked against the admin key.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use centaur_protocol::ThreadKey;
use uuid::Uuid;

use crate::app::AppState;
use crate::crypto::{random_hex, secrets_match, sha256};
use crate::error::{ApiError, ApiResult};
use crate::runner_socket::SocketPeer;

const API_KEY_PREFIX: &str = "cak_";
const SANDBOX_TOKEN_PREFIX: &str = "cst_";

#[derive(Clone, Debug)]
pub enum Principal {
    Admin,
    ApiKey {
        id: Uuid,
        name: String,
    },
    /// The egress proxy: may report audit records, nothing else.
    Proxy,
    /// A sandbox runner: may read its own thread and use the runner API for it, nothing else.
    Sandbox {
        sandbox_id: Uuid,
        thread_id: i64,
        thread_key: ThreadKey,
    },
}

impl Principal {
    /// How this caller is named in `decided_by` and logs.
    pub fn label(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::ApiKey { name, .. } => format!("api_key:{name}"),
            Principal::Proxy => "proxy".into(),
            Principal::Sandbox { sandbox_id, .. } => format!("sandbox:{sandbox_id}"),
        }
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        match self {
            Principal::Admin => Ok(()),
            Principal::ApiKey { .. } | Principal::Proxy | Principal::Sandbox { .. } => {
                Err(ApiError::forbidden("this needs the admin key"))
            }
        }
    }

    /// People and their tools (admin key, API keys); not sandboxes.
    pub fn require_user(&self) -> ApiResult<()> {
        match self {
            Principal::Admin | Principal::ApiKey { .. } => Ok(()),
            Principal::Sandbox { .. } => Err(ApiError::forbidden(
                "a sandbox token may only read its own thread and use the runner API",
            )),
            Principal::Proxy => Err(ApiError::forbidden(
                "the proxy token may only report audit records",
            )),
        }
    }

    /// Listing and calling tools: users, and sandboxes (whose calls are recorded in their
    /// thread).
    pub fn require_tool_caller(&self) -> ApiResult<()> {
        match self {
            Principal::Admin | Principal::ApiKey { .. } | Principal::Sandbox { .. } => Ok(()),
            Principal::Proxy => Err(ApiError::forbidden(
                "the proxy token may only report audit records",
            )),
        }
    }

    /// Reading a thread: users, and the sandbox of that thread.
    pub fn require_read(&self, thread_key: &ThreadKey) -> ApiResult<()> {
        match self {
            Principal::Admin | Principal::ApiKey { .. } => Ok(()),
            Principal::Sandbox {
                thread_key: own, ..
            } if own == thread_key => Ok(()),
            Principal::Sandbox { .. } => Err(ApiError::forbidden(
                "a sandbox token can only access its own thread",
            )),
            Principal::Proxy => Err(ApiError::forbidden(
                "the proxy token may only report audit records",
            )),
        }
    }

    /// The runner API for a thread: the sandbox of that thread, or the admin.
    pub fn require_runner(&self, thread_key: &ThreadKey) -> ApiResult<()> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Sandbox {
                thread_key: own, ..
            } if own == thread_key => Ok(()),
            Principal::Sandbox { .. } => Err(ApiError::forbidden(
                "a sandbox token can only access its own thread",
            )),
            Principal::ApiKey { .. } | Principal::Proxy => Err(ApiError::forbidden(
                "the runner API takes a sandbox token or the admin key",
            )),
        }
    }

    /// Reporting egress audit: the proxy, or the admin.
    pub fn require_proxy(&self) -> ApiResult<()> {
        match self {
            Principal::Admin | Principal::Proxy => Ok(()),
            Principal::ApiKey { .. } | Principal::Sandbox { .. } => Err(ApiError::forbidden(
                "this needs the proxy token or the admin key",
            )),
        }
    }

    pub fn sandbox_id(&self) -> Option<Uuid> {
        match self {
            Principal::Sandbox { sandbox_id, .. } => Some(*sandbox_id),
            Principal::Admin | Principal::ApiKey { .. } | Principal::Proxy => None,
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let principal = authenticate(state, token).await?;
        match parts.extensions.get::<ConnectInfo<SocketPeer>>() {
            Some(ConnectInfo(peer)) => on_runner_socket(state, principal, *peer),
            None => Ok(principal),
        }
    }
}

/// The runner socket is mounted into every sandbox, so it takes sandbox tokens only, and each
/// only from its own sandbox's runner process: code the runner runs cannot claim turns or post
/// events even with a token it stole.
fn on_runner_socket(
    state: &AppState,
    principal: Principal,
    peer: SocketPeer,
) -> ApiResult<Principal> {
    match &principal {
        Principal::Sandbox { sandbox_id, .. } => {
            let runner = peer
                .pid
                .is_some_and(|pid| state.backend.is_runner(*sandbox_id, pid));
            if runner {
                Ok(principal)
            } else {
                tracing::warn!(%sandbox_id, peer_pid = ?peer.pid, "a sandbox token was used on the runner socket by another process than that sandbox's runner");
                Err(ApiError::forbidden(
                    "on the runner socket a sandbox token is taken only from that sandbox's runner process",
                ))
            }
        }
        Principal::Admin | Principal::ApiKey { .. } | Principal::Proxy => Err(ApiError::forbidden(
            "the runner socket takes only sandbox tokens",
        )),
    }
}

async fn authenticate(state: &AppState, token: &str) -> ApiResult<Principal> {
    if let Some(rest) = token.strip_prefix(API_KEY_PREFIX) {
        let (id, secret) = split_token(rest).ok_or(ApiError::Unauthorized)?;
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT name, secret_hash FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&state.pool)
        .await?;
        return match row {
            Some((name, hash)) if secrets_match(&sha256(secret.as_bytes()), &hash) => {
                Ok(Principal::ApiKey { id, name })
            }
            _ => Err(ApiError::Unauthorized),
        };
    }
    if let Some(rest) = token.strip_prefix(SANDBOX_TOKEN_PREFIX) {
        let (sandbox_id, secret) = split_token(rest).ok_or(ApiError::Unauthorized)?;
        let row: Option<(Vec<u8>, i64, String)> = sqlx::query_as(
            "SELECT s.token_hash, s.thread_id, t.thread_key FROM sandboxes s \
             JOIN threads t ON t.id = s.thread_id WHERE s.id = $1 AND s.state <> 'released'",
        )
        .bind(sandbox_id)
        .fetch_optional(&state.pool)
        .await?;
        return match row {
            Some((hash, thread_id, key)) if secrets_match(&sha256(secret.as_bytes()), &hash) => {
                Ok(Principal::Sandbox {
                    sandbox_id,
                    thread_id,
                    thread_key: ThreadKey::parse(&key).map_err(|e| ApiError::Internal(e.into()))?,
                })
            }
            _ => Err(ApiError::Unauthorized),
        };
    }
    if let Some(admin) = &state.config.admin_api_key
        && secrets_match(token.as_bytes(), admin.expose().as_bytes())
    {
        return Ok(Principal::Admin);
    }
    match &state.config.proxy_token {
        Some(proxy) if secrets_match(token.as_bytes(), proxy.expose().as_bytes()) => {
            Ok(Principal::Proxy)
        }
        _ => Err(ApiError::Unauthorized),
    }
}

fn split_token(rest: &str) -> Option<(Uuid, &str)> {
    let (id, secret) = rest.split_once('_')?;
    let id = Uuid::try_parse(id).ok()?;
    (!secret.is_empty()).then_some((id, secret))
}

/// A freshly minted token: the string to hand out once, and the hash to store.
pub struct MintedToken {
    pub token: String,
    pub secret_hash: Vec<u8>,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MintedToken(<redacted>)")
    }
}

fn mint(prefix: &str, id: Uuid) -> MintedToken {
    let secret = random_hex(32);
    MintedToken {
        token: format!("{prefix}{}_{secret}", id.simple()),
        secret_hash: sha256(secret.as_bytes()).to_vec(),
    }
}

pub fn mint_api_key(id: Uuid) -> MintedToken {
    mint(API_KEY_PREFIX, id)
}

pub fn mint_sandbox_token(sandbox_id: Uuid) -> MintedToken {
    mint(SANDBOX_TOKEN_PREFIX, sandbox_id)
}
