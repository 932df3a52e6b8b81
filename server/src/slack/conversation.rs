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

use std::collections::HashMap;

use centaur_protocol::api::{ExecuteRequest, MessageRequest};
use centaur_protocol::slack::SlackUser;
use centaur_protocol::slack::events::{EventCallback, MessageEvent};
use centaur_protocol::slack::web::{
    ConversationsReplies, PostMessage, ReactionsAdd, ReactionsRemove, errors,
};
use centaur_protocol::{Author, ErrorCode, ExecutionStatus, Harness, ThreadKey};
use uuid::Uuid;

use super::Slack;
use super::identity::BotIdentity;
use super::settings::SlackSettings;
use super::web::WebError;
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::stored;
use crate::error::ApiError;
use crate::threads::{self, ThreadRow};
use crate::{executions, messages};

/// The reaction put on a message when the bridge takes it.
const PICKED_UP: &str = "eyes";
/// How long a call waits out Slack's rate limits before giving up.
const RATE_LIMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
/// Messages asked of `conversations.replies` per page.
const REPLIES_PAGE: u32 = 200;
/// Pages of `conversations.replies` read at most for a first turn's context.
const MAX_REPLIES_PAGES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// Starting or continuing the turn failed (the database away, or the server refused).
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
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

/// Whether a message of `app_mention` or `message` type arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    Mention,
    Message,
}

/// What becomes of a Slack message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A turn (or a message for the running one).
    Take,
    /// Not for the bot (its own, another bot's, an edit, chatter): nothing happens.
    Ignore(&'static str),
    /// For the bot, from someone or somewhere not allowed: logged, answered with one line.
    Refuse(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Team(String),
    Channel(String),
    User(String),
}

impl Refusal {
    fn explanation(&self) -> Option<&'static str> {
        match self {
            // Another workspace in a shared channel: stay quiet.
            Refusal::Team(_) => None,
            Refusal::Channel(_) => Some(
                "Centaur does not take requests in this channel (CENTAUR_SLACK_ALLOWED_CHANNELS).",
            ),
            Refusal::User(_) => Some(
                "Centaur does not take requests from you (CENTAUR_SLACK_ALLOWED_USERS); ask its operator.",
            ),
        }
    }
}

/// Who may ask, from the settings and the bot's own workspace.
pub struct Allowed<'a> {
    pub settings: &'a SlackSettings,
    pub bot: &'a BotIdentity,
}

impl Allowed<'_> {
    /// The workspace is allowed: listed, or (no list) the bot's own.
    pub fn team(&self, team: &str) -> bool {
        if self.settings.allowed_teams.is_empty() {
            team == self.bot.team_id
        } else {
            self.settings.allowed_teams.iter().any(|t| t == team)
        }
    }

    pub fn channel(&self, channel: &str) -> bool {
        self.settings.allowed_channels.is_empty()
            || self.settings.allowed_channels.iter().any(|c| c == channel)
    }

    pub fn user(&self, user: &str) -> bool {
        self.settings.allowed_users.is_empty()
            || self.settings.allowed_users.iter().any(|u| u == user)
    }

    /// May decide approvals: `CENTAUR_SLACK_APPROVERS`, else the allowed users, else anyone (in
    /// an allowed workspace, checked apart).
    pub fn approver(&self, user: &str) -> bool {
        if self.settings.approvers.is_empty() {
            self.user(user)
        } else {
            self.settings.approvers.iter().any(|u| u == user)
        }
    }

    fn bot_allowed(&self, bot_id: &str) -> bool {
        self.settings.allowed_bots.iter().any(|b| b == bot_id)
    }
}

