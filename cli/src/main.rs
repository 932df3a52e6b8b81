//! `centaur`: talk to Centaur's agent from a terminal or a script.
//!
//! Exit codes: 0 success, 1 the turn or operation failed, 2 usage error, 3 cannot reach the
//! server or not authorised.

use std::io::Write;
use std::process::ExitCode;

use centaur_protocol::{Decision, Event, EventBody, Harness, ThreadKey, ThreadKeyError};
use clap::{Parser, Subcommand};

use centaur_cli::dev::{DevCommand, DevError};
use centaur_client::api::{AuditQuery, Client, Failure};
use centaur_client::audit::{self, AuditError};
use centaur_client::sanitize::{Colours, clean, json_line};
use centaur_client::{credentials, render};
use centaur_tui::{self as tui, TuiError};

/// Why a command failed; each maps to an exit code and one line that names the fix.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Server(#[from] Failure),
    #[error(transparent)]
    Tui(#[from] TuiError),
    #[error(transparent)]
    Dev(#[from] DevError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("bad thread key `{raw}`: {source}")]
    BadThreadKey { raw: String, source: ThreadKeyError },
    #[error("`{0}` is not an approval id")]
    NotAnApprovalId(String),
    #[error("--deny and --for-session do not go together")]
    DenyForSession,
    /// A command that is not built yet (hidden from the help).
    #[error("{0} are not available on this server yet")]
    NotBuilt(&'static str),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Server(failure) => failure.exit_code(),
            CliError::Tui(error) => error.exit_code(),
            CliError::Dev(error) => error.exit_code(),
            CliError::Audit(error) => error.exit_code(),
            CliError::BadThreadKey { .. }
            | CliError::NotAnApprovalId(_)
            | CliError::DenyForSession => 2,
            CliError::NotBuilt(_) => 1,
        }
    }
}

