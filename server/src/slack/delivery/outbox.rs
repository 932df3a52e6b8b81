//! The Slack side of delivery: calls retried through `429 Retry-After` and transient failures
//! (while the lease is held), and posts that are not idempotent made exactly once.
//!
//! A post (`chat.postMessage`, a file share) is preceded by its intent, committed with the
//! state; the post carries `metadata {event_type: "centaur_delivery", event_payload:
//! {thread_key, key}}` (a file: a unique title). A follower that finds an intent without its
//! result (the server died mid-post) looks for the post in `conversations.replies` before
//! posting again; so does a post tried again after a failure that may have reached Slack (a
//! timeout, a 5xx, a connection lost after sending; not a 429 or a refused connection): from
//! then on, before every later attempt, twice, each after a pause (longer for a file share).
//! When Slack refuses to show the thread (a missing `channels:history` scope, say), the post is
//! not made again blindly: the intent is kept and the thread's delivery halts
//! ([`Halt::SearchRefused`], logged with its fix) until the search can be made.
//! `chat.update`, reactions and `assistant.threads.setStatus` are idempotent and are simply
//! repeated.

use std::time::Duration;

use centaur_protocol::slack::web::{
    CompleteUpload, ConversationsReplies, GetUploadUrl, MessageMetadata, Method, PostMessage,
    UploadedFile, errors,
};
use serde_json::json;

use super::Halt;
use super::follower::Follower;
use crate::slack::web::WebError;

/// The `event_type` of the metadata on the bridge's own posts.
pub const METADATA_TYPE: &str = "centaur_delivery";
/// A transient failure is tried again after this, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Pages of `conversations.replies` read when looking for a post.
const REPLIES_PAGE: u32 = 200;
const MAX_REPLIES_PAGES: usize = 50;
/// After a post's answer was lost, the thread is searched this many times before posting
/// again, each after a pause of [`SEARCH_AFTER`] (a message) or [`FILE_SEARCH_AFTER`] (a file
/// share, which Slack shows asynchronously).
const SEARCHES: usize = 2;
const SEARCH_AFTER: Duration = Duration::from_secs(2);
const FILE_SEARCH_AFTER: Duration = Duration::from_secs(5);

