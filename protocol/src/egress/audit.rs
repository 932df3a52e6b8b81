//! Egress audit records, sent by the proxy to the server (`POST /proxy/v1/audit`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressDecision {
    /// Forwarded (HTTP) or tunnelled (CONNECT).
    Allowed,
    /// Refused by policy, address checks or limits.
    Denied,
    /// Refused because a placeholder was where it is not bound.
    LeakBlocked,
    /// Allowed, but the upstream could not be reached or failed.
    UpstreamError,
}

impl EgressDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressDecision::Allowed => "allowed",
            EgressDecision::Denied => "denied",
            EgressDecision::LeakBlocked => "leak_blocked",
            EgressDecision::UpstreamError => "upstream_error",
        }
    }
}

/// One request (or tunnel) through the proxy. Names secrets, never their values.
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
    pub decision: EgressDecision,
    pub reason: Option<String>,
    pub secrets_swapped: Vec<String>,
    pub duration_ms: u64,
    /// The secrets whose placeholders the request body carried (an agent's `env` output in a
    /// model request, say). Bodies are never swapped into and never refused for placeholders:
    /// they are forwarded unchanged, and named here. Sorted, without duplicates; empty for a
    /// body in a content coding (gzip, zstd), which the proxy does not decode.
    #[serde(default)]
    pub body_placeholders: Vec<String>,
    /// Placeholder-shaped tokens in the request body that are not this sandbox's (one an
    /// earlier sandbox of the thread was given, or made up), forwarded unchanged too.
    #[serde(default)]
    pub body_unknown_placeholders: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBatch {
    pub records: Vec<AuditRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditAccepted {
    pub stored: usize,
    /// `egress.denied` events added to threads' streams.
    pub events: usize,
}
