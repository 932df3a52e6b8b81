//! The server's side of the proxy's control API ([`centaur_protocol::egress::control`]).

use std::time::Duration;

use centaur_protocol::ErrorBody;
#[cfg(doc)]
use centaur_protocol::egress::control::ControlErrorCode;
use centaur_protocol::egress::control::{
    AuditFlushed, DesiredSandbox, Removed, RevealRequest, RevealedSecret, SandboxApplied,
    SandboxList, SyncRequest, SyncResponse,
};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ProxyClient {
    http: reqwest::Client,
    base: reqwest::Url,
    token: String,
}

impl std::fmt::Debug for ProxyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyClient")
            .field("base", &self.base.as_str())
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyClientError {
    #[error("the proxy control URL must be http://host:port, got `{0}`")]
    BadUrl(String),
    #[error("the egress proxy at {authority} is unreachable: {reason}")]
    Unreachable { authority: String, reason: String },
    #[error("the egress proxy refused the request ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the egress proxy sent an unreadable answer: {0}")]
    Protocol(String),
}

impl ProxyClient {
    /// `url` is `http://host:port` of the proxy's control listener.
    pub fn new(url: &str, token: String) -> Result<ProxyClient, ProxyClientError> {
        let bad = || ProxyClientError::BadUrl(url.to_owned());
        let base = reqwest::Url::parse(url).map_err(|_| bad())?;
        if base.scheme() != "http"
            || base.host_str().is_none()
            || !matches!(base.path(), "" | "/")
            || base.query().is_some()
        {
            return Err(bad());
        }
        // The control API is plain HTTP, but reqwest builds its TLS setup anyway, and where the
        // build unifies it with rustls without a provider (the CLI crates ask for that), it needs
        // one installed: ring, which the database driver's TLS already brings.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| ProxyClientError::Protocol(e.to_string()))?;
        Ok(ProxyClient { http, base, token })
    }

    pub async fn apply(
        &self,
        sandbox_id: &str,
        desired: &DesiredSandbox,
    ) -> Result<SandboxApplied, ProxyClientError> {
        let request = self
            .http
            .put(self.url(&format!("/v1/sandboxes/{sandbox_id}")))
            .json(desired);
        self.call(request).await
    }

    pub async fn remove(&self, sandbox_id: &str, version: u64) -> Result<bool, ProxyClientError> {
        let mut url = self.url(&format!("/v1/sandboxes/{sandbox_id}"));
        url.set_query(Some(&format!("version={version}")));
        let request = self.http.delete(url);
        let answer: Removed = self.call(request).await?;
        Ok(answer.removed)
    }

    pub async fn sync(&self, request: &SyncRequest) -> Result<SyncResponse, ProxyClientError> {
        self.call(self.http.put(self.url("/v1/sandboxes")).json(request))
            .await
    }

    pub async fn list(&self) -> Result<Vec<SandboxApplied>, ProxyClientError> {
        let list: SandboxList = self.call(self.http.get(self.url("/v1/sandboxes"))).await?;
        Ok(list.sandboxes)
    }

    /// Has the proxy deliver the audit records of `sandbox_id` it still holds to the server
    /// before it answers, waiting at most `limit`.
    pub async fn flush_audit(
        &self,
        sandbox_id: &str,
        limit: Duration,
    ) -> Result<AuditFlushed, ProxyClientError> {
        let request = self
            .http
            .post(self.url(&format!("/v1/sandboxes/{sandbox_id}/audit/flush")))
            .timeout(limit);
        self.call(request).await
    }

