//! What each `centaur` command does, one module per command (the dev commands are
//! `centaur_cli::dev`'s):
//!
//! - [`send`]: one turn from a script.
//! - [`attach`]: following a thread as lines or JSON.
//! - [`threads`]: the thread list as a table.
//! - [`approve`]: deciding an approval.
//! - [`interrupt`]: stopping a thread's turn (and its queue).
//! - [`tui`]: opening the terminal interface, and what is said when it closes.
//! - [`manual`]: shell completions and the man page, from the command line's definition.

pub mod approve;
pub mod attach;
pub mod interrupt;
pub mod manual;
pub mod send;
pub mod threads;
pub mod tui;

use centaur_protocol::ThreadKey;

use crate::error::CliError;

/// A thread key from the command line.
pub fn parse_key(raw: &str) -> Result<ThreadKey, CliError> {
    ThreadKey::parse(raw).map_err(|source| CliError::BadThreadKey {
        raw: raw.to_owned(),
        source,
    })
}
