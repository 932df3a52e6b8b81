//! A thread as the TUI shows it: a pure reduction of the thread's protocol events into blocks
//! (messages, commands, approvals…) and the facts the status line needs. The same events always
//! give the same transcript.

use std::collections::HashMap;

use centaur_client::render;
use centaur_protocol::{
    ApprovalKind, ApprovalResolution, Event, EventBody, Harness, ReadySource, Role,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// One thing in the transcript.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// A person's message (or a system message stored on the thread).
    User {
        role: Role,
        text: String,
        /// Who wrote it, when it came from another platform: `Ann (Slack)`, safe to show.
        author: Option<String>,
    },
    /// The agent's text, rendered as Markdown; `streaming` while deltas still arrive.
    Agent {
        text: String,
        streaming: bool,
    },
    /// The agent's reasoning; folded unless opened.
    Reasoning {
        text: String,
    },
    /// A command and its output; `exit` is `None` while it runs.
    Command {
        command: String,
        output: String,
        exit: Option<Option<i32>>,
    },
    FileChange {
        path: String,
        kind: String,
    },
    Tool {
        tool: String,
        method: String,
        arguments: Value,
        /// `None` while the call runs.
        outcome: Option<ToolOutcome>,
    },
    Approval {
        approval_id: Uuid,
        kind: ApprovalKind,
        summary: String,
        /// How it ended and who decided, once it did.
        resolved: Option<(ApprovalResolution, String)>,
    },
    EgressDenied {
        host: String,
        reason: String,
    },
    /// The end of a turn.
    TurnEnd {
        outcome: TurnOutcome,
        took: Option<chrono::Duration>,
    },
    /// A note about the sandbox or thread.
    Note {
        text: String,
    },
}

/// How a tool call ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolOutcome {
    /// Its result (`null` when it gave none).
    Returned(Value),
    /// The error it reported.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum TurnOutcome {
    Completed,
    Failed(String),
    Cancelled(String),
}

impl Block {
    /// Whether the block has a folded and an open form.
    pub fn foldable(&self) -> bool {
        matches!(
            self,
            Block::Reasoning { .. } | Block::Command { .. } | Block::Tool { .. }
        )
    }
}

/// An approval still waiting for a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingApproval {
    pub approval_id: Uuid,
    pub kind: ApprovalKind,
    pub summary: String,
    pub details: Value,
    pub requested_at: DateTime<Utc>,
}

/// The sandbox as the events tell it.
#[derive(Clone, Debug, PartialEq)]
pub enum SandboxState {
    None,
    Assigned {
        sandbox_id: Uuid,
        ready_source: ReadySource,
    },
    Released {
        reason: String,
    },
}

/// The running turn, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    pub execution_id: Option<Uuid>,
    /// When it started (`None` while queued).
    pub started_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub struct Transcript {
    blocks: Vec<Block>,
    /// Bumped whenever a block changes, so a view can cache what it drew.
    versions: Vec<u64>,
    commands: HashMap<String, usize>,
    tools: HashMap<String, usize>,
    approvals: HashMap<Uuid, usize>,
    pub pending: Vec<PendingApproval>,
    pub harness: Option<Harness>,
    pub sandbox: SandboxState,
    pub running: Option<Running>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub last_event_id: i64,
    pub events_seen: usize,
    /// The agent block that deltas currently extend.
    open_agent: Option<usize>,
    turn_started_at: Option<DateTime<Utc>>,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript {
            blocks: Vec::new(),
            versions: Vec::new(),
            commands: HashMap::new(),
            tools: HashMap::new(),
            approvals: HashMap::new(),
            pending: Vec::new(),
            harness: None,
            sandbox: SandboxState::None,
            running: None,
            input_tokens: 0,
            output_tokens: 0,
            last_event_id: 0,
            events_seen: 0,
            open_agent: None,
            turn_started_at: None,
        }
    }
}

impl Transcript {
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    pub fn version(&self, index: usize) -> u64 {
        self.versions[index]
    }

    fn push(&mut self, block: Block) -> usize {
        self.blocks.push(block);
        self.versions.push(0);
        self.blocks.len() - 1
    }

    fn touch(&mut self, index: usize) -> &mut Block {
        self.versions[index] += 1;
        &mut self.blocks[index]
    }

    fn close_agent(&mut self) {
        if let Some(index) = self.open_agent.take()
            && let Block::Agent { streaming, .. } = self.touch(index)
        {
            *streaming = false;
        }
    }

    /// A block that starts after whatever the agent was saying.
    fn push_after_agent(&mut self, block: Block) -> usize {
        self.close_agent();
        self.push(block)
    }

