//! `/proxy/v1/*`: what the egress proxy reports (admin key or `CENTAUR_PROXY_TOKEN`).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use centaur_protocol::egress::{AuditAccepted, AuditBatch};

use crate::app::AppState;
use crate::auth::Principal;
use crate::egress;
use crate::error::ApiResult;
use crate::extract::ApiJson;

pub fn routes() -> Router<AppState> {
    Router::new().route("/proxy/v1/audit", post(audit))
}

async fn audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(batch): ApiJson<AuditBatch>,
) -> ApiResult<Json<AuditAccepted>> {
    principal.require_proxy()?;
    egress::audit::store(&state, batch).await.map(Json)
}
