//! One audit record per request or tunnel. Records name secrets, never their values.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc, watch};

pub use centaur_protocol::egress::{AuditRecord, EgressDecision as Decision};

/// Where audit records go. The proxy never blocks on it.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, record: AuditRecord);

    /// Delivers every record of `sandbox_id` this sink still holds before it returns; how many
    /// (`POST /v1/sandboxes/{id}/audit/flush`). A sink that holds nothing has nothing to do.
    fn flush<'a>(&'a self, sandbox_id: &'a str) -> BoxFuture<'a, Result<usize, FlushError>> {
        let _ = sandbox_id;
        Box::pin(async { Ok(0) })
    }
}

/// Why a flush did not deliver a sandbox's records (they stay queued and are delivered later).
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("the server did not take the audit records: {0}")]
    Undelivered(#[from] PostError),
    #[error("the server did not take the audit records within {} ms", FLUSH_LIMIT.as_millis())]
    TimedOut,
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
            body_placeholders = ?r.body_placeholders,
            body_unknown_placeholders = r.body_unknown_placeholders,
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
///
/// A flush takes one sandbox's waiting records out of the queue and posts them at once, beside
/// the batches (other sandboxes' records keep their way); if the batch being delivered holds
/// some of that sandbox's records, it waits for that batch first, so records arrive in order.
pub struct HttpSink {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the uploader when a record arrives.
    arrived: Notify,
    /// The number of the last batch the uploader delivered.
    delivered: watch::Sender<u64>,
    target: Target,
}

/// Where records go.
struct Target {
    base: String,
    authority: hyper::http::uri::Authority,
    token: String,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<AuditRecord>,
    /// The batch the uploader is delivering: its number and its records per sandbox.
    in_flight: Option<(u64, HashMap<String, usize>)>,
    batches: u64,
    dropped: u64,
}

const BATCH: usize = 500;
const PENDING: usize = 100_000;
/// How long a flush may take, waiting and posting included.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            arrived: Notify::new(),
            delivered: watch::channel(0).0,
            target: Target {
                base,
                authority,
                token,
            },
        });
        tokio::spawn(upload(shared.clone(), shutdown));
        Ok(HttpSink { shared })
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch (up to [`BATCH`] records, oldest first), now in flight.
    fn take_batch(&self) -> Vec<AuditRecord> {
        let mut queue = self.lock();
        let n = queue.waiting.len().min(BATCH);
        let batch: Vec<AuditRecord> = queue.waiting.drain(..n).collect();
        let mut per_sandbox: HashMap<String, usize> = HashMap::new();
        for record in &batch {
            *per_sandbox.entry(record.sandbox_id.clone()).or_default() += 1;
        }
        queue.batches += 1;
        queue.in_flight = Some((queue.batches, per_sandbox));
        batch
    }

    fn batch_delivered(&self) {
        let number = self.lock().in_flight.take().map(|(number, _)| number);
        if let Some(number) = number {
            self.delivered.send_replace(number);
        }
    }
}

impl AuditSink for HttpSink {
    fn record(&self, record: AuditRecord) {
        let mut queue = self.shared.lock();
        if queue.waiting.len() >= PENDING {
            queue.dropped += 1;
            let dropped = queue.dropped;
            drop(queue);
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "audit records dropped: the server has not taken them for too long"
                );
            }
            return;
        }
        queue.waiting.push_back(record);
        drop(queue);
        self.shared.arrived.notify_one();
    }

    fn flush<'a>(&'a self, sandbox_id: &'a str) -> BoxFuture<'a, Result<usize, FlushError>> {
        Box::pin(async move {
            tokio::time::timeout(FLUSH_LIMIT, self.flush_sandbox(sandbox_id))
                .await
                .unwrap_or(Err(FlushError::TimedOut))
        })
    }
}

impl HttpSink {
    async fn flush_sandbox(&self, sandbox_id: &str) -> Result<usize, FlushError> {
        let shared = &self.shared;
        let mut delivered = 0;
        let mut batches = shared.delivered.subscribe();
        loop {
            // Either the batch in flight holds some of the sandbox's records (wait for it, and
            // look again), or the sandbox's waiting records are taken out to be posted now.
            let (in_flight, taken) = {
                let mut queue = shared.lock();
                let in_flight = queue
                    .in_flight
                    .as_ref()
                    .and_then(|(number, per)| per.get(sandbox_id).map(|n| (*number, *n)));
                let taken: Vec<AuditRecord> = match in_flight {
                    Some(_) => Vec::new(),
                    None => {
                        let (ours, others): (VecDeque<_>, VecDeque<_>) =
                            std::mem::take(&mut queue.waiting)
                                .into_iter()
                                .partition(|r| r.sandbox_id == sandbox_id);
                        queue.waiting = others;
                        ours.into()
                    }
                };
                (in_flight, taken)
            };
            if let Some((number, records)) = in_flight {
                // The uploader retries until the server takes it; the flush's limit bounds this.
                let _ = batches.wait_for(|done| *done >= number).await;
                delivered += records;
                continue;
            }
            if taken.is_empty() {
                return Ok(delivered);
            }
            if let Err(error) = post(&shared.target, &taken).await {
                // Back to the front of the queue, in order, for the uploader to deliver.
                let mut queue = shared.lock();
                for record in taken.into_iter().rev() {
                    queue.waiting.push_front(record);
                }
                drop(queue);
                shared.arrived.notify_one();
                return Err(error.into());
            }
            return Ok(delivered + taken.len());
        }
    }
}

async fn upload(shared: Arc<Shared>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        if shared.lock().waiting.is_empty() {
            tokio::select! {
                _ = shared.arrived.notified() => continue,
                _ = shutdown.cancelled() => {
                    // Shut down: deliver what is queued, once.
                    let batch = shared.take_batch();
                    if !batch.is_empty() {
                        let _ = post(&shared.target, &batch).await;
                    }
                    return;
                }
            }
        }
        // Gather up to a batch for a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while shared.lock().waiting.len() < BATCH {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shared.arrived.notified() => {}
            }
        }
        let batch = shared.take_batch();
        if batch.is_empty() {
            // A flush took them.
            shared.batch_delivered();
            continue;
        }
        let mut delay = Duration::from_millis(100);
        while let Err(error) = post(&shared.target, &batch).await {
            tracing::warn!(%error, records = batch.len(), retry_in_ms = delay.as_millis() as u64, "cannot deliver audit records");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        shared.batch_delivered();
    }
}

/// Why a batch of records was not delivered (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum PostError {
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

async fn post(target: &Target, records: &[AuditRecord]) -> Result<(), PostError> {
    let body = serde_json::to_vec(&centaur_protocol::egress::AuditBatch {
        records: records.to_vec(),
    })?;
    let request = hyper::Request::post(format!("{}/proxy/v1/audit", target.base))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", target.token),
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    match crate::http::send(&target.authority, request).await? {
        (status, _) if status.is_success() => Ok(()),
        (status, body) => Err(PostError::Refused {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }),
    }
}
