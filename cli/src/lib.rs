//! The `centaur` command's own parts that the binary links as a library. The binary
//! (`main.rs`) has the rest, as its own modules: the command line (`args.rs`), which server a
//! command talks to (`server.rs`), the errors and exit codes (`error.rs`), and one module per
//! command in `commands/` (send, attach, threads, approve, interrupt, the TUI, completions and
//! the man page).
//!
//! - [`dev`]: `centaur dev`, the local stack (private PostgreSQL, the proxy, the server and
//!   the sandboxes' runner in one supervised process), its home folder, first-run setup,
//!   keys and `doctor`. The one place that links the server, the proxy and the runner.
//!
//! Talking to a server is `centaur-client`'s; the terminal interface is `centaur-tui`'s.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

pub mod dev;
