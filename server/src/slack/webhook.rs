//! `POST /api/webhooks/slack`: the Events API (JSON) and interactivity (`payload=` form), both
//! signed. A verified request is stored in the inbox and only then answered 200, within Slack's
//! 3 s; `url_verification` is answered with its challenge.
//!
//! Before answering, only the signature is checked and one row inserted: the work happens in the
//! inbox's workers. A request that cannot be stored is answered 5xx, so Slack sends it again, and
//! that retry is taken (nothing was stored under its `event_id`). A signed request the bridge
//! cannot read is logged and answered 200 with `X-Slack-No-Retry: 1`: sending it again would not
//! help, and a run of failures makes Slack disable the app's event subscriptions.

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use centaur_protocol::ErrorCode;
use centaur_protocol::slack::events::{Event, EventsRequest, Interaction};
use serde::Deserialize;

use super::inbox::{self, InboxError, Incoming, Stored};
use super::settings::SlackMode;
use super::signature::{self, SignatureError};
use crate::app::AppState;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "the Slack webhook is off: set CENTAUR_SLACK_MODE=webhook (with SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN) to take Slack's events here"
    )]
    NotConfigured,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Inbox(#[from] InboxError),
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::NotConfigured => {
                ApiError::not_found(ErrorCode::SlackNotConfigured, error.to_string())
            }
            WebhookError::Signature(_) => ApiError::InvalidSignature(error.to_string()),
            WebhookError::Inbox(InboxError::Store(source)) => source.into(),
            WebhookError::Inbox(InboxError::Encode(source)) => {
                ApiError::bad_request(ErrorCode::InvalidRequest, source.to_string())
            }
        }
    }
}

/// What Slack is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookAnswer {
    /// `url_verification`: `{"challenge": …}`.
    Challenge(String),
    /// 200, empty.
    Received,
    /// Signed, but not something the bridge reads: 200 with `X-Slack-No-Retry: 1` (why is
    /// logged).
    Unreadable,
}

/// The form of an interactivity request.
#[derive(Deserialize)]
struct InteractionForm {
    payload: String,
}

/// Checks, parses and stores one request from Slack.
pub async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookAnswer, WebhookError> {
    let slack = state
        .slack
        .as_ref()
        .filter(|slack| slack.settings.mode == SlackMode::Webhook)
        .ok_or(WebhookError::NotConfigured)?;
    let secret = slack
        .settings
        .signing_secret
        .as_ref()
        .ok_or(WebhookError::NotConfigured)?;
    let now = chrono::Utc::now().timestamp();
    signature::verify(secret.expose().as_bytes(), headers, body, now)?;

    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let incoming = match parse(is_form, body) {
        Ok(Parsed::Incoming(incoming)) => incoming,
        Ok(Parsed::Answer(answer)) => return Ok(answer),
        Err(why) => {
            // What Slack signed is not a secret, but the body may hold people's messages: the
            // reason and size only.
            tracing::warn!(
                %why,
                bytes = body.len(),
                is_form,
                "a signed request from Slack does not parse; answered 200 with X-Slack-No-Retry"
            );
            return Ok(WebhookAnswer::Unreadable);
        }
    };
    match inbox::store(state, &incoming).await? {
        Stored::New | Stored::Duplicate => Ok(WebhookAnswer::Received),
    }
}

/// A parsed request: to store, or answered at once.
enum Parsed {
    Incoming(Incoming),
    Answer(WebhookAnswer),
}

/// Reads a verified request's body; `Err` says why it cannot be read.
fn parse(is_form: bool, body: &[u8]) -> Result<Parsed, String> {
    if is_form {
        let form: InteractionForm = serde_urlencoded::from_bytes(body)
            .map_err(|e| format!("expected a form with `payload`: {e}"))?;
        return match serde_json::from_str::<Interaction>(&form.payload)
            .map_err(|e| format!("`payload` is not an interaction: {e}"))?
        {
            Interaction::BlockActions(actions) => {
                Ok(Parsed::Incoming(Incoming::Interaction(actions)))
            }
            Interaction::Other => {
                tracing::debug!("a Slack interaction the bridge does not use; acknowledged");
                Ok(Parsed::Answer(WebhookAnswer::Received))
            }
        };
    }
    match serde_json::from_slice::<EventsRequest>(body)
        .map_err(|e| format!("not an Events API request: {e}"))?
    {
        EventsRequest::UrlVerification { challenge } => {
            Ok(Parsed::Answer(WebhookAnswer::Challenge(challenge)))
        }
        EventsRequest::AppRateLimited {
            team_id,
            minute_rate_limited,
        } => {
            tracing::warn!(
                team_id = team_id.as_deref().unwrap_or_default(),
                minute_rate_limited,
                "Slack is holding back this workspace's events (over 30,000 an hour)"
            );
            Ok(Parsed::Answer(WebhookAnswer::Received))
        }
        EventsRequest::EventCallback(callback) => match callback.event {
            Event::AppMention(_) | Event::Message(_) => {
                Ok(Parsed::Incoming(Incoming::Event(callback)))
            }
            Event::Other => Ok(Parsed::Answer(WebhookAnswer::Received)),
        },
    }
}
