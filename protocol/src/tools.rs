//! Tools: the bodies of `/tools` (what a tool offers, a call's answer) and the frames between
//! the server and a tool's Python worker (`docs/tools.md`).
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /tools` | | [`ToolList`] |
//! | `GET /tools/{tool}` | | [`ToolInfo`] |
//! | `POST /tools/{tool}/{method}` | the arguments, a JSON object | [`ToolCallAnswer`] |
//!
//! The worker protocol: UTF-8 JSON, one message per line, on the worker's stdin (the server's
//! [`WorkerRequest`]s) and on the descriptor that was its stdout when it started (the worker's
//! [`WorkerMessage`]s). The worker points its own file descriptor 1 at stderr before it imports
//! the plugin, so nothing the plugin prints can reach the protocol.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The version of the worker protocol this crate speaks; the worker's [`WorkerMessage::Ready`]
/// names the one it speaks, and a worker speaking another is refused.
pub const WORKER_PROTOCOL: u32 = 1;

/// `GET /tools`: every tool found, ready or not, ordered by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolList {
    pub tools: Vec<ToolInfo>,
}

/// One tool, as `GET /tools/{tool}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// The tool's folder name (`github`): `[a-z][a-z0-9_-]*`, at most 64 characters.
    pub name: String,
    /// `[tool.centaur] description`.
    #[serde(default)]
    pub description: String,
    pub status: ToolStatus,
    /// Why the tool cannot be called (`status: broken`), in one line that names the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The folder it was loaded from.
    pub source: String,
    /// Folders of earlier `TOOL_DIRS` entries holding a tool of the same name, which this one
    /// shadows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<String>,
    /// Hosts the tool may reach through the egress proxy (declared and added by the operator).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Names of the secrets it uses (never their values).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Empty until the tool has been described (`status: ready`).
    #[serde(default)]
    pub methods: Vec<MethodInfo>,
}

/// Where a tool stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    /// Found; its environment is being built or its methods read.
    Loading,
    /// Callable.
    Ready,
    /// Cannot be called; `error` says why.
    Broken,
}

impl ToolStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolStatus::Loading => "loading",
            ToolStatus::Ready => "ready",
            ToolStatus::Broken => "broken",
        }
    }
}

/// One public method of a tool's client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodInfo {
    pub name: String,
    /// The docstring's summary, and its text.
    #[serde(default)]
    pub description: String,
    /// JSON Schema (draft 2020-12) of the arguments object, from the signature's type hints,
    /// defaults and docstring.
    pub parameters: Value,
    /// JSON Schema of the return value, when its type hint says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<Value>,
    /// Whether a call from a thread waits for a person's approval (`[tool.centaur] approval`).
    #[serde(default)]
    pub approval: bool,
}

/// The answer to `POST /tools/{tool}/{method}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCallAnswer {
    pub call_id: Uuid,
    /// What the method returned.
    pub result: Value,
    /// From the call's arrival to its answer, in milliseconds.
    pub duration_ms: u64,
}

/// Who a call is made for: given to the plugin as its context.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    /// The calling thread's key, for calls from a sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Who asked: `api_key:<name>`, `admin`, or the person behind the thread's turn
    /// (`slack:U1 (Ann)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The server's frames to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerRequest {
    /// Call `method` with `arguments` (already checked against its schema).
    Call {
        id: Uuid,
        method: String,
        arguments: serde_json::Map<String, Value>,
        context: CallContext,
    },
}

/// A worker's frames to the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The first frame: the worker has imported the plugin and is ready for calls.
    Ready {
        protocol: u32,
        methods: Vec<MethodInfo>,
    },
    /// A call's value.
    Result { id: Uuid, value: Value },
    /// A call's failure.
    Error { id: Uuid, error: WorkerError },
    /// A line of the plugin's log (`context().log`), for the server's log.
    Log {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Uuid>,
        level: LogLevel,
        message: String,
    },
    /// A file the call saves to its thread (`context().attach`).
    Attachment {
        id: Uuid,
        name: String,
        mime: String,
        /// The bytes, base64 (standard alphabet, padded).
        data: String,
    },
}

/// Why a call failed inside the worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerError {
    pub kind: WorkerErrorKind,
    pub message: String,
    /// The argument at fault (`invalid_arguments`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerErrorKind {
    /// The plugin raised `ToolError`: a failure it meant to report (a 404 upstream, a refused
    /// query). The message is for the agent.
    ToolError,
    /// An argument could not be converted to the method's type hint.
    InvalidArguments,
    /// No such method.
    UnknownMethod,
    /// Any other exception: the message is the exception's type and text.
    Exception,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

/// `[tool.centaur]` of a plugin's `pyproject.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub description: String,
    /// Host patterns (as in an egress policy) the tool may reach through the proxy.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Methods whose calls from a thread wait for approval.
    #[serde(default)]
    pub approval: Vec<String>,
    /// Secrets, by name: a binding (the proxy swaps a placeholder for the value on these hosts
    /// and headers), or `{reveal = true}` for a value the tool itself needs (a database URL).
    #[serde(default)]
    pub secrets: BTreeMap<String, ManifestSecret>,
    /// Names of the server's environment variables the worker gets (settings, never secrets:
    /// `GITHUB_API_URL`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Calls of this tool run at once at most (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// A call's limit in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// One secret of a [`Manifest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSecret {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The worker gets the real value in its environment (for credentials that are not HTTP).
    #[serde(default)]
    pub reveal: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn worker_frames_are_tagged_by_type() {
        let id = Uuid::nil();
        let call = WorkerRequest::Call {
            id,
            method: "search".into(),
            arguments: json!({"q": "x"}).as_object().unwrap().clone(),
            context: CallContext {
                thread: Some("t".into()),
                user: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&call).unwrap(),
            json!({"type": "call", "id": id, "method": "search", "arguments": {"q": "x"},
                   "context": {"thread": "t"}})
        );
        let error: WorkerMessage = serde_json::from_value(json!({
            "type": "error", "id": id,
            "error": {"kind": "invalid_arguments", "message": "m", "argument": "q"}
        }))
        .unwrap();
        assert!(matches!(
            error,
            WorkerMessage::Error {
                error: WorkerError {
                    kind: WorkerErrorKind::InvalidArguments,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn a_manifest_refuses_unknown_keys() {
        let manifest: Result<Manifest, _> =
            serde_json::from_value(json!({"description": "d", "hostz": []}));
        assert!(manifest.is_err());
        let manifest: Manifest = serde_json::from_value(json!({
            "description": "d", "hosts": ["api.github.com"], "approval": ["post"],
            "secrets": {"GITHUB_TOKEN": {"hosts": ["api.github.com"], "headers": ["authorization"],
                                          "format": "Bearer {value}"},
                        "DATABASE_URL": {"reveal": true}}
        }))
        .unwrap();
        assert!(manifest.secrets["DATABASE_URL"].reveal);
    }
}
