//! One audit record per request or tunnel. Records name secrets, never their values.

use tokio::sync::mpsc;

pub use centaur_protocol::egress::{AuditRecord, EgressDecision as Decision};

/// Where audit records go. The proxy never blocks on it.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, record: AuditRecord);
}

/// Writes records to the log as structured events.
pub struct LogSink;

impl AuditSink for LogSink {
    fn record(&self, r: AuditRecord) {
        tracing::info!(
            target: "centaur_proxy::audit",
            sandbox_id = %r.sandbox_id, host = %r.host, port = r.port, method = %r.method,
            path = %r.path, status = r.status, bytes_up = r.bytes_up, bytes_down = r.bytes_down,
            decision = ?r.decision, reason = r.reason.as_deref(), secrets = ?r.secrets_swapped,
            duration_ms = r.duration_ms, "egress"
        );
    }
}

/// Sends records to a channel (a batching uploader, or a test).
pub struct ChannelSink(pub mpsc::UnboundedSender<AuditRecord>);

impl AuditSink for ChannelSink {
    fn record(&self, record: AuditRecord) {
        let _ = self.0.send(record);
    }
}

/// Sends records to the Centaur server in batches (`POST {server}/proxy/v1/audit` with the
/// proxy token): up to 500 records or 200 ms per batch; a failed batch is retried with backoff
/// until it is stored. Up to 100,000 records wait in memory; beyond that new ones are dropped
/// and counted in the log, so a server outage cannot exhaust the proxy.
pub struct HttpSink {
    tx: mpsc::Sender<AuditRecord>,
    dropped: std::sync::atomic::AtomicU64,
}

const BATCH: usize = 500;
const PENDING: usize = 100_000;

#[derive(Debug, thiserror::Error)]
#[error("bad audit server URL `{0}`: use http://host:port")]
pub struct BadServerUrl(String);

impl HttpSink {
    pub fn start(
        server_url: &str,
        token: String,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<HttpSink, BadServerUrl> {
        let authority = crate::http::http_authority(server_url)
            .ok_or_else(|| BadServerUrl(server_url.to_owned()))?;
        // Whatever path the server is mounted under.
        let base = server_url
            .trim_end_matches('/')
            .split_once(authority.as_str())
            .map_or("", |(_, path)| path)
            .to_owned();
        let (tx, rx) = mpsc::channel(PENDING);
        tokio::spawn(upload(rx, base, authority, token, shutdown));
        Ok(HttpSink {
            tx,
            dropped: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

impl AuditSink for HttpSink {
    fn record(&self, record: AuditRecord) {
        if self.tx.try_send(record).is_err() {
            let dropped = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "audit records dropped: the server has not taken them for too long"
                );
            }
        }
    }
}

async fn upload(
    mut rx: mpsc::Receiver<AuditRecord>,
    base: String,
    authority: hyper::http::uri::Authority,
    token: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            _ = shutdown.cancelled() => None,
        };
        let Some(first) = first else {
            // Shut down: flush what is queued, once.
            while let Ok(record) = rx.try_recv() {
                batch.push(record);
            }
            if !batch.is_empty() {
                let _ = post(&base, &authority, &token, &batch).await;
            }
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(record)) => batch.push(record),
                _ => break,
            }
        }
        let mut delay = std::time::Duration::from_millis(100);
        while let Err(error) = post(&base, &authority, &token, &batch).await {
            tracing::warn!(%error, records = batch.len(), retry_in_ms = delay.as_millis() as u64, "cannot deliver audit records");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
        batch.clear();
    }
}

/// Why a batch of records was not delivered (it is retried).
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Request(#[from] hyper::http::Error),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("the server answered {status}: {body}")]
    Refused {
        status: hyper::StatusCode,
        body: String,
    },
}

async fn post(
    base_path: &str,
    authority: &hyper::http::uri::Authority,
    token: &str,
    records: &[AuditRecord],
) -> Result<(), PostError> {
    let body = serde_json::to_vec(&centaur_protocol::egress::AuditBatch {
        records: records.to_vec(),
    })?;
    let request = hyper::Request::post(format!("{base_path}/proxy/v1/audit"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    match crate::http::send(authority, request).await? {
        (status, _) if status.is_success() => Ok(()),
        (status, body) => Err(PostError::Refused {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }),
    }
}