/// Decides what becomes of `message`. `known_thread` says whether its Slack thread already has a
/// Centaur thread (asked only for replies that need it).
pub fn classify(
    allowed: &Allowed<'_>,
    team: &str,
    arrival: Arrival,
    message: &MessageEvent,
    known_thread: bool,
) -> Verdict {
    let bot = allowed.bot;
    if bot.wrote(message.user.as_deref(), message.bot_id.as_deref()) {
        return Verdict::Ignore("the bot's own message");
    }
    let from_bot = message.bot_id.as_deref();
    if let Some(bot_id) = from_bot
        && !allowed.bot_allowed(bot_id)
    {
        return Verdict::Ignore("another bot (not in CENTAUR_SLACK_ALLOWED_BOTS)");
    }
    match message.subtype.as_deref() {
        None | Some("file_share" | "thread_broadcast") => {}
        Some("bot_message") if from_bot.is_some() => {}
        Some(_) => return Verdict::Ignore("a subtype the bridge does not take"),
    }
    let mentioned = message.text.contains(&format!("<@{}>", bot.user_id));
    let wanted = match arrival {
        Arrival::Mention => true,
        // Its app_mention carries it (Slack sends both for one post).
        Arrival::Message if mentioned && !message.is_direct() => false,
        Arrival::Message => message.is_direct() || (message.thread_ts.is_some() && known_thread),
    };
    if !wanted {
        return Verdict::Ignore("not addressed to the bot");
    }
    if !allowed.team(team) {
        return Verdict::Refuse(Refusal::Team(team.to_owned()));
    }
    if !allowed.channel(&message.channel) {
        return Verdict::Refuse(Refusal::Channel(message.channel.clone()));
    }
    let who = message.user.as_deref().or(from_bot).unwrap_or_default();
    // An allow-listed bot is allowed by that list.
    if from_bot.is_none() && !allowed.user(who) {
        return Verdict::Refuse(Refusal::User(who.to_owned()));
    }
    Verdict::Take
}

/// Whether the text (mention removed) is the word `stop`.
pub fn is_stop(text: &str) -> bool {
    let word = text.trim().trim_end_matches(['.', '!', '?']).trim();
    word.eq_ignore_ascii_case("stop")
}

/// The user ids mentioned in Slack text (`<@U123>`, `<@U123|ann>`).
pub fn mentioned_users(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('>') else { break };
        let id = after[..end].split('|').next().unwrap_or_default();
        if !id.is_empty() && !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
        rest = &after[end..];
    }
    ids
}

/// Slack's message text as plain text for a harness: the bot's own mention removed, people as
/// `@Name` (from `names`, else the id), channels as `#name`, links as `label (url)` (or the
/// url), `&amp;` `&lt;` `&gt;` unescaped.
pub fn plain_text(text: &str, bot_user_id: &str, names: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&unescape(&rest[..start]));
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else {
            out.push_str(&unescape(&rest[start..]));
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (target, label) = match inner.split_once('|') {
            Some((target, label)) => (target, Some(label)),
            None => (inner, None),
        };
        let mut next = &after[end + 1..];
        if let Some(user) = target.strip_prefix('@') {
            if user == bot_user_id {
                // The mention goes, with one space after it.
                next = next.strip_prefix(' ').unwrap_or(next);
            } else {
                let name = names
                    .get(user)
                    .map(String::as_str)
                    .or(label)
                    .unwrap_or(user);
                out.push('@');
                out.push_str(&unescape(name));
            }
        } else if let Some(channel) = target.strip_prefix('#') {
            out.push('#');
            out.push_str(&unescape(label.unwrap_or(channel)));
        } else if let Some(special) = target.strip_prefix('!') {
            // <!here>, <!channel>, <!subteam^S1|@team>, <!date^…|fallback>
            match label {
                Some(label) => out.push_str(&unescape(label)),
                None => {
                    out.push('@');
                    out.push_str(special);
                }
            }
        } else {
            let url = unescape(target);
            match label {
                Some(label) if unescape(label) != url => {
                    out.push_str(&unescape(label));
                    out.push_str(" (");
                    out.push_str(&url);
                    out.push(')');
                }
                Some(_) | None => out.push_str(&url),
            }
        }
        rest = next;
    }
    out.push_str(&unescape(rest));
    out.trim().to_owned()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Slack's `ts` (`1700000000.000100`) as a number that orders like time.
fn ts_order(ts: &str) -> (u64, u64) {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    (secs.parse().unwrap_or(0), micros.parse().unwrap_or(0))
}

/// One earlier message of the Slack thread, as the first turn is given it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextLine {
    pub who: String,
    pub text: String,
}

