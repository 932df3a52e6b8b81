//! Egress audit from the proxy: every record is stored; refusals also reach the thread's
//! stream as `egress.denied` (one per execution, host and reason), in the same transaction;
//! admins read the records back a page at a time.
//!
//! A record's thread is the one the server gave its sandbox, whatever the record says: the
//! proxy's token can report on the sandboxes it serves, not write into any thread it names.

use centaur_protocol::ErrorCode;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use centaur_protocol::api::{EgressAuditEntry, EgressAuditPage};
use centaur_protocol::egress::{AuditAccepted, AuditBatch, AuditRecord, EgressDecision};
use centaur_protocol::{EventBody, ThreadKey};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::app::AppState;
use crate::db::UnknownStored;
use crate::egress::proxy_client::ProxyClientError;
use crate::error::{ApiError, ApiResult};
use crate::events::{NewEvent, StoredEvent, ThreadRef, append};
use uuid::Uuid;

const MAX_RECORDS: usize = 10_000;

/// The transaction-level advisory lock that orders audit batches (`'audit'` in ASCII).
const AUDIT_ORDER_LOCK: i64 = 0x61_75_64_69_74;

/// How long the end of a turn its runner reported waits for the proxy to deliver the turn's
/// audit.
pub const REPORTED_END_FLUSH: Duration = Duration::from_secs(2);
/// How long an end the server decides (an interrupt, the deadline) waits for it: a person is
/// waiting for the interrupt.
pub const SERVER_END_FLUSH: Duration = Duration::from_millis(300);

/// Before the end of a turn is stored: has the proxy deliver the audit records of
/// `sandbox_id` it still holds (they arrive through [`store`]), so the turn's refusals are on
/// its thread before its terminal event. Waits at most `limit`; a proxy that is away, slow, or
/// too old to know the route (`404`) only costs that wait, and the records then arrive later,
/// as they always did.
pub async fn flush_before_end(state: &AppState, sandbox_id: Uuid, limit: Duration) {
    let Some(egress) = &state.egress else {
        return;
    };
    match egress
        .client()
        .flush_audit(&sandbox_id.to_string(), limit)
        .await
    {
        Ok(flushed) => {
            tracing::debug!(%sandbox_id, records = flushed.records, "egress audit flushed");
        }
        Err(ProxyClientError::Refused { status: 404, .. }) => {
            tracing::debug!(%sandbox_id, "the egress proxy cannot flush its audit (an older proxy)");
        }
        Err(error) => {
            tracing::warn!(%sandbox_id, %error, "the egress proxy did not flush its audit; the turn's refusals may follow its end");
        }
    }
}

/// Stores a batch of audit records; refusals also become `egress.denied` events on their
/// threads, in the same transaction.
pub async fn store(state: &AppState, batch: AuditBatch) -> ApiResult<AuditAccepted> {
    let mut records = batch.records;
    if records.len() > MAX_RECORDS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("a batch holds at most {MAX_RECORDS} records"),
        ));
    }
    attribute_to_sandbox_threads(state, &mut records).await?;
    let mut tx = crate::db::begin(&state.pool).await?;
    // Batches are stored one at a time, so record ids are committed in the order they are
    // handed out: a reader following the audit by id (`after`) never skips a record that
    // commits late.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_ORDER_LOCK)
        .execute(&mut *tx)
        .await?;
    insert_records(&mut tx, &records).await?;
    let refusals = refusals(&mut tx, &records).await?;
    let (published, events) = append_refusals(&mut tx, refusals).await?;
    tx.commit().await?;
    for (thread_id, stored) in published {
        state.hub.publish(thread_id, stored);
    }
    Ok(AuditAccepted {
        stored: records.len(),
        events,
    })
}

