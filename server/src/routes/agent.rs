//! `POST /agent/spawn`, `/agent/message`, `/agent/execute`; `GET /agent/harnesses`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use centaur_protocol::api::{
    ExecuteRequest, ExecuteResponse, HarnessList, MessageRequest, MessageResponse, SpawnRequest,
    SpawnResponse,
};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::{assignment, executions, harnesses, messages};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agent/spawn", post(spawn))
        .route("/agent/message", post(message))
        .route("/agent/execute", post(execute))
        .route("/agent/harnesses", get(list_harnesses))
}

async fn list_harnesses(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<HarnessList>> {
    principal.require_user()?;
    Ok(Json(harnesses::list(&state)))
}

#[tracing::instrument(skip_all, fields(thread_key = %request.thread_key))]
async fn spawn(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<SpawnRequest>,
) -> ApiResult<Json<SpawnResponse>> {
    principal.require_user()?;
    to_the_end(async move { assignment::spawn(&state, &request).await })
        .await
        .map(Json)
}

#[tracing::instrument(skip_all, fields(thread_key = %request.thread_key))]
async fn message(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<MessageRequest>,
) -> ApiResult<Json<MessageResponse>> {
    principal.require_user()?;
    messages::post(&state, request).await.map(Json)
}

#[tracing::instrument(skip_all, fields(thread_key = %request.thread_key))]
async fn execute(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> ApiResult<(StatusCode, Json<ExecuteResponse>)> {
    principal.require_user()?;
    let accepted = to_the_end(async move { executions::execute(&state, request).await }).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Runs `work` in a task of its own, so a client that goes away mid-request does not cut it
/// short: a refused spawn or execute then still takes back what it stored (the thread it
/// created, the sandbox it started).
async fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(tracing::Instrument::in_current_span(work))
        .await
        .map_err(|e| ApiError::task_failed("the request's task", e))?
}
