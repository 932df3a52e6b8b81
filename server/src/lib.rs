//! The Centaur control plane: threads, sandboxes, executions and the replayable event stream,
//! stored in PostgreSQL and served over HTTP.
//!
//! Layers, top to bottom: [`routes`] (HTTP, auth, parsing) call the domain modules, which write
//! through [`events`] (the log) and hand committed events to the [`hub`] for live delivery.
//!
//! Modules:
//! - [`api_keys`]: API keys, created and revoked by an admin, stored as hashes.
//! - [`app`]: assembles the server: state, background work, listeners, shutdown.
//! - [`approvals`]: people deciding what a harness asked to do.
//! - [`assignment`]: a thread gets a sandbox (reused, warm or cold) and gives it back.
//! - [`auth`]: who is calling (admin key, API key, sandbox token, proxy token).
//! - [`bwrap`]: bubblewrap's arguments and the host's system mounts, for sandboxes and tools.
//! - [`config`]: every setting, as a flag and an environment variable.
//! - [`crypto`]: secrets, random tokens and their hashes.
//! - [`db`]: the connection pool, migrations, readiness, stored enums.
//! - [`egress`]: each sandbox's egress policy at the proxy, and the proxy's audit.
//! - [`error`]: API errors, their codes, and the rejections the log layer logs.
//! - [`events`]: the event log: appending to a thread, reading it back.
//! - [`executions`]: an execution's lifecycle, from queued to its one terminal event.
//! - [`extract`]: request extractors that answer malformed requests with JSON errors.
//! - [`harnesses`]: which harnesses can run a turn here, and refusing those that cannot.
//! - [`hub`]: live delivery of committed events to this replica's streams.
//! - [`logging`]: the tracing subscriber.
//! - [`messages`]: messages posted to threads.
//! - [`pg_cluster`]: a PostgreSQL cluster of the server's own (`centaur dev`, tests).
//! - [`reloading`]: settings files read again when they change (Codex's config, the policy).
//! - [`replicas`]: who this replica is, and which replicas are alive.
//! - [`routes`]: the HTTP routes; thin handlers over the modules above.
//! - [`runner_socket`]: the Unix socket mounted into local sandboxes for the runner API.
//! - [`sandbox`]: the backends sandboxes come from, the warm pool and the reaper.
//! - [`slack`]: the Slack bridge: mentions become turns, turns are delivered into Slack.
//! - [`sse`]: a thread's stream: replay from the log, then live from the hub.
//! - [`threads`]: thread rows: create, look up, list, describe.
//! - [`tools`]: Python plugins called through the API, from sandboxes and over MCP.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

pub mod api_keys;
pub mod app;
pub mod approvals;
pub mod assignment;
pub mod auth;
pub mod bwrap;
pub mod config;
pub mod crypto;
pub mod db;
pub mod egress;
pub mod error;
pub mod events;
pub mod executions;
pub mod extract;
pub mod harnesses;
pub mod hub;
pub mod logging;
pub mod messages;
pub mod pg_cluster;
pub mod reloading;
pub mod replicas;
pub mod routes;
pub mod runner_socket;
pub mod sandbox;
pub mod slack;
pub mod sse;
pub mod threads;
pub mod tools;

pub use app::{AppState, RunningServer, StartError, start, start_with_backend};
pub use config::Config;
