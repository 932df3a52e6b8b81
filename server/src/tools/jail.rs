//! The bubblewrap confinement of a tool worker: no network but the egress proxy's socket, of the
//! host's files only the system and what the tool runs, read-only, a private `/tmp`.
//!
//! Inside: the host's system read-only ([`crate::bwrap::system_mounts`], the same as a
//! sandbox's: `/usr`, the folders leading into it, the few files of `/etc` programs need, of
//! its certificates the public ones only) and the Python installation the tool's environment
//! was made from; a fresh `/dev`, `/proc`, `/tmp` and `/run`; the tool's environment and the
//! SDK (read-only) and the tool's own home (writable); nothing else of the server's data
//! folder or of the host's homes; the tool's folder read-only; the proxy's socket folder at
//! [`PROXY_SOCKET_DIR`] and its CA at [`PROXY_CA`]. Every namespace is new (no network at all:
//! the worker reaches the proxy through the socket), the worker is in a new session (no
//! terminal to write into), and it dies with the server.
//!
//! Its environment is only what [`Launch::variables`] lists, given to bubblewrap as its
//! environment (which it hands on to the worker), never as arguments: a command line is
//! readable by every user of the host, an environment only by the server's user.
//!
//! `CENTAUR_TOOL_ISOLATION=none` runs the same command without bubblewrap: for development
//! only, the tool can then read everything the server can and reach any host.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::egress::WorkerEgress;
use super::settings::ToolIsolation;
use crate::bwrap::{Args, system_mounts};

/// Where the folder of the tool's proxy socket is inside the jail. The folder is mounted, not the
/// socket: a proxy that restarts makes the socket again, and a worker already running must see
/// the new one. The folder is the tool's own (`<socket_dir>/tool-<name>/`).
pub const PROXY_SOCKET_DIR: &str = "/run/centaur/proxy";
/// Where the proxy's CA certificate is inside the jail.
pub const PROXY_CA: &str = "/run/centaur/proxy-ca.pem";
/// Where the CA bundle (the system's roots and the proxy's CA) is inside the jail.
pub const CA_BUNDLE: &str = "/run/centaur/ca-bundle.pem";

/// The system's CA bundle, which the worker's bundle starts with.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Descriptors a worker's process may hold.
const OPEN_FILES: u64 = 4096;
/// The largest file a worker's process may write.
const FILE_BYTES: u64 = 1 << 30;

/// The folders of `PATH` inside (after the environment's `bin`).
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Everything one worker (or one `--describe`) of a tool runs with.
pub struct Launch<'a> {
    pub isolation: ToolIsolation,
    pub tool: &'a str,
    /// The tool's environment (`<env>/bin/python`).
    pub env_dir: &'a Path,
    /// The folder holding the SDK package (`PYTHONPATH`).
    pub sdk_dir: &'a Path,
    /// The tool's folder (the worker's working folder).
    pub tool_dir: &'a Path,
    /// The tool's private, writable home.
    pub home: &'a Path,
    /// The tool's own folder for files the server writes for it (the CA bundle).
    pub run_dir: &'a Path,
    pub concurrency: u32,
    /// RLIMIT_AS of the worker's processes (0: none).
    pub memory_bytes: u64,
    /// `[tool.centaur] env`: names of server variables the worker gets.
    pub settings: &'a [String],
    pub egress: &'a WorkerEgress,
}

