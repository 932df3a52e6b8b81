//! The server's side of the proxy's control API ([`centaur_protocol::egress::control`]).

use std::time::Duration;

use centaur_protocol::ErrorBody;
#[cfg(doc)]
use centaur_protocol::egress::control::ControlErrorCode;
use centaur_protocol::egress::control::{
    DesiredSandbox, Removed, SandboxApplied, SandboxList, SyncRequest, SyncResponse,
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
