//! A fake Slack for tests and benchmarks, speaking Slack's real wire format (the shapes of
//! `centaur_protocol::slack`; facts in `../shared/notes/slack-facts.md`).
//!
//! [`FakeSlack::start`] serves, on 127.0.0.1:
//!
//! - the Web API at `<api_url>/<method>` ([`FakeSlack::api_url`] ends in `/api`): the bot token
//!   for every method, the app token only for `apps.connections.open`; JSON or form bodies;
//!   every call recorded ([`FakeSlack::calls`]); the world it changes (messages in threads,
//!   streams, reactions, statuses, files) is what [`FakeSlack::thread`] and friends show;
//! - the upload URLs `files.getUploadURLExternal` hands out;
//! - Socket Mode: `apps.connections.open` gives `ws://127.0.0.1:<port>/link/?ticket=<n>`; each
//!   connection gets `hello`, then envelopes spread over the open connections; one not
//!   acknowledged within 3 s is sent again (`retry_attempt` + 1, `retry_reason: "timeout"`).
//!
//! People act through it ([`FakeSlack::post`], [`FakeSlack::click`]): the fake stores what they
//! did, then sends what Slack would send, to `<server>/api/webhooks/slack` signed with
//! [`SIGNING_SECRET`] (webhook mode) or over the open WebSockets (socket mode). Webhook
//! deliveries are retried as Slack retries them (on a non-2xx answer or none within 3 s, up to
//! 3 times with `X-Slack-Retry-Num`/`X-Slack-Retry-Reason`, stopped by `X-Slack-No-Retry: 1`),
//! after the short delays of [`FakeSlack::set_retry_delays`] instead of minutes. Every attempt
//! is a [`Delivery`].
//!
//! A test: `let fake = FakeSlack::start().await;` `fake.configure(&mut config, SlackMode::Webhook)`
//! before starting the server, `fake.deliver_to(&server_url)` after; then
//! `let ts = fake.post("U1", "C1", "<@U0BOT> run the tests", None).await;` and
//! `fake.wait_until(timeout, |f| f.thread("C1", &ts).len() > 1).await`. In socket mode the
//! server dials the fake (`apps.connections.open`) and `post`/`click` go over its sockets.
//!
//! Not modelled: the bot's own posts coming back as `message` events (opt in with
//! [`FakeSlack::echo_bot_messages`]), edits and deletions by people, the assistant status's
//! 2-minute timeout, Slack's per-method rate limits (only [`FakeSlack::rate_limit`]'s).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use centaur_protocol::slack::blocks::Block;
use centaur_protocol::slack::events::{
    Action, ActionChannel, ActionTeam, ActionUser, Authorization, BlockActions, Container, Event,
    EventCallback, EventsRequest, Interaction, MessageEvent, SocketAck,
};
use centaur_protocol::slack::web::{
    AppendStream, AuthTestResponse, Channel, CompleteUpload, CompleteUploadResponse,
    ConnectionsOpenResponse, ConversationsInfo, ConversationsReplies, ConversationsRepliesResponse,
    GetPermalink, GetPermalinkResponse, GetUploadUrl, GetUploadUrlResponse, Message, PostMessage,
    PostMessageResponse, Profile, ReactionsAdd, ReactionsRemove, ResponseMetadata, SetStatus,
    SlackFile, StartStream, StopStream, StreamResponse, Update, UpdateResponse, User, UsersInfo,
    UsersInfoResponse, errors,
};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest};

pub use centaur_protocol::slack::events::DisconnectReason;
pub use centaur_server::slack::settings::SlackMode;

/// The signing secret (Slack's documentation example's).
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const BOT_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
pub const APP_TOKEN: &str = "xapp-1-A0CENTAUR-2222222222-fakeapptokenfortests";
pub const TEAM_ID: &str = "T0CENTAUR";
pub const TEAM_DOMAIN: &str = "centaur-test";
pub const APP_ID: &str = "A0CENTAUR";
/// The bot's user: mentions of it are `<@U0BOT>`.
pub const BOT_USER_ID: &str = "U0BOT";
pub const BOT_ID: &str = "B0BOT";
/// How long Slack waits for an answer (webhook) or an acknowledgement (Socket Mode).
pub const ACK_DEADLINE: Duration = Duration::from_secs(3);
/// Slack retries an unanswered event this many times.
pub const MAX_RETRIES: u32 = 3;
/// Slack's limits the fake enforces.
pub const MAX_TEXT_CHARS: usize = 40_000;
pub const MAX_MARKDOWN_CHARS: usize = 12_000;
pub const MAX_BLOCKS: usize = 50;

/// One Web API call as the fake received it.
#[derive(Clone, Debug)]
pub struct Call {
    /// `chat.postMessage`.
    pub method: String,
    /// The arguments as JSON (form fields decoded: JSON-valued fields parsed, flags as booleans,
    /// numbers as numbers).
    pub body: Value,
    pub at: Instant,
    /// The `error` it was answered with (`ratelimited` for a 429), `None` when `ok`.
    pub error: Option<String>,
}

/// One attempt at delivering an event or a click to the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The event's `event_id` (`Ev…`); a click's `trigger_id`.
    pub event_id: String,
    /// 0 for the first try, then the retry number (`X-Slack-Retry-Num`, Socket Mode's
    /// `retry_attempt`).
    pub attempt: u32,
    /// The HTTP status (200 for an acknowledged Socket Mode envelope); 0 when no answer came
    /// (timeout, connection refused, envelope not acknowledged in time).
    pub status: u16,
    pub latency: Duration,
    /// The `X-Slack-Retry-Reason` (Socket Mode: `retry_reason`) sent with this attempt.
    pub retry_reason: Option<String>,
}

impl Delivery {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What [`FakeSlack::disconnect_all`] says as `reason`: a [`DisconnectReason`] or a string.
pub trait ReasonText {
    fn reason_text(&self) -> String;
}

impl ReasonText for &str {
    fn reason_text(&self) -> String {
        (*self).to_owned()
    }
}

impl ReasonText for String {
    fn reason_text(&self) -> String {
        self.clone()
    }
}

impl ReasonText for DisconnectReason {
    fn reason_text(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::String(text)) => text,
            Ok(_) | Err(_) => "warning".to_owned(),
        }
    }
}

/// The fake. Cheap to clone (all clones are the same Slack).
#[derive(Clone)]
pub struct FakeSlack {
    inner: Arc<Inner>,
}

struct Inner {
    api_port: u16,
    link_port: u16,
    http: reqwest::Client,
    world: Mutex<World>,
    /// Wakes the Socket Mode dispatcher.
    dispatch: Notify,
}

struct ChannelInfo {
    name: Option<String>,
    /// The other member of a direct message.
    im_user: Option<String>,
}

struct Stored {
    message: Message,
    /// When its stream started, while it streams.
    streaming_since: Option<Instant>,
}

struct FileUpload {
    filename: String,
    bytes: Option<Vec<u8>>,
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<WsMessage>,
    /// `disconnect` was sent: no new envelopes.
    disconnecting: bool,
}

struct Pending {
    envelope_id: String,
    /// `events_api` or `interactive`.
    kind: &'static str,
    payload: Value,
    /// The event's id (a click's trigger id), for [`Delivery`].
    event_id: String,
    /// Sent again when not acknowledged in time.
    retries: bool,
    attempt: u32,
    reason: Option<String>,
    /// The connection it went out on, and when.
    sent: Option<(u64, Instant)>,
}

#[derive(Default)]
struct Sockets {
    tickets: HashSet<String>,
    conns: Vec<Conn>,
    /// Connections ever accepted.
    connects: usize,
    next_conn: u64,
    round_robin: usize,
    pending: Vec<Pending>,
}

struct World {
    mode: SlackMode,
    target: Option<String>,
    users: BTreeMap<String, String>,
    channels: BTreeMap<String, ChannelInfo>,
    messages: BTreeMap<String, Vec<Stored>>,
    reactions: HashMap<(String, String), Vec<String>>,
    statuses: HashMap<(String, String), String>,
    files: HashMap<String, FileUpload>,
    calls: Vec<Call>,
    deliveries: Vec<Delivery>,
    last_ts_micros: u64,
    counter: u64,
    retry_delays: Vec<Duration>,
    rate_limits: HashMap<String, (u32, u64)>,
    failures: HashMap<String, (String, u32)>,
    lost_answers: HashMap<String, u32>,
    stream_ttl: Option<Duration>,
    streaming_disabled: bool,
    echo_bot_messages: bool,
    disconnect_grace: Duration,
    ack_deadline: Duration,
    sockets: Sockets,
}

impl World {
    fn new() -> World {
        let mut world = World {
            mode: SlackMode::Webhook,
            target: None,
            users: BTreeMap::new(),
            channels: BTreeMap::new(),
            messages: BTreeMap::new(),
            reactions: HashMap::new(),
            statuses: HashMap::new(),
            files: HashMap::new(),
            calls: Vec::new(),
            deliveries: Vec::new(),
            last_ts_micros: 0,
            counter: 0,
            retry_delays: vec![
                Duration::from_millis(10),
                Duration::from_millis(100),
                Duration::from_millis(500),
            ],
            rate_limits: HashMap::new(),
            failures: HashMap::new(),
            lost_answers: HashMap::new(),
            stream_ttl: None,
            streaming_disabled: false,
            echo_bot_messages: false,
            disconnect_grace: Duration::from_secs(1),
            ack_deadline: ACK_DEADLINE,
            sockets: Sockets::default(),
        };
        world.users.insert("U1".into(), "Ann".into());
        world.users.insert("U2".into(), "Bob".into());
        world.channels.insert(
            "C1".into(),
            ChannelInfo {
                name: Some("general".into()),
                im_user: None,
            },
        );
        world
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{:010}", self.counter)
    }

    /// A new `ts`: the time, unique and increasing.
    fn next_ts(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let micros = now.max(self.last_ts_micros + 1);
        self.last_ts_micros = micros;
        format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }

    fn is_im(&self, channel: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| c.im_user.is_some())
    }

    fn stored(&mut self, channel: &str, ts: &str) -> Option<&mut Stored> {
        self.messages
            .get_mut(channel)?
            .iter_mut()
            .find(|s| s.message.ts == ts)
    }

    /// Stores `message` in `channel`; a reply marks its parent as a thread.
    fn store(&mut self, channel: &str, message: Message, streaming: bool) {
        let messages = self.messages.entry(channel.to_owned()).or_default();
        if let Some(parent_ts) = message.thread_ts.clone()
            && let Some(parent) = messages.iter_mut().find(|s| s.message.ts == parent_ts)
        {
            parent.message.thread_ts = Some(parent_ts);
        }
        messages.push(Stored {
            message,
            streaming_since: streaming.then(Instant::now),
        });
    }

    /// The thread as `conversations.replies` shows it: parent first, replies by `ts`.
    fn thread(&self, channel: &str, thread_ts: &str) -> Option<Vec<Message>> {
        let messages = self.messages.get(channel)?;
        let parent = messages.iter().find(|s| s.message.ts == thread_ts)?;
        let mut replies: Vec<Message> = messages
            .iter()
            .filter(|s| {
                s.message.ts != thread_ts && s.message.thread_ts.as_deref() == Some(thread_ts)
            })
            .map(|s| s.message.clone())
            .collect();
        replies.sort_by_key(|m| ts_key(&m.ts));
        let mut thread = vec![parent.message.clone()];
        thread.extend(replies);
        Some(thread)
    }

    fn user_name(&self, id: &str) -> String {
        self.users.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }
}