impl Launch<'_> {
    /// The worker's command (`--describe` for a description), ready to spawn: its environment
    /// cleared and set, its working folder the tool's, in a process group of its own.
    pub fn command(&self, describe: bool) -> std::io::Result<tokio::process::Command> {
        let python = self.env_dir.join("bin").join("python");
        let mut worker_args: Vec<OsString> = vec![
            python.into_os_string(),
            "-m".into(),
            "centaur_tools.worker".into(),
        ];
        if describe {
            worker_args.push("--describe".into());
        }
        worker_args.push(self.tool_dir.as_os_str().to_owned());
        let variables = self.variables()?;
        let mut command = match self.isolation {
            ToolIsolation::None => {
                let mut command = tokio::process::Command::new(&worker_args[0]);
                command.args(&worker_args[1..]);
                command.env_clear();
                command.envs(variables);
                command
            }
            // The worker's environment is bubblewrap's own, which it hands on (no `--clearenv`,
            // no `--setenv`): a variable's value, a revealed secret's included, is on no command
            // line, where every user of the host could read it (`/proc/<pid>/cmdline`).
            ToolIsolation::Bwrap => {
                let mut command = tokio::process::Command::new(bwrap());
                command.env_clear();
                command.envs(variables);
                command.args(self.bwrap_args());
                command.arg("--");
                command.args(&worker_args);
                command
            }
        };
        command.current_dir(self.tool_dir).process_group(0);
        let memory_bytes = self.memory_bytes;
        // SAFETY: only setrlimit, which is async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = |resource, value: u64| {
                    let limit = libc::rlimit {
                        rlim_cur: value as libc::rlim_t,
                        rlim_max: value as libc::rlim_t,
                    };
                    libc::setrlimit(resource, &limit);
                };
                limit(libc::RLIMIT_CORE, 0);
                limit(libc::RLIMIT_NOFILE, OPEN_FILES);
                limit(libc::RLIMIT_FSIZE, FILE_BYTES);
                if memory_bytes > 0 {
                    limit(libc::RLIMIT_AS, memory_bytes);
                }
                Ok(())
            });
        }
        Ok(command)
    }

    /// bubblewrap's options, up to the command: paths and flags, nothing secret.
    fn bwrap_args(&self) -> Vec<OsString> {
        let mut a = Args::default();
        a.args(["--unshare-all", "--die-with-parent", "--new-session"]);
        system_mounts(&mut a);
        if let Some(prefix) = python_prefix(self.env_dir) {
            a.arg("--ro-bind").arg(&prefix).arg(&prefix);
        }
        a.args(["--dev", "/dev", "--proc", "/proc"]);
        a.args(["--tmpfs", "/tmp", "--tmpfs", "/run"]);
        for path in [self.env_dir, self.sdk_dir, self.tool_dir] {
            a.arg("--ro-bind").arg(path).arg(path);
        }
        a.arg("--bind").arg(self.home).arg(self.home);
        a.args(["--dir", "/run/centaur"]);
        if let Some(folder) = self.egress.proxy_socket.as_deref().and_then(Path::parent) {
            a.arg("--ro-bind").arg(folder).arg(PROXY_SOCKET_DIR);
        }
        if let Some(ca) = &self.egress.ca_file {
            a.arg("--ro-bind").arg(ca).arg(PROXY_CA);
            a.arg("--ro-bind").arg(self.ca_bundle()).arg(CA_BUNDLE);
        }
        a.arg("--chdir").arg(self.tool_dir);
        a.into_vec()
    }

    /// The worker's environment, from nothing: the preamble's list (`docs/tools.md`).
    pub fn variables(&self) -> std::io::Result<Vec<(String, String)>> {
        let path = format!("{}:{SYSTEM_PATH}", self.env_dir.join("bin").display());
        let mut vars: Vec<(String, String)> = vec![
            ("PATH".into(), path),
            ("HOME".into(), self.home.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            ("PYTHONPATH".into(), self.sdk_dir.display().to_string()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("CENTAUR_TOOL".into(), self.tool.to_owned()),
            (
                "CENTAUR_TOOL_CONCURRENCY".into(),
                self.concurrency.to_string(),
            ),
        ];
        for name in self.settings {
            if let Ok(value) = std::env::var(name) {
                vars.push((name.clone(), value));
            }
        }
        for (name, value) in &self.egress.secrets {
            vars.push((name.clone(), value.clone()));
        }
        let jailed = self.isolation == ToolIsolation::Bwrap;
        if let Some(socket) = &self.egress.proxy_socket {
            let socket = if jailed {
                jailed_socket(socket)
            } else {
                socket.display().to_string()
            };
            vars.push(("CENTAUR_PROXY_SOCKET".into(), socket));
        }
        if let Some(ca) = &self.egress.ca_file {
            let bundle = self.ca_bundle();
            write_bundle(&bundle, ca)?;
            let (ca, bundle) = if jailed {
                (PROXY_CA.to_owned(), CA_BUNDLE.to_owned())
            } else {
                (ca.display().to_string(), bundle.display().to_string())
            };
            vars.push(("CENTAUR_PROXY_CA".into(), ca));
            for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
                vars.push((name.into(), bundle.clone()));
            }
        }
        Ok(vars)
    }

    fn ca_bundle(&self) -> PathBuf {
        self.run_dir.join("ca-bundle.pem")
    }
}

/// bubblewrap, from the server's `PATH`.
fn bwrap() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("bwrap"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/bwrap"))
}

/// The installation of the Python the environment was made from (its `pyvenv.cfg`'s `home`,
/// without the `bin`), when it is outside `/usr`: a pyenv or uv-managed Python under a home.
fn python_prefix(env_dir: &Path) -> Option<PathBuf> {
    let config = std::fs::read_to_string(env_dir.join("pyvenv.cfg")).ok()?;
    let home = config.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| PathBuf::from(value.trim()))
    })?;
    let home = std::fs::canonicalize(home).ok()?;
    let prefix = if home.ends_with("bin") {
        home.parent()?.to_owned()
    } else {
        home
    };
    (!prefix.starts_with("/usr") && prefix != Path::new("/")).then_some(prefix)
}

/// Writes the system's CA bundle followed by the proxy's CA to `bundle`.
fn write_bundle(bundle: &Path, proxy_ca: &Path) -> std::io::Result<()> {
    let mut text = SYSTEM_CA_BUNDLES
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&std::fs::read_to_string(proxy_ca)?);
    if let Some(parent) = bundle.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(bundle, text)
}

/// The socket's path inside the jail: its file name in [`PROXY_SOCKET_DIR`].
fn jailed_socket(socket: &Path) -> String {
    let name = socket
        .file_name()
        .map_or_else(|| "proxy.sock".into(), |n| n.to_string_lossy());
    format!("{PROXY_SOCKET_DIR}/{name}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;

    #[test]
    fn no_variable_is_on_bubblewraps_command_line() {
        let dir = std::env::temp_dir();
        let egress = WorkerEgress {
            secrets: [(
                "DATABASE_URL".to_owned(),
                "postgres://reader:revealed@db/app".to_owned(),
            )]
            .into(),
            ..WorkerEgress::default()
        };
        let launch = Launch {
            isolation: ToolIsolation::Bwrap,
            tool: "postgres",
            env_dir: &dir,
            sdk_dir: &dir,
            tool_dir: &dir,
            home: &dir,
            run_dir: &dir,
            concurrency: 1,
            memory_bytes: 0,
            settings: &[],
            egress: &egress,
        };
        let command = launch.command(false).unwrap();
        let command = command.as_std();
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.iter()
                .all(|a| !a.contains("revealed") && a != "--setenv" && a != "--clearenv"),
            "{args:?}"
        );
        let envs: Vec<(String, String)> = command
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        assert!(
            envs.contains(&(
                "DATABASE_URL".to_owned(),
                "postgres://reader:revealed@db/app".to_owned()
            )),
            "{envs:?}"
        );
    }
}
