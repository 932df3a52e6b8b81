//! `/agent/threads/*`: list, detail, the event stream, interrupt, approvals, release.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use centaur_protocol::ErrorCode;
use centaur_protocol::api::{
    ApprovalDecisionRequest, InterruptQuery, InterruptRequest, InterruptResponse, OkResponse,
    ReleaseResponse, ThreadDetail, ThreadList,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery, thread_key};
use crate::sse::{self, StreamContext, StreamRequest};
use crate::{approvals, assignment, executions, threads};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agent/threads", get(list))
        .route("/agent/threads/{thread_key}", get(detail))
        .route("/agent/threads/{thread_key}/events", get(events))
        .route("/agent/threads/{thread_key}/interrupt", post(interrupt))
        .route(
            "/agent/threads/{thread_key}/approvals/{approval_id}",
            post(decide_approval),
        )
        .route("/agent/threads/{thread_key}/release", post(release))
}

/// The part the runner uses: following its thread's events.
pub fn runner_routes() -> Router<AppState> {
    Router::new().route("/agent/threads/{thread_key}/events", get(events))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    before: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<ThreadList>> {
    principal.require_user()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    threads::list(&state, limit, query.before.as_deref())
        .await
        .map(Json)
}

async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<Json<ThreadDetail>> {
    let key = thread_key(&raw)?;
    principal.require_read(&key)?;
    threads::detail(&state, &key).await.map(Json)
}

#[derive(Deserialize)]
struct EventsQuery {
    after_event_id: Option<i64>,
    execution_id: Option<Uuid>,
    close_on_terminal: Option<bool>,
}

#[tracing::instrument(skip_all, fields(thread_key = %raw))]
async fn events(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = thread_key(&raw)?;
    principal.require_read(&key)?;
    // Counted from here until the stream ends (or this request fails).
    let slot = match state
        .hub
        .stream_slots()
        .acquire(&principal, state.config.stream_limits())
    {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused.into_response()),
    };
    // A reconnecting EventSource sends Last-Event-ID with the original URL: it wins.
    let after_event_id = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidLastEventId,
                    "Last-Event-ID must be an event id",
                )
            })?,
        None => query.after_event_id.unwrap_or(0),
    };
    if after_event_id < 0 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            "after_event_id must not be negative",
        ));
    }
    let thread = threads::find(&state, &key).await?;
    if after_event_id > thread.last_event_id {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!(
                "after_event_id {after_event_id} is beyond the thread's newest event ({})",
                thread.last_event_id
            ),
        ));
    }
    if let Some(execution_id) = query.execution_id {
        let belongs: Option<i64> =
            sqlx::query_scalar("SELECT thread_id FROM executions WHERE id = $1")
                .bind(execution_id)
                .fetch_optional(&state.pool)
                .await?;
        if belongs != Some(thread.id) {
            return Err(ApiError::not_found(
                ErrorCode::ExecutionNotFound,
                format!("no execution {execution_id} on this thread"),
            ));
        }
    }
    let context = StreamContext {
        pool: state.pool.clone(),
        hub: state.hub.clone(),
        keepalive: state.config.sse_keepalive(),
        shutdown: state.shutdown.clone(),
        slot,
    };
    let request = StreamRequest {
        after_event_id,
        execution_id: query.execution_id,
        close_on_terminal: query.close_on_terminal.unwrap_or(false),
    };
    sse::open(context, thread.as_ref(), thread.last_event_id, request).await
}

#[tracing::instrument(skip_all, fields(thread_key = %raw))]
async fn interrupt(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(query): ApiQuery<InterruptQuery>,
    ApiJsonOrEmpty(request): ApiJsonOrEmpty<InterruptRequest>,
) -> ApiResult<Json<InterruptResponse>> {
    let key = thread_key(&raw)?;
    principal.require_user()?;
    let thread = threads::find(&state, &key).await?;
    executions::interrupt(&state, &principal, &thread, request.reason, query.all)
        .await
        .map(Json)
}

#[tracing::instrument(skip_all, fields(thread_key = %raw, %approval_id))]
async fn decide_approval(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((raw, approval_id)): ApiPath<(String, Uuid)>,
    ApiJson(request): ApiJson<ApprovalDecisionRequest>,
) -> ApiResult<Json<OkResponse>> {
    let key = thread_key(&raw)?;
    principal.require_user()?;
    let thread = threads::find(&state, &key).await?;
    approvals::decide(
        &state,
        &principal,
        &thread,
        approval_id,
        request.decision,
        request.reason,
    )
    .await?;
    Ok(Json(OkResponse { ok: true }))
}

#[tracing::instrument(skip_all, fields(thread_key = %raw))]
async fn release(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<Json<ReleaseResponse>> {
    let key = thread_key(&raw)?;
    principal.require_user()?;
    let thread = threads::find(&state, &key).await?;
    assignment::release(&state, &thread, "released")
        .await
        .map(Json)
}
