//! One Slack thread's delivery: its events after the cursor, then live ones, rendered into the
//! Slack thread; the cursor and the state move together once an event's effects are done.
//!
//! What a turn looks like in Slack:
//! - at its start, the status line (`is working…`, then the current step) and the **control
//!   message**: "Working on it…" with the Stop button;
//! - its progress (commands, file changes, the agent's text) streamed into one message
//!   (`chat.startStream`, `appendStream` at most about once a second, the first at once; a new
//!   stream before Slack's five-minute limit or when Slack closed it); where streaming is
//!   unavailable, shown on the control message instead (`chat.update`);
//! - approval requests as their own messages with buttons, updated once decided;
//! - at its end: the stream stopped, the control message turned into the outcome line (no
//!   button), the answer (mrkdwn, split, or attached as a file when long), the eyes reaction on
//!   the message that started the turn replaced by a check mark or a cross, the status cleared.

use std::sync::Arc;
use std::time::Duration;

use centaur_protocol::slack::web::{
    AppendStream, PostMessage, ReactionsAdd, ReactionsRemove, SetStatus, StartStream, StopStream,
    Update, errors,
};
use centaur_protocol::{Author, Event, EventBody, Role, ThreadKey};
use chrono::Utc;
use tokio::time::Instant;
use uuid::Uuid;

use super::state::{
    ApprovalMessage, DeliveryState, SHOWN_CHARS, Stream, Turn, WORKING, balanced_tail,
    shown_details,
};
use super::{Halt, Lease};
use crate::app::AppState;
use crate::slack::Slack;
use crate::slack::blocks::{self, Rendered};
use crate::slack::conversation::after_turn::after_turn_of;
use crate::slack::format::{
    MESSAGE_CHARS, code_block, escape, neutralise_mentions, split, to_mrkdwn, truncate,
};
use crate::slack::web::WebError;

/// Events read at a time.
const READ_BATCH: i64 = 200;
/// Progress is streamed at most this often (the first at once).
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Where streaming is unavailable, the control message is updated at most this often
/// (`chat.update` is tier 3: 50 a minute).
const CONTROL_UPDATE_EVERY: Duration = Duration::from_millis(1500);
/// Markdown per `startStream`/`appendStream` call (Slack takes 12,000).
const STREAM_CHUNK: usize = 8000;
/// A stream older than this is stopped and a new one started (Slack closes them at ~5 min).
const STREAM_RENEW_SECS: i64 = 270;
/// The status is put up again this often while working (Slack clears it after 2 min).
const STATUS_REFRESH: Duration = Duration::from_secs(90);
/// Status changes at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// With nothing to do, a follower still looks around this often.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// An answer longer than this many messages is attached as a file instead.
const MAX_ANSWER_MESSAGES: usize = 4;
/// A failed turn's output up to this long goes in its message; longer, in a file.
const INLINE_OUTPUT_CHARS: usize = 2500;
/// The preview of an answer attached as a file.
const PREVIEW_CHARS: usize = 1500;
/// At most this many tries to send the last progress at a turn's end.
const FINAL_FLUSH_TRIES: usize = 20;

/// Where a Slack thread is.
pub(super) struct Place {
    pub thread_id: i64,
    pub thread_key: ThreadKey,
    pub team_id: String,
    pub channel_id: String,
    pub thread_ts: String,
    pub started_by_id: String,
}

pub(super) struct Follower<'a> {
    pub state: &'a AppState,
    pub slack: Arc<Slack>,
    pub lease: &'a Lease,
    pub place: Place,
    pub delivery: DeliveryState,
    /// The last event whose effects are done.
    pub cursor: i64,
    /// State or cursor changed since the last save.
    pub dirty: bool,
    last_flush: Option<Instant>,
    flush_not_before: Option<Instant>,
    /// The status shown, and when.
    status_shown: Option<(String, Instant)>,
    status_not_before: Option<Instant>,
    /// Slack refused the status for this thread (not an assistant thread, a missing scope).
    status_refused: bool,
}

