//! What a stack needs before it starts, made once and kept in `CENTAUR_HOME`: the proxy's CA,
//! the dev and proxy tokens, model keys (asked for, kept in 0600 files the proxy reads, never
//! in a sandbox), the egress policy and Codex's provider settings, and the harness CLIs.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use centaur_protocol::Harness;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::endpoints::{Endpoints, Provider};
use super::home::Home;
use centaur_client::private_file::{WriteError, write as write_private};

/// Why the home could not be prepared, or a harness CLI installed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create {}: {source}", .path.display())]
    CreateFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the proxy's CA: {0}")]
    Ca(#[source] centaur_proxy::tls::TlsError),
    /// `what` names the file for people ("the CA", "the egress policy").
    #[error("cannot write {what}: {source}")]
    Write {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Private(#[from] WriteError),
    #[error("cannot ask for the key: {0}")]
    Prompt(#[source] dialoguer::Error),
    #[error(
        "cannot run npm ({0}): install Node.js and npm (Debian/Ubuntu: `sudo apt-get install -y nodejs npm`; macOS: `brew install node`)"
    )]
    NoNpm(#[source] std::io::Error),
    /// npm's last line of complaint.
    #[error("npm install {package} failed: {said}")]
    Npm { package: &'static str, said: String },
    #[error("{package} has no {binary} for this machine")]
    NoBinary {
        package: &'static str,
        binary: &'static str,
    },
    #[error("cannot link {}: {source}", .path.display())]
    Link {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn create_folder(path: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(path).map_err(|source| SetupError::CreateFolder {
        path: path.to_owned(),
        source,
    })
}

/// A model key the proxy swaps in, and the harness that needs it.
pub struct ModelKey {
    /// Whose key it is (named in messages: "needs an OpenAI key").
    pub provider: Provider,
    pub secret: &'static str,
    pub file: &'static str,
    pub label: &'static str,
    pub harness: Harness,
    /// npm package (pinned to the version Centaur is tested with) and its binary inside
    /// `node_modules`.
    pub package: &'static str,
    pub binary: &'static str,
    pub command: &'static str,
}

#[cfg(target_arch = "aarch64")]
const CODEX_BINARY: &str = "@openai/codex-linux-arm64/vendor/aarch64-unknown-linux-musl/bin/codex";
#[cfg(not(target_arch = "aarch64"))]
const CODEX_BINARY: &str = "@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex";
#[cfg(target_arch = "aarch64")]
const CLAUDE_BINARY: &str = "@anthropic-ai/claude-code-linux-arm64/claude";
#[cfg(not(target_arch = "aarch64"))]
const CLAUDE_BINARY: &str = "@anthropic-ai/claude-code-linux-x64/claude";

pub const MODEL_KEYS: [ModelKey; 2] = [
    ModelKey {
        provider: Provider::OpenAi,
        secret: "OPENAI_API_KEY",
        file: "openai-api-key",
        label: "OpenAI API key (for Codex)",
        harness: Harness::Codex,
        package: "@openai/codex@0.169.0",
        binary: CODEX_BINARY,
        command: "codex",
    },
    ModelKey {
        provider: Provider::Anthropic,
        secret: "ANTHROPIC_API_KEY",
        file: "anthropic-api-key",
        label: "Anthropic API key (for Claude Code)",
        harness: Harness::ClaudeCode,
        package: "@anthropic-ai/claude-code@2.1.197",
        binary: CLAUDE_BINARY,
        command: "claude",
    },
];

impl ModelKey {
    pub fn path(&self, home: &Home) -> PathBuf {
        home.secrets().join(self.file)
    }

    pub fn present(&self, home: &Home) -> bool {
        std::fs::read_to_string(self.path(home)).is_ok_and(|k| !k.trim().is_empty())
    }

    pub fn installed(&self, home: &Home) -> bool {
        home.harnesses().join("bin").join(self.command).exists()
    }
}

/// One step people wait for: a spinner on a terminal, and a line saying how it went.
pub struct Step {
    bar: ProgressBar,
    what: String,
    started: Instant,
}

impl Step {
    pub fn start(what: impl Into<String>) -> Step {
        let what = what.into();
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(80));
            bar
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(what.clone());
        Step {
            bar,
            what,
            started: Instant::now(),
        }
    }

    pub fn done(self, detail: &str) {
        self.bar.finish_and_clear();
        let took = self.started.elapsed().as_secs_f64();
        if detail.is_empty() {
            eprintln!("✓ {} ({took:.1}s)", self.what);
        } else {
            eprintln!("✓ {}: {detail} ({took:.1}s)", self.what);
        }
    }

    pub fn failed(self) {
        self.bar.finish_and_clear();
        eprintln!("✗ {}", self.what);
    }
}

/// Held while one `centaur dev` prepares the home, so two never write it at once. When another
/// holds it (asking for a key, or starting the stack), says so on stderr before waiting.
pub fn lock(home: &Home) -> Result<std::fs::File, SetupError> {
    create_folder(&home.root)?;
    let path = home.root.join("setup.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SetupError::Open {
            path: path.clone(),
            source,
        })?;
    lock_exclusive(&file, || {
        eprintln!(
            "centaur: waiting for another `centaur dev` to finish setting up {} (it may be asking for a key or starting the stack)",
            home.root.display()
        );
    });
    Ok(file)
}

/// Takes an exclusive `flock` on `file`: at once if it is free, else calls `waiting` once and
/// then waits for it. Returns whether it had to wait.
fn lock_exclusive(file: &std::fs::File, waiting: impl FnOnce()) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor `file` owns for the whole call.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return false;
    }
    waiting();
    loop {
        // SAFETY: as above; blocks until the holder releases it.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            return true;
        }
    }
}

