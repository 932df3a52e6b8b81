//! Where sandboxes come from. The server talks to every backend through [`SandboxBackend`]:
//! the local bubblewrap backend and the Kubernetes backend implement it the same way.
//!
//! The runner inside a sandbox always dials out to the server with the token in its
//! [`Attachment`]; the server never execs into a sandbox.
//!
//! - [`local`]: bubblewrap on this machine.
//! - [`host_user`]: which host uid a local sandbox runs as.
//! - [`external`]: starts nothing; runners attach on their own.
//! - [`warm`]: ready sandboxes per harness, claimed on spawn (backend-independent).
//! - [`reaper`]: releases sandboxes that died, idled or lived too long, and stops orphans.

mod external;
pub mod host_user;
pub mod local;
pub mod reaper;
mod seccomp;
pub mod warm;

use std::fmt;

use async_trait::async_trait;
use centaur_protocol::Harness;
use centaur_protocol::runner::Attachment;
use uuid::Uuid;

use crate::egress::SandboxEgress;

pub use external::ExternalBackend;
pub use local::{LocalBackend, LocalOptions};

/// What a backend needs to start a sandbox.
#[derive(Clone)]
pub struct SandboxSpec {
    pub sandbox_id: Uuid,
    pub harness: Harness,
    /// URL at which the runner reaches the server (backends with their own route to it may
    /// ignore it).
    pub server_url: String,
    /// The sandbox's way out through the egress proxy, when one is configured.
    pub egress: Option<SandboxEgress>,
    /// The thread it serves. `None` for a warm sandbox, which gets it from
    /// [`SandboxBackend::attach`] when it is claimed.
    pub attachment: Option<Attachment>,
}

impl fmt::Debug for SandboxSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxSpec")
            .field("sandbox_id", &self.sandbox_id)
            .field("harness", &self.harness)
            .field("server_url", &self.server_url)
            .field("egress", &self.egress)
            .field("attachment", &self.attachment)
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
    /// A warm sandbox cannot take this thread (its workspace already exists elsewhere); start a
    /// cold one instead.
    #[error("this warm sandbox cannot serve the thread: {0}")]
    NotAttachable(String),
}

#[async_trait]
pub trait SandboxBackend: Send + Sync + 'static {
    /// `local`, `kubernetes`, `external`.
    fn name(&self) -> &'static str;

    /// Whether [`SandboxBackend::create`] without an attachment (a warm sandbox) works.
    fn supports_warm(&self) -> bool {
        false
    }

    /// Starts a sandbox. Returns when its runner is up.
    async fn create(&self, spec: &SandboxSpec) -> Result<(), SandboxError>;

    /// Hands a warm sandbox its thread.
    async fn attach(
        &self,
        _sandbox_id: Uuid,
        _attachment: &Attachment,
    ) -> Result<(), SandboxError> {
        Err(SandboxError::NotAttachable(format!(
            "the {} backend has no warm sandboxes",
            self.name()
        )))
    }

    async fn status(&self, sandbox_id: Uuid) -> Result<SandboxState, SandboxError>;

    /// Stops a sandbox. Its workspace stays; stopping a stopped sandbox is not an error.
    async fn stop(&self, sandbox_id: Uuid, reason: &str) -> Result<(), SandboxError>;

    /// Every sandbox the backend runs, so a reaper can stop the ones no thread owns.
    async fn list(&self) -> Result<Vec<Uuid>, SandboxError>;

    /// Stops everything (the server is shutting down).
    async fn shutdown(&self) {}

    /// A Unix socket the server should serve the runner API on, for sandboxes that reach it
    /// that way.
    fn runner_socket(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether the process `pid` (as this server sees it), which connected to the runner
    /// socket, is the runner of `sandbox_id`. Only it may use that sandbox's token there: the
    /// code the runner runs may not, even if it learned the token.
    fn is_runner(&self, _sandbox_id: Uuid, _pid: u32) -> bool {
        false
    }

    /// Why the backend stopped a sandbox itself (a cap it exceeded), if it did.
    async fn why_stopped(&self, _sandbox_id: Uuid) -> Option<String> {
        None
    }
}
