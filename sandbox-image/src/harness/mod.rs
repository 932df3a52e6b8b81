//! Harness adapters: each drives one agent CLI and turns what it does into Centaur events.
//!
//! A harness lives as long as its sandbox's runner, so it can keep a process and a
//! conversation across turns.

mod codex;
mod echo;
mod shell;

use async_trait::async_trait;
use centaur_protocol::Harness as Kind;
use centaur_protocol::runner::Finish;

use crate::turn::{Sandbox, Turn};

pub use codex::Codex;
pub use echo::Echo;
pub use shell::Shell;

#[async_trait]
pub trait Harness: Send {
    /// Runs one turn to its end: completed, failed (with a readable error) or cancelled.
    async fn turn(&mut self, turn: &mut Turn) -> Finish;

    /// Whether the harness broke in a way the sandbox should be replaced for (its process died
    /// or spoke garbage). The runner exits after reporting the turn.
    fn broken(&self) -> bool {
        false
    }
}

/// The adapter for `kind`, or why there is none.
pub fn for_kind(kind: Kind, sandbox: &Sandbox) -> Result<Box<dyn Harness>, String> {
    match kind {
        Kind::Echo => Ok(Box::new(Echo)),
        Kind::Shell => Ok(Box::new(Shell)),
        Kind::Codex => Ok(Box::new(Codex::new(sandbox)?)),
        Kind::ClaudeCode | Kind::Amp => Err(format!(
            "the `{kind}` harness is not available in this runner yet"
        )),
    }
}
