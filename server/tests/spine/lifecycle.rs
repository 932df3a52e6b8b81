use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use centaur_test_support::events::SseReader;
use centaur_test_support::server::{ADMIN_KEY, TestServer, error_code};

const WAIT: Duration = Duration::from_secs(5);

async fn event_types(server: &TestServer, key: &str) -> Vec<String> {
    let last = server.last_event_id(key).await;
    let frames = server.events(key, "").await.until_id(last, WAIT).await;
    frames.into_iter().map(|f| f.event).collect()
}

fn count(types: &[String], wanted: &str) -> usize {
    types.iter().filter(|t| *t == wanted).count()
}

#[tokio::test]
async fn spawn_message_and_execute_are_idempotent() {
    let server = TestServer::start().await;
    let key = "api:idem";
    let first = server
        .post(
            "/agent/spawn",
            json!({"thread_key": key, "harness": "echo", "spawn_id": "s-1"}),
        )
        .await;
    assert_eq!(first["ready_source"], "cold");
    assert_eq!(
        server
            .post(
                "/agent/spawn",
                json!({"thread_key": key, "spawn_id": "s-1"})
            )
            .await,
        first
    );
    // A new spawn without id reuses the live sandbox.
    let reused = server
        .post("/agent/spawn", json!({"thread_key": key}))
        .await;
    assert_eq!(reused["ready_source"], "reused");
    assert_eq!(reused["sandbox_id"], first["sandbox_id"]);
    // The same spawn_id for another thread is a conflict.
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/spawn",
            json!({"thread_key": "api:else", "spawn_id": "s-1"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "idempotency_conflict")
    );
    // A different harness while the sandbox lives is a conflict.
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/spawn",
            json!({"thread_key": key, "harness": "shell"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "harness_conflict")
    );

    let m1 = server
        .post(
            "/agent/message",
            json!({"thread_key": key, "text": "once", "client_message_id": "c-1"}),
        )
        .await;
    let m2 = server
        .post(
            "/agent/message",
            json!({"thread_key": key, "text": "once", "client_message_id": "c-1"}),
        )
        .await;
    assert_eq!(m1, m2);

    let e1 = server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "idempotency_key": "k-1", "message": "go"}),
        )
        .await;
    let e2 = server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "idempotency_key": "k-1", "message": "go"}),
        )
        .await;
    assert_eq!(e1, e2);

    let types = event_types(&server, key).await;
    assert_eq!(count(&types, "sandbox.assigned"), 1);
    assert_eq!(
        count(&types, "message.created"),
        2,
        "c-1 once, plus the execute message once: {types:?}"
    );
    assert_eq!(count(&types, "execution.queued"), 1);
}

