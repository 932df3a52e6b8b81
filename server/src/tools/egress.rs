//! A tool's identity and policy at the egress proxy: the proxy knows each tool as the sandbox
//! `tool-<name>`, allowed the tool's declared hosts (and the operator's additions,
//! `CENTAUR_TOOL_EGRESS`), with its secrets bound as for a sandbox. The worker reaches the
//! proxy through that identity's socket, and holds placeholders, not values (except secrets
//! declared `reveal`, which the proxy reveals only when the tool's policy lists them).
//!
//! A tool uses only the secrets the operator granted it: `CENTAUR_TOOL_SECRETS`, or a binding
//! (or `reveal`) in its `CENTAUR_TOOL_EGRESS` entry. A tool declaring another is broken
//! ([`check`]), and the policy pushed for it never holds one ([`merge`]), so a plugin cannot
//! help itself to the model keys or another tool's token.
//!
//! The policy in force is recorded in `tool_egress` (with what the manifest declared) before it
//! is pushed, versioned from the sandboxes' sequence, so the periodic sync
//! ([`crate::egress::policy::sync`]) brings a restarted proxy back, and merges the operator's
//! file again when it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use centaur_protocol::egress::control::{DesiredSandbox, SyncEntry};
use centaur_protocol::egress::{HostPattern, HostPatternError, Policy, PolicyError, SecretBinding};
use centaur_protocol::tools::{Manifest, ManifestSecret};
use sqlx::types::Json;

use super::discovery::{RefusedVariable, refused_variable};
use super::settings::SecretGrants;
use crate::app::AppState;
use crate::egress::Egress;
use crate::egress::proxy_client::ProxyClientError;

/// What a worker needs to reach the proxy as its tool.
#[derive(Clone, Default)]
pub struct WorkerEgress {
    /// The proxy's Unix socket for this tool (mounted into the jail).
    pub proxy_socket: Option<PathBuf>,
    /// The proxy's CA certificate (`CENTAUR_PROXY_CA`), which the worker must trust besides the
    /// system's roots (the jail writes the bundle of both).
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

/// Why a worker has no network, for the log line and the error of a call that reached out
/// without a proxy.
pub const NO_PROXY: &str = "no egress proxy is configured (set CENTAUR_PROXY_CONTROL_URL): the tool's worker has no network";

/// Why a manifest's egress (its `hosts` and `secrets`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestEgressError {
    #[error("hosts: {0}")]
    Host(#[source] HostPatternError),
    #[error("secret `{secret}`: hosts: {source}")]
    SecretHost {
        secret: String,
        source: HostPatternError,
    },
    #[error(
        "secret `{0}`: a secret's name is the worker's environment variable: letters, digits and `_`, not starting with a digit"
    )]
    SecretName(String),
    #[error(
        "secret `{0}`: the jail sets this variable itself or it changes how programs start (PATH, HOME, LANG, LC_*, LD_*, PYTHON*, the proxy and CA variables, CENTAUR_*); pick another name"
    )]
    ReservedName(String),
    #[error(
        "secret `{0}`: `reveal = true` gives the worker the value, so it takes no hosts, headers, query_param or format"
    )]
    RevealWithBinding(String),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error(
        "the tool's name must be letters, digits, `-` or `_` to be the egress proxy's principal `tool-{0}` (at most 59 characters)"
    )]
    ToolName(String),
}

