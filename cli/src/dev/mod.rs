//! `centaur dev`: the whole stack on one machine (`docs/dev.md`).
//!
//! `centaur dev` prepares `CENTAUR_HOME` (see [`setup`]), starts the stack in the background
//! (`centaur dev serve`, see [`stack`]), waits until it serves, and opens the TUI on a new
//! thread; quitting the TUI stops the stack unless it was already running. Every other
//! `centaur` command with the same `CENTAUR_HOME` finds the stack through `stack.json`.
//!
//! - [`doctor`]: every prerequisite and setting, each failure with its fix.
//! - [`endpoints`]: where the model APIs are, written into Codex's settings and the policy.
//! - [`home`]: `CENTAUR_HOME`'s folders and files, and the running stack's `stack.json`.
//! - [`keys`]: `centaur dev keys`, in a terminal or with flags.
//! - [`setup`]: what a stack needs before it starts (CA, tokens, keys, harness CLIs).
//! - [`slack`]: `centaur dev slack`, a Slack app's tokens for Socket Mode.
//! - [`stack`]: the running stack itself (`centaur dev serve`).
//! - [`supervise`]: restarting the parts of the stack that die on their own.
//! - [`tools`]: the stack's tool folders (the checkout's `tools/` and overlays), `uv`, and the
//!   tools' secrets and egress additions in the home.

pub mod doctor;
pub mod endpoints;
pub mod home;
pub mod keys;
pub mod setup;
pub mod slack;
pub mod stack;
pub mod supervise;
pub mod tools;

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use centaur_protocol::Harness;
use centaur_protocol::egress::control::SandboxList;
use centaur_protocol::tools::ToolStatus;
use clap::{Subcommand, ValueEnum};

use self::doctor::NotReady;
use self::home::{Home, HomeError, StackState};
use self::keys::{KeysArgs, KeysError};
use self::setup::{MODEL_KEYS, SetupError, Step};
use self::slack::{SlackArgs, SlackError};
use self::stack::StackError;
use centaur_client::api::{Client, Failure};
use centaur_tui::{self as tui, TuiError};

