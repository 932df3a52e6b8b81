//! `centaur dev doctor`: every prerequisite and setting of a local stack, each failure with
//! the command that fixes it on this machine (Debian/Ubuntu on Linux, or macOS).

use std::process::{Command, ExitCode, Stdio};

use centaur_protocol::Harness;

use super::home::Home;
use super::setup::{MODEL_KEYS, ModelKey};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    /// Works, with less (for example rlimits instead of cgroups).
    Warn,
    Fail,
}

struct Check {
    name: &'static str,
    level: Level,
    detail: String,
    debian: Option<String>,
    macos: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Ok,
            detail: detail.into(),
            debian: None,
            macos: None,
        }
    }

    fn bad(
        name: &'static str,
        level: Level,
        detail: impl Into<String>,
        debian: &str,
        macos: &str,
    ) -> Check {
        Check {
            name,
            level,
            detail: detail.into(),
            debian: Some(debian.to_owned()),
            macos: Some(macos.to_owned()),
        }
    }
}

impl Check {
    /// The fix on this machine's operating system, if there is one.
    fn fix_here(&self) -> Option<&str> {
        if cfg!(target_os = "macos") {
            self.macos.as_deref()
        } else {
            self.debian.as_deref()
        }
        .filter(|fix| *fix != "—")
    }
}

/// How the fixes `doctor` prints are labelled on this machine.
const FIX_LABEL: &str = if cfg!(target_os = "macos") {
    "fix (macOS):"
} else {
    "fix (Debian/Ubuntu):"
};

