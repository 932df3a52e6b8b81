//! Bodies of the user-facing HTTP API (`/agent/*`, `/admin/*`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::egress::{EgressDecision, Policy};
use crate::{
    Decision, ExecutionStatus, Harness, ReadySource, Role, ThreadKey, UnknownName, by_name,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    pub thread_key: ThreadKey,
    #[serde(default)]
    pub harness: Option<Harness>,
    #[serde(default)]
    pub persona: Option<String>,
    #[serde(default)]
    pub spawn_id: Option<String>,
    /// When the thread's harness asks before acting; kept for the thread, in force from its
    /// next sandbox. Without it, the thread's earlier choice or the deployment's default.
    #[serde(default)]
    pub approval_policy: Option<crate::runner::ApprovalPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnResponse {
    pub thread_key: ThreadKey,
    pub sandbox_id: Uuid,
    pub harness: Harness,
    pub ready_source: ReadySource,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    pub thread_key: ThreadKey,
    #[serde(default)]
    pub role: Option<Role>,
    pub text: String,
    #[serde(default)]
    pub client_message_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    pub message_id: Uuid,
    pub event_id: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub thread_key: ThreadKey,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub harness: Option<Harness>,
    #[serde(default)]
    pub max_duration_ms: Option<u64>,
    /// As in [`SpawnRequest::approval_policy`].
    #[serde(default)]
    pub approval_policy: Option<crate::runner::ApprovalPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    pub execution_id: Uuid,
    pub status: ExecutionStatus,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterruptRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// The query of `POST /agent/threads/{thread_key}/interrupt`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterruptQuery {
    /// Also withdraw the messages waiting for a turn, so the next turn does not start with
    /// them (the thread's queue).
    #[serde(default)]
    pub all: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterruptResponse {
    pub interrupted: bool,
    pub execution_id: Option<Uuid>,
    /// With `all`: how many waiting messages were withdrawn (0 without it).
    #[serde(default)]
    pub withdrawn_messages: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecisionRequest {
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OkResponse {
    pub ok: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseResponse {
    pub released: bool,
    pub sandbox_id: Option<Uuid>,
}

/// Whether a thread has work in flight, and how its last turn went when it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadStatus {
    Idle,
    Queued,
    Running,
    /// Nothing in flight, and the last turn failed.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadSummary {
    pub thread_key: ThreadKey,
    pub platform: String,
    pub harness: Harness,
    pub persona: Option<String>,
    pub status: ThreadStatus,
    /// What the thread is about: its first message's first line, shortened (absent until it
    /// has a message).
    #[serde(default)]
    pub title: Option<String>,
    /// Approvals asked and not decided yet.
    #[serde(default)]
    pub waiting_approvals: u32,
    /// For a thread that lives in Slack: its channel and who started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<crate::slack::SlackOrigin>,
    pub created_at: DateTime<Utc>,
    /// The last event of the thread's own work (messages, turns, approvals); not the stack's
    /// shutdown releasing its sandbox.
    pub last_activity_at: DateTime<Utc>,
    pub last_event_id: i64,
}

/// `GET /agent/harnesses`: the harnesses this server offers, and whether each can run a turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HarnessList {
    pub harnesses: Vec<HarnessInfo>,
    /// The harness a new thread gets when none is named.
    pub default: Harness,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HarnessInfo {
    pub harness: Harness,
    pub available: bool,
    /// Why it cannot run, naming the fix (`needs an OpenAI key (`centaur dev keys`)`); absent
    /// when available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadList {
    pub threads: Vec<ThreadSummary>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxView {
    pub sandbox_id: Uuid,
    pub backend: SandboxBackendKind,
    pub state: SandboxState,
    pub ready_source: ReadySource,
    pub created_at: DateTime<Utc>,
}

/// Where a sandbox runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxBackendKind {
    /// bubblewrap on the server's machine.
    Local,
    /// Started by someone else; its runner attached on its own.
    External,
}

impl SandboxBackendKind {
    pub const ALL: [SandboxBackendKind; 2] =
        [SandboxBackendKind::Local, SandboxBackendKind::External];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxBackendKind::Local => "local",
            SandboxBackendKind::External => "external",
        }
    }
}

impl std::fmt::Display for SandboxBackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SandboxBackendKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(
            "sandbox backend",
            s,
            &SandboxBackendKind::ALL,
            SandboxBackendKind::as_str,
        )
    }
}

