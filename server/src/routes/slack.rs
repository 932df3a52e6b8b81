//! Slack's routes: `POST /api/webhooks/slack` (verified by Slack's signature, not a token) and
//! `GET /agent/slack/messages/{channel}/{ts}` (the thread a Slack message belongs to, for
//! `centaur attach <slack link>`).

use axum::Router;

use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
