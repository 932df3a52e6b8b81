//! The runner-facing API (`/runner/v1/*`), used by `centaur-runner` inside each sandbox.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use centaur_protocol::runner::{BatchAccepted, ClaimRequest, EventBatch, RunnerExecution};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiJsonOrEmpty, ApiPath, thread_key};
use crate::{executions, threads};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runner/v1/threads/{thread_key}/claim", post(claim))
        .route("/runner/v1/executions/{execution_id}", get(execution))
        .route("/runner/v1/executions/{execution_id}/events", post(events))
}

#[tracing::instrument(skip_all, fields(thread_key = %raw))]
async fn claim(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
    ApiJsonOrEmpty(request): ApiJsonOrEmpty<ClaimRequest>,
) -> ApiResult<Response> {
    let key = thread_key(&raw)?;
    principal.require_runner(&key)?;
    let thread = threads::find(&state, &key).await?;
    let wait = Duration::from_millis(request.wait_ms.unwrap_or(0));
    Ok(
        match executions::claim(&state, &principal, &thread, wait).await? {
            Some(assignment) => Json(assignment).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    )
}

async fn execution(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(execution_id): ApiPath<Uuid>,
) -> ApiResult<Json<RunnerExecution>> {
    executions::runner_view(&state, &principal, execution_id)
        .await
        .map(Json)
}

#[tracing::instrument(skip_all, fields(%execution_id, events = batch.events.len()))]
async fn events(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(execution_id): ApiPath<Uuid>,
    ApiJson(batch): ApiJson<EventBatch>,
) -> ApiResult<Json<BatchAccepted>> {
    executions::post_events(&state, &principal, execution_id, batch)
        .await
        .map(Json)
}
