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
    Completed { result_text: String },
    Failed { error: String },
    Cancelled { reason: String },
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