/// The fix on a machine that is not Linux: no sandbox backend runs elsewhere yet.
const NOT_LINUX: &str = "the local backend needs Linux (bubblewrap): use a Linux VM";

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Whether bubblewrap can make the namespaces a sandbox needs.
pub fn bwrap_works() -> bool {
    Command::new("bwrap")
        .args([
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            "/",
            "/",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The checks; `advisory` adds those that only warn (tools for optional harnesses).
fn checks(home: &Home, port: u16, advisory: bool) -> Vec<Check> {
    let mut checks = vec![operating_system(), postgres()];
    checks.extend(home_folders(home));
    checks.extend(bubblewrap());
    checks.push(cgroups());
    // What only advises (and takes time: `npm --version` alone is 0.2 s) is left to `doctor`.
    if advisory {
        checks.push(node());
        checks.push(uv());
        checks.extend(MODEL_KEYS.iter().map(|key| harness_cli(home, key)));
        checks.push(slack(home));
    }
    checks.push(api_port(home, port));
    checks.push(Check::ok(
        "keys and tokens",
        format!(
            "kept in 0600 files in {} (read by the proxy, never by sandboxes)",
            home.root.display()
        ),
    ));
    checks.push(disk_space(home));
    checks.push(clock());
    checks
}

fn operating_system() -> Check {
    if cfg!(target_os = "linux") {
        Check::ok(
            "operating system",
            output("uname", &["-sr"]).unwrap_or_else(|| "Linux".into()),
        )
    } else {
        Check::bad("operating system", Level::Fail, "not Linux", "—", NOT_LINUX)
    }
}

/// PostgreSQL's server binaries, 13 or newer.
fn postgres() -> Check {
    const MACOS: &str =
        "brew install postgresql@15, then CENTAUR_PG_BINDIR=$(brew --prefix postgresql@15)/bin";
    let Some(dir) = centaur_server::pg_cluster::find_bin_dir() else {
        return Check::bad(
            "PostgreSQL",
            Level::Fail,
            "no initdb and pg_ctl (server binaries) found",
            "sudo apt-get install -y postgresql (or set CENTAUR_PG_BINDIR)",
            MACOS,
        );
    };
    let version =
        output(&dir.join("pg_ctl").display().to_string(), &["--version"]).unwrap_or_default();
    // "pg_ctl (PostgreSQL) 15.14", or with a suffix such as "(Homebrew)".
    let major: u32 = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if major >= 13 {
        Check::ok("PostgreSQL", format!("{version} in {}", dir.display()))
    } else {
        Check::bad(
            "PostgreSQL",
            Level::Fail,
            format!("{version} is older than 13"),
            "sudo apt-get install -y postgresql",
            MACOS,
        )
    }
}

/// Under root: a folder above the home that PostgreSQL and the sandboxes cannot enter.
fn home_folders(home: &Home) -> Option<Check> {
    let blocked = unreachable_for_postgres(home)?;
    Some(Check::bad(
        "the home's folders",
        Level::Fail,
        format!(
            "under root, PostgreSQL (as `nobody`) and sandboxes (as unprivileged uids of their own) cannot enter {}",
            blocked.display()
        ),
        &format!(
            "CENTAUR_HOME=/var/lib/centaur centaur dev (or chmod o+x {})",
            blocked.display()
        ),
        "—",
    ))
}

/// bubblewrap on PATH, and (when it is) whether it can make a sandbox's namespaces.
fn bubblewrap() -> Vec<Check> {
    let Some(path) = on_path("bwrap") else {
        return vec![Check::bad(
            "bubblewrap",
            Level::Fail,
            "`bwrap` is not on PATH",
            "sudo apt-get install -y bubblewrap",
            NOT_LINUX,
        )];
    };
    let found = Check::ok(
        "bubblewrap",
        format!(
            "{} ({})",
            output("bwrap", &["--version"]).unwrap_or_default(),
            path.display()
        ),
    );
    let namespaces = if bwrap_works() {
        Check::ok("user namespaces", "bubblewrap can make a sandbox")
    } else {
        Check::bad(
            "user namespaces",
            Level::Fail,
            "bubblewrap cannot make namespaces here",
            "sudo sysctl -w kernel.unprivileged_userns_clone=1 (Ubuntu 24.04+: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)",
            NOT_LINUX,
        )
    };
    vec![found, namespaces]
}

fn cgroups() -> Check {
    let controllers =
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    if controllers.contains("memory") && controllers.contains("pids") {
        Check::ok("cgroups v2", format!("controllers: {}", controllers.trim()))
    } else {
        Check::bad(
            "cgroups v2",
            Level::Warn,
            "no cgroup v2 memory and pids controllers: sandboxes get rlimits instead",
            "boot with systemd.unified_cgroup_hierarchy=1, and delegate a cgroup (CENTAUR_CGROUP_ROOT)",
            NOT_LINUX,
        )
    }
}

/// Node.js and npm, which install the Codex and Claude Code CLIs.
fn node() -> Check {
    match (
        output("node", &["--version"]),
        output("npm", &["--version"]),
    ) {
        (Some(node), Some(npm)) => Check::ok("Node.js and npm", format!("node {node}, npm {npm}")),
        _ => Check::bad(
            "Node.js and npm",
            Level::Warn,
            "missing: the Codex and Claude Code harnesses cannot be installed (shell and echo work)",
            "sudo apt-get install -y nodejs npm",
            "brew install node",
        ),
    }
}

/// `uv`, which builds each tool's Python environment (without it, tools are reported broken;
/// everything else works).
fn uv() -> Check {
    const FIX: &str = "python3 -m pip install --user uv (add --break-system-packages on a PEP 668 Python, or: pipx install uv)";
    let Some(path) = super::tools::find_uv() else {
        return Check::bad(
            "uv",
            Level::Warn,
            "not found: tools cannot be built (the rest works)",
            FIX,
            "brew install uv",
        );
    };
    match output(&path.display().to_string(), &["--version"]) {
        Some(version) => Check::ok("uv", format!("{version} ({})", path.display())),
        None => Check::bad(
            "uv",
            Level::Warn,
            format!("{} does not run: tools cannot be built", path.display()),
            FIX,
            "brew install uv",
        ),
    }
}

/// A model harness's CLI: installed, and its key given.
fn harness_cli(home: &Home, key: &ModelKey) -> Check {
    let name = match key.harness {
        Harness::Codex => "Codex CLI",
        Harness::ClaudeCode | Harness::Amp | Harness::Shell | Harness::Echo => "Claude Code CLI",
    };
    let (detail, fix) = match (key.installed(home), key.present(home)) {
        (true, true) => {
            return Check::ok(name, format!("installed; {} present", key.secret));
        }
        (true, false) => (
            format!("installed, but no {}", key.secret),
            "centaur dev keys",
        ),
        (false, true) => (
            format!("not installed yet ({})", key.package),
            "centaur dev (installs it with npm)",
        ),
        (false, false) => (
            format!("not installed, no {} (optional)", key.secret),
            "centaur dev keys, then centaur dev",
        ),
    };
    Check::bad(name, Level::Warn, detail, fix, fix)
}

/// Whether `centaur dev slack` connected a Slack app (optional: off is fine).
fn slack(home: &Home) -> Check {
    use super::slack::State;
    match super::slack::state(home) {
        State::On => Check::ok(
            "Slack",
            "bot and app-level tokens saved: the stack runs the bot in Socket Mode",
        ),
        State::Off => Check::ok(
            "Slack",
            "off (optional: `centaur dev slack` connects a Slack app)",
        ),
        State::Half(missing) => Check::bad(
            "Slack",
            Level::Warn,
            format!("half configured: {missing}"),
            "centaur dev slack",
            "centaur dev slack",
        ),
    }
}

/// The API's port when none is given and no stack runs.
pub const DEFAULT_PORT: u16 = 8080;

/// The port of a URL such as `http://127.0.0.1:8181`.
fn port_of(url: &str) -> Option<u16> {
    url.trim_end_matches('/').rsplit(':').next()?.parse().ok()
}

/// The API's port: free, or this home's running stack's.
fn api_port(home: &Home, port: u16) -> Check {
    let ours = home
        .running()
        .is_some_and(|s| s.api_url.ends_with(&format!(":{port}")));
    if ours {
        return Check::ok("API port", format!("{port} (this stack)"));
    }
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return Check::ok("API port", format!("{port} is free"));
    }
    Check::bad(
        "API port",
        Level::Fail,
        format!("{port} is in use"),
        &format!(
            "centaur dev --port {} (or see `ss -ltnp 'sport = :{port}'`)",
            port + 1
        ),
        &format!("centaur dev --port {} (or see `lsof -i :{port}`)", port + 1),
    )
}

/// Room where the home lives: 2 GiB is plenty, under 512 MiB too little.
fn disk_space(home: &Home) -> Check {
    const FIX: &str = "free some space, or set CENTAUR_HOME to a larger disk";
    let gib = |bytes: u64| bytes as f64 / f64::from(1 << 30);
    match free_bytes(&home.root) {
        Some(free) if free >= 2 << 30 => {
            Check::ok("disk space", format!("{:.1} GiB free", gib(free)))
        }
        Some(free) => Check::bad(
            "disk space",
            if free < 512 << 20 {
                Level::Fail
            } else {
                Level::Warn
            },
            format!(
                "{:.1} GiB free where {} lives",
                gib(free),
                home.root.display()
            ),
            FIX,
            FIX,
        ),
        None => Check::bad("disk space", Level::Warn, "cannot tell", "df -h", "df -h"),
    }
}

/// A clock far enough along for TLS certificates to verify.
fn clock() -> Check {
    let now = chrono::Utc::now();
    if now.timestamp() > 1_735_689_600 {
        Check::ok("clock", now.format("%Y-%m-%d %H:%M UTC").to_string())
    } else {
        Check::bad(
            "clock",
            Level::Fail,
            format!(
                "{} is before 2025: TLS certificates will not verify",
                now.format("%Y-%m-%d")
            ),
            "sudo timedatectl set-ntp true",
            "sudo sntp -sS time.apple.com",
        )
    }
}

/// Under root, PostgreSQL runs as an unprivileged user, who must be able to enter every
/// folder above the home: the first one it cannot enter.
fn unreachable_for_postgres(home: &Home) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    home.root
        .ancestors()
        .skip(1)
        .filter_map(|dir| Some((dir, std::fs::metadata(dir).ok()?)))
        .find(|(_, meta)| meta.permissions().mode() & 0o001 == 0 && meta.uid() != 65534)
        .map(|(dir, _)| dir.to_owned())
}

/// Free bytes on the file system of `path` (or of its nearest existing parent).
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the struct for a valid C string path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } == 0)
        .then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// `port`: the API port to check [default: the running stack's, else 8080].
