//! What sandboxes can make the proxy hold, capped twice: per sandbox, so one sandbox cannot
//! starve another, and for the whole process, so all of them together cannot exhaust it
//! (file descriptors, memory).
//!
//! - Connections: each sandbox's Unix socket accepts a bounded number of connections, and all
//!   listeners together a bounded number more; a connection beyond either is answered at once
//!   and closed.
//! - Buffered bytes: request bodies are held whole for inspection, so their bytes are counted
//!   against the sandbox's budget and the proxy's as they arrive.
//! - Tunnels and requests in flight, per sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::{Deserialize, Deserializer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The proxy's limits. In a configuration file they are the `limits` object; every field is
/// optional and defaults to the value below.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open CONNECT tunnels per sandbox; one sandbox's flood cannot starve another.
    pub max_tunnels_per_sandbox: usize,
    /// Requests in flight per sandbox (request bodies are buffered for inspection).
    pub max_requests_per_sandbox: usize,
    /// Largest request body the proxy inspects and forwards (413 beyond).
    pub max_body_bytes: usize,
    /// Connections open at once on one sandbox's Unix socket (429 beyond).
    pub max_connections_per_sandbox: usize,
    /// Connections open at once from all sandboxes, on every listener (503 beyond). Keep it
    /// well under the process's file-descriptor limit: each connection may also hold upstream
    /// connections.
    pub max_connections: usize,
    /// Request-body bytes one sandbox can have buffered in the proxy at once (429 beyond).
    pub max_buffered_bytes_per_sandbox: usize,
    /// Request-body bytes all sandboxes together can have buffered at once (503 beyond).
    pub max_buffered_bytes: usize,
    /// Time to establish an upstream TCP connection.
    #[serde(rename = "connect_timeout_secs", deserialize_with = "seconds")]
    pub connect_timeout: Duration,
    /// A tunnel or connection with no traffic for this long is closed.
    #[serde(rename = "idle_timeout_secs", deserialize_with = "seconds")]
    pub idle_timeout: Duration,
    /// Idle upstream connections kept alive for reuse, for all sandboxes and hosts together;
    /// beyond it, the one idle the longest is closed. Each key keeps what its load left.
    pub max_idle_upstream: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tunnels_per_sandbox: 64,
            max_requests_per_sandbox: 64,
            max_body_bytes: 32 * 1024 * 1024,
            max_connections_per_sandbox: 256,
            max_connections: 4096,
            max_buffered_bytes_per_sandbox: 64 * 1024 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_idle_upstream: 512,
        }
    }
}

fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

/// A cap that refused something; its text is the reason the sandbox and the audit see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapReached {
    #[error("this sandbox already has {limit} connections open to the proxy; close some first")]
    SandboxConnections { limit: usize },
    #[error(
        "the proxy is serving its limit of {limit} connections for all sandboxes; try again shortly"
    )]
    Connections { limit: usize },
    #[error(
        "this sandbox already has {limit} bytes of request bodies held in the proxy; wait for some requests to finish"
    )]
    SandboxBytes { limit: usize },
    #[error(
        "the proxy is holding its limit of {limit} bytes of request bodies for all sandboxes; try again shortly"
    )]
    Bytes { limit: usize },
}

