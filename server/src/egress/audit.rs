//! Egress audit from the proxy: every record is stored; refusals also reach the thread's
//! stream as `egress.denied`, in the same transaction.
//!
//! A record's thread is the one the server gave its sandbox, whatever the record says: the
//! proxy's token can report on the sandboxes it serves, not write into any thread it names.

use centaur_protocol::ErrorCode;
use std::collections::HashMap;

use centaur_protocol::EventBody;
use centaur_protocol::egress::{AuditAccepted, AuditBatch, AuditRecord, EgressDecision};
use sqlx::PgConnection;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::events::{NewEvent, StoredEvent, ThreadRef, append};
use uuid::Uuid;

const MAX_RECORDS: usize = 10_000;

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
    insert_records(&mut tx, &records).await?;
    let refusals = refusals_by_thread(&records);
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
           bytes_up, bytes_down, decision, reason, secrets_swapped, duration_ms) \
         SELECT r.at, r.sandbox_id, r.thread_key, r.host, r.port, r.method, r.path, r.status, \
           r.bytes_up, r.bytes_down, r.decision, r.reason, \
           COALESCE((SELECT array_agg(s) FROM jsonb_array_elements_text(r.secrets) AS s), '{}'), \
           r.duration_ms \
         FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int4[], \
                     $6::text[], $7::text[], $8::int4[], $9::int8[], $10::int8[], $11::text[], \
                     $12::text[], $13::jsonb[], $14::int8[]) \
           AS r(at, sandbox_id, thread_key, host, port, method, path, status, bytes_up, \
                bytes_down, decision, reason, secrets, duration_ms)",
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The `egress.denied` events of the refusals among `records`, by thread key.
fn refusals_by_thread(records: &[AuditRecord]) -> HashMap<&str, Vec<NewEvent>> {
    let mut refusals: HashMap<&str, Vec<NewEvent>> = HashMap::new();
    for record in records {
        let refused = matches!(
            record.decision,
            EgressDecision::Denied | EgressDecision::LeakBlocked
        );
        if let (true, Some(thread_key)) = (refused, record.thread_key.as_deref()) {
            refusals
                .entry(thread_key)
                .or_default()
                .push(NewEvent::thread(EventBody::EgressDenied {
                    host: record.host.clone(),
                    reason: record
                        .reason
                        .clone()
                        .unwrap_or_else(|| record.decision.as_str().replace('_', " ")),
                }));
        }
    }
    refusals
}

/// Appends the refusals to the threads that exist: the stored events to publish after the
/// commit, per thread, and how many there are.
async fn append_refusals(
    tx: &mut PgConnection,
    mut refusals: HashMap<&str, Vec<NewEvent>>,
) -> sqlx::Result<(Vec<(i64, Vec<StoredEvent>)>, usize)> {
    let mut published = Vec::new();
    let mut events = 0;
    if refusals.is_empty() {
        return Ok((published, events));
    }
    let keys: Vec<&str> = refusals.keys().copied().collect();
    let threads: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, thread_key FROM threads WHERE thread_key = ANY($1) ORDER BY id")
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
    for (id, key) in threads {
        let Ok(key) = centaur_protocol::ThreadKey::parse(&key) else {
            continue;
        };
        let new_events = refusals.remove(key.as_str()).unwrap_or_default();
        events += new_events.len();
        let stored = append(&mut *tx, &ThreadRef { id, key }, &new_events).await?;
        published.push((id, stored));
    }
    Ok((published, events))
}

/// Sets each record's thread to the thread its sandbox serves (none for a sandbox the server
/// did not give a thread), so a record cannot name a thread of its choosing.
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
