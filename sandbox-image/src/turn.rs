//! One execution as a harness sees it: its input, a way to emit events, the interrupt signal,
//! approvals and new messages that arrive while it runs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use centaur_protocol::runner::{ApprovalPolicy, InputMessage};
use centaur_protocol::{ApprovalKind, ApprovalResolution, EventBody};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the harness's environment is made of.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub workspace: PathBuf,
    /// Environment for harness processes: the sandbox's own (proxy, CA bundle, placeholders).
    pub env: BTreeMap<String, String>,
    pub approval_policy: ApprovalPolicy,
}

/// Whether the harness may go ahead after an approval ended this way.
pub fn approved(verdict: ApprovalResolution) -> bool {
    match verdict {
        ApprovalResolution::Approve | ApprovalResolution::ApproveForSession => true,
        ApprovalResolution::Deny | ApprovalResolution::Cancelled => false,
    }
}

/// Approvals waiting for a decision from the thread's stream.
#[derive(Default)]
pub struct Approvals {
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<ApprovalResolution>>>,
}

impl Approvals {
    pub fn resolve(&self, approval_id: Uuid, verdict: ApprovalResolution) {
        if let Some(tx) = self
            .waiting
            .lock()
            .expect("approvals lock")
            .remove(&approval_id)
        {
            let _ = tx.send(verdict);
        }
    }

    fn wait(&self, approval_id: Uuid) -> oneshot::Receiver<ApprovalResolution> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("approvals lock")
            .insert(approval_id, tx);
        rx
    }
}

/// A user message that arrived while the turn runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SteeringMessage {
    pub message_id: Uuid,
    pub text: String,
}

/// The user messages that arrive while the turn runs, and the record of the ones the harness
/// delivered to it: those become the turn's input on the server (the rest wait for the next
/// turn).
pub struct Steering {
    messages: mpsc::UnboundedReceiver<SteeringMessage>,
    delivered: Option<mpsc::UnboundedSender<Uuid>>,
}

impl Steering {
    /// `delivered` gets the id of each message the harness says it delivered.
    pub fn new(
        messages: mpsc::UnboundedReceiver<SteeringMessage>,
        delivered: mpsc::UnboundedSender<Uuid>,
    ) -> Steering {
        Steering {
            messages,
            delivered: Some(delivered),
        }
    }

    /// Steering whose deliveries nobody records (a harness's tests that do not look at them).
    pub fn unrecorded(messages: mpsc::UnboundedReceiver<SteeringMessage>) -> Steering {
        Steering {
            messages,
            delivered: None,
        }
    }

    /// The harness handed this message to the running turn (sent it to the CLI).
    pub fn delivered(&self, message_id: Uuid) {
        if let Some(delivered) = &self.delivered {
            let _ = delivered.send(message_id);
        }
    }

    /// Takes the messages, leaving none, so they can be read while the turn is borrowed.
    pub fn take_messages(&mut self) -> mpsc::UnboundedReceiver<SteeringMessage> {
        std::mem::replace(&mut self.messages, mpsc::unbounded_channel().1)
    }
}

pub struct Turn {
    pub execution_id: Uuid,
    pub input: Vec<InputMessage>,
    pub sandbox: Sandbox,
    /// Fires on an interrupt, the deadline, or a release.
    pub cancelled: CancellationToken,
    /// User messages that arrive while the turn runs.
    pub steering: Steering,
    events: mpsc::UnboundedSender<EventBody>,
    approvals: Arc<Approvals>,
}

impl Turn {
    pub fn new(
        execution_id: Uuid,
        input: Vec<InputMessage>,
        sandbox: Sandbox,
        events: mpsc::UnboundedSender<EventBody>,
        approvals: Arc<Approvals>,
        steering: Steering,
        cancelled: CancellationToken,
    ) -> Turn {
        Turn {
            execution_id,
            input,
            sandbox,
            cancelled,
            steering,
            events,
            approvals,
        }
    }

    /// The input as one prompt.
    pub fn prompt(&self) -> String {
        self.input
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    pub fn emit(&self, body: EventBody) {
        let _ = self.events.send(body);
    }

    /// Asks the thread for a decision and waits for it (or for the turn to be cancelled).
    pub async fn approval(
        &self,
        kind: ApprovalKind,
        summary: String,
        details: serde_json::Value,
    ) -> ApprovalResolution {
        let approval_id = Uuid::now_v7();
        let decided = self.approvals.wait(approval_id);
        self.emit(EventBody::ApprovalRequested {
            approval_id,
            kind,
            summary,
            details,
        });
        tokio::select! {
            verdict = decided => verdict.unwrap_or(ApprovalResolution::Cancelled),
            _ = self.cancelled.cancelled() => ApprovalResolution::Cancelled,
        }
    }
}
