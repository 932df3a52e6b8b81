//! `GET /agent/threads/{thread_key}/events`: replay after a position, then live, as
//! Server-Sent Events.
//!
//! A stream is a small state machine that the HTTP connection polls directly for its next
//! chunk: it reads the table a page at a time, then follows the hub, and goes back to the table
//! whenever the hub skipped something (a gap in the dense ids, or a subscriber that lagged).
//!
//! What one stream may hold is bounded, so slow readers cannot grow the server's memory:
//! - the connection asks for the next chunk only when its write buffer has room, and nothing
//!   renders ahead of that: the next page is read from the database only when asked;
//! - a page holds at most [`PAGE_EVENTS`] events and [`PAGE_BYTES`] of event data, and a chunk
//!   at most [`CHUNK_BYTES`] (a single larger event goes alone);
//! - live events wait in the hub's bounded inbox ([`crate::hub::INBOX_BYTES`]); a reader that
//!   falls further behind is dropped from the live path and reads the table instead.
//!
//! Open streams are counted per caller and in all ([`StreamSlots`]); past the configured caps a
//! new stream is refused with `429`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use centaur_protocol::{ErrorBody, ErrorCode, ErrorDetail};
use sqlx::PgPool;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::events::{Page, StoredEvent, ThreadRef, read_page};
use crate::hub::{EventBatchRef, Hub, Live, Subscription};

/// Most events per database read.
pub const PAGE_EVENTS: i64 = 1000;
/// Most bytes of event data per database read (one event alone may be larger).
pub const PAGE_BYTES: usize = 64 * 1024;
/// Most bytes per chunk handed to the connection (one event alone may be larger).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Events asked for in the first read, before the stream knows how large this thread's are.
const FIRST_PAGE_EVENTS: i64 = 256;
/// What a client refused for too many streams is told to wait, in seconds.
const RETRY_AFTER_SECS: u64 = 5;
const KEEPALIVE: &[u8] = b": keep-alive\n\n";

#[derive(Clone, Debug)]
pub struct StreamRequest {
    pub after_event_id: i64,
    /// Only events of this execution.
    pub execution_id: Option<Uuid>,
    /// End the stream after the next terminal execution event.
    pub close_on_terminal: bool,
}

pub struct StreamContext {
    pub pool: PgPool,
    pub hub: Hub,
    pub keepalive: Duration,
    pub shutdown: CancellationToken,
    /// This stream's place in the count of open streams, given back when the stream ends.
    pub slot: StreamSlot,
}

/// How many event streams may be open at once.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    pub per_caller: usize,
    pub total: usize,
}

/// The open event streams of this replica, per caller and in all.
#[derive(Default)]
pub struct StreamSlots {
    counts: Mutex<SlotCounts>,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    per_caller: HashMap<String, usize>,
}

/// One open stream, counted until dropped.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    caller: String,
}

impl StreamSlots {
    /// Counts a new stream for `principal`, or refuses it past either cap.
    pub fn acquire(
        self: &Arc<Self>,
        principal: &Principal,
        limits: StreamLimits,
    ) -> Result<StreamSlot, StreamRefused> {
        let caller = caller_of(principal);
        let mut counts = self.counts.lock().expect("stream slots lock");
        let mine = counts.per_caller.get(&caller).copied().unwrap_or(0);
        if mine >= limits.per_caller {
            return Err(StreamRefused::PerCaller {
                limit: limits.per_caller,
            });
        }
        if counts.total >= limits.total {
            return Err(StreamRefused::Total {
                limit: limits.total,
            });
        }
        counts.total += 1;
        counts.per_caller.insert(caller.clone(), mine + 1);
        Ok(StreamSlot {
            slots: self.clone(),
            caller,
        })
    }

