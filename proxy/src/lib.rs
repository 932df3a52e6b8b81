//! `centaur-proxy`: the only way out of a sandbox, holding the credentials sandboxes never see.
//! Policies and host patterns are wire types in `centaur_protocol::egress`; the OS keyring is
//! `centaur_keyring`.
//!
//! - [`address`]: resolve once, refuse private, loopback and metadata addresses, dial what passed.
//! - [`audit`]: one record per request, never a secret value, and the sinks records go to.
//! - [`control`]: the API through which the server pushes sandboxes and their policies.
//! - [`credentials`]: placeholders, the swap on bound hosts and headers, leaks, scrubbing echoes.
//! - [`forward`]: the sandbox side: loopback to the proxy socket, and the sandbox environment.
//! - [`http`]: the proxy's own outgoing requests (audit upload, 1Password Connect).
//! - [`limits`]: caps per sandbox and for the whole proxy (connections, bytes, tunnels, requests).
//! - [`pool`]: upstream connections kept alive between requests.
//! - [`registry`]: the sandboxes served, each policy replaced atomically, versioned.
//! - [`secrets`]: where real values come from (environment, files, 1Password, the OS keyring).
//! - [`server`]: the listeners and each request's way upstream and back.
//! - [`service`]: a whole proxy put together from its settings (a file, or `centaur dev`).
//! - [`tls`]: interception: the CA, leaves minted per host, the verifying upstream client.
//! - [`websocket`]: frames after a WebSocket upgrade, scrubbed on their way to the sandbox.
//!
//! `centaur dev` embeds this library; the `centaur-proxy` binary runs it standalone.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

pub mod address;
pub mod audit;
pub mod control;
pub mod credentials;
pub mod forward;
pub mod http;
pub mod limits;
pub mod pool;
pub mod registry;
pub mod secrets;
pub mod server;
pub mod service;
pub mod tls;
pub mod websocket;

pub use limits::Limits;
pub use registry::{Registry, SandboxConfig};
pub use server::Proxy;