/// The first turn's message: the person's text first (the thread's title stays the request),
/// then the newest earlier messages that fit in `max_chars`, oldest first.
pub fn with_context(text: &str, earlier: &[ContextLine], max_chars: usize) -> String {
    if earlier.is_empty() || max_chars == 0 {
        return text.to_owned();
    }
    let mut kept: Vec<String> = Vec::new();
    let mut used = 0;
    for line in earlier.iter().rev() {
        let rendered = format!("@{}: {}", line.who, line.text);
        let size = rendered.chars().count() + 1;
        if used + size > max_chars {
            if kept.is_empty() {
                // The newest alone is too long: its end is the freshest part.
                let keep = max_chars.saturating_sub(1);
                let skip = rendered.chars().count().saturating_sub(keep);
                let tail: String = rendered.chars().skip(skip).collect();
                kept.push(format!("…{tail}"));
            }
            break;
        }
        used += size;
        kept.push(rendered);
    }
    let left_out = earlier.len() - kept.len();
    kept.reverse();
    let mut message = String::from(text);
    message.push_str("\n\n---\nEarlier in this Slack thread (oldest first):\n");
    if left_out > 0 {
        message.push_str(&format!(
            "({left_out} earlier message{} left out)\n",
            if left_out == 1 { "" } else { "s" }
        ));
    }
    message.push_str(&kept.join("\n"));
    message
}

