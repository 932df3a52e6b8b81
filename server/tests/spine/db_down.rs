//! The database goes away: requests are refused quickly, and a refused request stores nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use centaur_server::sandbox::SandboxBackend;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;

use centaur_test_support::pg::{fresh_database, via};
use centaur_test_support::relay::Relay;
use centaur_test_support::server::{ADMIN_KEY, TestServer, enc, error_code};

/// While the database is known to be away, `/readyz` answers from its last probe and the API
/// answers `503 database_unavailable` without waiting for a connection (the pool would wait
/// `CENTAUR_DB_ACQUIRE_TIMEOUT_MS`, 3 s by default); both recover when it returns.
#[tokio::test]
async fn requests_fail_fast_while_the_database_is_down_and_recover() {
    let database_url = fresh_database().await;
    let relay = Relay::start(&database_url).await;
    let config = centaur_server::Config::new(via(&database_url, relay.addr));
    assert_eq!(config.db_acquire_timeout_ms, 3000, "the default pool wait");
    let server = TestServer::start_with(config, true).await;
    server.spawn("api:fast-known").await;

    // The database's host goes away: connecting hangs rather than being refused.
    relay.hang();
    // The probe notices within a few seconds.
    let noticed = Instant::now();
    loop {
        let (status, _) = server.call(Method::GET, "/readyz", None, None).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            noticed.elapsed() < Duration::from_secs(10),
            "readyz never noticed the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let asked = Instant::now();
        let (status, body) = server.call(Method::GET, "/readyz", None, None).await;
        let took = asked.elapsed();
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        );
        // Well under the pool's 3 s wait, with room for a loaded 2-core machine.
        assert!(took < Duration::from_secs(2), "readyz took {took:?}");
    }
    let asked = Instant::now();
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/execute",
            json!({"thread_key": "api:fast-new", "message": "hi", "harness": "echo"}),
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
        "{body}"
    );
    assert!(took < Duration::from_secs(2), "execute took {took:?}");
    let asked = Instant::now();
    let response = server
        .request(
            Method::GET,
            &format!("/agent/threads/{}/events", enc("api:fast-known")),
            Some(ADMIN_KEY),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "a new stream took {:?}",
        asked.elapsed()
    );

    relay.restore();
    server.wait_ready().await;
    let answer = server
        .post(
            "/agent/execute",
            json!({"thread_key": "api:fast-new", "message": "back", "harness": "echo"}),
        )
        .await;
    assert_eq!(answer["status"], "queued");
}

/// With the database cut while 50 executes on new threads are in flight, every one refused
/// with a 503 leaves no thread behind and no sandbox running, once the database is back.
#[tokio::test]
async fn refused_executes_on_new_threads_store_nothing() {
    let database_url = fresh_database().await;
    let relay = Relay::start(&database_url).await;
    let mut config = centaur_server::Config::new(via(&database_url, relay.addr));
    config.db_acquire_timeout_ms = 500;
    let server = TestServer::start_with(config, true).await;

    let keys: Vec<String> = (0..50).map(|i| format!("api:refused-{i}")).collect();
    let requests = keys.iter().map(|key| {
        let server = &server;
        async move {
            let answer = server
                .admin(
                    Method::POST,
                    "/agent/execute",
                    json!({"thread_key": key, "message": "hi", "harness": "echo"}),
                )
                .await;
            (key.clone(), answer)
        }
    });
    // Cut once the first sandboxes are started: the other requests are then at every stage.
    let cut = async {
        let started = Instant::now();
        while server.backend.list().await.unwrap().len() < 15
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        relay.cut();
    };
    let (answers, ()) = tokio::join!(futures_util::future::join_all(requests), cut);
    relay.restore();
    server.wait_ready().await;

    let mut refused = HashSet::new();
    for (key, (status, body)) in &answers {
        match *status {
            StatusCode::ACCEPTED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                refused.insert(key.clone());
            }
            other => panic!("{key}: unexpected {other}: {body}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "the cut came too late to refuse anything"
    );
    eprintln!("{} of {} executes refused", refused.len(), keys.len());

    // Refused requests take back their threads as soon as the database answers again.
    let mut db = sqlx::PgConnection::connect(&database_url).await.unwrap();
    let started = Instant::now();
    let leftovers = loop {
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "SELECT thread_key, EXISTS (SELECT 1 FROM executions e WHERE e.thread_id = t.id) \
             FROM threads t",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        // A 503 whose commit landed anyway (the answer was lost with the connection) queued
        // its execution: that is the one thing a client cannot tell from a refusal.
        let leftovers: Vec<String> = rows
            .into_iter()
            .filter(|(key, executed)| refused.contains(key) && !executed)
            .map(|(key, _)| key)
            .collect();
        if leftovers.is_empty() || started.elapsed() > Duration::from_secs(15) {
            break leftovers;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        leftovers.is_empty(),
        "{} of {} refused requests left their thread: {leftovers:?}",
        leftovers.len(),
        refused.len()
    );
    let accepted: Vec<String> = answers
        .iter()
        .filter(|(_, (status, _))| *status == StatusCode::ACCEPTED)
        .map(|(key, _)| key.clone())
        .collect();
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM threads t JOIN executions e ON e.thread_id = t.id \
         WHERE t.thread_key = ANY($1)",
    )
    .bind(&accepted)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        kept as usize,
        accepted.len(),
        "accepted executes keep their thread"
    );
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sandboxes s WHERE NOT EXISTS \
         (SELECT 1 FROM executions e WHERE e.thread_id = s.thread_id)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "sandbox rows of refused requests remain");

    // Every sandbox started for a refused request was stopped.
    let stopped: HashSet<_> = server
        .backend
        .stopped
        .lock()
        .unwrap()
        .iter()
        .copied()
        .collect();
    eprintln!(
        "{} sandboxes started, {} stopped",
        server.backend.list().await.unwrap().len(),
        stopped.len()
    );
    for sandbox_id in server.backend.list().await.unwrap() {
        let spec = server.backend.spec(sandbox_id);
        let key = spec.attachment.as_ref().unwrap().thread_key.to_string();
        if refused.contains(&key) {
            assert!(
                stopped.contains(&sandbox_id),
                "the sandbox {sandbox_id} of refused {key} still runs"
            );
        }
    }
}
