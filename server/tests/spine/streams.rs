//! Event streams and slow readers: the caps on open streams, and what one stream may hold
//! (bounded chunks, bounded pages, no live backlog), seen from a raw HTTP/1.1 connection so the
//! size of every chunk the server writes is visible.

use std::time::Duration;

use centaur_server::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use centaur_test_support::pg::fresh_database;
use centaur_test_support::server::{ADMIN_KEY, TestServer, enc, error_code};

const WAIT: Duration = Duration::from_secs(30);
/// The most bytes the server puts in one chunk (`CHUNK_BYTES` in `sse.rs`, documented in
/// docs/api.md); a single larger event goes alone, and the events here are far smaller.
const MAX_CHUNK: usize = 64 * 1024;

/// `count` deltas of about `size` bytes of text each.
fn deltas(count: usize, size: usize, tag: &str) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"type": "agent.message.delta", "text": format!("{tag}{i}:{}", "x".repeat(size))}))
        .collect()
}

/// An event stream read from a bare socket, chunk by chunk.
struct RawStream {
    socket: TcpStream,
    buffer: Vec<u8>,
    body: Vec<u8>,
    chunk_sizes: Vec<usize>,
}

impl RawStream {
    /// Sends the request and reads the head (200, chunked). `small_buffer` shrinks the socket's
    /// receive buffer, so a reader that stops reading pushes back on the server quickly.
    async fn open(server: &TestServer, key: &str, query: &str, small_buffer: bool) -> RawStream {
        let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        if small_buffer {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        let mut socket = socket.connect(addr).await.unwrap();
        let request = format!(
            "GET /agent/threads/{}/events?{query} HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {ADMIN_KEY}\r\n\r\n",
            enc(key)
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut stream = RawStream {
            socket,
            buffer: Vec::new(),
            body: Vec::new(),
            chunk_sizes: Vec::new(),
        };
        let head = stream.read_until(b"\r\n\r\n").await;
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        stream
    }

    async fn fill(&mut self) {
        let mut block = [0u8; 64 * 1024];
        let read = tokio::time::timeout(WAIT, self.socket.read(&mut block))
            .await
            .expect("the server kept sending")
            .unwrap();
        assert!(read > 0, "the server closed the stream early");
        self.buffer.extend_from_slice(&block[..read]);
    }

    /// The bytes up to and including `delimiter`.
    async fn read_until(&mut self, delimiter: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self
                .buffer
                .windows(delimiter.len())
                .position(|w| w == delimiter)
            {
                return self.buffer.drain(..at + delimiter.len()).collect();
            }
            self.fill().await;
        }
    }

    /// Reads one HTTP chunk into the body, noting its size.
    async fn read_chunk(&mut self) {
        let line = self.read_until(b"\r\n").await;
        let size = std::str::from_utf8(&line).unwrap().trim_end();
        let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
        assert!(size > 0, "the stream ended");
        while self.buffer.len() < size + 2 {
            self.fill().await;
        }
        self.body.extend(self.buffer.drain(..size));
        assert_eq!(self.buffer.drain(..2).collect::<Vec<_>>(), b"\r\n");
        self.chunk_sizes.push(size);
    }

    /// Reads chunks until event `last` has arrived; returns the ids of every event received.
    async fn ids_until(&mut self, last: i64) -> Vec<i64> {
        loop {
            let ids = frame_ids(&self.body);
            if ids.last().is_some_and(|&id| id >= last) {
                return ids;
            }
            self.read_chunk().await;
        }
    }

    fn largest_chunk(&self) -> usize {
        self.chunk_sizes.iter().copied().max().unwrap_or(0)
    }
}

/// The ids of the complete frames in `body`, in order.
fn frame_ids(body: &[u8]) -> Vec<i64> {
    let text = std::str::from_utf8(body).unwrap();
    let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
    complete
        .split("\n\n")
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("id: ")))
        .map(|id| id.parse().unwrap())
        .collect()
}

