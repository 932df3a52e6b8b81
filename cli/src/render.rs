//! Events as lines for people (`centaur attach` without `--all-events`). A pure function of
//! the events seen: the same events always print the same text.

use centaur_protocol::{Event, EventBody};

#[derive(Default)]
pub struct Lines {
    /// Agent text is streaming (deltas printed, the line not yet ended).
    streaming: bool,
    /// The current agent message arrived as deltas (so its whole text is not printed again).
    streamed: bool,
}

impl Lines {
    /// The text to print for `event`, if any.
    pub fn render(&mut self, event: &Event) -> Option<String> {
        let end_stream = |this: &mut Lines| -> &'static str {
            if std::mem::take(&mut this.streaming) {
                "\n"
            } else {
                ""
            }
        };
        let text = match &event.body {
            EventBody::AgentMessageDelta { text } => {
                self.streaming = true;
                self.streamed = true;
                return Some(text.clone());
            }
            // The whole message was streamed already; print it only if it was not.
            EventBody::AgentMessage { text } => {
                if std::mem::take(&mut self.streamed) {
                    return std::mem::take(&mut self.streaming).then(|| "\n".into());
                }
                format!("{}agent: {text}\n", end_stream(self))
            }
            EventBody::MessageCreated { role, text, .. } => {
                format!("{}{}: {text}\n", end_stream(self), role.as_str())
            }
            EventBody::AgentReasoning { text } => {
                format!("{}(thinking) {text}\n", end_stream(self))
            }
            EventBody::CommandStarted { command, .. } => {
                format!("{}$ {command}\n", end_stream(self))
            }
            EventBody::CommandOutput { chunk, .. } => format!("{}{chunk}", end_stream(self)),
            EventBody::CommandFinished { exit_code, .. } => match exit_code {
                Some(0) => return None,
                Some(code) => format!("{}[exit status {code}]\n", end_stream(self)),
                None => format!("{}[command ended without a status]\n", end_stream(self)),
            },
            EventBody::FileChanged { path, kind } => {
                format!("{}file {kind}: {path}\n", end_stream(self))
            }
            EventBody::ToolCallStarted { tool, method, .. } => {
                format!("{}tool {tool}.{method}…\n", end_stream(self))
            }
            EventBody::ToolCallFinished {
                tool,
                method,
                error,
                ..
            } => match error {
                Some(error) => {
                    format!("{}tool {tool}.{method} failed: {error}\n", end_stream(self))
                }
                None => format!("{}tool {tool}.{method} done\n", end_stream(self)),
            },
            EventBody::ApprovalRequested {
                approval_id,
                summary,
                ..
            } => format!(
                "{}approval needed: {summary}\n  centaur approve {} {approval_id}   (add --deny to refuse)\n",
                end_stream(self),
                event.thread_key
            ),
            EventBody::ApprovalResolved {
                decision,
                decided_by,
                ..
            } => {
                format!("{}approval {decision} by {decided_by}\n", end_stream(self))
            }
            EventBody::EgressDenied { host, reason } => {
                format!("{}egress to {host} denied: {reason}\n", end_stream(self))
            }
            EventBody::Usage {
                input_tokens,
                output_tokens,
            } => format!(
                "{}tokens: {input_tokens} in, {output_tokens} out\n",
                end_stream(self)
            ),
            EventBody::ExecutionStarted {} => format!("{}— turn started\n", end_stream(self)),
            EventBody::ExecutionCompleted { .. } => {
                format!("{}— turn completed\n", end_stream(self))
            }
            EventBody::ExecutionFailed { error } => {
                format!("{}— turn failed: {error}\n", end_stream(self))
            }
            EventBody::ExecutionCancelled { reason } => {
                format!("{}— turn cancelled: {reason}\n", end_stream(self))
            }
            EventBody::SandboxReleased { reason, .. } => {
                format!("{}— sandbox released: {reason}\n", end_stream(self))
            }
            EventBody::ThreadCreated { .. }
            | EventBody::SandboxAssigned { .. }
            | EventBody::ExecutionQueued {} => return None,
        };
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, body: EventBody) -> Event {
        Event {
            event_id: id,
            thread_key: centaur_protocol::ThreadKey::parse("api:t").unwrap(),
            created_at: chrono::Utc::now(),
            execution_id: None,
            body,
        }
    }

    /// Streamed text ends its line before anything else is printed, and is not printed twice.
    #[test]
    fn streamed_text_and_what_follows_it() {
        let mut lines = Lines::default();
        let events = [
            EventBody::AgentMessageDelta { text: "Hel".into() },
            EventBody::AgentMessageDelta { text: "lo".into() },
            EventBody::CommandStarted {
                command_id: "c".into(),
                command: "ls".into(),
            },
            EventBody::CommandOutput {
                command_id: "c".into(),
                chunk: "a\n".into(),
            },
            EventBody::AgentMessageDelta {
                text: "Done".into(),
            },
            EventBody::CommandFinished {
                command_id: "c".into(),
                exit_code: Some(2),
            },
            EventBody::AgentMessage {
                text: "Done".into(),
            },
            EventBody::ExecutionCompleted {
                result_text: "Done".into(),
            },
        ];
        let printed: String = events
            .into_iter()
            .enumerate()
            .filter_map(|(i, body)| lines.render(&event(i as i64 + 1, body)))
            .collect();
        assert_eq!(
            printed,
            "Hello\n$ ls\na\nDone\n[exit status 2]\n— turn completed\n"
        );
    }
}