    /// Folds one event in. Events at or before the last one seen are ignored, so a replayed
    /// event never shows twice.
    pub fn apply(&mut self, event: &Event) {
        if event.event_id <= self.last_event_id {
            return;
        }
        self.last_event_id = event.event_id;
        self.events_seen += 1;
        match &event.body {
            EventBody::ThreadCreated { harness } => self.harness = Some(*harness),
            EventBody::MessageCreated {
                role, text, author, ..
            } => self.message(*role, text, author.as_ref().map(render::author)),
            EventBody::SandboxAssigned {
                sandbox_id,
                ready_source,
            } => {
                self.sandbox = SandboxState::Assigned {
                    sandbox_id: *sandbox_id,
                    ready_source: *ready_source,
                }
            }
            EventBody::SandboxReleased { reason, .. } => {
                self.sandbox = SandboxState::Released {
                    reason: reason.clone(),
                };
            }
            EventBody::ExecutionQueued {} => self.turn_running(event.execution_id, None),
            EventBody::ExecutionStarted {} => {
                self.turn_running(event.execution_id, Some(event.created_at));
                self.turn_started_at = Some(event.created_at);
            }
            EventBody::AgentMessageDelta { text } => self.agent_delta(text),
            EventBody::AgentMessage { text } => self.agent_message(text),
            EventBody::AgentReasoning { text } => {
                self.push_after_agent(Block::Reasoning { text: text.clone() });
            }
            EventBody::CommandStarted {
                command_id,
                command,
            } => self.command_started(command_id, command),
            EventBody::CommandOutput {
                command_id,
                chunk,
                at,
            } => self.command_output(command_id, chunk, *at),
            EventBody::CommandFinished {
                command_id,
                exit_code,
            } => self.command_finished(command_id, *exit_code),
            EventBody::FileChanged { path, kind } => {
                self.push_after_agent(Block::FileChange {
                    path: path.clone(),
                    kind: kind.clone(),
                });
            }
            EventBody::ToolCallStarted {
                call_id,
                tool,
                method,
                arguments,
            } => self.tool_started(call_id, tool, method, arguments),
            EventBody::ToolCallFinished {
                call_id,
                result,
                error,
                ..
            } => self.tool_finished(call_id, result.as_ref(), error.as_deref()),
            EventBody::ApprovalRequested {
                approval_id,
                kind,
                summary,
                details,
            } => self.approval_requested(PendingApproval {
                approval_id: *approval_id,
                kind: *kind,
                summary: summary.clone(),
                details: details.clone(),
                requested_at: event.created_at,
            }),
            EventBody::ApprovalResolved {
                approval_id,
                decision,
                decided_by,
            } => self.approval_resolved(*approval_id, *decision, decided_by),
            EventBody::EgressDenied { host, reason } => {
                self.push_after_agent(Block::EgressDenied {
                    host: host.clone(),
                    reason: reason.clone(),
                });
            }
            EventBody::Usage {
                input_tokens,
                output_tokens,
            } => {
                self.input_tokens += input_tokens;
                self.output_tokens += output_tokens;
            }
            EventBody::ExecutionCompleted { .. } => {
                self.turn_ended(TurnOutcome::Completed, event.created_at)
            }
            EventBody::ExecutionFailed { error, .. } => {
                self.turn_ended(TurnOutcome::Failed(error.clone()), event.created_at)
            }
            EventBody::ExecutionCancelled { reason } => {
                self.turn_ended(TurnOutcome::Cancelled(reason.clone()), event.created_at)
            }
        }
    }

    fn message(&mut self, role: Role, text: &str, author: Option<String>) {
        let text = text.to_owned();
        self.push_after_agent(match role {
            Role::Assistant => Block::Agent {
                text,
                streaming: false,
            },
            role @ Role::User | role @ Role::System => Block::User { role, text, author },
        });
    }

    /// A piece of the agent's answer: the message being streamed grows, or a new one starts.
    fn agent_delta(&mut self, text: &str) {
        match self.open_agent {
            Some(index) => {
                if let Block::Agent { text: so_far, .. } = self.touch(index) {
                    so_far.push_str(text);
                }
            }
            None => {
                let index = self.push(Block::Agent {
                    text: text.to_owned(),
                    streaming: true,
                });
                self.open_agent = Some(index);
            }
        }
    }

    /// The agent's whole message: it replaces the pieces streamed before it.
    fn agent_message(&mut self, text: &str) {
        let whole = Block::Agent {
            text: text.to_owned(),
            streaming: false,
        };
        match self.open_agent.take() {
            Some(index) => *self.touch(index) = whole,
            None => {
                self.push(whole);
            }
        }
    }

