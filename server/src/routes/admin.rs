//! Admin only: `/admin/api-keys` (create, list and revoke API keys) and
//! `/admin/threads/{thread_key}/egress-policy` (a thread's egress policy).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use centaur_protocol::api::{
    ApiKeyList, CreateApiKeyRequest, CreatedApiKey, EgressPolicyView, OkResponse,
};
use centaur_protocol::egress::Policy;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, thread_key};
use crate::{api_keys, egress, threads};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api-keys", get(list).post(create))
        .route("/admin/api-keys/{id}", delete(revoke))
        .route(
            "/admin/threads/{thread_key}/egress-policy",
            get(egress_policy)
                .put(set_egress_policy)
                .delete(reset_egress_policy),
        )
}

async fn egress_policy(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<Json<EgressPolicyView>> {
    principal.require_admin()?;
    let thread = threads::find(&state, &thread_key(&raw)?).await?;
    egress::policy::view(&state, &thread).await.map(Json)
}

async fn set_egress_policy(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
    ApiJson(policy): ApiJson<Policy>,
) -> ApiResult<Json<EgressPolicyView>> {
    principal.require_admin()?;
    let thread = threads::find(&state, &thread_key(&raw)?).await?;
    egress::policy::set(&state, &thread, Some(policy))
        .await
        .map(Json)
}

async fn reset_egress_policy(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<Json<EgressPolicyView>> {
    principal.require_admin()?;
    let thread = threads::find(&state, &thread_key(&raw)?).await?;
    egress::policy::set(&state, &thread, None).await.map(Json)
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