/// Delivers the thread `thread_id` (whose lease this replica holds) until it is caught up with
/// no turn running.
pub(super) async fn follow(
    state: &AppState,
    slack: Arc<Slack>,
    thread_id: i64,
    lease: &Lease,
) -> Result<(), Halt> {
    let Some((mut follower, known_last)) = Follower::load(state, slack, thread_id, lease).await?
    else {
        return Ok(());
    };
    let mut live = state.hub.subscribe(thread_id, known_last);
    loop {
        let events = follower.read().await?;
        let read = events.len() as i64;
        for (event_id, event) in events {
            if let Some(event) = event {
                follower.render(event).await?;
            }
            follower.cursor = event_id;
            follower.dirty = true;
        }
        follower.flush_progress(false).await?;
        follower.refresh_status().await?;
        if follower.dirty {
            follower.save().await?;
        }
        if read > 0 {
            continue;
        }
        if follower.delivery.turn.is_none() {
            super::release(state, thread_id).await?;
            return Ok(());
        }
        let wait = follower.next_wake();
        tokio::select! {
            _ = state.shutdown.cancelled() => return Err(Halt::Shutdown),
            _ = lease.lost.cancelled() => return Err(Halt::LeaseLost),
            _ = live.rx.recv() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

type PlaceRow = (String, String, String, String, i64, String, String, i64);

impl<'a> Follower<'a> {
    async fn load(
        state: &'a AppState,
        slack: Arc<Slack>,
        thread_id: i64,
        lease: &'a Lease,
    ) -> Result<Option<(Follower<'a>, i64)>, Halt> {
        let row: Option<PlaceRow> = sqlx::query_as(
            "SELECT s.team_id, s.channel_id, s.thread_ts, s.started_by_id, s.delivered_event_id, \
                    s.delivery::text, t.thread_key, t.last_event_id \
             FROM slack_threads s JOIN threads t ON t.id = s.thread_id \
             WHERE s.thread_id = $1 AND s.lease_owner = $2",
        )
        .bind(thread_id)
        .bind(state.replica.as_ref())
        .fetch_optional(&state.pool)
        .await?;
        let Some((team_id, channel_id, thread_ts, started_by_id, cursor, delivery, key, last)) =
            row
        else {
            return Err(Halt::LeaseLost);
        };
        let Ok(thread_key) = ThreadKey::parse(&key) else {
            tracing::warn!(thread_id, key, "Slack delivery: not a thread key; skipping");
            return Ok(None);
        };
        // Starting afresh would forget the intents of posts that may have landed (and post them
        // again): stop, and say how to recover (docs/slack.md, troubleshooting).
        let delivery = serde_json::from_str(&delivery).map_err(|error| {
            tracing::error!(%thread_key, thread_id, %error,
                "Slack delivery: this thread's delivery state (slack_threads.delivery) is \
                 unreadable; its delivery is stopped until it is repaired (docs/slack.md, \
                 troubleshooting)");
            Halt::UnreadableState
        })?;
        let follower = Follower {
            state,
            slack,
            lease,
            place: Place {
                thread_id,
                thread_key,
                team_id,
                channel_id,
                thread_ts,
                started_by_id,
            },
            delivery,
            cursor,
            dirty: false,
            last_flush: None,
            flush_not_before: None,
            status_shown: None,
            status_not_before: None,
            status_refused: false,
        };
        Ok(Some((follower, last)))
    }

    /// The next events after the cursor, each parsed (`None`: one this version cannot read).
    async fn read(&self) -> Result<Vec<(i64, Option<Event>)>, Halt> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT event_id, data::text FROM events \
             WHERE thread_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3",
        )
        .bind(self.place.thread_id)
        .bind(self.cursor)
        .bind(READ_BATCH)
        .fetch_all(&self.state.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, data)| {
                let event = serde_json::from_str::<Event>(&data)
                    .inspect_err(|error| {
                        tracing::warn!(event_id = id, %error, "Slack delivery: skipping an event")
                    })
                    .ok();
                (id, event)
            })
            .collect())
    }

    /// Saves the cursor and the state, if this replica still holds the lease.
    pub(super) async fn save(&mut self) -> Result<(), Halt> {
        let document = serde_json::to_string(&self.delivery).expect("delivery state serialises");
        let saved = sqlx::query(
            "UPDATE slack_threads SET delivered_event_id = $2, delivery = $3::jsonb \
             WHERE thread_id = $1 AND lease_owner = $4",
        )
        .bind(self.place.thread_id)
        .bind(self.cursor)
        .bind(document)
        .bind(self.state.replica.as_ref())
        .execute(&self.state.pool)
        .await?;
        if saved.rows_affected() == 0 {
            return Err(Halt::LeaseLost);
        }
        self.dirty = false;
        Ok(())
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let mut wake = IDLE_WAKE;
        if let Some(turn) = &self.delivery.turn
            && !turn.pending.is_empty()
        {
            let due = [
                self.flush_not_before,
                self.last_flush.map(|at| at + self.flush_every()),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
            wake = wake.min(due.saturating_duration_since(now));
        }
        // A changed step is shown as soon as status changes may come again.
        if let (Some(turn), Some((shown, at))) = (&self.delivery.turn, &self.status_shown)
            && *shown != turn.step
        {
            let due = [Some(*at + STATUS_EVERY), self.status_not_before]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(now);
            wake = wake.min(due.saturating_duration_since(now));
        }
        wake.max(Duration::from_millis(10))
    }

    /// How often progress goes out: streamed, or (streaming unavailable) as control updates.
    fn flush_every(&self) -> Duration {
        if self.delivery.streaming_unavailable {
            CONTROL_UPDATE_EVERY
        } else {
            FLUSH_EVERY
        }
    }

    fn message(&self, rendered: Rendered) -> PostMessage {
        PostMessage {
            channel: self.place.channel_id.clone(),
            text: rendered.text,
            blocks: Some(rendered.blocks),
            thread_ts: Some(self.place.thread_ts.clone()),
            ..PostMessage::default()
        }
    }

    fn text_message(&self, text: String) -> PostMessage {
        PostMessage {
            channel: self.place.channel_id.clone(),
            text,
            thread_ts: Some(self.place.thread_ts.clone()),
            ..PostMessage::default()
        }
    }

    fn update(&self, ts: &str, rendered: Rendered) -> Update {
        Update {
            channel: self.place.channel_id.clone(),
            ts: ts.to_owned(),
            text: rendered.text,
            blocks: Some(rendered.blocks),
        }
    }

    // ---- events ----

    async fn render(&mut self, event: Event) -> Result<(), Halt> {
        let event_id = event.event_id;
        let execution_id = event.execution_id;
        match &event.body {
            EventBody::MessageCreated {
                role, text, author, ..
            } => match author {
                Some(Author::Slack(user)) => {
                    self.delivery.next_author = Some(user.id.clone());
                    self.dirty = true;
                }
                None if *role == Role::User => {
                    // Written in the CLI or the TUI: shown, briefly, for the people in Slack.
                    let text = format!("_via Centaur:_ {}", escape(&truncate(text, 600)));
                    let message = self.text_message(text);
                    self.post_once(&format!("message:{event_id}"), message)
                        .await?;
                }
                None => {}
            },
            EventBody::ExecutionQueued {} | EventBody::ExecutionStarted {} => {
                if let Some(execution_id) = execution_id {
                    self.ensure_turn(execution_id).await?;
                }
            }
            EventBody::ExecutionCompleted { .. }
            | EventBody::ExecutionFailed { .. }
            | EventBody::ExecutionCancelled { .. } => {
                if let (Some(execution_id), Some(end)) = (execution_id, TurnEnd::of(&event.body)) {
                    self.finish_turn(execution_id, end).await?;
                }
            }
            EventBody::ApprovalRequested {
                approval_id,
                kind,
                summary,
                details,
            } => {
                self.note_progress(execution_id, &event.body).await?;
                if !self.delivery.approvals.contains_key(approval_id) {
                    let rendered = blocks::approval_request(
                        &self.place.thread_key,
                        *approval_id,
                        *kind,
                        summary,
                        details,
                    );
                    let message = self.message(rendered);
                    if let Some(ts) = self
                        .post_once(&format!("approval:{approval_id}"), message)
                        .await?
                    {
                        self.delivery.approvals.insert(
                            *approval_id,
                            ApprovalMessage {
                                ts,
                                kind: *kind,
                                summary: truncate(summary, 500),
                                details: shown_details(details),
                            },
                        );
                        self.dirty = true;
                    }
                }
            }
            EventBody::ApprovalResolved {
                approval_id,
                decision,
                decided_by,
            } => {
                self.note_progress(execution_id, &event.body).await?;
                if let Some(message) = self.delivery.approvals.get(approval_id).cloned() {
                    let rendered = blocks::approval_resolved(
                        &self.place.thread_key,
                        message.kind,
                        &message.summary,
                        &message.details,
                        *decision,
                        decided_by,
                    );
                    let update = self.update(&message.ts, rendered);
                    if let Err(error) = self.call(&update).await? {
                        self.report(&error, "show an approval's decision");
                    }
                    self.delivery.approvals.remove(approval_id);
                    self.delivery
                        .posts
                        .remove(&format!("approval:{approval_id}"));
                    self.dirty = true;
                }
            }
            EventBody::ThreadCreated { .. }
            | EventBody::SandboxAssigned { .. }
            | EventBody::SandboxReleased { .. }
            | EventBody::Usage { .. } => {}
            EventBody::AgentMessageDelta { .. }
            | EventBody::AgentMessage { .. }
            | EventBody::AgentReasoning { .. }
            | EventBody::CommandStarted { .. }
            | EventBody::CommandOutput { .. }
            | EventBody::CommandFinished { .. }
            | EventBody::FileChanged { .. }
            | EventBody::ToolCallStarted { .. }
            | EventBody::ToolCallFinished { .. }
            | EventBody::EgressDenied { .. } => {
                self.note_progress(execution_id, &event.body).await?;
            }
        }
        Ok(())
    }

    /// Adds what a turn's event shows to its progress and status line.
    async fn note_progress(
        &mut self,
        execution_id: Option<Uuid>,
        body: &EventBody,
    ) -> Result<(), Halt> {
        let Some(execution_id) = execution_id else {
            return Ok(());
        };
        self.ensure_turn(execution_id).await?;
        if let Some(turn) = self.delivery.turn.as_mut() {
            turn.add(body);
        }
        self.dirty = true;
        Ok(())
    }

    /// The turn `execution_id`, started in Slack (status, control message) if it is new.
    async fn ensure_turn(&mut self, execution_id: Uuid) -> Result<(), Halt> {
        if self
            .delivery
            .turn
            .as_ref()
            .is_some_and(|turn| turn.execution_id == execution_id)
        {
            return Ok(());
        }
        if let Some(stale) = self.delivery.turn.take() {
            // Its end never came (it cannot: each turn has one); let it go quietly.
            tracing::warn!(thread_key = %self.place.thread_key, execution_id = %stale.execution_id,
                "Slack delivery: a new turn began before the last one ended");
        }
        let recipient = self
            .delivery
            .next_author
            .take()
            .or_else(|| Some(self.place.started_by_id.clone()));
        self.delivery.turn = Some(Turn::new(execution_id, recipient));
        self.last_flush = None;
        self.flush_not_before = None;
        self.dirty = true;
        self.set_status(WORKING).await?;
        let message = self.message(blocks::control_working(&self.place.thread_key, None));
        let control = self
            .post_once(&format!("control:{execution_id}"), message)
            .await?;
        if let Some(turn) = self.delivery.turn.as_mut() {
            turn.control_ts = control;
        }
        Ok(())
    }

    // ---- progress ----

    /// Sends waiting progress, if it is time (`force`: now, waiting out rate limits).
    async fn flush_progress(&mut self, force: bool) -> Result<(), Halt> {
        for _ in 0..FINAL_FLUSH_TRIES {
            let Some(turn) = self.delivery.turn.as_ref() else {
                return Ok(());
            };
            if turn.pending.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if let Some(at) = self.flush_not_before
                && now < at
            {
                if !force {
                    return Ok(());
                }
                self.pause(at - now).await?;
                continue;
            }
            if !force
                && self
                    .last_flush
                    .is_some_and(|at| now < at + self.flush_every())
            {
                return Ok(());
            }
            self.last_flush = Some(now);
            self.flush_not_before = None;
            if self.delivery.streaming_unavailable {
                self.show_on_control().await?;
            } else {
                self.stream_pending().await?;
            }
            self.dirty = true;
            if !force {
                return Ok(());
            }
        }
        if let Some(turn) = self.delivery.turn.as_mut() {
            turn.pending.clear();
        }
        Ok(())
    }

    /// One `startStream` or `appendStream` with the start of the waiting progress.
    async fn stream_pending(&mut self) -> Result<(), Halt> {
        let Some(turn) = self.delivery.turn.as_mut() else {
            return Ok(());
        };
        let chunk: String = turn.pending.chars().take(STREAM_CHUNK).collect();
        // Sent as Markdown, as is: mentions in an agent's text or a command's output made inert.
        let sent = neutralise_mentions(&chunk);
        let now_unix = Utc::now().timestamp();
        if let Some(stream) = &turn.stream
            && now_unix - stream.started_at >= STREAM_RENEW_SECS
        {
            let old = turn.stream.take().map(|s| s.ts).unwrap_or_default();
            let stop = StopStream {
                channel: self.place.channel_id.clone(),
                ts: old,
                ..StopStream::default()
            };
            // Best effort: Slack may have closed it already.
            let _ = self.slack.web.call(&stop).await;
        }
        let Some(turn) = self.delivery.turn.as_ref() else {
            return Ok(());
        };
        let outcome = match &turn.stream {
            None => {
                let start = StartStream {
                    channel: self.place.channel_id.clone(),
                    thread_ts: self.place.thread_ts.clone(),
                    markdown_text: Some(sent),
                    recipient_user_id: turn.recipient.clone(),
                    recipient_team_id: Some(self.place.team_id.clone()),
                };
                self.slack.web.call(&start).await.map(|started| {
                    Some(Stream {
                        ts: started.ts,
                        started_at: now_unix,
                    })
                })
            }
            Some(stream) => {
                let append = AppendStream {
                    channel: self.place.channel_id.clone(),
                    ts: stream.ts.clone(),
                    markdown_text: sent,
                };
                self.slack.web.call(&append).await.map(|_| None)
            }
        };
        let Some(turn) = self.delivery.turn.as_mut() else {
            return Ok(());
        };
        match outcome {
            Ok(new_stream) => {
                if new_stream.is_some() {
                    turn.stream = new_stream;
                }
                turn.pending.drain(..chunk.len());
            }
            Err(error) if error.code() == Some(errors::MESSAGE_NOT_IN_STREAMING_STATE) => {
                // Slack closed it (its five minutes): the next flush starts a new one, at once.
                turn.stream = None;
                self.last_flush = None;
            }
            Err(error) if turn.stream.is_none() && streaming_unavailable(&error) => {
                tracing::info!(thread_key = %self.place.thread_key, %error,
                    "Slack streaming unavailable; showing progress on the control message");
                self.delivery.streaming_unavailable = true;
                self.last_flush = None;
            }
            Err(error) => self.progress_failed(error),
        }
        Ok(())
    }

    /// Where streaming is unavailable: the progress on the control message.
    async fn show_on_control(&mut self) -> Result<(), Halt> {
        let Some(turn) = self.delivery.turn.as_ref() else {
            return Ok(());
        };
        let shown = balanced_tail(&format!("{}{}", turn.shown, turn.pending), SHOWN_CHARS);
        let Some(control) = turn.control_ts.clone() else {
            if let Some(turn) = self.delivery.turn.as_mut() {
                turn.shown = shown;
                turn.pending.clear();
            }
            return Ok(());
        };
        let rendered = blocks::control_working(&self.place.thread_key, Some(&to_mrkdwn(&shown)));
        let update = self.update(&control, rendered);
        match self.slack.web.call(&update).await {
            Ok(_) => {
                if let Some(turn) = self.delivery.turn.as_mut() {
                    turn.shown = shown;
                    turn.pending.clear();
                }
            }
            Err(error) => self.progress_failed(error),
        }
        Ok(())
    }

    /// Progress not sent: wait (a rate limit, a hiccup) and send it later with what comes next,
    /// or, refused for good, drop it.
    fn progress_failed(&mut self, error: WebError) {
        if let WebError::RateLimited { retry_after, .. } = &error {
            self.flush_not_before = Some(Instant::now() + *retry_after);
        } else if error.is_transient() {
            self.flush_not_before = Some(Instant::now() + FLUSH_EVERY);
        } else {
            self.report(&error, "show progress");
            if let Some(turn) = self.delivery.turn.as_mut() {
                turn.pending.clear();
            }
        }
    }

    // ---- status ----

    /// Puts up the turn's status line when it changed or is about to be cleared by Slack.
    async fn refresh_status(&mut self) -> Result<(), Halt> {
        // After the end is shown (its status cleared), only the end's redo is left.
        let Some(step) = self
            .delivery
            .turn
            .as_ref()
            .filter(|t| !t.end_shown)
            .map(|t| t.step.clone())
        else {
            return Ok(());
        };
        let now = Instant::now();
        let due = match &self.status_shown {
            None => true,
            Some((shown, at)) => {
                (*shown != step && now >= *at + STATUS_EVERY) || now >= *at + STATUS_REFRESH
            }
        };
        if due {
            self.set_status(&step).await?;
        }
        Ok(())
    }

    /// `assistant.threads.setStatus` (`""` clears it). Idempotent; a failure is left to the
    /// next refresh.
    async fn set_status(&mut self, status: &str) -> Result<(), Halt> {
        if self.status_refused && !status.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if self.status_not_before.is_some_and(|at| now < at) && !status.is_empty() {
            return Ok(());
        }
        let request = SetStatus {
            channel_id: self.place.channel_id.clone(),
            thread_ts: self.place.thread_ts.clone(),
            status: status.to_owned(),
            loading_messages: None,
        };
        let answer = if status.is_empty() {
            self.call(&request).await?
        } else {
            self.slack.web.call(&request).await
        };
        match answer {
            Ok(_) => self.status_shown = Some((status.to_owned(), now)),
            Err(WebError::RateLimited { retry_after, .. }) => {
                self.status_not_before = Some(now + retry_after);
            }
            Err(error) if error.is_transient() => {
                self.status_not_before = Some(now + STATUS_EVERY);
            }
            Err(error) => {
                if !self.status_refused {
                    self.report(&error, "show the working status");
                }
                self.status_refused = true;
            }
        }
        Ok(())
    }

    // ---- the end ----

    /// A turn's end: shown in Slack (once: recorded and saved before going on), then the
    /// messages that waited for it given to a next turn, then the reactions. Done again from
    /// where it stopped after a transient failure or a restart.
    async fn finish_turn(&mut self, execution_id: Uuid, end: TurnEnd<'_>) -> Result<(), Halt> {
        self.ensure_turn(execution_id).await?;
        if !self
            .delivery
            .turn
            .as_ref()
            .is_some_and(|turn| turn.end_shown)
        {
            self.show_end(execution_id, end).await?;
            if let Some(turn) = self.delivery.turn.as_mut() {
                turn.end_shown = true;
            }
            // Saved before after_turn: a redo of the end finds its posts recorded and neither
            // looks for them nor posts them again.
            self.save().await?;
        }
        // Slack messages that came while this turn ran are marked as taken by it and start the
        // next turn (idempotent). Before the reactions: the check mark goes on every message
        // the turn took. A transient failure halts the follower (the end is taken up again by
        // the next sweep); a permanent one is said once in the thread and the end goes on.
        if let Err(error) = after_turn_of(self.state, self.place.thread_id, execution_id).await {
            if error.is_transient() {
                return Err(Halt::AfterTurn(error));
            }
            tracing::warn!(
                thread_key = %self.place.thread_key, %execution_id, %error,
                "Slack delivery: the messages sent during the turn could not start a next turn"
            );
            let line = format!(
                "⚠️ The messages sent while the agent worked could not start a new turn: {}",
                escape(&truncate(&error.to_string(), 500))
            );
            let message = self.text_message(line);
            self.post_once(&format!("after:{execution_id}"), message)
                .await?;
        }
        self.react(execution_id, matches!(end, TurnEnd::Completed { .. }))
            .await?;
        let id = execution_id.to_string();
        self.delivery.posts.retain(|key, _| !key.contains(&id));
        self.delivery.turn = None;
        self.dirty = true;
        Ok(())
    }

    /// The end in the thread: the last progress, the stream stopped, the outcome line, the
    /// answer or the failure, the status cleared.
    async fn show_end(&mut self, execution_id: Uuid, end: TurnEnd<'_>) -> Result<(), Halt> {
        // The last progress: streamed, or onto the control message with the outcome.
        if self.delivery.streaming_unavailable {
            if let Some(turn) = self.delivery.turn.as_mut() {
                turn.close_output();
                turn.shown = balanced_tail(&format!("{}{}", turn.shown, turn.pending), SHOWN_CHARS);
                turn.pending.clear();
            }
        } else {
            if let Some(turn) = self.delivery.turn.as_mut() {
                turn.close_output();
            }
            self.flush_progress(true).await?;
        }
        let Some(turn) = self.delivery.turn.clone() else {
            return Ok(());
        };
        if let Some(stream) = &turn.stream {
            let stop = StopStream {
                channel: self.place.channel_id.clone(),
                ts: stream.ts.clone(),
                ..StopStream::default()
            };
            match self.call(&stop).await? {
                Ok(_) => {}
                Err(error) if error.code() == Some(errors::MESSAGE_NOT_IN_STREAMING_STATE) => {}
                Err(error) => self.report(&error, "stop the progress stream"),
            }
        }
        let outcome = end.outcome_line();
        let progress = (self.delivery.streaming_unavailable && !turn.shown.trim().is_empty())
            .then(|| to_mrkdwn(&turn.shown));
        match &turn.control_ts {
            Some(control) => {
                let update =
                    self.update(control, blocks::control_done(&outcome, progress.as_deref()));
                if let Err(error) = self.call(&update).await? {
                    self.report(&error, "show the turn's outcome");
                }
            }
            None => {
                if matches!(end, TurnEnd::Cancelled { .. }) {
                    let message = self.text_message(outcome.clone());
                    self.post_once(&format!("outcome:{execution_id}"), message)
                        .await?;
                }
            }
        }
        match end {
            TurnEnd::Completed { result_text } => {
                self.post_answer(execution_id, result_text).await?;
            }
            TurnEnd::Failed { error, output } => {
                self.post_failure(execution_id, error, output).await?;
            }
            TurnEnd::Cancelled { .. } => {}
        }
        self.set_status("").await?;
        self.status_shown = None;
        Ok(())
    }

    /// The answer: mrkdwn in as many messages as it needs, or, past a few, attached whole as a
    /// Markdown file with its beginning as the message.
    async fn post_answer(&mut self, execution_id: Uuid, markdown: &str) -> Result<(), Halt> {
        if markdown.trim().is_empty() {
            return Ok(());
        }
        let text = to_mrkdwn(markdown);
        let parts = split(&text, MESSAGE_CHARS);
        if parts.len() > MAX_ANSWER_MESSAGES {
            let preview = split(&text, PREVIEW_CHARS)
                .into_iter()
                .next()
                .unwrap_or_default();
            let comment = format!(
                "{preview}\n\n_The whole answer ({} characters) is attached._",
                markdown.chars().count()
            );
            let title = format!("answer-{execution_id}.md");
            let shared = self
                .upload_once(&title, "answer.md", markdown.as_bytes().to_vec(), comment)
                .await?;
            if shared.is_some() {
                return Ok(());
            }
            // No file (no files:write): as many messages as are allowed, and say so.
            for (i, part) in parts.iter().take(MAX_ANSWER_MESSAGES).enumerate() {
                let message = self.text_message(part.clone());
                self.post_once(&format!("answer:{execution_id}:{i}"), message)
                    .await?;
            }
            let note = self.text_message(
                "_The rest of the answer could not be attached; see it with `centaur attach`._"
                    .into(),
            );
            self.post_once(&format!("answer:{execution_id}:cut"), note)
                .await?;
            return Ok(());
        }
        for (i, part) in parts.into_iter().enumerate() {
            let message = self.text_message(part);
            self.post_once(&format!("answer:{execution_id}:{i}"), message)
                .await?;
        }
        Ok(())
    }

    /// A failed turn: its error, and its output as a code block or, when long, a file.
    async fn post_failure(
        &mut self,
        execution_id: Uuid,
        error: &str,
        output: Option<&str>,
    ) -> Result<(), Halt> {
        let mut text = format!("❌ *The turn failed:* {}", escape(&truncate(error, 1000)));
        let output = output.filter(|o| !o.trim().is_empty());
        let long = output.filter(|o| o.chars().count() > INLINE_OUTPUT_CHARS);
        match (output, long) {
            (Some(_), Some(_)) => text.push_str("\n_Its output is attached._"),
            (Some(output), None) => {
                text.push('\n');
                text.push_str(&code_block(output));
            }
            (None, _) => {}
        }
        for (i, part) in split(&text, MESSAGE_CHARS).into_iter().enumerate() {
            let message = self.text_message(part);
            self.post_once(&format!("failure:{execution_id}:{i}"), message)
                .await?;
        }
        if let Some(output) = long {
            let title = format!("output-{execution_id}.txt");
            self.upload_once(
                &title,
                "output.txt",
                output.as_bytes().to_vec(),
                "The failed turn's output".into(),
            )
            .await?;
        }
        Ok(())
    }

    /// On the message that started the turn: eyes off, a check mark or a cross on.
    async fn react(&mut self, execution_id: Uuid, succeeded: bool) -> Result<(), Halt> {
        let origins: Vec<String> = sqlx::query_scalar(
            "SELECT ts FROM slack_messages WHERE thread_id = $1 AND execution_id = $2",
        )
        .bind(self.place.thread_id)
        .bind(execution_id)
        .fetch_all(&self.state.pool)
        .await?;
        let mark = if succeeded { "white_check_mark" } else { "x" };
        for ts in origins {
            let remove = ReactionsRemove {
                channel: self.place.channel_id.clone(),
                timestamp: ts.clone(),
                name: "eyes".into(),
            };
            match self.call(&remove).await? {
                Ok(_) => {}
                Err(error) if error.code() == Some(errors::NO_REACTION) => {}
                Err(error) => self.report(&error, "remove the eyes reaction"),
            }
            let add = ReactionsAdd {
                channel: self.place.channel_id.clone(),
                timestamp: ts,
                name: mark.into(),
            };
            match self.call(&add).await? {
                Ok(_) => {}
                Err(error) if error.code() == Some(errors::ALREADY_REACTED) => {}
                Err(error) => self.report(&error, "add the outcome reaction"),
            }
        }
        Ok(())
    }
}