/// Makes what is missing: folders, the CA, tokens, the egress policy and Codex settings.
pub fn prepare(home: &Home) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt;
    let fresh = !home.dev_token().exists();
    for dir in [
        home.root.clone(),
        home.proxy_dir(),
        home.secrets(),
        home.logs(),
    ] {
        create_folder(&dir)?;
    }
    // PostgreSQL may run as another user (`nobody` under root): it must be able to enter the
    // home. Only a home made here is opened up; secrets stay private either way.
    if fresh {
        let _ = std::fs::set_permissions(&home.root, std::fs::Permissions::from_mode(0o755));
    }
    let _ = std::fs::set_permissions(home.secrets(), std::fs::Permissions::from_mode(0o700));
    if !home.ca_cert().exists() || !home.ca_key().exists() {
        let (cert, key) = centaur_proxy::tls::generate_ca().map_err(SetupError::Ca)?;
        write_private(&home.ca_key(), &key)?;
        std::fs::write(home.ca_cert(), cert).map_err(|source| SetupError::Write {
            what: "the CA",
            source,
        })?;
    }
    for token in [home.dev_token(), home.proxy_token()] {
        if !token.exists() {
            write_private(&token, &random_token())?;
        }
    }
    if !home.egress_policy().exists() {
        std::fs::write(
            home.egress_policy(),
            serde_json::to_string_pretty(&default_policy()).expect("json"),
        )
        .map_err(|source| SetupError::Write {
            what: "the egress policy",
            source,
        })?;
    }
    if !home.codex_config().exists() {
        std::fs::write(home.codex_config(), Endpoints::default().codex_config()).map_err(
            |source| SetupError::Write {
                what: "the Codex settings",
                source,
            },
        )?;
    }
    Ok(())
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("randomness");
    format!(
        "cdev_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Model APIs, with their keys bound where they belong, and the package registries agents
/// install from. Kept in `CENTAUR_HOME/egress-policy.json`, which may be edited.
fn default_policy() -> serde_json::Value {
    json!({
        "allow": [
            "api.openai.com", "api.anthropic.com",
            "pypi.org", "files.pythonhosted.org", "registry.npmjs.org",
            "crates.io", "index.crates.io", "static.crates.io",
            "github.com", "codeload.github.com", "objects.githubusercontent.com"
        ],
        "secrets": [
            {"name": "OPENAI_API_KEY", "hosts": ["api.openai.com"],
             "headers": ["authorization"], "format": "Bearer {value}"},
            {"name": "ANTHROPIC_API_KEY", "hosts": ["api.anthropic.com"],
             "headers": ["x-api-key"]}
        ]
    })
}

/// Asks for the model keys not yet given, once, on a stack's first start in a terminal
/// (`centaur dev keys` asks again, and sets the endpoints).
pub fn ask_for_keys(home: &Home) -> Result<(), SetupError> {
    let asked = home.secrets().join(".asked");
    if asked.exists() || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprintln!(
        "Model keys stay with the proxy (in {}, readable only by you); sandboxes only ever see placeholders.",
        home.secrets().display()
    );
    for key in &MODEL_KEYS {
        if key.present(home) {
            continue;
        }
        let value = dialoguer::Password::new()
            .with_prompt(format!("{} (Enter to skip)", key.label))
            .allow_empty_password(true)
            .interact()
            .map_err(SetupError::Prompt)?;
        if !value.trim().is_empty() {
            write_private(&key.path(home), value.trim())?;
        }
    }
    write_private(&asked, "")?;
    Ok(())
}

/// Installs the harness CLIs whose keys are there (into `CENTAUR_HOME/harnesses` with npm)
/// and returns the harnesses that are ready. One that cannot be installed is reported and
/// left out: shell and echo work regardless.
pub fn install_harnesses(home: &Home) -> Vec<Harness> {
    let mut ready = Vec::new();
    for key in &MODEL_KEYS {
        if !key.present(home) {
            continue;
        }
        if !key.installed(home)
            && let Err(error) = install_cli(home, key)
        {
            eprintln!("  {} is not available: {error}", key.harness);
            continue;
        }
        ready.push(key.harness);
    }
    ready.extend([Harness::Shell, Harness::Echo]);
    ready
}

/// Installs `key`'s harness CLI with npm, behind a spinner that ends in a line saying how it
/// went (the caller says what follows a failure). A running server sees it at once: it looks
/// for the CLI on every harness list and turn.
pub fn install_cli(home: &Home, key: &ModelKey) -> Result<(), SetupError> {
    let step = Step::start(format!("installing {} with npm", key.package));
    match npm_install(home, key) {
        Ok(()) => {
            step.done(&home.harnesses().display().to_string());
            Ok(())
        }
        Err(error) => {
            step.failed();
            Err(error)
        }
    }
}

fn npm_install(home: &Home, key: &ModelKey) -> Result<(), SetupError> {
    let prefix = home.harnesses();
    std::fs::create_dir_all(prefix.join("bin")).map_err(|source| SetupError::CreateFolder {
        path: prefix.clone(),
        source,
    })?;
    let output = std::process::Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&prefix)
        .arg(key.package)
        .output()
        .map_err(SetupError::NoNpm)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(SetupError::Npm {
            package: key.package,
            said: last.to_owned(),
        });
    }
    link_binary(&prefix, key)
}

