//! A Slack message becoming a turn: the thread `slack:<channel>:<thread_ts>`, the Slack thread's
//! earlier messages as context for its first turn, who may ask, `stop`, and a reply while a turn
//! runs.
//!
//! Which messages are taken: an `app_mention`; a direct message (`message` in an `im`); a reply
//! (`message` with `thread_ts`) in a Slack thread that already has a Centaur thread, with no
//! mention needed. The bot's own messages, other bots (unless `CENTAUR_SLACK_ALLOWED_BOTS`),
//! edits, deletions and other subtypes, and top-level channel messages without a mention are
//! ignored. A `message` event that mentions the bot outside a direct message is left to its
//! `app_mention` (Slack sends both for one post).
//!
//! Handling the same Slack message twice (Slack's retries, a worker that died half-way) gives one
//! turn: the turn's idempotency key and the message's `client_message_id` are both
//! `slack:<channel>:<ts>`, and `slack_messages` remembers every message taken.
//!
//! One idea a file:
//! - [`admission`]: which messages count, and who may ask (the allow-lists).
//! - [`plain_text`]: Slack's text made plain for a harness.
//! - [`context`]: the Slack thread's earlier messages, for a first turn.
//! - [`turn`]: a taken message starting a turn, or waiting for the running one; `stop`.
//! - [`after_turn`]: at a turn's end, which Slack messages it took, and the next turn for those
//!   still waiting.

mod admission;
pub mod after_turn;
mod context;
mod plain_text;
mod turn;

pub use admission::{Allowed, Arrival, Refusal, Verdict, classify, is_stop};
pub use after_turn::{AfterTurnError, after_turn, after_turn_of};
pub use context::{ContextLine, Earlier, with_context};
pub use plain_text::{mentioned_users, plain_text};
pub use turn::{gave_up, handle_event, stop};

use super::web::WebError;
use crate::error::ApiError;

/// How long a call waits out Slack's rate limits before giving up.
const RATE_LIMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// Starting or continuing the turn failed (the database away, or the server refused).
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    AfterTurn(#[from] AfterTurnError),
    #[error("{0}")]
    Slack(#[from] WebError),
    #[error(
        "the thread key for Slack channel {channel} and thread {thread_ts} is invalid: {source}"
    )]
    ThreadKey {
        channel: String,
        thread_ts: String,
        #[source]
        source: centaur_protocol::ThreadKeyError,
    },
}
