#![allow(clippy::unwrap_used)] // test code stops at the first surprise
//! `centaur-test-support`: what the tests and benchmarks of several crates share, so product
//! libraries carry no fixtures and test files do not import from each other.
//!
//! - [`script`]: recorded event streams written as scripts (deterministic ids and times).
//! - [`tui`]: the terminal interface following a scripted thread.
//! - [`pty`]: a program in a pseudo-terminal, its screen read as a terminal draws it.
//! - [`measure`]: percentiles and milliseconds for the benchmarks.

pub mod measure;
pub mod pty;
pub mod script;
pub mod tui;
