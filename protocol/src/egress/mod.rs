//! What crosses between the server and the egress proxy: the policy document
//! ([`policy`], with its host patterns in [`host`]), the control API's bodies ([`control`]) and
//! the audit records the proxy reports ([`audit`]).

pub mod audit;
pub mod control;
pub mod host;
pub mod policy;

pub use audit::{AuditAccepted, AuditBatch, AuditRecord, EgressDecision};
pub use host::{HostPattern, HostPatternError};
pub use policy::{DenyReason, Policy, PolicyError, SecretBinding, Verdict};
