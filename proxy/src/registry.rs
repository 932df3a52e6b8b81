//! The sandboxes the proxy serves, each with its policy. Registering or updating a sandbox
//! swaps its whole state at once: a request sees the old policy or the new one, never a mix.
//!
//! Every state the server pushes carries a version (increasing across the deployment), so
//! pushes that arrive out of order, or from two server replicas, cannot roll a sandbox back:
//! an older version than the one held is ignored, and a removed sandbox leaves a tombstone
//! that keeps older pushes from bringing it back.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::credentials::{derive_secret, placeholder};
use centaur_protocol::egress::policy::Policy;

/// How long a removal is remembered.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    pub sandbox_id: String,
    #[serde(default)]
    pub thread_key: Option<String>,
    /// Credential for the TCP listener (`Proxy-Authorization: Basic <sandbox_id:credential>`);
    /// derived from the proxy's key when not given.
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
    pub version: u64,
    /// Secret name → placeholder.
    pub placeholders: HashMap<String, String>,
    /// What the sandbox presents on the TCP listener.
    pub proxy_credential: String,
    applied_at: Instant,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("sandbox_id", &self.config.sandbox_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What became of a pushed state.
#[derive(Debug)]
pub enum Applied {
    /// It is the sandbox's state now.
    Applied(Arc<Sandbox>),
    /// The registry already holds this version or a newer one; that one stays.
    Unchanged(Arc<Sandbox>),
    /// The sandbox was removed at `version`, which is not older than the push.
    Removed { version: u64 },
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, Arc<Sandbox>>,
    tombstones: HashMap<String, (u64, Instant)>,
}

pub struct Registry {
    key: Vec<u8>,
    state: RwLock<State>,
}

impl Registry {
    /// `key` makes placeholders and proxy credentials unguessable; keep it stable for the
    /// proxy's lifetime (and across restarts, so running sandboxes keep working).
    pub fn new(key: Vec<u8>) -> Self {
        Registry {
            key,
            state: RwLock::new(State::default()),
        }
    }

    /// Registers or replaces a sandbox unconditionally (static configuration, tests); returns
    /// its placeholders (secret name → placeholder).
    pub fn register(&self, config: SandboxConfig) -> HashMap<String, String> {
        let id = config.sandbox_id.clone();
        let sandbox = self.build(config, 0);
        let placeholders = sandbox.placeholders.clone();
        let mut state = self.state.write().expect("registry lock");
        state.tombstones.remove(&id);
        state.sandboxes.insert(id, sandbox);
        placeholders
    }

    /// Applies a pushed state unless the registry holds the same or a newer one.
    pub fn apply(&self, config: SandboxConfig, version: u64) -> Applied {
        let mut state = self.state.write().expect("registry lock");
        Self::apply_locked(&mut state, self.build(config, version))
    }

    fn apply_locked(state: &mut State, sandbox: Arc<Sandbox>) -> Applied {
        let id = &sandbox.config.sandbox_id;
        if let Some(current) = state.sandboxes.get(id)
            && current.version >= sandbox.version
        {
            return Applied::Unchanged(current.clone());
        }
        if let Some(&(version, _)) = state.tombstones.get(id)
            && version >= sandbox.version
        {
            return Applied::Removed { version };
        }
        state.tombstones.remove(id);
        state.sandboxes.insert(id.clone(), sandbox.clone());
        Applied::Applied(sandbox)
    }

    /// Removes a sandbox whose state is not newer than `version`; `false` if it was not there
    /// or a newer state has arrived since.
    pub fn remove_at(&self, sandbox_id: &str, version: u64) -> bool {
        let mut state = self.state.write().expect("registry lock");
        prune(&mut state.tombstones);
        if state
            .sandboxes
            .get(sandbox_id)
            .is_some_and(|s| s.version > version)
        {
            return false;
        }
        let tombstone = state
            .tombstones
            .entry(sandbox_id.to_owned())
            .or_insert((0, Instant::now()));
        *tombstone = (tombstone.0.max(version), Instant::now());
        state.sandboxes.remove(sandbox_id).is_some()
    }

    /// Removes a sandbox whatever its version.
    pub fn remove(&self, sandbox_id: &str) -> bool {
        self.remove_at(sandbox_id, u64::MAX)
    }

    /// Makes the registry match the server's full desired state as of version `as_of`:
    /// applies every entry, and removes sandboxes that are absent from it, unless they are
    /// newer than `as_of` or were applied within `grace` (a push that raced the server's
    /// snapshot). Returns what was applied and the ids removed.
    pub fn sync(
        &self,
        as_of: u64,
        entries: Vec<(SandboxConfig, u64)>,
        grace: Duration,
    ) -> (Vec<Applied>, Vec<String>) {
        let built: Vec<Arc<Sandbox>> = entries
            .into_iter()
            .map(|(config, version)| self.build(config, version))
            .collect();
        let mut state = self.state.write().expect("registry lock");
        prune(&mut state.tombstones);
        let wanted: std::collections::HashSet<String> =
            built.iter().map(|s| s.config.sandbox_id.clone()).collect();
        let applied = built
            .into_iter()
            .map(|sandbox| Self::apply_locked(&mut state, sandbox))
            .collect();
        let stale: Vec<String> = state
            .sandboxes
            .values()
            .filter(|s| {
                !wanted.contains(&s.config.sandbox_id)
                    && s.version <= as_of
                    && s.applied_at.elapsed() >= grace
            })
            .map(|s| s.config.sandbox_id.clone())
            .collect();
        for id in &stale {
            let removed = state.sandboxes.remove(id).expect("listed above");
            state
                .tombstones
                .insert(id.clone(), (removed.version, Instant::now()));
        }
        (applied, stale)
    }

    pub fn get(&self, sandbox_id: &str) -> Option<Arc<Sandbox>> {
        self.state
            .read()
            .expect("registry lock")
            .sandboxes
            .get(sandbox_id)
            .cloned()
    }

    /// Every registered sandbox.
    pub fn list(&self) -> Vec<Arc<Sandbox>> {
        let state = self.state.read().expect("registry lock");
        state.sandboxes.values().cloned().collect()
    }

    fn build(&self, config: SandboxConfig, version: u64) -> Arc<Sandbox> {
        let placeholders = config
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
        let proxy_credential = config
            .proxy_credential
            .clone()
            .unwrap_or_else(|| derive_secret(&self.key, "proxy-credential", &config.sandbox_id));
        Arc::new(Sandbox {
            config,
            version,
            placeholders,
            proxy_credential,
            applied_at: Instant::now(),
        })
    }
}

fn prune(tombstones: &mut HashMap<String, (u64, Instant)>) {
    tombstones.retain(|_, (_, at)| at.elapsed() < TOMBSTONE_TTL);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str, allow: &str) -> SandboxConfig {
        SandboxConfig {
            sandbox_id: id.into(),
            thread_key: None,
            proxy_credential: None,
            policy: serde_json::from_value(serde_json::json!({ "allow": [allow] })).unwrap(),
        }
    }

    fn allows(registry: &Registry, id: &str, host: &str) -> bool {
        registry
            .get(id)
            .is_some_and(|s| s.config.policy.allow.iter().any(|p| p.matches(host, 443)))
    }

    #[test]
    fn older_pushes_never_win() {
        let registry = Registry::new(b"k".repeat(32));
        assert!(matches!(
            registry.apply(config("a", "one.example"), 5),
            Applied::Applied(_)
        ));
        assert!(
            matches!(registry.apply(config("a", "old.example"), 4), Applied::Unchanged(s) if s.version == 5)
        );
        assert!(matches!(
            registry.apply(config("a", "same.example"), 5),
            Applied::Unchanged(_)
        ));
        assert!(allows(&registry, "a", "one.example"));
        assert!(matches!(
            registry.apply(config("a", "two.example"), 6),
            Applied::Applied(_)
        ));
        assert!(allows(&registry, "a", "two.example"));

        // A removal older than the state held does not remove it.
        assert!(!registry.remove_at("a", 5));
        assert!(registry.get("a").is_some());
        assert!(registry.remove_at("a", 7));
        // A delayed push from before the removal cannot bring it back; a newer one can.
        assert!(matches!(
            registry.apply(config("a", "two.example"), 6),
            Applied::Removed { version: 7 }
        ));
        assert!(registry.get("a").is_none());
        assert!(matches!(
            registry.apply(config("a", "three.example"), 8),
            Applied::Applied(_)
        ));
    }

    #[test]
    fn sync_removes_what_the_server_no_longer_wants_but_not_racing_pushes() {
        let registry = Registry::new(b"k".repeat(32));
        registry.apply(config("old", "a.example"), 1);
        registry.apply(config("kept", "a.example"), 2);
        registry.apply(config("newer", "a.example"), 9);
        let (applied, removed) = registry.sync(
            5,
            vec![
                (config("kept", "b.example"), 3),
                (config("fresh", "c.example"), 4),
            ],
            Duration::ZERO,
        );
        assert_eq!(applied.len(), 2);
        assert_eq!(removed, vec!["old".to_owned()]);
        assert!(allows(&registry, "kept", "b.example"));
        assert!(registry.get("fresh").is_some());
        assert!(registry.get("newer").is_some(), "newer than the snapshot");
        // Within the grace period a sandbox absent from the snapshot stays.
        let (_, removed) = registry.sync(10, vec![], Duration::from_secs(60));
        assert!(removed.is_empty());
    }

    #[test]
    fn proxy_credentials_are_derived_per_sandbox_unless_given() {
        let registry = Registry::new(b"k".repeat(32));
        registry.apply(config("a", "x.example"), 1);
        registry.apply(config("b", "x.example"), 1);
        let (a, b) = (registry.get("a").unwrap(), registry.get("b").unwrap());
        assert_ne!(a.proxy_credential, b.proxy_credential);
        assert_eq!(a.proxy_credential.len(), 64);
        let other_key = Registry::new(b"j".repeat(32));
        other_key.apply(config("a", "x.example"), 1);
        assert_ne!(
            other_key.get("a").unwrap().proxy_credential,
            a.proxy_credential
        );
        let mut given = config("c", "x.example");
        given.proxy_credential = Some("chosen".into());
        registry.apply(given, 1);
        assert_eq!(registry.get("c").unwrap().proxy_credential, "chosen");
    }
}
