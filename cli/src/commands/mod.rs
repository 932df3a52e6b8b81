//! What each `centaur` command does, one module per command (the dev commands are
//! `centaur_cli::dev`'s):
//!
//! - [`send`]: one turn from a script.
//! - [`attach`]: following a thread as lines or JSON.
//! - [`threads`]: the thread list as a table.
//! - [`approve`]: deciding an approval.
//! - [`interrupt`]: stopping a thread's turn (and its queue).
//! - [`tools`]: the server's tools: listing, showing and calling them.
//! - [`tui`]: opening the terminal interface, and what is said when it closes.
//! - [`manual`]: shell completions and the man page, from the command line's definition.
//!
//! Every command that names an existing thread takes its key or a Slack message link
//! ([`resolve_thread`]); `send` also takes a new key (a link names a thread that exists).

pub mod approve;
pub mod attach;
pub mod interrupt;
pub mod manual;
pub mod send;
pub mod threads;
pub mod tools;
pub mod tui;

use centaur_client::Client;
use centaur_protocol::slack::link::SlackLink;
use centaur_protocol::{ErrorCode, ThreadKey};

use crate::error::CliError;

/// A thread key from the command line.
pub fn parse_key(raw: &str) -> Result<ThreadKey, CliError> {
    ThreadKey::parse(raw).map_err(|source| CliError::BadThreadKey {
        raw: raw.to_owned(),
        source,
    })
}

