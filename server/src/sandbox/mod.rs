//! Where sandboxes come from. The server talks to every backend through [`SandboxBackend`]:
//! the local bubblewrap backend and the Kubernetes backend implement it the same way.
//!
//! The runner inside a sandbox always dials out to the server with the token in its
//! [`SandboxSpec`]; the server never execs into a sandbox.

mod external;

use std::fmt;

use async_trait::async_trait;
use centaur_protocol::{Harness, ThreadKey};
use uuid::Uuid;

use crate::egress::SandboxEgress;

pub use external::ExternalBackend;

/// What a backend needs to give a thread its sandbox.
#[derive(Clone)]
pub struct SandboxSpec {
    pub sandbox_id: Uuid,
    pub thread_key: ThreadKey,
    pub harness: Harness,
    /// URL at which the runner reaches the server.
    pub server_url: String,
    /// The thread-scoped token the runner authenticates with. Never log it.
    pub runner_token: String,
    /// The sandbox's way out through the egress proxy, when one is configured.
    pub egress: Option<SandboxEgress>,
}

impl fmt::Debug for SandboxSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxSpec")
            .field("sandbox_id", &self.sandbox_id)
            .field("thread_key", &self.thread_key)
            .field("harness", &self.harness)
            .field("server_url", &self.server_url)
            .field("runner_token", &"<redacted>")
            .field("egress", &self.egress)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxState {
    Starting,
    Ready,
    Stopped,
    /// The backend has no record of it.
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox backend is at capacity: {0}")]
    Capacity(String),
    #[error("sandbox backend failure: {0}")]
    Backend(String),
}

#[async_trait]
pub trait SandboxBackend: Send + Sync + 'static {
    /// `local`, `kubernetes`, `external`.
    fn name(&self) -> &'static str;

    /// Takes a ready sandbox from the warm pool and attaches `spec` to it (thread, token,
    /// policy). `false` when the pool has none for this harness.
    async fn claim_warm(&self, _spec: &SandboxSpec) -> Result<bool, SandboxError> {
        Ok(false)
    }

    /// Starts a new sandbox for `spec` (a cold start).
    async fn create(&self, spec: &SandboxSpec) -> Result<(), SandboxError>;

    async fn status(&self, sandbox_id: Uuid) -> Result<SandboxState, SandboxError>;

    /// Stops a sandbox. Its workspace stays; stopping a stopped sandbox is not an error.
    async fn stop(&self, sandbox_id: Uuid, reason: &str) -> Result<(), SandboxError>;

    /// Every sandbox the backend runs, so a reaper can stop the ones no thread owns.
    async fn list(&self) -> Result<Vec<Uuid>, SandboxError>;
}
