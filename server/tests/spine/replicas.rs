use std::time::{Duration, Instant};

use serde_json::json;

use centaur_test_support::events::{SseReader, result_text};
use centaur_test_support::http::http;
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::server::{ADMIN_KEY, TestServer};

/// Two servers on one database: what is appended through one streams live from the other.
#[tokio::test]
async fn events_appended_on_one_replica_stream_live_from_the_other() {
    let a = TestServer::start().await;
    let b = TestServer::start_with(centaur_server::Config::new(&a.database_url), true).await;
    let key = "api:replicated";
    let (_, token) = a.spawn(key).await;

    // Follow on B from the start, append through A.
    let mut on_b = b.events(key, "after_event_id=0").await;
    assert_eq!(on_b.until_id(2, Duration::from_secs(5)).await.len(), 2);
    let accepted = a
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "hi"}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().parse().unwrap();
    let mut runner = a.runner(&token);
    runner.must_claim(key).await;

    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let sent = Instant::now();
        runner
            .post(
                execution_id,
                vec![json!({"type": "agent.message.delta", "text": i.to_string()})],
                None,
            )
            .await;
        let frame = match on_b.next(Duration::from_secs(5)).await {
            Some(f) if i > 0 || f.event == "message.created" => f,
            other => panic!("replica B delivered {other:?} for delta {i}"),
        };
        // The first read yields the message; the queued/started/delta follow.
        let frame = if i == 0 {
            on_b.until_id(6, Duration::from_secs(5))
                .await
                .pop()
                .unwrap()
        } else {
            frame
        };
        assert_eq!(frame.data["text"], i.to_string());
        worst = worst.max(sent.elapsed());
        if i == 0 {
            // The first delta follows message, queued and started (ids 3, 4, 5) on B as well.
            assert_eq!(frame.id, 6);
        }
    }
    // Cross-replica delivery rides on NOTIFY, not on the 2 s refresh.
    assert!(
        worst < Duration::from_millis(1000),
        "slowest cross-replica delivery took {worst:?}"
    );

    // And the other way round: a message through B reaches a stream on A.
    let mut on_a = a.events(key, "after_event_id=25").await;
    b.post(
        "/agent/message",
        json!({"thread_key": key, "text": "from b"}),
    )
    .await;
    let frame = on_a
        .next(Duration::from_secs(5))
        .await
        .expect("delivered on A");
    assert_eq!(frame.event, "message.created");
    assert_eq!(frame.data["text"], "from b");
}

/// The real binary as a second process: it streams what this process appends, and on SIGTERM
/// it ends its streams cleanly and exits 0.
#[tokio::test]
async fn a_second_server_process_streams_live_and_stops_on_sigterm() {
    let a = TestServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut b = tokio::process::Command::new(env!("CARGO_BIN_EXE_centaur-server"))
        .env("DATABASE_URL", &a.database_url)
        .env("CENTAUR_BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("CENTAUR_ADMIN_API_KEY", ADMIN_KEY)
        .env("CENTAUR_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start centaur-server");
    let b_url = format!("http://127.0.0.1:{port}");
    let http = http().build().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if http
            .get(format!("{b_url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "the second process became ready");

    let key = "api:two-processes";
    a.spawn(key).await;
    let mut on_b = SseReader::open(
        &http,
        &format!("{b_url}/agent/threads/{key}/events?after_event_id=2"),
        ADMIN_KEY,
        None,
    )
    .await;
    a.post(
        "/agent/message",
        json!({"thread_key": key, "text": "across processes"}),
    )
    .await;
    let frame = on_b
        .next(Duration::from_secs(5))
        .await
        .expect("delivered by the other process");
    assert_eq!(frame.data["text"], "across processes");

    let pid = b.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), b.wait())
        .await
        .expect("exits promptly")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(on_b.next(Duration::from_secs(2)).await.is_none());
    assert!(on_b.ended, "the stream ended cleanly");
}

/// Two replicas with the local backend on one database: each runs turns in its own sandboxes and
/// leaves the other's alone; when one is gone, the other releases its sandboxes deliberately
/// and serves its threads.
#[tokio::test]
async fn local_replicas_keep_their_own_sandboxes_and_take_over_from_a_dead_one() {
    let a = LocalStack::start_with("replica-a", 0, json!({}), |config, _| {
        config.replica_dead_after_secs = 4;
    })
    .await;
    let database_url = a.server.database_url.clone();
    let b = LocalStack::start_with("replica-b", 0, json!({}), move |config, _| {
        config.database_url = database_url.as_str().into();
        config.replica_dead_after_secs = 4;
    })
    .await;

    // Turns that outlast the 4 s during which a new sandbox is not judged at all, so each
    // reaper (every 200 ms) looks at the other's sandbox, and its owner's heartbeat, often.
    let (on_a, on_b) = tokio::join!(
        a.turn("api:on-a", "shell", "sleep 6; echo done-on-a"),
        b.turn("api:on-b", "shell", "sleep 6; echo done-on-b"),
    );
    assert!(result_text(&on_a).contains("done-on-a"), "{on_a}");
    assert!(result_text(&on_b).contains("done-on-b"), "{on_b}");

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&a.server.database_url)
        .await
        .unwrap();
    let owners: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT t.thread_key, s.owner FROM sandboxes s JOIN threads t ON t.id = s.thread_id \
         WHERE s.state <> 'released' ORDER BY t.thread_key",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(owners.len(), 2, "both sandboxes live: {owners:?}");
    assert_ne!(owners[0].1, owners[1].1, "{owners:?}");

    // B goes away; its thread's sandbox is released by A once B counts as dead, and the thread's
    // next turn, through A, runs in a new sandbox of A's.
    let b_owner = owners[1].1.clone();
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT s.state, s.release_reason FROM sandboxes s JOIN threads t ON t.id = s.thread_id \
             WHERE t.thread_key = 'api:on-b' AND s.owner = $1",
        )
        .bind(&b_owner)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        if let Some((state, reason)) = row
            && state == "released"
        {
            break reason.unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "A never released B's sandbox");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reason.contains("has not been heard from"), "{reason}");
    let again = a.turn("api:on-b", "shell", "echo served-by-a").await;
    assert!(result_text(&again).contains("served-by-a"), "{again}");
    // A's own thread kept its sandbox throughout.
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sandboxes s JOIN threads t ON t.id = s.thread_id \
         WHERE t.thread_key = 'api:on-a'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(kept, 1);
}