/// Whether a sandbox still serves its thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Ready,
    /// Stopped; the thread gets a new sandbox on its next turn.
    Released,
}

impl SandboxState {
    pub const ALL: [SandboxState; 2] = [SandboxState::Ready, SandboxState::Released];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Ready => "ready",
            SandboxState::Released => "released",
        }
    }
}

impl std::str::FromStr for SandboxState {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name("sandbox state", s, &SandboxState::ALL, SandboxState::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionView {
    pub execution_id: Uuid,
    pub status: ExecutionStatus,
    pub harness: Harness,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline_at: DateTime<Utc>,
    pub result_text: Option<String>,
    pub error: Option<String>,
    pub cancel_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadDetail {
    #[serde(flatten)]
    pub summary: ThreadSummary,
    pub sandbox: Option<SandboxView>,
    pub last_execution: Option<ExecutionView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    pub name: String,
}

/// Answer to creating an API key: the only time the token is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub name: String,
    pub token: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
}

/// `GET`/`PUT`/`DELETE /admin/threads/{thread_key}/egress-policy`: the thread's egress policy
/// (see docs/proxy.md for its shape) and where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EgressPolicyView {
    pub thread_key: ThreadKey,
    pub source: PolicySource,
    pub policy: Policy,
    /// The live sandbox the policy is in force on, if any.
    pub sandbox_id: Option<Uuid>,
    /// The version pushed to the proxy for that sandbox.
    pub version: Option<i64>,
}

/// Whose egress policy is in force on a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// The thread's own, set by an admin.
    Thread,
    /// The deployment's default (`CENTAUR_EGRESS_POLICY`).
    Default,
}

/// `GET /admin/egress-audit`: one page of the egress proxy's audit, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EgressAuditPage {
    pub records: Vec<EgressAuditEntry>,
    /// Pass as `after` to get what comes next (the newest record's id here, or the `after`
    /// that was asked for when there is nothing new).
    pub next_after: i64,
}

/// One request (or tunnel) through the egress proxy, as stored. Secret names, never values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EgressAuditEntry {
    /// Grows with every record stored: the cursor of `after`.
    pub id: i64,
    /// When the proxy saw the request.
    pub at: DateTime<Utc>,
    pub sandbox_id: String,
    /// The thread of the sandbox, as the server gave it; `None` for a sandbox it did not start.
    pub thread_key: Option<String>,
    /// The thread's execution that was running at `at`, if any.
    pub execution_id: Option<Uuid>,
    pub host: String,
    pub port: u16,
    pub method: String,
    /// Without the query.
    pub path: String,
    pub status: Option<u16>,
    pub decision: EgressDecision,
    pub reason: Option<String>,
    /// The secrets whose placeholders were swapped for their values (names only).
    pub secrets: Vec<String>,
    /// The secrets whose placeholders the request body carried, forwarded unchanged (names).
    #[serde(default)]
    pub body_placeholders: Vec<String>,
    /// Placeholder-shaped tokens in the body that were not this sandbox's.
    #[serde(default)]
    pub body_unknown_placeholders: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_and_policy_enums_keep_their_wire_strings() {
        for kind in SandboxBackendKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(kind.as_str().parse::<SandboxBackendKind>(), Ok(kind));
        }
        for state in SandboxState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
            assert_eq!(state.as_str().parse::<SandboxState>(), Ok(state));
        }
        let view: EgressPolicyView = serde_json::from_value(serde_json::json!({
            "thread_key": "api:t", "source": "default", "policy": {},
            "sandbox_id": null, "version": null
        }))
        .unwrap();
        assert_eq!(view.source, PolicySource::Default);
        assert_eq!(view.policy, Policy::default());
    }
}