/// The records, in one statement.
async fn insert_records(tx: &mut PgConnection, records: &[AuditRecord]) -> sqlx::Result<()> {
    let column = |f: fn(&AuditRecord) -> String| -> Vec<String> { records.iter().map(f).collect() };
    sqlx::query(
        "INSERT INTO egress_audit (at, sandbox_id, thread_key, host, port, method, path, status, \
           bytes_up, bytes_down, decision, reason, secrets_swapped, duration_ms, \
           body_placeholders, body_unknown_placeholders) \
         SELECT r.at, r.sandbox_id, r.thread_key, r.host, r.port, r.method, r.path, r.status, \
           r.bytes_up, r.bytes_down, r.decision, r.reason, \
           COALESCE((SELECT array_agg(s) FROM jsonb_array_elements_text(r.secrets) AS s), '{}'), \
           r.duration_ms, \
           COALESCE((SELECT array_agg(s) FROM jsonb_array_elements_text(r.body) AS s), '{}'), \
           r.body_unknown \
         FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int4[], \
                     $6::text[], $7::text[], $8::int4[], $9::int8[], $10::int8[], $11::text[], \
                     $12::text[], $13::jsonb[], $14::int8[], $15::jsonb[], $16::int8[]) \
           AS r(at, sandbox_id, thread_key, host, port, method, path, status, bytes_up, \
                bytes_down, decision, reason, secrets, duration_ms, body, body_unknown)",
    )
    .bind(records.iter().map(|r| r.at).collect::<Vec<_>>())
    .bind(column(|r| r.sandbox_id.clone()))
    .bind(
        records
            .iter()
            .map(|r| r.thread_key.clone())
            .collect::<Vec<_>>(),
    )
    .bind(column(|r| r.host.clone()))
    .bind(
        records
            .iter()
            .map(|r| i32::from(r.port))
            .collect::<Vec<_>>(),
    )
    .bind(column(|r| r.method.clone()))
    .bind(column(|r| r.path.clone()))
    .bind(
        records
            .iter()
            .map(|r| r.status.map(i32::from))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.bytes_up as i64)
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.bytes_down as i64)
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.decision.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(records.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
    .bind(
        records
            .iter()
            .map(|r| serde_json::json!(r.secrets_swapped))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.duration_ms as i64)
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| serde_json::json!(r.body_placeholders))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| i64::from(r.body_unknown_placeholders))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A refusal on its way to a thread's stream.
struct Refusal<'a> {
    thread_key: &'a str,
    execution_id: Option<Uuid>,
    host: &'a str,
    reason: String,
}

/// The refusals among `records`, each with the execution of its thread that was running when
/// the proxy saw it.
async fn refusals<'a>(
    tx: &mut PgConnection,
    records: &'a [AuditRecord],
) -> sqlx::Result<Vec<Refusal<'a>>> {
    let refused: Vec<(&'a AuditRecord, &'a str)> = records
        .iter()
        .filter(|r| {
            matches!(
                r.decision,
                EgressDecision::Denied | EgressDecision::LeakBlocked
            )
        })
        .filter_map(|r| r.thread_key.as_deref().map(|key| (r, key)))
        .collect();
    if refused.is_empty() {
        return Ok(Vec::new());
    }
    // The execution running at the time: as in [`page`], which reads it back the same way.
    let executions: Vec<(i64, Option<Uuid>)> = sqlx::query_as(
        "SELECT r.i, x.id FROM UNNEST($1::text[], $2::timestamptz[]) WITH ORDINALITY \
           AS r(thread_key, at, i) \
         LEFT JOIN threads t ON t.thread_key = r.thread_key \
         LEFT JOIN LATERAL (SELECT e.id FROM executions e \
           WHERE e.thread_id = t.id AND e.started_at <= r.at \
             AND (e.finished_at IS NULL OR r.at <= e.finished_at) \
           ORDER BY e.started_at DESC LIMIT 1) x ON true \
         ORDER BY r.i",
    )
    .bind(refused.iter().map(|(_, key)| *key).collect::<Vec<_>>())
    .bind(refused.iter().map(|(r, _)| r.at).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let by_index: HashMap<i64, Option<Uuid>> = executions.into_iter().collect();
    Ok(refused
        .into_iter()
        .enumerate()
        .map(|(i, (record, thread_key))| Refusal {
            thread_key,
            execution_id: by_index.get(&(i as i64 + 1)).copied().flatten(),
            host: &record.host,
            reason: record
                .reason
                .clone()
                .unwrap_or_else(|| record.decision.as_str().replace('_', " ")),
        })
        .collect())
}

