//! The egress proxy (the `centaur-proxy` library) in this process, serving its control API on
//! loopback, with fixed credentials behind the sandboxes' placeholders.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use centaur_proxy::audit::{AuditRecord, AuditSink, FlushError, HttpSink, LogSink};
use centaur_proxy::control::Control;
use centaur_proxy::secrets::{SecretSource, SecretStore};
use centaur_proxy::{Limits, Proxy, Registry};
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The token of the proxy's control API, which the servers under test are given.
pub const PROXY_TOKEN: &str = "test-proxy-token-0123456789";
/// The real credential behind the sandboxes' `OPENAI_API_KEY` placeholder.
pub const REAL_OPENAI_KEY: &str = "sk-test-real-0123456789";
/// The real credential behind `ANTHROPIC_API_KEY`.
pub const REAL_ANTHROPIC_KEY: &str = "sk-ant-test-real-0123456789";

/// An egress proxy with its control API on `addr` (a fresh port when `None`).
pub struct TestProxy {
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    audit: Arc<ServerAudit>,
}

/// The proxy's audit: to the log until [`TestProxy::deliver_audit_to`] names the server (which
/// starts after the proxy), then to that server in batches, as `centaur dev` does.
#[derive(Default)]
struct ServerAudit(OnceLock<HttpSink>);

impl AuditSink for ServerAudit {
    fn record(&self, record: AuditRecord) {
        match self.0.get() {
            Some(sink) => sink.record(record),
            None => LogSink.record(record),
        }
    }

    fn flush<'a>(&'a self, sandbox_id: &'a str) -> BoxFuture<'a, Result<usize, FlushError>> {
        match self.0.get() {
            Some(sink) => sink.flush(sandbox_id),
            None => Box::pin(async { Ok(0) }),
        }
    }
}

impl TestProxy {
    /// From now on, audit records go to the server at `server_url` (`POST /proxy/v1/audit`).
    pub fn deliver_audit_to(&self, server_url: &str) {
        let sink = HttpSink::start(server_url, PROXY_TOKEN.into(), self.shutdown.clone())
            .expect("the test server's URL is http://host:port");
        let _ = self.audit.0.set(sink);
    }

    pub async fn start(addr: Option<SocketAddr>, sockets: PathBuf) -> TestProxy {
        let registry = Arc::new(Registry::new(b"server-test-proxy-key-0123456789".to_vec()));
        std::fs::create_dir_all(&sockets).unwrap();
        let key_file = sockets.join("openai-key");
        std::fs::write(&key_file, format!("{REAL_OPENAI_KEY}\n")).unwrap();
        let anthropic_file = sockets.join("anthropic-key");
        std::fs::write(&anthropic_file, REAL_ANTHROPIC_KEY).unwrap();
        let secrets = HashMap::from([
            (
                "OPENAI_API_KEY".to_owned(),
                SecretSource::File { path: key_file },
            ),
            (
                "ANTHROPIC_API_KEY".to_owned(),
                SecretSource::File {
                    path: anthropic_file,
                },
            ),
        ]);
        let audit = Arc::new(ServerAudit::default());
        let proxy = Proxy::new(
            registry.clone(),
            Arc::new(SecretStore::new(secrets, Duration::from_secs(60))),
            audit.clone(),
            Limits::default(),
            None,
        );
        let shutdown = CancellationToken::new();
        let control = Control::new(
            proxy,
            Some(PROXY_TOKEN.into()),
            Some(sockets),
            shutdown.clone(),
        );
        let listener = TcpListener::bind(addr.unwrap_or("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let s = shutdown.clone();
        tokio::spawn(async move { control.serve(listener, s).await });
        TestProxy {
            addr,
            registry,
            shutdown,
            audit,
        }
    }

    pub fn allows(&self, sandbox_id: Uuid, host: &str) -> bool {
        self.registry
            .get(&sandbox_id.to_string())
            .is_some_and(|s| s.config.policy.allow.iter().any(|p| p.matches(host, 443)))
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
