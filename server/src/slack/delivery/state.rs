//! What the deliverer remembers about a Slack thread between events and across restarts
//! (`slack_threads.delivery`), and how an event reads as progress and as the status line.

use std::collections::BTreeMap;

use centaur_protocol::{ApprovalKind, EventBody};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::slack::format::{tail, truncate};

/// `slack_threads.delivery`: saved with the cursor, so what it says is true of every event up
/// to it. Unknown or missing fields read as their defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// The Slack user who wrote the last message from Slack: the recipient of the next turn's
    /// stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_author: Option<String>,
    /// The turn running now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<Turn>,
    /// Approval messages posted and not yet decided.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approvals: BTreeMap<Uuid, ApprovalMessage>,
    /// Posts that are not idempotent, by key: `None` is an intent (the post may or may not have
    /// landed: look for it before posting again), `Some(ts)` the message it made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub posts: BTreeMap<String, Option<String>>,
    /// Slack refused `chat.startStream` for this workspace (an older plan, a missing scope):
    /// progress goes on the control message instead.
    #[serde(default)]
    pub streaming_unavailable: bool,
}

/// A turn being delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub execution_id: Uuid,
    /// Whom the stream is for (`recipient_user_id`): who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The control message: the Stop button while the turn runs, its outcome after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_ts: Option<String>,
    /// The stream being appended to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    /// Progress (Markdown) not shown yet.
    #[serde(default)]
    pub pending: String,
    /// Progress shown on the control message (where streaming is unavailable), newest kept.
    #[serde(default)]
    pub shown: String,
    /// The status line: `is running `cargo test``.
    #[serde(default)]
    pub step: String,
    /// The agent's text came as deltas (so its whole message is not added again).
    #[serde(default)]
    pub saw_deltas: bool,
    /// A command's output is being shown (a code block is open in `pending`).
    #[serde(default)]
    pub output_open: bool,
    /// Characters of the current command's output shown.
    #[serde(default)]
    pub output_chars: usize,
    /// The current command's output was cut.
    #[serde(default)]
    pub output_cut: bool,
    /// The turn's end is shown (stream stopped, outcome line, answer posted, status cleared)
    /// and saved: a redo of the end (after a failure or a restart) goes on from after it.
    #[serde(default)]
    pub end_shown: bool,
}

impl Turn {
    pub fn new(execution_id: Uuid, recipient: Option<String>) -> Turn {
        Turn {
            execution_id,
            recipient,
            control_ts: None,
            stream: None,
            pending: String::new(),
            shown: String::new(),
            step: WORKING.into(),
            saw_deltas: false,
            output_open: false,
            output_chars: 0,
            output_cut: false,
            end_shown: false,
        }
    }

    /// Adds what `body` shows to the waiting progress, and its step to the status line.
    pub fn add(&mut self, body: &EventBody) {
        if let EventBody::CommandOutput { chunk, .. } = body {
            self.add_output(chunk);
        } else if let Some(text) = progress_of(body, self.saw_deltas) {
            self.close_output();
            self.pending.push_str(&text);
        }
        if matches!(body, EventBody::CommandStarted { .. }) {
            self.output_chars = 0;
            self.output_cut = false;
        }
        if matches!(body, EventBody::AgentMessageDelta { .. }) {
            self.saw_deltas = true;
        } else if matches!(body, EventBody::AgentMessage { .. }) {
            self.saw_deltas = false;
        }
        if let Some(step) = step_of(body) {
            self.step = step;
        }
    }

    /// A command's output, in a code block, up to [`OUTPUT_CHARS`] of it per command.
    fn add_output(&mut self, chunk: &str) {
        if self.output_cut || chunk.is_empty() {
            return;
        }
        let room = OUTPUT_CHARS.saturating_sub(self.output_chars);
        let shown: String = chunk.chars().take(room).collect();
        if shown.chars().count() < chunk.chars().count() {
            self.output_cut = true;
        }
        if !self.output_open {
            if !self.pending.is_empty() && !self.pending.ends_with('\n') {
                self.pending.push('\n');
            }
            self.pending.push_str("```\n");
            self.output_open = true;
        }
        self.output_chars += shown.chars().count();
        // A fence inside the output would end the block.
        self.pending.push_str(&shown.replace("```", "`\u{200b}``"));
    }