/// `bin/<command>` as a relative link, so it resolves inside a sandbox where the folder is
/// mounted elsewhere.
fn link_binary(prefix: &Path, key: &ModelKey) -> Result<(), SetupError> {
    let target = Path::new("../node_modules").join(key.binary);
    if !prefix.join("node_modules").join(key.binary).is_file() {
        return Err(SetupError::NoBinary {
            package: key.package,
            binary: key.binary,
        });
    }
    let link = prefix.join("bin").join(key.command);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link)
        .map_err(|source| SetupError::Link { path: link, source })
}

#[cfg(test)]
mod tests {
    use centaur_protocol::egress::Policy;

    use super::*;

    /// The policy a new home starts with is a valid egress policy whose secrets are the model
    /// keys the proxy holds.
    #[test]
    fn the_default_policy_is_a_valid_policy_for_the_model_keys() {
        let policy: Policy = serde_json::from_value(default_policy()).unwrap();
        let known = |name: &str| MODEL_KEYS.iter().any(|k| k.secret == name);
        policy.validate(known).unwrap();
        let bound: Vec<&str> = policy.secrets.iter().map(|s| s.name.as_str()).collect();
        let keys: Vec<&str> = MODEL_KEYS.iter().map(|k| k.secret).collect();
        assert_eq!(bound, keys);
    }

    /// A free lock is taken without a word; a held one is announced once, then waited for
    /// until its holder lets go (it waited silently).
    #[test]
    fn a_held_setup_lock_is_announced_then_waited_for() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let dir = centaur_test_support::temp::temp_dir("setup-lock");
        let path = dir.join("setup.lock");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .expect("the lock file opens")
        };
        let holder = open();
        assert!(!lock_exclusive(&holder, || panic!(
            "a free lock is not waited for"
        )));

        let released = AtomicBool::new(false);
        let announced = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let file = open();
                let waited = lock_exclusive(&file, || announced.store(true, Ordering::SeqCst));
                // It got the lock only after the holder let go.
                assert!(released.load(Ordering::SeqCst));
                waited
            });
            let deadline = Instant::now() + Duration::from_secs(10);
            while !announced.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "never announced");
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
            assert!(!waiter.is_finished(), "took a held lock");
            released.store(true, Ordering::SeqCst);
            drop(holder);
            assert!(waiter.join().expect("the waiter ends"));
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
