use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::db;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "ok": true }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if db::is_ready(&state.pool, &state.readiness).await {
        return Json(json!({ "ok": true })).into_response();
    }
    let message = if state.readiness.is_migrated() {
        "the database is unreachable"
    } else {
        "the database is unreachable or migrations are not applied yet"
    };
    ApiError::Unavailable {
        code: "not_ready",
        message: message.into(),
    }
    .into_response()
}
