//! Thread rows: create, look up, list and describe threads; take back a thread a refused
//! request created. Their sandboxes come and go through [`crate::assignment`].

use centaur_protocol::api::{
    ExecutionView, SandboxView, ThreadDetail, ThreadList, ThreadStatus, ThreadSummary,
};
use centaur_protocol::slack::{SlackOrigin, SlackUser};
use centaur_protocol::{ErrorCode, EventBody, ExecutionStatus, Harness, ThreadKey};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::app::AppState;
use crate::db::{UnknownStored, stored};
use crate::error::{ApiError, ApiResult};
use crate::events::{NewEvent, ThreadRef, append};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ThreadRow {
    pub id: i64,
    pub thread_key: String,
    pub platform: String,
    pub harness: String,
    pub persona: Option<String>,
    pub last_event_id: i64,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
}

macro_rules! thread_columns {
    () => {
        "id, thread_key, platform, harness, persona, last_event_id, created_at, last_activity_at"
    };
}

impl ThreadRow {
    pub fn as_ref(&self) -> ThreadRef {
        ThreadRef {
            id: self.id,
            key: self.key(),
        }
    }

    pub fn key(&self) -> ThreadKey {
        ThreadKey::parse(&self.thread_key).expect("stored thread keys are valid")
    }

    pub fn harness(&self) -> Result<Harness, UnknownStored> {
        stored("threads.harness", &self.harness)
    }
}

/// The thread, or 404.
pub async fn find(state: &AppState, key: &ThreadKey) -> ApiResult<ThreadRow> {
    find_optional(state, key)
        .await?
        .ok_or_else(|| ApiError::thread_not_found(key.as_str()))
}

/// The thread, if it exists.
pub async fn find_optional(state: &AppState, key: &ThreadKey) -> ApiResult<Option<ThreadRow>> {
    Ok(sqlx::query_as::<_, ThreadRow>(concat!(
        "SELECT ",
        thread_columns!(),
        " FROM threads WHERE thread_key = $1"
    ))
    .bind(key.as_str())
    .fetch_optional(&state.pool)
    .await?)
}

/// The thread, created (with its `thread.created` event) if it does not exist yet, and whether
/// this call created it: a request that then fails takes a thread it created back with
/// [`crate::assignment::abandon_new_thread`].
pub async fn ensure(
    state: &AppState,
    key: &ThreadKey,
    harness: Option<Harness>,
    persona: Option<&str>,
) -> ApiResult<(ThreadRow, bool)> {
    let harness = harness.unwrap_or(state.config.default_harness);
    let mut tx = crate::db::begin(&state.pool).await?;
    let created: Option<ThreadRow> = sqlx::query_as(concat!(
        "INSERT INTO threads (thread_key, platform, harness, persona) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (thread_key) DO NOTHING RETURNING ",
        thread_columns!()
    ))
    .bind(key.as_str())
    .bind(key.platform())
    .bind(harness.as_str())
    .bind(persona)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(thread) = created else {
        tx.rollback().await?;
        let thread = find(state, key).await?;
        if let Some(persona) = persona
            && thread.persona.as_deref() != Some(persona)
        {
            sqlx::query("UPDATE threads SET persona = $2 WHERE id = $1")
                .bind(thread.id)
                .bind(persona)
                .execute(&state.pool)
                .await?;
        }
        return Ok((thread, false));
    };
    let events = append(
        &mut tx,
        &thread.as_ref(),
        &[NewEvent::thread(EventBody::ThreadCreated { harness })],
    )
    .await?;
    if let Err(error) = tx.commit().await {
        // The commit may have reached the database with only its answer lost: then the thread
        // exists, and this refused request must take it back.
        crate::assignment::abandon_new_thread(state, &thread, &[]).await;
        return Err(error.into());
    }
    state.hub.publish(thread.id, events);
    tracing::info!(thread_key = %key, %harness, "thread created");
    Ok((thread, true))
}