/// At most one queued or running execution per thread, even under concurrent requests.
#[tokio::test]
async fn one_active_execution_per_thread_under_concurrency() {
    let server = TestServer::start().await;
    let key = "api:race";
    server.spawn(key).await;
    let attempts = (0..12).map(|i| {
        let request = server
            .request(Method::POST, "/agent/execute", Some(ADMIN_KEY))
            .json(&json!({"thread_key": key, "message": format!("m{i}")}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let accepted = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 1, "{results:?}");
    for (status, body) in &results {
        if *status != StatusCode::ACCEPTED {
            assert_eq!(
                (*status, error_code(body)),
                (StatusCode::CONFLICT, "execution_active")
            );
        }
    }
    // The refused requests stored no message.
    let types = event_types(&server, key).await;
    assert_eq!(count(&types, "message.created"), 1, "{types:?}");
}

#[tokio::test]
async fn interrupt_cancels_queued_and_running_executions() {
    let server = TestServer::start().await;
    let key = "api:interrupt";
    let (_, token) = server.spawn(key).await;
    let mut runner = server.runner(&token);

    // Nothing to interrupt.
    let idle = server
        .post(&format!("/agent/threads/{key}/interrupt"), json!(null))
        .await;
    assert_eq!(
        idle,
        json!({"interrupted": false, "execution_id": null, "withdrawn_messages": 0})
    );

    // Queued.
    let queued = server
        .post("/agent/execute", json!({"thread_key": key}))
        .await;
    let answer = server
        .post(
            &format!("/agent/threads/{key}/interrupt"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(answer["interrupted"], true);
    assert_eq!(answer["execution_id"], queued["execution_id"]);
    let (status, _) = runner.claim(key, 0).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a cancelled execution cannot be claimed"
    );

    // Running: the runner learns of it from the stream, and its later events are refused.
    let running = server
        .post("/agent/execute", json!({"thread_key": key}))
        .await;
    let execution_id: Uuid = running["execution_id"].as_str().unwrap().parse().unwrap();
    let started = runner.claim(key, 1000).await.1;
    runner.seq = 0;
    let mut control = SseReader::open(
        &server.http,
        &format!(
            "{}/agent/threads/{key}/events?after_event_id={}",
            server.url, started["started_event_id"]
        ),
        &token,
        None,
    )
    .await;
    runner
        .post(
            execution_id,
            vec![json!({"type": "agent.message.delta", "text": "work"})],
            None,
        )
        .await;
    server
        .post(&format!("/agent/threads/{key}/interrupt"), json!(null))
        .await;
    let frames = control
        .until_id(started["started_event_id"].as_i64().unwrap() + 2, WAIT)
        .await;
    assert_eq!(frames.last().unwrap().event, "execution.cancelled");
    assert_eq!(
        frames.last().unwrap().data["reason"],
        "interrupted by admin"
    );

    let (status, body) = runner
        .post(
            execution_id,
            vec![json!({"type": "agent.message", "text": "late"})],
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "execution_finished")
    );
    // A finish after the interrupt changes nothing.
    let (status, body) = runner
        .post(
            execution_id,
            vec![],
            Some(json!({"status": "completed", "result_text": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "cancelled");

    let types = event_types(&server, key).await;
    let terminals = types
        .iter()
        .filter(|t| {
            t.starts_with("execution.") && !t.ends_with("queued") && !t.ends_with("started")
        })
        .count();
    assert_eq!(
        terminals, 2,
        "exactly one terminal event per execution: {types:?}"
    );
}

/// `?all=true` also empties the thread's queue: the messages waiting for a turn (steering that
/// the interrupted turn left, messages posted for the next one) stay in the history, but the
/// next turn does not start with them.
#[tokio::test]
async fn interrupt_all_withdraws_the_messages_waiting_for_a_turn() {
    let server = TestServer::start().await;
    let key = "api:interrupt-all";
    let (_, token) = server.spawn(key).await;
    let runner = server.runner(&token);
    let interrupt = |all: &str| format!("/agent/threads/{key}/interrupt{all}");

    // Two messages wait, and a turn is queued with a third.
    for text in ["first", "second"] {
        server
            .post("/agent/message", json!({"thread_key": key, "text": text}))
            .await;
    }
    let queued = server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "third"}),
        )
        .await;
    let answer = server.post(&interrupt("?all=true"), json!(null)).await;
    assert_eq!(
        answer,
        json!({"interrupted": true, "execution_id": queued["execution_id"], "withdrawn_messages": 3})
    );

    // Nothing running and nothing waiting: a clear no, not an error.
    let answer = server.post(&interrupt("?all=true"), json!(null)).await;
    assert_eq!(
        answer,
        json!({"interrupted": false, "execution_id": null, "withdrawn_messages": 0})
    );

    // The next turn starts with its own message only.
    server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "fourth"}),
        )
        .await;
    let (status, assignment) = runner.claim(key, 1000).await;
    assert_eq!(status, StatusCode::OK, "{assignment}");
    let input: Vec<&str> = assignment["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(input, ["fourth"]);

    // Without `all`, waiting messages stay for the next turn.
    let running: Uuid = assignment["execution_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    server
        .post(
            "/agent/message",
            json!({"thread_key": key, "text": "steer"}),
        )
        .await;
    let answer = server.post(&interrupt(""), json!(null)).await;
    assert_eq!(
        answer,
        json!({"interrupted": true, "execution_id": running, "withdrawn_messages": 0})
    );
    server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "fifth"}),
        )
        .await;
    let (_, assignment) = runner.claim(key, 1000).await;
    let input: Vec<&str> = assignment["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(input, ["steer", "fifth"]);

    // A bad flag is refused, and the history kept every message.
    let (status, body) = server
        .admin(Method::POST, &interrupt("?all=perhaps"), Value::Null)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let types = event_types(&server, key).await;
    assert_eq!(count(&types, "message.created"), 6, "{types:?}");
}

