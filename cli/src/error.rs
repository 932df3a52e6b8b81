//! Why a command failed: each reason maps to an exit code (docs/cli.md's table) and one line
//! that names the fix.

use centaur_protocol::ThreadKeyError;
use centaur_protocol::slack::link::SlackLinkError;

use centaur_cli::dev::DevError;
use centaur_client::Failure;
use centaur_client::audit::AuditError;
use centaur_tui::TuiError;

use crate::commands::tools::ArgumentsError;
use crate::server::NoServer;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Server(#[from] Failure),
    #[error(transparent)]
    NoServer(#[from] NoServer),
    #[error(transparent)]
    Tui(#[from] TuiError),
    #[error(transparent)]
    Dev(#[from] DevError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("bad thread key `{raw}`: {source}")]
    BadThreadKey { raw: String, source: ThreadKeyError },
    #[error("bad Slack link `{raw}`: {source}")]
    BadSlackLink { raw: String, source: SlackLinkError },
    #[error(
        "no thread of Centaur's holds Slack message {message_ts} in channel {channel_id}: check the link, or mention the bot in that Slack thread first"
    )]
    SlackLinkMatchesNothing {
        channel_id: String,
        message_ts: String,
    },
    /// The server refused a tool call's arguments (`invalid_arguments`, naming the argument).
    #[error(transparent)]
    ToolArguments(Failure),
    /// The arguments given to `centaur tools call` are not a JSON object.
    #[error(transparent)]
    BadToolArguments(#[from] ArgumentsError),
    #[error("`{0}` is not an approval id")]
    NotAnApprovalId(String),
    #[error("--deny and --for-session do not go together")]
    DenyForSession,
    #[error("cannot write the {what}: {source}")]
    Write {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("no command `{name}`; one of {}", .commands.join(", "))]
    NoSuchCommand { name: String, commands: Vec<String> },
    /// A command that is not built yet (hidden from the help).
    #[error("{0} are not available on this server yet")]
    NotBuilt(&'static str),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Server(failure) => failure.exit_code(),
            CliError::NoServer(_) => 3,
            CliError::Tui(error) => error.exit_code(),
            CliError::Dev(error) => error.exit_code(),
            CliError::Audit(error) => error.exit_code(),
            CliError::BadThreadKey { .. }
            | CliError::BadSlackLink { .. }
            | CliError::NotAnApprovalId(_)
            | CliError::ToolArguments(_)
            | CliError::BadToolArguments(_)
            | CliError::DenyForSession
            | CliError::NoSuchCommand { .. } => 2,
            CliError::Write { .. }
            | CliError::NotBuilt(_)
            | CliError::SlackLinkMatchesNothing { .. } => 1,
        }
    }
}
