//! Recorded event streams, written as scripts, for the TUI's snapshot tests and benchmarks.
//! Ids and times are deterministic: the same script always gives the same events.

use centaur_protocol::{ApprovalKind, Event, EventBody, ReadySource, Role, ThreadKey};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

/// When every script starts: 2026-11-22 10:00:00 UTC.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

pub struct Script {
    key: ThreadKey,
    events: Vec<Event>,
    execution: Option<Uuid>,
    turns: u128,
    ids: u128,
    /// Milliseconds since [`epoch`] of the next event.
    clock_ms: i64,
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

impl Script {
    pub fn new() -> Script {
        Script::for_thread("cli:0196f1c2-0000-7000-8000-00000000d3e0")
    }

    pub fn for_thread(key: &str) -> Script {
        Script {
            key: ThreadKey::parse(key).expect("a valid key"),
            events: Vec::new(),
            execution: None,
            turns: 0,
            ids: 0,
            clock_ms: 0,
        }
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    /// Moves the clock on.
    pub fn wait_ms(&mut self, ms: i64) -> &mut Self {
        self.clock_ms += ms;
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        epoch() + chrono::Duration::milliseconds(self.clock_ms)
    }

    fn next_id(&mut self) -> Uuid {
        self.ids += 1;
        Uuid::from_u128(0x0196_f1c2_0000_7000_8000_0000_0000_0000 | self.ids)
    }

    pub fn push(&mut self, body: EventBody) -> &mut Self {
        let event = Event {
            event_id: self.events.len() as i64 + 1,
            thread_key: self.key.clone(),
            created_at: self.now(),
            execution_id: self.execution,
            body,
        };
        self.events.push(event);
        self.clock_ms += 40;
        self
    }

    pub fn thread(&mut self, harness: &str) -> &mut Self {
        self.push(EventBody::ThreadCreated {
            harness: harness.parse().expect("a harness name"),
        })
    }

    /// A user's message that starts a turn, as `POST /agent/execute` stores it.
    pub fn user(&mut self, text: &str) -> &mut Self {
        self.turns += 1;
        self.execution = Some(Uuid::from_u128(
            0x0196_f1c2_0000_7000_9000_0000_0000_0000 | self.turns,
        ));
        let message_id = self.next_id();
        self.push(EventBody::MessageCreated {
            message_id,
            role: Role::User,
            text: text.into(),
            author: None,
        });
        self.push(EventBody::ExecutionQueued {});
        let sandbox_id = Uuid::from_u128(0x0196_f1c2_0000_7000_a000_0000_0000_0001);
        self.push(EventBody::SandboxAssigned {
            sandbox_id,
            ready_source: ReadySource::WarmPool,
        });
        self.push(EventBody::ExecutionStarted {})
    }

    pub fn delta(&mut self, text: &str) -> &mut Self {
        self.push(EventBody::AgentMessageDelta { text: text.into() })
    }

    /// Streams `text` in pieces of about `piece` bytes, then the whole message.
    pub fn stream(&mut self, text: &str, piece: usize) -> &mut Self {
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = piece.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            let (head, tail) = rest.split_at(cut);
            self.delta(head);
            rest = tail;
        }
        self.agent(text)
    }

    pub fn agent(&mut self, text: &str) -> &mut Self {
        self.push(EventBody::AgentMessage { text: text.into() })
    }

    pub fn reasoning(&mut self, text: &str) -> &mut Self {
        self.push(EventBody::AgentReasoning { text: text.into() })
    }

    pub fn command(&mut self, id: &str, command: &str) -> &mut Self {
        self.push(EventBody::CommandStarted {
            command_id: id.into(),
            command: command.into(),
        })
    }

    pub fn output(&mut self, id: &str, chunk: &str) -> &mut Self {
        self.push(EventBody::CommandOutput {
            command_id: id.into(),
            chunk: chunk.into(),
            at: None,
        })
    }

    pub fn finished(&mut self, id: &str, exit_code: i32) -> &mut Self {
        self.push(EventBody::CommandFinished {
            command_id: id.into(),
            exit_code: Some(exit_code),
        })
    }

    pub fn file(&mut self, path: &str, kind: &str) -> &mut Self {
        self.push(EventBody::FileChanged {
            path: path.into(),
            kind: kind.into(),
        })
    }

    pub fn tool(&mut self, id: &str, tool: &str, method: &str, result: &str) -> &mut Self {
        self.push(EventBody::ToolCallStarted {
            call_id: id.into(),
            tool: tool.into(),
            method: method.into(),
            arguments: json!({"query": "open incidents"}),
        });
        self.push(EventBody::ToolCallFinished {
            call_id: id.into(),
            tool: tool.into(),
            method: method.into(),
            result: Some(json!(result)),
            error: None,
            duration_ms: None,
            attachments: Vec::new(),
        })
    }

    /// A command approval; returns its id.
    pub fn approval(&mut self, summary: &str) -> Uuid {
        let approval_id = self.next_id();
        self.push(EventBody::ApprovalRequested {
            approval_id,
            kind: ApprovalKind::Command,
            summary: summary.into(),
            details: json!({
                "command": summary.trim_start_matches("run ").trim_matches('`'),
                "cwd": "/workspace",
                "reason": "the agent wants to check the build",
            }),
        });
        approval_id
    }

    pub fn resolved(&mut self, approval_id: Uuid, decision: &str, by: &str) -> &mut Self {
        self.push(EventBody::ApprovalResolved {
            approval_id,
            decision: decision.parse().expect("an approval resolution"),
            decided_by: by.into(),
        })
    }

    pub fn egress_denied(&mut self, host: &str) -> &mut Self {
        self.push(EventBody::EgressDenied {
            host: host.into(),
            reason: "host not allowed".into(),
        })
    }

    pub fn usage(&mut self, input: u64, output: u64) -> &mut Self {
        self.push(EventBody::Usage {
            input_tokens: input,
            output_tokens: output,
        })
    }

    pub fn completed(&mut self, result: &str) -> &mut Self {
        self.push(EventBody::ExecutionCompleted {
            result_text: result.into(),
        })
    }

    pub fn failed(&mut self, error: &str) -> &mut Self {
        self.push(EventBody::ExecutionFailed {
            error: error.into(),
            output: None,
        })
    }

    pub fn cancelled(&mut self, reason: &str) -> &mut Self {
        self.push(EventBody::ExecutionCancelled {
            reason: reason.into(),
        })
    }
}

/// A long thread of about `events` events: turns with Markdown answers, code, commands with
/// output, reasoning and usage. What the render benchmark draws.
pub fn long_thread(events: usize) -> Vec<Event> {
    let mut script = Script::new();
    script.thread("codex");
    let mut turn = 0;
    while script.events().len() < events {
        turn += 1;
        script.user(&format!("Turn {turn}: look at the failing test and fix it"));
        script.reasoning("The test fails on an off-by-one in the pagination cursor.");
        script.command("c", "cargo test -p server pagination");
        for line in 0..12 {
            script.output("c", &format!("test pagination::case_{line} ... ok\n"));
        }
        script.finished("c", 0);
        script.stream(
            "## What I changed\n\nThe cursor now points **after** the last row:\n\n```rust\nlet next = rows.last().map(|r| r.id + 1);\n```\n\n- fixed `before`\n- added a test\n",
            24,
        );
        script.usage(1200, 340);
        script.completed("fixed");
    }
    script.into_events()
}