/// A thread named on the command line: a thread key as it is, or a Slack message link
/// (`https://<team>.slack.com/archives/<channel>/p<ts>[?thread_ts=…]`) resolved to the Centaur
/// thread holding that message: the link's own thread (its `thread_ts`, else the message, which
/// starts its thread when it is top-level), else the thread the server knows the message to be
/// a reply in. A link that names no thread of Centaur's is [`CliError::SlackLinkMatchesNothing`].
pub async fn resolve_thread(client: &Client, raw: &str) -> Result<ThreadKey, CliError> {
    if !SlackLink::looks_like_link(raw) {
        return parse_key(raw);
    }
    let link = SlackLink::parse(raw).map_err(|source| CliError::BadSlackLink {
        raw: raw.to_owned(),
        source,
    })?;
    let key = link.thread_key();
    match client.thread(&key).await {
        Ok(_) => return Ok(key),
        Err(failure) if failure.is_api(ErrorCode::ThreadNotFound) => {}
        Err(failure) => return Err(failure.into()),
    }
    let nothing = || CliError::SlackLinkMatchesNothing {
        channel_id: link.channel_id.clone(),
        message_ts: link.message_ts.clone(),
    };
    // A top-level message or a link with its thread_ts named the thread itself: nothing else
    // to ask. A reply copied without thread_ts names only the reply: the server knows which
    // thread holds it.
    if link.thread_ts.is_some() {
        return Err(nothing());
    }
    match client
        .slack_message_thread(&link.channel_id, &link.message_ts)
        .await
    {
        Ok(summary) => Ok(summary.thread_key),
        Err(failure)
            if failure.is_api(ErrorCode::ThreadNotFound)
                || failure.is_api(ErrorCode::SlackNotConfigured) =>
        {
            Err(nothing())
        }
        Err(failure) => Err(failure.into()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that knows threads by path: `GET <path>` answers `known`'s body with 200, any
    /// other path 404 `thread_not_found`. Returns the client and the paths asked, in order.
    async fn server_knowing(
        known: Vec<(String, String)>,
    ) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                let request = String::from_utf8_lossy(&request);
                let path = request.split(' ').nth(1).unwrap().to_owned();
                seen.lock().unwrap().push(path.clone());
                let (status, body) = match known.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => (
                        "404 Not Found",
                        r#"{"error":{"code":"thread_not_found","message":"no such thread"}}"#
                            .to_owned(),
                    ),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (Client::new(url, "token".into()), asked)
    }

    fn summary(key: &str) -> String {
        serde_json::json!({
            "thread_key": key, "platform": "slack", "harness": "echo", "persona": null,
            "status": "idle", "created_at": "2026-11-22T00:00:00Z",
            "last_activity_at": "2026-11-22T00:00:00Z", "last_event_id": 1,
            "sandbox": null, "last_execution": null
        })
        .to_string()
    }

    fn thread_summary(key: &str) -> String {
        serde_json::json!({
            "thread_key": key, "platform": "slack", "harness": "echo", "persona": null,
            "status": "idle", "created_at": "2026-11-22T00:00:00Z",
            "last_activity_at": "2026-11-22T00:00:00Z", "last_event_id": 1
        })
        .to_string()
    }

    const TOP: &str = "https://acme.slack.com/archives/C1/p1700000000000100";
    const REPLY_WITH_THREAD: &str =
        "https://acme.slack.com/archives/C1/p1700000000000200?thread_ts=1700000000.000100&cid=C1";
    const REPLY_ALONE: &str = "https://acme.slack.com/archives/C1/p1700000000000200";

    #[tokio::test]
    async fn a_link_names_its_own_thread_when_centaur_has_it() {
        let thread = "/agent/threads/slack:C1:1700000000.000100".to_owned();
        let (client, asked) = server_knowing(vec![(
            thread.clone(),
            summary("slack:C1:1700000000.000100"),
        )])
        .await;
        for link in [TOP, REPLY_WITH_THREAD] {
            let key = resolve_thread(&client, link).await.unwrap();
            assert_eq!(key.as_str(), "slack:C1:1700000000.000100", "{link}");
        }
        // Neither needed the server's message lookup.
        assert!(asked.lock().unwrap().iter().all(|p| *p == thread));
    }

    #[tokio::test]
    async fn a_reply_link_without_its_thread_asks_the_server_which_thread_holds_it() {
        let lookup = "/agent/slack/messages/C1/1700000000.000200".to_owned();
        let (client, asked) = server_knowing(vec![(
            lookup.clone(),
            thread_summary("slack:C1:1700000000.000100"),
        )])
        .await;
        let key = resolve_thread(&client, REPLY_ALONE).await.unwrap();
        assert_eq!(key.as_str(), "slack:C1:1700000000.000100");
        assert_eq!(asked.lock().unwrap().last(), Some(&lookup));
    }

    #[tokio::test]
    async fn a_link_to_nothing_names_the_channel_and_message_and_fails_with_1() {
        let (client, _) = server_knowing(Vec::new()).await;
        for link in [TOP, REPLY_WITH_THREAD, REPLY_ALONE] {
            let error = resolve_thread(&client, link).await.unwrap_err();
            assert_eq!(error.exit_code(), 1, "{link}");
            let said = error.to_string();
            assert!(said.contains("C1"), "{said}");
            assert!(
                said.contains(if link == TOP {
                    "1700000000.000100"
                } else {
                    "1700000000.000200"
                }),
                "{said}"
            );
        }
    }

    #[tokio::test]
    async fn a_malformed_link_is_a_usage_error_and_asks_nothing() {
        let (client, asked) = server_knowing(Vec::new()).await;
        for bad in [
            "https://acme.slack.com/archives/C1/pxyz",
            "https://example.com/archives/C1/p1700000000000100",
            "https://acme.slack.com/archives/C1/p1700000000000100?thread_ts=soon",
        ] {
            let error = resolve_thread(&client, bad).await.unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad}");
            assert!(matches!(error, CliError::BadSlackLink { .. }), "{bad}");
        }
        assert!(asked.lock().unwrap().is_empty());
        // A thread key is still a key.
        let key = resolve_thread(&client, "slack:C1:1700000000.000100")
            .await
            .unwrap();
        assert_eq!(key.as_str(), "slack:C1:1700000000.000100");
    }
}
