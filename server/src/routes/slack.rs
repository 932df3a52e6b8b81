//! Slack's routes: `POST /api/webhooks/slack` (verified by Slack's signature, not a token) and
//! `GET /agent/slack/messages/{channel}/{ts}` (the thread a Slack message belongs to, for
//! `centaur attach <slack link>`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use centaur_protocol::ErrorCode;
use centaur_protocol::api::ThreadSummary;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::slack::webhook::{self, WebhookAnswer};
use crate::threads;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/webhooks/slack", post(slack_webhook))
        .route(
            "/agent/slack/messages/{channel_id}/{ts}",
            get(message_thread),
        )
}

async fn slack_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    match webhook::receive(&state, &headers, &body).await? {
        WebhookAnswer::Challenge(challenge) => {
            Ok(Json(serde_json::json!({ "challenge": challenge })).into_response())
        }
        WebhookAnswer::Received => Ok(axum::http::StatusCode::OK.into_response()),
        // Sending it again would not help: Slack is asked not to.
        WebhookAnswer::Unreadable => {
            Ok((axum::http::StatusCode::OK, [("x-slack-no-retry", "1")]).into_response())
        }
    }
}

async fn message_thread(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((channel_id, ts)): ApiPath<(String, String)>,
) -> ApiResult<Json<ThreadSummary>> {
    principal.require_user()?;
    threads::summary_of_slack_message(&state, &channel_id, &ts)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::ThreadNotFound,
                format!("no thread holds Slack message {ts} in {channel_id}"),
            )
        })
}