pub fn run(home: &Home, port: Option<u16>) -> ExitCode {
    let port = port
        .or_else(|| home.running().and_then(|s| port_of(&s.api_url)))
        .unwrap_or(DEFAULT_PORT);
    let checks = checks(home, port, true);
    for check in &checks {
        let mark = match check.level {
            Level::Ok => "✓",
            Level::Warn => "!",
            Level::Fail => "✗",
        };
        println!("{mark} {:<18} {}", check.name, check.detail);
        // Only this machine's fix: macOS advice on Linux is noise.
        if check.level != Level::Ok
            && let Some(fix) = check.fix_here()
        {
            println!("    {FIX_LABEL} {fix}");
        }
    }
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    if failed == 0 {
        println!("\nready for `centaur dev`");
        ExitCode::SUCCESS
    } else {
        println!("\n{failed} problem(s) to fix before `centaur dev`");
        ExitCode::from(1)
    }
}

/// A check `centaur dev` cannot start without failed.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {detail}; fix: {fix} (`centaur dev doctor` checks everything)")]
pub struct NotReady {
    pub name: &'static str,
    pub detail: String,
    /// The fix on this operating system.
    pub fix: String,
}

/// What `centaur dev` cannot start without: the first failure, with its fix.
pub fn preflight(home: &Home, port: u16) -> Result<(), NotReady> {
    let fatal = checks(home, port, false)
        .into_iter()
        .find(|c| c.level == Level::Fail);
    match fatal {
        None => Ok(()),
        Some(check) => Err(NotReady {
            name: check.name,
            fix: check.fix_here().unwrap_or_default().to_owned(),
            detail: check.detail,
        }),
    }
}
