//! Posts an execution's events to the server in batches, in order, exactly once.
//!
//! Events queue up while a post is in flight and go out together with the next one, so a
//! chatty harness costs few requests and a quiet one adds no delay. Each event gets the next
//! `seq`; the server stores each `seq` once, so a batch whose answer was lost is simply sent
//! again. While the server is away (a restart), events wait here and the posts are retried.
//!
//! The ids of the user messages the harness delivered to the running turn (steering) go out
//! with the next batch (one with no events if nothing else waits), the last ones at the latest
//! with the finish: the server records them as the turn's input. Sending them again is
//! harmless.

use std::collections::VecDeque;
use std::time::Duration;

use centaur_protocol::EventBody;
use centaur_protocol::runner::{BatchAccepted, EventBatch, Finish, RunnerEvent, RunnerExecution};
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::link::{Link, LinkError};

const MAX_BATCH: usize = 500;
/// Batches stay well under the server's body limit (16 MiB by default).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How the execution ended, as far as the server is concerned.
#[derive(Debug, PartialEq)]
pub enum Posted {
    /// The finish (and every event before it) is stored.
    Finished,
    /// The execution had already ended on the server (an interrupt or a release won).
    EndedElsewhere,
    /// Posting failed for good.
    Failed(String),
}

pub struct Poster {
    link: Link,
    execution_id: Uuid,
    next_seq: i64,
    pending: VecDeque<RunnerEvent>,
    /// Steered messages not yet in a stored batch.
    steered: Vec<Uuid>,
    /// Fired when the server says the execution is over, so the harness stops.
    ended: CancellationToken,
}

impl Poster {
    /// `runner_seq`: the highest seq already stored (0 for a fresh execution).
    pub fn new(
        link: Link,
        execution_id: Uuid,
        runner_seq: i64,
        ended: CancellationToken,
    ) -> Poster {
        Poster {
            link,
            execution_id,
            next_seq: runner_seq + 1,
            pending: VecDeque::new(),
            steered: Vec::new(),
            ended,
        }
    }

    /// Posts events from `events` until it closes, and the ids from `steered`, then `finish`
    /// (taken from `finish` once the harness is done; both channels' senders are gone by then).
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<EventBody>,
        mut steered: mpsc::UnboundedReceiver<Uuid>,
        finish: tokio::sync::oneshot::Receiver<Finish>,
    ) -> Posted {
        let mut finish = Some(finish);
        let mut final_finish: Option<Finish> = None;
        let mut open = true;
        let mut steering_open = true;
        let mut backoff = Duration::from_millis(50);
        loop {
            // Wait for something to do.
            if self.idle() && final_finish.is_none() {
                tokio::select! {
                    event = events.recv(), if open => match event {
                        Some(body) => self.queue(body),
                        None => open = false,
                    },
                    id = steered.recv(), if steering_open => match id {
                        Some(id) => self.steered.push(id),
                        None => steering_open = false,
                    },
                    done = async { finish.as_mut().expect("until taken").await }, if finish.is_some() && !open => {
                        finish = None;
                        final_finish = Some(done.unwrap_or(Finish::Failed { error: "the runner lost the harness's result".into(), output: None }));
                    }
                }
                if self.idle() && final_finish.is_none() {
                    continue;
                }
            }
            // Take everything else that is already waiting.
            while let Ok(body) = events.try_recv() {
                self.queue(body);
            }
            while let Ok(id) = steered.try_recv() {
                self.steered.push(id);
            }
            if !open
                && final_finish.is_none()
                && let Some(rx) = finish.as_mut()
                && let Ok(done) = rx.try_recv()
            {
                finish = None;
                final_finish = Some(done);
            }
            let count = self.batch_len();
            let last_batch = count == self.pending.len();
            let batch = EventBatch {
                events: self.pending.iter().take(count).cloned().collect(),
                finish: if last_batch {
                    final_finish.clone()
                } else {
                    None
                },
                steered: self.steered.clone(),
            };
            let path = format!("/runner/v1/executions/{}/events", self.execution_id);
            match self
                .link
                .call::<_, BatchAccepted>(Method::POST, &path, Some(&batch))
                .await
            {
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    self.pending.drain(..count);
                    self.steered.drain(..batch.steered.len());
                    if batch.finish.is_some() {
                        return Posted::Finished;
                    }
                }
                Err(LinkError::Status {
                    status: StatusCode::CONFLICT,
                    code,
                    ..
                }) if code == "execution_finished" => {
                    self.ended.cancel();
                    return Posted::EndedElsewhere;
                }
                Err(LinkError::Status {
                    status: StatusCode::CONFLICT,
                    code,
                    ..
                }) if code == "seq_gap" => {
                    // The server has fewer events than we think: ask where it stands.
                    if let Err(error) = self.resync().await {
                        self.ended.cancel();
                        return Posted::Failed(error.to_string());
                    }
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(%error, "posting events failed; retrying");
                    // Keep collecting while the server is away.
                    let wait = tokio::time::sleep(backoff);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            event = events.recv(), if open => match event {
                                Some(body) => self.queue(body),
                                None => open = false,
                            },
                            id = steered.recv(), if steering_open => match id {
                                Some(id) => self.steered.push(id),
                                None => steering_open = false,
                            },
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    // The harness must not go on working for an execution nobody records.
                    self.ended.cancel();
                    return Posted::Failed(error.to_string());
                }
            }
        }
    }

    /// How many pending events the next batch takes: at most MAX_BATCH events and about
    /// MAX_BATCH_BYTES (always at least one).
    fn batch_len(&self) -> usize {
        let mut bytes = 0;
        let mut count = 0;
        for event in self.pending.iter().take(MAX_BATCH) {
            bytes += serde_json::to_vec(event).map(|v| v.len()).unwrap_or(0);
            if count > 0 && bytes > MAX_BATCH_BYTES {
                break;
            }
            count += 1;
        }
        count
    }

    /// Nothing waits to be posted.
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.steered.is_empty()
    }

    fn queue(&mut self, body: EventBody) {
        self.pending.push_back(RunnerEvent {
            seq: self.next_seq,
            body,
        });
        self.next_seq += 1;
    }

    /// Drops what the server already has.
    async fn resync(&mut self) -> Result<(), LinkError> {
        let path = format!("/runner/v1/executions/{}", self.execution_id);
        let state: RunnerExecution = self
            .link
            .call::<(), _>(Method::GET, &path, None)
            .await?
            .ok_or_else(|| LinkError::Protocol("no execution state".into()))?;
        while self
            .pending
            .front()
            .is_some_and(|e| e.seq <= state.runner_seq)
        {
            self.pending.pop_front();
        }
        if let Some(first) = self.pending.front()
            && first.seq > state.runner_seq + 1
        {
            return Err(LinkError::Protocol(format!(
                "the server lost events {}..{} that this runner no longer holds",
                state.runner_seq + 1,
                first.seq - 1
            )));
        }
        Ok(())
    }
}
