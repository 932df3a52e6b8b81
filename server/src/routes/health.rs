use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use centaur_protocol::ErrorCode;
use serde_json::json;

use crate::app::AppState;
use crate::db::DatabaseState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "ok": true }))
}

/// Answers from the last probe of the database ([`crate::db::probe_until_shutdown`]), never
/// waiting on the connection pool: a load balancer asking during an outage gets its 503 at once.
async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = &state.readiness;
    if readiness.is_ready() {
        return Json(json!({ "ok": true })).into_response();
    }
    let message = match (readiness.is_migrated(), readiness.database()) {
        (_, DatabaseState::Down) => match readiness.checked_ago() {
            Some(ago) => format!(
                "the database is unreachable (last checked {} ms ago)",
                ago.as_millis()
            ),
            None => "the database is unreachable".to_owned(),
        },
        (false, _) => "the database is unreachable or migrations are not applied yet".to_owned(),
        (true, DatabaseState::Unknown) => "the database has not been checked yet".to_owned(),
        (true, DatabaseState::Up) => "the database has not been checked recently".to_owned(),
    };
    ApiError::Unavailable {
        code: ErrorCode::NotReady,
        message,
    }
    .into_response()
}