impl Follower<'_> {
    /// Sleeps for `duration`, unless the server shuts down or the lease is lost first.
    pub(super) async fn pause(&self, duration: Duration) -> Result<(), Halt> {
        tokio::select! {
            _ = self.state.shutdown.cancelled() => Err(Halt::Shutdown),
            _ = self.lease.lost.cancelled() => Err(Halt::LeaseLost),
            _ = tokio::time::sleep(duration) => Ok(()),
        }
    }

    /// `request` until Slack answers it: rate limits are waited out (`Retry-After`), transient
    /// failures tried again with backoff. Slack's refusals are returned.
    pub(super) async fn call<M: Method>(
        &self,
        request: &M,
    ) -> Result<Result<M::Response, WebError>, Halt> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.slack.web.call(request).await {
                Err(WebError::RateLimited { retry_after, .. }) => {
                    tracing::debug!(method = M::NAME, ?retry_after, "Slack rate limit; waiting");
                    self.pause(retry_after).await?;
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(method = M::NAME, %error, ?backoff, "Slack call failed; retrying");
                    self.pause(backoff).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                answer => return Ok(answer),
            }
        }
    }

    /// `request`, a post made under `key` (a file: titled `file_title`), until Slack answers it:
    /// like [`Follower::call`], but once an attempt failed in a way that may have reached Slack,
    /// every later attempt is preceded by a search of the thread for the post (a post cut off
    /// by the timeout may land after the first search).
    async fn call_posting<M: Method>(
        &self,
        request: &M,
        key: &str,
        file_title: Option<&str>,
    ) -> Result<Result<Posted<M::Response>, WebError>, Halt> {
        let mut backoff = FIRST_BACKOFF;
        let mut may_have_posted = false;
        loop {
            if may_have_posted && let Some(ts) = self.look_for_lost(key, file_title).await? {
                tracing::info!(
                    thread_key = %self.place.thread_key, key,
                    "Slack delivery: a post whose answer was lost had landed; not posting it again"
                );
                return Ok(Ok(Posted::Found(ts)));
            }
            match self.slack.web.call(request).await {
                Err(WebError::RateLimited { retry_after, .. }) => {
                    tracing::debug!(method = M::NAME, ?retry_after, "Slack rate limit; waiting");
                    self.pause(retry_after).await?;
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(method = M::NAME, %error, ?backoff, "Slack post failed; retrying");
                    may_have_posted |= may_have_landed(&error);
                    self.pause(backoff).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                answer => return Ok(answer.map(Posted::Answered)),
            }
        }
    }

    /// Looks for a post that may have landed: twice, each after a pause (a message shows in
    /// `conversations.replies` within moments; a file share later, as Slack processes it).
    async fn look_for_lost(
        &self,
        key: &str,
        file_title: Option<&str>,
    ) -> Result<Option<String>, Halt> {
        let wait = if file_title.is_some() {
            FILE_SEARCH_AFTER
        } else {
            SEARCH_AFTER
        };
        for _ in 0..SEARCHES {
            self.pause(wait).await?;
            if let Some(ts) = self.find_in_thread(key, file_title).await? {
                return Ok(Some(ts));
            }
        }
        Ok(None)
    }

    fn metadata(&self, key: &str) -> MessageMetadata {
        MessageMetadata {
            event_type: METADATA_TYPE.into(),
            event_payload: json!({"thread_key": self.place.thread_key.as_str(), "key": key}),
        }
    }

    /// Posts `request` in the thread once, under `key`: the message's `ts`, or `None` when Slack
    /// refused it for good (reported).
    pub(super) async fn post_once(
        &mut self,
        key: &str,
        mut request: PostMessage,
    ) -> Result<Option<String>, Halt> {
        if let Some(found) = self.earlier_post(key, None).await? {
            return Ok(Some(found));
        }
        self.delivery.posts.insert(key.to_owned(), None);
        self.save().await?;
        request.channel = self.place.channel_id.clone();
        request.thread_ts = Some(self.place.thread_ts.clone());
        request.metadata = Some(self.metadata(key));
        request.unfurl_links = Some(false);
        match self.call_posting(&request, key, None).await? {
            Ok(posted) => {
                let ts = match posted {
                    Posted::Answered(posted) => posted.ts,
                    Posted::Found(ts) => ts,
                };
                self.delivery.posts.insert(key.to_owned(), Some(ts.clone()));
                self.dirty = true;
                Ok(Some(ts))
            }
            Err(error) => {
                self.report(&error, "post a message");
                self.delivery.posts.remove(key);
                self.dirty = true;
                Ok(None)
            }
        }
    }

    /// Shares `bytes` as a file titled `title` (unique: it is the post's key) in the thread
    /// once, with `comment` as its message. `None` when Slack refused it (reported).
    pub(super) async fn upload_once(
        &mut self,
        title: &str,
        filename: &str,
        bytes: Vec<u8>,
        comment: String,
    ) -> Result<Option<String>, Halt> {
        if let Some(found) = self.earlier_post(title, Some(title)).await? {
            return Ok(Some(found));
        }
        self.delivery.posts.insert(title.to_owned(), None);
        self.save().await?;
        let shared = self.upload(title, filename, bytes, comment).await?;
        match shared {
            Ok(file_id) => {
                self.delivery
                    .posts
                    .insert(title.to_owned(), Some(file_id.clone()));
                self.dirty = true;
                Ok(Some(file_id))
            }
            Err(error) => {
                self.report(&error, "attach a file");
                self.delivery.posts.remove(title);
                self.dirty = true;
                Ok(None)
            }
        }
    }

    async fn upload(
        &self,
        title: &str,
        filename: &str,
        bytes: Vec<u8>,
        comment: String,
    ) -> Result<Result<String, WebError>, Halt> {
        let target = match self
            .call(&GetUploadUrl {
                filename: filename.to_owned(),
                length: bytes.len() as u64,
            })
            .await?
        {
            Ok(target) => target,
            Err(error) => return Ok(Err(error)),
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self
                .slack
                .web
                .upload(&target.upload_url, bytes.clone())
                .await
            {
                Ok(()) => break,
                Err(error) if error.is_transient() => {
                    self.pause(backoff).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => return Ok(Err(error)),
            }
        }
        let complete = CompleteUpload {
            files: vec![UploadedFile {
                id: target.file_id.clone(),
                title: Some(title.to_owned()),
            }],
            channel_id: self.place.channel_id.clone(),
            thread_ts: Some(self.place.thread_ts.clone()),
            initial_comment: Some(comment),
        };
        // A share that landed (its answer lost) is found by its title: its file id is the one
        // just uploaded.
        Ok(self
            .call_posting(&complete, title, Some(title))
            .await?
            .map(|_| target.file_id))
    }

    /// A post made earlier under `key`: recorded, or (for an intent without a result) found in
    /// the thread by its metadata or, for a file, its title.
    async fn earlier_post(
        &mut self,
        key: &str,
        file_title: Option<&str>,
    ) -> Result<Option<String>, Halt> {
        match self.delivery.posts.get(key) {
            Some(Some(ts)) => Ok(Some(ts.clone())),
            Some(None) => {
                let found = self.find_in_thread(key, file_title).await?;
                if let Some(ts) = &found {
                    tracing::info!(
                        thread_key = %self.place.thread_key, key,
                        "Slack delivery: a post interrupted by a restart had landed; not posting it again"
                    );
                    self.delivery.posts.insert(key.to_owned(), Some(ts.clone()));
                    self.dirty = true;
                }
                Ok(found)
            }
            None => Ok(None),
        }
    }

    async fn find_in_thread(
        &self,
        key: &str,
        file_title: Option<&str>,
    ) -> Result<Option<String>, Halt> {
        let mut cursor = None;
        for _ in 0..MAX_REPLIES_PAGES {
            let request = ConversationsReplies {
                channel: self.place.channel_id.clone(),
                ts: self.place.thread_ts.clone(),
                cursor: cursor.clone(),
                limit: Some(REPLIES_PAGE),
                include_all_metadata: Some(true),
            };
            let page = match self.call(&request).await? {
                Ok(page) => page,
                Err(error) => {
                    // Not knowing whether it landed, it is not posted again (that could double
                    // an answer): the intent is kept and the thread halted until Slack shows it.
                    let fix = known_fix(&error)
                        .unwrap_or_else(|| "it is tried again in a few seconds".into());
                    tracing::warn!(
                        thread_key = %self.place.thread_key,
                        channel = %self.place.channel_id,
                        key, %error,
                        "Slack delivery cannot read the thread to look for a post that may have \
                         landed; not posting it again until it can; {fix}"
                    );
                    return Err(Halt::SearchRefused {
                        key: key.to_owned(),
                        error,
                    });
                }
            };
            for message in &page.messages {
                let tagged = message.metadata.as_ref().is_some_and(|m| {
                    m.event_type == METADATA_TYPE
                        && m.event_payload["key"] == key
                        && m.event_payload["thread_key"] == self.place.thread_key.as_str()
                });
                let filed = file_title.is_some_and(|title| {
                    message
                        .files
                        .iter()
                        .any(|f| f.title.as_deref() == Some(title))
                });
                if tagged || filed {
                    return Ok(Some(message.ts.clone()));
                }
            }
            match page.response_metadata.map(|m| m.next_cursor) {
                Some(next) if !next.is_empty() => cursor = Some(next),
                Some(_) | None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Logs a refusal from Slack with what fixes it; delivery goes on without that effect.
    pub(super) fn report(&self, error: &WebError, doing: &str) {
        let fix = fix_for(error);
        tracing::warn!(
            thread_key = %self.place.thread_key,
            channel = %self.place.channel_id,
            %error,
            "Slack delivery could not {doing}; {fix}"
        );
    }
}

/// How a post went: Slack's answer, or (the answer lost) the post found in the thread.
enum Posted<R> {
    Answered(R),
    Found(String),
}

/// A failure after which the request may have been carried out by Slack: a timeout, a 5xx, a
/// connection lost after the request was sent. A 429 was refused, and a connection that could
/// not be made carried nothing.
fn may_have_landed(error: &WebError) -> bool {
    match error {
        WebError::Status { status, .. } => *status >= 500,
        WebError::Transport { source, .. } => !source.is_connect(),
        WebError::RateLimited { .. }
        | WebError::Api { .. }
        | WebError::Decode { .. }
        | WebError::NoAppToken { .. } => false,
    }
}

/// What a person can do about a refusal.
pub fn fix_for(error: &WebError) -> String {
    known_fix(error).unwrap_or_else(|| "skipping it".into())
}

/// What a person can do about a refusal, where something can be done.
fn known_fix(error: &WebError) -> Option<String> {
    if error.is_auth() {
        return Some(
            "SLACK_BOT_TOKEN is no longer valid: set a current bot token and restart the server"
                .into(),
        );
    }
    match (error.code(), error) {
        (Some(errors::NOT_IN_CHANNEL), _) => {
            Some("invite the bot to the channel (/invite @<bot>) and mention it again".into())
        }
        (Some(errors::CHANNEL_NOT_FOUND), _) => Some(
            "the channel is gone or the bot cannot see it (a private channel needs the bot invited)"
                .into(),
        ),
        (Some(errors::MISSING_SCOPE), WebError::Api { needed, .. }) => Some(format!(
            "add the scope {} to the Slack app (manifests/slack-app.yaml) and reinstall it",
            needed.as_deref().unwrap_or("it needs")
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_fix() {
        let api = |error: &str, needed: Option<&str>| WebError::Api {
            method: "chat.postMessage",
            error: error.into(),
            needed: needed.map(Into::into),
        };
        assert!(fix_for(&api("not_in_channel", None)).contains("/invite"));
        assert!(fix_for(&api("invalid_auth", None)).contains("SLACK_BOT_TOKEN"));
        assert!(fix_for(&api("missing_scope", Some("files:write"))).contains("files:write"));
        assert!(fix_for(&api("channel_not_found", None)).contains("channel"));
    }

    #[test]
    fn a_5xx_may_have_posted_and_a_429_did_not() {
        let status = |status| WebError::Status {
            method: "chat.postMessage",
            status,
        };
        assert!(may_have_landed(&status(500)));
        assert!(may_have_landed(&status(503)));
        assert!(!may_have_landed(&WebError::RateLimited {
            method: "chat.postMessage",
            retry_after: Duration::from_secs(1),
        }));
        assert!(!may_have_landed(&WebError::Api {
            method: "chat.postMessage",
            error: "not_in_channel".into(),
            needed: None,
        }));
    }

    #[tokio::test]
    async fn a_refused_connection_did_not_post() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let source = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/chat.postMessage"))
            .send()
            .await
            .expect_err("nothing listens");
        assert!(!may_have_landed(&WebError::Transport {
            method: "chat.postMessage",
            source,
        }));
    }
}
