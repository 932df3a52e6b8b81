//! Wire types shared by the Centaur server, the sandbox runner and the `centaur` CLI.
//!
//! Everything here is part of the external contract in `SPEC.md`: thread keys, the events of the
//! thread stream, the JSON bodies of the HTTP API, and the runner-facing API.
#![cfg_attr(test, allow(clippy::unwrap_used))] // tests stop at the first surprise

pub mod api;
pub mod egress;
pub mod event;
pub mod runner;
pub mod sse;
pub mod thread_key;

pub use event::{ApprovalKind, Decision, Event, EventBody, ReadySource, Role};
pub use thread_key::{ThreadKey, ThreadKeyError};

use serde::{Deserialize, Serialize};

/// A coding-agent harness a sandbox can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Harness {
    Codex,
    ClaudeCode,
    Amp,
    Shell,
    Echo,
}

impl Harness {
    pub const ALL: [Harness; 5] = [
        Harness::Codex,
        Harness::ClaudeCode,
        Harness::Amp,
        Harness::Shell,
        Harness::Echo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Harness::Codex => "codex",
            Harness::ClaudeCode => "claude-code",
            Harness::Amp => "amp",
            Harness::Shell => "shell",
            Harness::Echo => "echo",
        }
    }
}

impl std::fmt::Display for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Harness {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Harness::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Harness::ALL.iter().map(|h| h.as_str()).collect();
                format!(
                    "unknown harness `{s}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Where an execution is in its lifecycle. `completed`, `failed` and `cancelled` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::Running)
    }
}

impl std::str::FromStr for ExecutionStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => ExecutionStatus::Queued,
            "running" => ExecutionStatus::Running,
            "completed" => ExecutionStatus::Completed,
            "failed" => ExecutionStatus::Failed,
            "cancelled" => ExecutionStatus::Cancelled,
            other => return Err(format!("unknown execution status `{other}`")),
        })
    }
}

/// The JSON body of every error answer: `{"error":{"code":"snake_case","message":"..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}