/// Deletes a thread nothing uses: no execution, no message, no sandbox but `ours`. Whether it
/// was deleted.
pub async fn delete_unused_thread(
    state: &AppState,
    thread_id: i64,
    ours: &[Uuid],
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(&state.pool).await?;
    // Appends lock the thread row too: nothing is added to the thread while this runs.
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM threads WHERE id = $1 FOR UPDATE")
        .bind(thread_id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        tx.rollback().await?;
        return Ok(false);
    }
    let used: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM executions WHERE thread_id = $1) \
         OR EXISTS (SELECT 1 FROM messages WHERE thread_id = $1) \
         OR EXISTS (SELECT 1 FROM sandboxes WHERE thread_id = $1 AND id <> ALL($2::uuid[]))",
    )
    .bind(thread_id)
    .bind(ours)
    .fetch_one(&mut *tx)
    .await?;
    if used {
        tx.rollback().await?;
        return Ok(false);
    }
    for statement in [
        "DELETE FROM spawn_requests WHERE thread_id = $1",
        "DELETE FROM sandboxes WHERE thread_id = $1",
        "DELETE FROM events WHERE thread_id = $1",
        "DELETE FROM threads WHERE id = $1",
    ] {
        sqlx::query(statement)
            .bind(thread_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The longest title, in characters (a longer first line is cut, with an ellipsis).
pub const MAX_TITLE_CHARS: usize = 80;

/// A thread's title from its first user message: the first line that is not blank, its
/// whitespace collapsed, at most [`MAX_TITLE_CHARS`] characters (cut with "…"). `None` for a
/// text with no such line. The migration that added titles computes the same in SQL.
pub fn title_of(text: &str) -> Option<String> {
    let line = text.lines().find(|line| !line.trim().is_empty())?;
    let collapsed = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= MAX_TITLE_CHARS {
        return Some(collapsed);
    }
    let mut cut: String = collapsed.chars().take(MAX_TITLE_CHARS - 1).collect();
    cut.push('…');
    Some(cut)
}

/// Gives the thread its title from `text`, a user message stored in the same transaction,
/// unless it has one (from an earlier message).
pub async fn set_title_if_none(
    conn: &mut sqlx::PgConnection,
    thread_id: i64,
    text: &str,
) -> sqlx::Result<()> {
    let Some(title) = title_of(text) else {
        return Ok(());
    };
    sqlx::query("UPDATE threads SET title = $2 WHERE id = $1 AND title IS NULL")
        .bind(thread_id)
        .bind(title)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    thread: ThreadRow,
    title: Option<String>,
    /// The status of the thread's newest execution (a queued or running one is always the
    /// newest: a thread has at most one, and none is queued while it runs).
    last_status: Option<String>,
    waiting_approvals: i64,
    slack_team_id: Option<String>,
    slack_channel_id: Option<String>,
    slack_channel_name: Option<String>,
    slack_thread_ts: Option<String>,
    slack_started_by_id: Option<String>,
    slack_started_by_name: Option<String>,
}

macro_rules! summary_select {
    () => {
        "SELECT t.id, t.thread_key, t.platform, t.harness, t.persona, \
     t.last_event_id, t.created_at, t.last_activity_at, t.title, \
     (SELECT e.status FROM executions e WHERE e.thread_id = t.id \
      ORDER BY e.created_at DESC, e.id DESC LIMIT 1) AS last_status, \
     (SELECT count(*) FROM approvals a WHERE a.thread_id = t.id \
      AND a.status = 'pending') AS waiting_approvals, \
     s.team_id AS slack_team_id, s.channel_id AS slack_channel_id, \
     s.channel_name AS slack_channel_name, s.thread_ts AS slack_thread_ts, \
     s.started_by_id AS slack_started_by_id, s.started_by_name AS slack_started_by_name \
     FROM threads t LEFT JOIN slack_threads s ON s.thread_id = t.id"
    };
}

/// Whether the thread has work in flight, from its newest execution's status; `failed` when
/// nothing is in flight and that execution failed.
fn thread_status(last: Option<ExecutionStatus>) -> ThreadStatus {
    match last {
        None | Some(ExecutionStatus::Completed | ExecutionStatus::Cancelled) => ThreadStatus::Idle,
        Some(ExecutionStatus::Queued) => ThreadStatus::Queued,
        Some(ExecutionStatus::Running) => ThreadStatus::Running,
        Some(ExecutionStatus::Failed) => ThreadStatus::Failed,
    }
}

fn summary(row: SummaryRow) -> ApiResult<ThreadSummary> {
    let last: Option<ExecutionStatus> = row
        .last_status
        .as_deref()
        .map(|status| stored("executions.status", status))
        .transpose()?;
    let slack = match (
        row.slack_team_id,
        row.slack_channel_id,
        row.slack_thread_ts,
        row.slack_started_by_id,
    ) {
        (Some(team_id), Some(channel_id), Some(thread_ts), Some(started_by)) => Some(SlackOrigin {
            team_id,
            channel_id,
            channel_name: row.slack_channel_name,
            thread_ts,
            started_by: SlackUser {
                id: started_by,
                name: row.slack_started_by_name,
            },
        }),
        _ => None,
    };
    let thread = row.thread;
    Ok(ThreadSummary {
        thread_key: thread.key(),
        harness: thread.harness()?,
        platform: thread.platform,
        persona: thread.persona,
        status: thread_status(last),
        title: row.title,
        waiting_approvals: u32::try_from(row.waiting_approvals).unwrap_or(u32::MAX),
        slack,
        created_at: thread.created_at,
        last_activity_at: thread.last_activity_at,
        last_event_id: thread.last_event_id,
    })
}

/// A page of threads, most recently active first. `before` is a cursor from the previous page.
pub async fn list(state: &AppState, limit: i64, before: Option<&str>) -> ApiResult<ThreadList> {
    let cursor = before.map(parse_cursor).transpose()?;
    let (at, id) = cursor.unzip();
    let rows: Vec<SummaryRow> = sqlx::query_as(concat!(
        summary_select!(),
        " WHERE $1::timestamptz IS NULL OR (t.last_activity_at, t.id) < ($1, $2) \
         ORDER BY t.last_activity_at DESC, t.id DESC LIMIT $3"
    ))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| {
            rows.last()
                .map(|r| format_cursor(r.thread.last_activity_at, r.thread.id))
        })
        .flatten();
    Ok(ThreadList {
        threads: rows.into_iter().map(summary).collect::<ApiResult<_>>()?,
        next_before,
    })
}

fn format_cursor(at: DateTime<Utc>, id: i64) -> String {
    format!("{}.{id}", at.timestamp_micros())
}

fn parse_cursor(raw: &str) -> ApiResult<(DateTime<Utc>, i64)> {
    let bad = || {
        ApiError::bad_request(
            ErrorCode::InvalidQuery,
            "`before` must be a cursor from `next_before`",
        )
    };
    let (micros, id) = raw.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let id: i64 = id.parse().map_err(|_| bad())?;
    Ok((DateTime::from_timestamp_micros(micros).ok_or_else(bad)?, id))
}

/// The thread holding Slack message `ts` of `channel` (a message taken into it, or its Slack
/// thread's parent), for `GET /agent/slack/messages/{channel}/{ts}`.
pub async fn summary_of_slack_message(
    state: &AppState,
    channel: &str,
    ts: &str,
) -> ApiResult<Option<ThreadSummary>> {
    let row: Option<SummaryRow> = sqlx::query_as(concat!(
        summary_select!(),
        " WHERE t.id = (SELECT thread_id FROM slack_messages WHERE channel_id = $1 AND ts = $2 \
           UNION ALL SELECT thread_id FROM slack_threads WHERE channel_id = $1 AND thread_ts = $2 \
           LIMIT 1)"
    ))
    .bind(channel)
    .bind(ts)
    .fetch_optional(&state.pool)
    .await?;
    row.map(summary).transpose()
}

/// `GET /agent/threads/{key}`.
pub async fn detail(state: &AppState, key: &ThreadKey) -> ApiResult<ThreadDetail> {
    let row: SummaryRow = sqlx::query_as(concat!(summary_select!(), " WHERE t.thread_key = $1"))
        .bind(key.as_str())
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(|| ApiError::thread_not_found(key.as_str()))?;
    let thread_id = row.thread.id;
    let sandbox: Option<(Uuid, String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, backend, state, ready_source, created_at FROM sandboxes \
         WHERE thread_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(&state.pool)
    .await?;
    let last_execution: Option<ExecutionRow> = sqlx::query_as(
        "SELECT id, status, harness, created_at, started_at, finished_at, deadline_at, \
         result_text, error, cancel_reason FROM executions WHERE thread_id = $1 \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(&state.pool)
    .await?;
    let sandbox = sandbox
        .map(|(sandbox_id, backend, state, ready_source, created_at)| {
            Ok::<_, UnknownStored>(SandboxView {
                sandbox_id,
                backend: stored("sandboxes.backend", &backend)?,
                state: stored("sandboxes.state", &state)?,
                ready_source: stored("sandboxes.ready_source", &ready_source)?,
                created_at,
            })
        })
        .transpose()?;
    Ok(ThreadDetail {
        summary: summary(row)?,
        sandbox,
        last_execution: last_execution.map(ExecutionRow::into_view).transpose()?,
    })
}

#[derive(sqlx::FromRow)]
struct ExecutionRow {
    id: Uuid,
    status: String,
    harness: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    deadline_at: DateTime<Utc>,
    result_text: Option<String>,
    error: Option<String>,
    cancel_reason: Option<String>,
}

impl ExecutionRow {
    fn into_view(self) -> Result<ExecutionView, UnknownStored> {
        Ok(ExecutionView {
            execution_id: self.id,
            status: stored("executions.status", &self.status)?,
            harness: stored("executions.harness", &self.harness)?,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            deadline_at: self.deadline_at,
            result_text: self.result_text,
            error: self.error,
            cancel_reason: self.cancel_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_is_the_first_line_that_is_not_blank_with_its_whitespace_collapsed() {
        assert_eq!(
            title_of("\n  \t\n  fix   the\tbuild  \nand then the tests").as_deref(),
            Some("fix the build")
        );
        assert_eq!(
            title_of("echo x; exit 3").as_deref(),
            Some("echo x; exit 3")
        );
        assert_eq!(title_of(" \n\t\n"), None);
    }

    #[test]
    fn a_long_title_is_cut_to_80_characters_on_a_character_boundary() {
        let exact = "é".repeat(MAX_TITLE_CHARS);
        assert_eq!(title_of(&exact).as_deref(), Some(exact.as_str()));
        let long = format!("{}ü{}", "é".repeat(78), "x".repeat(10));
        let title = title_of(&long).unwrap();
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
        assert_eq!(title, format!("{}ü…", "é".repeat(78)));
    }
}