/// Retried batches (a lost answer, a runner reconnecting) are stored once.
#[tokio::test]
async fn retried_batches_are_stored_once() {
    let server = TestServer::start().await;
    let key = "api:retry";
    let (runner, execution_id) = server.running_execution(key).await;
    let batch = json!({"events": [
        {"seq": 1, "type": "agent.message.delta", "text": "a"},
        {"seq": 2, "type": "agent.message.delta", "text": "b"},
    ]});
    let (_, first) = runner.post_raw(execution_id, batch.clone()).await;
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
    let (_, again) = runner.post_raw(execution_id, batch).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    // Overlapping: 2 is old, 3 is new.
    let (_, overlap) = runner
        .post_raw(
            execution_id,
            json!({"events": [
            {"seq": 2, "type": "agent.message.delta", "text": "b"},
            {"seq": 3, "type": "agent.message.delta", "text": "c"},
        ], "finish": {"status": "completed", "result_text": "abc"}}),
        )
        .await;
    assert_eq!(
        (overlap["accepted"].as_u64(), overlap["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    // A retry of the finishing batch after it landed is answered, not refused.
    let (status, last) = runner
        .post_raw(execution_id, json!({"events": [{"seq": 3, "type": "agent.message.delta", "text": "c"}], "finish": {"status": "completed", "result_text": "abc"}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(last["status"], "completed");

    let (status, view) = server
        .admin(
            Method::GET,
            &format!("/runner/v1/executions/{execution_id}"),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["runner_seq"], 3);
    let types = event_types(&server, key).await;
    assert_eq!(count(&types, "agent.message.delta"), 3);
    assert_eq!(count(&types, "execution.completed"), 1);
}

/// An execution past its max_duration_ms fails, with a readable error, even with no runner.
#[tokio::test]
async fn executions_fail_past_their_deadline() {
    let server = TestServer::start().await;
    let key = "api:deadline";
    server.spawn(key).await;
    let accepted = server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "max_duration_ms": 300}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap();
    let mut stream = server
        .events(
            key,
            &format!("execution_id={execution_id}&close_on_terminal=true"),
        )
        .await;
    let frames = stream.read_to_end(WAIT).await;
    let last = frames.last().unwrap();
    assert_eq!(last.event, "execution.failed");
    assert!(
        last.data["error"]
            .as_str()
            .unwrap()
            .contains("max_duration_ms of 300 ms"),
        "{}",
        last.data
    );
    // The thread is free for the next turn.
    let (status, _) = server
        .admin(Method::POST, "/agent/execute", json!({"thread_key": key}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn approvals_are_decided_once_and_expire_with_their_execution() {
    let server = TestServer::start().await;
    let key = "api:approvals";
    let (mut runner, execution_id) = server.running_execution(key).await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let ask = |id: Uuid| json!({"type": "approval.requested", "approval_id": id, "kind": "command", "summary": "rm -rf build", "details": {"cwd": "/workspace"}});
    let (status, _) = runner
        .post(execution_id, vec![ask(first), ask(second)], None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let path = |id: Uuid| format!("/agent/threads/{key}/approvals/{id}");
    let ok = server
        .post(
            &path(first),
            json!({"decision": "approve_for_session", "reason": "fine"}),
        )
        .await;
    assert_eq!(ok, json!({"ok": true}));
    let (status, body) = server
        .admin(Method::POST, &path(first), json!({"decision": "deny"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "approval_already_decided")
    );

    // The execution ends with the second still pending: it is resolved as cancelled.
    server
        .post(&format!("/agent/threads/{key}/interrupt"), json!(null))
        .await;
    let (status, body) = server
        .admin(Method::POST, &path(second), json!({"decision": "approve"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "approval_expired")
    );

    let last = server.last_event_id(key).await;
    let frames = server.events(key, "").await.until_id(last, WAIT).await;
    let resolved: Vec<&Value> = frames
        .iter()
        .filter(|f| f.event == "approval.resolved")
        .map(|f| &f.data)
        .collect();
    assert_eq!(resolved.len(), 2);
    assert_eq!(resolved[0]["approval_id"], first.to_string());
    assert_eq!(resolved[0]["decision"], "approve_for_session");
    assert_eq!(resolved[0]["decided_by"], "admin");
    assert_eq!(resolved[1]["approval_id"], second.to_string());
    assert_eq!(resolved[1]["decision"], "cancelled");
    let requested = frames
        .iter()
        .find(|f| f.event == "approval.requested")
        .unwrap();
    assert_eq!(requested.data["details"]["cwd"], "/workspace");
    assert_eq!(requested.data["kind"], "command");
}

#[tokio::test]
async fn release_stops_the_sandbox_and_keeps_the_thread() {
    let server = TestServer::start().await;
    let key = "api:release";
    let (sandbox_id, token) = server.spawn(key).await;
    let mut runner = server.runner(&token);
    server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "long job"}),
        )
        .await;
    runner.must_claim(key).await;

    let released = server
        .post(&format!("/agent/threads/{key}/release"), json!(null))
        .await;
    assert_eq!(
        released,
        json!({"released": true, "sandbox_id": sandbox_id})
    );
    assert_eq!(
        server.backend.stopped.lock().unwrap().as_slice(),
        [sandbox_id]
    );
    let again = server
        .post(&format!("/agent/threads/{key}/release"), json!(null))
        .await;
    assert_eq!(again, json!({"released": false, "sandbox_id": null}));

    let types = event_types(&server, key).await;
    assert_eq!(
        &types[types.len() - 2..],
        ["execution.cancelled", "sandbox.released"]
    );

    // The next turn gets a fresh sandbox; the history is still there.
    let respawn = server
        .post("/agent/spawn", json!({"thread_key": key}))
        .await;
    assert_eq!(respawn["ready_source"], "cold");
    assert_ne!(respawn["sandbox_id"], json!(sandbox_id));
    let types = event_types(&server, key).await;
    assert_eq!(types[0], "thread.created");
    assert_eq!(count(&types, "sandbox.assigned"), 2);
}

/// A release racing the runner's claim of a queued turn: the claim locks the execution and then
/// points it at the sandbox (its foreign key takes a key-share lock on the sandbox's row), while
/// the release locks the sandbox's row and then the execution. Neither may wait on the other:
/// every race ends with the sandbox released, the turn cancelled or never handed out, and no 503.
#[tokio::test]
async fn a_release_racing_a_claim_never_deadlocks() {
    let server = TestServer::start().await;
    for round in 0..40 {
        let key = format!("api:release-race-{round}");
        let (_, token) = server.spawn(&key).await;
        let runner = server.runner(&token);
        server
            .post(
                "/agent/execute",
                json!({"thread_key": key, "message": "race"}),
            )
            .await;
        let path = format!("/agent/threads/{key}/release");
        let ((claimed, assignment), (released, body)) = tokio::join!(
            runner.claim(&key, 0),
            server.admin(Method::POST, &path, json!(null))
        );
        assert_eq!(released, StatusCode::OK, "round {round}: {body}");
        assert_eq!(body["released"], true, "round {round}: {body}");
        // The claim either got the turn, found none, or found its sandbox gone: never a 5xx.
        assert!(
            !claimed.is_server_error(),
            "round {round}: {claimed} {assignment}"
        );
        let types = event_types(&server, &key).await;
        assert_eq!(
            types.last().map(String::as_str),
            Some("sandbox.released"),
            "round {round}: {types:?}"
        );
        assert_eq!(
            count(&types, "execution.cancelled"),
            1,
            "round {round}: {types:?}"
        );
    }
}

/// A long-polling claim returns as soon as work is queued.
#[tokio::test]
async fn claim_long_polls_until_work_arrives() {
    let server = TestServer::start().await;
    let key = "api:longpoll";
    let (_, token) = server.spawn(key).await;
    let runner = server.runner(&token);
    let waiting = tokio::spawn(async move { runner.claim("api:longpoll", 10_000).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "now"}),
        )
        .await;
    let (status, assignment) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(assignment["input"][0]["text"], "now");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "claim returned promptly"
    );
}

/// The same batch posted many times at once (a runner retrying over a flaky link) is stored
/// exactly once.
#[tokio::test]
async fn concurrent_retries_of_a_batch_are_stored_once() {
    let server = TestServer::start().await;
    let key = "api:concurrent-retry";
    let (runner, execution_id) = server.running_execution(key).await;
    let batch = json!({"events": (1..=50).map(|seq| json!({"seq": seq, "type": "agent.message.delta", "text": seq.to_string()})).collect::<Vec<_>>()});
    let posts = (0..8).map(|_| runner.post_raw(execution_id, batch.clone()));
    let answers = futures_util::future::join_all(posts).await;
    let accepted: u64 = answers
        .iter()
        .map(|(s, a)| {
            assert_eq!(*s, StatusCode::OK, "{a}");
            a["accepted"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(accepted, 50);
    let types = event_types(&server, key).await;
    assert_eq!(count(&types, "agent.message.delta"), 50);
}

/// Where each message of a thread stands: its text → (the turn that took it, withdrawn).
async fn message_rows(
    server: &TestServer,
    key: &str,
) -> std::collections::BTreeMap<String, (Option<Uuid>, bool)> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server.database_url)
        .await
        .unwrap();
    let rows: Vec<(String, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT m.text, m.execution_id, m.withdrawn_at IS NOT NULL FROM messages m \
         JOIN threads t ON t.id = m.thread_id WHERE t.thread_key = $1",
    )
    .bind(key)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(text, execution, withdrawn)| (text, (execution, withdrawn)))
        .collect()
}

/// A runner reports the messages it delivered to the running turn as steering (`steered` in a
/// batch): they become that turn's input, like the ones it was claimed with, so the next turn
/// does not start with them and `?all` does not withdraw them. Ids that are not this thread's
/// waiting messages (another thread's, one an earlier turn took, a withdrawn one, an unknown
/// one) change nothing, and a batch sent again is harmless. One that arrives after the turn
/// ended still takes the messages it reports.
#[tokio::test]
async fn steered_messages_become_the_running_turns_input() {
    let server = TestServer::start().await;
    let key = "api:steered";
    let other = "api:steered-other";
    let (_, token) = server.spawn(key).await;
    server.spawn(other).await;
    let mut runner = server.runner(&token);
    let message_id =
        |answer: Value| -> Uuid { answer["message_id"].as_str().unwrap().parse().unwrap() };

    // An earlier turn took its message; another message was withdrawn.
    server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "earlier"}),
        )
        .await;
    let earlier_execution = runner.must_claim(key).await;
    let (status, body) = runner
        .post(
            earlier_execution,
            vec![],
            Some(json!({"status": "completed", "result_text": "done"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let withdrawn = message_id(
        server
            .post(
                "/agent/message",
                json!({"thread_key": key, "text": "withdrawn"}),
            )
            .await,
    );
    let answer = server
        .post(
            &format!("/agent/threads/{key}/interrupt?all=true"),
            json!(null),
        )
        .await;
    assert_eq!(answer["withdrawn_messages"], 1, "{answer}");

    // The running turn; three messages arrive while it runs, the runner delivered two.
    server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "now"}),
        )
        .await;
    let running = runner.must_claim(key).await;
    let mut texts = Vec::new();
    for text in ["steer one", "steer two", "not delivered"] {
        texts.push(message_id(
            server
                .post("/agent/message", json!({"thread_key": key, "text": text}))
                .await,
        ));
    }
    let foreign = message_id(
        server
            .post(
                "/agent/message",
                json!({"thread_key": other, "text": "elsewhere"}),
            )
            .await,
    );
    let rows = message_rows(&server, key).await;
    let earlier = rows["earlier"];
    let earlier_id: Uuid = {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server.database_url)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT id FROM messages WHERE text = 'earlier'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };

    // Foreign, taken, withdrawn and unknown ids: nothing changes, and the batch is accepted.
    let (status, body) = runner
        .post_raw(
            running,
            json!({"events": [], "steered": [foreign, earlier_id, withdrawn, Uuid::now_v7()]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(message_rows(&server, key).await, rows);
    assert_eq!(
        message_rows(&server, other).await["elsewhere"],
        (None, false)
    );

    // The two delivered ones (with an event, and again with the finish) are the turn's.
    let (status, body) = runner
        .post_raw(
            running,
            json!({"events": [{"seq": 1, "type": "agent.message", "text": "hm"}],
                   "steered": [texts[0], texts[1]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = runner
        .post_raw(
            running,
            json!({"events": [], "steered": [texts[1]],
                   "finish": {"status": "completed", "result_text": "done"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = message_rows(&server, key).await;
    assert_eq!(rows["earlier"], earlier);
    assert_eq!(earlier.0, Some(earlier_execution));
    assert_eq!(rows["withdrawn"], (None, true));
    assert_eq!(rows["now"], (Some(running), false));
    assert_eq!(rows["steer one"], (Some(running), false));
    assert_eq!(rows["steer two"], (Some(running), false));
    assert_eq!(rows["not delivered"], (None, false));

    // The next turn starts with the message that was not delivered, and its own.
    server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "next"}),
        )
        .await;
    let (status, assignment) = runner.claim(key, 1000).await;
    assert_eq!(status, StatusCode::OK, "{assignment}");
    let input: Vec<&str> = assignment["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(input, ["not delivered", "next"]);

    let next: Uuid = assignment["execution_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The runner may have handed a message to the agent before the server ended its turn (an
    // interrupt, the deadline, a release) and report it after: the agent saw it, so it is that
    // turn's input all the same (not given to the next turn again, not withdrawn by `?all`),
    // also when the batch's events are refused. A message a later turn has taken stays with it.
    // (Before, a batch for an ended execution took nothing.)
    let mut late = Vec::new();
    for text in ["late", "later"] {
        late.push(message_id(
            server
                .post("/agent/message", json!({"thread_key": key, "text": text}))
                .await,
        ));
    }
    let (status, body) = runner
        .post_raw(
            running,
            json!({"events": [], "steered": [late[0], texts[2]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = runner
        .post_raw(
            running,
            json!({"events": [{"seq": 2, "type": "agent.message", "text": "after the end"}],
                   "steered": [late[1]]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let rows = message_rows(&server, key).await;
    assert_eq!(rows["late"], (Some(running), false));
    assert_eq!(rows["later"], (Some(running), false));
    assert_eq!(rows["not delivered"], (Some(next), false));
    let answer = server
        .post(
            &format!("/agent/threads/{key}/interrupt?all=true"),
            json!(null),
        )
        .await;
    assert_eq!(answer["withdrawn_messages"], 0, "{answer}");
}

/// The server stopped after committing a claim and before answering it: the runner claims
/// again and must get the same execution (as it was started, its input, no second
/// `execution.started`), not nothing while the execution stays `running` with no one running
/// it until its deadline.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_answered_again_with_the_same_turn() {
    let server = TestServer::start().await;
    let key = "api:lost-claim-answer";
    let (_, token) = server.spawn(key).await;
    let accepted = server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "hello"}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    let runner = server.runner(&token);
    let (status, first) = runner.claim(key, 2000).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["execution_id"], execution_id.as_str());

    // The answer never reached the runner; it claims again.
    let (status, again) = runner.claim(key, 300).await;
    assert_eq!(status, StatusCode::OK, "claimed nothing: {again}");
    assert_eq!(again["execution_id"], first["execution_id"]);
    assert_eq!(again["started_event_id"], first["started_event_id"]);
    assert_eq!(again["runner_seq"], 0);
    assert_eq!(again["input"], first["input"]);
    assert_eq!(again["input"][0]["text"], "hello");

    assert_eq!(
        count(&event_types(&server, key).await, "execution.started"),
        1
    );
    let (_, detail) = server
        .admin(Method::GET, &format!("/agent/threads/{key}"), json!(null))
        .await;
    assert_eq!(detail["last_execution"]["status"], "running");
}
