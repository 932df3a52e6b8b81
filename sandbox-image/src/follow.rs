//! Follows the thread's event stream during a turn for what concerns the runner: the end of
//! its execution (an interrupt, the deadline, a release), approval decisions and new user
//! messages. Reconnects after the last event seen, so nothing is missed or seen twice.

use std::sync::Arc;
use std::time::Duration;

use centaur_protocol::{Event, EventBody, Role, ThreadKey};
use http_body_util::BodyExt;
use hyper::Method;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::link::Link;
use crate::turn::{Approvals, SteeringMessage};
use centaur_protocol::sse::{Frame, Parser};

pub struct Follow {
    pub link: Link,
    pub thread_key: ThreadKey,
    pub execution_id: Uuid,
    /// The messages the turn started with (not steering).
    pub input_ids: Vec<Uuid>,
    pub after_event_id: i64,
    pub approvals: Arc<Approvals>,
    pub steering: mpsc::UnboundedSender<SteeringMessage>,
    /// Cancelled when the server ends the execution.
    pub ended: CancellationToken,
}

impl Follow {
    /// Runs until `stop` (the turn is over) or the execution ends.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        while !stop.is_cancelled() && !self.ended.is_cancelled() {
            let path = format!(
                "/agent/threads/{}/events?after_event_id={}",
                self.thread_key.to_path_segment(),
                self.after_event_id
            );
            let response = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.link.send(Method::GET, &path, None, &[]) => r,
            };
            let mut body = match response {
                Ok(response) if response.status().is_success() => {
                    backoff = Duration::from_millis(50);
                    response.into_body()
                }
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "thread stream refused");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "thread stream unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let mut parser = Parser::default();
            let mut frames = Vec::new();
            loop {
                let frame = tokio::select! {
                    _ = stop.cancelled() => return,
                    f = body.frame() => f,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                parser.push(&data, &mut frames);
                for frame in frames.drain(..) {
                    self.handle(frame);
                    if self.ended.is_cancelled() {
                        return;
                    }
                }
            }
        }
    }

    fn handle(&mut self, frame: Frame) {
        if let Some(id) = frame.id {
            self.after_event_id = self.after_event_id.max(id);
        }
        let Ok(event) = serde_json::from_str::<Event>(&frame.data) else {
            return;
        };
        let ours = event.execution_id == Some(self.execution_id);
        match event.body {
            EventBody::ExecutionCompleted { .. }
            | EventBody::ExecutionFailed { .. }
            | EventBody::ExecutionCancelled { .. } => {
                if ours {
                    self.ended.cancel();
                }
            }
            EventBody::SandboxReleased { .. } => self.ended.cancel(),
            EventBody::ApprovalResolved {
                approval_id,
                decision,
                ..
            } => self.approvals.resolve(approval_id, decision),
            EventBody::MessageCreated {
                message_id,
                role,
                text,
                ..
            } => {
                if role == Role::User && !self.input_ids.contains(&message_id) {
                    let _ = self.steering.send(SteeringMessage { message_id, text });
                }
            }
            // What the runner wrote itself, or the server's bookkeeping: nothing to act on.
            EventBody::ThreadCreated { .. }
            | EventBody::SandboxAssigned { .. }
            | EventBody::ExecutionQueued {}
            | EventBody::ExecutionStarted {}
            | EventBody::AgentMessageDelta { .. }
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
            | EventBody::Usage { .. } => {}
        }
    }
}
