//! `GET /agent/threads/{thread_key}/events`: replay after a position, then live, as
//! Server-Sent Events.
//!
//! A stream is a small state machine that the HTTP connection polls directly for its next
//! chunk: it reads the table a page at a time, then follows the hub, and goes back to the table
//! whenever the hub skipped something (a gap in the dense ids, or a subscriber that lagged).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ApiResult;
use crate::events::{StoredEvent, ThreadRef, read_after};
use crate::hub::{Hub, Subscription};

/// Events per database read (and at most per chunk) while reading the table.
const PAGE: i64 = 5000;
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
    let first_page = read_after(&ctx.pool, thread.id, request.after_event_id, PAGE).await?;
    let mut keepalive = tokio::time::interval(ctx.keepalive);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stream = EventStream {
        thread_id: thread.id,
        last: request.after_event_id,
        request,
        subscription,
        keepalive,
        phase: Phase::Table {
            first_page: Some(first_page),
            then: AfterTable::CheckExecutionOver,
        },
        ctx,
    };
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

enum Phase {
    /// Reading the table after the cursor, a page per chunk.
    Table {
        first_page: Option<Vec<StoredEvent>>,
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

struct EventStream {
    ctx: StreamContext,
    thread_id: i64,
    /// Highest thread event id handled (sent, or filtered out).
    last: i64,
    request: StreamRequest,
    subscription: Subscription,
    keepalive: Interval,
    phase: Phase,
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
            match &mut self.phase {
                Phase::Done => return Ok(None),
                Phase::Table { first_page, then } => {
                    let then = *then;
                    let page = match first_page.take() {
                        Some(page) => page,
                        None => read_after(&self.ctx.pool, self.thread_id, self.last, PAGE).await?,
                    };
                    let (chunk, closing) = self.render(&page);
                    if closing {
                        self.phase = Phase::Done;
                    } else if page.len() as i64 == PAGE {
                        // More to read; stay in this phase.
                    } else {
                        self.phase = match then {
                            AfterTable::End => Phase::Done,
                            AfterTable::Live => Phase::Live,
                            AfterTable::CheckExecutionOver
                                if self.execution_already_over().await? =>
                            {
                                // Its terminal event was before the resume point, or was
                                // committed just now: one more read, then the end.
                                Phase::Table {
                                    first_page: None,
                                    then: AfterTable::End,
                                }
                            }
                            AfterTable::CheckExecutionOver => {
                                self.keepalive.reset();
                                Phase::Live
                            }
                        };
                    }
                    if let Some(chunk) = chunk {
                        return Ok(Some(chunk));
                    }
                }
                Phase::Live => {
                    tokio::select! {
                        biased;
                        _ = self.ctx.shutdown.cancelled() => {
                            self.phase = Phase::Done;
                        }
                        received = self.subscription.rx.recv() => match received {
                            Ok(batch) if batch.first().is_some_and(|e| e.event_id > self.last + 1) => {
                                // The hub skipped something: the table has it.
                                self.phase = Phase::Table { first_page: None, then: AfterTable::Live };
                            }
                            Ok(batch) => {
                                let (chunk, closing) = self.render(&batch);
                                if closing {
                                    self.phase = Phase::Done;
                                }
                                if let Some(chunk) = chunk {
                                    return Ok(Some(chunk));
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                self.phase = Phase::Table { first_page: None, then: AfterTable::Live };
                            }
                            Err(broadcast::error::RecvError::Closed) => self.phase = Phase::Done,
                        },
                        _ = self.keepalive.tick() => return Ok(Some(Bytes::from_static(KEEPALIVE))),
                    }
                }
            }
        }
    }

    /// The frames of `events` this client has not seen, as one chunk, and whether the stream
    /// closes after it. `events` must continue the cursor without a gap.
    fn render(&mut self, events: &[StoredEvent]) -> (Option<Bytes>, bool) {
        let mut chunk = BytesMut::new();
        let mut closing = false;
        for event in events {
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
                closing = true;
                break;
            }
        }
        ((!chunk.is_empty()).then(|| chunk.freeze()), closing)
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
