//! API errors: each maps to an HTTP status and a stable snake_case code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use centaur_protocol::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// The database did not answer (or is known to be away): `503 database_unavailable`.
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    /// A component the server depends on (the egress proxy) refused.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn thread_not_found(thread_key: &str) -> Self {
        ApiError::not_found("thread_not_found", format!("no thread `{thread_key}`"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. } | ApiError::DatabaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::BadGateway { code, .. } => code,
            ApiError::DatabaseUnavailable => "database_unavailable",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(source) => tracing::error!(error = ?source, "internal error"),
            ApiError::Unavailable {
                code: "not_ready", ..
            } => {
                tracing::debug!(error = %self, "not ready")
            }
            ApiError::Unavailable { .. }
            | ApiError::BadGateway { .. }
            | ApiError::DatabaseUnavailable => {
                tracing::warn!(error = %self, "unavailable")
            }
            _ => tracing::debug!(code = self.code(), error = %self, "request rejected"),
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if matches!(self, ApiError::DatabaseUnavailable) {
            response.extensions_mut().insert(DatabaseFailed);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error
            && db.code().is_some_and(|code| code.starts_with("22"))
        {
            // Data exception: a value PostgreSQL cannot take (a NUL character, a date out of
            // range). The request is at fault, and nothing was stored.
            return ApiError::bad_request(
                "invalid_request",
                format!("a value in the request cannot be stored: {}", db.message()),
            );
        }
        if is_unavailable(&error) {
            return ApiError::DatabaseUnavailable;
        }
        ApiError::Internal(error.into())
    }
}

impl From<crate::sandbox::SandboxError> for ApiError {
    fn from(error: crate::sandbox::SandboxError) -> Self {
        use crate::sandbox::SandboxError;
        let code = match error {
            SandboxError::Capacity(_) => "sandbox_capacity",
            SandboxError::Backend(_) | SandboxError::NotAttachable(_) => {
                "sandbox_backend_unavailable"
            }
        };
        ApiError::Unavailable {
            code,
            message: error.to_string(),
        }
    }
}

/// Marks a response to a request that failed because the database did not answer, so the
/// middleware in front of the routes can have the database probed at once
/// ([`crate::db::Readiness::suspect`]).
#[derive(Clone, Copy, Debug)]
pub struct DatabaseFailed;

/// Whether a database error means "the database cannot be reached right now" rather than a bug.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P: operator intervention (shutdown, cannot connect now);
            // 53: insufficient resources; 57014: statement timeout; 40001/40P01: serialization
            // failure, deadlock; 55P03: lock not available. All worth a retry.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || matches!(&*code, "57014" | "40001" | "40P01" | "55P03")
        }),
        _ => false,
    }
}

/// The name of the constraint a unique violation tripped, if that is what `error` is.
pub fn unique_violation(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}