/// The status, `Retry-After` and body of a request for a stream that should be refused.
async fn refused_stream(
    server: &TestServer,
    key: &str,
    token: &str,
) -> (StatusCode, String, Value) {
    let response = server
        .http
        .get(format!("{}/agent/threads/{}/events", server.url, enc(key)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Opens a stream for `token`, retrying while the server still counts a closed one.
async fn stream_when_free(server: &TestServer, key: &str, token: &str) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = server
            .http
            .get(format!("{}/agent/threads/{}/events", server.url, enc(key)))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            return response;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Past the per-token cap and past the total cap a new stream is `429 too_many_streams` with
/// `Retry-After`; a stream that ends (closed by the client, or by the server on a terminal
/// event) gives its place back.
#[tokio::test]
async fn stream_caps_answer_429_and_free_on_close() {
    let mut config = Config::new(fresh_database().await);
    config.max_streams_per_token = 2;
    config.max_streams = 3;
    config.sse_keepalive_secs = 1;
    let server = TestServer::start_with(config, true).await;
    let key = "api:caps";
    let (mut runner, execution_id) = server.running_execution(key).await;
    let created = server
        .post("/admin/api-keys", json!({"name": "streams"}))
        .await;
    let api_key = created["token"].as_str().unwrap().to_owned();

    // The admin's two; the third is over the per-token cap.
    let first = server.events(key, "").await;
    let until_terminal = server
        .events(
            key,
            &format!("execution_id={execution_id}&close_on_terminal=true"),
        )
        .await;
    let (status, retry_after, body) = refused_stream(&server, key, ADMIN_KEY).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(retry_after.parse::<u64>().unwrap() > 0, "{retry_after:?}");
    assert_eq!(error_code(&body), "too_many_streams");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("token"),
        "{body}"
    );

    // Another token has its own count, but the server's total is 3.
    let api_stream = stream_when_free(&server, key, &api_key).await;
    let (status, retry_after, body) = refused_stream(&server, key, &api_key).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(retry_after.parse::<u64>().unwrap() > 0);
    assert_eq!(error_code(&body), "too_many_streams");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server"),
        "{body}"
    );

    // The client closes a stream: its place comes back.
    drop(first);
    let again = stream_when_free(&server, key, ADMIN_KEY).await;
    assert_eq!(
        refused_stream(&server, key, ADMIN_KEY).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    // The server ends a stream (close_on_terminal): its place comes back too.
    runner
        .post(
            execution_id,
            vec![],
            Some(json!({"status": "completed", "result_text": "done"})),
        )
        .await;
    let mut until_terminal = until_terminal;
    until_terminal.read_to_end(WAIT).await;
    drop((api_stream, again));
    let _third = stream_when_free(&server, key, &api_key).await;
    let _fourth = stream_when_free(&server, key, ADMIN_KEY).await;
}

/// A replay of a large thread arrives in chunks no larger than the page limit, every event once
/// and in order.
#[tokio::test]
async fn large_replay_comes_in_bounded_chunks_exactly_once() {
    let server = TestServer::start().await;
    let key = "api:large-replay";
    let (mut runner, execution_id) = server.running_execution(key).await;
    for batch in 0..6 {
        runner
            .post(execution_id, deltas(500, 600, &format!("b{batch}.")), None)
            .await;
    }
    let last = server.last_event_id(key).await;
    assert!(last > 3000, "thread has {last} events");

    let mut stream = RawStream::open(&server, key, "", false).await;
    let ids = stream.ids_until(last).await;
    assert_eq!(ids, (1..=last).collect::<Vec<_>>());
    assert!(
        stream.largest_chunk() <= MAX_CHUNK,
        "a chunk of {} bytes (chunks: {:?})",
        stream.largest_chunk(),
        stream.chunk_sizes
    );
    assert!(stream.chunk_sizes.len() > 4, "{:?}", stream.chunk_sizes);

    // From the middle too, with the standard reader.
    let middle = last / 2;
    let frames = server
        .events(key, &format!("after_event_id={middle}"))
        .await
        .until_id(last, WAIT)
        .await;
    assert_eq!(
        frames.iter().map(|f| f.id).collect::<Vec<_>>(),
        (middle + 1..=last).collect::<Vec<_>>()
    );
}

/// A reader that stops reading mid-replay while the thread keeps producing (more than its live
/// backlog may hold) still gets every event once, in order, in bounded chunks, when it reads
/// again.
#[tokio::test]
async fn a_stalled_reader_resumes_with_everything() {
    let server = TestServer::start().await;
    let key = "api:stalled";
    let (mut runner, execution_id) = server.running_execution(key).await;
    runner
        .post(execution_id, deltas(1000, 600, "before."), None)
        .await;

    let mut stream = RawStream::open(&server, key, "", true).await;
    // Stalled: nothing is read while about 3 MB of events arrive live.
    for batch in 0..10 {
        runner
            .post(
                execution_id,
                deltas(500, 600, &format!("live{batch}.")),
                None,
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    runner
        .post(
            execution_id,
            vec![],
            Some(json!({"status": "completed", "result_text": "done"})),
        )
        .await;
    let last = server.last_event_id(key).await;
    assert!(last > 6000, "thread has {last} events");

    let ids = stream.ids_until(last).await;
    assert_eq!(ids, (1..=last).collect::<Vec<_>>());
    assert!(
        stream.largest_chunk() <= MAX_CHUNK,
        "a chunk of {} bytes",
        stream.largest_chunk()
    );
}