    /// Ends the open output block, if any.
    pub fn close_output(&mut self) {
        if !self.output_open {
            return;
        }
        if !self.pending.ends_with('\n') {
            self.pending.push('\n');
        }
        self.pending.push_str("```\n");
        if self.output_cut {
            self.pending.push_str("_(more output not shown)_\n");
        }
        self.output_open = false;
    }
}

/// Characters of one command's output shown as progress.
pub const OUTPUT_CHARS: usize = 1500;

/// The end of `text` (Markdown), at most `max` characters, its code fences balanced: a block
/// whose opening was cut off is reopened at the start.
pub fn balanced_tail(text: &str, max: usize) -> String {
    let cut = tail(text, max);
    let fences = cut
        .lines()
        .filter(|line| line.trim_start().starts_with("```"))
        .count();
    if fences % 2 == 1 && cut.trim_end().ends_with("```") {
        format!("```\n{cut}")
    } else {
        cut
    }
}

/// An approval's message, kept to show its decision in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalMessage {
    pub ts: String,
    pub kind: ApprovalKind,
    pub summary: String,
    /// The parts of `details` the message shows (`command`, `cwd`, `path`, `tool`, `method`,
    /// and a tool call's arguments as shown: `shown_arguments`, `arguments_cut`).
    #[serde(default)]
    pub details: Value,
}

/// The parts of an approval's `details` its message shows: a command, a path and a tool call's
/// arguments as the message shows them (cut, invisible characters made visible), not in full.
pub fn shown_details(details: &Value) -> Value {
    let mut kept = serde_json::Map::new();
    for key in ["cwd", "tool", "method"] {
        if let Some(Value::String(text)) = details.get(key) {
            kept.insert(key.into(), Value::String(truncate(text, 200)));
        }
    }
    for key in ["command", "path"] {
        if let Some(shown) = crate::slack::blocks::shown_detail(details, key) {
            kept.insert(format!("shown_{key}"), Value::String(shown.text));
            kept.insert(format!("{key}_cut"), Value::Bool(shown.cut));
            kept.insert(format!("{key}_hid"), Value::Bool(shown.hid));
        }
    }
    if let Some((shown, cut)) = crate::slack::blocks::tool_arguments(details) {
        kept.insert("shown_arguments".into(), Value::String(shown));
        kept.insert("arguments_cut".into(), Value::Bool(cut));
    }
    Value::Object(kept)
}

/// A Slack stream (`chat.startStream`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub ts: String,
    /// Unix seconds: Slack closes a stream after about five minutes.
    pub started_at: i64,
}

/// The status line while nothing more specific is known.
pub const WORKING: &str = "is working…";
/// Progress kept on a control message (mrkdwn is made from it; a section holds 3,000).
pub const SHOWN_CHARS: usize = 2800;

/// How an event reads as progress (Markdown, streamed or shown), if it shows at all.
pub fn progress_of(body: &EventBody, saw_deltas: bool) -> Option<String> {
    match body {
        EventBody::AgentMessageDelta { text } => Some(text.clone()),
        EventBody::AgentMessage { text } if !saw_deltas => Some(format!("{text}\n")),
        EventBody::AgentMessage { .. } => Some("\n".into()),
        EventBody::CommandStarted { command, .. } => {
            Some(format!("\n• running `{}`\n", one_line(command, 200)))
        }
        EventBody::CommandFinished {
            exit_code: Some(code),
            ..
        } if *code != 0 => Some(format!("  ↳ exited with status {code}\n")),
        EventBody::FileChanged { path, kind } => Some(format!(
            "\n• {} `{}`\n",
            file_verb(kind),
            one_line(path, 200)
        )),
        EventBody::ToolCallStarted { tool, method, .. } => {
            Some(format!("\n• calling {tool}.{method}\n"))
        }
        EventBody::ToolCallFinished {
            error: Some(error),
            tool,
            method,
            ..
        } => Some(format!(
            "  ↳ {tool}.{method} failed: {}\n",
            one_line(error, 200)
        )),
        EventBody::EgressDenied { host, .. } => {
            Some(format!("\n• network access to `{host}` was blocked\n"))
        }
        EventBody::CommandFinished { .. }
        | EventBody::ToolCallFinished { .. }
        | EventBody::ThreadCreated { .. }
        | EventBody::MessageCreated { .. }
        | EventBody::SandboxAssigned { .. }
        | EventBody::SandboxReleased { .. }
        | EventBody::ExecutionQueued {}
        | EventBody::ExecutionStarted {}
        | EventBody::AgentReasoning { .. }
        | EventBody::CommandOutput { .. }
        | EventBody::ApprovalRequested { .. }
        | EventBody::ApprovalResolved { .. }
        | EventBody::Usage { .. }
        | EventBody::ExecutionCompleted { .. }
        | EventBody::ExecutionFailed { .. }
        | EventBody::ExecutionCancelled { .. } => None,
    }
}

