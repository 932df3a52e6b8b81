//! Bodies of the user-facing HTTP API (`/agent/*`, `/admin/*`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Decision, ExecutionStatus, Harness, ReadySource, Role, ThreadKey};

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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterruptResponse {
    pub interrupted: bool,
    pub execution_id: Option<Uuid>,
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

/// Whether a thread has work in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadStatus {
    Idle,
    Queued,
    Running,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadSummary {
    pub thread_key: ThreadKey,
    pub platform: String,
    pub harness: Harness,
    pub persona: Option<String>,
    pub status: ThreadStatus,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub last_event_id: i64,
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
    pub backend: String,
    pub state: String,
    pub ready_source: ReadySource,
    pub created_at: DateTime<Utc>,
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
    /// `thread` (its own) or `default` (the deployment's).
    pub source: String,
    pub policy: serde_json::Value,
    /// The live sandbox the policy is in force on, if any.
    pub sandbox_id: Option<Uuid>,
    /// The version pushed to the proxy for that sandbox.
    pub version: Option<i64>,
}
