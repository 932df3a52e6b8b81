//! The tools endpoint: the runner serves exactly `GET /tools`, `GET /tools/{tool}` and
//! `POST /tools/{tool}/{method}` on a loopback port of the sandbox and forwards each to the
//! server over its link, with the sandbox's token; anything else is `404`. The sandbox's
//! processes (`centaur-tool`, the harness's MCP server, a script) reach tools without holding
//! the token.
//!
//! A call may wait minutes for a person's approval: nothing here times it out (the server ends
//! it with the turn's deadline). A caller that goes away drops the forwarded request.

use std::convert::Infallible;

use bytes::Bytes;
use centaur_protocol::{ErrorBody, ErrorCode, ErrorDetail};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::link::{Link, LinkError};

/// The largest call body forwarded (the server's default limit on the runner socket).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One of the forwarded routes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    List,
    Show,
    Call,
}

/// Accepts on `listener` and serves each connection, forwarding over `link`.
pub async fn serve(listener: TcpListener, link: Link) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(%error, "the tools endpoint cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let link = link.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let link = link.clone();
                async move { Ok::<_, Infallible>(forward(&link, request).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "a tools endpoint connection ended");
            }
        });
    }
}

/// Which route `method path` is, if it is one: tool and method names are plain
/// (`[A-Za-z0-9_-]`), so nothing else of the server's can be reached through the endpoint.
fn route(method: &Method, path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/tools")?;
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.strip_prefix('/')?.split('/').collect()
    };
    let plain = |s: &&str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !segments.iter().all(plain) {
        return None;
    }
    match (segments.len(), method) {
        (0, &Method::GET) => Some(Route::List),
        (1, &Method::GET) => Some(Route::Show),
        (2, &Method::POST) => Some(Route::Call),
        _ => None,
    }
}

async fn forward(link: &Link, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let Some(route) = route(request.method(), &path) else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!(
                "the tools endpoint serves GET /tools, GET /tools/{{tool}} and POST /tools/{{tool}}/{{method}}, not {} {path}",
                request.method()
            ),
        );
    };
    let body = match route {
        Route::List | Route::Show => None,
        Route::Call => match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => Some(body.to_bytes()),
            Err(too_big) if too_big.is::<http_body_util::LengthLimitError>() => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "a call's arguments are at most {} MiB",
                        MAX_BODY_BYTES >> 20
                    ),
                );
            }
            Err(broken) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidBody,
                    format!("the request's body could not be read: {broken}"),
                );
            }
        },
    };
    let method = match route {
        Route::List | Route::Show => Method::GET,
        Route::Call => Method::POST,
    };
    let answer = match link.send(method, &path, body, &[]).await {
        Ok(answer) => answer,
        Err(failure) => return unreachable(failure),
    };
    let status = answer.status();
    let content_type = answer.headers().get(hyper::header::CONTENT_TYPE).cloned();
    let body = match answer.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(broken) => return unreachable(LinkError::Unreachable(broken.to_string())),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, content_type);
    }
    response
}

fn unreachable(failure: LinkError) -> Response<Full<Bytes>> {
    tracing::warn!(error = %failure, "a tools request could not be forwarded");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ToolUnavailable,
        format!("the runner cannot reach the Centaur server ({failure}); retry shortly"),
    )
}

fn error(status: StatusCode, code: ErrorCode, message: String) -> Response<Full<Bytes>> {
    let body = ErrorBody {
        error: ErrorDetail { code, message },
    };
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&body).expect("serializable"),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_routes_with_plain_names() {
        assert_eq!(route(&Method::GET, "/tools"), Some(Route::List));
        assert_eq!(route(&Method::GET, "/tools/github"), Some(Route::Show));
        assert_eq!(
            route(&Method::POST, "/tools/github/search_issues"),
            Some(Route::Call)
        );
        for (method, path) in [
            (Method::POST, "/tools"),
            (Method::POST, "/tools/github"),
            (Method::GET, "/tools/github/search"),
            (Method::GET, "/toolsx"),
            (Method::GET, "/tools/"),
            (Method::GET, "/tools/.."),
            (Method::POST, "/tools/a/b/c"),
            (Method::POST, "/tools/a%2F/b"),
            (Method::GET, "/runner/v1/threads"),
            (Method::GET, "/"),
        ] {
            assert_eq!(route(&method, path), None, "{method} {path}");
        }
    }
}
