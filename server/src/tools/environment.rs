//! A tool's Python environment: a virtual environment built by `uv` from the tool's
//! `pyproject.toml`, kept under the data folder and rebuilt when its dependencies change.
//!
//! `<data>/tools/envs/<name>-<hash>`, the hash of the `pyproject.toml` and the Python setting:
//! `uv venv --python <python> <env>`, then, when `[project].dependencies` is not empty,
//! `uv pip install --no-build --python <env>/bin/python -r <tool>/pyproject.toml`. A marker file
//! written last says the environment is complete; an environment without it (a build cut
//! short) is built again.
//!
//! uv runs outside the jail, on the server's host, so it runs nothing of the tool's: wheels
//! only (`--no-build`: no package's build script runs), with an environment of its own
//! ([`uv_environment`]: `PATH`, `HOME`, uv's and the index's settings, the proxy and CA
//! variables; none of the server's secrets), and within [`BUILD_TIMEOUT`], past which it is
//! killed and the tool is broken saying so.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::discovery::Pyproject;

/// The file written into an environment once it is complete.
const MARKER: &str = ".centaur-complete";

/// Environment builds running at once, at most.
const PARALLEL_BUILDS: usize = 2;

/// How many of uv's last stderr lines an error quotes.
const STDERR_LINES: usize = 5;

/// How long one step of a build (`uv venv`, `uv pip install`) may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// The server's variables uv is given, by name: where it finds programs, its home (its cache and
/// Pythons), the XDG folders, and how it reaches the index.
const UV_VARIABLES: [&str; 17] = [
    "PATH",
    "HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_CONFIG_HOME",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// Why a tool's environment could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("uv is not installed: pip install --user uv, or set CENTAUR_UV")]
    NoUv,
    #[error("{step} failed: {stderr}")]
    Uv { step: &'static str, stderr: String },
    #[error(
        "{step} did not finish within {} s and was stopped (is the package index reachable from the server?)",
        timeout.as_secs()
    )]
    Timeout {
        step: &'static str,
        timeout: Duration,
    },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Builds tools' environments, two at a time, one build per environment.
