//! `centaur dev`: the whole stack on one machine (SPEC.md section 4).
//!
//! `centaur dev` prepares `CENTAUR_HOME` (see [`setup`]), starts the stack in the background
//! (`centaur dev serve`, see [`stack`]), waits until it serves, and opens the TUI on a new
//! thread; quitting the TUI stops the stack unless it was already running. Every other
//! `centaur` command with the same `CENTAUR_HOME` finds the stack through `stack.json`.

pub mod doctor;
pub mod home;
pub mod setup;
pub mod stack;

use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use centaur_protocol::Harness;
use clap::{Subcommand, ValueEnum};

use self::home::{Home, StackState, alive};
use self::setup::{MODEL_KEYS, Step};
use crate::client::{Client, Failure};
use crate::tui;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Local,
    Kind,
}

#[derive(Clone, Debug, clap::Args)]
pub struct UpArgs {
    /// Where sandboxes run: `local` (bubblewrap) or `kind` (a local Kubernetes cluster).
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
}

#[derive(Clone, Debug, Subcommand)]
pub enum DevCommand {
    /// Start the stack (what `centaur dev` alone does).
    Up(UpArgs),
    /// Every component, its address, pid, health and version, and the warm pool.
    Status,
    /// Stop everything; the data stays.
    Down,
    /// Check every prerequisite and setting, and print the fix for each failure.
    Doctor {
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Print a component's log (server, proxy, postgres, stack); `-f` follows.
    Logs {
        component: Option<String>,
        #[arg(short, long)]
        follow: bool,
    },
    /// Delete the stack's data (threads, sandboxes, keys, PostgreSQL), after asking.
    Reset {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Ask again for the model keys (OpenAI, Anthropic).
    Keys,
    /// Run the stack in the foreground (what `centaur dev` starts in the background).
    #[command(hide = true)]
    Serve {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        warm: usize,
    },
}

pub async fn run(command: Option<DevCommand>, up_args: UpArgs) -> Result<ExitCode, Failure> {
    let home = Home::locate()?;
    match command.unwrap_or(DevCommand::Up(up_args)) {
        DevCommand::Up(args) => up(&home, args).await,
        DevCommand::Status => status(&home).await,
        DevCommand::Down => down(&home).await,
        DevCommand::Doctor { port } => Ok(doctor::run(&home, port)),
        DevCommand::Logs { component, follow } => logs(&home, component.as_deref(), follow),
        DevCommand::Reset { yes } => reset(&home, yes).await,
        DevCommand::Keys => {
            setup::prepare(&home)?;
            setup::ask_for_keys(&home, true)?;
            eprintln!(
                "centaur: keys saved; a running stack uses them within seconds, and the next `centaur dev` installs their harnesses"
            );
            Ok(ExitCode::SUCCESS)
        }
        DevCommand::Serve { port, warm } => {
            stack::serve(
                home,
                stack::Options {
                    port,
                    warm_pool: warm,
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The running stack's URL and dev token, for commands run without `--api-url`.
pub fn running_stack() -> Option<(String, String)> {
    let home = Home::locate().ok()?;
    let state = home.running()?;
    Some((state.api_url, home.read_dev_token()?))
}

fn client_for(home: &Home, state: &StackState) -> Result<Client, Failure> {
    let token = home
        .read_dev_token()
        .ok_or_else(|| Failure::Local(format!("{} is missing", home.dev_token().display())))?;
    Ok(Client::new(state.api_url.clone(), token))
}

async fn up(home: &Home, args: UpArgs) -> Result<ExitCode, Failure> {
    if args.backend == Backend::Kind {
        return Err(Failure::Usage(
            "the kind backend is not built yet; `centaur dev --backend local` runs sandboxes with bubblewrap".into(),
        ));
    }
    if let Some(state) = home.running() {
        eprintln!(
            "centaur: a stack already runs on {} at {}; attaching",
            home.root.display(),
            state.api_url
        );
        if args.detach {
            return Ok(ExitCode::SUCCESS);
        }
        let harness = state
            .harnesses_ready
            .first()
            .and_then(|h| h.parse::<Harness>().ok());
        return open_tui(home, &state, harness).await;
    }
    doctor::preflight(args.port)?;
    let step = Step::start(format!("preparing {}", home.root.display()));
    setup::prepare(home)?;
    step.done("");
    setup::ask_for_keys(home, false)?;
    let ready = setup::install_harnesses(home)?;

    let step = Step::start("starting PostgreSQL, the proxy and the server");
    let state = match start_in_background(home, &args).await {
        Ok(state) => state,
        Err(error) => {
            step.failed();
            return Err(error);
        }
    };
    step.done(&state.api_url);
    let names: Vec<&str> = ready.iter().map(|h| h.as_str()).collect();
    eprintln!("✓ harnesses ready: {}", names.join(", "));
    for key in &MODEL_KEYS {
        if !key.present(home) {
            eprintln!(
                "  {} needs an {}: `centaur dev keys` adds one",
                key.harness,
                key.label.split(" (").next().unwrap_or(key.label)
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
) -> Result<ExitCode, Failure> {
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
        },
    )
    .await
}

/// Starts `centaur dev serve` in its own session, its output in `logs/stack.log`, and waits
/// until it serves. If it fails, it has already stopped what it started; its last log line
/// says why.
async fn start_in_background(home: &Home, args: &UpArgs) -> Result<StackState, Failure> {
    let log_path = home.log("stack");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Failure::Local(format!("cannot open {}: {e}", log_path.display())))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let program =
        std::env::current_exe().map_err(|e| Failure::Local(format!("this program's path: {e}")))?;
    let mut command = std::process::Command::new(program);
    command
        .args(["dev", "serve", "--port"])
        .arg(args.port.to_string())
        .arg("--warm")
        .arg(args.warm.to_string())
        .env("CENTAUR_HOME", &home.root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("a log handle"))
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the stack outlives this terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| Failure::Local(format!("cannot start the stack: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            let reason = last_line(&log_path, log_start)
                .unwrap_or_else(|| format!("it exited with {status}"));
            return Err(Failure::Local(format!(
                "the stack did not start: {reason} (log: {})",
                log_path.display()
            )));
        }
        if let Some(state) = home.running().filter(|s| s.pid == child.id()) {
            let client = client_for(home, &state)?;
            if client.get("/readyz").await.is_ok() {
                return Ok(state);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::Local(format!(
                "the stack did not come up in 90 s (log: {})",
                log_path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last non-empty line written to `path` after `from`.
fn last_line(path: &std::path::Path, from: u64) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("centaur: ").to_owned())
}

async fn status(home: &Home) -> Result<ExitCode, Failure> {
    let Some(state) = home.running() else {
        println!(
            "no stack runs on {} (`centaur dev` starts one)",
            home.root.display()
        );
        return Ok(ExitCode::from(1));
    };
    let client = client_for(home, &state)?;
    let mut healthy = true;
    let mut row = |component: &str, address: &str, ok: bool, detail: String| {
        healthy &= ok;
        println!(
            "{:<10} {:<28} {:<8} {:<8} {}",
            component,
            address,
            state.pid,
            if ok { "healthy" } else { "FAILING" },
            detail
        );
    };
    println!(
        "{:<10} {:<28} {:<8} {:<8} detail",
        "component", "address", "pid", "health"
    );
    let ready = client.get("/readyz").await.is_ok();
    row(
        "server",
        &state.api_url,
        ready,
        format!(
            "centaur {}, up since {}",
            state.version,
            state.started_at.format("%H:%M:%S")
        ),
    );
    let postgres = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], state.postgres_port).into(),
        Duration::from_secs(1),
    )
    .is_ok();
    row(
        "postgres",
        &format!("127.0.0.1:{}", state.postgres_port),
        postgres,
        postgres_version(home),
    );
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
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["sandboxes"].as_array().map(Vec::len)),
        None => None,
    };
    row(
        "proxy",
        &state.proxy_control_url,
        registered.is_some(),
        format!(
            "{} sandboxes registered (warm pool target {})",
            registered.unwrap_or(0),
            state.warm_pool
        ),
    );
    let bwrap = doctor::bwrap_works();
    row(
        "sandboxes",
        "local (bubblewrap)",
        bwrap,
        format!("harnesses ready: {}", state.harnesses_ready.join(", ")),
    );
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn postgres_version(home: &Home) -> String {
    std::fs::read_to_string(home.postgres().join("data").join("PG_VERSION"))
        .map(|v| format!("PostgreSQL {}", v.trim()))
        .unwrap_or_default()
}

/// Stops the stack and waits until its process, and with it every listener, is gone.
async fn down(home: &Home) -> Result<ExitCode, Failure> {
    let Some(state) = home.running() else {
        let _ = std::fs::remove_file(home.state_file());
        stop_orphaned_postgres(home).await;
        eprintln!("centaur: no stack runs on {}", home.root.display());
        return Ok(ExitCode::SUCCESS);
    };
    // SAFETY: a signal to the stack's process.
    unsafe { libc::kill(state.pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(state.pid) {
        if Instant::now() > deadline {
            return Err(Failure::Local(format!(
                "the stack (pid {}) did not stop in 60 s; see {}",
                state.pid,
                home.log("stack").display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "centaur: the stack is down; its data stays in {}",
        home.root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A PostgreSQL left running by a stack that was killed.
async fn stop_orphaned_postgres(home: &Home) {
    if !home.postgres().join("data").join("postmaster.pid").exists() {
        return;
    }
    let root = home.postgres();
    let _ = tokio::task::spawn_blocking(move || {
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
}

async fn reset(home: &Home, yes: bool) -> Result<ExitCode, Failure> {
    if home.running().is_some() {
        return Err(Failure::Usage(
            "the stack is running: `centaur dev down` first".into(),
        ));
    }
    if !home.root.exists() {
        eprintln!("centaur: nothing to delete in {}", home.root.display());
        return Ok(ExitCode::SUCCESS);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Usage(
                "reset deletes every thread and key: pass --yes to confirm without a terminal"
                    .into(),
            ));
        }
        let sure = dialoguer::Confirm::new()
            .with_prompt(format!(
                "Delete {} (threads, workspaces, keys, PostgreSQL data)?",
                home.root.display()
            ))
            .default(false)
            .interact()
            .map_err(|e| Failure::Local(format!("cannot ask: {e}")))?;
        if !sure {
            return Ok(ExitCode::from(1));
        }
    }
    stop_orphaned_postgres(home).await;
    std::fs::remove_dir_all(&home.root)
        .map_err(|e| Failure::Local(format!("cannot delete {}: {e}", home.root.display())))?;
    eprintln!("centaur: deleted {}", home.root.display());
    Ok(ExitCode::SUCCESS)
}

const COMPONENTS: [&str; 4] = ["stack", "server", "proxy", "postgres"];

fn logs(home: &Home, component: Option<&str>, follow: bool) -> Result<ExitCode, Failure> {
    let components: Vec<&str> = match component {
        Some(name) if COMPONENTS.contains(&name) => vec![name],
        Some(name) => {
            return Err(Failure::Usage(format!(
                "no component `{name}`; one of {}",
                COMPONENTS.join(", ")
            )));
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
            for line in String::from_utf8_lossy(&bytes[..end]).lines() {
                if prefix {
                    println!("{name:<8} | {line}");
                } else {
                    println!("{line}");
                }
            }
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
