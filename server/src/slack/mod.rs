//! The Slack bridge: a mention in Slack starts or continues the thread
//! `slack:<channel>:<thread_ts>`; its progress, answer and approvals go back into the Slack
//! thread. docs/slack.md is the user's guide.
//!
//! Ingress (either way, `CENTAUR_SLACK_MODE` chooses) stores what Slack sent in the inbox and
//! only then acknowledges it; workers act on the inbox afterwards. Egress follows each Slack
//! thread's events from the log, so a restart neither loses nor doubles what Slack is shown.
//!
//! Modules:
//! - [`settings`]: the bridge's settings.
//! - [`web`]: the Web API client (429 `Retry-After`, tokens kept out of errors).
//! - [`identity`]: who the bot is (`auth.test`), and people's and channels' names, cached.
//! - [`signature`]: Slack's v0 request signatures.
//! - [`webhook`]: `POST /api/webhooks/slack`: the Events API and interactivity over HTTP.
//! - [`socket_mode`]: Socket Mode connections, kept open and replaced before Slack drops them.
//! - [`inbox`]: what Slack sent, stored once (deduplicated across retries and replicas), then
//!   claimed and handled by a worker on any replica.
//! - [`conversation`]: a Slack message becoming a turn, one idea a file: which messages count
//!   and who may ask (`admission`), Slack text made plain (`plain_text`), the thread's earlier
//!   messages as context (`context`), starting or queueing a turn and `stop` (`turn`), and a
//!   turn's end: which messages it took, the next turn for those waiting (`after_turn`).
//! - [`interactions`]: button clicks: approvals decided from Slack, Stop.
//! - [`delivery`]: a Slack thread's events rendered into Slack (status, streamed progress, the
//!   answer, approval messages), under a lease, from a cursor kept in PostgreSQL.
//! - [`format`]: Markdown into Slack's mrkdwn, split within Slack's limits.
//! - [`blocks`]: the Block Kit messages the bridge posts.

pub mod blocks;
pub mod conversation;
pub mod delivery;
pub mod format;
pub mod identity;
pub mod inbox;
pub mod interactions;
pub mod settings;
pub mod signature;
pub mod socket_mode;
pub mod web;
pub mod webhook;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::app::AppState;
use crate::config::Config;
use identity::{BotIdentity, IdentityError, Names};
use settings::SlackMode;
use web::SlackWeb;

/// The bridge's shared state (`AppState.slack`, present when `CENTAUR_SLACK_MODE` is not `off`).
pub struct Slack {
    pub settings: settings::SlackSettings,
    pub web: SlackWeb,
    /// The bot, once `auth.test` answered.
    pub identity: identity::IdentityCell,
    /// Users' and channels' names, looked up once.
    pub names: Names,
    /// Wakes this replica's inbox workers (something was just stored).
    pub inbox_wake: Notify,
    /// Wakes this replica's delivery scheduler (a Slack thread has new work).
    pub delivery_wake: Notify,
}

impl Slack {
    /// The bridge for `config`, or `None` when Slack is off. Asks Slack who the bot is: a token
    /// Slack refuses stops the server with one line naming the fix; Slack out of reach does
    /// not (the bridge asks again in the background and waits for the answer).
    pub async fn connect(config: &Config) -> Result<Option<Arc<Slack>>, IdentityError> {
        let settings = config.slack.clone();
        if settings.mode == SlackMode::Off {
            return Ok(None);
        }
        let Some(bot_token) = settings.bot_token.clone() else {
            return Ok(None); // validate() refuses this first
        };
        let web = SlackWeb::new(&settings.api_url, bot_token, settings.app_token.clone());
        let slack = Arc::new(Slack {
            identity: identity::IdentityCell::default(),
            names: Names::default(),
            inbox_wake: Notify::new(),
            delivery_wake: Notify::new(),
            settings,
            web,
        });
        identity::check_tokens(&slack).await?;
        Ok(Some(slack))
    }

    /// The bot, waiting until `auth.test` has answered.
    pub async fn bot(&self) -> BotIdentity {
        self.identity.wait().await
    }
}

/// Starts the bridge's background work on this replica: the identity (if Slack was out of
/// reach at start), the inbox workers, the delivery scheduler and, in Socket Mode, the
/// connections. Each runs until shutdown.
pub fn spawn(state: &AppState) {
    let Some(slack) = state.slack.clone() else {
        return;
    };
    identity::spawn_until_known(state.clone(), slack.clone());
    inbox::spawn_workers(state.clone());
    delivery::spawn_scheduler(state.clone());
    if slack.settings.mode == SlackMode::Socket {
        socket_mode::spawn(state.clone());
    }
}