/// Appends the refusals to the threads that exist, one `egress.denied` per execution, host and
/// reason (the audit keeps every attempt; a repeat within the same execution, in this batch or
/// an earlier one, adds no event): the stored events to publish after the commit, per thread,
/// and how many there are.
async fn append_refusals(
    tx: &mut PgConnection,
    refusals: Vec<Refusal<'_>>,
) -> sqlx::Result<(Vec<(i64, Vec<StoredEvent>)>, usize)> {
    let mut published = Vec::new();
    let mut events = 0;
    if refusals.is_empty() {
        return Ok((published, events));
    }
    let mut keys: Vec<&str> = refusals.iter().map(|r| r.thread_key).collect();
    keys.sort_unstable();
    keys.dedup();
    let threads: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, thread_key FROM threads WHERE thread_key = ANY($1) ORDER BY id")
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
    for (id, key) in threads {
        let Ok(key) = ThreadKey::parse(&key) else {
            continue;
        };
        let mine: Vec<&Refusal<'_>> = refusals
            .iter()
            .filter(|r| r.thread_key == key.as_str())
            .collect();
        let executions: Vec<Uuid> = mine.iter().filter_map(|r| r.execution_id).collect();
        // What this thread's running executions were already told.
        let mut told: HashSet<(Option<Uuid>, String, String)> = if executions.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_as::<_, (Option<Uuid>, String, String)>(
                "SELECT execution_id, data::jsonb->>'host', data::jsonb->>'reason' FROM events \
                 WHERE thread_id = $1 AND type = 'egress.denied' AND execution_id = ANY($2)",
            )
            .bind(id)
            .bind(&executions)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect()
        };
        let new_events: Vec<NewEvent> = mine
            .into_iter()
            .filter(|r| told.insert((r.execution_id, r.host.to_owned(), r.reason.clone())))
            .map(|r| NewEvent {
                execution_id: r.execution_id,
                body: EventBody::EgressDenied {
                    host: r.host.to_owned(),
                    reason: r.reason.clone(),
                },
            })
            .collect();
        if new_events.is_empty() {
            continue;
        }
        events += new_events.len();
        let stored = append(&mut *tx, &ThreadRef { id, key }, &new_events).await?;
        published.push((id, stored));
    }
    Ok((published, events))
}

/// Sets each record's thread to the thread its sandbox serves (none for a sandbox the server
/// did not give a thread, such as a tool's `tool-<name>`, whose id is no UUID), so a record
/// cannot name a thread of its choosing.
async fn attribute_to_sandbox_threads(
    state: &AppState,
    records: &mut [AuditRecord],
) -> ApiResult<()> {
    let ids: Vec<Uuid> = records
        .iter()
        .filter_map(|r| Uuid::try_parse(&r.sandbox_id).ok())
        .collect();
    let owners: HashMap<Uuid, String> = if ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (Uuid, String)>(
            "SELECT s.id, t.thread_key FROM sandboxes s JOIN threads t ON t.id = s.thread_id \
             WHERE s.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&state.pool)
        .await?
        .into_iter()
        .collect()
    };
    for record in records {
        let owner = Uuid::try_parse(&record.sandbox_id)
            .ok()
            .and_then(|id| owners.get(&id).cloned());
        if record.thread_key.is_some() && record.thread_key != owner {
            tracing::warn!(sandbox_id = %record.sandbox_id, claimed = ?record.thread_key, actual = ?owner, "an audit record named another thread than its sandbox's");
        }
        record.thread_key = owner;
    }
    Ok(())
}

/// The most records one page holds, and how many without `limit`.
pub const MAX_PAGE: i64 = 1_000;
pub const DEFAULT_PAGE: i64 = 100;

/// What `GET /admin/egress-audit` asks for.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    pub thread_key: Option<ThreadKey>,
    /// Only this principal's records: a sandbox's id, or a tool's `tool-<name>`.
    pub sandbox_id: Option<String>,
    /// Only refusals (`denied`, `leak_blocked`).
    pub refused_only: bool,
    /// Records after this id, oldest first; without it, the newest records.
    pub after: Option<i64>,
    pub limit: i64,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    id: i64,
    at: DateTime<Utc>,
    sandbox_id: String,
    thread_key: Option<String>,
    execution_id: Option<Uuid>,
    host: String,
    port: i32,
    method: String,
    path: String,
    status: Option<i32>,
    decision: String,
    reason: Option<String>,
    secrets_swapped: Vec<String>,
    body_placeholders: Vec<String>,
    body_unknown_placeholders: i32,
    bytes_up: i64,
    bytes_down: i64,
    duration_ms: i64,
}