/// Why a tool's egress could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ToolEgressError {
    /// The manifest asks for what cannot work: the tool is broken until it is fixed.
    #[error("[tool.centaur] {0}")]
    Manifest(#[from] ManifestEgressError),
    /// The manifest declares secrets the operator did not grant the tool.
    #[error(
        "the tool's {} not granted to it: grant {} with CENTAUR_TOOL_SECRETS={tool}={}",
        secret_list(secrets), if secrets.len() == 1 { "it" } else { "them" }, secrets.join(",")
    )]
    NotGranted { tool: String, secrets: Vec<String> },
    /// The proxy refused the policy (a secret it has no source for): a configuration to fix.
    #[error("the egress proxy refused the tool's policy: {0}")]
    Refused(String),
    /// The proxy could not be asked (away, or answering oddly): worth trying again.
    #[error("{0}")]
    Proxy(#[source] ProxyClientError),
    #[error("the tool's secret `{name}` (reveal) cannot be read: {source}")]
    Reveal {
        name: String,
        #[source]
        source: ProxyClientError,
    },
    #[error("cannot record the tool's egress policy: {0}")]
    Database(#[from] sqlx::Error),
}

impl ToolEgressError {
    /// Whether the same preparation may work later without a change to the tool or the
    /// configuration (the proxy or the database was away, a secret's source could not be
    /// read). The others break the tool until it or the configuration changes.
    pub fn is_transient(&self) -> bool {
        match self {
            ToolEgressError::Manifest(_)
            | ToolEgressError::NotGranted { .. }
            | ToolEgressError::Refused(_) => false,
            // Refused outright (not allowed, no such secret), not merely unreadable now.
            ToolEgressError::Reveal {
                source: ProxyClientError::Refused { status, .. },
                ..
            } => !(400..500).contains(status),
            ToolEgressError::Proxy(_)
            | ToolEgressError::Reveal { .. }
            | ToolEgressError::Database(_) => true,
        }
    }
}

/// "secret `A` is" or "secrets `A`, `B` are".
fn secret_list(secrets: &[String]) -> String {
    let names: Vec<String> = secrets.iter().map(|s| format!("`{s}`")).collect();
    match names.len() {
        1 => format!("secret {} is", names.join("")),
        _ => format!("secrets {} are", names.join(", ")),
    }
}

/// What the operator granted one tool: `CENTAUR_TOOL_SECRETS` and its `CENTAUR_TOOL_EGRESS`
/// entry (a secret that entry binds may be bound; one it lists in `reveal` may be revealed).
pub struct Grants<'a> {
    pub tool: &'a str,
    pub settings: &'a SecretGrants,
    pub operator: Option<&'a Policy>,
}

