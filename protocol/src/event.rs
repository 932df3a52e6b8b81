//! The events of a thread's stream (`docs/events.md`).
//!
//! On the wire every event is one JSON object: the envelope fields (`event_id`, `thread_key`,
//! `type`, `created_at`, `execution_id`) plus the fields of its type. [`EventBody`] is the typed
//! part; [`Event`] is the whole object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{Harness, ThreadKey, UnknownName, by_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Assistant, Role::System];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name("role", s, &Role::ALL, Role::as_str)
    }
}

/// How a sandbox came to serve a spawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadySource {
    Reused,
    WarmPool,
    Cold,
}

impl ReadySource {
    pub const ALL: [ReadySource; 3] = [
        ReadySource::Reused,
        ReadySource::WarmPool,
        ReadySource::Cold,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReadySource::Reused => "reused",
            ReadySource::WarmPool => "warm_pool",
            ReadySource::Cold => "cold",
        }
    }
}

impl std::str::FromStr for ReadySource {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name("ready source", s, &ReadySource::ALL, ReadySource::as_str)
    }
}

/// A file saved to a thread (by a tool call), as its events name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub attachment_id: Uuid,
    pub name: String,
    pub mime: String,
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    Command,
    FileChange,
    Tool,
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Command => "command",
            ApprovalKind::FileChange => "file_change",
            ApprovalKind::Tool => "tool",
        }
    }
}

/// The person behind a message or a decision that came from a chat platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "snake_case")]
pub enum Author {
    Slack(crate::slack::SlackUser),
}

impl Author {
    /// `Ann Lee`, else the platform's id.
    pub fn label(&self) -> &str {
        match self {
            Author::Slack(user) => user.label(),
        }
    }

    /// How a decision by this person is recorded in `decided_by`: `slack:U123 (Ann Lee)`.
    pub fn decided_by(&self) -> String {
        match self {
            Author::Slack(user) => match &user.name {
                Some(name) => format!("slack:{} ({name})", user.id),
                None => format!("slack:{}", user.id),
            },
        }
    }
}

/// A person's answer to an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    ApproveForSession,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        ApprovalResolution::from(self).as_str()
    }
}

/// How an approval request ended: a person's [`Decision`], or `cancelled` when its execution
/// ended first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalResolution {
    Approve,
    ApproveForSession,
    Deny,
    Cancelled,
}

impl ApprovalResolution {
    pub const ALL: [ApprovalResolution; 4] = [
        ApprovalResolution::Approve,
        ApprovalResolution::ApproveForSession,
        ApprovalResolution::Deny,
        ApprovalResolution::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalResolution::Approve => "approve",
            ApprovalResolution::ApproveForSession => "approve_for_session",
            ApprovalResolution::Deny => "deny",
            ApprovalResolution::Cancelled => "cancelled",
        }
    }
}

impl From<Decision> for ApprovalResolution {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Approve => ApprovalResolution::Approve,
            Decision::ApproveForSession => ApprovalResolution::ApproveForSession,
            Decision::Deny => ApprovalResolution::Deny,
        }
    }
}

impl std::fmt::Display for ApprovalResolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApprovalResolution {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(
            "approval resolution",
            s,
            &ApprovalResolution::ALL,
            ApprovalResolution::as_str,
        )
    }
}