/// Handles an `event_callback` from the inbox.
pub async fn handle_event(
    state: &AppState,
    slack: &Slack,
    callback: &EventCallback,
) -> Result<(), ConversationError> {
    use centaur_protocol::slack::events::Event;
    let (arrival, message) = match &callback.event {
        Event::AppMention(message) => (Arrival::Mention, message),
        Event::Message(message) => (Arrival::Message, message),
        Event::Other => return Ok(()),
    };
    let bot = slack.bot().await;
    let team = message.team.as_deref().unwrap_or(&callback.team_id);
    let thread_ts = message.thread_ts().to_owned();
    let key = key_for(&message.channel, &thread_ts)?;
    if already_taken(state, &message.channel, &message.ts).await? {
        tracing::debug!(channel = %message.channel, ts = %message.ts, "Slack message already taken");
        return Ok(());
    }
    let existing = threads::find_optional(state, &key).await?;
    let known_thread = match &existing {
        Some(thread) => has_slack_thread(state, thread.id).await?,
        None => false,
    };
    let allowed = Allowed {
        settings: &slack.settings,
        bot: &bot,
    };
    match classify(&allowed, team, arrival, message, known_thread) {
        Verdict::Take => {}
        Verdict::Ignore(why) => {
            tracing::debug!(channel = %message.channel, ts = %message.ts, why, "Slack message ignored");
            return Ok(());
        }
        Verdict::Refuse(refusal) => {
            tracing::info!(channel = %message.channel, ts = %message.ts, ?refusal, "Slack message refused by the allow-lists");
            if let Some(line) = refusal.explanation() {
                reply(slack, &message.channel, &thread_ts, line).await;
            }
            return Ok(());
        }
    }

    let author_id = message
        .user
        .as_deref()
        .or(message.bot_id.as_deref())
        .unwrap_or_default();
    let author = slack.names.user(slack, author_id).await;
    let text = readable(slack, &bot, &message.text).await;
    if is_stop(&text) {
        if let Some(thread) = &existing {
            stop(state, thread, &author).await?;
            remember_message(
                state,
                &message.channel,
                &message.ts,
                thread.id,
                author_id,
                None,
            )
            .await?;
        }
        return Ok(());
    }

    let client_id = format!("slack:{}:{}", message.channel, message.ts);
    let posted_before = match &existing {
        Some(thread) => message_posted(state, thread.id, &client_id).await?,
        None => false,
    };
    let outcome = if posted_before {
        // Added by an earlier attempt that did not get to remember it.
        Some(Taken::Queued)
    } else {
        start_or_queue(
            state,
            slack,
            &bot,
            message,
            &key,
            existing.is_none(),
            text,
            &client_id,
            &author,
        )
        .await?
    };
    let Some(outcome) = outcome else {
        return Ok(());
    };
    let thread = threads::find(state, &key).await?;
    let channel_name = if known_thread {
        None
    } else {
        slack.names.channel(slack, &message.channel).await
    };
    // One transaction: delivery follows a Slack thread from its row, and finds the message its
    // check mark goes on in the same commit. Once remembered, the message is not handled again.
    let mut tx = crate::db::begin(&state.pool).await?;
    if !known_thread {
        sqlx::query(
            "INSERT INTO slack_threads (thread_id, team_id, channel_id, channel_name, thread_ts, \
             started_by_id, started_by_name) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT DO NOTHING",
        )
        .bind(thread.id)
        .bind(team)
        .bind(&message.channel)
        .bind(channel_name)
        .bind(&thread_ts)
        .bind(&author.id)
        .bind(&author.name)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO slack_messages (channel_id, ts, thread_id, user_id, execution_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&message.channel)
    .bind(&message.ts)
    .bind(thread.id)
    .bind(author_id)
    .bind(outcome.execution_id())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    slack.delivery_wake.notify_one();
    Ok(())
}

/// What became of a taken message.
#[derive(Clone, Copy, Debug)]
enum Taken {
    /// It started this turn.
    Turn(Uuid),
    /// It waits for the running turn to end (or steers it: see docs/slack.md).
    Queued,
}

impl Taken {
    fn execution_id(self) -> Option<Uuid> {
        match self {
            Taken::Turn(id) => Some(id),
            Taken::Queued => None,
        }
    }
}

/// Starts a turn with the message, or, while one runs, adds the message to the thread. `None`
/// when the server refused for good (the person was told).
#[allow(clippy::too_many_arguments)]
async fn start_or_queue(
    state: &AppState,
    slack: &Slack,
    bot: &BotIdentity,
    message: &MessageEvent,
    key: &ThreadKey,
    new_thread: bool,
    text: String,
    client_id: &str,
    author: &SlackUser,
) -> Result<Option<Taken>, ConversationError> {
    let thread_ts = message.thread_ts();
    let earlier = if new_thread && message.thread_ts.is_some() && slack.settings.context_chars > 0 {
        earlier_messages(slack, bot, &message.channel, thread_ts, &message.ts).await
    } else {
        Vec::new()
    };
    if text.is_empty() && earlier.is_empty() {
        tracing::debug!(channel = %message.channel, ts = %message.ts, "a mention with no text; nothing to do");
        return Ok(None);
    }
    let request_text = if text.is_empty() {
        "(a mention with no text: see the Slack thread below)".to_owned()
    } else {
        text.clone()
    };
    let first = with_context(&request_text, &earlier, slack.settings.context_chars);
    // Picked up: the eyes go on before the turn can start (delivery takes them off at its end).
    react(slack, &message.channel, &message.ts).await;
    let executed = executions::execute_as(
        state,
        ExecuteRequest {
            thread_key: key.clone(),
            idempotency_key: Some(client_id.to_owned()),
            message: Some(first),
            harness: slack.settings.harness,
            max_duration_ms: None,
            approval_policy: None,
        },
        Some(Author::Slack(author.clone())),
    )
    .await;
    match executed {
        Ok(response) => {
            tracing::info!(thread_key = %key, execution_id = %response.execution_id, "turn started from Slack");
            Ok(Some(Taken::Turn(response.execution_id)))
        }
        Err(error) if error.code() == ErrorCode::ExecutionActive => {
            messages::post_as(
                state,
                MessageRequest {
                    thread_key: key.clone(),
                    role: None,
                    text: request_text,
                    client_message_id: Some(client_id.to_owned()),
                },
                Some(Author::Slack(author.clone())),
            )
            .await?;
            tracing::info!(thread_key = %key, "Slack message added while a turn runs");
            Ok(Some(Taken::Queued))
        }
        Err(error) if error.status().is_client_error() => {
            tracing::warn!(thread_key = %key, %error, "Centaur refused a turn from Slack");
            unreact(slack, &message.channel, &message.ts).await;
            reply(
                slack,
                &message.channel,
                thread_ts,
                &format!("Centaur could not start this: {error}"),
            )
            .await;
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// The Slack thread's messages before `before_ts`, oldest first, names resolved.
async fn earlier_messages(
    slack: &Slack,
    bot: &BotIdentity,
    channel: &str,
    thread_ts: &str,
    before_ts: &str,
) -> Vec<ContextLine> {
    let mut lines = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_REPLIES_PAGES {
        let page = slack
            .web
            .call_patiently(
                &ConversationsReplies {
                    channel: channel.to_owned(),
                    ts: thread_ts.to_owned(),
                    cursor: cursor.take(),
                    limit: Some(REPLIES_PAGE),
                    include_all_metadata: None,
                },
                RATE_LIMIT_PATIENCE,
            )
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                // The turn goes ahead without context rather than not at all.
                tracing::warn!(%error, channel, thread_ts, "cannot read the Slack thread for context");
                break;
            }
        };
        for earlier in page.messages {
            if ts_order(&earlier.ts) >= ts_order(before_ts) || earlier.text.trim().is_empty() {
                continue;
            }
            let who = if bot.wrote(earlier.user.as_deref(), earlier.bot_id.as_deref()) {
                "Centaur (this bot)".to_owned()
            } else if let Some(user) = &earlier.user {
                slack.names.user(slack, user).await.label().to_owned()
            } else if let Some(bot_id) = &earlier.bot_id {
                format!("bot {bot_id}")
            } else {
                "someone".to_owned()
            };
            let text = readable(slack, bot, &earlier.text).await;
            if !text.is_empty() {
                lines.push(ContextLine { who, text });
            }
        }
        match page.response_metadata.map(|m| m.next_cursor) {
            Some(next) if !next.is_empty() => cursor = Some(next),
            Some(_) | None => break,
        }
    }
    lines
}

/// Slack text made readable, with people's names looked up.
async fn readable(slack: &Slack, bot: &BotIdentity, text: &str) -> String {
    let mut names = HashMap::new();
    for id in mentioned_users(text) {
        if id == bot.user_id {
            continue;
        }
        let user = slack.names.user(slack, &id).await;
        if let Some(name) = user.name {
            names.insert(id, name);
        }
    }
    plain_text(text, &bot.user_id, &names)
}

/// Interrupts the thread's running turn on behalf of a Slack user.
pub async fn stop(
    state: &AppState,
    thread: &ThreadRow,
    by: &SlackUser,
) -> Result<(), ConversationError> {
    let reason = format!("stopped by {} in Slack", by.label());
    // The reason is given, so the principal's name is not used.
    let outcome =
        executions::interrupt(state, &Principal::Admin, thread, Some(reason), false).await?;
    tracing::info!(thread_key = %thread.thread_key, interrupted = outcome.interrupted, user = %by.id, "stop from Slack");
    Ok(())
}

/// Whether a harness takes a message that arrives while its turn runs into that turn (the
/// runner forwards it: Codex's `turn/steer`, a user message on Claude Code's and Amp's stdin).
/// `shell` and `echo` do not: such a message waits for the next turn.
pub fn steers(harness: Harness) -> bool {
    match harness {
        Harness::Codex | Harness::ClaudeCode | Harness::Amp => true,
        Harness::Shell | Harness::Echo => false,
    }
}

/// After a turn ends (delivery calls this): messages sent while it ran that it did not take
/// start the next turn. With a harness that [`steers`], the messages that arrived while the
/// turn ran (and it was not cancelled) were given to it as steering: they are recorded as that
/// turn's input, not sent again. Calling this twice for the same ended turn starts one turn.
pub async fn after_turn(state: &AppState, thread_id: i64) -> Result<(), ConversationError> {
    let last: Option<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT e.id, e.status, e.harness, t.thread_key FROM executions e \
         JOIN threads t ON t.id = e.thread_id WHERE e.thread_id = $1 \
         ORDER BY e.created_at DESC, e.id DESC LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((ended, status, harness, thread_key)) = last else {
        return Ok(());
    };
    let status: ExecutionStatus = stored("executions.status", &status).map_err(ApiError::from)?;
    let harness: Harness = stored("executions.harness", &harness).map_err(ApiError::from)?;
    match status {
        // That turn takes the waiting messages.
        ExecutionStatus::Queued | ExecutionStatus::Running => return Ok(()),
        ExecutionStatus::Completed | ExecutionStatus::Failed if steers(harness) => {
            let steered = sqlx::query(
                "UPDATE messages SET execution_id = $2 \
                 WHERE thread_id = $1 AND execution_id IS NULL AND withdrawn_at IS NULL \
                   AND role = 'user' \
                   AND event_id > (SELECT min(event_id) FROM events WHERE thread_id = $1 \
                                   AND execution_id = $2 AND type = 'execution.started') \
                   AND event_id < (SELECT max(event_id) FROM events WHERE thread_id = $1 \
                                   AND execution_id = $2)",
            )
            .bind(thread_id)
            .bind(ended)
            .execute(&state.pool)
            .await?
            .rows_affected();
            if steered > 0 {
                tracing::debug!(%thread_key, steered, "messages taken by the last turn as steering");
            }
        }
        ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled => {}
    }
    // The Slack messages among those waiting: their ✓/✗ goes on the turn that takes them.
    let waiting: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT client_message_id FROM messages WHERE thread_id = $1 AND execution_id IS NULL \
         AND withdrawn_at IS NULL",
    )
    .bind(thread_id)
    .fetch_all(&state.pool)
    .await?;
    if waiting.is_empty() {
        return Ok(());
    }
    let key = ThreadKey::parse(&thread_key).map_err(|source| ConversationError::ThreadKey {
        channel: String::new(),
        thread_ts: thread_key.clone(),
        source,
    })?;
    let executed = executions::execute_as(
        state,
        ExecuteRequest {
            thread_key: key.clone(),
            idempotency_key: Some(format!("slack:after:{ended}")),
            message: None,
            harness: None,
            max_duration_ms: None,
            approval_policy: None,
        },
        None,
    )
    .await;
    let response = match executed {
        Ok(response) => response,
        // Another turn started meanwhile: it takes them.
        Err(error) if error.code() == ErrorCode::ExecutionActive => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    for client_id in waiting.into_iter().flatten() {
        let Some((channel, ts)) = client_id
            .strip_prefix("slack:")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        sqlx::query(
            "UPDATE slack_messages SET execution_id = $3 \
             WHERE channel_id = $1 AND ts = $2 AND execution_id IS NULL",
        )
        .bind(channel)
        .bind(ts)
        .bind(response.execution_id)
        .execute(&state.pool)
        .await?;
    }
    tracing::info!(thread_key = %key, execution_id = %response.execution_id, "turn started for messages sent during the last one");
    if let Some(slack) = &state.slack {
        slack.delivery_wake.notify_one();
    }
    Ok(())
}

fn key_for(channel: &str, thread_ts: &str) -> Result<ThreadKey, ConversationError> {
    centaur_protocol::slack::thread_key(channel, thread_ts).map_err(|source| {
        ConversationError::ThreadKey {
            channel: channel.to_owned(),
            thread_ts: thread_ts.to_owned(),
            source,
        }
    })
}

async fn already_taken(state: &AppState, channel: &str, ts: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM slack_messages WHERE channel_id = $1 AND ts = $2)",
    )
    .bind(channel)
    .bind(ts)
    .fetch_one(&state.pool)
    .await
}