/// Orders `ts` values (`1764471919.000100`).
fn ts_key(ts: &str) -> (u64, u64) {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    (secs.parse().unwrap_or(0), micros.parse().unwrap_or(0))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `v0=<hex hmac-sha256 of "v0:{timestamp}:{body}">` keyed with `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

impl FakeSlack {
    /// Starts the Web API and the Socket Mode server on 127.0.0.1 (ephemeral ports). Users U1
    /// "Ann" and U2 "Bob" and the channel C1 "general" (the bot is in it) exist; events go by
    /// webhook until [`FakeSlack::configure`] says socket.
    pub async fn start() -> FakeSlack {
        // reqwest with rustls needs a crypto provider installed (ring, as everywhere here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Slack's Web API");
        let link = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Slack's Socket Mode server");
        let inner = Arc::new(Inner {
            api_port: api.local_addr().expect("api address").port(),
            link_port: link.local_addr().expect("link address").port(),
            http: reqwest::Client::builder()
                .build()
                .expect("an HTTP client for the fake Slack"),
            world: Mutex::new(World::new()),
            dispatch: Notify::new(),
        });
        let app = axum::Router::new()
            .route("/api/{method}", axum::routing::post(web_api).get(web_api))
            .route("/upload/{file_id}", axum::routing::post(upload))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(api, app).await });
        tokio::spawn(accept_links(Arc::downgrade(&inner), link));
        tokio::spawn(dispatcher(Arc::downgrade(&inner)));
        FakeSlack { inner }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.inner.world()
    }

    /// `http://127.0.0.1:<port>/api` (SLACK_API_URL).
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.inner.api_port)
    }

    /// Points `config` at this Slack in `mode` (tokens, signing secret, API URL), and sends
    /// events the way `mode` says (webhook: to [`FakeSlack::deliver_to`]'s server; socket:
    /// over the connected WebSockets).
    pub fn configure(&self, config: &mut centaur_server::Config, mode: SlackMode) {
        config.slack.mode = mode;
        config.slack.bot_token = Some(BOT_TOKEN.into());
        config.slack.app_token = Some(APP_TOKEN.into());
        config.slack.signing_secret = Some(SIGNING_SECRET.into());
        config.slack.api_url = self.api_url();
        self.set_mode(mode);
    }

    /// How events and clicks travel from now on (`Off` counts as webhook).
    pub fn set_mode(&self, mode: SlackMode) {
        self.world().mode = mode;
    }

    /// Events and clicks go to `<server_url>/api/webhooks/slack` (webhook mode).
    pub fn deliver_to(&self, server_url: impl AsRef<str>) {
        self.world().target = Some(server_url.as_ref().trim_end_matches('/').to_owned());
    }

    fn webhook_url(&self) -> String {
        let target = self.world().target.clone().expect(
            "the fake Slack has no server to deliver to: call fake.deliver_to(server_url) first",
        );
        format!("{target}/api/webhooks/slack")
    }

    fn socket_mode(&self) -> bool {
        self.world().mode == SlackMode::Socket
    }

    // ---- the world ----

    pub fn add_user(&self, id: impl AsRef<str>, display_name: impl AsRef<str>) {
        self.world()
            .users
            .insert(id.as_ref().to_owned(), display_name.as_ref().to_owned());
    }

    /// A public channel the bot is in.
    pub fn add_channel(&self, id: impl AsRef<str>, name: impl AsRef<str>) {
        self.world().channels.insert(
            id.as_ref().to_owned(),
            ChannelInfo {
                name: Some(name.as_ref().to_owned()),
                im_user: None,
            },
        );
    }

    /// A direct message between `user` and the bot.
    pub fn add_im(&self, id: impl AsRef<str>, user: impl AsRef<str>) {
        self.world().channels.insert(
            id.as_ref().to_owned(),
            ChannelInfo {
                name: None,
                im_user: Some(user.as_ref().to_owned()),
            },
        );
    }

    // ---- people acting ----

    /// `user` writes `text` in `channel` (in the thread `thread_ts`, else top-level). Stores the
    /// message (so `conversations.replies` sees it), then sends what Slack sends: `app_mention`
    /// when the text has `<@U0BOT>` (not in DMs), and a `message` event (`channel_type`
    /// `channel` or `im`), each with its own `event_id`. Webhook mode: returns once each event's
    /// first attempt was answered (or timed out); retries go on in the background. Socket mode:
    /// returns once they are queued for the open connections. Returns the message's `ts`.
    pub async fn post(
        &self,
        user: impl AsRef<str>,
        channel: impl AsRef<str>,
        text: impl AsRef<str>,
        thread_ts: Option<&str>,
    ) -> String {
        self.post_message(
            user.as_ref(),
            None,
            channel.as_ref(),
            text.as_ref(),
            thread_ts,
        )
        .await
    }

    /// Another app's bot (`bot_id` `B…`, its user `bot_user` `U…`) writes `text`: as
    /// [`FakeSlack::post`], the message and its events carrying `bot_id` (as Slack sends a
    /// modern app's messages: no subtype).
    pub async fn post_as_bot(
        &self,
        bot_id: impl AsRef<str>,
        bot_user: impl AsRef<str>,
        channel: impl AsRef<str>,
        text: impl AsRef<str>,
        thread_ts: Option<&str>,
    ) -> String {
        self.post_message(
            bot_user.as_ref(),
            Some(bot_id.as_ref()),
            channel.as_ref(),
            text.as_ref(),
            thread_ts,
        )
        .await
    }

    async fn post_message(
        &self,
        user: &str,
        bot_id: Option<&str>,
        channel: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> String {
        let (ts, bodies) = {
            let mut world = self.world();
            assert!(
                world.channels.contains_key(channel),
                "the fake Slack has no channel {channel}: add_channel or add_im it first"
            );
            let ts = world.next_ts();
            let message = Message {
                kind: Some("message".into()),
                user: Some(user.to_owned()),
                bot_id: bot_id.map(str::to_owned),
                text: text.to_owned(),
                ts: ts.clone(),
                thread_ts: thread_ts.map(str::to_owned),
                ..Message::default()
            };
            world.store(channel, message, false);
            let is_im = world.is_im(channel);
            let event = MessageEvent {
                channel: channel.to_owned(),
                user: Some(user.to_owned()),
                bot_id: bot_id.map(str::to_owned),
                text: text.to_owned(),
                ts: ts.clone(),
                thread_ts: thread_ts.map(str::to_owned),
                event_ts: Some(ts.clone()),
                team: Some(TEAM_ID.to_owned()),
                client_msg_id: bot_id.is_none().then(|| uuid::Uuid::new_v4().to_string()),
                ..MessageEvent::default()
            };
            let mut events = Vec::new();
            if !is_im && text.contains(&format!("<@{BOT_USER_ID}>")) {
                events.push(Event::AppMention(event.clone()));
            }
            events.push(Event::Message(MessageEvent {
                channel_type: Some(if is_im { "im" } else { "channel" }.to_owned()),
                ..event
            }));
            let bodies: Vec<(String, Value)> = events
                .into_iter()
                .map(|event| event_callback(&mut world, event))
                .collect();
            (ts, bodies)
        };
        for (event_id, body) in bodies {
            self.send_first(event_id, body).await;
        }
        ts
    }

    /// Sends one event callback: webhook: waits for the first attempt, retries in the
    /// background; socket: queues it.
    async fn send_first(&self, event_id: String, body: Value) {
        if self.socket_mode() {
            self.enqueue("events_api", body, event_id, true);
            return;
        }
        let bytes = serde_json::to_vec(&body).expect("an event serializes");
        let (first_tx, first_rx) = oneshot::channel();
        let fake = self.clone();
        let url = self.webhook_url();
        tokio::spawn(async move {
            fake.deliver(
                url,
                event_id,
                bytes,
                "application/json",
                true,
                Some(first_tx),
            )
            .await
        });
        let _ = first_rx.await;
    }

    /// `user` clicks the button `action_id` (with `value`) on the message `message_ts`: a
    /// `block_actions` payload (webhook: form `payload=…`, signed; socket: an `interactive`
    /// envelope). Returns the delivery (socket: its acknowledgement, or status 0 after 3 s).
    pub async fn click(
        &self,
        user: impl AsRef<str>,
        channel: impl AsRef<str>,
        message_ts: impl AsRef<str>,
        action_id: impl AsRef<str>,
        value: impl AsRef<str>,
    ) -> Delivery {
        let (user, channel, message_ts, action_id) = (
            user.as_ref(),
            channel.as_ref(),
            message_ts.as_ref(),
            action_id.as_ref(),
        );
        let (trigger_id, payload) = {
            let mut world = self.world();
            let serial = world.next_id("");
            let trigger_id = format!("{serial}.{}.fake", unix_now());
            let message = world.stored(channel, message_ts).map(|s| s.message.clone());
            let block_id = message.as_ref().and_then(|m| block_of(m, action_id));
            let channel_name = world.channels.get(channel).and_then(|c| c.name.clone());
            let action_ts = world.next_ts();
            let name = world.user_name(user);
            let actions = BlockActions {
                user: ActionUser {
                    id: user.to_owned(),
                    username: Some(name.to_lowercase()),
                    name: Some(name.to_lowercase()),
                    team_id: Some(TEAM_ID.to_owned()),
                },
                api_app_id: Some(APP_ID.to_owned()),
                team: Some(ActionTeam {
                    id: TEAM_ID.to_owned(),
                    domain: Some(TEAM_DOMAIN.to_owned()),
                }),
                container: Some(Container {
                    kind: "message".to_owned(),
                    message_ts: Some(message_ts.to_owned()),
                    channel_id: Some(channel.to_owned()),
                    thread_ts: message.as_ref().and_then(|m| m.thread_ts.clone()),
                    is_ephemeral: Some(false),
                }),
                channel: Some(ActionChannel {
                    id: channel.to_owned(),
                    name: channel_name,
                }),
                message: message
                    .as_ref()
                    .map(|m| serde_json::to_value(m).expect("a message serializes")),
                trigger_id: Some(trigger_id.clone()),
                response_url: Some(format!(
                    "https://hooks.slack.com/actions/{TEAM_ID}/{}/fake",
                    world.counter
                )),
                actions: vec![Action {
                    action_id: action_id.to_owned(),
                    block_id,
                    kind: "button".to_owned(),
                    value: Some(value.as_ref().to_owned()),
                    action_ts,
                }],
            };
            let payload = serde_json::to_value(Interaction::BlockActions(Box::new(actions)))
                .expect("a click serializes");
            (trigger_id, payload)
        };
        if self.socket_mode() {
            self.enqueue("interactive", payload, trigger_id.clone(), false);
            return self.await_socket_outcome(&trigger_id).await;
        }
        let form = serde_urlencoded::to_string([("payload", payload.to_string())])
            .expect("a form encodes");
        let url = self.webhook_url();
        self.deliver(
            url,
            trigger_id,
            form.into_bytes(),
            "application/x-www-form-urlencoded",
            false,
            None,
        )
        .await
    }

    // ---- raw sending ----

    /// The `X-Slack-Signature` value for `body` sent at `timestamp`.
    pub fn sign(&self, body: &[u8], timestamp: i64) -> String {
        signature(SIGNING_SECRET, timestamp, body)
    }

    /// Posts `body` to the webhook as it is, with `content_type` and `headers` (no signature
    /// added). Returns the status (0 when no answer came) and the answer's body.
    pub async fn send_raw(
        &self,
        body: Vec<u8>,
        content_type: impl AsRef<str>,
        headers: Vec<(String, String)>,
    ) -> (u16, String) {
        let mut request = self
            .inner
            .http
            .post(self.webhook_url())
            .header(header::CONTENT_TYPE.as_str(), content_type.as_ref())
            .timeout(Duration::from_secs(30))
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(error) => (0, error.to_string()),
        }
    }

    /// Posts `body` to the webhook once, signed now as Slack signs (no retries). Returns the
    /// status (0 when no answer came) and the answer's body.
    pub async fn send_signed(&self, body: Vec<u8>, content_type: impl AsRef<str>) -> (u16, String) {
        let timestamp = unix_now();
        let headers = vec![
            (
                "X-Slack-Request-Timestamp".to_owned(),
                timestamp.to_string(),
            ),
            ("X-Slack-Signature".to_owned(), self.sign(&body, timestamp)),
        ];
        self.send_raw(body, content_type, headers).await
    }

    /// Slack checking the request URL (`url_verification` with `challenge`), signed. Returns
    /// the status and the answer's body.
    pub async fn url_verification(&self, challenge: impl AsRef<str>) -> (u16, String) {
        let body = json!({
            "token": "fake-verification-token",
            "challenge": challenge.as_ref(),
            "type": "url_verification",
        });
        self.send_signed(body.to_string().into_bytes(), "application/json")
            .await
    }

    /// Sends one `event_callback` body (its `event_id` is taken from it) with Slack's retry
    /// behaviour, and returns the last attempt once the retries are over (webhook), or its
    /// acknowledgement (socket; the last timed-out attempt when none came).
    pub async fn send_event(&self, callback: Value) -> Delivery {
        let event_id = callback["event_id"].as_str().unwrap_or_default().to_owned();
        if self.socket_mode() {
            self.enqueue("events_api", callback, event_id.clone(), true);
            return self.await_socket_outcome(&event_id).await;
        }
        let body = serde_json::to_vec(&callback).expect("an event serializes");
        let url = self.webhook_url();
        self.deliver(url, event_id, body, "application/json", true, None)
            .await
    }

    /// A fresh `event_callback` for `event` (an `Ev…` id, `event_time`, `authorizations`), as
    /// [`FakeSlack::post`] sends them; for [`FakeSlack::send_event`].
    pub fn event_callback(&self, event: Event) -> Value {
        event_callback(&mut self.world(), event).1
    }

    /// One delivery with retries; `first` hears the first attempt.
    async fn deliver(
        &self,
        url: String,
        event_id: String,
        body: Vec<u8>,
        content_type: &'static str,
        retries: bool,
        mut first: Option<oneshot::Sender<Delivery>>,
    ) -> Delivery {
        let mut attempt = 0;
        let mut reason: Option<&'static str> = None;
        loop {
            let timestamp = unix_now();
            let mut request = self
                .inner
                .http
                .post(&url)
                .header(header::CONTENT_TYPE.as_str(), content_type)
                .header("X-Slack-Request-Timestamp", timestamp.to_string())
                .header(
                    "X-Slack-Signature",
                    signature(SIGNING_SECRET, timestamp, &body),
                )
                .timeout(self.world().ack_deadline)
                .body(body.clone());
            if let Some(reason) = reason {
                request = request
                    .header("X-Slack-Retry-Num", attempt.to_string())
                    .header("X-Slack-Retry-Reason", reason);
            }
            let started = Instant::now();
            let (status, failure, no_retry) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let no_retry = response
                        .headers()
                        .get("x-slack-no-retry")
                        .is_some_and(|v| v.as_bytes() == b"1");
                    let failure = (!status.is_success()).then_some("http_error");
                    (status.as_u16(), failure, no_retry)
                }
                Err(error) if error.is_timeout() => (0, Some("http_timeout"), false),
                Err(_) => (0, Some("connection_failed"), false),
            };
            let delivery = Delivery {
                event_id: event_id.clone(),
                attempt,
                status,
                latency: started.elapsed(),
                retry_reason: reason.map(str::to_owned),
            };
            let delay = {
                let mut world = self.world();
                world.deliveries.push(delivery.clone());
                world
                    .retry_delays
                    .get(usize::try_from(attempt).unwrap_or(usize::MAX))
                    .or(world.retry_delays.last())
                    .copied()
                    .unwrap_or_default()
            };
            if let Some(first) = first.take() {
                let _ = first.send(delivery.clone());
            }
            let Some(failure) = failure else {
                return delivery;
            };
            if no_retry || !retries || attempt >= MAX_RETRIES {
                return delivery;
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
            reason = Some(failure);
        }
    }

    // ---- Socket Mode ----

    fn enqueue(&self, kind: &'static str, payload: Value, event_id: String, retries: bool) {
        {
            let mut world = self.world();
            let envelope_id = uuid::Uuid::new_v4().to_string();
            world.sockets.pending.push(Pending {
                envelope_id,
                kind,
                payload,
                event_id,
                retries,
                attempt: 0,
                reason: None,
                sent: None,
            });
        }
        self.inner.dispatch.notify_one();
    }

    /// Waits for an envelope's acknowledgement, or its last unacknowledged attempt.
    async fn await_socket_outcome(&self, event_id: &str) -> Delivery {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let world = self.world();
                let mine: Vec<&Delivery> = world
                    .deliveries
                    .iter()
                    .filter(|d| d.event_id == event_id)
                    .collect();
                let queued = world.sockets.pending.iter().any(|p| p.event_id == event_id);
                if let Some(acked) = mine.iter().find(|d| d.is_success()) {
                    return (*acked).clone();
                }
                if !queued && let Some(last) = mine.last() {
                    return (*last).clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the envelope for {event_id} was not delivered over Socket Mode in 60 s\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Open Socket Mode connections (hello sent, not closed yet).
    pub fn socket_connections(&self) -> usize {
        self.world().sockets.conns.len()
    }

    /// Socket Mode connections ever accepted.
    pub fn socket_connects(&self) -> usize {
        self.world().sockets.connects
    }

    /// Envelopes sent or queued and not acknowledged yet.
    pub fn unacknowledged_envelopes(&self) -> usize {
        self.world().sockets.pending.len()
    }

    /// Sends `{"type":"disconnect","reason":…}` on every open connection, then closes each after
    /// the grace period ([`FakeSlack::set_disconnect_grace`], default 1 s) in the background;
    /// no new envelopes go to them meanwhile. Returns once the frames are sent.
    pub async fn disconnect_all(&self, reason: impl ReasonText) {
        let reason = reason.reason_text();
        let (senders, grace) = {
            let mut world = self.world();
            let grace = world.disconnect_grace;
            let senders: Vec<mpsc::UnboundedSender<WsMessage>> = world
                .sockets
                .conns
                .iter_mut()
                .map(|conn| {
                    conn.disconnecting = true;
                    conn.tx.clone()
                })
                .collect();
            (senders, grace)
        };
        for (n, tx) in senders.iter().enumerate() {
            let frame = json!({
                "type": "disconnect",
                "reason": reason,
                "debug_info": {"host": format!("applink-fake-{n}")},
            });
            let _ = tx.send(WsMessage::text(frame.to_string()));
        }
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            for tx in senders {
                let _ = tx.send(WsMessage::Close(None));
            }
        });
    }

    pub fn set_disconnect_grace(&self, grace: Duration) {
        self.world().disconnect_grace = grace;
    }

    /// How long a webhook answer or a Socket Mode acknowledgement may take before the delivery
    /// counts as failed and is retried (Slack's 3 s by default).
    pub fn set_ack_deadline(&self, deadline: Duration) {
        self.world().ack_deadline = deadline;
    }

    // ---- knobs ----

    /// The delays before retries 1, 2, 3 (the last repeats); default 10 ms, 100 ms, 500 ms.
    pub fn set_retry_delays(&self, delays: Vec<Duration>) {
        self.world().retry_delays = delays;
    }

    /// The next `times` calls of `method` answer HTTP 429, `Retry-After: retry_after_secs`,
    /// `{"ok":false,"error":"ratelimited"}`.
    pub fn rate_limit(&self, method: impl AsRef<str>, times: u32, retry_after_secs: u64) {
        self.world()
            .rate_limits
            .insert(method.as_ref().to_owned(), (times, retry_after_secs));
    }

    /// `chat.appendStream`/`chat.stopStream` on a stream older than `after` answer
    /// `message_not_in_streaming_state` (Slack closes streams after about 5 minutes).
    pub fn expire_streams_after(&self, after: Duration) {
        self.world().stream_ttl = Some(after);
    }

    /// The streaming methods answer `unknown_method` (a workspace without them).
    pub fn disable_streaming(&self) {
        self.world().streaming_disabled = true;
    }

    /// The next `times` calls of `method` answer `{"ok":false,"error":error}`.
    pub fn fail(&self, method: impl AsRef<str>, error: impl AsRef<str>, times: u32) {
        self.world().failures.insert(
            method.as_ref().to_owned(),
            (error.as_ref().to_owned(), times),
        );
    }

    /// The next `times` calls of `method` are carried out, but their answer is lost: HTTP 500
    /// (as when Slack posted and then failed, or a proxy in between did).
    pub fn lose_answers(&self, method: impl AsRef<str>, times: u32) {
        self.world()
            .lost_answers
            .insert(method.as_ref().to_owned(), times);
    }

    /// Also send `message` events for the bot's own posts (subtype none, with `bot_id`), as
    /// Slack does; off by default.
    pub fn echo_bot_messages(&self, on: bool) {
        self.world().echo_bot_messages = on;
    }

    // ---- observations ----

    pub fn calls(&self) -> Vec<Call> {
        self.world().calls.clone()
    }

    /// The bodies of the calls of `method`, in order.
    pub fn calls_to(&self, method: impl AsRef<str>) -> Vec<Value> {
        let method = method.as_ref();
        self.world()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .map(|c| c.body.clone())
            .collect()
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.world().deliveries.clone()
    }

    /// The thread as Slack shows it now: parent first, then the replies by `ts` (updates
    /// applied, streamed text accumulated, blocks, metadata, files). Empty when there is no such
    /// message.
    pub fn thread(&self, channel: impl AsRef<str>, thread_ts: impl AsRef<str>) -> Vec<Message> {
        self.world()
            .thread(channel.as_ref(), thread_ts.as_ref())
            .unwrap_or_default()
    }

    /// One message as it is now.
    pub fn message(&self, channel: impl AsRef<str>, ts: impl AsRef<str>) -> Option<Message> {
        self.world()
            .stored(channel.as_ref(), ts.as_ref())
            .map(|s| s.message.clone())
    }

    /// Every message of `channel`, in the order they were posted.
    pub fn messages(&self, channel: impl AsRef<str>) -> Vec<Message> {
        self.world()
            .messages
            .get(channel.as_ref())
            .map(|all| all.iter().map(|s| s.message.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether the message `ts` is still streaming.
    pub fn is_streaming(&self, channel: impl AsRef<str>, ts: impl AsRef<str>) -> bool {
        self.world()
            .stored(channel.as_ref(), ts.as_ref())
            .is_some_and(|s| s.streaming_since.is_some())
    }

    /// The reaction names on a message.
    pub fn reactions(&self, channel: impl AsRef<str>, ts: impl AsRef<str>) -> Vec<String> {
        self.world()
            .reactions
            .get(&(channel.as_ref().to_owned(), ts.as_ref().to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The assistant status shown under the thread now.
    pub fn status(&self, channel: impl AsRef<str>, thread_ts: impl AsRef<str>) -> Option<String> {
        self.world()
            .statuses
            .get(&(channel.as_ref().to_owned(), thread_ts.as_ref().to_owned()))
            .cloned()
    }

    /// The bytes uploaded for `file_id`.
    pub fn file_bytes(&self, file_id: impl AsRef<str>) -> Option<Vec<u8>> {
        self.world()
            .files
            .get(file_id.as_ref())
            .and_then(|f| f.bytes.clone())
    }

    /// Polls `condition` until it holds; panics with the recent calls and deliveries after
    /// `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&FakeSlack) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the fake Slack waited {timeout:?} in vain\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The recent Web API calls, deliveries and sockets, for failure messages.
    pub fn log(&self) -> String {
        let world = self.world();
        let mut out = String::from("recent Web API calls:\n");
        let skip = world.calls.len().saturating_sub(40);
        for call in world.calls.iter().skip(skip) {
            let mut body = call.body.to_string();
            if body.len() > 400 {
                let mut cut = 400;
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                body.truncate(cut);
                body.push('…');
            }
            out.push_str(&format!(
                "  {} {}{}\n",
                call.method,
                call.error
                    .as_ref()
                    .map(|e| format!("-> {e} "))
                    .unwrap_or_default(),
                body
            ));
        }
        out.push_str("recent deliveries:\n");
        let skip = world.deliveries.len().saturating_sub(20);
        for d in world.deliveries.iter().skip(skip) {
            out.push_str(&format!("  {d:?}\n"));
        }
        out.push_str(&format!(
            "socket connections open: {}, envelopes unacknowledged: {}\n",
            world.sockets.conns.len(),
            world.sockets.pending.len()
        ));
        out
    }
}

/// A new `event_callback` body for `event`: its `event_id` and JSON.
fn event_callback(world: &mut World, event: Event) -> (String, Value) {
    let event_id = world.next_id("Ev0");
    let callback = EventCallback {
        team_id: TEAM_ID.to_owned(),
        api_app_id: Some(APP_ID.to_owned()),
        event_id: event_id.clone(),
        event_time: unix_now(),
        event,
        authorizations: vec![Authorization {
            enterprise_id: None,
            team_id: Some(TEAM_ID.to_owned()),
            user_id: Some(BOT_USER_ID.to_owned()),
            is_bot: true,
        }],
        is_ext_shared_channel: Some(false),
    };
    let mut body = serde_json::to_value(EventsRequest::EventCallback(Box::new(callback)))
        .expect("an event serializes");
    if let Some(fields) = body.as_object_mut() {
        fields.insert("token".into(), json!("fake-verification-token"));
        fields.insert("event_context".into(), json!("4-fakeeventcontext"));
        if let Some(auth) = fields
            .get_mut("authorizations")
            .and_then(|a| a.get_mut(0))
            .and_then(Value::as_object_mut)
        {
            auth.insert("is_enterprise_install".into(), json!(false));
        }
    }
    (event_id, body)
}

/// The `block_id` of the block holding the element `action_id`.
fn block_of(message: &Message, action_id: &str) -> Option<String> {
    message.blocks.as_ref()?.iter().find_map(|block| {
        let holds = block["elements"]
            .as_array()
            .is_some_and(|els| els.iter().any(|e| e["action_id"] == action_id));
        holds.then(|| block["block_id"].as_str().unwrap_or_default().to_owned())
    })
}

impl Inner {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

// ---- the Web API ----

/// Form fields whose values are JSON text.
const JSON_FIELDS: [&str; 7] = [
    "blocks",
    "metadata",
    "files",
    "attachments",
    "chunks",
    "loading_messages",
    "event_payload",
];
const BOOL_FIELDS: [&str; 8] = [
    "include_all_metadata",
    "inclusive",
    "unfurl_links",
    "unfurl_media",
    "reply_broadcast",
    "mrkdwn",
    "include_num_members",
    "include_locale",
];
const NUMBER_FIELDS: [&str; 2] = ["limit", "length"];

/// A form body as the JSON object the same request would have been.
fn form_fields(body: &[u8]) -> Value {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let mut fields = Map::new();
    for (name, text) in pairs {
        let value = if JSON_FIELDS.contains(&name.as_str()) {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else if BOOL_FIELDS.contains(&name.as_str()) {
            match text.as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => Value::String(text),
            }
        } else if NUMBER_FIELDS.contains(&name.as_str()) {
            text.parse::<u64>()
                .map_or(Value::String(text), |n| Value::Number(n.into()))
        } else {
            Value::String(text)
        };
        fields.insert(name, value);
    }
    Value::Object(fields)
}

fn answer_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

async fn web_api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut warning = None;
    let args = if content_type.starts_with("application/json") {
        if !content_type.contains("charset") {
            warning = Some("missing_charset");
        }
        serde_json::from_slice(&body).unwrap_or_else(|_| json!({}))
    } else {
        form_fields(&body)
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| args["token"].as_str().map(str::to_owned));
    let wanted = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    let refusal = match token.as_deref() {
        None | Some("") => Some(errors::NOT_AUTHED),
        Some(t) if t == wanted => None,
        Some(t) if t == BOT_TOKEN || t == APP_TOKEN => Some(errors::NOT_ALLOWED_TOKEN_TYPE),
        Some(_) => Some(errors::INVALID_AUTH),
    };
    let mut args = args;
    if let Some(fields) = args.as_object_mut() {
        fields.remove("token");
    }
    let mut world = inner.world();
    let index = world.calls.len();
    world.calls.push(Call {
        method: method.clone(),
        body: args.clone(),
        at: Instant::now(),
        error: None,
    });
    if let Some(error) = refusal {
        world.calls[index].error = Some(error.to_owned());
        return answer_json(StatusCode::OK, json!({"ok": false, "error": error}));
    }
    if let Some((times, retry_after)) = world.rate_limits.get_mut(&method)
        && *times > 0
    {
        *times -= 1;
        let retry_after = *retry_after;
        world.calls[index].error = Some(errors::RATELIMITED.to_owned());
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (
                    header::CONTENT_TYPE,
                    "application/json; charset=utf-8".to_owned(),
                ),
                (header::RETRY_AFTER, retry_after.to_string()),
            ],
            json!({"ok": false, "error": errors::RATELIMITED}).to_string(),
        )
            .into_response();
    }
    let forced = match world.failures.get_mut(&method) {
        Some((error, times)) if *times > 0 => {
            *times -= 1;
            Some(error.clone())
        }
        Some(_) | None => None,
    };
    let outcome = match forced {
        Some(error) => Err(error),
        None => handle(&mut world, &inner, &method, args),
    };
    let echo = match &outcome {
        Ok((_, echo)) => echo.clone(),
        Err(_) => None,
    };
    let body = match outcome {
        Ok((fields, _)) => {
            let mut fields = match fields {
                Value::Object(fields) => fields,
                other @ (Value::Null
                | Value::Bool(_)
                | Value::Number(_)
                | Value::String(_)
                | Value::Array(_)) => {
                    let mut map = Map::new();
                    map.insert("value".into(), other);
                    map
                }
            };
            fields.insert("ok".into(), Value::Bool(true));
            if let Some(warning) = warning {
                fields.insert("warning".into(), json!(warning));
            }
            Value::Object(fields)
        }
        Err(error) => {
            world.calls[index].error = Some(error.clone());
            json!({"ok": false, "error": error})
        }
    };
    let echo = echo
        .filter(|_| world.echo_bot_messages)
        .map(|(channel, message)| {
            let event = MessageEvent {
                channel: channel.clone(),
                channel_type: Some(
                    if world.is_im(&channel) {
                        "im"
                    } else {
                        "channel"
                    }
                    .to_owned(),
                ),
                user: message.user.clone(),
                bot_id: message.bot_id.clone(),
                text: message.text.clone(),
                ts: message.ts.clone(),
                thread_ts: message.thread_ts.clone(),
                event_ts: Some(message.ts.clone()),
                team: Some(TEAM_ID.to_owned()),
                ..MessageEvent::default()
            };
            event_callback(&mut world, Event::Message(event))
        });
    drop(world);
    if let Some((event_id, callback)) = echo {
        let fake = FakeSlack {
            inner: inner.clone(),
        };
        tokio::spawn(async move { fake.send_first(event_id, callback).await });
    }
    let mut world = inner.world();
    if let Some(times) = world.lost_answers.get_mut(&method)
        && *times > 0
    {
        *times -= 1;
        world.calls[index].error = Some("answer lost (HTTP 500)".to_owned());
        return answer_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"ok": false, "error": "internal_error"}),
        );
    }
    drop(world);
    answer_json(StatusCode::OK, body)
}

