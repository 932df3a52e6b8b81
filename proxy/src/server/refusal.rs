//! Refusals the agent can read: a status, `x-centaur-deny-reason`, and a plain-text body that
//! says why and how to ask for access; and connections refused before their request is read.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::OwnedSemaphorePermit;

use super::ProxyBody;
use crate::limits::CapReached;

/// A refusal the agent can read: status, `x-centaur-deny-reason`, and a plain-text body saying
/// why and how to ask for access.
pub fn refusal(status: StatusCode, reason: &str, host: &str) -> Response<ProxyBody> {
    let (header_reason, body) = refusal_text(reason, host);
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&header_reason) {
        headers.insert("x-centaur-deny-reason", value);
    }
    response
}

/// A refusal's `x-centaur-deny-reason` value (printable ASCII only) and its body.
fn refusal_text(reason: &str, host: &str) -> (String, String) {
    let header_reason: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let body = format!(
        "Centaur egress proxy refused this request: {reason}.\n\n\
         This sandbox reaches the network only through Centaur's egress proxy, which allows the \
         hosts in this thread's policy and swaps credential placeholders only where they are \
         bound. If the task needs {host}, stop and ask a person on this thread to allow it; \
         do not try to work around the proxy.\n"
    );
    (header_reason, body)
}

/// A whole HTTP/1.1 refusal of a connection, written before its request is read.
pub(super) fn connection_refusal(cap: &CapReached) -> Vec<u8> {
    let status = cap.status();
    let (header_reason, body) = refusal_text(&cap.to_string(), "any host");
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         x-centaur-deny-reason: {header_reason}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// Sends `answer` on a refused connection and closes it. With `linger`, the request is read
/// (up to a bound, for a moment) after the answer, so the client can send it whole and read the
/// answer rather than meet a reset; without, the answer goes out only if the socket takes it at
/// once, and the connection is closed on the spot.
pub(super) async fn answer_and_close<S>(
    mut stream: S,
    answer: Vec<u8>,
    linger: Option<OwnedSemaphorePermit>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(_linger) = linger else {
        let _ = stream.write_all(&answer).now_or_never();
        return;
    };
    let deadline = tokio::time::Instant::now() + REFUSAL_LINGER;
    let answered = tokio::time::timeout_at(deadline, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    });
    if !matches!(answered.await, Ok(Ok(()))) {
        return;
    }
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// How long a refused connection may stay open while its answer goes out and its request is
/// read, and how much of the request is read.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;
