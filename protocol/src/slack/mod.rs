//! Slack's wire formats, as the server's bridge and the tests' fake Slack both use them.
//!
//! - [`events`]: what Slack sends: Events API envelopes and their events, Socket Mode frames and
//!   their acknowledgements, interactivity payloads (`block_actions`).
//! - [`web`]: the Web API methods the bridge calls: each request is a type that names its method
//!   and its response ([`web::Method`]), and every answer is wrapped in [`web::Answer`].
//! - [`blocks`]: the Block Kit blocks the bridge posts (approval buttons, the Stop button).
//! - [`link`]: Slack message links (`https://<team>.slack.com/archives/<channel>/p<ts>`) and the
//!   Centaur thread key they name.
//!
//! Facts and sources: `../shared/notes/slack-facts.md`. Unknown fields are ignored everywhere
//! Slack is the sender: Slack adds fields freely.

pub mod blocks;
pub mod events;
pub mod link;
pub mod web;

use serde::{Deserialize, Serialize};

/// A Slack user as Centaur records them on messages, decisions and threads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlackUser {
    /// `U…` (or `B…` for an allow-listed bot).
    pub id: String,
    /// The display name (else the real name, else the handle) when it could be looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl SlackUser {
    /// The display name, else the id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// Where a Slack thread of Centaur's lives and who started it (`ThreadSummary.slack`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackOrigin {
    pub team_id: String,
    pub channel_id: String,
    /// `general` (without `#`), when it could be looked up; absent for direct messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
    pub thread_ts: String,
    pub started_by: SlackUser,
}

/// Slack's thread key for a conversation: `slack:<channel_id>:<thread_ts>`.
pub fn thread_key(
    channel_id: &str,
    thread_ts: &str,
) -> Result<crate::ThreadKey, crate::ThreadKeyError> {
    crate::ThreadKey::parse(&format!("slack:{channel_id}:{thread_ts}"))
}