    fn release(&self, caller: &str) {
        let mut counts = self.counts.lock().expect("stream slots lock");
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_caller.get_mut(caller) {
            *count -= 1;
            if *count == 0 {
                counts.per_caller.remove(caller);
            }
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.slots.release(&self.caller);
    }
}

/// The name streams are counted under: one per API key, per sandbox token, and the admin key.
fn caller_of(principal: &Principal) -> String {
    match principal {
        Principal::Admin => "admin".into(),
        Principal::ApiKey { id, .. } => format!("api_key:{id}"),
        Principal::Proxy => "proxy".into(),
        Principal::Sandbox { sandbox_id, .. } => format!("sandbox:{sandbox_id}"),
    }
}

/// A new stream refused because too many are open.
#[derive(Debug, thiserror::Error)]
pub enum StreamRefused {
    #[error(
        "this token already has {limit} event streams open, its limit; close one or retry later"
    )]
    PerCaller { limit: usize },
    #[error("the server already has {limit} event streams open, its limit; retry later")]
    Total { limit: usize },
}

/// `429 too_many_streams` in the API's error shape, with `Retry-After`.
impl IntoResponse for StreamRefused {
    fn into_response(self) -> Response {
        tracing::debug!(error = %self, "event stream refused");
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::TooManyStreams,
                message: self.to_string(),
            },
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        response
    }
}

/// Starts a stream. The first page is read before answering, so a database outage is a 503
/// rather than a stream that ends at once.
pub async fn open(
    ctx: StreamContext,
    thread: ThreadRef,
    known_last: i64,
    request: StreamRequest,
) -> ApiResult<Response> {
    // Subscribe before reading, so nothing committed in between is missed.
    let subscription = ctx.hub.subscribe(thread.id, known_last);
    let first_page = read_page(
        &ctx.pool,
        thread.id,
        request.after_event_id,
        FIRST_PAGE_EVENTS,
        PAGE_BYTES,
    )
    .await?;
    let mut keepalive = tokio::time::interval(ctx.keepalive);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stream = EventStream {
        thread_id: thread.id,
        last: request.after_event_id,
        request,
        subscription,
        keepalive,
        page_events: next_page_events(&first_page.events),
        phase: Phase::Table {
            first_page: Some(first_page),
            then: AfterTable::CheckExecutionOver,
        },
        pending: None,
        ctx,
    };
    // Pulled by the connection one chunk at a time, as its socket drains: no task renders
    // ahead, no channel buffers.
    let chunks = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), stream))
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// How many events to ask for next, given the last page: about a page's worth of bytes at
/// their size, so the database does not read many rows that the byte limit then drops.
fn next_page_events(events: &[StoredEvent]) -> i64 {
    if events.is_empty() {
        return FIRST_PAGE_EVENTS;
    }
    let bytes: usize = events.iter().map(|e| e.frame.len()).sum();
    let average = (bytes / events.len()).max(1);
    i64::try_from(PAGE_BYTES / average + 1)
        .unwrap_or(PAGE_EVENTS)
        .clamp(16, PAGE_EVENTS)
}

enum Phase {
    /// Reading the table after the cursor, a page at a time.
    Table {
        first_page: Option<Page>,
        then: AfterTable,
    },
    /// Following the hub.
    Live,
    Done,
}

/// What to do once the table has been read to its end.
#[derive(Clone, Copy)]
enum AfterTable {
    /// End of the replay: close if the filtered execution is already over, else go live.
    CheckExecutionOver,
    Live,
    End,
}

/// Events received (a page, a live batch) and not yet all sent.
struct Pending {
    events: EventBatchRef,
    next: usize,
}

struct EventStream {
    ctx: StreamContext,
    thread_id: i64,
    /// Highest thread event id handled (sent, or filtered out).
    last: i64,
    request: StreamRequest,
    subscription: Subscription,
    keepalive: Interval,
    /// Events to ask for in the next table read.
    page_events: i64,
    phase: Phase,
    pending: Option<Pending>,
}

