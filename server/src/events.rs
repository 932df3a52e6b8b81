//! The event log: appending to a thread and reading it back.
//!
//! Event ids are dense per thread (1, 2, 3, ...). The thread row holds the last id and is locked
//! by the append's transaction, so ids are handed out and committed in the same order: a reader
//! that has seen id N has seen every id below it, and a reader seeing N+2 after N knows exactly
//! what it is missing. That is what makes replay gap-free and live delivery cheap to verify.

use bytes::{BufMut, Bytes, BytesMut};
use centaur_protocol::event::is_terminal_type;
use centaur_protocol::{EventBody, ThreadKey};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// The identity of a thread as the store knows it.
#[derive(Clone, Debug)]
pub struct ThreadRef {
    pub id: i64,
    pub key: ThreadKey,
}

/// An event about to be stored.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub execution_id: Option<Uuid>,
    pub body: EventBody,
}

impl NewEvent {
    pub fn thread(body: EventBody) -> Self {
        NewEvent {
            execution_id: None,
            body,
        }
    }

    pub fn execution(execution_id: Uuid, body: EventBody) -> Self {
        NewEvent {
            execution_id: Some(execution_id),
            body,
        }
    }
}

/// A stored event, already rendered as its Server-Sent Events frame.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub event_id: i64,
    pub execution_id: Option<Uuid>,
    pub event_type: Box<str>,
    /// `id: ..\nevent: ..\ndata: ..\n\n`
    pub frame: Bytes,
}

impl StoredEvent {
    fn new(event_id: i64, execution_id: Option<Uuid>, event_type: &str, data: &str) -> Self {
        let mut frame = BytesMut::with_capacity(data.len() + event_type.len() + 32);
        frame.put_slice(b"id: ");
        frame.put_slice(event_id.to_string().as_bytes());
        frame.put_slice(b"\nevent: ");
        frame.put_slice(event_type.as_bytes());
        frame.put_slice(b"\ndata: ");
        frame.put_slice(data.as_bytes());
        frame.put_slice(b"\n\n");
        StoredEvent {
            event_id,
            execution_id,
            event_type: event_type.into(),
            frame: frame.freeze(),
        }
    }

    pub fn is_terminal(&self) -> bool {
        is_terminal_type(&self.event_type)
    }
}

/// The `data` document of an event, all but its `event_id` (spliced in front when the id is
/// known, so the stored text and the text sent live are the same bytes).
#[derive(Serialize)]
struct Envelope<'a> {
    thread_key: &'a ThreadKey,
    created_at: DateTime<Utc>,
    execution_id: Option<Uuid>,
    #[serde(flatten)]
    body: &'a EventBody,
}

/// `{"event_id":N,` + the envelope without its opening brace.
fn with_event_id(event_id: i64, envelope: &str) -> String {
    format!("{{\"event_id\":{event_id},{}", &envelope[1..])
}

/// Whether an event is the thread's own work, which moves its `last_activity_at`: messages,
/// turns and their events, approvals. A sandbox coming or going is not: a thread released at
/// the stack's shutdown, or given a sandbox, was not active.
fn is_activity(body: &EventBody) -> bool {
    !matches!(
        body,
        EventBody::SandboxAssigned { .. } | EventBody::SandboxReleased { .. }
    )
}

/// Appends `events` to the thread inside the caller's transaction, in one statement: the
/// thread's counter is bumped (locking its row until commit) and the events inserted, and its
/// `last_activity_at` moves if one of them is the thread's own work. Publish the result to
/// the hub after the transaction commits.
pub async fn append(
    conn: &mut PgConnection,
    thread: &ThreadRef,
    events: &[NewEvent],
) -> sqlx::Result<Vec<StoredEvent>> {
    let activity = events.iter().any(|event| is_activity(&event.body));
    append_as(conn, thread, events, activity).await
}

/// Like [`append`], leaving `last_activity_at` alone whatever the events: for what the server
/// does to a thread on its own (the reaper ending a turn whose sandbox is gone, at a restart
/// after the stack's shutdown, or releasing an idle sandbox).
pub async fn append_quietly(
    conn: &mut PgConnection,
    thread: &ThreadRef,
    events: &[NewEvent],
) -> sqlx::Result<Vec<StoredEvent>> {
    append_as(conn, thread, events, false).await
}

