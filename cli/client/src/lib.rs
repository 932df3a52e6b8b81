//! `centaur-client`: everything the `centaur` command and the TUI need to talk to a Centaur
//! server, and nothing of the server itself (no database, no HTTP server, no proxy).
//!
//! - [`audit`]: the egress proxy's audit as lines, once or followed (`centaur audit`).
//! - [`api`]: the HTTP API with the protocol's request and response types, and following a
//!   thread's event stream (SSE) with resume.
//! - [`credentials`]: which server and token to use (flags, environment, saved login, keyring).
//! - [`private_file`]: files only the user may read (saved credentials, keys).
//! - [`render`]: a thread's events as terminal lines (`send`, `attach`).
//! - [`sanitize`]: making a thread's text safe to print (control sequences, colours).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

pub mod api;
pub mod audit;
pub mod credentials;
pub mod private_file;
pub mod render;
pub mod sanitize;

pub use api::{Client, Failure};
