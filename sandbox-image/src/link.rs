//! The runner's line to the server: HTTP/1.1 over the server's Unix socket (bind-mounted into
//! local sandboxes) or TCP. One connection per call keeps failure handling simple; over a Unix
//! socket a connection costs microseconds.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the server is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`
    Tcp(String),
}

/// A server address the runner cannot use.
#[derive(Debug, thiserror::Error)]
#[error("the server URL must be unix:/path or http://host:port, got `{0}`")]
pub struct BadEndpoint(String);

impl std::str::FromStr for Endpoint {
    type Err = BadEndpoint;

    /// `unix:/path` or `http://host:port`.
    fn from_str(s: &str) -> Result<Endpoint, BadEndpoint> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| BadEndpoint(s.to_owned()))?;
        Ok(Endpoint::Tcp(rest.trim_end_matches('/').to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The server could not be reached or the connection broke: retry later.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server answered with an error.
    #[error("the server answered {status}: {code}: {message}")]
    Status {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unreadable answer from the server: {0}")]
    Protocol(String),
}

impl LinkError {
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, LinkError::Status { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }

    /// Worth retrying: the server is away, restarting or briefly unable to answer.
    pub fn is_transient(&self) -> bool {
        match self {
            LinkError::Unreachable(_) => true,
            LinkError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            LinkError::Protocol(_) => false,
        }
    }
}

#[derive(Clone)]
pub struct Link {
    endpoint: Endpoint,
    /// The sandbox's token; none for a link to the runner's own tools endpoint, which adds it.
    token: Option<String>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Link {
    pub fn new(endpoint: Endpoint, token: String) -> Link {
        Link {
            endpoint,
            token: Some(token),
        }
    }

    /// A link that sends no token (`centaur-tool` to the runner's tools endpoint).
    pub fn without_token(endpoint: Endpoint) -> Link {
        Link {
            endpoint,
            token: None,
        }
    }

    /// Sends a request and returns the response with its body unread (for streams).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>, LinkError> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request = request.header(
            hyper::header::HOST,
            match &self.endpoint {
                Endpoint::Tcp(authority) => authority.as_str(),
                Endpoint::Unix(_) => "centaur",
            },
        );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        let unreachable = |e: &dyn std::fmt::Display| LinkError::Unreachable(e.to_string());
        let mut sender = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
                        .await
                        .map_err(|_| LinkError::Unreachable("connect timed out".into()))?
                        .map_err(|e| unreachable(&format!("{}: {e}", path.display())))?;
                handshake(stream).await?
            }
            Endpoint::Tcp(authority) => {
                let stream = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect(authority),
                )
                .await
                .map_err(|_| LinkError::Unreachable("connect timed out".into()))?
                .map_err(|e| unreachable(&format!("{authority}: {e}")))?;
                let _ = stream.set_nodelay(true);
                handshake(stream).await?
            }
        };
        sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))
    }

    /// A JSON call: `Ok(None)` for `204 No Content`.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, LinkError> {
        let body = body.map(|b| Bytes::from(serde_json::to_vec(b).expect("serializable")));
        let response = self.send(method, path, body, &[]).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| LinkError::Unreachable(e.to_string()))?
            .to_bytes();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(LinkError::Status {
                status,
                code: error["error"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned(),
                message: error["error"]["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LinkError::Protocol(e.to_string()))
    }
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, LinkError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| LinkError::Unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
