//! `CENTAUR_HOME`: where a local stack keeps everything, and the state file through which any
//! `centaur` command finds a running stack.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use centaur_protocol::Harness;
use serde::{Deserialize, Serialize};

/// Why `CENTAUR_HOME` cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("set CENTAUR_HOME (or HOME)")]
    NotSet,
    #[error("CENTAUR_HOME {}: {source}", .path.display())]
    NotAbsolute {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The folders and files of one stack.
#[derive(Clone, Debug)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `CENTAUR_HOME`, else the user's data directory (`$XDG_DATA_HOME/centaur` or
    /// `~/.local/share/centaur`).
    pub fn locate() -> Result<Home, HomeError> {
        let root = std::env::var_os("CENTAUR_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_DATA_HOME")
                    .filter(|v| !v.is_empty())
                    .map(|d| PathBuf::from(d).join("centaur"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/centaur"))
            })
            .ok_or(HomeError::NotSet)?;
        let root = std::path::absolute(&root)
            .map_err(|source| HomeError::NotAbsolute { path: root, source })?;
        Ok(Home { root })
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("stack.json")
    }
    pub fn dev_token(&self) -> PathBuf {
        self.root.join("dev-token")
    }
    pub fn proxy_token(&self) -> PathBuf {
        self.root.join("proxy-token")
    }
    pub fn proxy_dir(&self) -> PathBuf {
        self.root.join("proxy")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.proxy_dir().join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.proxy_dir().join("ca-key.pem")
    }
    pub fn proxy_key(&self) -> PathBuf {
        self.proxy_dir().join("key")
    }
    pub fn proxy_sockets(&self) -> PathBuf {
        self.root.join("run").join("proxy")
    }
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }
    /// Secrets for tools, one file each named for the secret (read by the proxy only).
    pub fn tool_secrets(&self) -> PathBuf {
        self.secrets().join("tools")
    }
    /// The operator's additions to the tools' egress policies (`CENTAUR_TOOL_EGRESS`).
    pub fn tool_egress(&self) -> PathBuf {
        self.root.join("tool-egress.json")
    }
    pub fn harnesses(&self) -> PathBuf {
        self.root.join("harnesses")
    }
    pub fn egress_policy(&self) -> PathBuf {
        self.root.join("egress-policy.json")
    }
    pub fn codex_config(&self) -> PathBuf {
        self.root.join("codex.toml")
    }
    /// Settings for harnesses in sandboxes, `KEY=VALUE` lines (`centaur dev keys` writes
    /// Claude Code's base URL here); the server reads it again when it changes.
    pub fn harness_env(&self) -> PathBuf {
        self.root.join("harness.env")
    }
    /// The model APIs' base URLs and Codex's model (`centaur dev keys` writes it).
    pub fn endpoints(&self) -> PathBuf {
        self.root.join("endpoints.json")
    }
    pub fn postgres(&self) -> PathBuf {
        self.root.join("postgres")
    }
    pub fn server_data(&self) -> PathBuf {
        self.root.join("server")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        match component {
            "postgres" => self.postgres().join("postgres.log"),
            other => self.logs().join(format!("{other}.log")),
        }
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("stack.lock")
    }

    /// The process holding this home's stack lock (a stack running or starting), if any. The
    /// lock, not a pid in a file, is the truth: it dies with its process.
    pub fn lock_holder(&self) -> Option<u32> {
        let file = std::fs::File::open(self.lock_file()).ok()?;
        // SAFETY: flock on a descriptor owned here; released when `file` closes.
        let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            return None;
        }
        std::fs::read_to_string(self.lock_file())
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
            .or(Some(0))
    }

    /// The running stack's state, once it serves.
    pub fn running(&self) -> Option<StackState> {
        let holder = self.lock_holder()?;
        let state: StackState =
            serde_json::from_str(&std::fs::read_to_string(self.state_file()).ok()?).ok()?;
        (state.pid == holder && alive(state.pid)).then_some(state)
    }

    /// The dev token, if one was made.
    pub fn read_dev_token(&self) -> Option<String> {
        std::fs::read_to_string(self.dev_token())
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    }
}

/// What `stack.json` says about a running stack.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackState {
    /// The process that runs the stack (`centaur dev serve`).
    pub pid: u32,
    pub api_url: String,
    pub proxy_control_url: String,
    /// `host:port` of PostgreSQL, and whether it is the stack's own cluster (not
    /// `DATABASE_URL`'s).
    pub postgres_address: String,
    pub postgres_private: bool,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub version: String,
    pub harnesses_ready: Vec<Harness>,
    pub warm_pool: usize,
    /// What the stack's supervisor saw of its private PostgreSQL (see `supervise`).
    #[serde(default)]
    pub postgres_health: PartHealth,
    /// What the stack's supervisor saw of the proxy's control API.
    #[serde(default)]
    pub proxy_health: PartHealth,
}

/// How the stack's supervisor sees one part it restarts when it dies; the default is a part
/// that never failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartHealth {
    /// Down and being restarted.
    pub down: bool,
    /// How many times it died (and was restarted, or is being restarted).
    pub failures: u32,
    /// When it last died, and why.
    pub last_failure_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_failure: Option<String>,
    /// While down: why the last attempt to restart it failed.
    pub restart_error: Option<String>,
}

impl PartHealth {
    /// One line for people: "" for a part that never failed, else what happened to it.
    pub fn describe(&self) -> String {
        let Some(at) = self.last_failure_at else {
            return String::new();
        };
        let at = at.format("%H:%M:%S");
        let why = self.last_failure.as_deref().unwrap_or("it stopped");
        if self.down {
            let error = self
                .restart_error
                .as_deref()
                .map(|e| format!("; last attempt: {e}"))
                .unwrap_or_default();
            return format!("down since {at} ({why}), restarting{error}");
        }
        let times = if self.failures == 1 { "time" } else { "times" };
        format!("restarted {} {times}, last {at}: {why}", self.failures)
    }
}

pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && unsafe { libc::kill(pid as i32, 0) } == 0
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        })
}
