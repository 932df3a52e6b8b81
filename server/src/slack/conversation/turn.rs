//! A taken Slack message starting a turn, or, while one runs, waiting in the thread for it to
//! end; `stop`; the eyes on the message and the one-line replies.

use centaur_protocol::api::{ExecuteRequest, MessageRequest};
use centaur_protocol::slack::SlackUser;
use centaur_protocol::slack::events::{Event, EventCallback, MessageEvent};
use centaur_protocol::slack::web::{PostMessage, ReactionsAdd, ReactionsRemove, errors};
use centaur_protocol::{Author, ErrorCode, ThreadKey};
use uuid::Uuid;

use super::admission::{Allowed, Arrival, Verdict, classify, is_stop};
use super::after_turn::after_turn;
use super::context::{Earlier, earlier_messages, with_context};
use super::plain_text::readable;
use super::{ConversationError, RATE_LIMIT_PATIENCE};
use crate::app::AppState;
use crate::auth::Principal;
use crate::slack::Slack;
use crate::slack::identity::BotIdentity;
use crate::threads::{self, ThreadRow};
use crate::{executions, messages};

/// The reaction put on a message when the bridge takes it.
const PICKED_UP: &str = "eyes";

/// Handles an `event_callback` from the inbox.
pub async fn handle_event(
    state: &AppState,
    slack: &Slack,
    callback: &EventCallback,
) -> Result<(), ConversationError> {
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
        // Stored, but what was to follow may not have happened (a crash, or `after_turn`
        // failing, between storing it and starting the next turn): a reply still waiting in a
        // thread with no turn running starts one. Handling a turn's end again is harmless.
        if let Some(thread_id) = stranded(state, &message.channel, &message.ts).await? {
            tracing::info!(channel = %message.channel, ts = %message.ts, "a stored Slack reply still waits with no turn running; starting one");
            after_turn(state, thread_id).await?;
            slack.delivery_wake.notify_one();
        }
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
    // A direct message has no channel name to ask for.
    let channel_name = if known_thread || message.is_direct() {
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
    if let Taken::Queued = outcome {
        // The turn it waited for may have ended (and its end been handled) between the server
        // refusing a new turn and the message being stored: nothing would start the next one.
        // Handling a turn's end again is harmless; with a turn still running, it does nothing.
        after_turn(state, thread.id).await?;
    }
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
        let allowed = Allowed {
            settings: &slack.settings,
            bot,
        };
        earlier_messages(slack, &allowed, &message.channel, thread_ts, &message.ts).await
    } else {
        Earlier::default()
    };
    if text.is_empty() && earlier.lines.is_empty() {
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

/// The thread of a taken Slack message that still waits (its message neither taken by a turn
/// nor withdrawn) while no turn of the thread is queued or running.
async fn stranded(state: &AppState, channel: &str, ts: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT sm.thread_id FROM slack_messages sm JOIN messages m \
           ON m.thread_id = sm.thread_id AND m.client_message_id = 'slack:' || sm.channel_id || ':' || sm.ts \
         WHERE sm.channel_id = $1 AND sm.ts = $2 \
           AND m.execution_id IS NULL AND m.withdrawn_at IS NULL \
           AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.thread_id = sm.thread_id \
                           AND e.status IN ('queued', 'running'))",
    )
    .bind(channel)
    .bind(ts)
    .fetch_optional(&state.pool)
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

/// The inbox gave up on `callback` (it kept failing): a person who asked is not left looking at
/// the eyes. For a mention or a direct message, the eyes come off and one line says so in the
/// Slack thread. Best effort: Slack may be what is failing.
pub async fn gave_up(slack: &Slack, callback: &EventCallback) {
    let message = match &callback.event {
        Event::AppMention(message) => message,
        Event::Message(message) if message.is_direct() => message,
        Event::Message(_) | Event::Other => return,
    };
    let bot = slack.bot().await;
    if bot.wrote(message.user.as_deref(), message.bot_id.as_deref()) {
        return;
    }
    unreact(slack, &message.channel, &message.ts).await;
    reply(
        slack,
        &message.channel,
        message.thread_ts(),
        "Centaur could not take this message (it kept failing for 15 minutes); please send it again.",
    )
    .await;
}
