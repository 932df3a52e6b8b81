//! The proxy's control API: how the server tells the proxy which sandboxes exist and what each
//! may reach (`docs/proxy.md` lists the routes).
//!
//! | route | body | answer |
//! |---|---|---|
//! | `PUT /v1/sandboxes/{id}` | [`DesiredSandbox`] | [`SandboxApplied`] |
//! | `DELETE /v1/sandboxes/{id}?version=N` | | [`Removed`] |
//! | `PUT /v1/sandboxes` | [`SyncRequest`] | [`SyncResponse`] |
//! | `GET /v1/sandboxes` | | [`SandboxList`] |
//! | `POST /v1/sandboxes/{id}/audit/flush` | | [`AuditFlushed`] |
//! | `POST /v1/secrets/{name}/reveal` | [`RevealRequest`] | [`RevealedSecret`] |
//! | `GET /healthz` | | [`crate::api::OkResponse`] (no token needed) |
//!
//! Errors are [`crate::ErrorBody`] with a [`ControlErrorCode`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::policy::Policy;

/// The answer to `POST /v1/sandboxes/{id}/audit/flush`: the proxy has delivered every audit
/// record of that sandbox it still held to the server (`POST /proxy/v1/audit`) before it
/// answered, so a turn's refusals are on its thread before the turn's end is. An unknown
/// sandbox has nothing to flush (`records: 0`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFlushed {
    /// How many records were delivered by this call.
    pub records: usize,
}

/// The body of `POST /v1/secrets/{name}/reveal`: the server asks for a secret's real value on
/// behalf of `principal` (a tool, `tool-<name>`, whose manifest declares the secret
/// `reveal = true`: a credential that is not HTTP, such as a database URL). The principal must
/// be registered at the proxy, be a tool's (`tool-…`), and its policy in force must list the
/// secret in `reveal`; the reveal is logged and audited under it, never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealRequest {
    pub principal: String,
}

/// The answer to a reveal: the secret's value, read from the proxy's secret sources (and their
/// cache) as for a swap.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedSecret {
    pub value: String,
}

impl std::fmt::Debug for RevealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealedSecret")
            .field("value", &"<redacted>")
            .finish()
    }
}

/// The state the server wants for one sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredSandbox {
    /// Increases with every change anywhere in the deployment.
    pub version: u64,
    #[serde(default)]
    pub thread_key: Option<String>,
    #[serde(default)]
    pub policy: Policy,
}

/// The sandbox's state after a push: what its environment and the backend need.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxApplied {
    pub sandbox_id: String,
    /// The version in force (newer than the push when the push was stale).
    pub version: u64,
    /// Whether this push changed the state.
    pub applied: bool,
    /// The Unix socket serving this sandbox (local backend), if the proxy has a socket folder.
    pub socket: Option<PathBuf>,
    /// For `Proxy-Authorization: Basic <sandbox_id:credential>` on the TCP listener.
    pub proxy_credential: String,
    /// Secret name → the placeholder the sandbox's environment holds.
    pub placeholders: BTreeMap<String, String>,
}

impl std::fmt::Debug for SandboxApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxApplied")
            .field("sandbox_id", &self.sandbox_id)
            .field("version", &self.version)
            .field("applied", &self.applied)
            .field("socket", &self.socket)
            .field("proxy_credential", &"<redacted>")
            .field("secrets", &self.placeholders.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncEntry {
    pub sandbox_id: String,
    #[serde(flatten)]
    pub desired: DesiredSandbox,
}

/// The server's whole desired state, as of version `as_of`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub as_of: u64,
    pub sandboxes: Vec<SyncEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncResponse {
    pub sandboxes: Vec<SandboxApplied>,
    /// Sandboxes the proxy held that the server no longer wants.
    pub removed: Vec<String>,
    /// Entries the proxy refused (sandbox id, reason); the rest of the sync still applies.
    #[serde(default)]
    pub rejected: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxApplied>,
}

/// The answer to a removal: whether the sandbox was there at an older version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub removed: bool,
}

/// The query of a removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveQuery {
    pub version: u64,
}

/// The `code` of a control API error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlErrorCode {
    Unauthorized,
    InvalidRequest,
    SandboxRemoved,
    SocketFailed,
    /// A flush could not deliver the sandbox's audit records to the server (they stay queued).
    AuditUndelivered,
    /// A reveal named a principal the proxy does not serve (push its policy first).
    UnknownPrincipal,
    /// A reveal named a secret the proxy has no source for.
    UnknownSecret,
    /// A reveal's secret could not be read from its source.
    SecretUnavailable,
    /// A reveal for a principal that is not a tool's, or whose policy in force does not list
    /// the secret in `reveal` (403).
    RevealNotAllowed,
}

impl ControlErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlErrorCode::Unauthorized => "unauthorized",
            ControlErrorCode::InvalidRequest => "invalid_request",
            ControlErrorCode::SandboxRemoved => "sandbox_removed",
            ControlErrorCode::SocketFailed => "socket_failed",
            ControlErrorCode::AuditUndelivered => "audit_undelivered",
            ControlErrorCode::UnknownPrincipal => "unknown_principal",
            ControlErrorCode::UnknownSecret => "unknown_secret",
            ControlErrorCode::SecretUnavailable => "secret_unavailable",
            ControlErrorCode::RevealNotAllowed => "reveal_not_allowed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revealed value never shows in logs; the new codes have their wire names.
    #[test]
    fn a_revealed_secret_is_redacted_and_the_reveal_codes_are_named() {
        let revealed = RevealedSecret {
            value: "postgres://u:hunter2@db/app".into(),
        };
        assert!(!format!("{revealed:?}").contains("hunter2"));
        assert_eq!(
            serde_json::to_value(&revealed).unwrap(),
            serde_json::json!({"value": "postgres://u:hunter2@db/app"})
        );
        for code in [
            ControlErrorCode::UnknownPrincipal,
            ControlErrorCode::UnknownSecret,
            ControlErrorCode::SecretUnavailable,
            ControlErrorCode::RevealNotAllowed,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
        assert!(
            serde_json::from_value::<RevealRequest>(
                serde_json::json!({"principal": "tool-x", "x": 1})
            )
            .is_err()
        );
    }
}