/// The status line an event puts up, if it changes it.
pub fn step_of(body: &EventBody) -> Option<String> {
    match body {
        EventBody::ExecutionQueued {} | EventBody::ExecutionStarted {} => Some(WORKING.into()),
        EventBody::CommandStarted { command, .. } => {
            Some(format!("is running `{}`", one_line(command, 80)))
        }
        EventBody::FileChanged { path, .. } => Some(format!("is editing {}", one_line(path, 80))),
        EventBody::ToolCallStarted { tool, method, .. } => {
            Some(format!("is calling {tool}.{method}"))
        }
        EventBody::ApprovalRequested { .. } => Some("is waiting for approval".into()),
        EventBody::ApprovalResolved { .. } | EventBody::AgentMessageDelta { .. } => {
            Some(WORKING.into())
        }
        EventBody::ThreadCreated { .. }
        | EventBody::MessageCreated { .. }
        | EventBody::SandboxAssigned { .. }
        | EventBody::SandboxReleased { .. }
        | EventBody::AgentMessage { .. }
        | EventBody::AgentReasoning { .. }
        | EventBody::CommandOutput { .. }
        | EventBody::CommandFinished { .. }
        | EventBody::ToolCallFinished { .. }
        | EventBody::EgressDenied { .. }
        | EventBody::Usage { .. }
        | EventBody::ExecutionCompleted { .. }
        | EventBody::ExecutionFailed { .. }
        | EventBody::ExecutionCancelled { .. } => None,
    }
}

fn file_verb(kind: &str) -> &'static str {
    match kind {
        "add" | "added" | "create" | "created" => "created",
        "delete" | "deleted" | "remove" | "removed" => "deleted",
        _ => "edited",
    }
}

