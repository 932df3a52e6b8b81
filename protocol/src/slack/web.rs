//! The Web API methods the bridge calls. Each request type names its method and its response
//! ([`Method`]); the server's client and the tests' fake both go through these types. Requests
//! are sent as JSON (`application/json; charset=utf-8`, the token in the `Authorization`
//! header), except the methods marked [`Encoding::Form`].
//!
//! Every answer is HTTP 200 with `ok`; a failure is `{"ok":false,"error":"…"}` ([`Answer`]).
//! Rate limits are HTTP 429 with `Retry-After` (seconds) and `{"ok":false,"error":"ratelimited"}`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::blocks::Block;

/// How a method's arguments travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    /// `application/x-www-form-urlencoded` (methods that do not take JSON).
    Form,
}

/// A Web API method: its request type is `Self`.
pub trait Method: Serialize {
    /// `chat.postMessage`.
    const NAME: &'static str;
    const ENCODING: Encoding = Encoding::Json;
    /// Which token it needs.
    const TOKEN: TokenKind = TokenKind::Bot;
    type Response: DeserializeOwned + Serialize;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// `xoxb-…`
    Bot,
    /// `xapp-…` (Socket Mode's `apps.connections.open`).
    App,
}

/// Every answer: `ok`, and on failure `error` (`needed`/`provided` for scope errors); on success
/// the method's own fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer<T> {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provided: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Present when `ok`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub value: Option<T>,
}

impl<T> Answer<T> {
    pub fn ok(value: T) -> Self {
        Answer {
            ok: true,
            error: None,
            needed: None,
            provided: None,
            warning: None,
            value: Some(value),
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Answer {
            ok: false,
            error: Some(error.into()),
            needed: None,
            provided: None,
            warning: None,
            value: None,
        }
    }
}

/// A method whose success carries nothing the bridge reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// Cursor paging: the next page's `cursor`, empty on the last page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseMetadata {
    #[serde(default)]
    pub next_cursor: String,
}

/// `metadata` on a message: the bridge tags its own posts with `centaur_delivery` so a restart
/// can tell whether a post it was making had landed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageMetadata {
    pub event_type: String,
    #[serde(default)]
    pub event_payload: Value,
}

/// A file shared in a message (the parts the bridge reads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlackFile {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// A message as `conversations.replies` returns it (the parts the bridge reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<String>,
    /// The author's workspace (`T…`), which differs from the channel's in a shared channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default)]
    pub text: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<SlackFile>,
}

// ---- auth, Socket Mode ----

/// `auth.test`: who the bot token belongs to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthTest {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthTestResponse {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    pub team_id: String,
    /// The bot's user (`U…`): mentions of it are `<@U…>`.
    pub user_id: String,
    /// The bot (`B…`): its own messages carry it.
    #[serde(default)]
    pub bot_id: Option<String>,
}

impl Method for AuthTest {
    const NAME: &'static str = "auth.test";
    type Response = AuthTestResponse;
}

/// `apps.connections.open` (app-level token): a WebSocket URL for one Socket Mode connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionsOpen {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionsOpenResponse {
    pub url: String,
}

impl Method for ConnectionsOpen {
    const NAME: &'static str = "apps.connections.open";
    const TOKEN: TokenKind = TokenKind::App;
    type Response = ConnectionsOpenResponse;
}

// ---- chat ----

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PostMessage {
    pub channel: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<Block>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfurl_links: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostMessageResponse {
    pub channel: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
}

impl Method for PostMessage {
    const NAME: &'static str = "chat.postMessage";
    type Response = PostMessageResponse;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub channel: String,
    pub ts: String,
    pub text: String,
    /// `Some(vec![])` removes the blocks (the buttons of a decided approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<Block>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateResponse {
    pub channel: String,
    pub ts: String,
}

impl Method for Update {
    const NAME: &'static str = "chat.update";
    type Response = UpdateResponse;
}

/// `chat.startStream`: a message in `thread_ts` that later calls append to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StartStream {
    pub channel: String,
    pub thread_ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown_text: Option<String>,
    /// Required outside direct messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_team_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamResponse {
    pub channel: String,
    pub ts: String,
}

