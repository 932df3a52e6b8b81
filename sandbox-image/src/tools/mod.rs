//! Centaur's tools from inside a sandbox (`docs/tools.md`).
//!
//! - [`endpoint`]: the runner serves `/tools` to the sandbox's processes on a loopback port and
//!   forwards each request to the server with the sandbox's token, which they never see.
//! - [`command`]: `centaur-tool` (this binary under that name, or `centaur-runner tool`): list,
//!   show and call tools through the endpoint, or serve them over MCP.
//! - [`mcp`]: `centaur-tool mcp`, an MCP server over stdio offering every ready method as an MCP
//!   tool; Codex and Claude Code are configured to start it (see [`offered`]).

pub mod command;
pub mod endpoint;
pub mod mcp;

use std::collections::BTreeMap;
use std::time::Duration;

use centaur_protocol::tools::{ToolList, ToolStatus};
use hyper::Method;

use crate::link::{Endpoint, Link};

/// The variable that tells the sandbox's processes where the endpoint is.
pub const URL_VAR: &str = "CENTAUR_TOOLS_URL";
/// Where the endpoint listens unless told otherwise (`CENTAUR_TOOLS_LISTEN`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3129";
/// The MCP server's name in the harnesses' configuration: the model sees
/// `mcp__centaur__<tool>_<method>`.
pub const MCP_SERVER: &str = "centaur";

/// A link to the endpoint at `url` (`http://127.0.0.1:3129`).
pub fn endpoint_link(url: &str) -> Result<Link, crate::link::BadEndpoint> {
    Ok(Link::without_token(url.parse::<Endpoint>()?))
}

/// Whether the harness should be given the MCP server: the sandbox has the endpoint and the
/// server has a tool that is ready or about to be. A stack without tools does not pay for an
/// MCP server in every harness; a failure to ask counts as none (the harness runs without).
pub async fn offered(env: &BTreeMap<String, String>) -> bool {
    let Some(link) = env.get(URL_VAR).and_then(|url| endpoint_link(url).ok()) else {
        return false;
    };
    let asked = tokio::time::timeout(
        Duration::from_secs(10),
        link.call::<(), ToolList>(Method::GET, "/tools", None),
    )
    .await;
    match asked {
        Ok(Ok(Some(list))) => list.tools.iter().any(|tool| match tool.status {
            ToolStatus::Ready | ToolStatus::Loading => true,
            ToolStatus::Broken => false,
        }),
        Ok(Ok(None)) => false,
        Ok(Err(error)) => {
            tracing::info!(%error, "cannot list the server's tools; the harness runs without them");
            false
        }
        Err(_) => {
            tracing::info!("listing the server's tools timed out; the harness runs without them");
            false
        }
    }
}
