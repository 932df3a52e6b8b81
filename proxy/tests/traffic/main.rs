//! Real traffic on loopback: clients (reqwest, curl, raw sockets) through the proxy to local
//! upstream servers, asserting what the upstream received and what was audited.
//!
//! - `support`: the harness, upstreams, clients, and the control API as the server calls it.
//! - `policy`: denied hosts, one policy per sandbox, changes inside open tunnels.
//! - `addresses`: private, metadata, documentation and wrapped addresses refused.
//! - `credentials`: the swap on bound hosts and headers, the echo scrubbed, unreadable secrets.
//! - `leaks`: placeholders where they are not bound, or bound ones sent in cleartext.
//! - `rotation`: a rejected credential read again and the request retried.
//! - `scrubbing`: reason phrases, header names, bodies in codings the scrubber cannot read.
//! - `listeners`: the TCP listener's sandbox credential, curl through the proxy.
//! - `tunnels`: `CONNECT` to allowed hosts, and refused.
//! - `interception`: intercepted HTTPS over HTTP/1.1 and HTTP/2, checks, upstream certificates.
//! - `websocket`: upgrades through interception, frames scrubbed, what cannot be scrubbed refused.
//! - `limits`: body size, requests in flight, connections, buffered bytes.
//! - `pool`: kept-alive upstream connections sized to the load.
//! - `audit`: delivery to the server in batches, every refusal audited.
//! - `control_api`: the server pushes sandboxes and policies.
//! - `bubblewrap`: from inside a real bubblewrap sandbox.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

mod addresses;
mod audit;
mod bubblewrap;
mod control_api;
mod credentials;
mod interception;
mod leaks;
mod limits;
mod listeners;
mod policy;
mod pool;
mod rotation;
mod scrubbing;
mod support;
mod tunnels;
mod websocket;
