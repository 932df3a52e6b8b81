//! The proxy's own outgoing calls (audit upload, 1Password Connect): one HTTP/1.1 request on a
//! fresh plain-TCP connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::uri::Authority;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Why one of the proxy's own requests got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {authority}: {error}")]
    Unreachable {
        authority: Authority,
        error: std::io::Error,
    },
    #[error("bad host {0}")]
    BadHost(Authority),
    /// The HTTP exchange failed (handshake, request or response body); hyper says how.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

/// Sends `request` (origin-form URI) to `authority` and returns the status and whole body.
pub async fn send(
    authority: &Authority,
    mut request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), HttpError> {
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|error| HttpError::Unreachable {
            authority: authority.clone(),
            error,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    request.headers_mut().insert(
        hyper::header::HOST,
        authority
            .as_str()
            .parse()
            .map_err(|_| HttpError::BadHost(authority.clone()))?,
    );
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The authority of an `http://host:port` URL, or `None` for anything else.
pub fn http_authority(url: &str) -> Option<Authority> {
    let uri: hyper::Uri = url.parse().ok()?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(authority)) => Some(authority.clone()),
        _ => None,
    }
}