/// The typed part of an event. `type` is the tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventBody {
    #[serde(rename = "thread.created")]
    ThreadCreated { harness: Harness },
    #[serde(rename = "message.created")]
    MessageCreated {
        message_id: Uuid,
        role: Role,
        text: String,
        /// Who wrote it, when the message came from a chat platform (a Slack user).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<Author>,
    },
    #[serde(rename = "sandbox.assigned")]
    SandboxAssigned {
        sandbox_id: Uuid,
        ready_source: ReadySource,
    },
    /// `reason` is text: `released` when a person released it; otherwise what the reaper
    /// measured (idle or lifetime limits, a cap the sandbox hit, a dead replica).
    #[serde(rename = "sandbox.released")]
    SandboxReleased { sandbox_id: Uuid, reason: String },
    #[serde(rename = "execution.queued")]
    ExecutionQueued {},
    #[serde(rename = "execution.started")]
    ExecutionStarted {},
    #[serde(rename = "agent.message.delta")]
    AgentMessageDelta { text: String },
    #[serde(rename = "agent.message")]
    AgentMessage { text: String },
    #[serde(rename = "agent.reasoning")]
    AgentReasoning { text: String },
    #[serde(rename = "command.started")]
    CommandStarted { command_id: String, command: String },
    #[serde(rename = "command.output")]
    CommandOutput {
        command_id: String,
        chunk: String,
        /// Where `chunk` belongs in the command's output (a byte offset), when that is not
        /// right after the chunks before it: Codex sends a long command's first moments only
        /// at its end, as a chunk `at` 0. Absent: after everything so far.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
    #[serde(rename = "command.finished")]
    CommandFinished {
        command_id: String,
        exit_code: Option<i32>,
    },
    #[serde(rename = "file.changed")]
    FileChanged { path: String, kind: String },
    #[serde(rename = "tool.call.started")]
    ToolCallStarted {
        call_id: String,
        tool: String,
        method: String,
        arguments: Value,
    },
    #[serde(rename = "tool.call.finished")]
    ToolCallFinished {
        call_id: String,
        tool: String,
        method: String,
        /// The result, or a preview of it: a result whose JSON is longer than 4 KiB becomes
        /// its first 4 KiB as a string, ending in `…`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// From the call's start to its end (tools called through the server).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
        /// Files the call saved to the thread (`GET /agent/threads/{key}/attachments/{id}`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<AttachmentRef>,
    },
    #[serde(rename = "approval.requested")]
    ApprovalRequested {
        approval_id: Uuid,
        kind: ApprovalKind,
        summary: String,
        #[serde(default)]
        details: Value,
    },
    #[serde(rename = "approval.resolved")]
    ApprovalResolved {
        approval_id: Uuid,
        decision: ApprovalResolution,
        decided_by: String,
    },
    #[serde(rename = "egress.denied")]
    EgressDenied { host: String, reason: String },
    #[serde(rename = "usage")]
    Usage {
        input_tokens: u64,
        output_tokens: u64,
    },
    #[serde(rename = "execution.completed")]
    ExecutionCompleted { result_text: String },
    /// `output`: what the turn produced before it failed, when it has something to show (the
    /// shell harness: the output of a command that exited non-zero).
    #[serde(rename = "execution.failed")]
    ExecutionFailed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
    },
    /// `reason` is text: an interrupt carries the caller's own.
    #[serde(rename = "execution.cancelled")]
    ExecutionCancelled { reason: String },
}

impl EventBody {
    /// The `type` of the event as it appears on the wire.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventBody::ThreadCreated { .. } => "thread.created",
            EventBody::MessageCreated { .. } => "message.created",
            EventBody::SandboxAssigned { .. } => "sandbox.assigned",
            EventBody::SandboxReleased { .. } => "sandbox.released",
            EventBody::ExecutionQueued {} => "execution.queued",
            EventBody::ExecutionStarted {} => "execution.started",
            EventBody::AgentMessageDelta { .. } => "agent.message.delta",
            EventBody::AgentMessage { .. } => "agent.message",
            EventBody::AgentReasoning { .. } => "agent.reasoning",
            EventBody::CommandStarted { .. } => "command.started",
            EventBody::CommandOutput { .. } => "command.output",
            EventBody::CommandFinished { .. } => "command.finished",
            EventBody::FileChanged { .. } => "file.changed",
            EventBody::ToolCallStarted { .. } => "tool.call.started",
            EventBody::ToolCallFinished { .. } => "tool.call.finished",
            EventBody::ApprovalRequested { .. } => "approval.requested",
            EventBody::ApprovalResolved { .. } => "approval.resolved",
            EventBody::EgressDenied { .. } => "egress.denied",
            EventBody::Usage { .. } => "usage",
            EventBody::ExecutionCompleted { .. } => "execution.completed",
            EventBody::ExecutionFailed { .. } => "execution.failed",
            EventBody::ExecutionCancelled { .. } => "execution.cancelled",
        }
    }

    /// The three ends of an execution.
    pub fn is_terminal(&self) -> bool {
        is_terminal_type(self.event_type())
    }

    /// Whether a sandbox runner may post this event. Lifecycle events (thread, message, sandbox,
    /// execution, approval decisions) are the server's alone.
    pub fn is_runner_event(&self) -> bool {
        matches!(
            self,
            EventBody::AgentMessageDelta { .. }
                | EventBody::AgentMessage { .. }
                | EventBody::AgentReasoning { .. }
                | EventBody::CommandStarted { .. }
                | EventBody::CommandOutput { .. }
                | EventBody::CommandFinished { .. }
                | EventBody::FileChanged { .. }
                | EventBody::ToolCallStarted { .. }
                | EventBody::ToolCallFinished { .. }
                | EventBody::ApprovalRequested { .. }
                | EventBody::EgressDenied { .. }
                | EventBody::Usage { .. }
        )
    }
}

