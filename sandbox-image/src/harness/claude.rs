//! `claude-code`: Claude Code in print mode with stream-json both ways
//! (`claude -p --input-format stream-json --output-format stream-json --verbose`), its
//! permission prompts answered over stdio (`--permission-prompt-tool stdio`) from Centaur
//! approvals. Its configuration and sessions live in the workspace, so a new sandbox resumes
//! the conversation (`--resume`).

use async_trait::async_trait;
use centaur_protocol::runner::{ApprovalPolicy, Finish};

use super::Harness;
use super::stream_json::{Launch, Session};
use crate::turn::{Sandbox, Turn};

pub struct ClaudeCode {
    session: Session,
    launch: Launch,
}

impl ClaudeCode {
    pub fn new(sandbox: &Sandbox) -> ClaudeCode {
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
        if sandbox.approval_policy == ApprovalPolicy::Never {
            args.extend(["--permission-mode".into(), "bypassPermissions".into()]);
        }
        let launch = Launch {
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
            asks_first: sandbox.approval_policy != ApprovalPolicy::Never,
        };
        ClaudeCode {
            session: Session::new(sandbox),
            launch,
        }
    }
}

#[async_trait]
impl Harness for ClaudeCode {
    async fn prepare(&mut self) {
        self.session.prepare(&self.launch);
    }

    async fn turn(&mut self, turn: &mut Turn) -> Finish {
        self.session.turn(&self.launch, turn).await
    }

    fn broken(&self) -> bool {
        self.session.broken
    }
}
