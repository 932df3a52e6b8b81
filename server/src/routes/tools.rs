//! `GET /tools`, `GET /tools/{tool}`, `POST /tools/{tool}/{method}` (also on the runner socket,
//! for sandboxes).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use centaur_protocol::tools::{ToolCallAnswer, ToolInfo, ToolList};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::tools::calls;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tools", get(list))
        .route("/tools/{tool}", get(show))
        .route("/tools/{tool}/{method}", post(call))
        .route(
            "/agent/threads/{thread_key}/attachments/{attachment_id}",
            get(attachment),
        )
}

async fn list(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<ToolList>> {
    principal.require_tool_caller()?;
    Ok(Json(state.tools.list()))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tool): ApiPath<String>,
) -> ApiResult<Json<ToolInfo>> {
    principal.require_tool_caller()?;
    Ok(Json(state.tools.info(&tool)?))
}

// Debug (`?`): the names come from the URL as they are, escaped in the log.
#[tracing::instrument(skip_all, fields(tool = ?tool, method = ?method))]
async fn call(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((tool, method)): ApiPath<(String, String)>,
    ApiJson(arguments): ApiJson<Value>,
) -> ApiResult<Json<ToolCallAnswer>> {
    principal.require_tool_caller()?;
    calls::call(&state, &principal, &tool, &method, arguments)
        .await
        .map(Json)
}

/// `GET /agent/threads/{thread_key}/attachments/{attachment_id}`: a file a tool call saved to
/// the thread, for people and that thread's sandbox.
#[tracing::instrument(skip_all, fields(thread_key = %raw, %attachment_id))]
async fn attachment(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((raw, attachment_id)): ApiPath<(String, uuid::Uuid)>,
) -> ApiResult<axum::response::Response> {
    let key = crate::extract::thread_key(&raw)?;
    crate::tools::attachments::serve(&state, &principal, &key, attachment_id).await
}
