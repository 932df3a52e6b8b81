//! The `local` backend: each sandbox is a bubblewrap (`bwrap`) process tree on this machine.
//!
//! Inside: its own user, mount, PID, IPC, UTS and network namespaces (no network at all), the
//! system read-only (`/usr` and the few files of `/etc` programs need), a private `/tmp` and
//! home of bounded size, the thread's workspace at `/workspace`, and an unprivileged user
//! (`sandbox`, uid 1000). The only ways out are two folders mounted read-only: the server's
//! runner socket and the egress proxy's socket for this sandbox. Nothing else of the host is
//! visible: no home directories, no server data, no secrets.
//!
//! Outside, the sandbox is a host user of its thread's own when the server runs as root
//! ([`super::host_user`]), and bubblewrap starts with an empty environment and reads its
//! arguments from a descriptor, so nothing in the sandbox (its `/proc/1` included) shows the
//! server's environment or command line. The runner's stderr is a pipe the server copies into
//! `runner.log`, up to a cap.
//!
//! Sandboxes outlive a crashed server (their pid is kept in their folder, and a restarted
//! server adopts them); warm sandboxes, still waiting for a thread on their stdin, end with it.
//! Limits: with a delegated cgroup v2 (`CENTAUR_CGROUP_ROOT`), each sandbox gets its own cgroup
//! with `memory.max` and `pids.max` (its tmpfs pages count against the memory); otherwise
//! rlimits (address space; processes of the host uid it runs as). Open files, file size and
//! core dumps are always rlimits; `/tmp` and the home are tmpfs of a fixed size; the workspace
//! is measured while the sandbox runs and the sandbox is stopped past its cap.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use centaur_protocol::api::SandboxBackendKind;
use centaur_protocol::runner::Attachment;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use uuid::Uuid;

use super::host_user::{HostUser, HostUsers};
use super::{CliLocation, NotAttachable, SandboxBackend, SandboxError, SandboxSpec, SandboxState};
use crate::bwrap::{Args, system_mounts};

/// How long a runner may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const SANDBOX_UID: u32 = 1000;
/// What `runner.log` may grow to; past it the rest of the runner's stderr is dropped.
const RUNNER_LOG_CAP: u64 = 8 << 20;
/// How often a running sandbox's workspace is measured against its cap.
const WORKSPACE_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Inside paths.
const SERVER_DIR: &str = "/run/centaur/server";
const PROXY_DIR: &str = "/run/centaur/proxy";
const RUNNER: &str = "/opt/centaur/bin/centaur-runner";
/// The runner under the name `centaur-tool` (a symlink beside it: the binary dispatches on its
/// name); the folder is on the sandbox's `PATH`.
const RUNNER_BIN_DIR: &str = "/opt/centaur/bin";
const TOOL: &str = "/opt/centaur/bin/centaur-tool";
const HARNESS_DIR: &str = "/opt/centaur/harness";
const CA_FILE: &str = "/etc/centaur/ca.pem";
/// The sandbox's `PATH` after the harness folder's `bin`: the host's system, mounted as is.
const SYSTEM_PATH: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];
/// Where the host's system is mounted at the same path inside.
const SYSTEM_MOUNTS: [&str; 5] = ["/usr", "/bin", "/lib", "/lib64", "/sbin"];
const WORKSPACE: &str = "/workspace";

#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// `sandboxes/<id>/` (per-sandbox files, log) and `workspaces/<thread>/` live here.
    pub data_dir: PathBuf,
    /// The folder holding the server's runner socket (`server.sock`).
    pub server_socket_dir: PathBuf,
    pub runner_bin: PathBuf,
    pub bwrap: PathBuf,
    /// The proxy's CA certificate, trusted inside.
    pub ca_file: Option<PathBuf>,
    /// Harness CLIs, mounted read-only at `/opt/centaur/harness` (its `bin` goes on PATH).
    pub harness_dir: Option<PathBuf>,
    pub limits: ResourceLimits,
    /// Which host user sandboxes run as.
    pub host_users: HostUsers,
    /// Start even though nothing limits a sandbox's processes.
    pub allow_unlimited_processes: bool,
    /// A delegated cgroup v2 folder (its `cgroup.subtree_control` may enable `memory` and
    /// `pids`) under which each sandbox gets its own cgroup. Without it, rlimits.
    pub cgroup_root: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug)]
pub struct ResourceLimits {
    /// Address space per process (RLIMIT_AS); 0 for none.
    pub memory_bytes: u64,
    pub open_files: u64,
    /// Processes: `pids.max` with a cgroup, else RLIMIT_NPROC of the host uid the sandbox runs
    /// as (its thread's own as root, so per sandbox; the server's user's otherwise). 0: none.
    pub processes: u64,
    /// Size of `/tmp` and of `/home/sandbox`, each.
    pub tmpfs_bytes: u64,
    /// Largest file a process may write (RLIMIT_FSIZE); 0 for no limit.
    pub file_bytes: u64,
    /// What the workspace may hold; 0 for no cap.
    pub workspace_bytes: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            memory_bytes: 8 << 30,
            open_files: 4096,
            processes: 4096,
            tmpfs_bytes: 1 << 30,
            file_bytes: 4 << 30,
            workspace_bytes: 10 << 30,
        }
    }
}

