//! The proxy's own outgoing calls (audit upload, 1Password Connect): one HTTP/1.1 request on a
//! fresh plain-TCP connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::uri::Authority;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Sends `request` (origin-form URI) to `authority` and returns the status and whole body.
pub async fn send(
    authority: &Authority,
    mut request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("cannot reach {authority}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    request.headers_mut().insert(
        hyper::header::HOST,
        authority
            .as_str()
            .parse()
            .map_err(|_| format!("bad host {authority}"))?,
    );
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
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