/// Decodes a method's arguments.
fn args<T: DeserializeOwned>(body: &Value) -> Result<T, String> {
    serde_json::from_value(body.clone()).map_err(|_| "invalid_arguments".to_owned())
}

fn fields<T: Serialize>(value: T) -> Value {
    serde_json::to_value(value).expect("a response serializes")
}

fn known_channel(world: &World, channel: &str) -> Result<(), String> {
    if world.channels.contains_key(channel) {
        Ok(())
    } else {
        Err(errors::CHANNEL_NOT_FOUND.to_owned())
    }
}

/// Blocks as given, checked as Slack checks them.
fn checked_blocks(body: &Value) -> Result<Option<Vec<Value>>, String> {
    match &body["blocks"] {
        Value::Null => Ok(None),
        blocks => {
            let typed: Vec<Block> =
                serde_json::from_value(blocks.clone()).map_err(|_| "invalid_blocks".to_owned())?;
            if typed.len() > MAX_BLOCKS {
                return Err("invalid_blocks".to_owned());
            }
            Ok(Some(blocks.as_array().cloned().unwrap_or_default()))
        }
    }
}

fn bot_message(ts: String, text: String, thread_ts: Option<String>) -> Message {
    Message {
        kind: Some("message".into()),
        user: Some(BOT_USER_ID.into()),
        bot_id: Some(BOT_ID.into()),
        text,
        ts,
        thread_ts,
        ..Message::default()
    }
}

