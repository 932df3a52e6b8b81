//! A tool call, from the route to its answer: the arguments checked against the method's
//! schema, then, for a sandbox, the call recorded in its thread (`tool.call.started`, an
//! approval when the method needs one, `tool.call.finished` with any attachments), and the
//! method run in the tool's worker.

use std::time::Instant;

use centaur_protocol::tools::{CallContext, ToolCallAnswer};
use serde_json::Value;
use uuid::Uuid;

use super::{ToolError, schema};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

/// `POST /tools/{tool}/{method}` for `principal`.
pub async fn call(
    state: &AppState,
    principal: &Principal,
    tool: &str,
    method: &str,
    arguments: Value,
) -> ApiResult<ToolCallAnswer> {
    let started = Instant::now();
    let Value::Object(arguments) = arguments else {
        return Err(ToolError::InvalidArguments {
            argument: String::new(),
            message: "the body must be a JSON object of the method's arguments".into(),
        }
        .into());
    };
    let info = state.tools.method(tool, method)?;
    schema::check(&info.parameters, &arguments)?;
    let user = match principal {
        Principal::Admin => "admin".to_owned(),
        Principal::ApiKey { name, .. } => format!("api_key:{name}"),
        Principal::Sandbox { .. } => {
            return Err(ApiError::forbidden(
                "tool calls from sandboxes are not available yet",
            ));
        }
        Principal::Proxy => {
            return Err(ApiError::forbidden(
                "the proxy token may only report audit records",
            ));
        }
    };
    let call_id = Uuid::now_v7();
    let invoked = state
        .tools
        .invoke(
            state,
            tool,
            method,
            arguments,
            CallContext {
                thread: None,
                user: Some(user),
            },
        )
        .await?;
    if !invoked.attachments.is_empty() {
        tracing::info!(tool, method, %call_id, files = invoked.attachments.len(), "a call without a thread saved files; they are dropped");
    }
    Ok(ToolCallAnswer {
        call_id,
        result: invoked.value,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}
