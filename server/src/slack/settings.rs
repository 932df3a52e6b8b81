//! The Slack bridge's settings (flattened into [`crate::Config`]).

use clap::{Args, ValueEnum};

use crate::crypto::Secret;

#[derive(Clone, Debug, Args)]
pub struct SlackSettings {
    /// How Slack reaches this server: `off`; `webhook` (the Events API and interactivity at
    /// `POST /api/webhooks/slack`, needs SLACK_SIGNING_SECRET and a public URL); `socket` (Socket
    /// Mode: the server dials Slack, needs SLACK_APP_TOKEN, no public URL). Both need
    /// SLACK_BOT_TOKEN.
    #[arg(long = "slack-mode", env = "CENTAUR_SLACK_MODE", value_enum, default_value_t = SlackMode::Off)]
    pub mode: SlackMode,

    /// The Slack app's signing secret (Basic Information → App Credentials), for webhook mode.
    #[arg(
        long = "slack-signing-secret",
        env = "SLACK_SIGNING_SECRET",
        hide_env_values = true
    )]
    pub signing_secret: Option<Secret>,

    /// The bot token (`xoxb-…`, OAuth & Permissions → Bot User OAuth Token).
    #[arg(
        long = "slack-bot-token",
        env = "SLACK_BOT_TOKEN",
        hide_env_values = true
    )]
    pub bot_token: Option<Secret>,

    /// The app-level token (`xapp-…`, with `connections:write`), for Socket Mode.
    #[arg(
        long = "slack-app-token",
        env = "SLACK_APP_TOKEN",
        hide_env_values = true
    )]
    pub app_token: Option<Secret>,

    /// Slack's Web API base URL (a local fake in tests).
    #[arg(
        long = "slack-api-url",
        env = "SLACK_API_URL",
        default_value = "https://slack.com/api"
    )]
    pub api_url: String,

    /// Workspaces (`T…`) whose events are taken, comma-separated (default: the bot's own).
    #[arg(
        long = "slack-allowed-teams",
        env = "CENTAUR_SLACK_ALLOWED_TEAMS",
        value_delimiter = ','
    )]
    pub allowed_teams: Vec<String>,

    /// Channels (`C…`, `G…`, `D…`) the bot answers in, comma-separated (default: all it is in).
    #[arg(
        long = "slack-allowed-channels",
        env = "CENTAUR_SLACK_ALLOWED_CHANNELS",
        value_delimiter = ','
    )]
    pub allowed_channels: Vec<String>,

    /// Users (`U…`) the bot answers and takes decisions from, comma-separated (default: anyone
    /// in an allowed workspace and channel).
    #[arg(
        long = "slack-allowed-users",
        env = "CENTAUR_SLACK_ALLOWED_USERS",
        value_delimiter = ','
    )]
    pub allowed_users: Vec<String>,

    /// Users (`U…`) who may decide approvals from Slack, comma-separated (default: the allowed
    /// users).
    #[arg(
        long = "slack-approvers",
        env = "CENTAUR_SLACK_APPROVERS",
        value_delimiter = ','
    )]
    pub approvers: Vec<String>,

    /// Other bots (`B…`) whose messages the bot takes, comma-separated (default: none).
    #[arg(
        long = "slack-allowed-bots",
        env = "CENTAUR_SLACK_ALLOWED_BOTS",
        value_delimiter = ','
    )]
    pub allowed_bots: Vec<String>,

    /// The harness of threads started from Slack (default: CENTAUR_DEFAULT_HARNESS).
    #[arg(long = "slack-harness", env = "CENTAUR_SLACK_HARNESS", value_parser = crate::config::parse_harness)]
    pub harness: Option<centaur_protocol::Harness>,

    /// Socket Mode connections kept open at once (Slack spreads events over them; one going
    /// away loses nothing). 1 to 10.
    #[arg(
        long = "slack-socket-connections",
        env = "CENTAUR_SLACK_SOCKET_CONNECTIONS",
        default_value_t = 2
    )]
    pub socket_connections: u32,

    /// Earlier messages of a Slack thread given to its first turn as context: at most this many
    /// characters (the newest kept).
    #[arg(
        long = "slack-context-chars",
        env = "CENTAUR_SLACK_CONTEXT_CHARS",
        default_value_t = 8000
    )]
    pub context_chars: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SlackMode {
    Off,
    Webhook,
    Socket,
}

/// Slack settings that cannot work together; each names its fix.
#[derive(Debug, thiserror::Error)]
pub enum SlackSettingsError {
    #[error(
        "CENTAUR_SLACK_MODE={0} needs SLACK_BOT_TOKEN (the xoxb-… Bot User OAuth Token from your Slack app's OAuth & Permissions page; `centaur dev slack` stores it)"
    )]
    NoBotToken(&'static str),
    #[error(
        "CENTAUR_SLACK_MODE=webhook needs SLACK_SIGNING_SECRET (your Slack app's Basic Information → Signing Secret)"
    )]
    NoSigningSecret,
    #[error(
        "CENTAUR_SLACK_MODE=socket needs SLACK_APP_TOKEN (an xapp-… app-level token with connections:write, from your Slack app's Basic Information → App-Level Tokens; `centaur dev slack` stores it)"
    )]
    NoAppToken,
    #[error("CENTAUR_SLACK_SOCKET_CONNECTIONS must be between 1 and 10")]
    SocketConnections,
}

impl SlackSettings {
    pub fn validate(&self) -> Result<(), SlackSettingsError> {
        let mode = match self.mode {
            SlackMode::Off => return Ok(()),
            SlackMode::Webhook => "webhook",
            SlackMode::Socket => "socket",
        };
        if self.bot_token.is_none() {
            return Err(SlackSettingsError::NoBotToken(mode));
        }
        match self.mode {
            SlackMode::Webhook if self.signing_secret.is_none() => {
                Err(SlackSettingsError::NoSigningSecret)
            }
            SlackMode::Socket if self.app_token.is_none() => Err(SlackSettingsError::NoAppToken),
            SlackMode::Socket if !(1..=10).contains(&self.socket_connections) => {
                Err(SlackSettingsError::SocketConnections)
            }
            SlackMode::Off | SlackMode::Webhook | SlackMode::Socket => Ok(()),
        }
    }
}

impl SlackSettings {
    /// Every setting at its default (tests).
    #[cfg(test)]
    pub fn defaults() -> SlackSettings {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            slack: SlackSettings,
        }
        Cli::parse_from(["test"]).slack
    }
}