async fn has_slack_thread(state: &AppState, thread_id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM slack_threads WHERE thread_id = $1)")
        .bind(thread_id)
        .fetch_one(&state.pool)
        .await
}

async fn message_posted(state: &AppState, thread_id: i64, client_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE thread_id = $1 AND client_message_id = $2)",
    )
    .bind(thread_id)
    .bind(client_id)
    .fetch_one(&state.pool)
    .await
}

async fn remember_message(
    state: &AppState,
    channel: &str,
    ts: &str,
    thread_id: i64,
    user: &str,
    execution_id: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO slack_messages (channel_id, ts, thread_id, user_id, execution_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(channel)
    .bind(ts)
    .bind(thread_id)
    .bind(user)
    .bind(execution_id)
    .execute(&state.pool)
    .await?;
    Ok(())
}

/// The eyes on the person's message: taken. A failure only loses the reaction.
async fn react(slack: &Slack, channel: &str, ts: &str) {
    let added = slack
        .web
        .call_patiently(
            &ReactionsAdd {
                channel: channel.to_owned(),
                timestamp: ts.to_owned(),
                name: PICKED_UP.to_owned(),
            },
            RATE_LIMIT_PATIENCE,
        )
        .await;
    match added {
        Ok(_) => {}
        Err(error) if error.code() == Some(errors::ALREADY_REACTED) => {}
        Err(error) => tracing::warn!(%error, channel, ts, "cannot add the eyes reaction"),
    }
}

/// The eyes off again: the message was not taken after all.
async fn unreact(slack: &Slack, channel: &str, ts: &str) {
    let removed = slack
        .web
        .call_patiently(
            &ReactionsRemove {
                channel: channel.to_owned(),
                timestamp: ts.to_owned(),
                name: PICKED_UP.to_owned(),
            },
            RATE_LIMIT_PATIENCE,
        )
        .await;
    match removed {
        Ok(_) => {}
        Err(error) if error.code() == Some(errors::NO_REACTION) => {}
        Err(error) => tracing::warn!(%error, channel, ts, "cannot remove the eyes reaction"),
    }
}

/// One line in the Slack thread (a refusal, a turn that could not start).
async fn reply(slack: &Slack, channel: &str, thread_ts: &str, text: &str) {
    let posted = slack
        .web
        .call_patiently(
            &PostMessage {
                channel: channel.to_owned(),
                text: text.to_owned(),
                thread_ts: Some(thread_ts.to_owned()),
                ..PostMessage::default()
            },
            RATE_LIMIT_PATIENCE,
        )
        .await;
    if let Err(error) = posted {
        tracing::warn!(%error, channel, thread_ts, "cannot post a reply in Slack");
    }
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is the test's answer.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bot() -> BotIdentity {
        BotIdentity {
            team_id: "T1".into(),
            user_id: "U0BOT".into(),
            bot_id: Some("B0BOT".into()),
            url: None,
        }
    }

    fn settings() -> SlackSettings {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            slack: SlackSettings,
        }
        Cli::parse_from(["test"]).slack
    }

    fn message(text: &str) -> MessageEvent {
        MessageEvent {
            channel: "C1".into(),
            channel_type: Some("channel".into()),
            user: Some("U1".into()),
            text: text.into(),
            ts: "1700000000.000200".into(),
            ..MessageEvent::default()
        }
    }

    #[test]
    fn mentions_dms_and_known_thread_replies_are_taken_and_the_rest_ignored() {
        let settings = settings();
        let bot = bot();
        let allowed = Allowed {
            settings: &settings,
            bot: &bot,
        };
        let mention = message("<@U0BOT> hi");
        assert_eq!(
            classify(&allowed, "T1", Arrival::Mention, &mention, false),
            Verdict::Take
        );
        // The same post as a `message`: left to the app_mention.
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &mention, false),
            Verdict::Ignore(_)
        ));
        // Top-level chatter.
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &message("lunch?"), false),
            Verdict::Ignore(_)
        ));
        // A reply in a thread the bot is part of, and one in a thread it is not.
        let mut reply = message("and the tests?");
        reply.thread_ts = Some("1700000000.000100".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Message, &reply, true),
            Verdict::Take
        );
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &reply, false),
            Verdict::Ignore(_)
        ));
        // A DM, with or without a mention.
        let mut dm = message("hello");
        dm.channel_type = Some("im".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Message, &dm, false),
            Verdict::Take
        );
        // The bot's own message, by user or by bot id; another bot; an edit.
        let mut own = message("<@U0BOT> echo");
        own.user = Some("U0BOT".into());
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Mention, &own, false),
            Verdict::Ignore(_)
        ));
        let mut own_by_bot_id = reply.clone();
        own_by_bot_id.user = None;
        own_by_bot_id.bot_id = Some("B0BOT".into());
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &own_by_bot_id, true),
            Verdict::Ignore(_)
        ));
        let mut other_bot = mention.clone();
        other_bot.bot_id = Some("B9".into());
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Mention, &other_bot, false),
            Verdict::Ignore(_)
        ));
        let mut edit = reply.clone();
        edit.subtype = Some("message_changed".into());
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &edit, true),
            Verdict::Ignore(_)
        ));
        let mut file = reply.clone();
        file.subtype = Some("file_share".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Message, &file, true),
            Verdict::Take
        );
    }

    #[test]
    fn allow_lists_refuse_teams_channels_and_users_and_admit_listed_bots() {
        let mut settings = settings();
        let bot = bot();
        {
            let allowed = Allowed {
                settings: &settings,
                bot: &bot,
            };
            // No team list: only the bot's own workspace.
            assert_eq!(
                classify(
                    &allowed,
                    "T2",
                    Arrival::Mention,
                    &message("<@U0BOT> x"),
                    false
                ),
                Verdict::Refuse(Refusal::Team("T2".into()))
            );
        }
        settings.allowed_teams = vec!["T1".into(), "T2".into()];
        settings.allowed_channels = vec!["C1".into()];
        settings.allowed_users = vec!["U1".into()];
        settings.allowed_bots = vec!["B7".into()];
        let allowed = Allowed {
            settings: &settings,
            bot: &bot,
        };
        assert_eq!(
            classify(
                &allowed,
                "T2",
                Arrival::Mention,
                &message("<@U0BOT> x"),
                false
            ),
            Verdict::Take
        );
        let mut elsewhere = message("<@U0BOT> x");
        elsewhere.channel = "C2".into();
        assert_eq!(
            classify(&allowed, "T1", Arrival::Mention, &elsewhere, false),
            Verdict::Refuse(Refusal::Channel("C2".into()))
        );
        let mut bob = message("<@U0BOT> x");
        bob.user = Some("U2".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Mention, &bob, false),
            Verdict::Refuse(Refusal::User("U2".into()))
        );
        let mut listed_bot = message("<@U0BOT> deploy");
        listed_bot.user = None;
        listed_bot.bot_id = Some("B7".into());
        listed_bot.subtype = Some("bot_message".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Mention, &listed_bot, false),
            Verdict::Take
        );
        assert!(allowed.approver("U1"));
        assert!(!allowed.approver("U2"));
        settings.approvers = vec!["U2".into()];
        let allowed = Allowed {
            settings: &settings,
            bot: &bot,
        };
        assert!(allowed.approver("U2"));
        assert!(!allowed.approver("U1"));
    }

    #[test]
    fn slack_text_becomes_plain_text() {
        let names = HashMap::from([("U2".to_owned(), "Bob".to_owned())]);
        assert_eq!(
            plain_text(
                "<@U0BOT>  ask <@U2> about <#C9|deploys> &amp; see <https://x.io/a?b=1&amp;c=2|the doc> or <https://y.io> &lt;now&gt; <!here>",
                "U0BOT",
                &names
            ),
            "ask @Bob about #deploys & see the doc (https://x.io/a?b=1&c=2) or https://y.io <now> @here"
        );
        assert_eq!(plain_text("<@U0BOT>", "U0BOT", &names), "");
        assert_eq!(
            plain_text("<@U3|carol> hi\n<@U0BOT> line two", "U0BOT", &names),
            "@carol hi\nline two"
        );
        assert_eq!(
            mentioned_users("<@U0BOT> <@U2> <@U2|b> <@U3>"),
            ["U0BOT", "U2", "U3"]
        );
    }

    #[test]
    fn stop_is_the_word_alone() {
        for text in ["stop", "Stop", "STOP!", " stop. ", "stop?"] {
            assert!(is_stop(text), "{text}");
        }
        for text in ["stop the build", "don't stop", "", "stopped"] {
            assert!(!is_stop(text), "{text}");
        }
    }

    #[test]
    fn context_follows_the_request_newest_kept_within_the_limit() {
        let earlier = vec![
            ContextLine {
                who: "Ann".into(),
                text: "the build is red".into(),
            },
            ContextLine {
                who: "Centaur (this bot)".into(),
                text: "which build?".into(),
            },
            ContextLine {
                who: "Bob".into(),
                text: "main, since 10:00".into(),
            },
        ];
        let all = with_context("fix it", &earlier, 10_000);
        assert_eq!(
            all,
            "fix it\n\n---\nEarlier in this Slack thread (oldest first):\n@Ann: the build is red\n@Centaur (this bot): which build?\n@Bob: main, since 10:00"
        );
        let newest = with_context("fix it", &earlier, 60);
        assert!(newest.starts_with("fix it\n\n---\n"));
        assert!(
            newest.contains("(1 earlier message left out)\n@Centaur"),
            "{newest}"
        );
        assert!(!newest.contains("@Ann"));
        assert!(newest.ends_with("@Bob: main, since 10:00"));
        assert_eq!(with_context("fix it", &[], 100), "fix it");
        let cut = with_context("x", &earlier[2..], 8);
        assert!(cut.ends_with("\n…e 10:00"), "{cut}");
    }

    #[test]
    fn slack_timestamps_order_like_time() {
        assert!(ts_order("1700000000.000100") < ts_order("1700000000.000200"));
        assert!(ts_order("999999999.999999") < ts_order("1700000000.000001"));
    }
}
