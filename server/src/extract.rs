//! Extractors that turn every malformed request into a JSON [`ApiError`].

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use centaur_protocol::ErrorCode;
use centaur_protocol::ThreadKey;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Syntax errors, wrong fields, missing content type and oversize bodies each get
/// their own clear error.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = body_limit(&req);
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection, limit)),
        }
    }
}

/// The body limit in force for a route, recorded so the 413 can name it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

fn body_limit(req: &Request) -> usize {
    req.extensions()
        .get::<BodyLimit>()
        .map_or(0, |limit| limit.0)
}

/// A body that could not be read: too large (413, naming the limit) or broken (400).
fn unreadable_body(status: axum::http::StatusCode, text: String, limit: usize) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::bad_request(ErrorCode::InvalidBody, text)
    }
}

fn json_rejection(rejection: JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            ErrorCode::InvalidJson,
            format!("malformed JSON: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => {
            ApiError::bad_request(ErrorCode::InvalidRequest, e.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ),
        JsonRejection::BytesRejection(e) => unreadable_body(e.status(), e.body_text(), limit),
        other => ApiError::bad_request(ErrorCode::InvalidRequest, other.body_text()),
    }
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text())
            })
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::bad_request(ErrorCode::InvalidPath, e.body_text())
            })
    }
}

/// Parses a thread key from a path segment; malformed keys are a 400.
pub fn thread_key(raw: &str) -> Result<ThreadKey, ApiError> {
    ThreadKey::parse(raw)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidThreadKey, e.to_string()))
}

/// A JSON body that may also be empty (or absent), meaning `T::default()`.
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = body_limit(&req);
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|e| unreadable_body(e.status(), e.body_text(), limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJsonOrEmpty)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string())
                }
                serde_json::error::Category::Io
                | serde_json::error::Category::Syntax
                | serde_json::error::Category::Eof => {
                    ApiError::bad_request(ErrorCode::InvalidJson, format!("malformed JSON: {e}"))
                }
            })
    }
}
