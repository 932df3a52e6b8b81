//! `/admin/api-keys`: create, list and revoke API keys (admin key only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use centaur_protocol::api::{ApiKeyList, CreateApiKeyRequest, CreatedApiKey, OkResponse};
use uuid::Uuid;

use crate::api_keys;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api-keys", get(list).post(create))
        .route("/admin/api-keys/{id}", delete(revoke))
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    principal.require_admin()?;
    let created = api_keys::create(&state, &request.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<ApiKeyList>> {
    principal.require_admin()?;
    let api_keys = api_keys::list(&state).await?;
    Ok(Json(ApiKeyList { api_keys }))
}

async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<OkResponse>> {
    principal.require_admin()?;
    api_keys::revoke(&state, id).await?;
    Ok(Json(OkResponse { ok: true }))
}
