//! One audit record per request or tunnel. Records name secrets, never their values.

use std::collections::{HashMap, HashSet, VecDeque};
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

    /// Once shutdown has begun: resolves when every record the sink held was delivered (or
    /// given up on, and logged), so the process may exit. A sink that holds nothing is done.
    fn drained(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Why a flush did not answer that it delivered a sandbox's records (those not delivered stay
/// queued, or are still on their way, and are delivered later).
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("the server did not take the audit records: {0}")]
    Undelivered(#[from] PostError),
    #[error("the server did not take the audit records within {} ms", FLUSH_LIMIT.as_millis())]
    TimedOut,
    /// The flush's delivery task ended without an answer (it panicked, or the runtime is
    /// shutting down); the records it held went back to the queue.
    #[error("the audit flush ended without an answer: {0}")]
    Aborted(#[from] tokio::task::JoinError),
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
/// and counted in the log, so a server outage cannot exhaust the proxy. On shutdown, everything
/// still queued is posted once, a batch at a time.
///
/// A flush takes one sandbox's waiting records out of the queue and posts them at once, a batch
/// at a time, beside the batches (other sandboxes' records keep their way); if the batch being
/// delivered holds some of that sandbox's records, it waits for that batch first, and while it
/// posts, the batches leave that sandbox's newer records queued, so records arrive in order.
/// The posting runs in a task of its own: a caller that stops waiting (its time limit, or a
/// hang-up) never cancels it, so taken records are either delivered once or put back.
pub struct HttpSink {
    shared: Arc<Shared>,
    /// Becomes true when the uploader has ended (after its shutdown drain).
    ended: watch::Receiver<bool>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the uploader when a record arrives (or a flush gives records back).
    arrived: Notify,
    /// The number of the last batch the uploader delivered.
    delivered: watch::Sender<u64>,
    /// How many flushes have ended (a flush of the same sandbox waits for the one posting).
    flushes_ended: watch::Sender<u64>,
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
    /// Sandboxes whose records a flush has taken and is posting: the batches leave their
    /// newer records waiting until it ends.
    flushing: HashSet<String>,
    batches: u64,
    dropped: u64,
}

/// Records per post, batches and flushes alike (the server takes at most 10,000).
const BATCH: usize = 500;
const PENDING: usize = 100_000;
/// How long a flush's caller waits for its answer, waiting and posting included. Posting goes
/// on past it (the records are then delivered, or put back, as usual).
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
            flushes_ended: watch::channel(0).0,
            target: Target {
                base,
                authority,
                token,
            },
        });
        let (ended_tx, ended) = watch::channel(false);
        let uploading = shared.clone();
        tokio::spawn(async move {
            upload(uploading, shutdown).await;
            let _ = ended_tx.send(true);
        });
        Ok(HttpSink { shared, ended })
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether some waiting record is the batches' to take (not held back by a flush).
    fn has_ready(&self) -> bool {
        let queue = self.lock();
        queue
            .waiting
            .iter()
            .any(|r| !queue.flushing.contains(&r.sandbox_id))
    }

    /// The next batch (up to [`BATCH`] records, oldest first, none of a sandbox being
    /// flushed), now in flight.
    fn take_batch(&self) -> Vec<AuditRecord> {
        let mut guard = self.lock();
        let queue = &mut *guard;
        let batch: Vec<AuditRecord> = if queue.flushing.is_empty() {
            let n = queue.waiting.len().min(BATCH);
            queue.waiting.drain(..n).collect()
        } else {
            let mut batch = Vec::new();
            let mut kept = VecDeque::with_capacity(queue.waiting.len());
            for record in std::mem::take(&mut queue.waiting) {
                if batch.len() < BATCH && !queue.flushing.contains(&record.sandbox_id) {
                    batch.push(record);
                } else {
                    kept.push_back(record);
                }
            }
            queue.waiting = kept;
            batch
        };
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

    /// The batch in flight was not delivered: back to the front of the queue, in order.
    fn batch_returned(&self, batch: Vec<AuditRecord>) {
        let mut queue = self.lock();
        queue.in_flight = None;
        for record in batch.into_iter().rev() {
            queue.waiting.push_front(record);
        }
    }
}

impl AuditSink for HttpSink {
    fn drained(&self) -> BoxFuture<'_, ()> {
        let mut ended = self.ended.clone();
        Box::pin(async move {
            // An uploader that is gone (its task panicked) has nothing more to deliver.
            let _ = ended.wait_for(|ended| *ended).await;
        })
    }

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
        // Spawned now, so neither the limit below nor a caller dropping this future can stop
        // the delivery part-way.
        let task = tokio::spawn(flush_sandbox(self.shared.clone(), sandbox_id.to_owned()));
        Box::pin(async move {
            match tokio::time::timeout(FLUSH_LIMIT, task).await {
                Ok(Ok(result)) => result,
                Ok(Err(error)) => Err(FlushError::Aborted(error)),
                Err(_) => Err(FlushError::TimedOut),
            }
        })
    }
}

