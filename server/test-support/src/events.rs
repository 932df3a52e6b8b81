//! A thread's event stream read frame by frame (Server-Sent Events over real HTTP), and what
//! its events say: the end of a turn, the newest id, a completed turn's text.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

/// One parsed Server-Sent Event.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// Reads an SSE response frame by frame.
pub struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    pub comments: usize,
    pub ended: bool,
}

impl SseReader {
    pub async fn open(
        http: &reqwest::Client,
        url: &str,
        token: &str,
        last_event_id: Option<i64>,
    ) -> SseReader {
        let mut request = http.get(url).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            response.text().await.unwrap_or_default()
        );
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            comments: 0,
            ended: false,
        }
    }

    /// The next event, or `None` if the stream ended or `timeout` passed.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                if let Some(frame) = self.parse(&block) {
                    return Some(frame);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => panic!("stream error: {e}"),
                Ok(Some(Ok(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
            }
        }
    }

    fn parse(&mut self, block: &str) -> Option<Frame> {
        let (mut id, mut event, mut data) = (None, None, None);
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).unwrap());
            }
        }
        Some(Frame {
            id: id?,
            event: event?,
            data: data?,
        })
    }

    /// Reads frames until one with id `last_id` (inclusive); panics after `timeout`.
    pub async fn until_id(&mut self, last_id: i64, timeout: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        while frames.last().is_none_or(|f: &Frame| f.id < last_id) {
            match self.next(timeout).await {
                Some(frame) => frames.push(frame),
                None => panic!(
                    "stream stopped before event {last_id}; got {:?}",
                    frames.iter().map(|f| f.id).collect::<Vec<_>>()
                ),
            }
        }
        frames
    }

    /// Reads until the stream ends; panics after `timeout`.
    pub async fn read_to_end(&mut self, timeout: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(frame) => frames.push(frame),
                None if self.ended => return frames,
                None => panic!("stream did not end within {timeout:?}"),
            }
        }
    }
}

/// Whether `e` ends its execution (completed, failed or cancelled).
pub fn is_terminal(e: &Value) -> bool {
    matches!(
        e["type"].as_str(),
        Some("execution.completed" | "execution.failed" | "execution.cancelled")
    )
}

/// The id of the last of `events`.
pub fn last_id(events: &[Value]) -> i64 {
    events.last().unwrap()["event_id"].as_i64().unwrap()
}

/// The result text of a completed turn; fails the test on any other event.
pub fn result_text(event: &Value) -> &str {
    assert_eq!(event["type"], "execution.completed", "{event}");
    event["result_text"].as_str().unwrap()
}

/// The `key=value` lines of `text` (what the sandbox probes print), by key.
pub fn lines(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