impl EventStream {
    /// The next bytes to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        match self.advance().await {
            Ok(chunk) => chunk,
            Err(error) => {
                // The client reconnects with Last-Event-ID and resumes exactly where it was.
                tracing::warn!(%error, thread_id = self.thread_id, "event stream ended early");
                None
            }
        }
    }

    async fn advance(&mut self) -> Result<Option<Bytes>, sqlx::Error> {
        loop {
            if let Some(chunk) = self.render_pending() {
                return Ok(Some(chunk));
            }
            match &mut self.phase {
                Phase::Done => return Ok(None),
                Phase::Table { first_page, then } => {
                    let then = *then;
                    let page = match first_page.take() {
                        Some(page) => page,
                        None => self.read_page().await?,
                    };
                    if !page.more {
                        self.phase = self.after_table(then).await?;
                    }
                    self.hold(page.events.into());
                }
                Phase::Live => {
                    tokio::select! {
                        biased;
                        _ = self.ctx.shutdown.cancelled() => {
                            self.phase = Phase::Done;
                        }
                        live = self.subscription.rx.recv() => match live {
                            Live::Batch(batch) if batch.first().is_some_and(|e| e.event_id > self.last + 1) => {
                                // The hub skipped something: the table has it.
                                self.phase = Phase::Table { first_page: None, then: AfterTable::Live };
                            }
                            Live::Batch(batch) => self.hold(batch),
                            Live::Lagged => {
                                // This reader fell behind and live events were dropped for it.
                                self.phase = Phase::Table { first_page: None, then: AfterTable::Live };
                            }
                        },
                        _ = self.keepalive.tick() => return Ok(Some(Bytes::from_static(KEEPALIVE))),
                    }
                }
            }
        }
    }

    /// The phase after the table has been read to its end.
    async fn after_table(&mut self, then: AfterTable) -> Result<Phase, sqlx::Error> {
        Ok(match then {
            AfterTable::End => Phase::Done,
            AfterTable::Live => Phase::Live,
            AfterTable::CheckExecutionOver if self.execution_already_over().await? => {
                // Its terminal event was before the resume point, or was committed just now:
                // one more read, then the end.
                Phase::Table {
                    first_page: None,
                    then: AfterTable::End,
                }
            }
            AfterTable::CheckExecutionOver => {
                self.keepalive.reset();
                Phase::Live
            }
        })
    }

    /// The next page of the table after the cursor; sizes the read after it.
    async fn read_page(&mut self) -> Result<Page, sqlx::Error> {
        let page = read_page(
            &self.ctx.pool,
            self.thread_id,
            self.last,
            self.page_events,
            PAGE_BYTES,
        )
        .await?;
        self.page_events = next_page_events(&page.events);
        Ok(page)
    }

    /// Keeps `events` to send, chunk by chunk. Called only once the previous ones are sent.
    fn hold(&mut self, events: EventBatchRef) {
        if !events.is_empty() {
            self.pending = Some(Pending { events, next: 0 });
        }
    }

    /// The next chunk of held events this client has not seen: at most [`CHUNK_BYTES`], or a
    /// single event if that alone is larger. `None` once none are left (all were sent or
    /// filtered out). Ends the stream after a terminal event if the client asked for that.
    /// Held events must continue the cursor without a gap.
    fn render_pending(&mut self) -> Option<Bytes> {
        let mut pending = self.pending.take()?;
        let mut chunk = BytesMut::new();
        while let Some(event) = pending.events.get(pending.next) {
            if !chunk.is_empty() && chunk.len() + event.frame.len() > CHUNK_BYTES {
                break;
            }
            pending.next += 1;
            if event.event_id <= self.last {
                continue;
            }
            debug_assert_eq!(event.event_id, self.last + 1, "gap not filled");
            self.last = event.event_id;
            if let Some(only) = self.request.execution_id
                && event.execution_id != Some(only)
            {
                continue;
            }
            chunk.extend_from_slice(&event.frame);
            if self.request.close_on_terminal && event.is_terminal() {
                self.phase = Phase::Done;
                return Some(chunk.freeze());
            }
        }
        if pending.next < pending.events.len() {
            self.pending = Some(pending);
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
    }

    /// With `close_on_terminal` and an `execution_id`: is that execution already over?
    async fn execution_already_over(&self) -> Result<bool, sqlx::Error> {
        let (true, Some(execution_id)) =
            (self.request.close_on_terminal, self.request.execution_id)
        else {
            return Ok(false);
        };
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM executions WHERE id = $1")
                .bind(execution_id)
                .fetch_optional(&self.ctx.pool)
                .await?;
        Ok(status.is_none_or(|s| !matches!(s.as_str(), "queued" | "running")))
    }
}
