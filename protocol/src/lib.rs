//! `centaur-protocol`: every shape that crosses a process, as types both ends use. The contract
//! they implement is written down in `docs/` (api.md, events.md, runner-api.md, proxy.md).
//!
//! - [`api`]: the bodies of the user-facing HTTP API (`/agent/*`, `/admin/*`).
//! - [`event`]: the events of a thread's stream, envelope and typed body.
//! - [`runner`]: the runner API and a sandbox's attachment.
//! - [`slack`]: Slack's wire formats (events, Socket Mode, the Web API, Block Kit, links), as
//!   the server's bridge and the tests' fake Slack use them.
//! - [`sse`]: reading Server-Sent Events frames.
//! - [`thread_key`]: thread keys, parsed and checked.
//! - [`tools`]: what a tool offers and a call's answer (`/tools`), and the frames between the
//!   server and a tool's Python worker.
//! - [`mcp`]: the Model Context Protocol messages `centaur-tool mcp` speaks to a harness over
//!   stdio (JSON-RPC 2.0: `initialize`, `tools/list`, `tools/call`).
//! - [`text`]: text a person decides on (an approval) with its invisible characters written
//!   out.
//! - [`egress`]: between the server and the egress proxy: its control API, the policy document
//!   and its host patterns, and audit records.
//!
//! Here at the root: [`Harness`], [`ExecutionStatus`] and the error body every API answers with
//! ([`ErrorBody`], its codes in [`ErrorCode`]).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

pub mod api;
pub mod egress;
pub mod event;
pub mod mcp;
pub mod runner;
pub mod slack;
pub mod sse;
pub mod text;
pub mod thread_key;
pub mod tools;

pub use event::{
    ApprovalKind, ApprovalResolution, AttachmentRef, Author, Decision, Event, EventBody,
    ReadySource, Role,
};
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

/// A name that is not one of an enum's wire names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`; expected one of {expected}")]
pub struct UnknownName {
    /// What was being named (`harness`, `execution status`, ...).
    pub kind: &'static str,
    pub value: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

impl UnknownName {
    /// `value` is none of `names`.
    pub fn new<'a>(
        kind: &'static str,
        value: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> UnknownName {
        UnknownName {
            kind,
            value: value.to_owned(),
            expected: names.into_iter().collect::<Vec<_>>().join(", "),
        }
    }
}

/// The variant of `all` whose wire name (`as_str`) is `value`.
fn by_name<T: Copy>(
    kind: &'static str,
    value: &str,
    all: &[T],
    as_str: fn(T) -> &'static str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|v| as_str(*v) == value)
        .ok_or_else(|| UnknownName::new(kind, value, all.iter().map(|v| as_str(*v))))
}

impl std::str::FromStr for Harness {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name("harness", s, &Harness::ALL, Harness::as_str)
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
    pub const ALL: [ExecutionStatus; 5] = [
        ExecutionStatus::Queued,
        ExecutionStatus::Running,
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Cancelled,
    ];

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
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(
            "execution status",
            s,
            &ExecutionStatus::ALL,
            ExecutionStatus::as_str,
        )
    }
}

/// The JSON body of every error answer: `{"error":{"code":"snake_case","message":"..."}}`.
/// The server's codes are [`ErrorCode`]; the egress proxy's control API answers the same shape
/// with its own codes ([`egress::control::ControlErrorCode`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody<C = ErrorCode> {
    pub error: ErrorDetail<C>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail<C = ErrorCode> {
    pub code: C,
    pub message: String,
}

