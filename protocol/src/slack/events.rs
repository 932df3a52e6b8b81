//! What Slack sends: the Events API request body (over HTTP, and as a Socket Mode envelope's
//! payload), Socket Mode frames, and interactivity payloads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of an Events API request (`POST /api/webhooks/slack` with JSON), by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventsRequest {
    /// Slack checking the request URL: answer with the challenge.
    UrlVerification {
        challenge: String,
    },
    EventCallback(Box<EventCallback>),
    /// Slack stopped sending this workspace's events for a while (over 30,000 an hour).
    AppRateLimited {
        #[serde(default)]
        team_id: Option<String>,
        #[serde(default)]
        minute_rate_limited: Option<i64>,
    },
}

/// An event and its envelope. `event_id` is unique per event across Slack's retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventCallback {
    pub team_id: String,
    #[serde(default)]
    pub api_app_id: Option<String>,
    pub event_id: String,
    pub event_time: i64,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorizations: Vec<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_ext_shared_channel: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Authorization {
    #[serde(default)]
    pub enterprise_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub is_bot: bool,
}

/// The events the bridge acts on; any other `type` is [`Event::Other`] (acknowledged, ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    AppMention(MessageEvent),
    Message(MessageEvent),
    #[serde(other)]
    Other,
}

/// `app_mention` and `message` share their fields (`subtype` and `channel_type` only come with
/// `message`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub channel: String,
    /// `channel`, `group`, `im`, `mpim` or `app_home` (messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_type: Option<String>,
    /// `bot_message`, `message_changed`, `message_deleted`, `thread_broadcast`, `file_share`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub text: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

impl MessageEvent {
    /// The thread this message belongs to: its `thread_ts`, else its own `ts` (a top-level
    /// message starts a thread).
    pub fn thread_ts(&self) -> &str {
        self.thread_ts.as_deref().unwrap_or(&self.ts)
    }

    /// A direct message with the bot.
    pub fn is_direct(&self) -> bool {
        self.channel_type.as_deref() == Some("im")
    }
}

/// A Socket Mode frame from Slack, by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SocketFrame {
    Hello {
        #[serde(default)]
        num_connections: Option<u32>,
        #[serde(default)]
        connection_info: Option<Value>,
        #[serde(default)]
        debug_info: Option<Value>,
    },
    /// Slack will close this connection: open a new one first.
    Disconnect {
        reason: DisconnectReason,
        #[serde(default)]
        debug_info: Option<Value>,
    },
    EventsApi(Envelope<EventsRequest>),
    Interactive(Envelope<Interaction>),
    SlashCommands(Envelope<Value>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub envelope_id: String,
    pub payload: T,
    #[serde(default)]
    pub accepts_response_payload: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// About 10 s before Slack closes the connection.
    Warning,
    RefreshRequested,
    /// Socket Mode was switched off for the app: stop reconnecting.
    LinkDisabled,
    TooManyWebsockets,
    #[serde(other)]
    Other,
}

/// The acknowledgement of a Socket Mode envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SocketAck {
    pub envelope_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// An interactivity payload (the form field `payload=` over HTTP), by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Interaction {
    BlockActions(Box<BlockActions>),
    #[serde(other)]
    Other,
}

/// Someone clicked a button (or used another block element).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockActions {
    pub user: ActionUser,
    #[serde(default)]
    pub api_app_id: Option<String>,
    #[serde(default)]
    pub team: Option<ActionTeam>,
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub channel: Option<ActionChannel>,
    #[serde(default)]
    pub message: Option<Value>,
    #[serde(default)]
    pub trigger_id: Option<String>,
    #[serde(default)]
    pub response_url: Option<String>,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionUser {
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionTeam {
    pub id: String,
    #[serde(default)]
    pub domain: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionChannel {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Container {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message_ts: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub thread_ts: Option<String>,
    #[serde(default)]
    pub is_ephemeral: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub action_id: String,
    #[serde(default)]
    pub block_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub value: Option<String>,
    pub action_ts: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_event_callbacks_parse_and_unknown_events_are_other() {
        let body = r#"{"token":"x","team_id":"T1","api_app_id":"A1","type":"event_callback",
            "event_id":"Ev1","event_time":1700000000,"authorizations":[{"team_id":"T1","user_id":"U0","is_bot":true}],
            "event":{"type":"app_mention","user":"U1","text":"<@U0> hi","ts":"1.000001","channel":"C1","event_ts":"1.000001","blocks":[]}}"#;
        let EventsRequest::EventCallback(callback) = serde_json::from_str(body).unwrap() else {
            panic!("not a callback")
        };
        let Event::AppMention(mention) = &callback.event else {
            panic!()
        };
        assert_eq!(mention.thread_ts(), "1.000001");
        let other = r#"{"type":"reaction_added","user":"U1"}"#;
        assert_eq!(serde_json::from_str::<Event>(other).unwrap(), Event::Other);
    }

    #[test]
    fn socket_frames_parse() {
        let hello = r#"{"type":"hello","num_connections":1,"debug_info":{"host":"applink-1"},"connection_info":{"app_id":"A1"}}"#;
        assert!(matches!(
            serde_json::from_str(hello).unwrap(),
            SocketFrame::Hello { .. }
        ));
        let bye = r#"{"type":"disconnect","reason":"refresh_requested","debug_info":{"host":"h"}}"#;
        assert!(matches!(
            serde_json::from_str(bye).unwrap(),
            SocketFrame::Disconnect {
                reason: DisconnectReason::RefreshRequested,
                ..
            }
        ));
        let click = r#"{"type":"interactive","envelope_id":"e1","accepts_response_payload":false,
            "payload":{"type":"block_actions","user":{"id":"U1","username":"ann"},"actions":[{"action_id":"a","type":"button","value":"v","action_ts":"1.2"}]}}"#;
        assert!(matches!(
            serde_json::from_str(click).unwrap(),
            SocketFrame::Interactive(_)
        ));
    }
}
