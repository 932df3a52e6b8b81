//! `claude-code`: Claude Code in print mode with stream-json both ways
//! (`claude -p --input-format stream-json --output-format stream-json --verbose`), its
//! permission prompts answered over stdio (`--permission-prompt-tool stdio`) from Centaur
//! approvals. Its configuration and sessions live in the workspace, so a new sandbox resumes
//! the conversation (`--resume`).
//!
//! Under the policy `never` it runs with `--permission-mode bypassPermissions` and asks
//! nothing. The policy comes with each turn: when it moves to or from `never`, the CLI is
//! started again with the other mode, resuming its session.

use async_trait::async_trait;
use centaur_protocol::runner::{ApprovalPolicy, Finish};

use super::Harness;
use super::stream_json::{Launch, Session};
use crate::turn::{Sandbox, Turn};

pub struct ClaudeCode {
    session: Session,
    launch: Launch,
    /// The launch gives Centaur's tools (the server had some when it was made).
    mcp: bool,
}

impl ClaudeCode {
    pub fn new(sandbox: &Sandbox) -> ClaudeCode {
        ClaudeCode {
            session: Session::new(sandbox),
            launch: launch(sandbox, sandbox.approval_policy, false),
            mcp: false,
        }
    }

    /// Makes the CLI run under `policy`, with Centaur's tools if the server has some: a CLI
    /// started with the other permission mode, or without tools that are there now, is ended,
    /// and the next start resumes its session with the right launch.
    async fn follow(&mut self, sandbox: &Sandbox) {
        let asks_first = asks_first(sandbox.approval_policy);
        let mcp = self.mcp || crate::tools::offered(&sandbox.env).await;
        if asks_first != self.launch.asks_first || mcp != self.mcp {
            tracing::info!(
                policy = sandbox.approval_policy.as_str(),
                tools = mcp,
                "claude starts with the approval policy and tools of this turn"
            );
            self.session.stop().await;
            self.launch = launch(sandbox, sandbox.approval_policy, mcp);
            self.mcp = mcp;
        }
    }
}

/// Centaur's tools as Claude Code's MCP server `centaur` (`centaur-tool mcp`), allowed without
/// asking: the Centaur server asks a person for the methods that need it.
fn mcp_args(sandbox: &Sandbox) -> Vec<String> {
    let server = crate::tools::MCP_SERVER;
    let url = sandbox
        .env
        .get(crate::tools::URL_VAR)
        .cloned()
        .unwrap_or_default();
    let config = serde_json::json!({"mcpServers": {server: {
        "type": "stdio",
        "command": "centaur-tool",
        "args": ["mcp"],
        "env": {(crate::tools::URL_VAR): url},
    }}});
    vec![
        "--mcp-config".into(),
        config.to_string(),
        "--allowedTools".into(),
        format!("mcp__{server}"),
    ]
}

/// Whether Claude Code asks before it acts under `policy`: it does, except under `never`.
fn asks_first(policy: ApprovalPolicy) -> bool {
    policy != ApprovalPolicy::Never
}

fn launch(sandbox: &Sandbox, policy: ApprovalPolicy, mcp: bool) -> Launch {
    let config_dir = sandbox.workspace.join(".centaur/claude");
    let mut args: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--permission-prompt-tool",
        "stdio",
    ]
    .map(String::from)
    .into();
    if !asks_first(policy) {
        args.extend(["--permission-mode".into(), "bypassPermissions".into()]);
    }
    if mcp {
        args.extend(mcp_args(sandbox));
    }
    Launch {
        name: "claude",
        program: sandbox
            .env
            .get("CENTAUR_CLAUDE_BIN")
            .cloned()
            .unwrap_or_else(|| "claude".into()),
        args,
        env: vec![
            ("CLAUDE_CONFIG_DIR".into(), config_dir.display().to_string()),
            ("DISABLE_TELEMETRY".into(), "1".into()),
            ("DISABLE_AUTOUPDATER".into(), "1".into()),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ),
        ],
        session_file: config_dir.join("centaur-session-id"),
        resume: Some(|id| vec!["--resume".into(), id.into()]),
        asks_first: asks_first(policy),
    }
}

#[async_trait]
impl Harness for ClaudeCode {
    async fn prepare(&mut self, sandbox: &Sandbox) {
        self.follow(sandbox).await;
        self.session.prepare(&self.launch);
    }

    async fn turn(&mut self, turn: &mut Turn) -> Finish {
        self.follow(&turn.sandbox.clone()).await;
        self.session.turn(&self.launch, turn).await
    }

    fn broken(&self) -> bool {
        self.session.broken
    }
}