/// Why a `centaur dev` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Server(#[from] Failure),
    #[error(transparent)]
    Tui(#[from] TuiError),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Slack(#[from] SlackError),
    #[error(
        "the kind backend is not built yet; `centaur dev --backend local` runs sandboxes with bubblewrap"
    )]
    KindNotBuilt,
    #[error("{} is missing", .0.display())]
    NoDevToken(PathBuf),
    #[error(
        "a stack runs on {} at {url}, but {trouble}; if it does not heal, restart it: `centaur dev down && centaur dev`",
        .root.display()
    )]
    Unhealthy {
        root: PathBuf,
        url: String,
        trouble: Trouble,
    },
    #[error(
        "another `centaur dev` started a stack on {} meanwhile: run `centaur dev` again to attach",
        .0.display()
    )]
    StartedMeanwhile(PathBuf),
    #[error("cannot open {}: {source}", .path.display())]
    OpenLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("this program's path: {0}")]
    OwnPath(#[source] std::io::Error),
    #[error("cannot start the stack: {0}")]
    Spawn(#[source] std::io::Error),
    /// `reason` is what the stack's log says.
    #[error("the stack did not start: {reason} (log: {})", .log.display())]
    DidNotStart { reason: String, log: PathBuf },
    #[error("the stack did not come up in 90 s (log: {})", .0.display())]
    DidNotComeUp(PathBuf),
    #[error("the stack (pid {pid}) did not stop in 60 s; see {}", .log.display())]
    DidNotStop { pid: u32, log: PathBuf },
    #[error("the stack is running: `centaur dev down` first")]
    StillRunning,
    #[error("reset deletes every thread and key: pass --yes to confirm without a terminal")]
    ResetUnconfirmed,
    #[error("cannot ask: {0}")]
    Prompt(#[source] dialoguer::Error),
    #[error("cannot delete {}: {source}", .path.display())]
    Delete {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no component `{name}`; one of {}", COMPONENTS.join(", "))]
    NoComponent { name: String },
    #[error("--tool-dir {}: {source}", .path.display())]
    ToolDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DevError {
    /// As the `centaur` command's: 2 for what the command line got wrong, 3 for a server that
    /// cannot be reached or refuses, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            DevError::Server(failure) => failure.exit_code(),
            DevError::Tui(error) => error.exit_code(),
            DevError::Keys(error) => error.exit_code(),
            DevError::Slack(error) => error.exit_code(),
            DevError::KindNotBuilt
            | DevError::StillRunning
            | DevError::ResetUnconfirmed
            | DevError::NoComponent { .. }
            | DevError::ToolDir { .. } => 2,
            DevError::Home(_)
            | DevError::Setup(_)
            | DevError::Stack(_)
            | DevError::NotReady(_)
            | DevError::NoDevToken(_)
            | DevError::Unhealthy { .. }
            | DevError::StartedMeanwhile(_)
            | DevError::OpenLog { .. }
            | DevError::OwnPath(_)
            | DevError::Spawn(_)
            | DevError::DidNotStart { .. }
            | DevError::DidNotComeUp(_)
            | DevError::DidNotStop { .. }
            | DevError::Prompt(_)
            | DevError::Delete { .. } => 1,
        }
    }
}

/// What is wrong with a running stack.
#[derive(Debug, thiserror::Error)]
pub enum Trouble {
    /// With what the supervisor saw of it.
    #[error("PostgreSQL is down ({0}); see `centaur dev logs postgres`")]
    PostgresDown(String),
    #[error("the proxy is down ({0}); see `centaur dev logs proxy`")]
    ProxyDown(String),
    #[error(
        "the server cannot reach its database; see `centaur dev logs postgres` and `centaur dev logs server`"
    )]
    NoDatabase,
    #[error("the server is not ready ({0}); see `centaur dev logs server`")]
    ServerNotReady(Failure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Local,
    /// A local Kubernetes cluster: not built yet, so refused and left out of the help.
    #[value(hide = true)]
    Kind,
}

#[derive(Clone, Debug, clap::Args)]
pub struct UpArgs {
    /// Where sandboxes run: `local` (bubblewrap).
    #[arg(long, value_enum, default_value = "local")]
    pub backend: Backend,
    /// Leave the stack running in the background instead of opening the TUI.
    #[arg(long)]
    pub detach: bool,
    /// The API's port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Warm sandboxes kept ready.
    #[arg(long, default_value_t = 1)]
    pub warm: usize,
    /// A folder of your own tools, after the checkout's `tools/` (a tool there shadows a
    /// built-in one of the same name); repeat for more, later ones shadowing earlier ones
    /// (also CENTAUR_DEV_TOOL_DIRS, `:`-separated).
    #[arg(
        long = "tool-dir",
        value_name = "DIR",
        env = "CENTAUR_DEV_TOOL_DIRS",
        hide_env = true,
        value_delimiter = ':'
    )]
    pub tool_dirs: Vec<PathBuf>,
}

