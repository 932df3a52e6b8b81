//! Integration tests of the control plane over real HTTP against real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

mod audit;
mod auth;
mod bad_input;
mod boundaries;
mod claude;
mod cli;
mod codex;
mod db_down;
mod dev;
mod egress;
mod egress_push;
mod first_hour;
mod flow;
mod interrupts;
mod lifecycle;
mod outage;
mod placeholders;
mod replicas;
mod resume;
mod sandboxes;
mod seccomp;
mod slack_cli;
mod slack_delivery;
mod slack_ingress;
mod streams;
mod tools;
mod tools_codex;
mod tools_egress;
mod tools_grants;
mod tools_thread;
mod tui;
