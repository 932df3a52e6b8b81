//! One audit record per request or tunnel. Records name secrets, never their values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded (HTTP) or tunnelled (CONNECT).
    Allowed,
    /// Refused by policy or by address checks.
    Denied,
    /// Refused because a placeholder was where it is not bound.
    LeakBlocked,
    /// Allowed, but the upstream could not be reached or failed.
    UpstreamError,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub sandbox_id: String,
    pub thread_key: Option<String>,
    pub host: String,
    pub port: u16,
    pub method: String,
    /// Path without the query (queries can carry credentials).
    pub path: String,
    pub status: Option<u16>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub decision: Decision,
    pub reason: Option<String>,
    pub secrets_swapped: Vec<String>,
    pub duration_ms: u64,
}

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