/// Whether an event `type` ends an execution.
pub fn is_terminal_type(event_type: &str) -> bool {
    matches!(
        event_type,
        "execution.completed" | "execution.failed" | "execution.cancelled"
    )
}

/// One whole event as the stream carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: i64,
    pub thread_key: ThreadKey,
    pub created_at: DateTime<Utc>,
    pub execution_id: Option<Uuid>,
    #[serde(flatten)]
    pub body: EventBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_and_body_share_one_object() {
        let event = Event {
            event_id: 7,
            thread_key: ThreadKey::parse("api:t").unwrap(),
            created_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .into(),
            execution_id: None,
            body: EventBody::AgentMessageDelta { text: "hi".into() },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event_id": 7, "thread_key": "api:t", "created_at": "2026-01-02T03:04:05Z",
                "execution_id": null, "type": "agent.message.delta", "text": "hi"
            })
        );
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn type_names_match_the_serde_tags() {
        let samples = [
            EventBody::ExecutionQueued {},
            EventBody::Usage {
                input_tokens: 1,
                output_tokens: 2,
            },
            EventBody::ExecutionCancelled { reason: "x".into() },
            EventBody::ToolCallFinished {
                call_id: "c".into(),
                tool: "t".into(),
                method: "m".into(),
                result: None,
                error: Some("boom".into()),
                duration_ms: Some(3),
                attachments: Vec::new(),
            },
        ];
        for body in samples {
            let json = serde_json::to_value(&body).unwrap();
            assert_eq!(json["type"], body.event_type());
        }
        assert!(
            EventBody::ExecutionFailed {
                error: "e".into(),
                output: None
            }
            .is_terminal()
        );
        assert!(!EventBody::ExecutionStarted {}.is_terminal());
        assert!(!EventBody::ExecutionStarted {}.is_runner_event());
    }

    #[test]
    fn typed_fields_keep_their_wire_strings() {
        let created: EventBody = serde_json::from_value(
            serde_json::json!({"type": "thread.created", "harness": "claude-code"}),
        )
        .unwrap();
        assert_eq!(
            created,
            EventBody::ThreadCreated {
                harness: Harness::ClaudeCode
            }
        );
        for resolution in ApprovalResolution::ALL {
            let json = serde_json::to_value(resolution).unwrap();
            assert_eq!(json, resolution.as_str());
            assert_eq!(
                resolution.as_str().parse::<ApprovalResolution>(),
                Ok(resolution)
            );
        }
        for decision in [
            Decision::Approve,
            Decision::ApproveForSession,
            Decision::Deny,
        ] {
            assert_eq!(serde_json::to_value(decision).unwrap(), decision.as_str());
        }
        for role in Role::ALL {
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        for source in ReadySource::ALL {
            assert_eq!(serde_json::to_value(source).unwrap(), source.as_str());
            assert_eq!(source.as_str().parse::<ReadySource>(), Ok(source));
        }
        for kind in [
            ApprovalKind::Command,
            ApprovalKind::FileChange,
            ApprovalKind::Tool,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let unknown = "maybe".parse::<ApprovalResolution>().unwrap_err();
        assert_eq!(unknown.value, "maybe");
    }
}
