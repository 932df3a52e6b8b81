//! Where sandboxes come from. The server talks to every backend through [`SandboxBackend`]
//! (create, wait until ready, attach, status, stop, list), so a new backend (a Kubernetes one is
//! planned, see `docs/roadmap.md`) plugs in without touching assignment, the warm pool or the
//! reaper.
//!
//! The runner inside a sandbox always dials out to the server with the token in its
//! [`Attachment`]; the server never execs into a sandbox.
//!
//! - [`local`]: bubblewrap on this machine.
//! - [`host_user`]: which host uid a local sandbox runs as.
//! - `external`: starts nothing; runners attach on their own.
//! - `seccomp`: the system-call filter of local sandboxes.
//! - [`warm`]: ready sandboxes per harness, claimed on spawn (backend-independent).
//! - [`reaper`]: releases sandboxes that died, idled or lived too long, and stops orphans.
//!
//! Which sandbox a thread gets, and when it is given back, is [`crate::assignment`]'s.

mod external;
pub mod host_user;
pub mod local;
pub mod reaper;
mod seccomp;
pub mod warm;

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use centaur_protocol::Harness;
use centaur_protocol::api::SandboxBackendKind;
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

/// What the backend knows of a sandbox.
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
    /// Something the backend did on its host failed.
    #[error("sandbox backend failure: {what}: {source}")]
    Host {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox backend failure: choosing the sandbox's host user: {0}")]
    HostUser(#[from] host_user::HostUserError),
    #[error("sandbox backend failure: the seccomp filter: {0}")]
    Seccomp(#[from] seccomp::FilterError),
    /// Its runner never said it was ready; the sandbox is gone.
    #[error("sandbox backend failure: the sandbox did not start: {log_tail}")]
    DidNotStart { log_tail: String },
    /// [`SandboxBackend::ready`] for a sandbox that is not starting.
    #[error("sandbox backend failure: sandbox {0} is not starting")]
    NotStarting(Uuid),
    /// A warm sandbox cannot take this thread; start a cold one instead.
    #[error("this warm sandbox cannot serve the thread: {0}")]
    NotAttachable(#[from] NotAttachable),
}

/// Why a warm sandbox cannot take a thread.
#[derive(Debug, thiserror::Error)]
pub enum NotAttachable {
    #[error("the {0} backend has no warm sandboxes")]
    NoWarmSandboxes(SandboxBackendKind),
    #[error("the thread already has a workspace, which only a new sandbox can mount")]
    HasWorkspace,
    #[error("the thread's workspace appeared meanwhile")]
    WorkspaceAppeared,
    #[error("no such warm sandbox")]
    Unknown,
    #[error("the sandbox is already attached")]
    AlreadyAttached,
}

/// Where a sandbox would find a harness CLI, as the server sees it (a cheap look: a stat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CliLocation {
    /// The sandboxes bring their own CLIs (an image built with them); the server cannot look.
    Unseen,
    /// There, on this machine.
    Found(PathBuf),
    /// Not there: where the sandbox would look, as a sentence's end (`/x/bin/codex`).
    Missing(String),
}

/// How the server starts, watches and stops sandboxes. A sandbox is created, becomes
/// [ready](SandboxBackend::ready), serves its thread (a warm one once it is
/// [attached](SandboxBackend::attach)) and is stopped; [`SandboxBackend::list`] lets the reaper
/// find the ones nobody owns.
#[async_trait]
pub trait SandboxBackend: Send + Sync + 'static {
    /// Which backend this is; sandbox rows record it.
    fn kind(&self) -> SandboxBackendKind;

    /// Whether [`SandboxBackend::create`] without an attachment (a warm sandbox) works.
    fn supports_warm(&self) -> bool {
        false
    }

    /// Starts a sandbox; its runner may still be coming up when this returns.
    async fn create(&self, spec: &SandboxSpec) -> Result<(), SandboxError>;

    /// Waits until the runner of a created sandbox serves (and holds the spec's attachment, if
    /// it had one). On failure the sandbox is stopped. For backends whose `create` returns
    /// only once the runner is up, there is nothing to wait for.
    async fn ready(&self, _sandbox_id: Uuid) -> Result<(), SandboxError> {
        Ok(())
    }

    /// Hands a warm sandbox its thread.
    async fn attach(
        &self,
        _sandbox_id: Uuid,
        _attachment: &Attachment,
    ) -> Result<(), SandboxError> {
        Err(NotAttachable::NoWarmSandboxes(self.kind()).into())
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
    fn runner_socket(&self) -> Option<PathBuf> {
        None
    }

    /// Whether the process `pid` (as this server sees it), which connected to the runner
    /// socket, is the runner of `sandbox_id`. Only it may use that sandbox's token there: the
    /// code the runner runs may not, even if it learned the token.
    fn is_runner(&self, _sandbox_id: Uuid, _pid: u32) -> bool {
        false
    }

    /// Where this backend's sandboxes would find the harness CLI `program` (a name looked up
    /// on the sandbox's `PATH`, or a path inside the sandbox), as far as the server can see.
    fn locate_cli(&self, _program: &str) -> CliLocation {
        CliLocation::Unseen
    }

    /// Why the backend stopped a sandbox itself (a cap it exceeded), if it did.
    async fn why_stopped(&self, _sandbox_id: Uuid) -> Option<String> {
        None
    }
}
