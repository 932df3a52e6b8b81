//! Tools: Python plugins every agent, workflow and person can call (`docs/tools.md`).
//!
//! Layout:
//! - [`settings`]: `TOOL_DIRS` and the other settings.
//! - [`discovery`]: finding tools in the folders, later folders shadowing earlier ones, and
//!   reading each `pyproject.toml`'s `[tool.centaur]` ([`centaur_protocol::tools::Manifest`]).
//! - [`environment`]: each tool's Python environment, built by `uv` from its `pyproject.toml`.
//! - [`sdk`]: the Python SDK (`tools/sdk/centaur_tools`), built into the server and written to
//!   the data folder, so every worker runs the SDK of this server.
//! - [`jail`]: the bubblewrap confinement a worker runs in.
//! - [`worker`]: one long-lived worker process and the framed JSON protocol with it.
//! - [`schema`]: checking a call's arguments against the method's JSON Schema.
//! - [`registry`]: this replica's tools, their state and workers, and reloading on change.
//! - [`egress`]: each tool's identity and policy at the egress proxy.
//! - [`calls`]: a call, from the route to its answer: checks, a thread's events and
//!   approvals, the worker.
//! - [`attachments`]: files a call saves to its thread.

pub mod attachments;
pub mod calls;
pub mod discovery;
pub mod egress;
pub mod environment;
pub mod jail;
pub mod registry;
pub mod schema;
pub mod sdk;
pub mod settings;
pub mod worker;

pub use registry::Tools;

use centaur_protocol::ErrorCode;

use crate::error::ApiError;

/// Why a call was not answered with the method's value.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("no tool named {0:?} (centaur tools list shows them)")]
    UnknownTool(String),
    #[error("the tool {tool:?} has no method {method:?}")]
    UnknownMethod { tool: String, method: String },
    #[error("argument {argument:?}: {message}")]
    InvalidArguments { argument: String, message: String },
    /// The request's body is not a JSON object.
    #[error("the body must be a JSON object of the method's arguments")]
    NotAnObject,
    #[error("the tool {tool:?} cannot be called: {reason}")]
    Unavailable { tool: String, reason: String },
    #[error("no TOOL_DIRS are configured")]
    NotConfigured,
    #[error("the tool's environment is not built")]
    NoEnvironment,
    #[error("preparing the tool's folders: {0}")]
    Folders(#[source] std::io::Error),
    #[error(transparent)]
    Start(#[from] worker::StartError),
    /// The worker ended (or was ended) before answering.
    #[error("{0}")]
    WorkerExited(String),
    /// The method raised: a `ToolError`'s message, or `<Exception>: <text>`.
    #[error("{0}")]
    Method(String),
    /// The call's files were refused (too large, not base64).
    #[error("{0}")]
    Attachments(String),
    /// A failure of the call that none of the others names.
    #[error("{0}")]
    Failed(String),
    #[error("the call did not finish within {secs} s")]
    Timeout { secs: u64 },
    /// The call waited its timeout for one of the tool's call slots and did not get one.
    #[error(
        "{tool} is busy: all {concurrency} of its call slots stayed taken for {secs} s (its calls are slow, or too many come at once); try again later"
    )]
    Busy {
        tool: String,
        concurrency: u32,
        secs: u64,
    },
    #[error("{decided_by} denied the call{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Denied {
        decided_by: String,
        reason: Option<String>,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<ToolError> for ApiError {
    fn from(error: ToolError) -> Self {
        let message = error.to_string();
        match error {
            ToolError::UnknownTool(_) => ApiError::NotFound {
                code: ErrorCode::ToolNotFound,
                message,
            },
            ToolError::UnknownMethod { .. } => ApiError::NotFound {
                code: ErrorCode::ToolMethodNotFound,
                message,
            },
            ToolError::InvalidArguments { .. } | ToolError::NotAnObject => {
                ApiError::bad_request(ErrorCode::InvalidArguments, message)
            }
            ToolError::Unavailable { .. } | ToolError::Busy { .. } => ApiError::Unavailable {
                code: ErrorCode::ToolUnavailable,
                message,
            },
            ToolError::NotConfigured
            | ToolError::NoEnvironment
            | ToolError::Folders(_)
            | ToolError::Start(_)
            | ToolError::WorkerExited(_)
            | ToolError::Method(_)
            | ToolError::Attachments(_)
            | ToolError::Failed(_) => ApiError::BadGateway {
                code: ErrorCode::ToolFailed,
                message,
            },
            ToolError::Timeout { .. } => ApiError::GatewayTimeout {
                code: ErrorCode::ToolTimeout,
                message,
            },
            ToolError::Denied { .. } => ApiError::Refused {
                code: ErrorCode::ToolCallDenied,
                message,
            },
            ToolError::Api(error) => error,
        }
    }
}