impl ResourceLimits {
    /// What is in force, in words (for `centaur dev doctor` and the logs).
    pub fn describe(&self, cgroup_root: Option<&Path>, host_users: &HostUsers) -> String {
        let common = format!(
            "{} open files, files up to {} MiB, /tmp and home {} MiB each, workspace {} MiB",
            self.open_files,
            self.file_bytes >> 20,
            self.tmpfs_bytes >> 20,
            self.workspace_bytes >> 20
        );
        if let Some(root) = cgroup_root {
            return format!(
                "cgroups v2 under {}: {} MiB of memory and {} processes per sandbox; rlimits: {common}",
                root.display(),
                self.memory_bytes >> 20,
                self.processes,
            );
        }
        let processes = match (self.processes, host_users.switches()) {
            (0, _) => "no process limit".to_owned(),
            (n, true) => format!("{n} processes per sandbox (its own host uid)"),
            (n, false) => format!("{n} processes for the server's user, sandboxes included"),
        };
        format!(
            "rlimits: {} MiB address space per process, {processes}, {common}; cgroups are not used",
            self.memory_bytes >> 20,
        )
    }
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What one start of bubblewrap needs besides the spec and its folders.
struct Start<'a> {
    seccomp_fd: i32,
    cgroup: Option<&'a Path>,
    /// The host user to run as, when not the server's.
    user: Option<HostUser>,
}

/// A sandbox between [`SandboxBackend::create`] and [`SandboxBackend::ready`].
struct Starting {
    child: tokio::process::Child,
    /// The bwrap process.
    pid: u32,
    /// Copies the runner's stderr into `runner.log`.
    logged: Option<tokio::task::JoinHandle<()>>,
    workspace: PathBuf,
    attachment: Option<Attachment>,
}

struct Running {
    /// The bwrap process.
    pid: u32,
    /// A warm sandbox's runner waits for its attachment here.
    stdin: Option<ChildStdin>,
    exited: Arc<std::sync::atomic::AtomicBool>,
    /// Taken by another server process that crashed; not our child.
    adopted: bool,
    watch: Watch,
}

/// What a sandbox's workspace watcher shares with the backend: where the workspace is (a warm
/// sandbox's moves when it is claimed) and, once the watcher stopped the sandbox, why.
#[derive(Clone, Default)]
struct Watch {
    workspace: Arc<Mutex<Option<PathBuf>>>,
    ended: Arc<Mutex<Option<String>>>,
}

impl Watch {
    fn new(workspace: PathBuf) -> Watch {
        let watch = Watch::default();
        *watch.workspace.lock().expect("watch lock") = Some(workspace);
        watch
    }
}

/// Why the local backend cannot run sandboxes on this machine.
#[derive(Debug, thiserror::Error)]
pub enum LocalSetupError {
    #[error(
        "nothing would limit a sandbox's processes (no CENTAUR_CGROUP_ROOT and CENTAUR_SANDBOX_PROCESSES=0); set a limit, or CENTAUR_SANDBOX_ALLOW_UNLIMITED_PROCESSES=true to run without one"
    )]
    UnlimitedProcesses,
    #[error(
        "the runner binary {} does not exist (build it: cargo build -p centaur-runner, or set CENTAUR_RUNNER_BIN)",
        .0.display()
    )]
    NoRunner(PathBuf),
    #[error("bubblewrap ({}) is not installed: apt-get install -y bubblewrap", .0.display())]
    NoBubblewrap(PathBuf),
    #[error("creating {}: {source}", path.display())]
    CreateFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening {} to sandbox users: {source}", path.display())]
    OpenToSandboxUsers {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "sandboxes run as unprivileged host users (the server runs as root) and cannot reach {}: {} is not open to other users (chmod o+x it, or keep the data elsewhere)",
        path.display(),
        blocked.display()
    )]
    Unreachable { path: PathBuf, blocked: PathBuf },
    #[error("copying the runner {} to {}: {source}", from.display(), to.display())]
    CopyRunner {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "CENTAUR_CGROUP_ROOT {} is not a cgroup v2 folder offering the `{controller}` controller (see docs/sandboxes.md)",
        root.display()
    )]
    NotCgroupV2 {
        root: PathBuf,
        controller: &'static str,
    },
    #[error(
        "cannot enable the `{controller}` controller under {} ({source}); delegate that cgroup to the server's user",
        root.display()
    )]
    EnableController {
        root: PathBuf,
        controller: &'static str,
        source: std::io::Error,
    },
}

pub struct LocalBackend {
    options: LocalOptions,
    /// The runner binary sandboxes mount: a copy in the data folder when sandboxes run as
    /// another user, who may not reach the original.
    runner_bin: PathBuf,
    running: Mutex<HashMap<Uuid, Running>>,
    starting: Mutex<HashMap<Uuid, Starting>>,
}

