//! The HTTP routes. Handlers are thin: authorise, parse, call the domain module.

mod admin;
mod agent;
mod health;
mod proxy;
mod runner;
mod slack;
mod threads;
mod tools;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use centaur_protocol::ErrorCode;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::app::AppState;
use crate::error::{ApiError, InternalError, Rejection};
use crate::extract::BodyLimit;

pub fn router(state: AppState) -> Router {
    let user_limit = state.config.max_body_bytes;
    let runner_limit = state.config.max_runner_batch_bytes;
    let user_api = agent::routes()
        .merge(threads::routes())
        .merge(admin::routes())
        .merge(slack::routes())
        .merge(tools::routes())
        .layer(DefaultBodyLimit::max(user_limit))
        .layer(Extension(BodyLimit(user_limit)));
    let runner_api = runner::routes()
        .merge(proxy::routes())
        .layer(DefaultBodyLimit::max(runner_limit))
        .layer(Extension(BodyLimit(runner_limit)));
    let needs_database = user_api
        .merge(runner_api)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_ready));

    let request_id = axum::http::HeaderName::from_static("x-request-id");
    Router::new()
        .merge(health::routes())
        .merge(needs_database)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::map_response(log_rejection))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                })
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::DEBUG)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                )
                // The rejection layer logs server-side failures, once, with their cause.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// What the runner socket (mounted into every local sandbox) serves: the runner API and the
/// thread's event stream the runner follows, nothing else. Requests there are taken only with
/// a sandbox token, and only from that sandbox's runner process
/// ([`crate::runner_socket::SocketPeer`]).
pub fn runner_socket_router(state: AppState) -> Router {
    let limit = state.config.max_runner_batch_bytes;
    runner::routes()
        .merge(threads::runner_routes())
        .merge(tools::routes())
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::map_response(log_rejection))
        .with_state(state)
}

/// Until the schema is in place, routes that need the database answer 503; while the database
/// is known to be away (its last probe failed) they answer `503 database_unavailable` at once
/// instead of waiting for a connection. A request that fails because the database did not
/// answer has it probed at once.
async fn require_ready(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.readiness.is_migrated() {
        return ApiError::Unavailable {
            code: ErrorCode::NotReady,
            message: "the server cannot reach its database yet; retry shortly".into(),
        }
        .into_response();
    }
    if state.readiness.is_known_down() {
        return ApiError::DatabaseUnavailable.into_response();
    }
    let response = next.run(request).await;
    let database_failed = response
        .extensions()
        .get::<Rejection>()
        .is_some_and(|r| r.code == ErrorCode::DatabaseUnavailable);
    if database_failed {
        state.readiness.suspect();
    }
    response
}

/// Logs every request answered with an [`ApiError`], once, inside the request's span, at the
/// level its [`Rejection`] says.
async fn log_rejection(response: Response) -> Response {
    if let Some(rejection) = response.extensions().get::<Rejection>() {
        rejection.log();
    }
    response
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal(InternalError::Panicked).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let body = centaur_protocol::ErrorBody {
        error: centaur_protocol::ErrorDetail {
            code: ErrorCode::MethodNotAllowed,
            message: format!("{method} is not allowed on {}", uri.path()),
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