impl CapReached {
    /// 429 when the sandbox reached its own cap, 503 when the proxy reached its global one.
    pub fn status(&self) -> StatusCode {
        match self {
            CapReached::SandboxConnections { .. } | CapReached::SandboxBytes { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            CapReached::Connections { .. } | CapReached::Bytes { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// Per-sandbox amounts of something limited (open tunnels, requests in flight, connections,
/// buffered bytes).
pub type Counters = Arc<Mutex<HashMap<String, usize>>>;

fn lock(counters: &Counters) -> MutexGuard<'_, HashMap<String, usize>> {
    counters.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An amount of one sandbox's limit, held while it lives.
pub struct Slot {
    counters: Counters,
    sandbox_id: String,
    amount: usize,
}

impl Slot {
    /// One unit of the sandbox's `limit`, if it has one left.
    pub fn take(counters: &Counters, sandbox_id: &str, limit: usize) -> Option<Slot> {
        let mut slot = Slot {
            counters: counters.clone(),
            sandbox_id: sandbox_id.to_owned(),
            amount: 0,
        };
        slot.grow(1, limit).then_some(slot)
    }

    /// Adds `amount` to what this slot holds, if the sandbox stays within `limit`.
    pub fn grow(&mut self, amount: usize, limit: usize) -> bool {
        let mut counts = lock(&self.counters);
        let held = counts.entry(self.sandbox_id.clone()).or_default();
        match held.checked_add(amount) {
            Some(total) if total <= limit => {
                *held = total;
                self.amount += amount;
                true
            }
            _ => false,
        }
    }

    /// Gives back `amount` of what this slot holds.
    fn shrink(&mut self, amount: usize) {
        let amount = amount.min(self.amount);
        let mut counts = lock(&self.counters);
        if let Some(held) = counts.get_mut(&self.sandbox_id) {
            *held = held.saturating_sub(amount);
        }
        self.amount -= amount;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counters);
        if let Some(held) = counts.get_mut(&self.sandbox_id) {
            *held = held.saturating_sub(self.amount);
            if *held == 0 {
                counts.remove(&self.sandbox_id);
            }
        }
    }
}

/// What all sandboxes together may hold, and what each may.
pub struct Caps {
    limits: Limits,
    connections: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    sandbox_connections: Counters,
    sandbox_bytes: Counters,
    refusals: RefusalLog,
    lingering: Arc<Semaphore>,
}

/// Refused connections that may be kept open for a moment while their answer goes out.
const LINGERING: usize = 64;

impl Caps {
    pub fn new(limits: &Limits) -> Caps {
        Caps {
            limits: limits.clone(),
            connections: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            bytes: Arc::new(Semaphore::new(
                limits.max_buffered_bytes.min(Semaphore::MAX_PERMITS),
            )),
            sandbox_connections: Counters::default(),
            sandbox_bytes: Counters::default(),
            refusals: RefusalLog::default(),
            lingering: Arc::new(Semaphore::new(LINGERING)),
        }
    }

    /// Leave for a refused connection to stay open a moment (to be answered properly), if few
    /// enough already are; otherwise it is closed at once.
    pub fn linger(&self) -> Option<OwnedSemaphorePermit> {
        self.lingering.clone().try_acquire_owned().ok()
    }

    /// A connection that was just accepted, on the socket of `sandbox_id` when known. The
    /// sandbox's own cap is checked first, so a sandbox over it hears that it is the cause.
    pub fn admit_connection(&self, sandbox_id: Option<&str>) -> Result<Admitted, CapReached> {
        let sandbox = match sandbox_id {
            Some(id) => Some(
                Slot::take(
                    &self.sandbox_connections,
                    id,
                    self.limits.max_connections_per_sandbox,
                )
                .ok_or(CapReached::SandboxConnections {
                    limit: self.limits.max_connections_per_sandbox,
                })?,
            ),
            None => None,
        };
        let global =
            self.connections
                .clone()
                .try_acquire_owned()
                .map_err(|_| CapReached::Connections {
                    limit: self.limits.max_connections,
                })?;
        Ok(Admitted {
            _sandbox: sandbox,
            _global: global,
        })
    }

    /// An empty hold on buffered bytes for one request of `sandbox_id`.
    pub fn buffer(&self, sandbox_id: &str) -> Buffered<'_> {
        Buffered {
            caps: self,
            sandbox: Slot {
                counters: self.sandbox_bytes.clone(),
                sandbox_id: sandbox_id.to_owned(),
                amount: 0,
            },
            global: None,
        }
    }

    /// Whether a refused connection of `sandbox_id` should be audited now (see
    /// `RefusalLog`), and how many went unaudited before it.
    pub fn audit_refusal(&self, sandbox_id: &str) -> Option<u64> {
        self.refusals.admit(sandbox_id, Instant::now())
    }
}

/// An accepted connection's place under the caps, given back when it closes.
pub struct Admitted {
    _sandbox: Option<Slot>,
    _global: OwnedSemaphorePermit,
}

/// Bytes one request has buffered, counted against its sandbox's budget and the proxy's;
/// given back when dropped.
pub struct Buffered<'a> {
    caps: &'a Caps,
    sandbox: Slot,
    global: Option<OwnedSemaphorePermit>,
}

impl Buffered<'_> {
    /// Counts `amount` more bytes, or says which cap they would break.
    pub fn grow(&mut self, amount: usize) -> Result<(), CapReached> {
        let limits = &self.caps.limits;
        if !self
            .sandbox
            .grow(amount, limits.max_buffered_bytes_per_sandbox)
        {
            return Err(CapReached::SandboxBytes {
                limit: limits.max_buffered_bytes_per_sandbox,
            });
        }
        let global = u32::try_from(amount)
            .ok()
            .and_then(|amount| self.caps.bytes.clone().try_acquire_many_owned(amount).ok());
        let Some(global) = global else {
            self.sandbox.shrink(amount);
            return Err(CapReached::Bytes {
                limit: limits.max_buffered_bytes,
            });
        };
        match &mut self.global {
            Some(held) => held.merge(global),
            None => self.global = Some(global),
        }
        Ok(())
    }
}

/// Audit of refused connections, at most one record per sandbox per interval: a sandbox can
/// open connections far faster than anyone could read a record for each, and every record
/// becomes an event on its thread. The next record says how many were left out.
#[derive(Default)]
struct RefusalLog {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

const REFUSAL_AUDIT_INTERVAL: Duration = Duration::from_secs(1);

impl RefusalLog {
    /// `Some(left out since the last record)` if a record may be written at `now`.
    fn admit(&self, sandbox_id: &str, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.len() > 1024 {
            last.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_AUDIT_INTERVAL);
        }
        match last.get_mut(sandbox_id) {
            Some((at, left_out)) if now.duration_since(*at) < REFUSAL_AUDIT_INTERVAL => {
                *left_out += 1;
                None
            }
            Some((at, left_out)) => {
                let before = *left_out;
                (*at, *left_out) = (now, 0);
                Some(before)
            }
            None => {
                last.insert(sandbox_id.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            max_connections_per_sandbox: 2,
            max_connections: 3,
            max_buffered_bytes_per_sandbox: 100,
            max_buffered_bytes: 150,
            ..Limits::default()
        }
    }

    #[test]
    fn connections_are_capped_per_sandbox_then_globally() {
        let caps = Caps::new(&small());
        let a1 = caps.admit_connection(Some("a")).unwrap();
        let _a2 = caps.admit_connection(Some("a")).unwrap();
        assert_eq!(
            caps.admit_connection(Some("a")).err(),
            Some(CapReached::SandboxConnections { limit: 2 })
        );
        let _b1 = caps.admit_connection(Some("b")).unwrap();
        assert_eq!(
            caps.admit_connection(Some("b")).err(),
            Some(CapReached::Connections { limit: 3 })
        );
        assert_eq!(
            caps.admit_connection(None).err().map(|e| e.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        drop(a1);
        let _b2 = caps.admit_connection(Some("b")).unwrap();
    }

    #[test]
    fn buffered_bytes_are_capped_per_sandbox_then_globally_and_given_back() {
        let caps = Caps::new(&small());
        let mut a = caps.buffer("a");
        a.grow(60).unwrap();
        a.grow(40).unwrap();
        assert_eq!(a.grow(1), Err(CapReached::SandboxBytes { limit: 100 }));
        let mut b = caps.buffer("b");
        b.grow(50).unwrap();
        assert_eq!(b.grow(1), Err(CapReached::Bytes { limit: 150 }));
        drop(a);
        b.grow(50).unwrap();
        assert_eq!(
            CapReached::Bytes { limit: 1 }.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            CapReached::SandboxBytes { limit: 1 }.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn refused_connections_are_audited_at_most_once_per_interval() {
        let log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.admit("a", start), Some(0));
        assert_eq!(log.admit("a", start), None);
        assert_eq!(log.admit("a", start + Duration::from_millis(10)), None);
        assert_eq!(log.admit("b", start), Some(0));
        assert_eq!(log.admit("a", start + REFUSAL_AUDIT_INTERVAL), Some(2));
        assert_eq!(log.admit("a", start + REFUSAL_AUDIT_INTERVAL), None);
    }

    #[test]
    fn limits_read_from_a_file_keep_their_defaults() {
        let limits: Limits = serde_json::from_value(serde_json::json!({
            "max_connections": 10, "idle_timeout_secs": 7
        }))
        .unwrap();
        assert_eq!(limits.max_connections, 10);
        assert_eq!(limits.idle_timeout, Duration::from_secs(7));
        assert_eq!(limits.max_connections_per_sandbox, 256);
        let unknown = serde_json::from_value::<Limits>(serde_json::json!({"max_conections": 1}));
        assert!(unknown.is_err());
    }
}
