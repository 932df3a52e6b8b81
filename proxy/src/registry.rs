//! The sandboxes the proxy serves, each with its policy. Registering or updating a sandbox
//! swaps its whole state at once: a request sees the old policy or the new one, never a mix.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::credentials::placeholder;
use crate::policy::Policy;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    pub sandbox_id: String,
    #[serde(default)]
    pub thread_key: Option<String>,
    /// Credential for the TCP listener (`Proxy-Authorization: Basic <sandbox_id:credential>`).
    #[serde(default)]
    pub proxy_credential: Option<String>,
    #[serde(default)]
    pub policy: Policy,
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("sandbox_id", &self.sandbox_id)
            .field("thread_key", &self.thread_key)
            .field(
                "proxy_credential",
                &self.proxy_credential.as_ref().map(|_| "<redacted>"),
            )
            .field("policy", &self.policy)
            .finish()
    }
}

/// A registered sandbox, with the placeholders its environment gets.
pub struct Sandbox {
    pub config: SandboxConfig,
    /// Secret name → placeholder.
    pub placeholders: HashMap<String, String>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("sandbox_id", &self.config.sandbox_id)
            .finish_non_exhaustive()
    }
}

pub struct Registry {
    key: Vec<u8>,
    sandboxes: RwLock<HashMap<String, Arc<Sandbox>>>,
}

impl Registry {
    /// `key` makes placeholders unguessable; keep it stable for the proxy's lifetime (and
    /// across restarts, so running sandboxes keep working).
    pub fn new(key: Vec<u8>) -> Self {
        Registry {
            key,
            sandboxes: RwLock::new(HashMap::new()),
        }
    }

    /// Registers or replaces a sandbox; returns its placeholders (secret name → placeholder).
    pub fn register(&self, config: SandboxConfig) -> HashMap<String, String> {
        let placeholders: HashMap<String, String> = config
            .policy
            .secrets
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    placeholder(&self.key, &config.sandbox_id, &b.name),
                )
            })
            .collect();
        let sandbox = Arc::new(Sandbox {
            placeholders: placeholders.clone(),
            config,
        });
        self.sandboxes
            .write()
            .expect("registry lock")
            .insert(sandbox.config.sandbox_id.clone(), sandbox);
        placeholders
    }

    pub fn remove(&self, sandbox_id: &str) -> bool {
        self.sandboxes
            .write()
            .expect("registry lock")
            .remove(sandbox_id)
            .is_some()
    }

    pub fn get(&self, sandbox_id: &str) -> Option<Arc<Sandbox>> {
        self.sandboxes
            .read()
            .expect("registry lock")
            .get(sandbox_id)
            .cloned()
    }
}