#[derive(Clone, Debug, Subcommand)]
pub enum DevCommand {
    /// Start the stack (what `centaur dev` alone does).
    #[command(after_help = "\
Examples:
  centaur dev up
  centaur dev up --detach --port 8181 --warm 2")]
    Up(UpArgs),
    /// Every component, its address, pid, health and version, and the warm pool.
    #[command(after_help = "\
Examples:
  centaur dev status
  centaur dev status || centaur dev logs stack")]
    Status,
    /// Stop everything; the data stays.
    #[command(after_help = "\
Examples:
  centaur dev down
  centaur dev down && centaur dev               # restart")]
    Down,
    /// Check every prerequisite and setting, and print this machine's fix for each failure.
    #[command(after_help = "\
Examples:
  centaur dev doctor                            # the running stack's port, else 8080
  centaur dev doctor --port 8181")]
    Doctor {
        /// The API port to check [default: the running stack's, else 8080].
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
    },
    /// Print a component's log (stack, server, proxy, postgres), or all of them; `-f` follows.
    #[command(after_help = "\
Examples:
  centaur dev logs                              # every log, each line prefixed with its component
  centaur dev logs server -f
  centaur dev logs stack | tail -20")]
    Logs {
        /// One of stack, server, proxy, postgres [default: all of them].
        #[arg(value_name = "COMPONENT")]
        component: Option<String>,
        /// Keep printing new lines as they are written.
        #[arg(short, long)]
        follow: bool,
    },
    /// Delete the stack's data (threads, sandboxes, keys, PostgreSQL), after asking.
    #[command(after_help = "\
Examples:
  centaur dev down && centaur dev reset
  centaur dev reset --yes                       # without a terminal")]
    Reset {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Set the model keys (OpenAI, Anthropic) and where the model APIs are: asks in a
    /// terminal; without one, give them as flags (a key on stdin).
    #[command(after_help = "\
Examples:
  centaur dev keys                              # asks, in a terminal
  echo \"$OPENAI_API_KEY\" | centaur dev keys --openai-key-stdin
  echo \"$KEY\" | centaur dev keys --openai-key-stdin --openai-base-url https://gateway.example.com/v1
  centaur dev keys --anthropic-base-url https://gateway.example.com/anthropic")]
    Keys(KeysArgs),
    /// Connect a Slack app (docs/slack.md): asks for its bot token (xoxb-…) and app-level
    /// token (xapp-…), checks their shape and keeps them (0600, never in a sandbox); the stack
    /// runs the bot in Socket Mode (no public URL) from its next start. `--off` forgets them.
    #[command(after_help = "\
Examples:
  centaur dev slack                             # asks, in a terminal
  printf '%s\\n%s\\n' \"$SLACK_BOT_TOKEN\" \"$SLACK_APP_TOKEN\" | centaur dev slack --tokens-stdin
  centaur dev slack --off
  centaur dev down && centaur dev               # a running stack takes them at its next start")]
    Slack(SlackArgs),
    /// Run the stack in the foreground (what `centaur dev` starts in the background).
    #[command(hide = true)]
    Serve {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        warm: usize,
        /// Stop when stdin closes (the starting `centaur dev` went away).
        #[arg(long)]
        tied: bool,
        /// Tool folders after the checkout's `tools/`.
        #[arg(long = "tool-dir", value_name = "DIR")]
        tool_dirs: Vec<PathBuf>,
    },
}

pub async fn run(command: Option<DevCommand>, up_args: UpArgs) -> Result<ExitCode, DevError> {
    let home = Home::locate()?;
    match command.unwrap_or(DevCommand::Up(up_args)) {
        DevCommand::Up(args) => up(&home, args).await,
        DevCommand::Status => status(&home).await,
        DevCommand::Down => down(&home).await,
        DevCommand::Doctor { port } => Ok(doctor::run(&home, port)),
        DevCommand::Logs { component, follow } => logs(&home, component.as_deref(), follow),
        DevCommand::Reset { yes } => reset(&home, yes).await,
        DevCommand::Keys(args) => Ok(keys::run(&home, args)?),
        DevCommand::Slack(args) => Ok(slack::run(&home, args)?),
        DevCommand::Serve {
            port,
            warm,
            tied,
            tool_dirs,
        } => {
            stack::serve(
                home,
                stack::Options {
                    port,
                    warm_pool: warm,
                    tied,
                    tool_dirs,
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What a TUI that quits says about a stack it did not start.
pub const STACK_STILL_RUNS: &str = "the stack still runs: `centaur dev down` stops it";

/// The running stack's URL and dev token, for commands run without `--api-url`.
pub fn running_stack() -> Option<(String, String)> {
    let home = Home::locate().ok()?;
    let state = home.running()?;
    Some((state.api_url, home.read_dev_token()?))
}

/// This CENTAUR_HOME, if `centaur dev` prepared a stack there (whether it runs or not).
pub fn prepared_home() -> Option<PathBuf> {
    let home = Home::locate().ok()?;
    home.dev_token().exists().then_some(home.root)
}

fn client_for(home: &Home, state: &StackState) -> Result<Client, DevError> {
    let token = home
        .read_dev_token()
        .ok_or_else(|| DevError::NoDevToken(home.dev_token()))?;
    Ok(Client::new(state.api_url.clone(), token))
}

async fn up(home: &Home, mut args: UpArgs) -> Result<ExitCode, DevError> {
    if args.backend == Backend::Kind {
        return Err(DevError::KindNotBuilt);
    }
    // The stack runs in the background: each folder is named by its whole path.
    for dir in &mut args.tool_dirs {
        *dir = dir.canonicalize().map_err(|source| DevError::ToolDir {
            path: dir.clone(),
            source,
        })?;
    }
    if let Some(state) = attachable(home).await {
        if let Some(trouble) = trouble(home, &state).await {
            return Err(DevError::Unhealthy {
                root: home.root.clone(),
                url: state.api_url,
                trouble,
            });
        }
        eprintln!(
            "centaur: a stack already runs on {} at {}; attaching",
            home.root.display(),
            state.api_url
        );
        if args.detach {
            return Ok(ExitCode::SUCCESS);
        }
        let harness = state.harnesses_ready.first().copied();
        // Not started here, so not stopped here either: say so once the terminal is back.
        let code = open_tui(home, &state, harness).await?;
        eprintln!("centaur: {STACK_STILL_RUNS}");
        return Ok(code);
    }
    doctor::preflight(home, args.port)?;
    // One `centaur dev` prepares the home at a time (and `centaur dev keys` installs a CLI
    // only while none does): held until the stack has started, not while the TUI is open.
    let setup_lock = setup::lock(home)?;
    if home.lock_holder().is_some() {
        return Err(DevError::StartedMeanwhile(home.root.clone()));
    }
    let step = Step::start(format!("preparing {}", home.root.display()));
    setup::prepare(home)?;
    step.done("");
    setup::ask_for_keys(home)?;
    let ready = setup::install_harnesses(home);

    let step = Step::start("starting PostgreSQL, the proxy and the server");
    let (state, _tie) = match start_in_background(home, &args).await {
        Ok(started) => started,
        Err(error) => {
            step.failed();
            return Err(error);
        }
    };
    step.done(&state.api_url);
    drop(setup_lock);
    let names: Vec<&str> = ready.iter().map(|h| h.as_str()).collect();
    eprintln!("✓ harnesses ready: {}", names.join(", "));
    // The server checked the tokens with Slack as it started (a refused one stops it).
    if slack::stored(home).is_some() {
        eprintln!("✓ Slack: the bot runs in Socket Mode; invite it to a channel and mention it");
    }
    for key in &MODEL_KEYS {
        if !key.present(home) {
            eprintln!(
                "  {} needs an {} API key: `centaur dev keys` adds one (and installs its CLI)",
                key.harness,
                key.provider.name()
            );
        }
    }
    eprintln!(
        "\nThe stack runs at {} (data in {}).\nAny `centaur` command with this CENTAUR_HOME uses it, e.g. `centaur send --harness shell --message 'echo hello'`.\n`centaur dev status` shows it, `centaur dev down` stops it.",
        state.api_url,
        home.root.display()
    );
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = open_tui(home, &state, ready.first().copied()).await;
    let stopped = down(home).await;
    let code = outcome?;
    stopped?;
    Ok(code)
}

async fn open_tui(
    home: &Home,
    state: &StackState,
    harness: Option<Harness>,
) -> Result<ExitCode, DevError> {
    let client = client_for(home, state)?;
    let notice = MODEL_KEYS
        .iter()
        .all(|k| !k.present(home))
        .then(|| "no model key yet: shell and echo work; `centaur dev keys` adds one".to_owned());
    tui::run(
        client,
        tui::Start {
            thread_key: None,
            harness,
            new_thread: true,
            notice,
            ..tui::Start::default()
        },
    )
    .await
    .map_err(DevError::Tui)
}

/// What is wrong with a running stack, if anything, once a restart under way had a few
/// seconds to heal it: a part down, or a server that is not ready.
async fn trouble(home: &Home, state: &StackState) -> Option<Trouble> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let client = client_for(home, state).ok()?;
    loop {
        // The supervisor rewrites `stack.json` as the parts' health changes.
        let state = home.running().unwrap_or_else(|| state.clone());
        let found = if state.postgres_health.down {
            Some(Trouble::PostgresDown(state.postgres_health.describe()))
        } else if state.proxy_health.down {
            Some(Trouble::ProxyDown(state.proxy_health.describe()))
        } else {
            match client.ready().await {
                Ok(()) => None,
                Err(Failure::DatabaseUnavailable { .. }) => Some(Trouble::NoDatabase),
                Err(error) => Some(Trouble::ServerNotReady(error)),
            }
        };
        if found.is_none() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stack to attach to: the running one, or one being started (waited for).
async fn attachable(home: &Home) -> Option<StackState> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while home.lock_holder().is_some() && Instant::now() < deadline {
        if let Some(state) = home.running() {
            return Some(state);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Starts `centaur dev serve` in its own session, its output in `logs/stack.log`, and waits
/// until it serves. If it fails, it has already stopped what it started; its last log line
/// says why. Unless detached, the stack is tied to this process through its stdin (the
/// returned handle): when this process ends, however it ends, the stack stops.
async fn start_in_background(
    home: &Home,
    args: &UpArgs,
) -> Result<(StackState, Option<std::process::ChildStdin>), DevError> {
    let log_path = home.log("stack");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| DevError::OpenLog {
            path: log_path.clone(),
            source,
        })?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let program = std::env::current_exe().map_err(DevError::OwnPath)?;
    let mut command = std::process::Command::new(program);
    // The server reads its settings from CENTAUR_* variables too; the stack sets its own, but
    // for the tools' settings grants, which only the developer can give (`apply_tools`).
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CENTAUR_")
            && !name.starts_with("CENTAUR_PG_")
            && name != "CENTAUR_TOOL_SETTINGS"
        {
            command.env_remove(name.as_ref());
        }
    }
    if args.detach {
        command.args(["dev", "serve", "--port"]);
    } else {
        command.args(["dev", "serve", "--tied", "--port"]);
    }
    command
        .arg(args.port.to_string())
        .arg("--warm")
        .arg(args.warm.to_string());
    for dir in &args.tool_dirs {
        command.arg("--tool-dir").arg(dir);
    }
    command
        .env("CENTAUR_HOME", &home.root)
        .stdin(if args.detach {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::piped()
        })
        .stdout(log.try_clone().expect("a log handle"))
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the stack outlives this terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(DevError::Spawn)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            let reason = last_line(&log_path, log_start)
                .unwrap_or_else(|| format!("it exited with {status}"));
            return Err(DevError::DidNotStart {
                reason,
                log: log_path,
            });
        }
        if let Some(state) = home.running().filter(|s| s.pid == child.id()) {
            return Ok((state, child.stdin.take()));
        }
        if Instant::now() > deadline {
            stop_child(home, &mut child).await;
            return Err(DevError::DidNotComeUp(log_path));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops a stack that would not come up: SIGTERM (it stops what it started), then SIGKILL and
/// whatever PostgreSQL it left.
async fn stop_child(home: &Home, child: &mut std::process::Child) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    stop_orphaned_postgres(home).await;
}

/// Why the stack stopped, from what it wrote to `path` after `from`: its own one-line error,
/// else a panic's message, else its last line.
fn last_line(path: &std::path::Path, from: u64) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(error) = lines.iter().rev().find_map(|l| l.strip_prefix("centaur: ")) {
        return Some(error.to_owned());
    }
    if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
        return lines.get(at + 1).map(|l| format!("it crashed: {l}"));
    }
    lines.last().map(|l| (*l).to_owned())
}

async fn status(home: &Home) -> Result<ExitCode, DevError> {
    let Some(state) = home.running() else {
        println!(
            "no stack runs on {} (`centaur dev` starts one)",
            home.root.display()
        );
        return Ok(ExitCode::from(1));
    };
    let client = client_for(home, &state)?;
    println!(
        "{:<10} {:<28} {:<8} {:<10} detail",
        "component", "address", "pid", "health"
    );
    let rows = [
        server_row(&client, &state).await,
        postgres_row(home, &state),
        proxy_row(home, &state).await,
        sandboxes_row(&client, &state).await,
        tools_row(&client, &state).await,
    ];
    let mut healthy = true;
    for row in rows {
        healthy &= row.health == Health::Healthy;
        println!(
            "{:<10} {:<28} {:<8} {:<10} {}",
            row.component,
            row.address,
            row.pid,
            row.health.label(),
            row.detail
        );
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One line of `centaur dev status`.
struct Row {
    component: &'static str,
    address: String,
    pid: String,
    health: Health,
    detail: String,
}

/// The server: ready when it answers `/readyz`.
async fn server_row(client: &Client, state: &StackState) -> Row {
    let ready = client.ready().await.is_ok();
    Row {
        component: "server",
        address: state.api_url.clone(),
        pid: state.pid.to_string(),
        health: Health::of(ready, false),
        detail: format!(
            "centaur {}, up since {}",
            state.version,
            state.started_at.format("%H:%M:%S")
        ),
    }
}

/// PostgreSQL: healthy when its port takes a connection.
fn postgres_row(home: &Home, state: &StackState) -> Row {
    let reachable = state
        .postgres_address
        .parse::<std::net::SocketAddr>()
        .ok()
        .or_else(|| {
            use std::net::ToSocketAddrs;
            state.postgres_address.to_socket_addrs().ok()?.next()
        })
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        });
    let (pid, detail) = if state.postgres_private {
        let pid = std::fs::read_to_string(home.postgres().join("data").join("postmaster.pid"))
            .ok()
            .and_then(|p| p.lines().next().map(str::to_owned))
            .unwrap_or_default();
        (
            pid,
            with_history(postgres_version(home), &state.postgres_health),
        )
    } else {
        (
            "-".to_owned(),
            "DATABASE_URL (not started or stopped by centaur dev)".to_owned(),
        )
    };
    Row {
        component: "postgres",
        address: state.postgres_address.clone(),
        pid,
        health: Health::of(reachable, state.postgres_health.down),
        detail,
    }
}

/// The proxy: healthy when its control API lists the sandboxes registered with it.
async fn proxy_row(home: &Home, state: &StackState) -> Row {
    let proxy_token = std::fs::read_to_string(home.proxy_token()).unwrap_or_default();
    let sandboxes = reqwest::Client::new()
        .get(format!("{}/v1/sandboxes", state.proxy_control_url))
        .bearer_auth(proxy_token.trim())
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success());
    let registered = match sandboxes {
        Some(response) => response
            .json::<SandboxList>()
            .await
            .ok()
            .map(|list| list.sandboxes.len()),
        None => None,
    };
    Row {
        component: "proxy",
        address: state.proxy_control_url.clone(),
        pid: state.pid.to_string(),
        health: Health::of(registered.is_some(), state.proxy_health.down),
        detail: with_history(
            format!(
                "{} sandboxes registered (warm pool target {})",
                registered.unwrap_or(0),
                state.warm_pool
            ),
            &state.proxy_health,
        ),
    }
}

/// The sandboxes: healthy when bubblewrap can make one. The harnesses ready are the server's
/// answer now (a CLI `centaur dev keys` installed counts at once), else those ready at start.
async fn sandboxes_row(client: &Client, state: &StackState) -> Row {
    let ready: Vec<Harness> = match client.harnesses().await {
        Ok(list) => list
            .harnesses
            .iter()
            .filter(|h| h.available)
            .map(|h| h.harness)
            .collect(),
        Err(_) => state.harnesses_ready.clone(),
    };
    let names: Vec<&str> = ready.iter().map(|h| h.as_str()).collect();
    Row {
        component: "sandboxes",
        address: "local (bubblewrap)".to_owned(),
        pid: state.pid.to_string(),
        health: Health::of(doctor::bwrap_works(), false),
        detail: format!("harnesses ready: {}", names.join(", ")),
    }
}

/// The tools: how many are ready, and which are loading or broken (a broken tool is its
/// plugin's problem, not the stack's: `centaur tools list` says why).
async fn tools_row(client: &Client, state: &StackState) -> Row {
    let (health, detail) = match client.tools().await {
        Ok(list) => {
            let named = |status: ToolStatus| {
                list.tools
                    .iter()
                    .filter(|t| t.status == status)
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
            };
            let mut detail = format!("{} ready", named(ToolStatus::Ready).len());
            for status in [ToolStatus::Loading, ToolStatus::Broken] {
                let names = named(status);
                if !names.is_empty() {
                    detail.push_str(&format!(
                        ", {} {}: {}",
                        names.len(),
                        status.as_str(),
                        names.join(", ")
                    ));
                }
            }
            if !named(ToolStatus::Broken).is_empty() {
                detail.push_str(" (`centaur tools list` says why)");
            }
            (Health::Healthy, detail)
        }
        Err(error) => (Health::Failing, error.to_string()),
    };
    Row {
        component: "tools",
        address: "uv, bubblewrap".to_owned(),
        pid: state.pid.to_string(),
        health,
        detail,
    }
}

/// A component's health as `centaur dev status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Healthy,
    /// Down, and the stack is restarting it.
    Restarting,
    Failing,
}

impl Health {
    fn of(ok: bool, restarting: bool) -> Health {
        match (ok, restarting) {
            (_, true) => Health::Restarting,
            (true, false) => Health::Healthy,
            (false, false) => Health::Failing,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Restarting => "restarting",
            Health::Failing => "FAILING",
        }
    }
}

/// `detail`, followed by what the supervisor did to the part, if anything.
fn with_history(detail: String, health: &home::PartHealth) -> String {
    match health.describe() {
        history if history.is_empty() => detail,
        history if detail.is_empty() => history,
        history => format!("{detail}; {history}"),
    }
}

fn postgres_version(home: &Home) -> String {
    std::fs::read_to_string(home.postgres().join("data").join("PG_VERSION"))
        .map(|v| format!("PostgreSQL {}", v.trim()))
        .unwrap_or_default()
}

/// Stops the stack (running or still starting) and waits until its process, and with it
/// every listener, is gone.
async fn down(home: &Home) -> Result<ExitCode, DevError> {
    let Some(pid) = home.lock_holder().filter(|pid| *pid > 0) else {
        let _ = std::fs::remove_file(home.state_file());
        let orphan = stop_orphaned_postgres(home).await;
        eprintln!("centaur: no stack runs on {}{orphan}", home.root.display());
        return Ok(ExitCode::SUCCESS);
    };
    // SAFETY: a signal to the process that holds this home's stack lock.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while home.lock_holder().is_some() {
        if Instant::now() > deadline {
            return Err(DevError::DidNotStop {
                pid,
                log: home.log("stack"),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The lock goes a moment before the process does: "down" means gone.
    while process_lives(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let orphan = stop_orphaned_postgres(home).await;
    eprintln!(
        "centaur: the stack is down; its data stays in {}{orphan}",
        home.root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `pid` runs: it exists and is not a zombie waiting for a parent that does not reap.
fn process_lives(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !state.starts_with('Z') && !state.starts_with('X')
}

/// Stops a PostgreSQL left running by a stack that was killed; says so if it did.
async fn stop_orphaned_postgres(home: &Home) -> String {
    if !home.postgres().join("data").join("postmaster.pid").exists() {
        return String::new();
    }
    let root = home.postgres();
    let stopped = tokio::task::spawn_blocking(move || {
        let cluster = centaur_server::pg_cluster::PgCluster::start(
            &centaur_server::pg_cluster::ClusterOptions {
                root,
                durable: true,
                max_connections: 100,
            },
        )?;
        cluster.stop()
    })
    .await;
    match stopped {
        Ok(Ok(())) => " (and stopped the PostgreSQL it had left running)".to_owned(),
        Ok(Err(error)) => format!(" (its PostgreSQL may still run: {error})"),
        Err(_) => String::new(),
    }
}

async fn reset(home: &Home, yes: bool) -> Result<ExitCode, DevError> {
    if home.lock_holder().is_some() {
        return Err(DevError::StillRunning);
    }
    if !home.root.exists() {
        eprintln!("centaur: nothing to delete in {}", home.root.display());
        return Ok(ExitCode::SUCCESS);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(DevError::ResetUnconfirmed);
        }
        let sure = dialoguer::Confirm::new()
            .with_prompt(format!(
                "Delete {} (threads, workspaces, keys, PostgreSQL data)?",
                home.root.display()
            ))
            .default(false)
            .interact()
            .map_err(DevError::Prompt)?;
        if !sure {
            return Ok(ExitCode::from(1));
        }
    }
    stop_orphaned_postgres(home).await;
    std::fs::remove_dir_all(&home.root).map_err(|source| DevError::Delete {
        path: home.root.clone(),
        source,
    })?;
    eprintln!("centaur: deleted {}", home.root.display());
    Ok(ExitCode::SUCCESS)
}

const COMPONENTS: [&str; 4] = ["stack", "server", "proxy", "postgres"];

fn logs(home: &Home, component: Option<&str>, follow: bool) -> Result<ExitCode, DevError> {
    let components: Vec<&str> = match component {
        Some(name) if COMPONENTS.contains(&name) => vec![name],
        Some(name) => {
            return Err(DevError::NoComponent {
                name: name.to_owned(),
            });
        }
        None => COMPONENTS.to_vec(),
    };
    let prefix = components.len() > 1;
    let mut offsets = vec![0u64; components.len()];
    loop {
        for (i, name) in components.iter().enumerate() {
            let Ok(mut file) = std::fs::File::open(home.log(name)) else {
                continue;
            };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offsets[i] {
                offsets[i] = 0;
            }
            if len == offsets[i] || file.seek(SeekFrom::Start(offsets[i])).is_err() {
                continue;
            }
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            // Whole lines only; a partial one waits for its end.
            let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            offsets[i] += end as u64;
            let mut out = std::io::stdout().lock();
            for line in String::from_utf8_lossy(&bytes[..end]).lines() {
                let written = if prefix {
                    writeln!(out, "{name:<8} | {line}")
                } else {
                    writeln!(out, "{line}")
                };
                // Whoever reads stopped (`| head`): done, quietly.
                if written.and_then(|()| out.flush()).is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
