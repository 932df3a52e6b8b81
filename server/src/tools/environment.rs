//! A tool's Python environment: a virtual environment built by `uv` from the tool's
//! `pyproject.toml`, kept under the data folder and rebuilt when its dependencies change.
//!
//! `<data>/tools/envs/<name>-<hash>`, the hash of the `pyproject.toml` and the Python setting:
//! `uv venv --python <python> <env>`, then, when `[project].dependencies` is not empty,
//! `uv pip install --python <env>/bin/python -r <tool>/pyproject.toml`. A marker file written
//! last says the environment is complete; an environment without it (a build cut short) is
//! built again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::discovery::Pyproject;

/// The file written into an environment once it is complete.
const MARKER: &str = ".centaur-complete";

/// Environment builds running at once, at most.
const PARALLEL_BUILDS: usize = 2;

/// How many of uv's last stderr lines an error quotes.
const STDERR_LINES: usize = 5;

/// Why a tool's environment could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("uv is not installed: pip install --user uv, or set CENTAUR_UV")]
    NoUv,
    #[error("{step} failed: {stderr}")]
    Uv { step: &'static str, stderr: String },
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
        let lock = self
            .building
            .lock()
            .expect("environments lock")
            .entry(env.clone())
            .or_default()
            .clone();
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
        run(venv, "uv venv").await?;
        if !pyproject.dependencies.is_empty() {
            let mut install = tokio::process::Command::new(&uv);
            install
                .args(["pip", "install", "--quiet", "--python"])
                .arg(env.join("bin").join("python"))
                .arg("-r")
                .arg(dir.join("pyproject.toml"));
            run(install, "uv pip install").await?;
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
}

async fn run(
    mut command: tokio::process::Command,
    step: &'static str,
) -> Result<(), EnvironmentError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = command.output().await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            EnvironmentError::NoUv
        } else {
            EnvironmentError::Io { step, source }
        }
    })?;
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
