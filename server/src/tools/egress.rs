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
