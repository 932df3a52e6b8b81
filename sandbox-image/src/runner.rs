//! The runner's loop: claim an execution, run the harness's turn while following the thread
//! for control, post its events and its end; again, until the sandbox is stopped.

use std::sync::Arc;
use std::time::Duration;

use centaur_protocol::runner::{Assignment, Attachment, ClaimRequest, Finish};
use hyper::Method;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::follow::Follow;
use crate::harness::{self, Harness};
use crate::link::{Link, LinkError};
use crate::poster::{Posted, Poster};
use crate::tree;
use crate::turn::{Approvals, Sandbox, Steering, Turn};

const CLAIM_WAIT_MS: u64 = 30_000;
/// A runner that cannot reach its server for this long gives up: the server that started it is
/// gone for good (a restarted server would have taken it back by now).
const ORPHANED_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the server refused this runner: {0}")]
    Refused(LinkError),
    #[error("the harness broke; this sandbox must be replaced")]
    Broken,
    #[error("the server has been unreachable for {} s; giving up", ORPHANED_AFTER.as_secs())]
    Orphaned,
}

pub struct Runner {
    link: Link,
    attachment: Attachment,
    sandbox: Sandbox,
    harness: Box<dyn Harness>,
    /// The last execution this runner ran. The server hands an execution back to the sandbox
    /// that claims it again only when the claim's answer was lost; getting one this runner ran
    /// means its link to the server is broken.
    last_run: Option<uuid::Uuid>,
}

impl Runner {
    pub fn new(link: Link, attachment: Attachment, sandbox: Sandbox) -> Runner {
        let harness = harness::for_kind(attachment.harness, &sandbox);
        Runner {
            link,
            attachment,
            sandbox,
            harness,
            last_run: None,
        }
    }

    /// Serves the thread until `stop`, or until the harness breaks.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), RunnerError> {
        let claim_path = format!(
            "/runner/v1/threads/{}/claim",
            self.attachment.thread_key.to_path_segment()
        );
        let mut backoff = Duration::from_millis(50);
        // The server records the sandbox (and its token) right after handing it over.
        let attached_at = tokio::time::Instant::now();
        let mut unreachable_since: Option<tokio::time::Instant> = None;
        while !stop.is_cancelled() {
            let request = ClaimRequest {
                wait_ms: Some(CLAIM_WAIT_MS),
            };
            let claimed = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                c = self.link.call::<_, Assignment>(Method::POST, &claim_path, Some(&request)) => c,
            };
            match claimed {
                Ok(Some(assignment)) => {
                    backoff = Duration::from_millis(50);
                    unreachable_since = None;
                    if self.last_run == Some(assignment.execution_id) {
                        tracing::error!(execution_id = %assignment.execution_id, "the server handed back a turn this runner already ran; stopping");
                        return Err(RunnerError::Broken);
                    }
                    self.last_run = Some(assignment.execution_id);
                    self.execute(assignment).await;
                    if self.harness.broken() {
                        return Err(RunnerError::Broken);
                    }
                }
                Ok(None) => {
                    backoff = Duration::from_millis(50);
                    unreachable_since = None;
                }
                Err(error)
                    if error.is_transient()
                        || (error.is_unauthorized()
                            && attached_at.elapsed() < Duration::from_secs(30)) =>
                {
                    tracing::debug!(%error, "claim failed; retrying");
                    let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > ORPHANED_AFTER {
                        return Err(RunnerError::Orphaned);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(RunnerError::Refused(error)),
            }
        }
        Ok(())
    }

    async fn execute(&mut self, assignment: Assignment) {
        let execution_id = assignment.execution_id;
        // The turn runs under the policy the server gives it now, not the one the sandbox
        // started with (an older server gives none: the attachment's stays).
        let mut sandbox = self.sandbox.clone();
        if let Some(policy) = assignment.approval_policy {
            sandbox.approval_policy = policy;
        }
        let span =
            tracing::info_span!("execution", %execution_id, thread_key = %assignment.thread_key);
        let _enter = span.enter();
        let ended = CancellationToken::new();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (steered_tx, steered_rx) = mpsc::unbounded_channel();
        let (finish_tx, finish_rx) = oneshot::channel();
        let poster = Poster::new(
            self.link.clone(),
            execution_id,
            assignment.runner_seq,
            ended.clone(),
        );
        let posting = tokio::spawn(poster.run(events_rx, steered_rx, finish_rx));

        let approvals = Arc::new(Approvals::default());
        let (steering_tx, steering_rx) = mpsc::unbounded_channel();
        let follow = Follow {
            link: self.link.clone(),
            thread_key: assignment.thread_key.clone(),
            execution_id,
            input_ids: assignment.input.iter().map(|m| m.message_id).collect(),
            after_event_id: assignment.started_event_id,
            approvals: approvals.clone(),
            steering: steering_tx,
            ended: ended.clone(),
        };
        let stop_following = CancellationToken::new();
        let following = tokio::spawn(follow.run(stop_following.clone()));

        let finish = if assignment.runner_seq > 0 {
            // Events were posted for this execution by a runner that is gone: its turn cannot
            // be picked up mid-way.
            drop(events_tx);
            drop(steered_tx);
            Finish::Failed {
                error: "the sandbox restarted during this turn; send the message again".into(),
                output: None,
            }
        } else {
            // The harness's own process starts before the turn does: what it starts at launch
            // (MCP servers, a language server) is the sandbox's, not the turn's. A failure is
            // the turn's to report.
            self.harness.prepare(&sandbox).await;
            // An interrupt, the deadline or a release ends what the turn started right away,
            // whatever the harness does about it (its own interrupt still goes out, so it
            // reports the turn as interrupted).
            let before = tree::Before::now();
            let ending = ended.clone();
            let ender_before = before.clone();
            let ender = tokio::spawn(async move {
                ending.cancelled().await;
                let ended = tree::end_turn(&ender_before).await;
                tracing::info!(
                    signalled = ended.signalled,
                    left = ended.left,
                    "the turn ended early; its processes are gone"
                );
            });
            let mut turn = Turn::new(
                execution_id,
                assignment.input,
                sandbox,
                events_tx,
                approvals,
                Steering::new(steering_rx, steered_tx),
                ended.clone(),
            );
            let finish = self.harness.turn(&mut turn).await;
            drop(turn);
            if ended.is_cancelled() {
                let _ = ender.await;
                // The harness may have gone on for a while after the first sweep (up to its
                // interrupt grace): what it started meanwhile goes too, or it would count as
                // running before the next turn.
                let again = tree::end_turn(&before).await;
                if again.signalled > 0 {
                    tracing::info!(
                        signalled = again.signalled,
                        left = again.left,
                        "processes started after the turn was ended are gone"
                    );
                }
            } else {
                // A turn that ended by itself leaves what it started running (a server the
                // agent started on purpose); the `execution.completed` the runner is about to
                // cause must not end it.
                ender.abort();
            }
            finish
        };
        let _ = finish_tx.send(finish);
        match posting.await {
            Ok(Posted::Finished) => tracing::info!("execution finished"),
            Ok(Posted::EndedElsewhere) => tracing::info!("execution ended by the server"),
            Ok(Posted::Failed(error)) => tracing::warn!(%error, "could not post the execution"),
            Err(error) => tracing::warn!(%error, "the poster panicked"),
        }
        stop_following.cancel();
        let _ = following.await;
    }
}
