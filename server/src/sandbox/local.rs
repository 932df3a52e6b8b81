//! The `local` backend: each sandbox is a bubblewrap (`bwrap`) process tree on this machine.
//!
//! Inside: its own user, mount, PID, IPC, UTS and network namespaces (no network at all), the
//! system read-only (`/usr` and the few files of `/etc` programs need), a private `/tmp`, the
//! thread's workspace at `/workspace`, and an unprivileged user (`sandbox`, uid 1000). The only
//! ways out are two folders mounted read-only: the server's runner socket and the egress
//! proxy's socket for this sandbox. Nothing else of the host is visible: no home directories,
//! no server data, no secrets.
//!
//! Sandboxes outlive a crashed server (their pid is kept in their folder, and a restarted
//! server adopts them); warm sandboxes, still waiting for a thread on their stdin, end with it.
//! Limits: with a delegated cgroup v2 (`CENTAUR_CGROUP_ROOT`), each sandbox gets its own cgroup
//! with `memory.max` and `pids.max`; otherwise rlimits (address space, processes when not
//! running as root). Open files and core dumps are always rlimits.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use centaur_protocol::runner::Attachment;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use uuid::Uuid;

use super::{SandboxBackend, SandboxError, SandboxSpec, SandboxState};

/// How long a runner may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const SANDBOX_UID: u32 = 1000;

/// Inside paths.
const SERVER_DIR: &str = "/run/centaur/server";
const PROXY_DIR: &str = "/run/centaur/proxy";
const RUNNER: &str = "/opt/centaur/bin/centaur-runner";
const HARNESS_DIR: &str = "/opt/centaur/harness";
const CA_FILE: &str = "/etc/centaur/ca.pem";
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
    /// A delegated cgroup v2 folder (its `cgroup.subtree_control` may enable `memory` and
    /// `pids`) under which each sandbox gets its own cgroup. Without it, rlimits.
    pub cgroup_root: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug)]
pub struct ResourceLimits {
    /// Address space per process (RLIMIT_AS); 0 for none.
    pub memory_bytes: u64,
    pub open_files: u64,
    /// Processes (RLIMIT_NPROC). It counts every process of the server's user, so it is only
    /// set when the server does not run as root.
    pub processes: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            memory_bytes: 8 << 30,
            open_files: 4096,
            processes: 4096,
        }
    }
}

