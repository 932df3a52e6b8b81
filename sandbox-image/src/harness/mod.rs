//! Harness adapters: each drives one agent CLI and turns what it does into Centaur events.
//! `codex` speaks JSON-RPC (`codex app-server`); `claude-code` and `amp` speak stream-json
//! ([`stream_json`]); `shell` and `echo` need no CLI.
//!
//! A harness lives as long as its sandbox's runner, so it can keep a process and a
//! conversation across turns.

mod amp;
mod claude;
mod codex;
mod echo;
mod shell;
mod stream_json;

use async_trait::async_trait;
use centaur_protocol::Harness as Kind;
use centaur_protocol::runner::Finish;

use crate::turn::{Sandbox, Turn};

pub use amp::Amp;
pub use claude::ClaudeCode;
pub use codex::Codex;
pub use echo::Echo;
pub use shell::Shell;

#[async_trait]
pub trait Harness: Send {
    /// Starts the harness's long-lived process (`codex app-server`, `claude`, `amp`) if it is
    /// not running, before the runner notes the processes alive at the start of a turn: what it
    /// starts at launch (MCP servers from its config, a language server) then belongs to the
    /// sandbox, not to the turn, and an interrupt spares it. A failure is left for the turn,
    /// which tries again and reports it. `sandbox` is the coming turn's (its approval policy,
    /// which the server may change from one turn to the next).
    async fn prepare(&mut self, _sandbox: &Sandbox) {}

    /// Runs one turn to its end: completed, failed (with a readable error) or cancelled.
    async fn turn(&mut self, turn: &mut Turn) -> Finish;

    /// Whether the harness broke in a way the sandbox should be replaced for (its process died
    /// or spoke garbage). The runner exits after reporting the turn.
    fn broken(&self) -> bool {
        false
    }
}

/// The adapter for `kind`.
pub fn for_kind(kind: Kind, sandbox: &Sandbox) -> Box<dyn Harness> {
    match kind {
        Kind::Echo => Box::new(Echo),
        Kind::Shell => Box::new(Shell::default()),
        Kind::Codex => Box::new(Codex::new(sandbox)),
        Kind::ClaudeCode => Box::new(ClaudeCode::new(sandbox)),
        Kind::Amp => Box::new(Amp::new(sandbox)),
    }
}

/// At most `max` bytes of `text`, cut at a character boundary (for error messages).
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}
