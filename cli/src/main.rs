//! `centaur`: talk to Centaur's agent from a terminal or a script.
//!
//! Exit codes: 0 success, 1 the turn or operation failed, 2 usage error, 3 cannot reach the
//! server or not authorised.
//!
//! - [`args`]: the command line (commands, flags, help and examples).
//! - [`server`]: which server and token a command uses.
//! - [`commands`]: what each command does.
//! - [`error`]: why a command failed, as an exit code and one line.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

mod args;
mod commands;
mod error;
mod server;

use std::process::ExitCode;

use clap::Parser;

use centaur_cli::dev::DevCommand;
use centaur_client::api::AuditQuery;
use centaur_client::sanitize::{Colours, clean};
use centaur_client::{audit, credentials};
use centaur_tui as tui;

use crate::args::{Cli, Command, ToolsCommand};
use crate::commands::{approve, attach, interrupt, manual, resolve_thread, send, threads, tools};
use crate::error::CliError;
use crate::server::Server;

fn main() -> ExitCode {
    // Started as `centaur-runner` (inside a sandbox of the local stack), this binary is the
    // runner, so one build serves the whole stack; as `centaur-tool`, the runner's tool command.
    let name = std::env::args_os().next().map(std::path::PathBuf::from);
    let name = name.as_deref().and_then(|n| n.file_name());
    if name == Some("centaur-runner".as_ref()) {
        return centaur_runner::command::main();
    }
    if name == Some("centaur-tool".as_ref()) {
        return centaur_runner::tools::command::main();
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
                | Command::Tools { .. }
                | Command::Audit { .. }
                | Command::Interrupt { .. }
                | Command::Completions { .. }
                | Command::Man { .. }
                | Command::Dev {
                    command: Some(
                        DevCommand::Status
                            | DevCommand::Logs { .. }
                            | DevCommand::Keys(_)
                            | DevCommand::Slack(_)
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
        Command::Completions { shell } => Ok(manual::completions(shell)),
        Command::Man { command, list } => manual::man(command.as_deref(), list),
        Command::Workflows { .. } => Err(CliError::NotBuilt("workflows")),
        Command::Login { token_env } => {
            Ok(credentials::login(&server.login_url(), token_env).await?)
        }
        Command::Logout => Ok(credentials::logout(&server.login_url())?),
        Command::Tui {
            thread_key,
            harness,
        } => {
            let connection = server.connect()?;
            let thread_key = match thread_key {
                Some(raw) => Some(resolve_thread(&connection.client, &raw).await?),
                None => None,
            };
            commands::tui::open(connection, thread_key, harness).await
        }
        Command::Send {
            thread_key,
            harness,
            message,
            approval_policy,
            exit_on_terminal: _,
            max_duration_ms,
            json,
        } => {
            let client = server.connect()?.client;
            let thread_key = match thread_key {
                Some(raw) => Some(resolve_thread(&client, &raw).await?),
                None => None,
            };
            let turn = send::Turn {
                thread_key,
                harness,
                message,
                max_duration_ms,
                approval_policy,
                json,
            };
            send::send(&client, turn).await
        }
        Command::Attach {
            thread_key,
            after_event_id,
            all_events,
            exit_on_terminal,
            tui,
            timeout,
        } => {
            let connection = server.connect()?;
            let key = resolve_thread(&connection.client, &thread_key).await?;
            connection.client.wait_for_thread(&key, timeout).await?;
            if tui {
                let start = tui::Start {
                    thread_key: Some(key),
                    ..tui::Start::default()
                };
                return commands::tui::run(connection, start).await;
            }
            let client = &connection.client;
            attach::attach(client, &key, after_event_id, all_events, exit_on_terminal).await
        }
        Command::Threads { json } => threads::threads(&server.connect()?.client, json).await,
        Command::Tools { command } => {
            let client = server.connect()?.client;
            match command {
                ToolsCommand::List { json } => tools::list(&client, json).await,
                ToolsCommand::Show { tool, json } => tools::show(&client, &tool, json).await,
                ToolsCommand::Call {
                    tool,
                    method,
                    arguments,
                    raw,
                } => tools::call(&client, &tool, &method, arguments.as_deref(), raw).await,
            }
        }
        Command::Interrupt { thread_key, all } => {
            let client = server.connect()?.client;
            let key = resolve_thread(&client, &thread_key).await?;
            interrupt::interrupt(&client, &key, all).await
        }
        Command::Audit {
            thread_key,
            denied,
            follow,
            after,
            limit,
            json,
        } => {
            let client = server.connect()?.client;
            let thread_key = match thread_key {
                Some(raw) => Some(resolve_thread(&client, &raw).await?),
                None => None,
            };
            let query = AuditQuery {
                thread_key,
                denied,
                after,
                limit,
            };
            audit::print(&client, query, follow, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            thread_key,
            approval_id,
            deny,
            for_session,
        } => {
            let client = server.connect()?.client;
            let key = resolve_thread(&client, &thread_key).await?;
            approve::approve(&client, &key, &approval_id, deny, for_session).await
        }
    }
}
