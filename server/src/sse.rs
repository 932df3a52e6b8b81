//! `GET /agent/threads/{thread_key}/events`: replay after a position, then live, as
//! Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ApiResult;
use crate::events::{StoredEvent, ThreadRef, read_after};
use crate::hub::{Hub, Subscription};

/// Events per database read while replaying.
const REPLAY_PAGE: i64 = 5000;
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
    request: StreamRequest,
) -> ApiResult<Response> {
    let subscription = ctx.hub.subscribe(thread.id);
    let first_page = read_after(&ctx.pool, thread.id, request.after_event_id, REPLAY_PAGE).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let cursor = Cursor {
        last: request.after_event_id,
        request,
    };
    tokio::spawn(
        Streamer {
            ctx,
            thread_id: thread.id,
            tx,
            cursor,
        }
        .run(subscription, first_page),
    );
    let body = Body::from_stream(tokio_stream_from(rx).map(Ok::<Bytes, Infallible>));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Where a stream is, and what it sends.
struct Cursor {
    /// Highest thread event id handled (sent or filtered out).
    last: i64,
    request: StreamRequest,
}

enum Step {
    Continue,
    /// The terminal event was written; end the stream after this chunk.
    Close,
}

impl Cursor {
    /// Appends the frames of `events` the client has not seen to `out`. Events must be
    /// contiguous with the cursor (the caller fills gaps first).
    fn take(&mut self, events: &[StoredEvent], out: &mut BytesMut) -> Step {
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
            out.extend_from_slice(&event.frame);
            if self.request.close_on_terminal && event.is_terminal() {
                return Step::Close;
            }
        }
        Step::Continue
    }
}

struct Streamer {
    ctx: StreamContext,
    thread_id: i64,
    tx: mpsc::Sender<Bytes>,
    cursor: Cursor,
}

impl Streamer {
    async fn run(mut self, mut subscription: Subscription, first_page: Vec<StoredEvent>) {
        if let Err(error) = self.stream(&mut subscription, first_page).await {
            // The client reconnects with Last-Event-ID and resumes exactly where it was.
            tracing::warn!(%error, thread_id = self.thread_id, "event stream ended early");
        }
    }

    async fn stream(
        &mut self,
        subscription: &mut Subscription,
        first_page: Vec<StoredEvent>,
    ) -> Result<(), sqlx::Error> {
        // Replay.
        let mut page = first_page;
        loop {
            let full = page.len() as i64 == REPLAY_PAGE;
            if self.send_events(&page).await? {
                return Ok(());
            }
            if !full {
                break;
            }
            page = read_after(
                &self.ctx.pool,
                self.thread_id,
                self.cursor.last,
                REPLAY_PAGE,
            )
            .await?;
        }
        if self.execution_already_over().await? {
            // Its terminal event was before the resume point, or arrived just now.
            self.fill_from_table().await?;
            return Ok(());
        }

        // Live.
        let mut keepalive = tokio::time::interval(self.ctx.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        loop {
            tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => return Ok(()),
                _ = self.tx.closed() => return Ok(()),
                received = subscription.rx.recv() => match received {
                    Ok(batch) => {
                        let gap = batch.first().is_some_and(|e| e.event_id > self.cursor.last + 1);
                        let done = if gap {
                            self.fill_from_table().await?
                        } else {
                            self.send_events(&batch).await?
                        };
                        if done {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if self.fill_from_table().await? {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = keepalive.tick() => {
                    if self.tx.send(Bytes::from_static(KEEPALIVE)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// With `close_on_terminal` and an `execution_id`: is that execution already over?
    async fn execution_already_over(&self) -> Result<bool, sqlx::Error> {
        let (true, Some(execution_id)) = (
            self.cursor.request.close_on_terminal,
            self.cursor.request.execution_id,
        ) else {
            return Ok(false);
        };
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM executions WHERE id = $1")
                .bind(execution_id)
                .fetch_optional(&self.ctx.pool)
                .await?;
        Ok(status.is_none_or(|s| !matches!(s.as_str(), "queued" | "running")))
    }

    /// Reads everything after the cursor from the table. Returns true if the stream is done.
    async fn fill_from_table(&mut self) -> Result<bool, sqlx::Error> {
        loop {
            let page = read_after(
                &self.ctx.pool,
                self.thread_id,
                self.cursor.last,
                REPLAY_PAGE,
            )
            .await?;
            let full = page.len() as i64 == REPLAY_PAGE;
            if self.send_events(&page).await? {
                return Ok(true);
            }
            if !full {
                return Ok(false);
            }
        }
    }

    /// Sends the unseen events of `events` as one chunk. Returns true if the stream is done.
    async fn send_events(&mut self, events: &[StoredEvent]) -> Result<bool, sqlx::Error> {
        let mut chunk = BytesMut::new();
        let step = self.cursor.take(events, &mut chunk);
        if !chunk.is_empty() && self.tx.send(chunk.freeze()).await.is_err() {
            return Ok(true);
        }
        Ok(matches!(step, Step::Close))
    }
}