/// Why the server refused a request: the `code` of its error answers (docs/api.md lists them
/// by HTTP status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // 400
    InvalidJson,
    InvalidRequest,
    InvalidBody,
    InvalidThreadKey,
    InvalidPath,
    InvalidQuery,
    InvalidLastEventId,
    InvalidSeq,
    InvalidPolicy,
    EventNotAllowed,
    /// A tool call's arguments do not match the method's schema; the message names the argument.
    InvalidArguments,
    // 401, 403
    Unauthorized,
    /// A Slack request whose signature or timestamp does not check out.
    InvalidSignature,
    Forbidden,
    /// A person denied the approval a tool call waited for.
    ToolCallDenied,
    // 404
    NotFound,
    ThreadNotFound,
    ExecutionNotFound,
    ApprovalNotFound,
    ApiKeyNotFound,
    EgressNotConfigured,
    /// The Slack bridge is off (`CENTAUR_SLACK_MODE`), or not in webhook mode.
    SlackNotConfigured,
    ToolNotFound,
    ToolMethodNotFound,
    // 405
    MethodNotAllowed,
    // 409
    ExecutionActive,
    ExecutionFinished,
    ExecutionNotStarted,
    SeqGap,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalExists,
    HarnessConflict,
    /// The harness cannot run here (its CLI or its model key is missing); the message names
    /// the fix.
    HarnessUnavailable,
    IdempotencyConflict,
    SpawnContended,
    // 413, 415, 429
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyStreams,
    // 500
    Internal,
    // 502
    /// The tool's method failed; the message is its error.
    ToolFailed,
    EgressPolicyRefused,
    EgressFailed,
    // 503
    DatabaseUnavailable,
    NotReady,
    SandboxCapacity,
    SandboxBackendUnavailable,
    EgressUnavailable,
    /// The tool is loading or broken (`GET /tools` says why), or its worker could not start.
    ToolUnavailable,
    // 504
    ToolTimeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidThreadKey => "invalid_thread_key",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidLastEventId => "invalid_last_event_id",
            ErrorCode::InvalidSeq => "invalid_seq",
            ErrorCode::InvalidPolicy => "invalid_policy",
            ErrorCode::EventNotAllowed => "event_not_allowed",
            ErrorCode::InvalidArguments => "invalid_arguments",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ToolCallDenied => "tool_call_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ThreadNotFound => "thread_not_found",
            ErrorCode::ExecutionNotFound => "execution_not_found",
            ErrorCode::ApprovalNotFound => "approval_not_found",
            ErrorCode::ApiKeyNotFound => "api_key_not_found",
            ErrorCode::EgressNotConfigured => "egress_not_configured",
            ErrorCode::SlackNotConfigured => "slack_not_configured",
            ErrorCode::ToolNotFound => "tool_not_found",
            ErrorCode::ToolMethodNotFound => "tool_method_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ExecutionActive => "execution_active",
            ErrorCode::ExecutionFinished => "execution_finished",
            ErrorCode::ExecutionNotStarted => "execution_not_started",
            ErrorCode::SeqGap => "seq_gap",
            ErrorCode::ApprovalAlreadyDecided => "approval_already_decided",
            ErrorCode::ApprovalExpired => "approval_expired",
            ErrorCode::ApprovalExists => "approval_exists",
            ErrorCode::HarnessConflict => "harness_conflict",
            ErrorCode::HarnessUnavailable => "harness_unavailable",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::SpawnContended => "spawn_contended",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::Internal => "internal",
            ErrorCode::ToolFailed => "tool_failed",
            ErrorCode::EgressPolicyRefused => "egress_policy_refused",
            ErrorCode::EgressFailed => "egress_failed",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::SandboxCapacity => "sandbox_capacity",
            ErrorCode::SandboxBackendUnavailable => "sandbox_backend_unavailable",
            ErrorCode::EgressUnavailable => "egress_unavailable",
            ErrorCode::ToolUnavailable => "tool_unavailable",
            ErrorCode::ToolTimeout => "tool_timeout",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_their_snake_case_names_on_the_wire() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::DatabaseUnavailable,
                message: "m".into(),
            },
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "database_unavailable", "message": "m"}})
        );
        for name in [
            "invalid_last_event_id",
            "api_key_not_found",
            "too_many_streams",
            "sandbox_backend_unavailable",
        ] {
            let code: ErrorCode = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(code.as_str(), name);
        }
        // Another service's codes travel in the same shape.
        let other: ErrorBody<String> = serde_json::from_value(
            serde_json::json!({"error": {"code": "sandbox_removed", "message": "m"}}),
        )
        .unwrap();
        assert_eq!(other.error.code, "sandbox_removed");
    }

    #[test]
    fn unknown_names_are_refused_naming_the_choices() {
        let error = "clippy".parse::<Harness>().unwrap_err();
        assert_eq!(error.kind, "harness");
        assert!(error.expected.contains("claude-code"), "{error}");
        for status in ExecutionStatus::ALL {
            assert_eq!(status.as_str().parse::<ExecutionStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for harness in Harness::ALL {
            assert_eq!(serde_json::to_value(harness).unwrap(), harness.as_str());
        }
    }
}
