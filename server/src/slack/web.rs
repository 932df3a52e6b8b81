//! Slack's Web API, called with the bot token (or the app token for Socket Mode). One call is
//! one request ([`SlackWeb::call`]); [`SlackWeb::call_patiently`] also waits out `429
//! Retry-After` and retries a request that did not reach Slack. Tokens travel only in the
//! `Authorization` header and never appear in errors or logs.

use std::time::Duration;

use centaur_protocol::slack::web::{Answer, Encoding, Method, TokenKind, errors};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

use crate::crypto::Secret;

/// A request that never got an answer is tried this many times in all.
const TRANSPORT_ATTEMPTS: u32 = 3;
/// A 429 without a usable `Retry-After` waits this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `{"ok":false,"error":…}`.
    #[error("Slack refused {method}: {error}{}", needed.as_ref().map(|n| format!(" (needs scope {n})")).unwrap_or_default())]
    Api {
        method: &'static str,
        error: String,
        needed: Option<String>,
    },
    #[error("Slack rate-limited {method}; retry after {}s", retry_after.as_secs_f32())]
    RateLimited {
        method: &'static str,
        retry_after: Duration,
    },
    #[error("cannot reach Slack for {method}: {source}")]
    Transport {
        method: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("Slack answered {method} with HTTP {status}")]
    Status { method: &'static str, status: u16 },
    #[error("Slack's answer to {method} did not parse: {detail}")]
    Decode {
        method: &'static str,
        detail: String,
    },
    #[error("{method} needs SLACK_APP_TOKEN, which is not set")]
    NoAppToken { method: &'static str },
}

impl WebError {
    /// Slack's error code (`not_in_channel`), for an `ok: false` answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            WebError::Api { error, .. } => Some(error),
            WebError::RateLimited { .. } => Some(errors::RATELIMITED),
            WebError::Transport { .. }
            | WebError::Status { .. }
            | WebError::Decode { .. }
            | WebError::NoAppToken { .. } => None,
        }
    }

    /// The token itself is bad (revoked, wrong, or not a token at all).
    pub fn is_auth(&self) -> bool {
        matches!(
            self.code(),
            Some(
                errors::INVALID_AUTH
                    | errors::NOT_AUTHED
                    | errors::ACCOUNT_INACTIVE
                    | errors::TOKEN_REVOKED
            )
        )
    }

    /// Worth trying again later: Slack was unreachable, overloaded or rate-limiting.
    pub fn is_transient(&self) -> bool {
        match self {
            WebError::RateLimited { .. } | WebError::Transport { .. } => true,
            WebError::Status { status, .. } => *status >= 500,
            WebError::Api { .. } | WebError::Decode { .. } | WebError::NoAppToken { .. } => false,
        }
    }
}

/// The Web API at `SLACK_API_URL`.
#[derive(Clone)]
pub struct SlackWeb {
    http: reqwest::Client,
    base: String,
    bot_token: Secret,
    app_token: Option<Secret>,
}

impl SlackWeb {
    pub fn new(base: &str, bot_token: Secret, app_token: Option<Secret>) -> SlackWeb {
        // reqwest with rustls needs a crypto provider installed (ring, as everywhere here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        SlackWeb {
            http,
            base: base.trim_end_matches('/').to_owned(),
            bot_token,
            app_token,
        }
    }

    /// One request; a 429 is [`WebError::RateLimited`].
    pub async fn call<M: Method>(&self, request: &M) -> Result<M::Response, WebError> {
        let method = M::NAME;
        let token = match M::TOKEN {
            TokenKind::Bot => &self.bot_token,
            TokenKind::App => self
                .app_token
                .as_ref()
                .ok_or(WebError::NoAppToken { method })?,
        };
        let builder = self
            .http
            .post(format!("{}/{method}", self.base))
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        let builder = match M::ENCODING {
            Encoding::Json => builder
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(serde_json::to_vec(request).map_err(|e| WebError::Decode {
                    method,
                    detail: e.to_string(),
                })?),
            Encoding::Form => builder
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form_body(request).map_err(|detail| WebError::Decode { method, detail })?),
        };
        let response = builder
            .send()
            .await
            .map_err(|source| WebError::Transport { method, source })?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
            return Err(WebError::RateLimited {
                method,
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(WebError::Status {
                method,
                status: status.as_u16(),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|source| WebError::Transport { method, source })?;
        let answer: Answer<M::Response> =
            serde_json::from_slice(&bytes).map_err(|e| WebError::Decode {
                method,
                detail: e.to_string(),
            })?;
        match answer {
            Answer {
                ok: true,
                value: Some(value),
                ..
            } => Ok(value),
            Answer { ok: true, .. } => Err(WebError::Decode {
                method,
                detail: "`ok` without the method's fields".into(),
            }),
            Answer { error, needed, .. } => Err(WebError::Api {
                method,
                error: error.unwrap_or_else(|| "unknown_error".into()),
                needed,
            }),
        }
    }

    /// [`SlackWeb::call`], waiting out rate limits (for at most `max_wait` in all) and trying a
    /// request that did not reach Slack again.
    pub async fn call_patiently<M: Method>(
        &self,
        request: &M,
        max_wait: Duration,
    ) -> Result<M::Response, WebError> {
        let mut waited = Duration::ZERO;
        let mut transport_failures = 0;
        loop {
            match self.call(request).await {
                Err(WebError::RateLimited { retry_after, .. })
                    if waited + retry_after <= max_wait =>
                {
                    tracing::debug!(method = M::NAME, ?retry_after, "Slack rate limit; waiting");
                    tokio::time::sleep(retry_after).await;
                    waited += retry_after;
                }
                Err(WebError::Transport { .. } | WebError::Status { .. })
                    if transport_failures + 1 < TRANSPORT_ATTEMPTS =>
                {
                    transport_failures += 1;
                    let pause = Duration::from_millis(200 << transport_failures);
                    tokio::time::sleep(pause).await;
                    waited += pause;
                }
                other => return other,
            }
        }
    }

    /// Sends a file's bytes to the `upload_url` `files.getUploadURLExternal` gave.
    pub async fn upload(&self, upload_url: &str, bytes: Vec<u8>) -> Result<(), WebError> {
        let method = "files.upload (bytes)";
        let response = self
            .http
            .post(upload_url)
            .header(AUTHORIZATION, format!("Bearer {}", self.bot_token.expose()))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(|source| WebError::Transport { method, source })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(WebError::Status {
                method,
                status: response.status().as_u16(),
            })
        }
    }
}

/// A request as a form: its JSON fields, objects and arrays as JSON text (as Slack takes them).
fn form_body<T: serde::Serialize>(request: &T) -> Result<String, String> {
    let value = serde_json::to_value(request).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(fields) = value else {
        return Err("a request must be an object".into());
    };
    let pairs: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other @ (serde_json::Value::Null
                | serde_json::Value::Bool(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::Array(_)
                | serde_json::Value::Object(_)) => other.to_string(),
            };
            (k, text)
        })
        .collect();
    serde_urlencoded::to_string(pairs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaur_protocol::slack::web::{ConversationsReplies, GetUploadUrl};

    #[test]
    fn form_bodies_carry_strings_as_they_are_and_numbers_as_text() {
        let body = form_body(&GetUploadUrl {
            filename: "answer & more.md".into(),
            length: 42,
        })
        .unwrap();
        assert_eq!(body, "filename=answer+%26+more.md&length=42");
        let body = form_body(&ConversationsReplies {
            channel: "C1".into(),
            ts: "1.2".into(),
            include_all_metadata: Some(true),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(body, "channel=C1&include_all_metadata=true&ts=1.2");
    }
}