impl LocalBackend {
    /// Checks the prerequisites and adopts sandboxes a previous server left running.
    pub fn new(options: LocalOptions) -> Result<LocalBackend, LocalSetupError> {
        if options.cgroup_root.is_none()
            && options.limits.processes == 0
            && !options.allow_unlimited_processes
        {
            return Err(LocalSetupError::UnlimitedProcesses);
        }
        if !options.runner_bin.is_file() {
            return Err(LocalSetupError::NoRunner(options.runner_bin.clone()));
        }
        if which(&options.bwrap).is_none() {
            return Err(LocalSetupError::NoBubblewrap(options.bwrap.clone()));
        }
        for dir in ["sandboxes", "workspaces", "run"] {
            let path = options.data_dir.join(dir);
            std::fs::create_dir_all(&path)
                .map_err(|source| LocalSetupError::CreateFolder { path, source })?;
        }
        let switches = options.host_users.switches();
        let runner_bin = if switches {
            prepare_for_sandbox_users(&options)?
        } else {
            options.runner_bin.clone()
        };
        let backend = LocalBackend {
            options,
            runner_bin,
            running: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashMap::new()),
        };
        if let Some(root) = &backend.options.cgroup_root {
            enable_controllers(root)?;
        }
        backend.adopt();
        let limits = backend.options.limits.describe(
            backend.options.cgroup_root.as_deref(),
            &backend.options.host_users,
        );
        tracing::info!(%limits, per_thread_host_users = switches, "local sandbox backend ready");
        Ok(backend)
    }

    fn sandbox_dir(&self, id: Uuid) -> PathBuf {
        self.options.data_dir.join("sandboxes").join(id.to_string())
    }

    /// The thread's workspace, which outlives its sandboxes.
    pub fn workspace_of(&self, thread_key: &str) -> PathBuf {
        let digest = Sha256::digest(thread_key.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.options.data_dir.join("workspaces").join(name)
    }

    /// Takes over sandboxes whose pid files point at live bubblewrap processes; cleans up
    /// the folders of the rest.
    fn adopt(&self) {
        let Ok(entries) = std::fs::read_dir(self.options.data_dir.join("sandboxes")) else {
            return;
        };
        let mut running = self.running.lock().expect("running lock");
        for entry in entries.flatten() {
            let Ok(id) = entry.file_name().to_string_lossy().parse::<Uuid>() else {
                continue;
            };
            let pid = std::fs::read_to_string(entry.path().join("pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            match pid {
                Some(pid) if is_bwrap(pid) => {
                    tracing::info!(sandbox_id = %id, pid, "adopted a running sandbox");
                    running.insert(
                        id,
                        Running {
                            pid,
                            stdin: None,
                            exited: Arc::default(),
                            adopted: true,
                            // Which workspace it mounts is not recorded: not measured.
                            watch: Watch::default(),
                        },
                    );
                }
                _ => {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    /// The sandbox's own cgroup, created with its limits; `None` without a cgroup root.
    fn cgroup(&self, id: Uuid) -> Result<Option<PathBuf>, SandboxError> {
        let Some(root) = &self.options.cgroup_root else {
            return Ok(None);
        };
        let cgroup = root.join(id.to_string());
        std::fs::create_dir_all(&cgroup)
            .map_err(|e| failure("creating the sandbox's cgroup", e))?;
        let limits = self.options.limits;
        let memory = match limits.memory_bytes {
            0 => "max".to_owned(),
            bytes => bytes.to_string(),
        };
        for (file, value) in [
            ("memory.max", memory),
            ("pids.max", limits.processes.to_string()),
        ] {
            std::fs::write(cgroup.join(file), value)
                .map_err(|e| failure(format!("setting {file} of the sandbox's cgroup"), e))?;
        }
        // No swapping around the memory limit, where the kernel offers the knob.
        if cgroup.join("memory.swap.max").exists() {
            let _ = std::fs::write(cgroup.join("memory.swap.max"), "0");
        }
        Ok(Some(cgroup))
    }

    /// The sandbox's bubblewrap command. Its arguments go to bubblewrap through a descriptor
    /// (`--args`), so no process list shows them; its environment is empty (bubblewrap's own
    /// process stays in the sandbox as its pid 1, where `/proc/1/environ` is readable).
    fn bwrap_command(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        workspace: &Path,
        start: Start<'_>,
    ) -> std::io::Result<(tokio::process::Command, OwnedFd)> {
        let mut a = Args::default();
        a.arg("--seccomp").arg(start.seccomp_fd.to_string());
        isolation(&mut a);
        system_mounts(&mut a);
        let proxied = self.sandbox_mounts(&mut a, spec, dir, workspace);
        self.environment(&mut a, proxied);
        a.args(["--chdir", WORKSPACE]);
        let args_fd = a.into_descriptor(&dir.join("bwrap.args"))?;

        let mut c = tokio::process::Command::new(&self.options.bwrap);
        c.env_clear();
        // The options come from the descriptor; the command itself must be on the line.
        c.arg("--args")
            .arg(args_fd.as_raw_fd().to_string())
            .arg("--")
            .arg(RUNNER);
        self.confine(&mut c, &start, args_fd.as_raw_fd());
        c.process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        Ok((c, args_fd))
    }

    /// What the sandbox sees of its own: private `/proc`, `/dev`, `/tmp` and home, the
    /// workspace, the server's and the proxy's socket folders, the runner, the CA and the
    /// harnesses; then everything else read-only. Whether the proxy's socket is mounted.
    fn sandbox_mounts(
        &self,
        a: &mut Args,
        spec: &SandboxSpec,
        dir: &Path,
        workspace: &Path,
    ) -> bool {
        let o = &self.options;
        for file in ["passwd", "group", "hosts"] {
            a.arg("--ro-bind")
                .arg(dir.join("etc").join(file))
                .arg(format!("/etc/{file}"));
        }
        let tmpfs_size = o.limits.tmpfs_bytes.to_string();
        a.args(["--proc", "/proc", "--dev", "/dev"]);
        a.args(["--size", &tmpfs_size, "--tmpfs", "/tmp"]);
        a.args(["--size", &tmpfs_size, "--tmpfs", "/home/sandbox"]);
        a.args(["--dir", "/run/centaur"]);
        a.arg("--bind").arg(workspace).arg(WORKSPACE);
        a.arg("--ro-bind").arg(&o.server_socket_dir).arg(SERVER_DIR);
        let proxy_dir = spec
            .egress
            .as_ref()
            .and_then(|e| e.socket.as_ref())
            .and_then(|s| s.parent());
        if let Some(proxy_dir) = proxy_dir {
            a.arg("--ro-bind").arg(proxy_dir).arg(PROXY_DIR);
        }
        a.arg("--ro-bind").arg(&self.runner_bin).arg(RUNNER);
        a.args(["--symlink", "centaur-runner", TOOL]);
        if let Some(ca) = &o.ca_file {
            a.arg("--ro-bind").arg(ca).arg(CA_FILE);
        }
        if let Some(harness) = &o.harness_dir {
            a.arg("--ro-bind").arg(harness).arg(HARNESS_DIR);
        }
        // Everything not mounted writable above (the workspace, /tmp, the home) is read-only.
        a.args(["--remount-ro", "/"]);
        proxy_dir.is_some()
    }

    /// The runner's environment, from nothing.
    fn environment(&self, a: &mut Args, proxied: bool) {
        let o = &self.options;
        let mut path = SYSTEM_PATH.join(":");
        if o.harness_dir.is_some() {
            path = format!("{HARNESS_DIR}/bin:{path}");
        }
        path = format!("{RUNNER_BIN_DIR}:{path}");
        a.arg("--clearenv");
        let mut env: Vec<(&str, String)> = vec![
            ("PATH", path),
            ("HOME", "/home/sandbox".into()),
            ("USER", "sandbox".into()),
            ("LANG", "C.UTF-8".into()),
            ("TERM", "xterm-256color".into()),
            ("CENTAUR_SERVER", format!("unix:{SERVER_DIR}/server.sock")),
            ("CENTAUR_WORKSPACE", WORKSPACE.into()),
        ];
        if proxied {
            env.push(("CENTAUR_PROXY_SOCKET", format!("{PROXY_DIR}/proxy.sock")));
        }
        if o.ca_file.is_some() {
            env.push(("CENTAUR_CA_FILE", CA_FILE.into()));
        }
        if let Ok(filter) = std::env::var("CENTAUR_RUNNER_LOG") {
            env.push(("RUST_LOG", filter));
        }
        for (key, value) in env {
            a.arg("--setenv").arg(key).arg(value);
        }
    }

    /// What bubblewrap's process gets before it runs: the inherited descriptors, the cgroup,
    /// the rlimits and the host user.
    fn confine(&self, c: &mut tokio::process::Command, start: &Start<'_>, args_fd: i32) {
        let limits = self.options.limits;
        let user = start.user;
        // RLIMIT_NPROC counts the processes of the uid bubblewrap runs as: the sandbox's own
        // when it has one; the server's otherwise, except root's, which it does not bound.
        let limit_processes = user.is_some() || !is_root();
        let inherited = [start.seccomp_fd, args_fd];
        // Joining the cgroup happens in the child before exec, so bubblewrap and everything it
        // starts are inside from the first instruction.
        let procs = start.cgroup.map(|cg| {
            std::ffi::CString::new(
                cg.join("cgroup.procs")
                    .into_os_string()
                    .into_encoded_bytes(),
            )
            .expect("no NUL in a path")
        });
        // SAFETY: only async-signal-safe calls (fcntl, open, write, close, setrlimit, setgroups,
        // setgid, setuid) between fork and exec; the path was prepared before the fork.
        unsafe {
            c.pre_exec(move || {
                // The seccomp program's and the arguments' descriptors must survive exec, in
                // this child only.
                for fd in inherited {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(procs) = &procs {
                    let fd = libc::open(
                        procs.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // "0" moves the writing process itself.
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if written != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let set = |resource, value: u64| {
                    let limit = libc::rlimit {
                        rlim_cur: value as libc::rlim_t,
                        rlim_max: value as libc::rlim_t,
                    };
                    libc::setrlimit(resource, &limit);
                };
                if procs.is_none() && limits.memory_bytes > 0 {
                    set(libc::RLIMIT_AS, limits.memory_bytes);
                }
                set(libc::RLIMIT_NOFILE, limits.open_files);
                set(libc::RLIMIT_CORE, 0);
                if limits.file_bytes > 0 {
                    set(libc::RLIMIT_FSIZE, limits.file_bytes);
                }
                if procs.is_none() && limit_processes && limits.processes > 0 {
                    set(libc::RLIMIT_NPROC, limits.processes);
                }
                // Last: the cgroup and the limits above needed the server's rights.
                if let Some(user) = user
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(user.gid) != 0
                        || libc::setuid(user.uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The sandbox's folder (its `/etc` files inside) and its workspace: the thread's, or for a
    /// warm sandbox an empty one of its own. Returns the workspace.
    fn prepare_folders(&self, spec: &SandboxSpec, dir: &Path) -> Result<PathBuf, SandboxError> {
        std::fs::create_dir_all(dir).map_err(|e| failure("creating the sandbox folder", e))?;
        // Sandbox users must pass through it to what it mounts; its files stay the server's.
        let folder_mode = if self.options.host_users.switches() {
            0o711
        } else {
            0o700
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(folder_mode))
            .map_err(|e| failure("securing the sandbox folder", e))?;
        Self::write_etc(dir).map_err(|e| failure("writing the sandbox's /etc", e))?;
        let workspace = match &spec.attachment {
            Some(attachment) => self.workspace_of(attachment.thread_key.as_str()),
            None => dir.join("workspace"),
        };
        std::fs::create_dir_all(&workspace).map_err(|e| failure("creating the workspace", e))?;
        // Only the sandbox's host user may enter it (the server, as root, still can).
        std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failure("securing the workspace", e))?;
        Ok(workspace)
    }

    /// Starts bubblewrap with the seccomp filter and its arguments on inherited descriptors.
    fn spawn_bwrap(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        workspace: &Path,
        cgroup: Option<&Path>,
        user: Option<HostUser>,
    ) -> Result<tokio::process::Child, SandboxError> {
        // bubblewrap reads the seccomp program from an inherited descriptor.
        let seccomp_path = dir.join("seccomp.bpf");
        // The cached program; when there is none, building it again says why.
        let program = match super::seccomp::program() {
            Some(program) => program,
            None => super::seccomp::try_program()?,
        };
        std::fs::write(&seccomp_path, program)
            .map_err(|e| failure("writing the seccomp filter", e))?;
        let seccomp = std::fs::File::open(&seccomp_path)
            .map_err(|e| failure("opening the seccomp filter", e))?;
        let start = Start {
            seccomp_fd: seccomp.as_raw_fd(),
            cgroup,
            user,
        };
        let (mut command, args_fd) = self
            .bwrap_command(spec, dir, workspace, start)
            .map_err(|e| failure("preparing bubblewrap's arguments", e))?;
        let spawned = command.spawn();
        drop((seccomp, args_fd));
        spawned.map_err(|error| {
            let _ = std::fs::remove_dir_all(dir);
            failure("starting bubblewrap", error)
        })
    }

    /// After a runner that never said it was ready: ends the sandbox, and says what its log
    /// ended with.
    async fn did_not_start(
        &self,
        sandbox_id: Uuid,
        pid: u32,
        mut child: tokio::process::Child,
        logged: Option<tokio::task::JoinHandle<()>>,
    ) -> SandboxError {
        self.kill(pid);
        let _ = child.wait().await;
        if let Some(logged) = logged {
            let _ = tokio::time::timeout(Duration::from_secs(1), logged).await;
        }
        let dir = self.sandbox_dir(sandbox_id);
        let log = std::fs::read_to_string(dir.join("runner.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let _ = std::fs::remove_dir_all(&dir);
        SandboxError::DidNotStart {
            log_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        }
    }

    fn write_etc(dir: &Path) -> std::io::Result<()> {
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc)?;
        std::fs::write(
            etc.join("passwd"),
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/home/sandbox:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        )?;
        std::fs::write(
            etc.join("group"),
            format!("root:x:0:\nsandbox:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"),
        )?;
        std::fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost sandbox\n::1 localhost\n",
        )?;
        Ok(())
    }

    fn kill(&self, pid: u32) {
        kill_sandbox(pid);
    }

    /// Measures the workspace every few seconds while the sandbox runs; past the cap, stops
    /// the sandbox and records why (the reaper then fails its turn with that reason).
    fn watch_workspace(
        &self,
        id: Uuid,
        pid: u32,
        watch: &Watch,
        exited: &Arc<std::sync::atomic::AtomicBool>,
    ) {
        let cap = self.options.limits.workspace_bytes;
        if cap == 0 {
            return;
        }
        let (watch, exited) = (watch.clone(), exited.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WORKSPACE_CHECK_EVERY).await;
                if exited.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Some(path) = watch.workspace.lock().expect("watch lock").clone() else {
                    return;
                };
                let Ok(used) = tokio::task::spawn_blocking(move || disk_usage(&path)).await else {
                    return;
                };
                if used <= cap || exited.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let reason = format!(
                    "the workspace holds {} MiB, over its cap of {} MiB (CENTAUR_SANDBOX_WORKSPACE_MB); the sandbox was stopped: free space in the workspace before the next turn",
                    used >> 20,
                    cap >> 20
                );
                tracing::warn!(sandbox_id = %id, %reason, "stopping a sandbox");
                *watch.ended.lock().expect("watch lock") = Some(reason);
                kill_sandbox(pid);
                return;
            }
        });
    }
}

/// bubblewrap's namespaces and the sandbox's user (uid 1000 inside).
fn isolation(a: &mut Args) {
    a.args([
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--new-session",
        "--hostname",
        "sandbox",
    ]);
    a.arg("--uid").arg(SANDBOX_UID.to_string());
    a.arg("--gid").arg(SANDBOX_UID.to_string());
}

/// Ends a sandbox: the sandbox's init is bwrap's child, and killing it ends every process in
/// the sandbox's PID namespace. Then bwrap itself.
fn kill_sandbox(pid: u32) {
    for child in children(pid) {
        // SAFETY: plain signal delivery.
        unsafe { libc::kill(child as i32, libc::SIGKILL) };
    }
    // SAFETY: plain signal delivery.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// `(parent, pid inside its innermost PID namespace)` of a process, from `/proc/<pid>/status`.
fn parent_and_inner_pid(pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let parent = field("PPid:")?.parse().ok()?;
    let inner = field("NSpid:")?.split_whitespace().last()?.parse().ok()?;
    Some((parent, inner))
}

/// Whether `peer` is the runner of the sandbox whose bubblewrap is `bwrap`: the process
/// bubblewrap's init (the sandbox's pid 1) started first, which is the sandbox's pid 2 for
/// as long as the sandbox lives. Processes the runner starts, even those that outlive their
/// parent and are handed to init, never have that pid.
fn is_runner_of(bwrap: u32, peer: u32) -> bool {
    let Some((init, 2)) = parent_and_inner_pid(peer) else {
        return false;
    };
    matches!(parent_and_inner_pid(init), Some((parent, 1)) if parent == bwrap)
}

/// Below this much room, the disk of a workspace counts as full.
const DISK_FULL_BELOW: u64 = 1 << 20;

/// "The disk is full" in words, when the file system holding `path` has less than
/// [`DISK_FULL_BELOW`] left for unprivileged users.
fn disk_full(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into the struct it is given; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let free = stat.f_bavail * stat.f_frsize;
    (free < DISK_FULL_BELOW).then(|| {
        format!(
            "the sandbox stopped with no space left on the disk that holds its workspace ({}: {} KiB free); free space there, and the next turn starts a new sandbox",
            path.display(),
            free >> 10
        )
    })
}

/// Bytes the files below `root` take on disk (links not followed; unreadable parts skipped).
fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// Appends what `from` gives to the file at `to`, up to `cap` bytes; past it, one line says
/// so and the rest is read and dropped, so the writer never blocks on a full pipe.
async fn copy_capped(mut from: tokio::process::ChildStderr, to: PathBuf, cap: u64) {
    use std::os::unix::fs::OpenOptionsExt;
    use tokio::io::AsyncReadExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&to);
    let mut file = match file {
        Ok(file) => Some(tokio::fs::File::from_std(file)),
        Err(error) => {
            tracing::warn!(path = %to.display(), %error, "cannot open the runner log; dropping it");
            None
        }
    };
    let mut written = 0u64;
    let mut buffer = vec![0; 16 << 10];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(out) = file.as_mut() else {
            continue;
        };
        let room = cap.saturating_sub(written);
        let take = (n as u64).min(room) as usize;
        if out.write_all(&buffer[..take]).await.is_err() {
            file = None;
            continue;
        }
        written += take as u64;
        if take < n {
            let _ = out
                .write_all(
                    format!("\n[runner.log reached {cap} bytes; the rest is dropped]\n").as_bytes(),
                )
                .await;
            let _ = out.flush().await;
            file = None;
        }
    }
}

/// Readies the data folder for sandboxes that run as unprivileged host users: its folders
/// become searchable (not listable) by others, the paths sandboxes mount must be reachable by
/// them, and the runner binary is copied where they can read it. Returns the copy's path.
fn prepare_for_sandbox_users(options: &LocalOptions) -> Result<PathBuf, LocalSetupError> {
    let data = &options.data_dir;
    for dir in [
        data.clone(),
        data.join("sandboxes"),
        data.join("workspaces"),
        data.join("run"),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|source| LocalSetupError::OpenToSandboxUsers { path: dir, source })?;
    }
    let mounted = [
        Some(data.as_path()),
        options.ca_file.as_deref(),
        options.harness_dir.as_deref(),
    ];
    for path in mounted.into_iter().flatten() {
        reachable_by_others(path).map_err(|blocked| LocalSetupError::Unreachable {
            path: path.to_owned(),
            blocked,
        })?;
    }
    let bin = data.join("bin");
    std::fs::create_dir_all(&bin).map_err(|source| LocalSetupError::CreateFolder {
        path: bin.clone(),
        source,
    })?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        LocalSetupError::OpenToSandboxUsers {
            path: bin.clone(),
            source,
        }
    })?;
    let copy = bin.join("centaur-runner");
    install_copy(&options.runner_bin, &copy).map_err(|source| LocalSetupError::CopyRunner {
        from: options.runner_bin.clone(),
        to: copy.clone(),
        source,
    })?;
    Ok(copy)
}

/// `Err(folder)` naming the first folder on the way to `path` that other users cannot search.
fn reachable_by_others(path: &Path) -> Result<(), PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = std::path::absolute(path).map_err(|_| path.to_owned())?;
    for folder in path.ancestors().skip(1) {
        let mode = std::fs::metadata(folder)
            .map_err(|_| folder.to_owned())?
            .mode();
        if mode & 0o001 == 0 {
            return Err(folder.to_owned());
        }
    }
    Ok(())
}

/// Copies `from` to `to` (0755) unless `to` already holds the same file, replacing it in one
/// rename so a starting sandbox never mounts half a binary.
fn install_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    let source = std::fs::metadata(from)?;
    if let Ok(existing) = std::fs::metadata(to)
        && existing.len() == source.len()
        && existing.modified()? >= source.modified()?
    {
        return Ok(());
    }
    let partial = to.with_extension(format!("partial-{}", std::process::id()));
    std::fs::copy(from, &partial)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&partial, to)
}

/// Checks that `root` is a cgroup v2 folder that can limit memory and processes for its
/// children, enabling those controllers for them if needed.
fn enable_controllers(root: &Path) -> Result<(), LocalSetupError> {
    let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap_or_default();
    let available = read("cgroup.controllers");
    for controller in ["memory", "pids"] {
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(LocalSetupError::NotCgroupV2 {
                root: root.to_owned(),
                controller,
            });
        }
    }
    let enabled = read("cgroup.subtree_control");
    for controller in ["memory", "pids"] {
        if !enabled.split_whitespace().any(|c| c == controller) {
            std::fs::write(
                root.join("cgroup.subtree_control"),
                format!("+{controller}"),
            )
            .map_err(|source| LocalSetupError::EnableController {
                root: root.to_owned(),
                controller,
                source,
            })?;
        }
    }
    Ok(())
}

fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated paths, relative to the current directory.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn is_bwrap(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let first = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            first.ends_with(b"bwrap")
        })
        .unwrap_or(false)
}

fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

fn failure(what: impl Into<String>, source: std::io::Error) -> SandboxError {
    SandboxError::Host {
        what: what.into(),
        source,
    }
}

#[async_trait]
impl SandboxBackend for LocalBackend {
    fn kind(&self) -> SandboxBackendKind {
        SandboxBackendKind::Local
    }

    fn supports_warm(&self) -> bool {
        true
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<(), SandboxError> {
        let id = spec.sandbox_id;
        let dir = self.sandbox_dir(id);
        let workspace = self.prepare_folders(spec, &dir)?;
        let user = self.options.host_users.for_workspace(&workspace)?;
        let cgroup = self.cgroup(id)?;
        let mut child = self.spawn_bwrap(spec, &dir, &workspace, cgroup.as_deref(), user)?;
        let pid = child.id().unwrap_or_default();
        if let Err(error) = std::fs::write(dir.join("pid"), pid.to_string()) {
            // Untracked, it could not be adopted or reaped later: end it now.
            self.kill(pid);
            let _ = child.wait().await;
            let _ = std::fs::remove_dir_all(&dir);
            return Err(failure("writing the pid file", error));
        }
        let logged = child.stderr.take().map(|stderr| {
            tokio::spawn(copy_capped(stderr, dir.join("runner.log"), RUNNER_LOG_CAP))
        });
        self.starting.lock().expect("starting lock").insert(
            id,
            Starting {
                child,
                pid,
                logged,
                workspace,
                attachment: spec.attachment.clone(),
            },
        );
        Ok(())
    }

    async fn ready(&self, sandbox_id: Uuid) -> Result<(), SandboxError> {
        let starting = self
            .starting
            .lock()
            .expect("starting lock")
            .remove(&sandbox_id)
            .ok_or(SandboxError::NotStarting(sandbox_id))?;
        let Starting {
            mut child,
            pid,
            logged,
            workspace,
            attachment,
        } = starting;
        let (Some(stdout), Some(mut stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(SandboxError::NotStarting(sandbox_id));
        };
        let mut stdout = tokio::io::BufReader::new(stdout);
        if !said_ready(&mut stdout).await {
            return Err(self.did_not_start(sandbox_id, pid, child, logged).await);
        }
        let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let exited = exited.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                exited.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(%sandbox_id, ?status, "sandbox exited");
                drop(stdout);
            });
        }
        let attached = match &attachment {
            Some(attachment) => send_attachment(&mut stdin, attachment).await,
            None => Ok(()),
        };
        let watch = Watch::new(workspace);
        self.watch_workspace(sandbox_id, pid, &watch, &exited);
        self.running.lock().expect("running lock").insert(
            sandbox_id,
            Running {
                pid,
                stdin: attachment.is_none().then_some(stdin),
                exited,
                adopted: false,
                watch,
            },
        );
        if let Err(error) = attached {
            let _ = self
                .stop(sandbox_id, "could not hand over its thread")
                .await;
            return Err(error);
        }
        Ok(())
    }

    async fn attach(&self, sandbox_id: Uuid, attachment: &Attachment) -> Result<(), SandboxError> {
        let workspace = self.workspace_of(attachment.thread_key.as_str());
        if workspace.exists() {
            return Err(NotAttachable::HasWorkspace.into());
        }
        let mut stdin = {
            let mut running = self.running.lock().expect("running lock");
            let sandbox = running.get_mut(&sandbox_id).ok_or(NotAttachable::Unknown)?;
            sandbox.stdin.take().ok_or(NotAttachable::AlreadyAttached)?
        };
        // The warm sandbox's empty workspace becomes the thread's (the mount follows it). Never
        // over a workspace a concurrent spawn just made.
        let claimed = self.sandbox_dir(sandbox_id).join("workspace");
        rename_no_replace(&claimed, &workspace).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => NotAttachable::WorkspaceAppeared.into(),
            _ => failure("moving the workspace", e),
        })?;
        // The watcher measures the workspace where it is now (only once it moved there).
        if let Some(watched) = self
            .running
            .lock()
            .expect("running lock")
            .get(&sandbox_id)
            .map(|r| r.watch.workspace.clone())
        {
            *watched.lock().expect("watch lock") = Some(workspace.clone());
        }
        send_attachment(&mut stdin, attachment).await
    }

    async fn status(&self, sandbox_id: Uuid) -> Result<SandboxState, SandboxError> {
        let running = self.running.lock().expect("running lock");
        Ok(match running.get(&sandbox_id) {
            None => SandboxState::Missing,
            Some(r) if r.exited.load(std::sync::atomic::Ordering::SeqCst) => SandboxState::Stopped,
            // SAFETY: signal 0 only checks that the process exists.
            Some(r) if r.adopted && unsafe { libc::kill(r.pid as i32, 0) } != 0 => {
                SandboxState::Stopped
            }
            Some(_) => SandboxState::Ready,
        })
    }

    async fn stop(&self, sandbox_id: Uuid, reason: &str) -> Result<(), SandboxError> {
        let removed = self
            .running
            .lock()
            .expect("running lock")
            .remove(&sandbox_id);
        if let Some(sandbox) = removed {
            if !sandbox.exited.load(std::sync::atomic::Ordering::SeqCst)
                && (!sandbox.adopted || is_bwrap(sandbox.pid))
            {
                self.kill(sandbox.pid);
            }
            tracing::info!(%sandbox_id, reason, "sandbox stopped");
        }
        let starting = self
            .starting
            .lock()
            .expect("starting lock")
            .remove(&sandbox_id);
        if let Some(mut starting) = starting {
            self.kill(starting.pid);
            let _ = starting.child.wait().await;
            tracing::info!(%sandbox_id, reason, "sandbox stopped while starting");
        }
        // The workspace lives elsewhere (a warm sandbox's unused one goes with it).
        let _ = std::fs::remove_dir_all(self.sandbox_dir(sandbox_id));
        if let Some(root) = &self.options.cgroup_root {
            // A cgroup can go once its processes have; they were just killed.
            let cgroup = root.join(sandbox_id.to_string());
            for _ in 0..50 {
                if std::fs::remove_dir(&cgroup).is_ok() || !cgroup.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Uuid>, SandboxError> {
        Ok(self
            .running
            .lock()
            .expect("running lock")
            .keys()
            .copied()
            .collect())
    }

    fn runner_socket(&self) -> Option<PathBuf> {
        Some(self.options.server_socket_dir.join("server.sock"))
    }

    fn is_runner(&self, sandbox_id: Uuid, pid: u32) -> bool {
        let bwrap = match self.running.lock().expect("running lock").get(&sandbox_id) {
            Some(sandbox) => sandbox.pid,
            None => return false,
        };
        is_runner_of(bwrap, pid)
    }

    fn locate_cli(&self, program: &str) -> CliLocation {
        let inside = Path::new(program);
        if inside.is_absolute() {
            if let Ok(rest) = inside.strip_prefix(HARNESS_DIR) {
                return match &self.options.harness_dir {
                    Some(dir) => found_or_missing(dir.join(rest)),
                    None => CliLocation::Missing(format!("{program}, with no CENTAUR_HARNESS_DIR")),
                };
            }
            if SYSTEM_MOUNTS.iter().any(|mount| inside.starts_with(mount)) {
                return found_or_missing(inside.to_owned());
            }
            // Somewhere the server does not see (the workspace).
            return CliLocation::Unseen;
        }
        if program.contains('/') {
            return CliLocation::Unseen;
        }
        let harness_bin = self.options.harness_dir.as_ref().map(|dir| dir.join("bin"));
        let found = harness_bin
            .iter()
            .cloned()
            .chain(SYSTEM_PATH.iter().map(PathBuf::from))
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file());
        match (found, harness_bin) {
            (Some(path), _) => CliLocation::Found(path),
            (None, Some(bin)) => CliLocation::Missing(bin.join(program).display().to_string()),
            (None, None) => CliLocation::Missing(format!(
                "no CENTAUR_HARNESS_DIR, and no {program} in {}",
                SYSTEM_PATH.join(":")
            )),
        }
    }

    async fn why_stopped(&self, sandbox_id: Uuid) -> Option<String> {
        let workspace = {
            let running = self.running.lock().expect("running lock");
            let sandbox = running.get(&sandbox_id)?;
            if let Some(reason) = sandbox.watch.ended.lock().expect("watch lock").clone() {
                return Some(reason);
            }
            sandbox
                .watch
                .workspace
                .lock()
                .expect("watch lock")
                .clone()?
        };
        // A full disk makes harnesses and the runner fail in ways that look like crashes.
        disk_full(&workspace)
    }

    async fn shutdown(&self) {
        let mut ids: Vec<Uuid> = self
            .running
            .lock()
            .expect("running lock")
            .keys()
            .copied()
            .collect();
        ids.extend(self.starting.lock().expect("starting lock").keys().copied());
        for id in ids {
            let _ = self.stop(id, "the server is shutting down").await;
        }
    }
}

fn found_or_missing(path: PathBuf) -> CliLocation {
    if path.is_file() {
        CliLocation::Found(path)
    } else {
        CliLocation::Missing(path.display().to_string())
    }
}

/// Whether the runner's first line (within [`READY_TIMEOUT`]) is `ready`.
async fn said_ready(stdout: &mut tokio::io::BufReader<tokio::process::ChildStdout>) -> bool {
    let mut line = String::new();
    let ready = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await;
    matches!(ready, Ok(Ok(n)) if n > 0 && line.trim() == "ready")
}

async fn send_attachment(
    stdin: &mut ChildStdin,
    attachment: &Attachment,
) -> Result<(), SandboxError> {
    let mut line = serde_json::to_vec(attachment).expect("serializable");
    line.push(b'\n');
    stdin
        .write_all(&line)
        .await
        .map_err(|e| failure("handing the sandbox its thread", e))?;
    stdin
        .flush()
        .await
        .map_err(|e| failure("handing the sandbox its thread", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(processes: u64, allow_unlimited_processes: bool) -> LocalOptions {
        LocalOptions {
            data_dir: std::env::temp_dir().join(format!("local-{}", Uuid::new_v4())),
            server_socket_dir: PathBuf::from("/nonexistent"),
            runner_bin: PathBuf::from("/nonexistent/centaur-runner"),
            bwrap: PathBuf::from("bwrap"),
            ca_file: None,
            harness_dir: None,
            limits: ResourceLimits {
                processes,
                ..ResourceLimits::default()
            },
            host_users: HostUsers::ServerUser,
            allow_unlimited_processes,
            cgroup_root: None,
        }
    }

    #[test]
    fn no_process_limit_at_all_is_refused_unless_asked_for() {
        let error = LocalBackend::new(options(0, false)).err().unwrap();
        assert!(
            matches!(error, LocalSetupError::UnlimitedProcesses),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("CENTAUR_SANDBOX_ALLOW_UNLIMITED_PROCESSES"),
            "the refusal names the way out: {error}"
        );
        // Opted out, it gets past that check (to the missing runner binary).
        let error = LocalBackend::new(options(0, true)).err().unwrap();
        assert!(matches!(error, LocalSetupError::NoRunner(_)), "{error}");
    }
}