/// The first line of `text`, cut to `max` characters, without backticks (it goes inside one).
pub fn one_line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or_default().replace('`', "'");
    let more = text.trim_end().contains('\n');
    let line = truncate(first.trim(), max);
    if more && !line.ends_with('…') {
        format!("{line} …")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_state_survives_a_round_trip_and_reads_old_documents() {
        let mut state = DeliveryState::default();
        let id = Uuid::now_v7();
        let mut turn = Turn::new(id, Some("U1".into()));
        turn.stream = Some(Stream {
            ts: "9.9".into(),
            started_at: 1_700_000_000,
        });
        turn.pending = "• running `ls`".into();
        state.turn = Some(turn);
        state.posts.insert(format!("control:{id}"), None);
        state.posts.insert("answer:x:0".into(), Some("1.5".into()));
        let json = serde_json::to_value(&state).unwrap();
        let back: DeliveryState = serde_json::from_value(json).unwrap();
        assert_eq!(back, state);
        // The column's default, `{}`, is the empty state.
        let empty: DeliveryState = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty, DeliveryState::default());
    }

    #[test]
    fn progress_reads_commands_files_tools_and_text() {
        let command = EventBody::CommandStarted {
            command_id: "c1".into(),
            command: "cargo test\n--all".into(),
        };
        assert_eq!(
            progress_of(&command, false).unwrap(),
            "\n• running `cargo test …`\n"
        );
        assert_eq!(step_of(&command).unwrap(), "is running `cargo test …`");
        let file = EventBody::FileChanged {
            path: "src/lib.rs".into(),
            kind: "update".into(),
        };
        assert_eq!(
            progress_of(&file, false).unwrap(),
            "\n• edited `src/lib.rs`\n"
        );
        assert_eq!(step_of(&file).unwrap(), "is editing src/lib.rs");
        let tool = EventBody::ToolCallStarted {
            call_id: "1".into(),
            tool: "github".into(),
            method: "search".into(),
            arguments: json!({}),
        };
        assert_eq!(step_of(&tool).unwrap(), "is calling github.search");
        let delta = EventBody::AgentMessageDelta { text: "Hel".into() };
        assert_eq!(progress_of(&delta, false).unwrap(), "Hel");
        // A whole message after its deltas adds only the line break.
        let whole = EventBody::AgentMessage {
            text: "Hello".into(),
        };
        assert_eq!(progress_of(&whole, true).unwrap(), "\n");
        assert_eq!(progress_of(&whole, false).unwrap(), "Hello\n");
        let failed = EventBody::CommandFinished {
            command_id: "c1".into(),
            exit_code: Some(2),
        };
        assert!(progress_of(&failed, false).unwrap().contains("status 2"));
        let ok = EventBody::CommandFinished {
            command_id: "c1".into(),
            exit_code: Some(0),
        };
        assert_eq!(progress_of(&ok, false), None);
        // Command output is not streamed (the answer carries it).
        let output = EventBody::CommandOutput {
            command_id: "c1".into(),
            chunk: "lots".into(),
            at: None,
        };
        assert_eq!(progress_of(&output, false), None);
    }

    #[test]
    fn command_output_is_shown_in_a_code_block_cut_per_command() {
        let mut turn = Turn::new(Uuid::now_v7(), None);
        let started = EventBody::CommandStarted {
            command_id: "c1".into(),
            command: "make".into(),
        };
        let output = |chunk: &str| EventBody::CommandOutput {
            command_id: "c1".into(),
            chunk: chunk.into(),
            at: None,
        };
        turn.add(&started);
        turn.add(&output("a\n"));
        turn.add(&output("b ``` c"));
        turn.add(&EventBody::CommandFinished {
            command_id: "c1".into(),
            exit_code: Some(0),
        });
        turn.add(&EventBody::AgentMessageDelta {
            text: "done".into(),
        });
        assert_eq!(
            turn.pending,
            "\n• running `make`\n```\na\nb `\u{200b}`` c\n```\ndone"
        );
        assert_eq!(turn.step, WORKING);
        // Past the limit, the rest is left out and said so.
        turn.pending.clear();
        turn.add(&started);
        turn.add(&output(&"x".repeat(OUTPUT_CHARS + 10)));
        turn.add(&output("zzz"));
        turn.close_output();
        assert_eq!(turn.pending.matches('x').count(), OUTPUT_CHARS);
        assert!(!turn.pending.contains("zzz"));
        assert!(turn.pending.ends_with("```\n_(more output not shown)_\n"));
    }

    #[test]
    fn a_tail_that_cut_a_code_block_open_reopens_it() {
        let text = format!("intro\n```\n{}\n```\n", "line\n".repeat(100));
        let cut = balanced_tail(&text, 50);
        let fences = cut.lines().filter(|l| l.starts_with("```")).count();
        assert_eq!(fences % 2, 0, "{cut}");
        assert_eq!(balanced_tail("short", 50), "short");
    }

    #[test]
    fn an_approval_puts_up_waiting_and_its_decision_takes_it_down() {
        let requested = EventBody::ApprovalRequested {
            approval_id: Uuid::now_v7(),
            kind: ApprovalKind::Command,
            summary: "ls".into(),
            details: json!({}),
        };
        assert_eq!(step_of(&requested).unwrap(), "is waiting for approval");
        let resolved = EventBody::ApprovalResolved {
            approval_id: Uuid::now_v7(),
            decision: centaur_protocol::ApprovalResolution::Approve,
            decided_by: "admin".into(),
        };
        assert_eq!(step_of(&resolved).unwrap(), WORKING);
    }
}