impl ResourceLimits {
    /// What is in force, in words (for `centaur dev doctor` and the logs).
    pub fn describe(&self, cgroup_root: Option<&Path>) -> String {
        if let Some(root) = cgroup_root {
            return format!(
                "cgroups v2 under {}: {} MiB of memory and {} processes per sandbox; rlimits: {} open files",
                root.display(),
                self.memory_bytes >> 20,
                self.processes,
                self.open_files
            );
        }
        let processes = if is_root() {
            "no process limit (running as root)".to_owned()
        } else {
            format!("{} processes per user", self.processes)
        };
        format!(
            "rlimits: {} MiB address space per process, {} open files, {processes}; cgroups are not used",
            self.memory_bytes >> 20,
            self.open_files
        )
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

struct Running {
    /// The bwrap process.
    pid: u32,
    /// A warm sandbox's runner waits for its attachment here.
    stdin: Option<ChildStdin>,
    exited: Arc<std::sync::atomic::AtomicBool>,
    /// Taken by another server process that crashed; not our child.
    adopted: bool,
}

pub struct LocalBackend {
    options: LocalOptions,
    running: Mutex<HashMap<Uuid, Running>>,
}

impl LocalBackend {
    /// Checks the prerequisites and adopts sandboxes a previous server left running.
    pub fn new(options: LocalOptions) -> Result<LocalBackend, String> {
        if !options.runner_bin.is_file() {
            return Err(format!(
                "the runner binary {} does not exist (build it: cargo build -p centaur-runner, or set CENTAUR_RUNNER_BIN)",
                options.runner_bin.display()
            ));
        }
        if which(&options.bwrap).is_none() {
            return Err(format!(
                "bubblewrap ({}) is not installed: apt-get install -y bubblewrap",
                options.bwrap.display()
            ));
        }
        for dir in ["sandboxes", "workspaces"] {
            std::fs::create_dir_all(options.data_dir.join(dir))
                .map_err(|e| format!("creating {}: {e}", options.data_dir.join(dir).display()))?;
        }
        let backend = LocalBackend {
            options,
            running: Mutex::new(HashMap::new()),
        };
        if let Some(root) = &backend.options.cgroup_root {
            enable_controllers(root)?;
        }
        backend.adopt();
        let limits = backend
            .options
            .limits
            .describe(backend.options.cgroup_root.as_deref());
        tracing::info!(%limits, "local sandbox backend ready");
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
                .map_err(|e| failure(&format!("setting {file} of the sandbox's cgroup"), e))?;
        }
        // No swapping around the memory limit, where the kernel offers the knob.
        if cgroup.join("memory.swap.max").exists() {
            let _ = std::fs::write(cgroup.join("memory.swap.max"), "0");
        }
        Ok(Some(cgroup))
    }

    fn bwrap_command(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        workspace: &Path,
        cgroup: Option<&Path>,
        seccomp_fd: i32,
    ) -> tokio::process::Command {
        let o = &self.options;
        let mut c = tokio::process::Command::new(&o.bwrap);
        c.arg("--seccomp").arg(seccomp_fd.to_string());
        c.args([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--unshare-cgroup-try",
            "--new-session",
            "--hostname",
            "sandbox",
        ]);
        c.arg("--uid").arg(SANDBOX_UID.to_string());
        c.arg("--gid").arg(SANDBOX_UID.to_string());
        c.args(["--ro-bind", "/usr", "/usr"]);
        for top in ["bin", "lib", "lib64", "sbin"] {
            let host = Path::new("/").join(top);
            match std::fs::read_link(&host) {
                Ok(target) => {
                    c.arg("--symlink").arg(target).arg(&host);
                }
                Err(_) if host.is_dir() => {
                    c.arg("--ro-bind").arg(&host).arg(&host);
                }
                Err(_) => {}
            }
        }
        // The parts of /etc that programs need, nothing else.
        for file in [
            "/etc/ssl/certs",
            "/etc/ca-certificates",
            "/etc/alternatives",
            "/etc/ld.so.cache",
            "/etc/localtime",
            "/etc/nsswitch.conf",
            "/etc/bash.bashrc",
            "/etc/profile",
            "/etc/mime.types",
        ] {
            if Path::new(file).exists() {
                c.args(["--ro-bind", file, file]);
            }
        }
        for file in ["passwd", "group", "hosts"] {
            c.arg("--ro-bind")
                .arg(dir.join("etc").join(file))
                .arg(format!("/etc/{file}"));
        }
        c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        c.args(["--tmpfs", "/home/sandbox", "--dir", "/run/centaur"]);
        c.arg("--bind").arg(workspace).arg(WORKSPACE);
        c.arg("--ro-bind").arg(&o.server_socket_dir).arg(SERVER_DIR);
        let proxy_dir = spec
            .egress
            .as_ref()
            .and_then(|e| e.socket.as_ref())
            .and_then(|s| s.parent());
        if let Some(proxy_dir) = proxy_dir {
            c.arg("--ro-bind").arg(proxy_dir).arg(PROXY_DIR);
        }
        c.arg("--ro-bind").arg(&o.runner_bin).arg(RUNNER);
        if let Some(ca) = &o.ca_file {
            c.arg("--ro-bind").arg(ca).arg(CA_FILE);
        }
        let mut path = String::from("/usr/local/bin:/usr/bin:/bin");
        if let Some(harness) = &o.harness_dir {
            c.arg("--ro-bind").arg(harness).arg(HARNESS_DIR);
            path = format!("{HARNESS_DIR}/bin:{path}");
        }
        // Everything not mounted writable above (the workspace, /tmp, the home) is read-only.
        c.args(["--remount-ro", "/"]);
        c.arg("--clearenv");
        let mut env: Vec<(&str, String)> = vec![
            ("PATH", path),
            ("HOME", "/home/sandbox".into()),
            ("USER", "sandbox".into()),
            ("LANG", "C.UTF-8".into()),
            ("TERM", "xterm-256color".into()),
            ("CENTAUR_SERVER", format!("unix:{SERVER_DIR}/server.sock")),
            ("CENTAUR_WORKSPACE", WORKSPACE.into()),
        ];
        if proxy_dir.is_some() {
            env.push(("CENTAUR_PROXY_SOCKET", format!("{PROXY_DIR}/proxy.sock")));
        }
        if o.ca_file.is_some() {
            env.push(("CENTAUR_CA_FILE", CA_FILE.into()));
        }
        if let Ok(filter) = std::env::var("CENTAUR_RUNNER_LOG") {
            env.push(("RUST_LOG", filter));
        }
        for (key, value) in env {
            c.arg("--setenv").arg(key).arg(value);
        }
        c.args(["--chdir", WORKSPACE, RUNNER]);
        let limits = o.limits;
        let root = is_root();
        // Joining the cgroup happens in the child before exec, so bubblewrap and everything it
        // starts are inside from the first instruction.
        let procs = cgroup.map(|cg| {
            std::ffi::CString::new(
                cg.join("cgroup.procs")
                    .into_os_string()
                    .into_encoded_bytes(),
            )
            .expect("no NUL in a path")
        });
        // SAFETY: only async-signal-safe calls (fcntl, open, write, close, setrlimit) between fork
        // and exec; the path was prepared before the fork.
        unsafe {
            c.pre_exec(move || {
                // The seccomp program's descriptor must survive exec, in this child only.
                if libc::fcntl(seccomp_fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
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
                if procs.is_none() && !root && limits.processes > 0 {
                    set(libc::RLIMIT_NPROC, limits.processes);
                }
                Ok(())
            });
        }
        c.process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(false);
        c
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
        // The sandbox's init is bwrap's child; killing it ends every process in the sandbox's
        // PID namespace. Then bwrap itself.
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            // SAFETY: plain signal delivery.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        // SAFETY: plain signal delivery.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Checks that `root` is a cgroup v2 folder that can limit memory and processes for its
/// children, enabling those controllers for them if needed.
fn enable_controllers(root: &Path) -> Result<(), String> {
    let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap_or_default();
    let available = read("cgroup.controllers");
    for controller in ["memory", "pids"] {
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(format!(
                "CENTAUR_CGROUP_ROOT {} is not a cgroup v2 folder offering the `{controller}` controller (see docs/sandboxes.md)",
                root.display()
            ));
        }
    }
    let enabled = read("cgroup.subtree_control");
    for controller in ["memory", "pids"] {
        if !enabled.split_whitespace().any(|c| c == controller) {
            std::fs::write(root.join("cgroup.subtree_control"), format!("+{controller}")).map_err(|e| {
                format!(
                    "cannot enable the `{controller}` controller under {} ({e}); delegate that cgroup to the server's user",
                    root.display()
                )
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

fn failure(what: &str, error: impl std::fmt::Display) -> SandboxError {
    SandboxError::Backend(format!("{what}: {error}"))
}

#[async_trait]
impl SandboxBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn supports_warm(&self) -> bool {
        true
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<(), SandboxError> {
        let id = spec.sandbox_id;
        let dir = self.sandbox_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| failure("creating the sandbox folder", e))?;
        Self::write_etc(&dir).map_err(|e| failure("writing the sandbox's /etc", e))?;
        let workspace = match &spec.attachment {
            Some(attachment) => self.workspace_of(attachment.thread_key.as_str()),
            None => dir.join("workspace"),
        };
        std::fs::create_dir_all(&workspace).map_err(|e| failure("creating the workspace", e))?;
        if is_root() {
            // The sandbox's user is the server's user seen from inside; keep it writable.
            let _ = std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o755));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("runner.log"))
            .map_err(|e| failure("opening the runner log", e))?;
        let cgroup = self.cgroup(id)?;
        // bubblewrap reads the seccomp program from an inherited descriptor.
        let seccomp_path = dir.join("seccomp.bpf");
        let program = super::seccomp::program().ok_or_else(|| {
            SandboxError::Backend(
                "the sandbox's seccomp filter knows only x86_64 and aarch64 system calls".into(),
            )
        })?;
        std::fs::write(&seccomp_path, program)
            .map_err(|e| failure("writing the seccomp filter", e))?;
        let seccomp = std::fs::File::open(&seccomp_path)
            .map_err(|e| failure("opening the seccomp filter", e))?;
        let seccomp_fd = std::os::fd::AsRawFd::as_raw_fd(&seccomp);
        let mut command = self.bwrap_command(spec, &dir, &workspace, cgroup.as_deref(), seccomp_fd);
        command.stderr(log);
        let spawned = command.spawn();
        drop(seccomp);
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(failure("starting bubblewrap", error));
            }
        };
        let pid = child.id().unwrap_or_default();
        if let Err(error) = std::fs::write(dir.join("pid"), pid.to_string()) {
            // Untracked, it could not be adopted or reaped later: end it now.
            self.kill(pid);
            let _ = child.wait().await;
            let _ = std::fs::remove_dir_all(&dir);
            return Err(failure("writing the pid file", error));
        }
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut stdin = child.stdin.take().expect("piped");
        let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut line = String::new();
        let ready = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await;
        if !matches!(ready, Ok(Ok(n)) if n > 0 && line.trim() == "ready") {
            self.kill(pid);
            let _ = child.wait().await;
            let log = std::fs::read_to_string(dir.join("runner.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(SandboxError::Backend(format!(
                "the sandbox did not start: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        {
            let exited = exited.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                exited.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(sandbox_id = %id, ?status, "sandbox exited");
                drop(stdout);
            });
        }
        let attached = match &spec.attachment {
            Some(attachment) => send_attachment(&mut stdin, attachment).await,
            None => Ok(()),
        };
        self.running.lock().expect("running lock").insert(
            id,
            Running {
                pid,
                stdin: spec.attachment.is_none().then_some(stdin),
                exited,
                adopted: false,
            },
        );
        if let Err(error) = attached {
            let _ = self.stop(id, "could not hand over its thread").await;
            return Err(error);
        }
        Ok(())
    }

    async fn attach(&self, sandbox_id: Uuid, attachment: &Attachment) -> Result<(), SandboxError> {
        let workspace = self.workspace_of(attachment.thread_key.as_str());
        if workspace.exists() {
            return Err(SandboxError::NotAttachable(
                "the thread already has a workspace, which only a new sandbox can mount".into(),
            ));
        }
        let mut stdin = {
            let mut running = self.running.lock().expect("running lock");
            let sandbox = running
                .get_mut(&sandbox_id)
                .ok_or_else(|| SandboxError::NotAttachable("no such warm sandbox".into()))?;
            sandbox.stdin.take().ok_or_else(|| {
                SandboxError::NotAttachable("the sandbox is already attached".into())
            })?
        };
        // The warm sandbox's empty workspace becomes the thread's (the mount follows it). Never
        // over a workspace a concurrent spawn just made.
        rename_no_replace(&self.sandbox_dir(sandbox_id).join("workspace"), &workspace).map_err(
            |e| match e.raw_os_error() {
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => {
                    SandboxError::NotAttachable("the thread's workspace appeared meanwhile".into())
                }
                _ => failure("moving the workspace", e),
            },
        )?;
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

    async fn shutdown(&self) {
        let ids: Vec<Uuid> = self
            .running
            .lock()
            .expect("running lock")
            .keys()
            .copied()
            .collect();
        for id in ids {
            let _ = self.stop(id, "the server is shutting down").await;
        }
    }
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