/// Slack will not stream here: the method is missing, the token or the app may not. Anything
/// else (a refusal of this one request, like `invalid_arguments`) is logged and streaming is
/// tried again with the next progress: a bug in one request must not switch a thread off
/// streaming for good.
fn streaming_unavailable(error: &WebError) -> bool {
    matches!(
        error.code(),
        Some(
            errors::UNKNOWN_METHOD
                | errors::NOT_ALLOWED_TOKEN_TYPE
                | errors::MISSING_SCOPE
                | "method_deprecated"
                | "feature_not_enabled"
        )
    )
}

/// How a turn ended.
#[derive(Clone, Copy, Debug)]
enum TurnEnd<'e> {
    Completed {
        result_text: &'e str,
    },
    Failed {
        error: &'e str,
        output: Option<&'e str>,
    },
    Cancelled {
        reason: &'e str,
    },
}

impl<'e> TurnEnd<'e> {
    fn of(body: &'e EventBody) -> Option<TurnEnd<'e>> {
        if let EventBody::ExecutionCompleted { result_text } = body {
            return Some(TurnEnd::Completed { result_text });
        }
        if let EventBody::ExecutionFailed { error, output } = body {
            return Some(TurnEnd::Failed {
                error,
                output: output.as_deref(),
            });
        }
        if let EventBody::ExecutionCancelled { reason } = body {
            return Some(TurnEnd::Cancelled { reason });
        }
        None
    }

    /// The control message's last line.
    fn outcome_line(self) -> String {
        match self {
            TurnEnd::Completed { .. } => "✅ Done".into(),
            TurnEnd::Failed { error, .. } => {
                format!("❌ Failed: {}", escape(&truncate(error, 300)))
            }
            TurnEnd::Cancelled { reason } => {
                format!("⏹️ Stopped: {}", escape(&truncate(reason, 300)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_lines_say_how_the_turn_ended() {
        assert_eq!(
            TurnEnd::Completed { result_text: "x" }.outcome_line(),
            "✅ Done"
        );
        assert_eq!(
            TurnEnd::Cancelled {
                reason: "interrupted by slack:U1 (Ann)"
            }
            .outcome_line(),
            "⏹️ Stopped: interrupted by slack:U1 (Ann)"
        );
        assert!(
            TurnEnd::Failed {
                error: "`false` exited with status 1",
                output: None
            }
            .outcome_line()
            .starts_with("❌ Failed: `false`")
        );
    }

    #[test]
    fn streaming_falls_back_only_where_slack_will_not_stream() {
        let api = |code: &str| WebError::Api {
            method: "chat.startStream",
            error: code.into(),
            needed: None,
        };
        assert!(streaming_unavailable(&api("unknown_method")));
        assert!(streaming_unavailable(&api("not_allowed_token_type")));
        assert!(streaming_unavailable(&api("missing_scope")));
        assert!(streaming_unavailable(&api("feature_not_enabled")));
        assert!(!streaming_unavailable(&api("not_in_channel")));
        // A refusal of our own request is not a workspace without streaming.
        assert!(!streaming_unavailable(&api("invalid_arguments")));
        assert!(!streaming_unavailable(&api("missing_recipient_user_id")));
        assert!(!streaming_unavailable(&WebError::RateLimited {
            method: "chat.startStream",
            retry_after: Duration::from_secs(1)
        }));
    }
}