pub struct Environments {
    root: PathBuf,
    uv: Option<PathBuf>,
    python: String,
    /// How long one step of a build may take ([`BUILD_TIMEOUT`]).
    timeout: Duration,
    slots: Semaphore,
    building: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Environments {
    /// Environments under `root` (`<data>/tools/envs`), built with `uv` (the setting) and
    /// `python`.
    pub fn new(root: PathBuf, uv: &Path, python: String) -> Environments {
        Environments {
            root,
            uv: find_uv(uv),
            python,
            timeout: BUILD_TIMEOUT,
            slots: Semaphore::new(PARALLEL_BUILDS),
            building: Mutex::new(HashMap::new()),
        }
    }

    /// The `uv` binary, if there is one.
    pub fn uv(&self) -> Option<&Path> {
        self.uv.as_deref()
    }

    /// The environment of tool `name` for this `pyproject.toml`.
    pub fn path(&self, name: &str, pyproject: &Pyproject) -> PathBuf {
        let mut hash = Sha256::new();
        hash.update(pyproject.text.as_bytes());
        hash.update([0]);
        hash.update(self.python.as_bytes());
        let digest = hash.finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.root.join(format!("{name}-{hex}"))
    }

    /// The environment of tool `name` in `dir`, built unless it is complete already; returns
    /// its folder.
    pub async fn ensure(
        &self,
        name: &str,
        dir: &Path,
        pyproject: &Pyproject,
    ) -> Result<PathBuf, EnvironmentError> {
        let Some(uv) = self.uv.clone() else {
            return Err(EnvironmentError::NoUv);
        };
        let env = self.path(name, pyproject);
        if env.join(MARKER).is_file() {
            return Ok(env);
        }
        let lock = self.build_lock(&env);
        let _building = lock.lock().await;
        if env.join(MARKER).is_file() {
            return Ok(env);
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the build semaphore is never closed");
        tracing::info!(tool = name, env = %env.display(), "building the tool's environment");
        let io = |step| move |source| EnvironmentError::Io { step, source };
        if env.exists() {
            tokio::fs::remove_dir_all(&env)
                .await
                .map_err(io("removing a half-built environment"))?;
        }
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(io("creating the environments folder"))?;
        let mut venv = tokio::process::Command::new(&uv);
        venv.args(["venv", "--quiet", "--python", &self.python])
            .arg(&env);
        run(venv, "uv venv", self.timeout).await?;
        if !pyproject.dependencies.is_empty() {
            let mut install = tokio::process::Command::new(&uv);
            install
                .args(["pip", "install", "--quiet", "--no-build", "--python"])
                .arg(env.join("bin").join("python"))
                .arg("-r")
                .arg(dir.join("pyproject.toml"));
            run(install, "uv pip install", self.timeout).await?;
        }
        tokio::fs::write(env.join(MARKER), b"")
            .await
            .map_err(io("marking the environment complete"))?;
        self.building
            .lock()
            .expect("environments lock")
            .remove(&env);
        Ok(env)
    }

    /// The lock held while the environment at `env` is built (or removed).
    fn build_lock(&self, env: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.building
            .lock()
            .expect("environments lock")
            .entry(env.to_owned())
            .or_default()
            .clone()
    }

    /// Removes every environment under the root that is not in `in_use` and not being built:
    /// those of tool versions replaced or removed, and builds cut short. Blocking (a removal
    /// walks a whole virtual environment). Returns what was removed.
    pub fn remove_unused(&self, in_use: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for path in entries.flatten().map(|entry| entry.path()) {
            if in_use.contains(&path) {
                continue;
            }
            // Held while it is removed, so a build of it cannot start meanwhile.
            let lock = self.build_lock(&path);
            let Ok(_idle) = lock.try_lock() else {
                continue;
            };
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed.push(path),
                Err(error) => {
                    tracing::warn!(env = %path.display(), %error, "could not remove an unused tool environment");
                }
            }
        }
        self.building
            .lock()
            .expect("environments lock")
            .retain(|path, lock| Arc::strong_count(lock) > 1 || !removed.contains(path));
        removed
    }
}

/// The environment uv runs with: [`UV_VARIABLES`] and every `UV_*` of `server`'s (the server's
/// environment), nothing else.
fn uv_environment(server: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    server
        .into_iter()
        .filter(|(name, _)| UV_VARIABLES.contains(&name.as_str()) || name.starts_with("UV_"))
        .collect()
}

/// Runs one step of a build in a clean environment and a process group of its own; past
/// `timeout`, the group is killed.
async fn run(
    mut command: tokio::process::Command,
    step: &'static str,
    timeout: Duration,
) -> Result<(), EnvironmentError> {
    command
        .env_clear()
        .envs(uv_environment(std::env::vars()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            EnvironmentError::NoUv
        } else {
            EnvironmentError::Io { step, source }
        }
    })?;
    let group = child.id().and_then(|pid| i32::try_from(pid).ok());
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.map_err(|source| EnvironmentError::Io { step, source })?,
        Err(_) => {
            if let Some(group) = group {
                // SAFETY: plain signal delivery to the step's own process group.
                unsafe { libc::killpg(group, libc::SIGKILL) };
            }
            return Err(EnvironmentError::Timeout { step, timeout });
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join(" | ");
    Err(EnvironmentError::Uv {
        step,
        stderr: if tail.is_empty() {
            format!("{} with no message", output.status)
        } else {
            tail
        },
    })
}

/// The `uv` binary the setting names: a path as it is; a bare name looked up on `PATH`, and
/// `uv` also in `~/.local/bin` (where `pip install --user uv` puts it).
pub fn find_uv(setting: &Path) -> Option<PathBuf> {
    if setting.components().count() > 1 {
        return setting.is_file().then(|| setting.to_owned());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(setting);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    if setting == Path::new("uv")
        && let Some(home) = std::env::var_os("HOME")
    {
        let candidate = Path::new(&home).join(".local/bin/uv");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;

    #[test]
    fn uv_gets_no_secret_of_the_server() {
        let server = [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/centaur"),
            ("UV_INDEX_URL", "https://pypi.internal/simple"),
            ("PIP_INDEX_URL", "https://pypi.internal/simple"),
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("no_proxy", "localhost"),
            ("SSL_CERT_FILE", "/etc/ssl/certs/ca.pem"),
            ("CENTAUR_ADMIN_API_KEY", "cak_admin"),
            ("DATABASE_URL", "postgres://u:p@db/centaur"),
            ("SLACK_BOT_TOKEN", "xoxb-1"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("PYTHONPATH", "/tmp/py"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let names: Vec<String> = uv_environment(server).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "HOME",
                "UV_INDEX_URL",
                "PIP_INDEX_URL",
                "HTTPS_PROXY",
                "no_proxy",
                "SSL_CERT_FILE"
            ]
        );
    }

    #[tokio::test]
    async fn a_build_past_its_timeout_is_stopped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("centaur-uv-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let uv = dir.join("uv");
        std::fs::write(&uv, "#!/bin/sh\nsleep 600\n").unwrap();
        std::fs::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut environments = Environments::new(dir.join("envs"), &uv, "python3".into());
        environments.timeout = Duration::from_millis(300);
        let tool = dir.join("slow");
        std::fs::create_dir_all(&tool).unwrap();
        let text = "[tool.centaur]\n".to_owned();
        let pyproject = Pyproject {
            manifest: Default::default(),
            dependencies: Vec::new(),
            text,
        };
        let error = environments
            .ensure("slow", &tool, &pyproject)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                EnvironmentError::Timeout {
                    step: "uv venv",
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().contains("did not finish within"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn only_environments_unused_and_not_being_built_are_removed() {
        let dir = std::env::temp_dir().join(format!("centaur-envs-{}", uuid::Uuid::new_v4()));
        let environments = Environments::new(dir.clone(), Path::new("uv"), "python3".into());
        for name in ["used-1", "old-2", "building-3"] {
            std::fs::create_dir_all(dir.join(name).join("lib")).unwrap();
            std::fs::write(dir.join(name).join("lib/x.py"), "").unwrap();
        }
        let building = environments.build_lock(&dir.join("building-3"));
        let guard = building.lock().await;
        let in_use = BTreeSet::from([dir.join("used-1")]);
        assert_eq!(environments.remove_unused(&in_use), [dir.join("old-2")]);
        assert!(dir.join("used-1/lib/x.py").is_file());
        assert!(dir.join("building-3").is_dir());
        // Its build over (cut short, say), it goes at the next sweep.
        drop(guard);
        assert_eq!(
            environments.remove_unused(&in_use),
            [dir.join("building-3")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