impl Grants<'_> {
    /// `tool`'s grants as the configuration says now.
    fn of<'a>(state: &'a AppState, tool: &'a str, operator: Option<&'a Policy>) -> Grants<'a> {
        Grants {
            tool,
            settings: &state.config.tools.secrets,
            operator,
        }
    }

    /// Whether the tool may have `secret` bound to hosts.
    pub fn binds(&self, secret: &str) -> bool {
        self.settings.allows(self.tool, secret)
            || self
                .operator
                .is_some_and(|p| p.secrets.iter().any(|b| b.name == secret))
    }

    /// Whether the tool may have `secret`'s value.
    pub fn reveals(&self, secret: &str) -> bool {
        self.settings.allows(self.tool, secret)
            || self
                .operator
                .is_some_and(|p| p.reveal.iter().any(|r| r == secret))
    }

    /// The secrets the manifest declares that are not granted, by name.
    pub fn missing(&self, manifest: &Manifest) -> Vec<String> {
        manifest
            .secrets
            .iter()
            .filter(|(name, secret)| {
                if secret.reveal {
                    !self.reveals(name)
                } else {
                    !self.binds(name)
                }
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Why the tool cannot have egress as it asks, if it cannot: its manifest's egress is invalid,
/// or it declares secrets the operator did not grant it. Returns the declared policy.
pub fn check(state: &AppState, tool: &str, manifest: &Manifest) -> Result<Policy, ToolEgressError> {
    let declared = declared_policy(tool, manifest)?;
    let operator = state.egress.as_ref().and_then(|e| e.tool_policy(tool));
    let missing = Grants::of(state, tool, operator.as_ref()).missing(manifest);
    if !missing.is_empty() {
        return Err(ToolEgressError::NotGranted {
            tool: tool.to_owned(),
            secrets: missing,
        });
    }
    Ok(declared)
}

/// What the operator grants `tool` that its manifest asks for, in words ("secret `X`", "its
/// `CENTAUR_TOOL_EGRESS` entry"): grants follow the tool's name, whichever folder the tool of
/// that name comes from.
pub fn grants_received(state: &AppState, tool: &str, manifest: &Manifest) -> Vec<String> {
    let operator = state.egress.as_ref().and_then(|e| e.tool_policy(tool));
    let grants = Grants::of(state, tool, operator.as_ref());
    let missing = grants.missing(manifest);
    let mut received: Vec<String> = manifest
        .secrets
        .keys()
        .filter(|name| !missing.contains(name))
        .map(|name| format!("secret `{name}`"))
        .collect();
    if operator.is_some() {
        received.push("its CENTAUR_TOOL_EGRESS entry".into());
    }
    received
}

/// The names of the secrets a worker of `tool` started now would hold (a placeholder for each
/// binding of its policy in force, the value of each declared `reveal` granted to it): nothing
/// without a proxy. A running worker holding one not in this set was granted more than the
/// operator grants now.
pub fn secrets_in_force(state: &AppState, tool: &str, manifest: &Manifest) -> BTreeSet<String> {
    let Some(egress) = &state.egress else {
        return BTreeSet::new();
    };
    let Ok(declared) = declared_policy(tool, manifest) else {
        return BTreeSet::new();
    };
    let operator = egress.tool_policy(tool);
    let policy = merge(&declared, &Grants::of(state, tool, operator.as_ref()));
    let revealed = manifest
        .secrets
        .iter()
        .filter(|(name, secret)| secret.reveal && policy.reveal.contains(name))
        .map(|(name, _)| name.clone());
    policy
        .secrets
        .iter()
        .map(|b| b.name.clone())
        .chain(revealed)
        .collect()
}

/// How long a tool waits before asking the proxy again after it could not be reached: from 1 s,
/// doubling, at most 30 s; a success resets it.
#[derive(Default)]
pub struct Backoff {
    failed: Mutex<Option<Failed>>,
}

struct Failed {
    until: Instant,
    delay: Duration,
    reason: String,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Backoff {
    /// Why not to try now (the last failure, and when the next try is), if it is too soon.
    pub fn wait(&self) -> Option<String> {
        let failed = self.failed.lock().expect("backoff lock");
        let failed = failed.as_ref()?;
        let left = failed.until.checked_duration_since(Instant::now())?;
        Some(format!(
            "{}; trying again in {} s",
            failed.reason,
            left.as_secs() + 1
        ))
    }

    /// A try failed: the next waits longer.
    pub fn failed(&self, reason: String) {
        let mut failed = self.failed.lock().expect("backoff lock");
        let delay = failed
            .as_ref()
            .map_or(FIRST_BACKOFF, |f| (f.delay * 2).min(MAX_BACKOFF));
        *failed = Some(Failed {
            until: Instant::now() + delay,
            delay,
            reason,
        });
    }

    pub fn succeeded(&self) {
        *self.failed.lock().expect("backoff lock") = None;
    }
}

/// The tool's principal at the proxy.
pub fn principal(tool: &str) -> String {
    format!("tool-{tool}")
}

/// A proxy sandbox id is 1 to 64 letters, digits, `-` or `_`.
fn check_tool_name(tool: &str) -> Result<(), ManifestEgressError> {
    let fits = !tool.is_empty()
        && principal(tool).len() <= 64
        && tool
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        Ok(())
    } else {
        Err(ManifestEgressError::ToolName(tool.to_owned()))
    }
}

/// A secret's name is the worker's variable: checked as every such name is
/// ([`refused_variable`]).
fn check_secret_name(name: &str) -> Result<(), ManifestEgressError> {
    match refused_variable(name) {
        None => Ok(()),
        Some(RefusedVariable::NotAName) => Err(ManifestEgressError::SecretName(name.to_owned())),
        Some(RefusedVariable::JailSets) => Err(ManifestEgressError::ReservedName(name.to_owned())),
    }
}

fn push_unique(list: &mut Vec<HostPattern>, pattern: &HostPattern) {
    if !list.contains(pattern) {
        list.push(pattern.clone());
    }
}

/// The policy the manifest asks for: `allow` = its `hosts` and the hosts of its secret
/// bindings, `secrets` = its bindings, `reveal` = the secrets it declares `reveal`. Checked as a
/// thread's policy is.
pub fn declared_policy(tool: &str, manifest: &Manifest) -> Result<Policy, ManifestEgressError> {
    check_tool_name(tool)?;
    let mut policy = Policy::default();
    for host in &manifest.hosts {
        let pattern: HostPattern = host.parse().map_err(ManifestEgressError::Host)?;
        push_unique(&mut policy.allow, &pattern);
    }
    for (name, secret) in &manifest.secrets {
        check_secret_name(name)?;
        let ManifestSecret {
            hosts,
            headers,
            query_param,
            format,
            reveal,
        } = secret;
        if *reveal {
            if !hosts.is_empty() || !headers.is_empty() || query_param.is_some() || format.is_some()
            {
                return Err(ManifestEgressError::RevealWithBinding(name.clone()));
            }
            policy.reveal.push(name.clone());
            continue;
        }
        let hosts = hosts
            .iter()
            .map(|h| {
                h.parse::<HostPattern>()
                    .map_err(|source| ManifestEgressError::SecretHost {
                        secret: name.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        policy.secrets.push(SecretBinding {
            name: name.clone(),
            hosts,
            headers: headers.clone(),
            query_param: query_param.clone(),
            format: format.clone(),
        });
    }
    policy.validate(|_| true)?;
    Ok(with_binding_hosts(policy))
}

/// Every host a secret is bound to is allowed.
fn with_binding_hosts(mut policy: Policy) -> Policy {
    let bound: Vec<HostPattern> = policy
        .secrets
        .iter()
        .flat_map(|b| b.hosts.iter().cloned())
        .collect();
    for pattern in &bound {
        push_unique(&mut policy.allow, pattern);
    }
    policy
}

/// The declared policy with the operator's entry for the tool: its lists are added, and a
/// binding there replaces the declared one of the same name. A declared secret the operator
/// did not grant (`grants`) is left out. Both are valid policies, so the result is one too.
pub fn merge(declared: &Policy, grants: &Grants<'_>) -> Policy {
    let mut merged = declared.clone();
    merged.secrets.retain(|b| grants.binds(&b.name));
    merged.reveal.retain(|name| grants.reveals(name));
    let Some(operator) = grants.operator else {
        return merged;
    };
    for (into, from) in [
        (&mut merged.allow, &operator.allow),
        (&mut merged.deny, &operator.deny),
        (&mut merged.intercept, &operator.intercept),
        (&mut merged.allow_private, &operator.allow_private),
    ] {
        for pattern in from {
            push_unique(into, pattern);
        }
    }
    for binding in &operator.secrets {
        match merged.secrets.iter_mut().find(|b| b.name == binding.name) {
            Some(declared) => *declared = binding.clone(),
            None => merged.secrets.push(binding.clone()),
        }
    }
    for name in &operator.reveal {
        if !merged.reveal.contains(name) {
            merged.reveal.push(name.clone());
        }
    }
    with_binding_hosts(merged)
}

/// Registers (or refreshes) the tool's principal at the proxy and returns what its worker
/// needs. Without a proxy, a worker gets no egress (`WorkerEgress::default()`).
pub async fn prepare(
    state: &AppState,
    tool: &str,
    manifest: &Manifest,
) -> Result<WorkerEgress, ToolEgressError> {
    let declared = check(state, tool, manifest)?;
    let Some(egress) = &state.egress else {
        tracing::info!(tool, "{NO_PROXY}");
        return Ok(WorkerEgress::default());
    };
    let operator = egress.tool_policy(tool);
    let policy = merge(&declared, &Grants::of(state, tool, operator.as_ref()));
    let principal = principal(tool);
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO tool_egress (tool, declared, policy, version) \
         VALUES ($1, $2, $3, nextval('egress_versions')) \
         ON CONFLICT (tool) DO UPDATE SET declared = EXCLUDED.declared, \
           policy = EXCLUDED.policy, version = EXCLUDED.version, updated_at = now() \
         RETURNING version",
    )
    .bind(tool)
    .bind(Json(&declared))
    .bind(Json(&policy))
    .fetch_one(&state.pool)
    .await?;
    let desired = DesiredSandbox {
        version: version as u64,
        thread_key: None,
        policy,
    };
    let applied = match egress.client().apply(&principal, &desired).await {
        Ok(applied) => applied,
        Err(ProxyClientError::Refused {
            status: 400,
            message,
            ..
        }) => {
            // Nothing for the sync to push again and again: the tool is broken until its
            // manifest or the proxy's secrets change.
            remove(state, egress, tool, version).await;
            return Err(ToolEgressError::Refused(message));
        }
        // Recorded: the sync pushes it when the proxy is back.
        Err(error) => return Err(ToolEgressError::Proxy(error)),
    };
    if applied.socket.is_none() {
        tracing::warn!(
            tool,
            "the egress proxy serves no Unix sockets (give it a socket folder); the tool's worker has no network"
        );
    }
    let mut secrets: BTreeMap<String, String> = applied.placeholders.into_iter().collect();
    for (name, _) in manifest.secrets.iter().filter(|(_, s)| s.reveal) {
        let value = egress
            .client()
            .reveal(name, &principal)
            .await
            .map_err(|source| ToolEgressError::Reveal {
                name: name.clone(),
                source,
            })?;
        secrets.insert(name.clone(), value);
    }
    // The jail makes the worker's bundle of the system's roots and this CA.
    let ca_file = state
        .config
        .proxy_ca
        .as_ref()
        .map(|ca| std::path::absolute(ca).unwrap_or_else(|_| ca.clone()));
    tracing::debug!(tool, version, secrets = ?secrets.keys().collect::<Vec<_>>(), "tool egress prepared");
    Ok(WorkerEgress {
        proxy_socket: applied.socket,
        ca_file,
        secrets,
    })
}

/// The hosts the tool may reach: declared, from its secret bindings, and the operator's.
pub fn hosts(state: &AppState, tool: &str, manifest: &Manifest) -> Vec<String> {
    let Ok(declared) = declared_policy(tool, manifest) else {
        // A broken tool reaches nothing; show what it asked for.
        return manifest.hosts.clone();
    };
    let operator = state.egress.as_ref().and_then(|e| e.tool_policy(tool));
    merge(&declared, &Grants::of(state, tool, operator.as_ref()))
        .allow
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The tool is gone from its folders: its row is deleted and the proxy told (a failed push is
/// repaired by the next sync, which no longer names it). Only the version read here is
/// deleted, and only if the tool is still gone from this replica then: a tool added again
/// meanwhile keeps the row its new worker writes. Says whether the database could be asked
/// (the row is gone, or is the tool's again).
pub async fn forget(state: &AppState, tool: &str) -> bool {
    let Some(egress) = &state.egress else {
        return true;
    };
    let version: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT version FROM tool_egress WHERE tool = $1")
            .bind(tool)
            .fetch_optional(&state.pool)
            .await;
    let version = match version {
        Ok(Some(version)) => version,
        Ok(None) => return true,
        Err(error) => {
            tracing::warn!(tool, %error, "could not read a tool's egress row");
            return false;
        }
    };
    if state.tools.knows(tool) {
        return true;
    }
    remove(state, egress, tool, version).await
}

/// At the first complete look through the folders (once the database is migrated): the rows
/// of tools this replica's `TOOL_DIRS` do not have (removed while the server was down) are
/// forgotten, so their principals are not synced forever. Replicas share `TOOL_DIRS`: a tool
/// only another replica has would lose its row here (its next worker writes it again). Says
/// whether every row could be looked at; the caller tries again at its next look if not.
pub async fn forget_absent(state: &AppState, present: Vec<String>) -> bool {
    if state.egress.is_none() {
        return true;
    }
    let absent: Result<Vec<String>, _> =
        sqlx::query_scalar("SELECT tool FROM tool_egress WHERE NOT (tool = ANY($1))")
            .bind(&present)
            .fetch_all(&state.pool)
            .await;
    match absent {
        Ok(absent) => {
            let mut done = true;
            for tool in absent {
                tracing::info!(tool = %tool, "a tool with an egress policy is no longer in TOOL_DIRS; its principal is removed");
                done &= forget(state, &tool).await;
            }
            done
        }
        Err(error) => {
            tracing::warn!(%error, "could not list the tools' egress rows; trying again at the next look through the folders");
            false
        }
    }
}

/// Deletes the tool's row if it is still at `version`, and removes the principal from the
/// proxy with a newer version. Says whether the database answered (a proxy that did not is
/// brought round by the next sync).
async fn remove(state: &AppState, egress: &Egress, tool: &str, version: i64) -> bool {
    let removed: Result<Option<i64>, _> = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM tool_egress WHERE tool = $1 AND version = $2 RETURNING 1) \
         SELECT nextval('egress_versions') FROM gone",
    )
    .bind(tool)
    .bind(version)
    .fetch_optional(&state.pool)
    .await;
    let version = match removed {
        Ok(Some(version)) => version,
        // Written again meanwhile: that version stays.
        Ok(None) => return true,
        Err(error) => {
            tracing::warn!(tool, %error, "could not remove a tool's egress row");
            return false;
        }
    };
    if let Err(error) = egress
        .client()
        .remove(&principal(tool), version as u64)
        .await
    {
        tracing::warn!(tool, %error, "could not remove a tool from the egress proxy; the next sync will");
    }
    true
}

#[derive(sqlx::FromRow)]
struct ToolRow {
    tool: String,
    declared: Json<serde_json::Value>,
    policy: Json<serde_json::Value>,
    version: i64,
}

/// The tools' principals for a full sync. A tool whose merged policy changed since it was
/// pushed (the operator's file changed) gets a new version first.
pub(crate) async fn sync_entries(
    state: &AppState,
    egress: &Egress,
) -> Result<Vec<SyncEntry>, sqlx::Error> {
    let rows: Vec<ToolRow> =
        sqlx::query_as("SELECT tool, declared, policy, version FROM tool_egress")
            .fetch_all(&state.pool)
            .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let (declared, stored) = match (
            serde_json::from_value::<Policy>(row.declared.0),
            serde_json::from_value::<Policy>(row.policy.0),
        ) {
            (Ok(declared), Ok(stored)) => (declared, stored),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(tool = %row.tool, %error, "a stored tool egress policy is unreadable; the tool gets none");
                continue;
            }
        };
        let operator = egress.tool_policy(&row.tool);
        let policy = merge(&declared, &Grants::of(state, &row.tool, operator.as_ref()));
        let mut version = row.version;
        if policy != stored {
            let bumped: Option<i64> = sqlx::query_scalar(
                "UPDATE tool_egress SET policy = $2, version = nextval('egress_versions'), \
                   updated_at = now() WHERE tool = $1 AND version = $3 RETURNING version",
            )
            .bind(&row.tool)
            .bind(Json(&policy))
            .bind(row.version)
            .fetch_optional(&state.pool)
            .await?;
            match bumped {
                Some(bumped) => {
                    tracing::info!(tool = %row.tool, "the operator's egress for the tool changed; pushing it");
                    version = bumped;
                }
                // Written meanwhile (a worker started): newer than this sync, so the proxy
                // keeps it.
                None => continue,
            }
        }
        entries.push(SyncEntry {
            sandbox_id: principal(&row.tool),
            desired: DesiredSandbox {
                version: version as u64,
                thread_key: None,
                policy,
            },
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;
    use serde_json::json;

    fn manifest(value: serde_json::Value) -> Manifest {
        serde_json::from_value(value).unwrap()
    }

    fn policy(value: serde_json::Value) -> Policy {
        serde_json::from_value(value).unwrap()
    }

    fn github() -> Manifest {
        manifest(json!({
            "hosts": ["api.github.com"],
            "secrets": {
                "GITHUB_TOKEN": {"hosts": ["api.github.com", "uploads.github.com"],
                                 "headers": ["authorization"], "format": "Bearer {value}"},
                "DATABASE_URL": {"reveal": true},
            }
        }))
    }

    fn grants(text: &str) -> SecretGrants {
        SecretGrants::parse(text).unwrap()
    }

    /// Allowed: the declared hosts and every bound host; bound: the bindings; revealed: the
    /// secret declared `reveal`.
    #[test]
    fn the_declared_policy_allows_the_hosts_and_the_bound_hosts() {
        let declared = declared_policy("github", &github()).unwrap();
        assert_eq!(
            declared,
            policy(json!({
                "allow": ["api.github.com", "uploads.github.com"],
                "secrets": [{"name": "GITHUB_TOKEN", "hosts": ["api.github.com", "uploads.github.com"],
                             "headers": ["authorization"], "format": "Bearer {value}"}],
                "reveal": ["DATABASE_URL"],
            }))
        );
    }

    /// A declared secret is the tool's only if the operator granted it: by name for the tool,
    /// for every tool (`*`), or by the tool's `CENTAUR_TOOL_EGRESS` entry (a binding grants
    /// binding, `reveal` grants revealing). The policy in force leaves out the rest.
    #[test]
    fn only_granted_secrets_are_the_tools() {
        let manifest = github();
        let declared = declared_policy("github", &manifest).unwrap();
        let none = grants("");
        let nothing = Grants {
            tool: "github",
            settings: &none,
            operator: None,
        };
        assert_eq!(nothing.missing(&manifest), ["DATABASE_URL", "GITHUB_TOKEN"]);
        let merged = merge(&declared, &nothing);
        assert!(
            merged.secrets.is_empty() && merged.reveal.is_empty(),
            "{merged:?}"
        );

        let others = grants("slack=GITHUB_TOKEN;*=DATABASE_URL");
        let partly = Grants {
            tool: "github",
            settings: &others,
            operator: None,
        };
        assert_eq!(partly.missing(&manifest), ["GITHUB_TOKEN"]);
        assert_eq!(merge(&declared, &partly).reveal, ["DATABASE_URL"]);

        let named = grants("github=GITHUB_TOKEN,DATABASE_URL");
        let all = Grants {
            tool: "github",
            settings: &named,
            operator: None,
        };
        assert!(all.missing(&manifest).is_empty());
        assert_eq!(merge(&declared, &all), declared);

        // The operator's entry: a binding of GITHUB_TOKEN grants it; a binding of the revealed
        // secret does not grant its value, its `reveal` does.
        let operator = policy(json!({
            "secrets": [
                {"name": "GITHUB_TOKEN", "hosts": ["ghe.example.com"], "headers": ["authorization"]},
                {"name": "DATABASE_URL", "hosts": ["db.example.com"], "headers": ["x"]},
            ],
        }));
        let by_file = Grants {
            tool: "github",
            settings: &none,
            operator: Some(&operator),
        };
        assert_eq!(by_file.missing(&manifest), ["DATABASE_URL"]);
        let revealing = policy(json!({"reveal": ["DATABASE_URL"]}));
        let by_reveal = Grants {
            tool: "github",
            settings: &none,
            operator: Some(&revealing),
        };
        assert_eq!(by_reveal.missing(&manifest), ["GITHUB_TOKEN"]);
        assert_eq!(merge(&declared, &by_reveal).reveal, ["DATABASE_URL"]);
    }

    /// The refusal names the grant to add.
    #[test]
    fn an_ungranted_secret_names_the_grant_to_add() {
        let one = ToolEgressError::NotGranted {
            tool: "github".into(),
            secrets: vec!["GITHUB_TOKEN".into()],
        };
        assert_eq!(
            one.to_string(),
            "the tool's secret `GITHUB_TOKEN` is not granted to it: grant it with CENTAUR_TOOL_SECRETS=github=GITHUB_TOKEN"
        );
        let two = ToolEgressError::NotGranted {
            tool: "slack".into(),
            secrets: vec!["A".into(), "B".into()],
        };
        assert!(
            two.to_string()
                .ends_with("secrets `A`, `B` are not granted to it: grant them with CENTAUR_TOOL_SECRETS=slack=A,B"),
            "{two}"
        );
        assert!(!one.is_transient());
    }

    /// After a failure the next try waits, longer each time; a success clears it.
    #[test]
    fn the_backoff_waits_after_a_failure() {
        let backoff = Backoff::default();
        assert_eq!(backoff.wait(), None);
        backoff.failed("the egress proxy is unreachable".into());
        let wait = backoff.wait().unwrap();
        assert!(
            wait.starts_with("the egress proxy is unreachable; trying again in"),
            "{wait}"
        );
        backoff.failed("again".into());
        let delay = backoff.failed.lock().unwrap().as_ref().unwrap().delay;
        assert_eq!(delay, FIRST_BACKOFF * 2);
        backoff.succeeded();
        assert_eq!(backoff.wait(), None);
    }

    /// The operator's lists are added (once each); a binding of the same name replaces the
    /// declared one, and its hosts are allowed; another binding is added.
    #[test]
    fn the_operators_entry_adds_lists_and_replaces_bindings_by_name() {
        let declared = declared_policy("github", &github()).unwrap();
        let operator = policy(json!({
            "allow": ["api.github.com", "ghe.example.com"],
            "deny": ["uploads.github.com"],
            "allow_private": ["127.0.0.1"],
            "secrets": [
                {"name": "GITHUB_TOKEN", "hosts": ["127.0.0.1:8080"], "headers": ["authorization"]},
                {"name": "EXTRA", "hosts": ["extra.example.com"], "query_param": "key"},
            ],
        }));
        let granted = grants("github=DATABASE_URL");
        let merged = merge(
            &declared,
            &Grants {
                tool: "github",
                settings: &granted,
                operator: Some(&operator),
            },
        );
        assert_eq!(
            merged,
            policy(json!({
                "allow": ["api.github.com", "uploads.github.com", "ghe.example.com",
                          "127.0.0.1:8080", "extra.example.com"],
                "deny": ["uploads.github.com"],
                "allow_private": ["127.0.0.1"],
                "secrets": [
                    {"name": "GITHUB_TOKEN", "hosts": ["127.0.0.1:8080"], "headers": ["authorization"]},
                    {"name": "EXTRA", "hosts": ["extra.example.com"], "query_param": "key"},
                ],
                "reveal": ["DATABASE_URL"],
            }))
        );
        merged.validate(|_| true).unwrap();
    }

    /// Each way a manifest's egress cannot work says which part to fix.
    #[test]
    fn a_manifest_that_cannot_work_says_why() {
        let cases = [
            (json!({"hosts": ["not a host!"]}), "hosts: `not a host!`"),
            (
                json!({"secrets": {"T": {"hosts": ["*.*.x"], "headers": ["a"]}}}),
                "secret `T`: hosts",
            ),
            (
                json!({"secrets": {"T": {"hosts": ["x.com"]}}}),
                "give `headers` or `query_param`",
            ),
            (
                json!({"secrets": {"T": {"headers": ["authorization"]}}}),
                "bound to no host",
            ),
            (
                json!({"secrets": {"T": {"hosts": ["x.com"], "headers": ["a"], "format": "Bearer"}}}),
                "{value}",
            ),
            (
                json!({"secrets": {"T": {"reveal": true, "hosts": ["x.com"]}}}),
                "takes no hosts",
            ),
            (
                json!({"secrets": {"1BAD": {"reveal": true}}}),
                "letters, digits and `_`",
            ),
            (
                json!({"secrets": {"BAD-NAME": {"reveal": true}}}),
                "letters, digits and `_`",
            ),
            (
                json!({"secrets": {"PATH": {"reveal": true}}}),
                "the jail sets this variable",
            ),
            (
                json!({"secrets": {"CENTAUR_PROXY_SOCKET": {"reveal": true}}}),
                "the jail sets this variable",
            ),
            // Given to bubblewrap on the host as its environment: never a secret's name.
            (
                json!({"secrets": {"LD_PRELOAD": {"reveal": true}}}),
                "the jail sets this variable",
            ),
            (
                json!({"secrets": {"PYTHONSTARTUP": {"reveal": true}}}),
                "the jail sets this variable",
            ),
            (
                json!({"secrets": {"lc_all": {"hosts": ["x.com"], "headers": ["a"]}}}),
                "the jail sets this variable",
            ),
        ];
        for (value, expected) in cases {
            let error = declared_policy("t", &manifest(value.clone()))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{value}: {error}");
        }
        let error = declared_policy("a.b", &manifest(json!({})))
            .unwrap_err()
            .to_string();
        assert!(error.contains("tool-a.b"), "{error}");
        assert!(declared_policy(&"x".repeat(60), &manifest(json!({}))).is_err());
        assert!(declared_policy(&"x".repeat(59), &manifest(json!({}))).is_ok());
    }
}
