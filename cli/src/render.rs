//! Events as lines for people (`centaur attach` without `--all-events`). A pure function of
//! the events seen: the same events always print the same text.

use centaur_protocol::{Event, EventBody};

#[derive(Default)]
pub struct Lines {
    /// Agent text is streaming (deltas printed, the line not yet ended).
    streaming: bool,
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
                return Some(text.clone());
            }
            // The whole message was streamed already; print it only if it was not.
            EventBody::AgentMessage { text } => {
                if self.streaming {
                    self.streaming = false;
                    return Some("\n".into());
                }
                format!("agent: {text}\n")
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
            EventBody::CommandOutput { chunk, .. } => chunk.clone(),
            EventBody::CommandFinished { exit_code, .. } => match exit_code {
                Some(0) => return None,
                Some(code) => format!("[exit status {code}]\n"),
                None => "[command ended without a status]\n".into(),
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
                Some(error) => format!("tool {tool}.{method} failed: {error}\n"),
                None => format!("tool {tool}.{method} done\n"),
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
                format!("approval {decision} by {decided_by}\n")
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