/// Checks that `ts` in `channel` is a live stream (an expired one stops here).
fn live_stream<'w>(
    world: &'w mut World,
    channel: &str,
    ts: &str,
) -> Result<&'w mut Stored, String> {
    known_channel(world, channel)?;
    let ttl = world.stream_ttl;
    let stored = world
        .stored(channel, ts)
        .ok_or_else(|| errors::MESSAGE_NOT_FOUND.to_owned())?;
    match stored.streaming_since {
        Some(since) if ttl.is_some_and(|ttl| since.elapsed() > ttl) => {
            stored.streaming_since = None;
            Err(errors::MESSAGE_NOT_IN_STREAMING_STATE.to_owned())
        }
        Some(_) => Ok(stored),
        None => Err(errors::MESSAGE_NOT_IN_STREAMING_STATE.to_owned()),
    }
}

/// Markdown chunks of `chunks` (`{"type":"markdown_text","text":…}`).
fn chunk_text(body: &Value) -> String {
    body["chunks"]
        .as_array()
        .map(|chunks| {
            chunks
                .iter()
                .filter(|c| c["type"] == "markdown_text")
                .filter_map(|c| c["text"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

type Echo = Option<(String, Message)>;

/// One method: its answer's fields, and a bot message to echo as an event; or its error.
fn handle(
    world: &mut World,
    inner: &Inner,
    method: &str,
    body: Value,
) -> Result<(Value, Echo), String> {
    let plain = |v: Value| -> Result<(Value, Echo), String> { Ok((v, None)) };
    match method {
        "api.test" => plain(json!({})),
        "auth.test" => plain(fields(AuthTestResponse {
            url: Some(format!("https://{TEAM_DOMAIN}.slack.com/")),
            team: Some("Centaur Test".into()),
            user: Some("centaur".into()),
            team_id: TEAM_ID.into(),
            user_id: BOT_USER_ID.into(),
            bot_id: Some(BOT_ID.into()),
        })),
        "apps.connections.open" => {
            let ticket = world.next_id("");
            world.sockets.tickets.insert(ticket.clone());
            plain(fields(ConnectionsOpenResponse {
                url: format!("ws://127.0.0.1:{}/link/?ticket={ticket}", inner.link_port),
            }))
        }
        "chat.postMessage" => {
            let blocks = checked_blocks(&body)?;
            let mut body = body;
            let markdown = body["markdown_text"].as_str().map(str::to_owned);
            if body.get("text").is_none_or(Value::is_null)
                && let Some(fields) = body.as_object_mut()
            {
                fields.insert("text".into(), json!(markdown.clone().unwrap_or_default()));
            }
            let request: PostMessage = args(&body)?;
            known_channel(world, &request.channel)?;
            if request.text.trim().is_empty() && blocks.as_ref().is_none_or(Vec::is_empty) {
                return Err("no_text".into());
            }
            if request.text.chars().count() > MAX_TEXT_CHARS {
                return Err(errors::MSG_TOO_LONG.into());
            }
            let ts = world.next_ts();
            let mut message = bot_message(ts.clone(), request.text, request.thread_ts);
            message.blocks = blocks.filter(|b| !b.is_empty());
            message.metadata = request.metadata;
            world.store(&request.channel, message.clone(), false);
            let echo = Some((request.channel.clone(), message.clone()));
            Ok((
                fields(PostMessageResponse {
                    channel: request.channel,
                    ts,
                    message: Some(message),
                }),
                echo,
            ))
        }
        "chat.update" => {
            let blocks = checked_blocks(&body)?;
            let mut body = body;
            if body.get("text").is_none_or(Value::is_null)
                && let Some(fields) = body.as_object_mut()
            {
                fields.insert("text".into(), json!(""));
            }
            let request: Update = args(&body)?;
            known_channel(world, &request.channel)?;
            if request.text.chars().count() > MAX_TEXT_CHARS {
                return Err(errors::MSG_TOO_LONG.into());
            }
            let ttl = world.stream_ttl;
            let stored = world
                .stored(&request.channel, &request.ts)
                .ok_or_else(|| errors::MESSAGE_NOT_FOUND.to_owned())?;
            if stored.message.bot_id.as_deref() != Some(BOT_ID) {
                return Err(errors::CANT_UPDATE_MESSAGE.into());
            }
            if let Some(since) = stored.streaming_since {
                if ttl.is_some_and(|ttl| since.elapsed() > ttl) {
                    stored.streaming_since = None;
                } else {
                    return Err(errors::STREAMING_STATE_CONFLICT.into());
                }
            }
            if request.text.trim().is_empty()
                && blocks.as_ref().is_none_or(Vec::is_empty)
                && stored.message.blocks.is_none()
            {
                return Err("no_text".into());
            }
            stored.message.text = request.text;
            if let Some(blocks) = blocks {
                stored.message.blocks = (!blocks.is_empty()).then_some(blocks);
            }
            plain(fields(UpdateResponse {
                channel: request.channel,
                ts: request.ts,
            }))
        }
        "chat.startStream" | "chat.appendStream" | "chat.stopStream"
            if world.streaming_disabled =>
        {
            Err(errors::UNKNOWN_METHOD.into())
        }
        "chat.startStream" => {
            let request: StartStream = args(&body)?;
            known_channel(world, &request.channel)?;
            if !world.is_im(&request.channel) && request.recipient_user_id.is_none() {
                return Err(errors::MISSING_RECIPIENT_USER_ID.into());
            }
            let text = request.markdown_text.unwrap_or_default() + &chunk_text(&body);
            if text.chars().count() > MAX_MARKDOWN_CHARS {
                return Err(errors::MSG_TOO_LONG.into());
            }
            let ts = world.next_ts();
            let message = bot_message(ts.clone(), text, Some(request.thread_ts));
            world.store(&request.channel, message, true);
            plain(fields(StreamResponse {
                channel: request.channel,
                ts,
            }))
        }
        "chat.appendStream" => {
            let mut body = body;
            if body.get("markdown_text").is_none_or(Value::is_null)
                && let Some(fields) = body.as_object_mut()
            {
                fields.insert("markdown_text".into(), json!(""));
            }
            let request: AppendStream = args(&body)?;
            let text = request.markdown_text + &chunk_text(&body);
            if text.chars().count() > MAX_MARKDOWN_CHARS {
                return Err(errors::MSG_TOO_LONG.into());
            }
            let stored = live_stream(world, &request.channel, &request.ts)?;
            stored.message.text.push_str(&text);
            plain(fields(StreamResponse {
                channel: request.channel,
                ts: request.ts,
            }))
        }
        "chat.stopStream" => {
            let blocks = checked_blocks(&body)?;
            let request: StopStream = args(&body)?;
            let text = request.markdown_text.unwrap_or_default() + &chunk_text(&body);
            if text.chars().count() > MAX_MARKDOWN_CHARS {
                return Err(errors::MSG_TOO_LONG.into());
            }
            let metadata = body
                .get("metadata")
                .and_then(|m| serde_json::from_value(m.clone()).ok());
            let stored = live_stream(world, &request.channel, &request.ts)?;
            stored.message.text.push_str(&text);
            if let Some(blocks) = blocks.filter(|b| !b.is_empty()) {
                stored.message.blocks = Some(blocks);
            }
            if metadata.is_some() {
                stored.message.metadata = metadata;
            }
            stored.streaming_since = None;
            let message = stored.message.clone();
            Ok((
                fields(StreamResponse {
                    channel: request.channel.clone(),
                    ts: request.ts,
                }),
                Some((request.channel, message)),
            ))
        }
        "chat.getPermalink" => {
            let request: GetPermalink = args(&body)?;
            known_channel(world, &request.channel)?;
            let message = world
                .stored(&request.channel, &request.message_ts)
                .map(|s| s.message.clone())
                .ok_or_else(|| errors::MESSAGE_NOT_FOUND.to_owned())?;
            let mut permalink = format!(
                "https://{TEAM_DOMAIN}.slack.com/archives/{}/p{}",
                request.channel,
                request.message_ts.replace('.', "")
            );
            if let Some(thread_ts) = message.thread_ts.filter(|t| *t != message.ts) {
                permalink.push_str(&format!("?thread_ts={thread_ts}&cid={}", request.channel));
            }
            plain(fields(GetPermalinkResponse {
                channel: request.channel,
                permalink,
            }))
        }
        "assistant.threads.setStatus" => {
            let request: SetStatus = args(&body)?;
            known_channel(world, &request.channel_id)?;
            let key = (request.channel_id, request.thread_ts);
            if request.status.is_empty() {
                world.statuses.remove(&key);
            } else {
                world.statuses.insert(key, request.status);
            }
            plain(json!({}))
        }
        "reactions.add" => {
            let request: ReactionsAdd = args(&body)?;
            known_channel(world, &request.channel)?;
            if world.stored(&request.channel, &request.timestamp).is_none() {
                return Err(errors::MESSAGE_NOT_FOUND.into());
            }
            let names = world
                .reactions
                .entry((request.channel, request.timestamp))
                .or_default();
            if names.contains(&request.name) {
                return Err(errors::ALREADY_REACTED.into());
            }
            names.push(request.name);
            plain(json!({}))
        }
        "reactions.remove" => {
            let request: ReactionsRemove = args(&body)?;
            known_channel(world, &request.channel)?;
            if world.stored(&request.channel, &request.timestamp).is_none() {
                return Err(errors::MESSAGE_NOT_FOUND.into());
            }
            let names = world
                .reactions
                .entry((request.channel, request.timestamp))
                .or_default();
            let Some(at) = names.iter().position(|n| *n == request.name) else {
                return Err(errors::NO_REACTION.into());
            };
            names.remove(at);
            plain(json!({}))
        }
        "conversations.replies" => {
            let request: ConversationsReplies = args(&body)?;
            known_channel(world, &request.channel)?;
            let mut thread = world
                .thread(&request.channel, &request.ts)
                .ok_or_else(|| errors::THREAD_NOT_FOUND.to_owned())?;
            if request.include_all_metadata != Some(true) {
                for message in &mut thread {
                    message.metadata = None;
                }
            }
            let start = match request.cursor.as_deref().filter(|c| !c.is_empty()) {
                None => 0,
                Some(cursor) => cursor
                    .strip_prefix("next_ts_offset:")
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| "invalid_cursor".to_owned())?,
            };
            let limit = usize::try_from(request.limit.unwrap_or(1000).max(1)).unwrap_or(1000);
            let end = (start + limit).min(thread.len());
            let page: Vec<Message> = thread
                .get(start..end)
                .map(<[Message]>::to_vec)
                .unwrap_or_default();
            let has_more = end < thread.len();
            plain(fields(ConversationsRepliesResponse {
                messages: page,
                has_more,
                response_metadata: has_more.then(|| ResponseMetadata {
                    next_cursor: format!("next_ts_offset:{end}"),
                }),
            }))
        }
        "conversations.info" => {
            let request: ConversationsInfo = args(&body)?;
            let info = world
                .channels
                .get(&request.channel)
                .ok_or_else(|| errors::CHANNEL_NOT_FOUND.to_owned())?;
            let mut channel = fields(Channel {
                id: request.channel.clone(),
                name: info.name.clone(),
                is_im: info.im_user.is_some(),
                is_private: false,
            });
            if let Some(channel) = channel.as_object_mut() {
                channel.insert("is_member".into(), json!(true));
                channel.insert("is_channel".into(), json!(info.im_user.is_none()));
                if let Some(user) = &info.im_user {
                    channel.insert("user".into(), json!(user));
                }
            }
            plain(json!({ "channel": channel }))
        }
        "users.info" => {
            let request: UsersInfo = args(&body)?;
            let (display, is_bot) = if request.user == BOT_USER_ID {
                ("Centaur".to_owned(), true)
            } else {
                let name = world
                    .users
                    .get(&request.user)
                    .cloned()
                    .ok_or_else(|| errors::USER_NOT_FOUND.to_owned())?;
                (name, false)
            };
            plain(fields(UsersInfoResponse {
                user: User {
                    id: request.user,
                    name: Some(display.to_lowercase().replace(' ', ".")),
                    real_name: Some(display.clone()),
                    is_bot,
                    profile: Some(Profile {
                        display_name: Some(display.clone()),
                        real_name: Some(display),
                    }),
                },
            }))
        }
        "files.getUploadURLExternal" => {
            let request: GetUploadUrl = args(&body)?;
            if request.filename.is_empty() {
                return Err("invalid_arguments".into());
            }
            let file_id = world.next_id("F0");
            world.files.insert(
                file_id.clone(),
                FileUpload {
                    filename: request.filename,
                    bytes: None,
                },
            );
            plain(fields(GetUploadUrlResponse {
                upload_url: format!("http://127.0.0.1:{}/upload/{file_id}", inner.api_port),
                file_id,
            }))
        }
        "files.completeUploadExternal" => {
            let request: CompleteUpload = args(&body)?;
            known_channel(world, &request.channel_id)?;
            let mut shared = Vec::new();
            for file in &request.files {
                let upload = world
                    .files
                    .get(&file.id)
                    .filter(|f| f.bytes.is_some())
                    .ok_or_else(|| "file_not_found".to_owned())?;
                shared.push(SlackFile {
                    id: file.id.clone(),
                    name: Some(upload.filename.clone()),
                    title: Some(
                        file.title
                            .clone()
                            .unwrap_or_else(|| upload.filename.clone()),
                    ),
                });
            }
            let ts = world.next_ts();
            let mut message = bot_message(
                ts,
                request.initial_comment.unwrap_or_default(),
                request.thread_ts,
            );
            message.files = shared.clone();
            world.store(&request.channel_id, message, false);
            plain(fields(CompleteUploadResponse { files: shared }))
        }
        _ => Err(errors::UNKNOWN_METHOD.into()),
    }
}

async fn upload(
    State(inner): State<Arc<Inner>>,
    Path(file_id): Path<String>,
    body: Bytes,
) -> Response {
    let mut world = inner.world();
    match world.files.get_mut(&file_id) {
        Some(file) => {
            let length = body.len();
            file.bytes = Some(body.to_vec());
            (StatusCode::OK, format!("OK - {length}")).into_response()
        }
        None => (StatusCode::NOT_FOUND, "file not found").into_response(),
    }
}

// ---- Socket Mode ----

async fn accept_links(inner: Weak<Inner>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        tokio::spawn(link_connection(inner, stream));
    }
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback returns its own response
async fn link_connection(inner: Arc<Inner>, stream: tokio::net::TcpStream) {
    let checker = inner.clone();
    let accepted = tokio_tungstenite::accept_hdr_async(
        stream,
        move |request: &WsRequest, response| -> Result<_, ErrorResponse> {
            let ticket = request.uri().query().and_then(|query| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("ticket="))
                    .map(str::to_owned)
            });
            let known = request.uri().path().starts_with("/link")
                && ticket.is_some_and(|t| checker.world().sockets.tickets.remove(&t));
            if known {
                Ok(response)
            } else {
                let mut refusal = ErrorResponse::new(Some("unknown ticket".to_owned()));
                *refusal.status_mut() = StatusCode::UNAUTHORIZED;
                Err(refusal)
            }
        },
    )
    .await;
    let Ok(socket) = accepted else {
        return;
    };
    let (mut sink, mut source) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut world = inner.world();
        let sockets = &mut world.sockets;
        sockets.next_conn += 1;
        sockets.connects += 1;
        let id = sockets.next_conn;
        let hello = json!({
            "type": "hello",
            "num_connections": sockets.conns.len() + 1,
            "debug_info": {
                "host": format!("applink-fake-{id}"),
                "build_number": 10,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": APP_ID},
        });
        let _ = tx.send(WsMessage::text(hello.to_string()));
        sockets.conns.push(Conn {
            id,
            tx,
            disconnecting: false,
        });
        id
    };
    inner.dispatch.notify_one();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(message) => {
                    let closing = matches!(message, WsMessage::Close(_));
                    if sink.send(message).await.is_err() || closing {
                        break;
                    }
                }
                None => break,
            },
            incoming = source.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => acknowledge(&inner, text.as_str()),
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    {
        let mut world = inner.world();
        let sockets = &mut world.sockets;
        sockets.conns.retain(|c| c.id != id);
        // What went out on it unacknowledged goes out again on another connection.
        for pending in &mut sockets.pending {
            if pending.sent.is_some_and(|(conn, _)| conn == id) {
                pending.sent = None;
                if pending.retries {
                    pending.attempt += 1;
                    pending.reason = Some("timeout".into());
                }
            }
        }
    }
    inner.dispatch.notify_one();
}

fn acknowledge(inner: &Inner, text: &str) {
    let Ok(ack) = serde_json::from_str::<SocketAck>(text) else {
        return;
    };
    let mut world = inner.world();
    let Some(at) = world
        .sockets
        .pending
        .iter()
        .position(|p| p.envelope_id == ack.envelope_id && p.sent.is_some())
    else {
        return;
    };
    let pending = world.sockets.pending.remove(at);
    let latency = pending.sent.map(|(_, t)| t.elapsed()).unwrap_or_default();
    world.deliveries.push(Delivery {
        event_id: pending.event_id,
        attempt: pending.attempt,
        status: 200,
        latency,
        retry_reason: pending.reason,
    });
}

async fn dispatcher(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        dispatch(&mut strong.world());
        tokio::select! {
            () = strong.dispatch.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(25)) => {}
        }
    }
}