    fn command_started(&mut self, command_id: &str, command: &str) {
        let index = self.push_after_agent(Block::Command {
            command: command.to_owned(),
            output: String::new(),
            exit: None,
        });
        self.commands.insert(command_id.to_owned(), index);
    }

    fn command_output(&mut self, command_id: &str, chunk: &str, at: Option<u64>) {
        let index = match self.commands.get(command_id) {
            Some(index) => *index,
            // Output of a command whose start was not seen: show it anyway.
            None => {
                let index = self.push(Block::Command {
                    command: String::new(),
                    output: String::new(),
                    exit: None,
                });
                self.commands.insert(command_id.to_owned(), index);
                index
            }
        };
        if let Block::Command { output, .. } = self.touch(index) {
            match at {
                // A piece that belongs earlier (Codex's first moments, sent at the end).
                Some(at) => {
                    let mut at = usize::try_from(at).unwrap_or(usize::MAX).min(output.len());
                    while !output.is_char_boundary(at) {
                        at -= 1;
                    }
                    output.insert_str(at, chunk);
                }
                None => output.push_str(chunk),
            }
        }
    }

    fn command_finished(&mut self, command_id: &str, exit_code: Option<i32>) {
        if let Some(index) = self.commands.get(command_id).copied()
            && let Block::Command { exit, .. } = self.touch(index)
        {
            *exit = Some(exit_code);
        }
    }

    fn tool_started(&mut self, call_id: &str, tool: &str, method: &str, arguments: &Value) {
        let index = self.push_after_agent(Block::Tool {
            tool: tool.to_owned(),
            method: method.to_owned(),
            arguments: arguments.clone(),
            outcome: None,
        });
        self.tools.insert(call_id.to_owned(), index);
    }

    /// A turn waiting for its sandbox (`started_at` is `None`), or running since `started_at`.
    fn turn_running(&mut self, execution_id: Option<Uuid>, started_at: Option<DateTime<Utc>>) {
        self.running = Some(Running {
            execution_id,
            started_at,
        });
    }

    fn tool_finished(&mut self, call_id: &str, result: Option<&Value>, error: Option<&str>) {
        if let Some(index) = self.tools.get(call_id).copied()
            && let Block::Tool { outcome, .. } = self.touch(index)
        {
            *outcome = Some(match error {
                Some(error) => ToolOutcome::Failed(error.to_owned()),
                None => ToolOutcome::Returned(result.cloned().unwrap_or(Value::Null)),
            });
        }
    }

    fn approval_requested(&mut self, pending: PendingApproval) {
        let index = self.push_after_agent(Block::Approval {
            approval_id: pending.approval_id,
            kind: pending.kind,
            summary: pending.summary.clone(),
            resolved: None,
        });
        self.approvals.insert(pending.approval_id, index);
        self.pending.push(pending);
    }

    fn approval_resolved(
        &mut self,
        approval_id: Uuid,
        resolution: ApprovalResolution,
        decided_by: &str,
    ) {
        self.pending.retain(|p| p.approval_id != approval_id);
        if let Some(index) = self.approvals.get(&approval_id).copied()
            && let Block::Approval { resolved, .. } = self.touch(index)
        {
            *resolved = Some((resolution, render::decider(decided_by)));
        }
    }

    /// The turn is over: its end is shown, and what it left undecided or unfinished is over
    /// too.
    fn turn_ended(&mut self, outcome: TurnOutcome, at: DateTime<Utc>) {
        let took = self.turn_started_at.take().map(|started| at - started);
        self.push_after_agent(Block::TurnEnd { outcome, took });
        self.running = None;
        // Approvals of an ended turn can no longer be decided.
        self.pending.clear();
        // Commands left without an end (the harness died) are over too.
        let unfinished: Vec<usize> = self
            .commands
            .drain()
            .map(|(_, index)| index)
            .filter(|index| matches!(self.blocks[*index], Block::Command { exit: None, .. }))
            .collect();
        for index in unfinished {
            if let Block::Command { exit, .. } = self.touch(index) {
                *exit = Some(None);
            }
        }
    }
}

/// Command output as display lines: escape sequences removed, carriage returns resolved the
/// way a terminal would (the text after the last one wins), tabs expanded.
pub fn output_lines(output: &str) -> Vec<String> {
    let trimmed = output.strip_suffix('\n').unwrap_or(output);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split('\n')
        .map(|line| {
            let line = line.trim_end_matches('\r');
            let line = line.rsplit('\r').next().unwrap_or(line);
            let mut out = String::with_capacity(line.len());
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\x1b' => {
                        // CSI: ESC [ params final; other escapes: ESC and one character.
                        if chars.next_if_eq(&'[').is_some() {
                            for c in chars.by_ref() {
                                if ('@'..='~').contains(&c) {
                                    break;
                                }
                            }
                        } else {
                            chars.next();
                        }
                    }
                    '\t' => out.push_str("    "),
                    c if c.is_control() => {}
                    c => out.push(c),
                }
            }
            out
        })
        .collect()
}