    /// The value of secret `name` for `principal` (a tool's `tool-<name>`, served by the proxy),
    /// from the proxy's secret sources. The proxy logs and audits the reveal under `principal`.
    pub async fn reveal(&self, name: &str, principal: &str) -> Result<String, ProxyClientError> {
        let mut url = self.url("/v1/secrets");
        url.path_segments_mut()
            .map_err(|()| ProxyClientError::BadUrl(self.base.to_string()))?
            .push(name)
            .push("reveal");
        let request = self.http.post(url).json(&RevealRequest {
            principal: principal.to_owned(),
        });
        let revealed: RevealedSecret = self.call(request).await?;
        Ok(revealed.value)
    }

    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ProxyClientError> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            ProxyClientError::Unreachable {
                authority: self.base.authority().to_owned(),
                reason: if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    e.to_string()
                },
            }
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ProxyClientError::Protocol(e.to_string()))?;
        if !status.is_success() {
            // The proxy's codes ([`ControlErrorCode`]) as it sent them, known or not.
            let (code, message) = match serde_json::from_slice::<ErrorBody<String>>(&body) {
                Ok(error) => (error.error.code, error.error.message),
                Err(_) => ("unknown".to_owned(), "no message".to_owned()),
            };
            return Err(ProxyClientError::Refused {
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ProxyClientError::Protocol(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A control API that answers one request per connection with `status` and `body`, and
    /// hands back the request line and headers it read.
    async fn answering(
        status: &'static str,
        body: &'static str,
    ) -> (ProxyClient, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let _ = seen.send(String::from_utf8_lossy(&request).into_owned());
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (
            ProxyClient::new(&url, "control-token".into()).unwrap(),
            requests,
        )
    }

    #[test]
    fn only_a_plain_http_authority_is_a_control_url() {
        for bad in [
            "https://127.0.0.1:9000",
            "http://127.0.0.1:9000/v1",
            "http://127.0.0.1:9000/?x=1",
            "127.0.0.1:9000",
            "",
        ] {
            assert!(
                matches!(
                    ProxyClient::new(bad, "t".into()),
                    Err(ProxyClientError::BadUrl(_))
                ),
                "{bad:?} was taken"
            );
        }
        assert!(ProxyClient::new("http://127.0.0.1:9000/", "t".into()).is_ok());
    }

    #[tokio::test]
    async fn a_removal_carries_its_version_and_the_token_and_reads_the_answer() {
        let (client, mut requests) = answering("200 OK", r#"{"removed":true}"#).await;
        assert!(client.remove("sb-1", 7).await.unwrap());
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with("DELETE /v1/sandboxes/sb-1?version=7 HTTP/1.1"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer control-token"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn refusals_keep_the_proxys_code_even_one_this_server_does_not_know() {
        let (client, _) = answering(
            "409 Conflict",
            r#"{"error":{"code":"sandbox_removed","message":"removed at 9"}}"#,
        )
        .await;
        match client.list().await {
            Err(ProxyClientError::Refused {
                status: 409,
                code,
                message,
            }) => assert_eq!(
                (code.as_str(), message.as_str()),
                ("sandbox_removed", "removed at 9")
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let (client, _) = answering(
            "400 Bad Request",
            r#"{"error":{"code":"a_code_from_a_newer_proxy","message":"no"}}"#,
        )
        .await;
        assert!(matches!(
            client.list().await,
            Err(ProxyClientError::Refused { status: 400, code, .. }) if code == "a_code_from_a_newer_proxy"
        ));
        let (client, _) = answering("502 Bad Gateway", "<html>gateway</html>").await;
        assert!(matches!(
            client.list().await,
            Err(ProxyClientError::Refused { status: 502, code, .. }) if code == "unknown"
        ));
    }

    #[tokio::test]
    async fn a_flush_names_its_sandbox_and_an_older_proxy_is_a_404() {
        let (client, mut requests) = answering("200 OK", r#"{"records":3}"#).await;
        let flushed = client
            .flush_audit("sb-1", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(flushed.records, 3);
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with("POST /v1/sandboxes/sb-1/audit/flush HTTP/1.1"),
            "{request}"
        );
        let (client, _) = answering("404 Not Found", "").await;
        assert!(matches!(
            client.flush_audit("sb-1", Duration::from_secs(2)).await,
            Err(ProxyClientError::Refused { status: 404, .. })
        ));
    }

    #[tokio::test]
    async fn a_flush_gives_up_on_a_proxy_that_does_not_answer_in_time() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = ProxyClient::new(&url, "t".into()).unwrap();
        let started = tokio::time::Instant::now();
        let outcome = client.flush_audit("sb-1", Duration::from_millis(300)).await;
        assert!(
            matches!(&outcome, Err(ProxyClientError::Unreachable { reason, .. }) if reason == "timed out"),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_unreadable_success_and_an_absent_proxy_are_told_apart() {
        let (client, _) = answering("200 OK", r#"{"sandboxes": "not a list"}"#).await;
        assert!(matches!(
            client.list().await,
            Err(ProxyClientError::Protocol(_))
        ));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let client = ProxyClient::new(&url, "t".into()).unwrap();
        assert!(matches!(
            client.list().await,
            Err(ProxyClientError::Unreachable { .. })
        ));
    }
}