async fn append_as(
    conn: &mut PgConnection,
    thread: &ThreadRef,
    events: &[NewEvent],
    activity: bool,
) -> sqlx::Result<Vec<StoredEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // Microseconds: what PostgreSQL stores, so the stored and the sent timestamps agree.
    let created_at = Utc::now().trunc_subsecs(6);
    let mut execution_ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut envelopes = Vec::with_capacity(events.len());
    for event in events {
        envelopes.push(
            serde_json::to_string(&Envelope {
                thread_key: &thread.key,
                created_at,
                execution_id: event.execution_id,
                body: &event.body,
            })
            .expect("events serialise"),
        );
        execution_ids.push(event.execution_id);
        types.push(event.body.event_type());
    }
    let last: i64 = sqlx::query_scalar(
        "WITH bump AS ( \
             UPDATE threads SET last_event_id = last_event_id + cardinality($2::text[]), \
                                last_activity_at = CASE WHEN $6 THEN now() \
                                                        ELSE last_activity_at END \
             WHERE id = $1 RETURNING last_event_id), \
         inserted AS ( \
             INSERT INTO events (thread_id, event_id, execution_id, type, data, created_at) \
             SELECT $1, id, e.execution_id, e.type, \
                    ('{\"event_id\":' || id || ',' || substr(e.envelope, 2))::json, $5 \
             FROM bump, UNNEST($2::text[], $3::uuid[], $4::text[]) \
                  WITH ORDINALITY AS e(type, execution_id, envelope, n), \
                  LATERAL (SELECT bump.last_event_id - cardinality($2::text[]) + e.n AS id) AS ids) \
         SELECT last_event_id FROM bump",
    )
    .bind(thread.id)
    .bind(&types)
    .bind(&execution_ids)
    .bind(&envelopes)
    .bind(created_at)
    .bind(activity)
    .fetch_one(&mut *conn)
    .await?;
    let first = last - events.len() as i64 + 1;
    Ok(envelopes
        .iter()
        .zip(first..)
        .zip(events.iter().zip(&types))
        .map(|((envelope, event_id), (event, event_type))| {
            StoredEvent::new(
                event_id,
                event.execution_id,
                event_type,
                &with_event_id(event_id, envelope),
            )
        })
        .collect())
}

/// Up to `limit` events of a thread after `after_event_id`, in order.
pub async fn read_after<'c, E>(
    executor: E,
    thread_id: i64,
    after_event_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<StoredEvent>>
where
    E: sqlx::PgExecutor<'c>,
{
    let rows: Vec<(i64, Option<Uuid>, String, String)> = sqlx::query_as(
        "SELECT event_id, execution_id, type, data::text FROM events \
         WHERE thread_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3",
    )
    .bind(thread_id)
    .bind(after_event_id)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, execution_id, event_type, data)| {
            StoredEvent::new(id, execution_id, &event_type, &data)
        })
        .collect())
}

/// A row of [`read_page`]'s query: id, execution, type, data, and the id after it.
type PageRow = (i64, Option<Uuid>, String, String, Option<i64>);

/// One page of a thread's events, as [`read_page`] reads it.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    /// Whether the table may hold more events after this page.
    pub more: bool,
}

/// The events of a thread after `after_event_id`, in order: at most `max_events`, and no more
/// than `max_bytes` of event data, except that a page always holds at least one event when there
/// is one (an event larger than `max_bytes` comes alone). The byte limit is applied in the
/// database, so a page of huge events is never fetched whole.
pub async fn read_page<'c, E>(
    executor: E,
    thread_id: i64,
    after_event_id: i64,
    max_events: i64,
    max_bytes: usize,
) -> sqlx::Result<Page>
where
    E: sqlx::PgExecutor<'c>,
{
    // `next_id` is the event after each row among those scanned: on the last row returned it
    // tells whether the byte limit cut the page short.
    let rows: Vec<PageRow> = sqlx::query_as(
        "SELECT event_id, execution_id, type, data, next_id FROM ( \
             SELECT event_id, execution_id, type, data, \
                    sum(octet_length(data)) OVER w AS upto, \
                    row_number() OVER w AS n, \
                    lead(event_id) OVER w AS next_id \
             FROM (SELECT event_id, execution_id, type, data::text AS data FROM events \
                   WHERE thread_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3) AS scanned \
             WINDOW w AS (ORDER BY event_id)) AS page \
         WHERE n = 1 OR upto <= $4 \
         ORDER BY event_id",
    )
    .bind(thread_id)
    .bind(after_event_id)
    .bind(max_events)
    .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
    .fetch_all(executor)
    .await?;
    let cut_short = rows.last().is_some_and(|row| row.4.is_some());
    let more = cut_short || rows.len() as i64 >= max_events;
    let events = rows
        .into_iter()
        .map(|(id, execution_id, event_type, data, _)| {
            StoredEvent::new(id, execution_id, &event_type, &data)
        })
        .collect();
    Ok(Page { events, more })
}
