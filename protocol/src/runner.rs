//! The runner-facing API (`/runner/v1/*`): how the runner inside a sandbox claims work, posts
//! events in batches and reports the end of an execution. See `docs/runner-api.md`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{EventBody, ExecutionStatus, Harness, Role, ThreadKey};

/// `POST /runner/v1/threads/{thread_key}/claim`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Wait up to this long for an execution to be queued (long poll). At most 60 s.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// An execution handed to a runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub execution_id: Uuid,
    pub thread_key: ThreadKey,
    pub harness: Harness,
    pub deadline_at: DateTime<Utc>,
    /// The user messages this execution answers, oldest first.
    pub input: Vec<InputMessage>,
    /// Highest event `seq` the server has stored for this execution (0 for a fresh claim).
    pub runner_seq: i64,
    /// The `execution.started` event; subscribe to the thread stream after it for control
    /// events (interrupts, approval decisions, new messages).
    pub started_event_id: i64,
    /// The thread's approval policy for this execution (the one it was given last, else the
    /// server's default): it wins over the [`Attachment`]'s, which only says how the sandbox
    /// started. Absent from an older server: the runner keeps its attachment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<ApprovalPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputMessage {
    pub message_id: Uuid,
    pub role: Role,
    pub text: String,
}

/// One event from the runner. `seq` starts at 1 and grows by one per event of an execution; the
/// server stores each `seq` once, so a batch can be retried safely after a lost answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerEvent {
    pub seq: i64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// How an execution ended, as the runner reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Finish {
    Completed {
        result_text: String,
    },
    /// `output`: what the turn produced before it failed (see `execution.failed`).
    Failed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
    },
    Cancelled {
        reason: String,
    },
}

/// `POST /runner/v1/executions/{execution_id}/events`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    #[serde(default)]
    pub events: Vec<RunnerEvent>,
    /// Ends the execution after the events, in the same transaction.
    #[serde(default)]
    pub finish: Option<Finish>,
    /// User messages delivered to this running turn as steering since the last batch: the
    /// server records them as this execution's input, so the next turn does not start with
    /// them again. Ids of another thread's messages, or of messages already taken by a turn or
    /// withdrawn, change nothing; a batch for an execution that already ended still records
    /// them (the agent saw them before it learned of the end). Absent when empty (a server
    /// older than this field refuses it: every server replica is upgraded before the sandbox
    /// image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steered: Vec<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchAccepted {
    /// Events stored by this call.
    pub accepted: usize,
    /// Events skipped because their `seq` was stored before.
    pub duplicates: usize,
    pub runner_seq: i64,
    pub status: ExecutionStatus,
}

/// `GET /runner/v1/executions/{execution_id}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerExecution {
    pub execution_id: Uuid,
    pub thread_key: ThreadKey,
    pub status: ExecutionStatus,
    pub runner_seq: i64,
    pub deadline_at: DateTime<Utc>,
}

/// When the harness must ask before acting (running a command, changing files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    /// Never ask; the sandbox is the boundary.
    Never,
    /// Ask when the harness itself decides an action needs it.
    #[default]
    OnRequest,
    /// Ask before every command and file change.
    Always,
}

impl ApprovalPolicy {
    pub const ALL: [ApprovalPolicy; 3] = [
        ApprovalPolicy::Never,
        ApprovalPolicy::OnRequest,
        ApprovalPolicy::Always,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalPolicy::Never => "never",
            ApprovalPolicy::OnRequest => "on-request",
            ApprovalPolicy::Always => "always",
        }
    }
}

impl std::str::FromStr for ApprovalPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(ApprovalPolicy::Never),
            "on-request" => Ok(ApprovalPolicy::OnRequest),
            "always" => Ok(ApprovalPolicy::Always),
            other => Err(format!(
                "unknown approval policy `{other}` (never, on-request, always)"
            )),
        }
    }
}

/// What a sandbox's runner needs to serve its thread. The backend hands it over when the
/// sandbox starts, or when a warm sandbox is claimed: one JSON line on the runner's stdin.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub sandbox_id: Uuid,
    pub thread_key: ThreadKey,
    pub harness: Harness,
    /// The thread-scoped sandbox token (`cst_…`).
    pub token: String,
    /// Extra environment for the harness: credential placeholders, never real values.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub approval_policy: ApprovalPolicy,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("sandbox_id", &self.sandbox_id)
            .field("thread_key", &self.thread_key)
            .field("harness", &self.harness)
            .field("token", &"<redacted>")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("approval_policy", &self.approval_policy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;

    /// A batch without steering is the batch an older server takes; with it, the ids are listed.
    #[test]
    fn a_batch_names_its_steered_messages_only_when_there_are_some() {
        let batch = EventBatch::default();
        assert_eq!(
            serde_json::to_value(&batch).unwrap(),
            serde_json::json!({"events": [], "finish": null})
        );
        let id = Uuid::now_v7();
        let batch: EventBatch =
            serde_json::from_value(serde_json::json!({"events": [], "steered": [id]})).unwrap();
        assert_eq!(batch.steered, [id]);
        assert!(serde_json::from_value::<EventBatch>(serde_json::json!({"stered": [id]})).is_err());
    }
}
