//! `centaur-proxy`: the only way out of a sandbox, holding the credentials sandboxes never see.
//!
//! - [`policy`]: default deny, allowed and denied host patterns ([`host`]), which hosts are
//!   intercepted.
//! - [`address`]: resolve once, refuse private, loopback and metadata addresses, dial what was
//!   checked.
//! - [`credentials`]: per-sandbox placeholders, the swap on bound hosts and headers only, leak
//!   detection everywhere else, and scrubbing of echoed secrets.
//! - [`secrets`]: where real values come from ([`keyring`] among them).
//! - [`registry`]: the sandboxes served, each policy replaced atomically, versioned.
//! - [`control`]: the API through which the server pushes sandboxes and policies.
//! - [`server`]: listeners (a Unix socket per sandbox, TCP with a proxy credential) and the
//!   request path.
//! - [`limits`]: caps per sandbox and for the whole proxy (connections, buffered bytes,
//!   tunnels, requests in flight).
//! - [`websocket`]: frames after a WebSocket upgrade, scrubbed on their way to the sandbox.
//! - [`audit`]: one record per request, never a secret value.
//! - [`forward`]: the sandbox side: loopback to the proxy socket, and the sandbox environment.
//!
//! The server embeds this library; the binary runs it standalone.
#![cfg_attr(test, allow(clippy::unwrap_used))] // tests stop at the first surprise

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
