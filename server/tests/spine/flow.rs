use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use centaur_test_support::pg::fresh_database;
use centaur_test_support::server::{TestServer, enc};

const WAIT: Duration = Duration::from_secs(5);

/// spawn → message → execute → the runner claims, streams, finishes → a client sees it all.
#[tokio::test]
async fn a_played_runner_execution_streams_to_the_client() {
    let server = TestServer::start().await;
    let key = "api:flow";
    let (sandbox_id, token) = server.spawn(key).await;

    let mut stream = server.events(key, "after_event_id=0").await;
    let message = server
        .post(
            "/agent/message",
            json!({"thread_key": key, "text": "hello", "client_message_id": "m1"}),
        )
        .await;
    let (status, accepted) = server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": key, "idempotency_key": "turn-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(accepted["status"], "queued");
    let execution_id = accepted["execution_id"].as_str().unwrap();

    let mut runner = server.runner(&token);
    let (status, assignment) = runner.claim(key, 1000).await;
    assert_eq!(status, StatusCode::OK, "{assignment}");
    assert_eq!(assignment["execution_id"], execution_id);
    assert_eq!(assignment["harness"], "echo");
    assert_eq!(assignment["input"][0]["text"], "hello");
    assert_eq!(assignment["input"][0]["message_id"], message["message_id"]);
    let execution_id = execution_id.parse().unwrap();
    let (status, body) = runner
        .post(
            execution_id,
            vec![
                json!({"type": "agent.reasoning", "text": "thinking"}),
                json!({"type": "agent.message.delta", "text": "hel"}),
                json!({"type": "agent.message.delta", "text": "lo"}),
                json!({"type": "command.started", "command_id": "c1", "command": "ls"}),
                json!({"type": "command.output", "command_id": "c1", "chunk": "a\nb\n"}),
                json!({"type": "command.finished", "command_id": "c1", "exit_code": 0}),
                json!({"type": "agent.message", "text": "hello"}),
                json!({"type": "usage", "input_tokens": 10, "output_tokens": 2}),
            ],
            Some(json!({"status": "completed", "result_text": "hello"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 8);
    assert_eq!(body["status"], "completed");

    let frames = stream.until_id(14, WAIT).await;
    let types: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(
        types,
        [
            "thread.created",
            "sandbox.assigned",
            "message.created",
            "execution.queued",
            "execution.started",
            "agent.reasoning",
            "agent.message.delta",
            "agent.message.delta",
            "command.started",
            "command.output",
            "command.finished",
            "agent.message",
            "usage",
            "execution.completed"
        ]
    );
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.id, i as i64 + 1, "ids are dense per thread");
        assert_eq!(frame.data["event_id"], frame.id);
        assert_eq!(frame.data["type"], frame.event);
        assert_eq!(frame.data["thread_key"], key);
        assert!(frame.data["created_at"].is_string());
        assert!(frame.data.get("execution_id").is_some());
    }
    assert_eq!(frames[1].data["sandbox_id"], sandbox_id.to_string());
    assert_eq!(frames[1].data["ready_source"], "cold");
    assert_eq!(frames[2].data["text"], "hello");
    assert_eq!(frames[3].data["execution_id"], execution_id.to_string());
    assert_eq!(frames[9].data["chunk"], "a\nb\n");
    assert_eq!(frames[13].data["result_text"], "hello");

    // The thread shows the finished execution; the sandbox stays for the next turn.
    let (_, detail) = server
        .admin(
            Method::GET,
            &format!("/agent/threads/{}", enc(key)),
            json!(null),
        )
        .await;
    assert_eq!(detail["status"], "idle");
    assert_eq!(detail["last_execution"]["status"], "completed");
    assert_eq!(detail["last_execution"]["result_text"], "hello");
    assert_eq!(detail["sandbox"]["sandbox_id"], sandbox_id.to_string());
    assert_eq!(detail["last_event_id"], 14);
}

/// `POST /agent/execute` with a message does spawn + message + execute in one call, and a
/// client following just that execution sees its events and then the stream closes.
#[tokio::test]
async fn execute_with_message_and_close_on_terminal() {
    let server = TestServer::start().await;
    let key = "cli:0e7c7b7e-2a8e-4a43-9a0f-0c3c3a1f1b11";
    let (status, accepted) = server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": key, "message": "hi", "harness": "echo"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let execution_id: uuid::Uuid = accepted["execution_id"].as_str().unwrap().parse().unwrap();
    let (_, detail) = server
        .admin(
            Method::GET,
            &format!("/agent/threads/{}", enc(key)),
            json!(null),
        )
        .await;
    let token = server.backend.token(
        detail["sandbox"]["sandbox_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );

    let mut stream = server
        .events(
            key,
            &format!("execution_id={execution_id}&close_on_terminal=true"),
        )
        .await;
    let mut runner = server.runner(&token);
    runner.must_claim(key).await;
    runner
        .post(
            execution_id,
            vec![json!({"type": "agent.message", "text": "hi"})],
            Some(json!({"status": "completed", "result_text": "hi"})),
        )
        .await;
    let frames = stream.read_to_end(WAIT).await;
    let types: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(
        types,
        [
            "execution.queued",
            "execution.started",
            "agent.message",
            "execution.completed"
        ]
    );
    assert!(
        frames
            .iter()
            .all(|f| f.data["execution_id"] == execution_id.to_string())
    );

    // Re-opened after the end, the same request replays and closes at once.
    let mut again = server
        .events(
            key,
            &format!("execution_id={execution_id}&close_on_terminal=true"),
        )
        .await;
    assert_eq!(again.read_to_end(WAIT).await, frames);
    // Resuming past the terminal event closes at once with nothing.
    let last = frames.last().unwrap().id;
    let mut past = server
        .events(
            key,
            &format!("execution_id={execution_id}&close_on_terminal=true&after_event_id={last}"),
        )
        .await;
    assert!(past.read_to_end(WAIT).await.is_empty());
}

/// The thread list is newest-activity first and pages with `next_before`.
#[tokio::test]
async fn threads_are_listed_newest_first_and_paged() {
    let server = TestServer::start().await;
    for i in 0..5 {
        server.spawn(&format!("api:list-{i}")).await;
    }
    // Activity on an old thread moves it to the front.
    server
        .post(
            "/agent/message",
            json!({"thread_key": "api:list-0", "text": "bump"}),
        )
        .await;
    let (status, page1) = server
        .admin(Method::GET, "/agent/threads?limit=3", json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&str> = page1["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["thread_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["api:list-0", "api:list-4", "api:list-3"]);
    assert_eq!(page1["threads"][0]["platform"], "api");
    assert_eq!(page1["threads"][0]["status"], "idle");
    let cursor = page1["next_before"].as_str().unwrap();
    let (_, page2) = server
        .admin(
            Method::GET,
            &format!("/agent/threads?limit=3&before={cursor}"),
            json!(null),
        )
        .await;
    let keys: Vec<&str> = page2["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["thread_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["api:list-2", "api:list-1"]);
    assert!(page2["next_before"].is_null());
}

/// Idle streams carry keep-alive comments.
#[tokio::test]
async fn idle_streams_get_keepalives() {
    let database_url = fresh_database().await;
    let mut config = centaur_server::Config::new(&database_url);
    config.sse_keepalive_secs = 1;
    let server = TestServer::start_with(config, true).await;
    server.spawn("api:quiet").await;
    let mut stream = server.events("api:quiet", "after_event_id=2").await;
    assert!(stream.next(Duration::from_millis(2500)).await.is_none());
    assert!(stream.comments >= 2, "got {} keep-alives", stream.comments);
}
