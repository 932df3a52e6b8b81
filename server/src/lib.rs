//! The Centaur control plane: threads, sandboxes, executions and the replayable event stream,
//! stored in PostgreSQL and served over HTTP.
//!
//! Layers, top to bottom: [`routes`] (HTTP, auth, parsing) call the domain modules
//! ([`threads`], [`messages`], [`executions`], [`approvals`], [`api_keys`]), which write through
//! [`events`] (the log) and hand committed events to the [`hub`] for live delivery; [`sse`] turns
//! log and hub into a client's stream. [`runner_socket`] is the socket mounted into local
//! sandboxes, where [`routes::runner_socket_router`] serves only the runner API.
#![cfg_attr(test, allow(clippy::unwrap_used))] // tests stop at the first surprise

pub mod api_keys;
pub mod app;
pub mod approvals;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod db;
pub mod egress;
pub mod error;
pub mod events;
pub mod executions;
pub mod extract;
pub mod hub;
pub mod logging;
pub mod messages;
pub mod pg_cluster;
pub mod replicas;
pub mod routes;
pub mod runner_socket;
pub mod sandbox;
pub mod sse;
pub mod threads;

pub use app::{AppState, RunningServer, StartError, start, start_with_backend};
pub use config::Config;
