use std::time::Duration;

use serde_json::json;

use centaur_test_support::events::SseReader;
use centaur_test_support::server::{ADMIN_KEY, TestServer, enc};

const WAIT: Duration = Duration::from_secs(5);

/// Builds a thread with a few executions worth of events; returns its last event id.
async fn busy_thread(server: &TestServer, key: &str) -> i64 {
    let (_, token) = server.spawn(key).await;
    let mut runner = server.runner(&token);
    for turn in 0..3 {
        server
            .post(
                "/agent/execute",
                json!({"thread_key": key, "message": format!("turn {turn}")}),
            )
            .await;
        let execution_id = runner.must_claim(key).await;
        let deltas = (0..7)
            .map(|i| json!({"type": "agent.message.delta", "text": format!("{turn}.{i}")}))
            .collect();
        runner.post(execution_id, deltas, None).await;
        runner
            .post(
                execution_id,
                vec![],
                Some(json!({"status": "completed", "result_text": "ok"})),
            )
            .await;
    }
    server.last_event_id(key).await
}

/// From every possible position, a client gets exactly the remaining events, in order.
#[tokio::test]
async fn resume_from_every_position_gives_exactly_the_rest() {
    let server = TestServer::start().await;
    let key = "api:resume";
    let last = busy_thread(&server, key).await;
    assert!(last > 30, "thread has {last} events");
    let full = server.events(key, "").await.until_id(last, WAIT).await;
    assert_eq!(
        full.iter().map(|f| f.id).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );

    for after in 0..=last {
        // Alternate between the query parameter and the standard header.
        let url = format!("{}/agent/threads/{}/events", server.url, enc(key));
        let mut stream = if after % 2 == 0 {
            SseReader::open(
                &server.http,
                &format!("{url}?after_event_id={after}"),
                ADMIN_KEY,
                None,
            )
            .await
        } else {
            SseReader::open(
                &server.http,
                &format!("{url}?after_event_id=0"),
                ADMIN_KEY,
                Some(after),
            )
            .await
        };
        let frames = if after == last {
            Vec::new()
        } else {
            stream.until_id(last, WAIT).await
        };
        assert_eq!(frames, full[after as usize..], "resuming after {after}");
        // And nothing more arrives.
        assert!(stream.next(Duration::from_millis(20)).await.is_none());
    }
}

/// A client that drops mid-execution and resumes with its last id misses nothing and sees
/// nothing twice, while the execution keeps producing.
#[tokio::test]
async fn reconnect_during_a_live_execution() {
    let server = TestServer::start().await;
    let key = "api:reconnect";
    let (_, token) = server.spawn(key).await;
    let mut runner = server.runner(&token);
    let accepted = server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "go"}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().parse().unwrap();
    runner.must_claim(key).await;

    let mut seen = Vec::new();
    let mut stream = server.events(key, "").await;
    for round in 0..10 {
        let batch = (0..5)
            .map(|i| json!({"type": "agent.message.delta", "text": format!("{round}-{i}")}))
            .collect();
        runner.post(execution_id, batch, None).await;
        // Read a little, then drop the connection and resume from the last id seen.
        if let Some(frame) = stream.next(WAIT).await {
            seen.push(frame);
        }
        let last = seen.last().map_or(0, |f| f.id);
        stream = server.events(key, &format!("after_event_id={last}")).await;
    }
    runner
        .post(
            execution_id,
            vec![],
            Some(json!({"status": "completed", "result_text": "done"})),
        )
        .await;
    let last = server.last_event_id(key).await;
    seen.extend(stream.until_id(last, WAIT).await);
    assert_eq!(
        seen.iter().map(|f| f.id).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
}

/// Many subscribers on one thread each get every live event once.
#[tokio::test]
async fn many_live_subscribers_each_get_everything() {
    let server = TestServer::start().await;
    let key = "api:fanout";
    let (_, token) = server.spawn(key).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(server.events(key, "after_event_id=2").await);
    }
    let mut runner = server.runner(&token);
    let accepted = server
        .post("/agent/execute", json!({"thread_key": key}))
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().parse().unwrap();
    runner.must_claim(key).await;
    for i in 0..20 {
        runner
            .post(
                execution_id,
                vec![json!({"type": "agent.message.delta", "text": i.to_string()})],
                None,
            )
            .await;
    }
    let last = 2 + 2 + 20; // queued + started + deltas
    for stream in &mut streams {
        let ids: Vec<i64> = stream
            .until_id(last, WAIT)
            .await
            .iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(ids, (3..=last).collect::<Vec<_>>());
    }
}
