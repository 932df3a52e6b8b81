//! `amp`: Amp in execute mode with stream-json both ways
//! (`amp --execute --stream-json --stream-json-input`), whose output is Claude Code's
//! stream-json. The Amp thread's id is kept in the workspace, so a new sandbox continues it
//! (`amp threads continue <id>`).

use async_trait::async_trait;
use centaur_protocol::runner::Finish;

use super::Harness;
use super::stream_json::{Launch, Session};
use crate::turn::{Sandbox, Turn};

pub struct Amp {
    session: Session,
    launch: Launch,
}

impl Amp {
    pub fn new(sandbox: &Sandbox) -> Amp {
        let state = sandbox.workspace.join(".centaur/amp");
        let launch = Launch {
            name: "amp",
            program: sandbox
                .env
                .get("CENTAUR_AMP_BIN")
                .cloned()
                .unwrap_or_else(|| "amp".into()),
            args: [
                "--execute",
                "--stream-json",
                "--stream-json-thinking",
                "--stream-json-input",
                "--no-notifications",
                "--no-color",
            ]
            .map(String::from)
            .into(),
            env: Vec::new(),
            session_file: state.join("thread-id"),
            resume: Some(|id| vec!["threads".into(), "continue".into(), id.into()]),
            // Amp does not ask over stream-json: its commands start when announced.
            asks_first: false,
        };
        Amp {
            session: Session::new(sandbox),
            launch,
        }
    }
}

#[async_trait]
impl Harness for Amp {
    async fn prepare(&mut self, _sandbox: &Sandbox) {
        self.session.prepare(&self.launch);
    }

    async fn turn(&mut self, turn: &mut Turn) -> Finish {
        self.session.turn(&self.launch, turn).await
    }

    fn broken(&self) -> bool {
        self.session.broken
    }
}
