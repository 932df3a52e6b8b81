use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use centaur_test_support::pg::{fresh_database, via};
use centaur_test_support::relay::Relay;
use centaur_test_support::server::{TestServer, error_code};

/// The database goes away mid-flight: clear 503s, nothing half-written, and recovery without
/// a restart when it comes back.
#[tokio::test]
async fn database_outage_gives_503_and_recovers() {
    let database_url = fresh_database().await;
    let relay = Relay::start(&database_url).await;
    let mut config = centaur_server::Config::new(via(&database_url, relay.addr));
    config.db_acquire_timeout_ms = 500;
    let server = TestServer::start_with(config, true).await;
    let key = "api:outage";
    let (_, token) = server.spawn(key).await;
    let mut stream = server.events(key, "").await;
    assert_eq!(stream.until_id(2, Duration::from_secs(5)).await.len(), 2);

    relay.cut();
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/message",
            json!({"thread_key": key, "text": "lost?"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
    );
    let (status, body) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    let (status, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "the process itself is healthy");
    let (status, _) = server
        .call(Method::GET, "/agent/threads", Some(&token), None)
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "even auth needs the database"
    );

    relay.restore();
    let mut recovered = false;
    for _ in 0..100 {
        if server.call(Method::GET, "/readyz", None, None).await.0 == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "readyz recovers without a restart");
    let answer = server
        .post("/agent/message", json!({"thread_key": key, "text": "back"}))
        .await;
    assert_eq!(answer["event_id"], 3, "the failed message left no trace");

    // The stream that was open during the outage either kept going or ended; resuming from
    // its last id yields exactly the rest.
    let mut frames = Vec::new();
    while let Some(frame) = stream.next(Duration::from_millis(500)).await {
        frames.push(frame);
    }
    let last = frames.last().map_or(2, |f| f.id);
    if last < 3 {
        let mut resumed = server.events(key, &format!("after_event_id={last}")).await;
        frames.extend(resumed.until_id(3, Duration::from_secs(5)).await);
    }
    assert_eq!(frames.last().unwrap().data["text"], "back");
}

/// A server started while the database is away serves /healthz, answers 503 elsewhere, and
/// applies its migrations as soon as the database appears.
#[tokio::test]
async fn starts_without_the_database_and_migrates_when_it_appears() {
    let database_url = fresh_database().await;
    let relay = Relay::start(&database_url).await;
    relay.cut();
    let server = TestServer::start_with(
        centaur_server::Config::new(via(&database_url, relay.addr)),
        false,
    )
    .await;
    let (status, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .admin(Method::GET, "/agent/threads", json!(null))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    relay.restore();
    server.wait_ready().await;
    let (status, _) = server
        .admin(Method::GET, "/agent/threads", json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Shutdown lets in-flight requests finish and ends streams cleanly.
#[tokio::test]
async fn graceful_shutdown_ends_streams_and_finishes_requests() {
    let mut server = TestServer::start().await;
    let key = "api:shutdown";
    let (_, token) = server.spawn(key).await;
    let mut stream = server.events(key, "").await;
    assert_eq!(stream.until_id(2, Duration::from_secs(5)).await.len(), 2);
    let runner = server.runner(&token);
    let long_poll = tokio::spawn(async move { runner.claim("api:shutdown", 30_000).await.0 });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(
        long_poll.await.unwrap(),
        StatusCode::NO_CONTENT,
        "the in-flight claim was answered"
    );
    // The stream ended cleanly (no transport error, which would panic in the reader).
    assert!(stream.next(Duration::from_secs(2)).await.is_none());
    assert!(stream.ended);
}
