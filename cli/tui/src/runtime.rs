//! Carrying out the app's [`Effect`]s: each on a task that answers on the bus. Messages go out
//! one at a time, in the order they were typed; following a thread replaces the previous
//! stream.

use centaur_protocol::runner::ApprovalPolicy;
use centaur_protocol::{ErrorCode, Harness, ThreadKey};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::app::{AppEvent, Effect, StreamError};
use centaur_client::api::Client;

/// Carries out effects on tasks that answer on the bus.
pub struct Runtime {
    client: Client,
    bus: UnboundedSender<AppEvent>,
    follow: Option<JoinHandle<()>>,
    /// Messages go out one at a time, in the order they were typed.
    outbox: UnboundedSender<Message>,
}

/// A message for the thread: the turn it starts, or steering for the one that runs.
enum Message {
    Execute {
        key: ThreadKey,
        harness: Option<Harness>,
        approval_policy: Option<ApprovalPolicy>,
        text: String,
    },
    Steer {
        key: ThreadKey,
        text: String,
    },
}

impl Runtime {
    pub fn new(client: Client, bus: UnboundedSender<AppEvent>) -> Runtime {
        let (outbox, mut queue) = unbounded_channel::<Message>();
        let (sender, answers) = (client.clone(), bus.clone());
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                send_message(&sender, &answers, message).await;
            }
        });
        Runtime {
            client,
            bus,
            follow: None,
            outbox,
        }
    }

    pub fn run(&mut self, effect: Effect) {
        let client = self.client.clone();
        let bus = self.bus.clone();
        match effect {
            Effect::LoadThreads => {
                tokio::spawn(async move {
                    let _ = bus.send(AppEvent::Threads(client.threads().await));
                });
            }
            Effect::Follow(key) => {
                if let Some(previous) = self.follow.take() {
                    previous.abort();
                }
                self.follow = Some(tokio::spawn(follow(client, bus, key)));
            }
            Effect::LoadHarnesses => {
                tokio::spawn(async move {
                    let _ = bus.send(AppEvent::Harnesses(client.harnesses().await));
                });
            }
            Effect::Execute {
                key,
                harness,
                approval_policy,
                text,
            } => {
                let _ = self.outbox.send(Message::Execute {
                    key,
                    harness,
                    approval_policy,
                    text,
                });
            }
            Effect::Copy(text) => {
                // On this thread: the terminal's sequence goes between frames.
                let outcome = crate::clipboard::copy(&text).map_err(|error| error.to_string());
                let _ = self.bus.send(AppEvent::Copied(outcome));
            }
            Effect::Steer { key, text } => {
                let _ = self.outbox.send(Message::Steer { key, text });
            }
            Effect::Interrupt(key) => {
                tokio::spawn(async move {
                    if let Err(error) = client.interrupt(&key).await {
                        let _ = bus.send(AppEvent::InterruptFailed(error));
                    }
                });
            }
            Effect::Decide {
                key,
                approval_id,
                decision,
            } => {
                tokio::spawn(async move {
                    match client.approve(&key, approval_id, decision).await {
                        Ok(()) => {}
                        // Decided elsewhere first: its `approval.resolved` is on its way.
                        Err(error)
                            if error.is_api(ErrorCode::ApprovalAlreadyDecided)
                                || error.is_api(ErrorCode::ApprovalExpired) => {}
                        Err(error) => {
                            let _ = bus.send(AppEvent::DecisionFailed { approval_id, error });
                        }
                    }
                });
            }
        }
    }
}

async fn send_message(client: &Client, bus: &UnboundedSender<AppEvent>, message: Message) {
    match message {
        Message::Execute {
            key,
            harness,
            approval_policy,
            text,
        } => {
            let result = client
                .execute(&key, harness, &text, None, approval_policy)
                .await;
            let _ = bus.send(AppEvent::Executed { key, result });
        }
        Message::Steer { key, text } => {
            if let Err(error) = client.message(&key, &text).await {
                let _ = bus.send(AppEvent::SteerRefused { key, text, error });
            }
        }
    }
}

async fn follow(client: Client, bus: UnboundedSender<AppEvent>, key: ThreadKey) {
    let states = bus.clone();
    let state_key = key.clone();
    let result = client
        .follow_with(
            &key,
            0,
            None,
            |state| {
                let _ = states.send(AppEvent::Connection {
                    key: state_key.clone(),
                    state,
                });
            },
            |event| bus.send(AppEvent::Server(Box::new(event.clone()))).is_ok(),
        )
        .await;
    let error = match result {
        // The bus closed: the TUI is quitting.
        Ok(()) => return,
        Err(error) if error.is_api(ErrorCode::ThreadNotFound) => StreamError::NotFound,
        Err(error) => StreamError::Other(error),
    };
    let _ = bus.send(AppEvent::StreamEnded {
        key,
        error: Some(error),
    });
}
