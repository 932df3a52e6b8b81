//! API errors: each maps to an HTTP status and a stable [`ErrorCode`].
//!
//! An error turned into a response leaves a [`Rejection`] on it; the routes' log layer
//! ([`crate::routes`]) logs it there, once, inside the request's span.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use centaur_protocol::{ErrorBody, ErrorCode, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: ErrorCode, message: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A Slack request whose signature or timestamp does not check out (`401 invalid_signature`).
    #[error("{0}")]
    InvalidSignature(String),
    #[error("{0}")]
    Forbidden(String),
    /// Refused for a reason of its own (`403` with that code: a tool call a person denied).
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("{message}")]
    NotFound { code: ErrorCode, message: String },
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unavailable { code: ErrorCode, message: String },
    /// The database did not answer (or is known to be away): `503 database_unavailable`.
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    /// A component the server depends on (the egress proxy) refused.
    #[error("{message}")]
    BadGateway { code: ErrorCode, message: String },
    /// Something the server waited on did not answer in time (a tool call: `504`).
    #[error("{message}")]
    GatewayTimeout { code: ErrorCode, message: String },
    #[error("internal error")]
    Internal(#[source] InternalError),
}

/// What went wrong when a request fails through the server's own fault (`500 internal`).
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error(transparent)]
    Stored(#[from] crate::db::UnknownStored),
    #[error("a stored thread key is invalid: {0}")]
    StoredThreadKey(#[from] centaur_protocol::ThreadKeyError),
    #[error("a stored egress policy is unreadable: {0}")]
    StoredPolicy(#[source] serde_json::Error),
    #[error("{what} failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("a handler panicked")]
    Panicked,
}

impl From<InternalError> for ApiError {
    fn from(error: InternalError) -> Self {
        ApiError::Internal(error)
    }
}

impl From<crate::db::UnknownStored> for ApiError {
    fn from(error: crate::db::UnknownStored) -> Self {
        ApiError::Internal(error.into())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn thread_not_found(thread_key: &str) -> Self {
        ApiError::not_found(
            ErrorCode::ThreadNotFound,
            format!("no thread `{thread_key}`"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }

    /// A task the request ran in failed (it panicked, or was cancelled at shutdown).
    pub fn task_failed(what: &'static str, source: tokio::task::JoinError) -> Self {
        ApiError::Internal(InternalError::Task { what, source })
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Refused { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. } | ApiError::DatabaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::BadGateway { code, .. }
            | ApiError::Refused { code, .. }
            | ApiError::GatewayTimeout { code, .. } => *code,
            ApiError::DatabaseUnavailable => ErrorCode::DatabaseUnavailable,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::InvalidSignature(_) => ErrorCode::InvalidSignature,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// How the log layer reports this error.
    fn rejection(&self) -> Rejection {
        let seriousness = match self {
            ApiError::Internal(source) => Seriousness::Internal {
                cause: format!("{source:?}"),
            },
            ApiError::Unavailable {
                code: ErrorCode::NotReady,
                ..
            } => Seriousness::NotReady,
            ApiError::Unavailable { .. }
            | ApiError::BadGateway { .. }
            | ApiError::GatewayTimeout { .. }
            | ApiError::DatabaseUnavailable => Seriousness::Unavailable,
            ApiError::BadRequest { .. }
            | ApiError::Unauthorized
            | ApiError::InvalidSignature(_)
            | ApiError::Forbidden(_)
            | ApiError::Refused { .. }
            | ApiError::NotFound { .. }
            | ApiError::Conflict { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UnsupportedMediaType(_) => Seriousness::Refused,
        };
        Rejection {
            code: self.code(),
            message: self.to_string(),
            seriousness,
        }
    }
}

/// A request the server answered with an error, as the response carries it (an extension) for
/// the log layer, which logs it once.
#[derive(Clone, Debug)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub seriousness: Seriousness,
}

/// How loudly a [`Rejection`] is logged.
#[derive(Clone, Debug)]
pub enum Seriousness {
    /// The server's own fault: an error, with its cause.
    Internal { cause: String },
    /// Start-up: the database is not reached yet (debug).
    NotReady,
    /// The database or the egress proxy is away or refused (warning).
    Unavailable,
    /// The request was at fault (debug).
    Refused,
}

impl Rejection {
    /// Logs the rejection at its level.
    pub fn log(&self) {
        let Rejection { code, message, .. } = self;
        match &self.seriousness {
            Seriousness::Internal { cause } => tracing::error!(error = %cause, "internal error"),
            Seriousness::NotReady => tracing::debug!(error = %message, "not ready"),
            Seriousness::Unavailable => tracing::warn!(error = %message, "unavailable"),
            Seriousness::Refused => {
                tracing::debug!(code = code.as_str(), error = %message, "request rejected")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let rejection = self.rejection();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
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
        response.extensions_mut().insert(rejection);
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
                ErrorCode::InvalidRequest,
                format!("a value in the request cannot be stored: {}", db.message()),
            );
        }
        if is_unavailable(&error) {
            return ApiError::DatabaseUnavailable;
        }
        ApiError::Internal(InternalError::Database(error))
    }
}

impl From<crate::sandbox::SandboxError> for ApiError {
    fn from(error: crate::sandbox::SandboxError) -> Self {
        use crate::sandbox::SandboxError;
        let code = match error {
            SandboxError::Capacity(_) => ErrorCode::SandboxCapacity,
            SandboxError::Host { .. }
            | SandboxError::HostUser(_)
            | SandboxError::Seccomp(_)
            | SandboxError::DidNotStart { .. }
            | SandboxError::NotStarting(_)
            | SandboxError::NotAttachable(_) => ErrorCode::SandboxBackendUnavailable,
        };
        ApiError::Unavailable {
            code,
            message: error.to_string(),
        }
    }
}

/// Whether a database error means "the database cannot be reached right now" rather than a bug.
#[allow(clippy::wildcard_enum_match_arm)] // sqlx::Error is non-exhaustive
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
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    (db.code().as_deref() == Some("23505")).then(|| db.constraint().unwrap_or_default().to_owned())
}