const DECISIONS: [EgressDecision; 4] = [
    EgressDecision::Allowed,
    EgressDecision::Denied,
    EgressDecision::LeakBlocked,
    EgressDecision::UpstreamError,
];

impl EntryRow {
    fn into_entry(self) -> Result<EgressAuditEntry, UnknownStored> {
        let decision = DECISIONS
            .into_iter()
            .find(|d| d.as_str() == self.decision)
            .ok_or_else(|| UnknownStored {
                column: "egress_audit.decision",
                reason: format!(
                    "not one of {}",
                    DECISIONS.map(EgressDecision::as_str).join(", ")
                ),
                value: self.decision,
            })?;
        // Stored from the proxy's u16 and u64 fields, so these fit.
        let unsigned = |v: i64| u64::try_from(v).unwrap_or_default();
        Ok(EgressAuditEntry {
            id: self.id,
            at: self.at,
            sandbox_id: self.sandbox_id,
            thread_key: self.thread_key,
            execution_id: self.execution_id,
            host: self.host,
            port: u16::try_from(self.port).unwrap_or_default(),
            method: self.method,
            path: self.path,
            status: self.status.and_then(|s| u16::try_from(s).ok()),
            decision,
            reason: self.reason,
            secrets: self.secrets_swapped,
            body_placeholders: self.body_placeholders,
            body_unknown_placeholders: u32::try_from(self.body_unknown_placeholders)
                .unwrap_or_default(),
            bytes_up: unsigned(self.bytes_up),
            bytes_down: unsigned(self.bytes_down),
            duration_ms: unsigned(self.duration_ms),
        })
    }
}

/// The query of [`page`], reading records in `$order` of their ids.
macro_rules! page_sql {
    ($order:literal) => {
        concat!(
            "SELECT a.id, a.at, a.sandbox_id, a.thread_key, x.id AS execution_id, a.host, \
               a.port, a.method, a.path, a.status, a.decision, a.reason, a.secrets_swapped, \
               a.body_placeholders, a.body_unknown_placeholders, a.bytes_up, a.bytes_down, \
               a.duration_ms \
             FROM (SELECT * FROM egress_audit \
                   WHERE ($1::text IS NULL OR thread_key = $1) \
                     AND (NOT $2 OR decision IN ('denied', 'leak_blocked')) \
                     AND ($3::int8 IS NULL OR id > $3) \
                     AND ($5::text IS NULL OR sandbox_id = $5) \
                   ORDER BY id ",
            $order,
            " LIMIT $4) a \
             LEFT JOIN threads t ON t.thread_key = a.thread_key \
             LEFT JOIN LATERAL (SELECT e.id FROM executions e \
               WHERE e.thread_id = t.id AND e.started_at <= a.at \
                 AND (e.finished_at IS NULL OR a.at <= e.finished_at) \
               ORDER BY e.started_at DESC LIMIT 1) x ON true"
        )
    };
}

/// One page of the audit: after `after` oldest first, else the newest `limit` records (also
/// oldest first), each with its thread's execution that was running when the proxy saw it.
pub async fn page(state: &AppState, request: &PageRequest) -> ApiResult<EgressAuditPage> {
    // Oldest first after a cursor, else newest first (then sorted back): either way the
    // primary key's order, never a sort of the whole table.
    let sql = match request.after {
        Some(_) => page_sql!("ASC"),
        None => page_sql!("DESC"),
    };
    let mut rows: Vec<EntryRow> = sqlx::query_as(sql)
        .bind(request.thread_key.as_ref().map(ThreadKey::as_str))
        .bind(request.refused_only)
        .bind(request.after)
        .bind(request.limit)
        .bind(request.sandbox_id.as_deref())
        .fetch_all(&state.pool)
        .await?;
    rows.sort_by_key(|r| r.id);
    let next_after = rows.last().map_or(request.after.unwrap_or(0), |r| r.id);
    let records = rows
        .into_iter()
        .map(EntryRow::into_entry)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EgressAuditPage {
        records,
        next_after,
    })
}