/// What a flush does next.
enum Next {
    /// Wait for the batch in flight (its number), which holds this many of the sandbox's records.
    AwaitBatch(u64, usize),
    /// Wait for another flush of the sandbox to end.
    AwaitFlush,
    /// Post these (none when the sandbox has nothing waiting).
    Post(VecDeque<AuditRecord>),
}

/// A flush's delivery, in a task of its own: waits (at most [`FLUSH_LIMIT`], nothing taken yet)
/// for what is already on its way, then takes the sandbox's waiting records and posts them a
/// batch at a time, without a time limit, so each post ends with the server's answer.
async fn flush_sandbox(shared: Arc<Shared>, sandbox_id: String) -> Result<usize, FlushError> {
    let deadline = tokio::time::Instant::now() + FLUSH_LIMIT;
    let mut delivered = 0;
    let mut batches = shared.delivered.subscribe();
    let mut flushes = shared.flushes_ended.subscribe();
    let taken = loop {
        flushes.borrow_and_update();
        let next = {
            let mut guard = shared.lock();
            let queue = &mut *guard;
            let in_flight = queue
                .in_flight
                .as_ref()
                .and_then(|(number, per)| per.get(&sandbox_id).map(|n| (*number, *n)));
            if let Some((number, records)) = in_flight {
                Next::AwaitBatch(number, records)
            } else if queue.flushing.contains(&sandbox_id) {
                Next::AwaitFlush
            } else {
                let (ours, others): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut queue.waiting)
                    .into_iter()
                    .partition(|r| r.sandbox_id == sandbox_id);
                queue.waiting = others;
                if !ours.is_empty() {
                    queue.flushing.insert(sandbox_id.clone());
                }
                Next::Post(ours)
            }
        };
        match next {
            Next::AwaitBatch(number, records) => {
                // The uploader retries until the server takes it.
                let waited =
                    tokio::time::timeout_at(deadline, batches.wait_for(|done| *done >= number))
                        .await;
                if !matches!(waited, Ok(Ok(_))) {
                    return Err(FlushError::TimedOut);
                }
                delivered += records;
            }
            Next::AwaitFlush => {
                if tokio::time::timeout_at(deadline, flushes.changed())
                    .await
                    .is_err()
                {
                    return Err(FlushError::TimedOut);
                }
            }
            Next::Post(ours) if ours.is_empty() => return Ok(delivered),
            Next::Post(ours) => break ours,
        }
    };
    let mut posting = Posting {
        shared: &shared,
        sandbox_id: &sandbox_id,
        rest: taken,
    };
    while !posting.rest.is_empty() {
        let n = posting.rest.len().min(BATCH);
        post(&shared.target, &posting.rest.make_contiguous()[..n]).await?;
        posting.rest.drain(..n);
        delivered += n;
    }
    Ok(delivered)
}

/// The records a flush has taken and not yet delivered. However the flush ends (done, refused,
/// panicked, cancelled), they go back to the front of the queue, in order, and the sandbox's
/// records are the batches' again.
struct Posting<'a> {
    shared: &'a Shared,
    sandbox_id: &'a str,
    rest: VecDeque<AuditRecord>,
}

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        while let Some(record) = self.rest.pop_back() {
            queue.waiting.push_front(record);
        }
        queue.flushing.remove(self.sandbox_id);
        drop(queue);
        self.shared.flushes_ended.send_modify(|n| *n += 1);
        self.shared.arrived.notify_one();
    }
}

async fn upload(shared: Arc<Shared>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        if shutdown.is_cancelled() {
            return drain(&shared).await;
        }
        if !shared.has_ready() {
            tokio::select! {
                _ = shared.arrived.notified() => {}
                _ = shutdown.cancelled() => {}
            }
            continue;
        }
        // Gather up to a batch for a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while shared.lock().waiting.len() < BATCH {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shared.arrived.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        let batch = shared.take_batch();
        if batch.is_empty() {
            // A flush took them.
            shared.batch_delivered();
            continue;
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let Err(error) = post(&shared.target, &batch).await else {
                shared.batch_delivered();
                break;
            };
            tracing::warn!(%error, records = batch.len(), retry_in_ms = delay.as_millis() as u64, "cannot deliver audit records");
            let stopping = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = shutdown.cancelled() => true,
            };
            if stopping {
                // Delivered with the rest, once.
                shared.batch_returned(batch);
                return drain(&shared).await;
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// On shutdown: posts everything still queued, a batch at a time, once each.
async fn drain(shared: &Shared) {
    loop {
        let batch: Vec<AuditRecord> = {
            let mut queue = shared.lock();
            let n = queue.waiting.len().min(BATCH);
            queue.waiting.drain(..n).collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(error) = post(&shared.target, &batch).await {
            tracing::error!(%error, records = batch.len(), "audit records lost at shutdown");
        }
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
