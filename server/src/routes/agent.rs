//! `POST /agent/spawn`, `/agent/message`, `/agent/execute`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use centaur_protocol::api::{
    ExecuteRequest, ExecuteResponse, MessageRequest, MessageResponse, SpawnRequest, SpawnResponse,
};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::{executions, messages, threads};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agent/spawn", post(spawn))
        .route("/agent/message", post(message))
        .route("/agent/execute", post(execute))
}

#[tracing::instrument(skip_all, fields(thread_key = %request.thread_key))]
async fn spawn(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<SpawnRequest>,
) -> ApiResult<Json<SpawnResponse>> {
    principal.require_user()?;
    threads::spawn(&state, &request).await.map(Json)
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
    let accepted = executions::execute(&state, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