/// A tool's arguments on one line.
pub fn compact(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other @ Value::Bool(_)
        | other @ Value::Number(_)
        | other @ Value::Array(_)
        | other @ Value::Object(_) => other.to_string(),
    }
}

impl Block {
    /// The block's text as plain text, as it is copied: a message as written (the agent's
    /// Markdown source), a command line with its output as the screen shows it (escape
    /// sequences removed), a tool call with its result.
    pub fn plain_text(&self) -> String {
        match self {
            Block::User { text, .. } | Block::Agent { text, .. } | Block::Reasoning { text } => {
                text.clone()
            }
            Block::Command {
                command, output, ..
            } => {
                let mut text = format!("$ {command}");
                for line in output_lines(output) {
                    text.push('\n');
                    text.push_str(&line);
                }
                text
            }
            Block::FileChange { path, kind } => format!("{kind} {path}"),
            Block::Tool {
                tool,
                method,
                arguments,
                outcome,
            } => {
                let mut text = format!("{tool}.{method} {}", compact(arguments));
                let result = match outcome {
                    Some(ToolOutcome::Returned(result)) => {
                        serde_json::to_string_pretty(result).unwrap_or_default()
                    }
                    Some(ToolOutcome::Failed(error)) => error.clone(),
                    None => String::new(),
                };
                if !result.is_empty() {
                    text.push('\n');
                    text.push_str(&result);
                }
                text
            }
            Block::Approval { summary, .. } => summary.clone(),
            Block::EgressDenied { host, reason } => format!("egress to {host} denied: {reason}"),
            Block::TurnEnd { outcome, .. } => match outcome {
                TurnOutcome::Completed => "done".to_owned(),
                TurnOutcome::Failed(error) => format!("turn failed: {error}"),
                TurnOutcome::Cancelled(reason) => format!("turn cancelled: {reason}"),
            },
            Block::Note { text } => text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaur_test_support::script::Script;

    #[test]
    fn deltas_build_one_message_that_the_whole_message_replaces() {
        let mut script = Script::new();
        script.user("hi");
        script.delta("Hel");
        script.delta("lo");
        let mut transcript = Transcript::default();
        for event in script.events() {
            transcript.apply(event);
        }
        assert_eq!(
            transcript.blocks()[1],
            Block::Agent {
                text: "Hello".into(),
                streaming: true
            }
        );
        script.agent("Hello!");
        transcript.apply(script.events().last().unwrap());
        assert_eq!(
            transcript.blocks()[1],
            Block::Agent {
                text: "Hello!".into(),
                streaming: false
            }
        );
        // A replayed event changes nothing.
        let before = transcript.blocks().to_vec();
        transcript.apply(&script.events()[2]);
        assert_eq!(transcript.blocks(), before.as_slice());
    }

    /// A piece of output that belongs earlier (Codex's first moments, sent at the end) goes
    /// where it belongs: the block shows the command's output in order.
    #[test]
    fn output_that_arrives_late_goes_where_it_belongs() {
        let mut script = Script::new();
        script.command("c", "for i in 1 2 3; do echo line$i; sleep 3; done");
        script.output("c", "line2\n");
        script.push(EventBody::CommandOutput {
            command_id: "c".into(),
            chunk: "line1\n".into(),
            at: Some(0),
        });
        script.output("c", "line3\n");
        script.finished("c", 0);
        let mut transcript = Transcript::default();
        for event in script.events() {
            transcript.apply(event);
        }
        let Block::Command { output, .. } = &transcript.blocks()[0] else {
            panic!("{:?}", transcript.blocks());
        };
        assert_eq!(output, "line1\nline2\nline3\n");
    }

    #[test]
    fn an_approval_decided_elsewhere_leaves_the_queue() {
        let mut script = Script::new();
        let first = script.approval("run `rm -rf build`");
        let second = script.approval("run `make`");
        let mut transcript = Transcript::default();
        for event in script.events() {
            transcript.apply(event);
        }
        assert_eq!(transcript.pending.len(), 2);
        script.resolved(first, "approve", "slack:U123");
        transcript.apply(script.events().last().unwrap());
        assert_eq!(transcript.pending.len(), 1);
        assert_eq!(transcript.pending[0].approval_id, second);
        script.failed("the harness exited");
        transcript.apply(script.events().last().unwrap());
        assert!(transcript.pending.is_empty());
        assert!(transcript.running.is_none());
    }
}