#[derive(Parser)]
#[command(name = "centaur", version, about = "Talk to Centaur's agent")]
struct Cli {
    /// The Centaur server [default: the URL of the last `centaur login`, else
    /// http://127.0.0.1:8080]
    #[arg(long, global = true, env = "CENTAUR_API_URL")]
    api_url: Option<String>,
    /// An API token (otherwise the one `centaur login` saved).
    #[arg(long, global = true, env = "CENTAUR_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Without a command: the TUI.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The terminal interface: threads, a live transcript, a composer and approvals.
    Tui {
        /// Open this thread (created by its first message if it does not exist).
        #[arg(long)]
        thread_key: Option<String>,
        /// Start a new thread with this harness (codex, claude-code, amp, shell, echo).
        #[arg(long)]
        harness: Option<Harness>,
    },
    /// One turn from a script: prints `thread_key=<key>`, then the agent's answer.
    Send {
        #[arg(long)]
        thread_key: Option<String>,
        /// The harness (codex, claude-code, amp, shell, echo).
        #[arg(long)]
        harness: Option<Harness>,
        #[arg(long)]
        message: String,
        /// Return when the turn ends (what `send` does anyway; kept for scripts).
        #[arg(long)]
        exit_on_terminal: bool,
        #[arg(long)]
        max_duration_ms: Option<u64>,
        /// Print every event of the turn as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Follow a thread (a Slack thread too), from the start or after an event.
    Attach {
        thread_key: String,
        #[arg(long, default_value_t = 0)]
        after_event_id: i64,
        /// Every event as one JSON line.
        #[arg(long)]
        all_events: bool,
        /// Stop after the next execution ends (exit 1 if it failed).
        #[arg(long)]
        exit_on_terminal: bool,
        /// Follow it in the terminal interface instead.
        #[arg(long)]
        tui: bool,
        /// A thread that does not exist yet is waited for (a script may attach before its
        /// `send` created it): for at most this many seconds [default: as long as it takes].
        #[arg(long, value_name = "SECONDS", value_parser = seconds)]
        timeout: Option<std::time::Duration>,
    },
    /// Stop a thread's running (or queued) turn; `--all` also withdraws the messages waiting
    /// for its next turn. The TUI's Esc does the same as without `--all`.
    Interrupt {
        thread_key: String,
        /// Also withdraw the messages waiting for the thread's next turn (its queue).
        #[arg(long)]
        all: bool,
    },
    /// The egress proxy's audit (admin token): every request a sandbox made, newest last.
    Audit {
        /// Only this thread's sandboxes.
        #[arg(long = "thread", value_name = "THREAD_KEY")]
        thread_key: Option<String>,
        /// Only refusals (denied, leak_blocked).
        #[arg(long)]
        denied: bool,
        /// Keep printing new records as the proxy reports them.
        #[arg(long)]
        follow: bool,
        /// Start after this record (its `id` in --json; the line a lost --follow ends with
        /// names it), oldest first.
        #[arg(long)]
        after: Option<i64>,
        /// How many records (the newest, or the first after --after) [1 to 1000].
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Every record as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// List threads, most recently active first.
    Threads {
        #[arg(long)]
        json: bool,
    },
    /// Decide an approval.
    Approve {
        thread_key: String,
        approval_id: String,
        #[arg(long)]
        deny: bool,
        #[arg(long)]
        for_session: bool,
    },
    /// Ask for the server's URL and a token, check them, and save them (the token in the OS
    /// keyring, or a 0600 file). Without a terminal, the token is one line on stdin.
    Login {
        /// Read the token from this variable instead of asking (the URL is --api-url's).
        #[arg(long)]
        token_env: Option<String>,
    },
    /// Forget the saved token.
    Logout,
    /// The whole stack on this machine: PostgreSQL, the server, the proxy and sandboxes.
    #[command(args_conflicts_with_subcommands = true)]
    Dev {
        #[command(subcommand)]
        command: Option<DevCommand>,
        #[command(flatten)]
        up: centaur_cli::dev::UpArgs,
    },
    /// Tools through the API: not built yet, so hidden from the help.
    #[command(hide = true)]
    Tools {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Workflows through the API: not built yet, so hidden from the help.
    #[command(hide = true)]
    Workflows {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Started as `centaur-runner` (inside a sandbox of the local stack), this binary is the
    // runner, so one build serves the whole stack.
    let name = std::env::args_os().next().map(std::path::PathBuf::from);
    if name.as_deref().and_then(|n| n.file_name()) == Some("centaur-runner".as_ref()) {
        return centaur_runner::command::main();
    }
    let cli = Cli::parse();
    // Like other command-line tools, commands that print end quietly on a closed pipe
    // (`centaur attach … | head`) instead of panicking in `println!`. Not the stack, the
    // runner or the TUI: there a peer closing a socket must be an error, not death.
    if matches!(
        cli.command,
        Some(
            Command::Send { .. }
                | Command::Attach { tui: false, .. }
                | Command::Threads { .. }
                | Command::Audit { .. }
                | Command::Interrupt { .. }
                | Command::Dev {
                    command: Some(
                        DevCommand::Status
                            | DevCommand::Logs { .. }
                            | DevCommand::Keys(_)
                            | DevCommand::Doctor { .. }
                    ),
                    ..
                }
        )
    ) {
        // SAFETY: called before any other thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            // The server's messages can quote a thread's text.
            eprintln!("centaur: {}", clean(&error.to_string(), Colours::Drop));
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let command = cli.command.unwrap_or(Command::Tui {
        thread_key: None,
        harness: None,
    });
    let server = Server {
        url: cli.api_url,
        token: cli.api_token,
    };
    match command {
        Command::Dev { command, up } => Ok(centaur_cli::dev::run(command, up).await?),
        Command::Tools { .. } => Err(CliError::NotBuilt("tools")),
        Command::Workflows { .. } => Err(CliError::NotBuilt("workflows")),
        Command::Login { token_env } => Ok(credentials::login(&server.url().0, token_env).await?),
        Command::Logout => Ok(credentials::logout(&server.url().0)?),
        Command::Tui {
            thread_key,
            harness,
        } => open_tui(server.client()?, thread_key, harness).await,
        Command::Send {
            thread_key,
            harness,
            message,
            exit_on_terminal: _,
            max_duration_ms,
            json,
        } => {
            let client = server.client()?;
            send(&client, thread_key, harness, message, max_duration_ms, json).await
        }
        Command::Attach {
            thread_key,
            after_event_id,
            all_events,
            exit_on_terminal,
            tui,
            timeout,
        } => {
            let client = server.client()?;
            let key = parse_key(&thread_key)?;
            client.wait_for_thread(&key, timeout).await?;
            if tui {
                let start = tui::Start {
                    thread_key: Some(key),
                    ..tui::Start::default()
                };
                return Ok(tui::run(client, start).await?);
            }
            attach(&client, &key, after_event_id, all_events, exit_on_terminal).await
        }
        Command::Threads { json } => threads(&server.client()?, json).await,
        Command::Interrupt { thread_key, all } => {
            let key = parse_key(&thread_key)?;
            interrupt(&server.client()?, &key, all).await
        }
        Command::Audit {
            thread_key,
            denied,
            follow,
            after,
            limit,
            json,
        } => {
            let query = AuditQuery {
                thread_key: thread_key.as_deref().map(parse_key).transpose()?,
                denied,
                after,
                limit,
            };
            audit::print(&server.client()?, query, follow, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            thread_key,
            approval_id,
            deny,
            for_session,
        } => {
            let client = server.client()?;
            approve(&client, &thread_key, &approval_id, deny, for_session).await
        }
    }
}

/// The server a command talks to, as the flags and variables name it.
struct Server {
    url: Option<String>,
    token: Option<String>,
}

impl Server {
    /// The API's URL, and the running `centaur dev` stack of this CENTAUR_HOME (its URL and
    /// token), if any.
    fn url(&self) -> (String, Option<(String, String)>) {
        let stack = centaur_cli::dev::running_stack();
        (server_url(self.url.clone(), stack.as_ref()), stack)
    }

    /// A client for the API, with its token.
    fn client(self) -> Result<Client, Failure> {
        let (url, stack) = self.url();
        let token = server_token(&url, self.token, stack)?;
        Ok(Client::new(url, token))
    }
}

/// Where the API is: the flag or variable, else a running `centaur dev` stack (of this
/// CENTAUR_HOME), else the last login, else the default.
fn server_url(flag: Option<String>, stack: Option<&(String, String)>) -> String {
    let url = flag
        .or_else(|| stack.map(|(url, _)| url.clone()))
        .or_else(credentials::saved_url)
        .unwrap_or_else(|| credentials::DEFAULT_API_URL.to_owned());
    url.trim_end_matches('/').to_owned()
}

/// The token for `url`: the flag or variable, else the running stack's (when `url` is its), else
/// the saved one.
fn server_token(
    url: &str,
    flag: Option<String>,
    stack: Option<(String, String)>,
) -> Result<String, Failure> {
    let stack_token = stack
        .filter(|(stack_url, _)| stack_url == url)
        .map(|(_, token)| token);
    match flag.or(stack_token) {
        Some(token) => Ok(token),
        None => credentials::load(url),
    }
}

async fn open_tui(
    client: Client,
    thread_key: Option<String>,
    harness: Option<Harness>,
) -> Result<ExitCode, CliError> {
    let thread_key = thread_key.as_deref().map(parse_key).transpose()?;
    let new_thread = thread_key.is_none() && harness.is_some();
    let start = tui::Start {
        thread_key,
        harness,
        new_thread,
        ..tui::Start::default()
    };
    Ok(tui::run(client, start).await?)
}

async fn approve(
    client: &Client,
    thread_key: &str,
    approval_id: &str,
    deny: bool,
    for_session: bool,
) -> Result<ExitCode, CliError> {
    let key = parse_key(thread_key)?;
    let approval_id: uuid::Uuid = approval_id
        .parse()
        .map_err(|_| CliError::NotAnApprovalId(approval_id.to_owned()))?;
    let (decision, said) = match (deny, for_session) {
        (true, true) => {
            return Err(CliError::DenyForSession);
        }
        (true, false) => (Decision::Deny, "denied"),
        (false, true) => (Decision::ApproveForSession, "approved for the session"),
        (false, false) => (Decision::Approve, "approved"),
    };
    client.approve(&key, approval_id, decision).await?;
    println!("{said}: {approval_id}");
    Ok(ExitCode::SUCCESS)
}

/// `--timeout`'s value: seconds, fractions allowed.
fn seconds(raw: &str) -> Result<std::time::Duration, String> {
    raw.parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{raw}` is not a number of seconds"))
}

async fn interrupt(client: &Client, key: &ThreadKey, all: bool) -> Result<ExitCode, CliError> {
    let answer = client.interrupt_thread(key, all).await?;
    let key = clean(key.as_str(), Colours::Drop);
    match answer.execution_id {
        Some(execution_id) if answer.interrupted => {
            println!("interrupted execution {execution_id} on {key}");
        }
        Some(_) | None => println!("nothing running on {key}"),
    }
    if all {
        let n = answer.withdrawn_messages;
        let s = if n == 1 { "" } else { "s" };
        println!("withdrew {n} waiting message{s}");
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_key(raw: &str) -> Result<ThreadKey, CliError> {
    ThreadKey::parse(raw).map_err(|source| CliError::BadThreadKey {
        raw: raw.to_owned(),
        source,
    })
}

async fn send(
    client: &Client,
    thread_key: Option<String>,
    harness: Option<Harness>,
    message: String,
    max_duration_ms: Option<u64>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let key = match thread_key {
        Some(raw) => parse_key(&raw)?,
        None => parse_key(&format!("cli:{}", uuid::Uuid::new_v4()))?,
    };
    println!("thread_key={key}");
    let _ = std::io::stdout().flush();
    let execution_id = client
        .execute(&key, harness, &message, max_duration_ms, None)
        .await?;
    let mut outcome = ExitCode::from(1);
    let colours = Colours::for_stdout();
    client
        .follow(&key, 0, Some(execution_id), |event| {
            if json {
                println!("{}", json_line(event).expect("serializable"));
            }
            match &event.body {
                EventBody::ExecutionCompleted { result_text } => {
                    if !json {
                        let result_text = clean(result_text, colours);
                        print!("{result_text}");
                        if !result_text.trim_end_matches("\x1b[0m").ends_with('\n') {
                            println!();
                        }
                    }
                    outcome = ExitCode::SUCCESS;
                    false
                }
                EventBody::ExecutionFailed { error, .. } => {
                    eprintln!("centaur: the turn failed: {}", clean(error, Colours::Drop));
                    false
                }
                EventBody::ExecutionCancelled { reason } => {
                    eprintln!(
                        "centaur: the turn was cancelled: {}",
                        clean(reason, Colours::Drop)
                    );
                    false
                }
                EventBody::ThreadCreated { .. }
                | EventBody::MessageCreated { .. }
                | EventBody::SandboxAssigned { .. }
                | EventBody::SandboxReleased { .. }
                | EventBody::ExecutionQueued { .. }
                | EventBody::ExecutionStarted { .. }
                | EventBody::AgentMessageDelta { .. }
                | EventBody::AgentMessage { .. }
                | EventBody::AgentReasoning { .. }
                | EventBody::CommandStarted { .. }
                | EventBody::CommandOutput { .. }
                | EventBody::CommandFinished { .. }
                | EventBody::FileChanged { .. }
                | EventBody::ToolCallStarted { .. }
                | EventBody::ToolCallFinished { .. }
                | EventBody::ApprovalRequested { .. }
                | EventBody::ApprovalResolved { .. }
                | EventBody::EgressDenied { .. }
                | EventBody::Usage { .. } => true,
            }
        })
        .await?;
    Ok(outcome)
}

async fn attach(
    client: &Client,
    key: &ThreadKey,
    after_event_id: i64,
    all_events: bool,
    exit_on_terminal: bool,
) -> Result<ExitCode, CliError> {
    let mut outcome = ExitCode::SUCCESS;
    let mut renderer = render::Lines::new(Colours::for_stdout());
    // "The next execution": the thread's latest one (running or just ended), or a later one;
    // not an older turn replayed from the start.
    let (latest_execution, last_event_id) = if exit_on_terminal {
        client.latest(key).await?
    } else {
        (None, 0)
    };
    client
        .follow(key, after_event_id, None, |event: &Event| {
            let mut out = std::io::stdout().lock();
            if all_events {
                let _ = writeln!(out, "{}", json_line(event).expect("serializable"));
            } else if let Some(text) = renderer.render(event) {
                let _ = out.write_all(text.as_bytes());
            }
            let _ = out.flush();
            let current = event.event_id > last_event_id
                || (latest_execution.is_some() && event.execution_id == latest_execution);
            if event.body.is_terminal() && exit_on_terminal && current {
                if !matches!(event.body, EventBody::ExecutionCompleted { .. }) {
                    outcome = ExitCode::from(1);
                }
                return false;
            }
            true
        })
        .await?;
    Ok(outcome)
}

async fn threads(client: &Client, json: bool) -> Result<ExitCode, CliError> {
    let list = client.threads().await?;
    if json {
        println!("{}", json_line(&list).expect("serializable"));
        return Ok(ExitCode::SUCCESS);
    }
    if list.threads.is_empty() {
        println!("no threads yet: start one with `centaur send --message ...`");
    }
    for thread in list.threads {
        println!(
            "{:<44} {:<12} {:<8} {}",
            clean(thread.thread_key.as_str(), Colours::Drop),
            thread.harness.as_str(),
            render::thread_status(thread.status),
            render::timestamp(thread.last_activity_at),
        );
    }
    Ok(ExitCode::SUCCESS)
}
