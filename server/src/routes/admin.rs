//! Admin only: `/admin/api-keys` (create, list and revoke API keys),
//! `/admin/threads/{thread_key}/egress-policy` (a thread's egress policy) and
//! `/admin/egress-audit` (the egress proxy's audit).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use centaur_protocol::ErrorCode;
use centaur_protocol::api::{
    ApiKeyList, CreateApiKeyRequest, CreatedApiKey, EgressAuditPage, EgressPolicyView, OkResponse,
};
use centaur_protocol::egress::Policy;
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::egress::audit::{DEFAULT_PAGE, MAX_PAGE, PageRequest};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, thread_key};
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
        .route("/admin/egress-audit", get(egress_audit))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    thread_key: Option<String>,
    /// A sandbox's id, or a tool's `tool-<name>`.
    sandbox_id: Option<String>,
    #[serde(default)]
    denied: bool,
    after: Option<i64>,
    limit: Option<i64>,
}

async fn egress_audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<EgressAuditPage>> {
    principal.require_admin()?;
    let bad = |message: String| ApiError::bad_request(ErrorCode::InvalidQuery, message);
    let thread_key = query
        .thread_key
        .map(|raw| {
            centaur_protocol::ThreadKey::parse(&raw)
                .map_err(|e| bad(format!("thread_key `{raw}` is not a thread key: {e}")))
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    if query.after.is_some_and(|after| after < 0) {
        return Err(bad("after must not be negative".into()));
    }
    let request = PageRequest {
        thread_key,
        sandbox_id: query.sandbox_id,
        refused_only: query.denied,
        after: query.after,
        limit,
    };
    egress::audit::page(&state, &request).await.map(Json)
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