/// Times out unacknowledged envelopes and sends what waits over the open connections.
fn dispatch(world: &mut World) {
    let now = Instant::now();
    let deadline = world.ack_deadline;
    let mut timed_out = Vec::new();
    world.sockets.pending.retain_mut(|p| {
        let Some((_, at)) = p.sent else {
            return true;
        };
        if now.duration_since(at) < deadline {
            return true;
        }
        timed_out.push(Delivery {
            event_id: p.event_id.clone(),
            attempt: p.attempt,
            status: 0,
            latency: now.duration_since(at),
            retry_reason: p.reason.clone(),
        });
        if p.retries && p.attempt < MAX_RETRIES {
            p.attempt += 1;
            p.reason = Some("timeout".into());
            p.sent = None;
            true
        } else {
            false
        }
    });
    world.deliveries.extend(timed_out);
    let sockets = &mut world.sockets;
    let open: Vec<usize> = (0..sockets.conns.len())
        .filter(|&i| !sockets.conns[i].disconnecting)
        .collect();
    if open.is_empty() {
        return;
    }
    for pending in sockets.pending.iter_mut().filter(|p| p.sent.is_none()) {
        let conn = &sockets.conns[open[sockets.round_robin % open.len()]];
        sockets.round_robin += 1;
        let mut envelope = json!({
            "envelope_id": pending.envelope_id,
            "type": pending.kind,
            "payload": pending.payload,
            "accepts_response_payload": false,
        });
        if pending.retries {
            envelope["retry_attempt"] = json!(pending.attempt);
            envelope["retry_reason"] = json!(pending.reason.clone().unwrap_or_default());
        }
        if conn.tx.send(WsMessage::text(envelope.to_string())).is_ok() {
            pending.sent = Some((conn.id, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaur_protocol::slack::events::SocketFrame;
    use centaur_protocol::slack::web::{AuthTest, ConnectionsOpen, MessageMetadata, UploadedFile};
    use centaur_server::slack::web::{SlackWeb, WebError};

    #[test]
    fn signatures_match_slacks_documented_example() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            signature(SIGNING_SECRET, 1531420618, body.as_bytes()),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn form_fields_decode_like_json() {
        let form =
            "channel=C1&ts=1.000001&limit=2&include_all_metadata=true&blocks=%5B%5D&text=true";
        let value = form_fields(form.as_bytes());
        assert_eq!(
            value,
            json!({"channel":"C1","ts":"1.000001","limit":2,"include_all_metadata":true,"blocks":[],"text":"true"})
        );
    }

    fn client(fake: &FakeSlack) -> SlackWeb {
        SlackWeb::new(&fake.api_url(), BOT_TOKEN.into(), Some(APP_TOKEN.into()))
    }

    fn post(channel: &str, text: &str, thread_ts: Option<&str>) -> PostMessage {
        PostMessage {
            channel: channel.into(),
            text: text.into(),
            thread_ts: thread_ts.map(str::to_owned),
            ..PostMessage::default()
        }
    }

    fn replies(ts: &str, limit: Option<u32>, cursor: Option<String>) -> ConversationsReplies {
        ConversationsReplies {
            channel: "C1".into(),
            ts: ts.into(),
            cursor,
            limit,
            include_all_metadata: None,
        }
    }

    #[tokio::test]
    async fn the_servers_client_reads_threads_page_by_page_and_meets_slacks_errors() {
        let fake = FakeSlack::start().await;
        let web = client(&fake);
        let me = web.call(&AuthTest {}).await.unwrap();
        assert_eq!(
            (me.team_id.as_str(), me.user_id.as_str()),
            (TEAM_ID, BOT_USER_ID)
        );
        let stranger = SlackWeb::new(&fake.api_url(), "xoxb-wrong".into(), None);
        let refused = stranger.call(&AuthTest {}).await.unwrap_err();
        assert_eq!(refused.code(), Some("invalid_auth"));
        assert!(web.call(&ConnectionsOpen {}).await.is_ok());
        let bot_only = SlackWeb::new(&fake.api_url(), BOT_TOKEN.into(), Some(BOT_TOKEN.into()));
        assert_eq!(
            bot_only.call(&ConnectionsOpen {}).await.unwrap_err().code(),
            Some("not_allowed_token_type")
        );

        let parent = web.call(&post("C1", "parent", None)).await.unwrap().ts;
        let mut tagged = post("C1", "reply 1", Some(&parent));
        tagged.metadata = Some(MessageMetadata {
            event_type: "centaur_delivery".into(),
            event_payload: json!({"n": 1}),
        });
        web.call(&tagged).await.unwrap();
        for n in 2..=4 {
            web.call(&post("C1", &format!("reply {n}"), Some(&parent)))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = web
                .call(&replies(&parent, Some(2), cursor.take()))
                .await
                .unwrap();
            assert!(page.messages.len() <= 2);
            seen.extend(page.messages.into_iter().map(|m| (m.text, m.metadata)));
            match page.response_metadata.map(|m| m.next_cursor) {
                Some(next) if !next.is_empty() => cursor = Some(next),
                Some(_) | None => break,
            }
        }
        let texts: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            texts,
            ["parent", "reply 1", "reply 2", "reply 3", "reply 4"]
        );
        assert!(
            seen.iter().all(|(_, m)| m.is_none()),
            "metadata only on request"
        );
        let mut with_metadata = replies(&parent, None, None);
        with_metadata.include_all_metadata = Some(true);
        let all = web.call(&with_metadata).await.unwrap();
        assert_eq!(
            all.messages[1].metadata.as_ref().unwrap().event_type,
            "centaur_delivery"
        );
        assert_eq!(fake.thread("C1", &parent).len(), 5);

        let code =
            |r: Result<PostMessageResponse, WebError>| r.unwrap_err().code().map(str::to_owned);
        assert_eq!(
            code(web.call(&post("C9", "hi", None)).await).as_deref(),
            Some("channel_not_found")
        );
        assert_eq!(
            code(web.call(&post("C1", " ", None)).await).as_deref(),
            Some("no_text")
        );
        assert_eq!(
            code(web.call(&post("C1", &"x".repeat(40_001), None)).await).as_deref(),
            Some("msg_too_long")
        );
        let mut many = post("C1", "blocks", None);
        many.blocks = Some(vec![Block::Divider {}; 51]);
        assert_eq!(
            code(web.call(&many).await).as_deref(),
            Some("invalid_blocks")
        );
        assert_eq!(
            web.call(&replies("1.000001", None, None))
                .await
                .unwrap_err()
                .code(),
            Some("thread_not_found")
        );

        fake.rate_limit("chat.postMessage", 1, 7);
        match web.call(&post("C1", "hi", None)).await {
            Err(WebError::RateLimited { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_secs(7));
            }
            other => panic!("expected a 429, got {other:?}"),
        }
        assert!(web.call(&post("C1", "hi", None)).await.is_ok());
        fake.fail("reactions.add", "missing_scope", 1);
        let react = ReactionsAdd {
            channel: "C1".into(),
            timestamp: parent.clone(),
            name: "eyes".into(),
        };
        assert_eq!(
            web.call(&react).await.unwrap_err().code(),
            Some("missing_scope")
        );
        web.call(&react).await.unwrap();
        assert_eq!(
            web.call(&react).await.unwrap_err().code(),
            Some("already_reacted")
        );
        assert_eq!(fake.reactions("C1", &parent), ["eyes"]);
        let calls = fake.calls_to("reactions.add");
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0]["name"], "eyes");
    }

    #[tokio::test]
    async fn streams_accumulate_stop_and_expire_and_files_are_shared() {
        let fake = FakeSlack::start().await;
        let web = client(&fake);
        let parent = web.call(&post("C1", "parent", None)).await.unwrap().ts;
        let mut start = StartStream {
            channel: "C1".into(),
            thread_ts: parent.clone(),
            markdown_text: Some("Hel".into()),
            ..StartStream::default()
        };
        assert_eq!(
            web.call(&start).await.unwrap_err().code(),
            Some("missing_recipient_user_id")
        );
        start.recipient_user_id = Some("U1".into());
        start.recipient_team_id = Some(TEAM_ID.into());
        let ts = web.call(&start).await.unwrap().ts;
        let append = |text: &str| AppendStream {
            channel: "C1".into(),
            ts: ts.clone(),
            markdown_text: text.into(),
        };
        web.call(&append("lo")).await.unwrap();
        let update = Update {
            channel: "C1".into(),
            ts: ts.clone(),
            text: "replaced".into(),
            blocks: None,
        };
        assert_eq!(
            web.call(&update).await.unwrap_err().code(),
            Some("streaming_state_conflict")
        );
        let stop = StopStream {
            channel: "C1".into(),
            ts: ts.clone(),
            markdown_text: Some(", world".into()),
            blocks: None,
        };
        web.call(&stop).await.unwrap();
        assert_eq!(fake.thread("C1", &parent)[1].text, "Hello, world");
        assert_eq!(
            web.call(&append("!")).await.unwrap_err().code(),
            Some("message_not_in_streaming_state")
        );

        fake.expire_streams_after(Duration::ZERO);
        let late = web.call(&start).await.unwrap().ts;
        let late_append = AppendStream {
            channel: "C1".into(),
            ts: late.clone(),
            markdown_text: "more".into(),
        };
        assert_eq!(
            web.call(&late_append).await.unwrap_err().code(),
            Some("message_not_in_streaming_state")
        );
        let mut rescue = update.clone();
        rescue.ts = late.clone();
        web.call(&rescue).await.unwrap();
        assert_eq!(fake.message("C1", &late).unwrap().text, "replaced");

        let upload = web
            .call(&GetUploadUrl {
                filename: "out.txt".into(),
                length: 5,
            })
            .await
            .unwrap();
        let complete = CompleteUpload {
            files: vec![UploadedFile {
                id: upload.file_id.clone(),
                title: Some("Output".into()),
            }],
            channel_id: "C1".into(),
            thread_ts: Some(parent.clone()),
            initial_comment: None,
        };
        assert_eq!(
            web.call(&complete).await.unwrap_err().code(),
            Some("file_not_found")
        );
        web.upload(&upload.upload_url, b"hello".to_vec())
            .await
            .unwrap();
        web.call(&complete).await.unwrap();
        let thread = fake.thread("C1", &parent);
        let shared = thread.last().unwrap();
        assert_eq!(shared.files[0].title.as_deref(), Some("Output"));
        assert_eq!(fake.file_bytes(&upload.file_id).unwrap(), b"hello");

        fake.disable_streaming();
        assert_eq!(
            web.call(&start).await.unwrap_err().code(),
            Some("unknown_method")
        );
    }

    /// A webhook receiver: answers each request with the next status (then 200), records the
    /// headers and bodies.
    async fn receiver(statuses: Vec<(u16, bool)>) -> (String, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
        let seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let script = Arc::new(Mutex::new(statuses.into_iter()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/api/webhooks/slack",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                let script = script.clone();
                async move {
                    record.lock().unwrap().push((headers, body));
                    let (status, no_retry) = script.lock().unwrap().next().unwrap_or((200, false));
                    let mut response = StatusCode::from_u16(status).unwrap().into_response();
                    if no_retry {
                        response
                            .headers_mut()
                            .insert("x-slack-no-retry", "1".parse().unwrap());
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn events_are_signed_and_retried_as_slack_retries_them() {
        let fake = FakeSlack::start().await;
        let (url, seen) = receiver(vec![(500, false)]).await;
        fake.deliver_to(&url);
        let ts = fake.post("U1", "C1", "<@U0BOT> hello", None).await;
        fake.wait_until(Duration::from_secs(5), |f| f.deliveries().len() == 3)
            .await;
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests.len(), 3);
        for (headers, body) in &requests {
            let timestamp: i64 = header_text(headers, "x-slack-request-timestamp")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                header_text(headers, "x-slack-signature"),
                Some(fake.sign(body, timestamp).as_str())
            );
        }
        let bodies: Vec<EventsRequest> = requests
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect();
        let ids: Vec<(String, &'static str)> = bodies
            .iter()
            .map(|b| match b {
                EventsRequest::EventCallback(cb) => (
                    cb.event_id.clone(),
                    match &cb.event {
                        Event::AppMention(m) => {
                            assert_eq!(m.ts, ts);
                            "app_mention"
                        }
                        Event::Message(m) => {
                            assert_eq!(m.channel_type.as_deref(), Some("channel"));
                            "message"
                        }
                        Event::Other => "other",
                    },
                ),
                other => panic!("not a callback: {other:?}"),
            })
            .collect();
        // The mention failed once and came again with the same id; the message event is its own.
        assert_eq!(ids[0].1, "app_mention");
        assert!(ids.iter().filter(|(id, _)| *id == ids[0].0).count() == 2);
        assert!(
            ids.iter()
                .any(|(id, kind)| *kind == "message" && *id != ids[0].0)
        );
        let retry = requests
            .iter()
            .find(|(h, _)| h.contains_key("x-slack-retry-num"))
            .unwrap();
        assert_eq!(header_text(&retry.0, "x-slack-retry-num"), Some("1"));
        assert_eq!(
            header_text(&retry.0, "x-slack-retry-reason"),
            Some("http_error")
        );
        let deliveries = fake.deliveries();
        let first = deliveries.iter().find(|d| d.status == 500).unwrap();
        assert_eq!((first.attempt, first.retry_reason.as_deref()), (0, None));
        assert!(deliveries.iter().any(|d| d.attempt == 1
            && d.status == 200
            && d.retry_reason.as_deref() == Some("http_error")));

        let (url, seen) = receiver(vec![(500, true)]).await;
        fake.deliver_to(&url);
        let callback = fake.event_callback(Event::Other);
        let last = fake.send_event(callback).await;
        assert_eq!((last.attempt, last.status), (0, 500));
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "X-Slack-No-Retry stops retries"
        );

        let clicked = fake
            .click("U2", "C1", &ts, "centaur_approve", "{\"thread_key\":\"x\"}")
            .await;
        assert_eq!(clicked.status, 200);
        let (headers, body) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            header_text(&headers, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let timestamp: i64 = header_text(&headers, "x-slack-request-timestamp")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            header_text(&headers, "x-slack-signature"),
            Some(fake.sign(&body, timestamp).as_str())
        );
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
        let Interaction::BlockActions(actions) = serde_json::from_str(&form[0].1).unwrap() else {
            panic!("not block_actions")
        };
        assert_eq!(actions.user.id, "U2");
        assert_eq!(actions.actions[0].action_id, "centaur_approve");
        assert_eq!(
            actions.container.unwrap().message_ts.as_deref(),
            Some(ts.as_str())
        );
    }

    #[tokio::test]
    async fn socket_mode_says_hello_redelivers_unacknowledged_envelopes_and_disconnects() {
        let fake = FakeSlack::start().await;
        fake.set_mode(SlackMode::Socket);
        fake.set_ack_deadline(Duration::from_millis(300));
        fake.set_disconnect_grace(Duration::from_millis(50));
        let web = client(&fake);
        // Queued while nobody is connected.
        fake.add_im("D1", "U1");
        let ts = fake.post("U1", "D1", "hi there", None).await;
        let url = web.call(&ConnectionsOpen {}).await.unwrap().url;
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let mut next = async || -> SocketFrame {
            loop {
                match socket.next().await.unwrap().unwrap() {
                    WsMessage::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                    WsMessage::Close(_) => panic!("closed"),
                    _ => {}
                }
            }
        };
        assert!(matches!(next().await, SocketFrame::Hello { .. }));
        let SocketFrame::EventsApi(first) = next().await else {
            panic!("not an event")
        };
        assert_eq!(first.retry_attempt, Some(0));
        let EventsRequest::EventCallback(callback) = &first.payload else {
            panic!("not a callback")
        };
        let Event::Message(message) = &callback.event else {
            panic!("not a message")
        };
        assert_eq!(
            (message.ts.as_str(), message.is_direct()),
            (ts.as_str(), true)
        );
        // Not acknowledged: it comes again.
        let SocketFrame::EventsApi(again) = next().await else {
            panic!("not an event")
        };
        assert_eq!(again.envelope_id, first.envelope_id);
        assert_eq!(
            (again.retry_attempt, again.retry_reason.as_deref()),
            (Some(1), Some("timeout"))
        );
        let ack = serde_json::to_string(&SocketAck {
            envelope_id: again.envelope_id.clone(),
            payload: None,
        })
        .unwrap();
        socket.send(WsMessage::text(ack)).await.unwrap();
        fake.wait_until(Duration::from_secs(5), |f| {
            f.unacknowledged_envelopes() == 0
        })
        .await;
        let deliveries = fake.deliveries();
        assert_eq!(
            deliveries
                .iter()
                .map(|d| (d.attempt, d.status))
                .collect::<Vec<_>>(),
            [(0, 0), (1, 200)]
        );
        assert_eq!(fake.socket_connections(), 1);
        fake.disconnect_all(DisconnectReason::RefreshRequested)
            .await;
        let mut next = async || -> Option<SocketFrame> {
            loop {
                match socket.next().await {
                    Some(Ok(WsMessage::Text(text))) => {
                        return Some(serde_json::from_str(text.as_str()).unwrap());
                    }
                    Some(Ok(WsMessage::Close(_)) | Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                }
            }
        };
        assert!(matches!(
            next().await,
            Some(SocketFrame::Disconnect {
                reason: DisconnectReason::RefreshRequested,
                ..
            })
        ));
        assert_eq!(next().await, None);
        fake.wait_until(Duration::from_secs(5), |f| f.socket_connections() == 0)
            .await;
    }
}
