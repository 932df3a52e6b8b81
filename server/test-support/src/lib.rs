#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // test code stops at the first surprise
//! `centaur-test-support`: what the tests and benchmarks of several crates share, so product
//! libraries carry no fixtures and test files do not import from each other.
//!
//! - [`script`]: recorded event streams written as scripts (deterministic ids and times).
//! - [`tui`]: the terminal interface following a scripted thread.
//! - [`pty`]: a program in a pseudo-terminal, its screen read as a terminal draws it.
//! - [`measure`]: percentiles, milliseconds and a process's memory for the benchmarks.
//! - [`temp`]: a fresh folder per test.
//!
//! With the `stack` feature (builds the server, the proxy, sqlx and reqwest):
//!
//! - [`pg`]: a throwaway PostgreSQL cluster per run and a fresh database per test or benchmark.
//! - [`relay`]: a TCP relay in front of PostgreSQL that a test cuts and restores.
//! - [`http`]: HTTP clients, TLS through ring.
//! - [`server`]: the server in this process on a recording backend, and calls to it as admin.
//! - [`backend`]: a sandbox backend that records what it was asked.
//! - [`runner`]: the test playing `centaur-runner` over the runner API.
//! - [`events`]: a thread's event stream read frame by frame, and what its events say.
//! - [`proxy`]: the egress proxy in this process, with fixed credentials.
//! - [`local_stack`]: a server with real sandboxes behind that proxy; ending their processes.
//! - [`process`]: the `centaur-server` binary as its own process, its environment, a free port.
//! - [`binaries`]: the workspace's binaries, built on demand; their output as text.
//! - [`anthropic`]: a scripted mock of the Anthropic Messages API, and a stack running the real
//!   Claude Code against it.
//! - [`model`]: a scripted mock of the OpenAI Responses API, and a stack running the real Codex
//!   against it.
//! - [`npm`]: the harnesses' CLIs (Claude Code, Codex), installed from npm once.
//! - [`slack`]: a fake Slack speaking Slack's wire format: the Web API, events and clicks sent
//!   signed to the webhook (retried as Slack retries) or over Socket Mode, and what it shows.
//! - [`tools`]: tool folders written for a test, `uv` found, a server with tools.

pub mod measure;
pub mod pty;
pub mod script;
pub mod temp;
pub mod tui;

#[cfg(feature = "stack")]
pub mod anthropic;
#[cfg(feature = "stack")]
pub mod backend;
#[cfg(feature = "stack")]
pub mod binaries;
#[cfg(feature = "stack")]
pub mod events;
#[cfg(feature = "stack")]
pub mod http;
#[cfg(feature = "stack")]
pub mod local_stack;
#[cfg(feature = "stack")]
pub mod model;
#[cfg(feature = "stack")]
pub mod npm;
#[cfg(feature = "stack")]
pub mod pg;
#[cfg(feature = "stack")]
pub mod process;
#[cfg(feature = "stack")]
pub mod proxy;
#[cfg(feature = "stack")]
pub mod relay;
#[cfg(feature = "stack")]
pub mod runner;
#[cfg(feature = "stack")]
pub mod server;
#[cfg(feature = "stack")]
pub mod slack;
#[cfg(feature = "stack")]
pub mod tools;
