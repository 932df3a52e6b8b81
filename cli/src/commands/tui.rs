//! Opening the terminal interface from `centaur`, `centaur tui` and `centaur attach --tui`,
//! and what is said once it closed.

use std::process::ExitCode;

use centaur_protocol::{Harness, ThreadKey};
use centaur_tui as tui;

use crate::error::CliError;
use crate::server::Connection;

pub async fn open(
    connection: Connection,
    thread_key: Option<ThreadKey>,
    harness: Option<Harness>,
) -> Result<ExitCode, CliError> {
    let new_thread = thread_key.is_none() && harness.is_some();
    let start = tui::Start {
        thread_key,
        harness,
        new_thread,
        ..tui::Start::default()
    };
    run(connection, start).await
}

/// Runs the TUI to its end; on this home's dev stack, says (once the terminal is back) that
/// the stack goes on running.
pub async fn run(connection: Connection, start: tui::Start) -> Result<ExitCode, CliError> {
    let code = tui::run(connection.client, start).await?;
    if connection.dev_stack {
        eprintln!("centaur: {}", centaur_cli::dev::STACK_STILL_RUNS);
    }
    Ok(code)
}
