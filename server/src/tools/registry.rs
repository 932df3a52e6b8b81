//! This replica's tools: what was found, each one's state (loading, ready, broken), its worker,
//! and reloading when the folders change.

use std::sync::Arc;

use centaur_protocol::tools::{CallContext, MethodInfo, ToolInfo, ToolList};
use serde_json::{Map, Value};

use super::ToolError;
use super::attachments::NewAttachment;
use crate::app::AppState;
use crate::config::Config;

/// Why the tools could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum ToolSetupError {
    #[error("CENTAUR_DATA_DIR: {0}")]
    DataDir(#[source] std::io::Error),
}

/// What a method returned, and the files it saved.
#[derive(Debug)]
pub struct Invoked {
    pub value: Value,
    pub attachments: Vec<NewAttachment>,
}

/// The tools of this replica.
pub struct Tools {
    _private: (),
}

impl Tools {
    /// Prepares the tools (nothing runs until [`Tools::spawn`]).
    pub fn new(_config: &Config) -> Result<Arc<Tools>, ToolSetupError> {
        Ok(Arc::new(Tools { _private: () }))
    }

    /// Finds the tools, builds their environments and reads their methods in the background,
    /// and watches the folders until shutdown.
    pub fn spawn(_state: &AppState) {}

    /// Every tool found, ordered by name.
    pub fn list(&self) -> ToolList {
        ToolList { tools: Vec::new() }
    }

    pub fn info(&self, tool: &str) -> Result<ToolInfo, ToolError> {
        Err(ToolError::UnknownTool(tool.to_owned()))
    }

    /// The method as `GET /tools` shows it, if the tool is ready and has it.
    pub fn method(&self, tool: &str, _method: &str) -> Result<MethodInfo, ToolError> {
        Err(ToolError::UnknownTool(tool.to_owned()))
    }

    /// Runs the method in the tool's worker (starting it if needed), within the tool's
    /// concurrency limit and timeout. The arguments have been checked against the schema.
    pub async fn invoke(
        &self,
        _state: &AppState,
        tool: &str,
        _method: &str,
        _arguments: Map<String, Value>,
        _context: CallContext,
    ) -> Result<Invoked, ToolError> {
        Err(ToolError::UnknownTool(tool.to_owned()))
    }
}