impl Method for StartStream {
    const NAME: &'static str = "chat.startStream";
    type Response = StreamResponse;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppendStream {
    pub channel: String,
    pub ts: String,
    pub markdown_text: String,
}

impl Method for AppendStream {
    const NAME: &'static str = "chat.appendStream";
    type Response = StreamResponse;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StopStream {
    pub channel: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<Block>>,
}

impl Method for StopStream {
    const NAME: &'static str = "chat.stopStream";
    type Response = StreamResponse;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetPermalink {
    pub channel: String,
    pub message_ts: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetPermalinkResponse {
    pub channel: String,
    pub permalink: String,
}

impl Method for GetPermalink {
    const NAME: &'static str = "chat.getPermalink";
    const ENCODING: Encoding = Encoding::Form;
    type Response = GetPermalinkResponse;
}

// ---- assistant, reactions ----

/// `assistant.threads.setStatus`: "is running `cargo test`…" under the thread; `""` clears it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetStatus {
    pub channel_id: String,
    pub thread_ts: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loading_messages: Option<Vec<String>>,
}

impl Method for SetStatus {
    const NAME: &'static str = "assistant.threads.setStatus";
    type Response = Empty;
}

/// `reactions.add` (`name` without colons); `already_reacted` when it is there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReactionsAdd {
    pub channel: String,
    pub timestamp: String,
    pub name: String,
}

impl Method for ReactionsAdd {
    const NAME: &'static str = "reactions.add";
    type Response = Empty;
}

/// `reactions.remove`; `no_reaction` when it is not there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReactionsRemove {
    pub channel: String,
    pub timestamp: String,
    pub name: String,
}

impl Method for ReactionsRemove {
    const NAME: &'static str = "reactions.remove";
    type Response = Empty;
}

// ---- conversations, users ----

/// `conversations.replies`: a thread's messages, parent first, paged by `cursor`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationsReplies {
    pub channel: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Return `metadata` on messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_all_metadata: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationsRepliesResponse {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_metadata: Option<ResponseMetadata>,
}

impl Method for ConversationsReplies {
    const NAME: &'static str = "conversations.replies";
    const ENCODING: Encoding = Encoding::Form;
    type Response = ConversationsRepliesResponse;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationsInfo {
    pub channel: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationsInfoResponse {
    pub channel: Channel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub is_im: bool,
    #[serde(default)]
    pub is_private: bool,
}

impl Method for ConversationsInfo {
    const NAME: &'static str = "conversations.info";
    const ENCODING: Encoding = Encoding::Form;
    type Response = ConversationsInfoResponse;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsersInfo {
    pub user: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsersInfoResponse {
    pub user: User,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    /// The handle.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub real_name: Option<String>,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub profile: Option<Profile>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub real_name: Option<String>,
}

impl User {
    /// The display name, else the real name, else the handle.
    pub fn display_name(&self) -> Option<&str> {
        let profile = self.profile.as_ref();
        [
            profile.and_then(|p| p.display_name.as_deref()),
            profile.and_then(|p| p.real_name.as_deref()),
            self.real_name.as_deref(),
            self.name.as_deref(),
        ]
        .into_iter()
        .flatten()
        .find(|n| !n.trim().is_empty())
    }
}

impl Method for UsersInfo {
    const NAME: &'static str = "users.info";
    const ENCODING: Encoding = Encoding::Form;
    type Response = UsersInfoResponse;
}

// ---- files ----

/// `files.getUploadURLExternal` (form): where to POST a file's bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetUploadUrl {
    pub filename: String,
    pub length: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetUploadUrlResponse {
    pub upload_url: String,
    pub file_id: String,
}

impl Method for GetUploadUrl {
    const NAME: &'static str = "files.getUploadURLExternal";
    const ENCODING: Encoding = Encoding::Form;
    type Response = GetUploadUrlResponse;
}

/// `files.completeUploadExternal`: shares uploaded files in a thread.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompleteUpload {
    pub files: Vec<UploadedFile>,
    pub channel_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_comment: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadedFile {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompleteUploadResponse {
    pub files: Vec<SlackFile>,
}

impl Method for CompleteUpload {
    const NAME: &'static str = "files.completeUploadExternal";
    type Response = CompleteUploadResponse;
}

/// Error codes the bridge acts on (the rest are reported as they come).
pub mod errors {
    pub const RATELIMITED: &str = "ratelimited";
    pub const INVALID_AUTH: &str = "invalid_auth";
    pub const NOT_AUTHED: &str = "not_authed";
    pub const ACCOUNT_INACTIVE: &str = "account_inactive";
    pub const TOKEN_REVOKED: &str = "token_revoked";
    pub const MISSING_SCOPE: &str = "missing_scope";
    pub const NOT_IN_CHANNEL: &str = "not_in_channel";
    pub const CHANNEL_NOT_FOUND: &str = "channel_not_found";
    pub const ALREADY_REACTED: &str = "already_reacted";
    pub const NO_REACTION: &str = "no_reaction";
    pub const MESSAGE_NOT_IN_STREAMING_STATE: &str = "message_not_in_streaming_state";
    pub const MISSING_RECIPIENT_USER_ID: &str = "missing_recipient_user_id";
    pub const UNKNOWN_METHOD: &str = "unknown_method";
    pub const NOT_ALLOWED_TOKEN_TYPE: &str = "not_allowed_token_type";
    pub const MSG_TOO_LONG: &str = "msg_too_long";
    pub const MSG_BLOCKS_TOO_LONG: &str = "msg_blocks_too_long";
    pub const CANT_UPDATE_MESSAGE: &str = "cant_update_message";
    pub const STREAMING_STATE_CONFLICT: &str = "streaming_state_conflict";
    pub const MESSAGE_NOT_FOUND: &str = "message_not_found";
    pub const THREAD_NOT_FOUND: &str = "thread_not_found";
    pub const USER_NOT_FOUND: &str = "user_not_found";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_the_method_fields_or_the_error() {
        let ok: Answer<PostMessageResponse> = serde_json::from_str(
            r#"{"ok":true,"channel":"C1","ts":"1.2","message":{"text":"hi","ts":"1.2"}}"#,
        )
        .unwrap();
        assert_eq!(ok.value.unwrap().ts, "1.2");
        let bad: Answer<PostMessageResponse> =
            serde_json::from_str(r#"{"ok":false,"error":"not_in_channel"}"#).unwrap();
        assert_eq!(bad.error.as_deref(), Some("not_in_channel"));
        assert!(bad.value.is_none());
        let scope: Answer<Empty> = serde_json::from_str(
            r#"{"ok":false,"error":"missing_scope","needed":"reactions:write","provided":"chat:write"}"#,
        )
        .unwrap();
        assert_eq!(scope.needed.as_deref(), Some("reactions:write"));
    }

    #[test]
    fn display_names_fall_back_to_the_real_name_then_the_handle() {
        let user: User = serde_json::from_str(
            r#"{"id":"U1","name":"ann","real_name":"Ann Lee","profile":{"display_name":"","real_name":"Ann Lee"}}"#,
        )
        .unwrap();
        assert_eq!(user.display_name(), Some("Ann Lee"));
    }
}
