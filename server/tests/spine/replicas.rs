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
