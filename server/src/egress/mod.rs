//! Egress: what each sandbox may reach through the proxy, and what it did.
//!
//! - [`policy`]: the desired state in PostgreSQL (each thread's policy or the deployment's
//!   default, and one versioned row per sandbox), pushed to the proxy when a sandbox is
//!   created, changed or released, and synced in full periodically.
//! - [`proxy_client`]: the server's side of the proxy's control API.
//! - [`audit`]: the proxy's audit records, stored, with refusals added to threads' streams.

pub mod audit;
pub mod policy;
pub mod proxy_client;

pub use policy::{Egress, EgressError, EgressSetupError, SandboxEgress};
