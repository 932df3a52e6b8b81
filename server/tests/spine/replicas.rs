use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

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
    let http = crate::support::http().build().unwrap();
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
