//! `centaur-runner`: runs inside each sandbox. It dials out to the server (never the other way
//! round), claims its thread's executions, drives the harness, and streams what happens.
//!
//! - [`command`]: the runner's command line (`centaur-runner`, or `centaur` started under that
//!   name inside a sandbox): reads its attachment, connects, runs.
//! - [`link`]: HTTP to the server over its Unix socket or TCP.
//! - [`runner`]: the claim, turn, post loop.
//! - [`turn`]: one execution as a harness sees it.
//! - [`poster`]: events to the server in batches, exactly once, across server restarts.
//! - [`follow`]: the thread's stream for interrupts, approval decisions and new messages.
//! - [`harness`]: the adapters (echo, shell, codex, …).
//! - [`forward`]: the proxy's socket as a loopback port, and the proxy environment.
//! - [`tree`]: the processes a turn starts, and ending them all when it ends early.
//! - [`tools`]: Centaur's tools for the sandbox: the loopback endpoint that forwards `/tools`
//!   to the server, `centaur-tool` (this binary under that name) and its MCP server.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

pub mod command;
pub mod follow;
pub mod forward;
pub mod harness;
pub mod link;
pub mod poster;
pub mod runner;
pub mod tools;
pub mod tree;
pub mod turn;
