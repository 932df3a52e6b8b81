use reqwest::{Method, StatusCode};
use serde_json::json;

use centaur_test_support::pg::fresh_database;
use centaur_test_support::server::{ADMIN_KEY, TestServer, error_code};

async fn raw(
    server: &TestServer,
    path: &str,
    content_type: Option<&str>,
    body: &'static str,
) -> (StatusCode, serde_json::Value) {
    let mut request = server
        .request(Method::POST, path, Some(ADMIN_KEY))
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.expect("errors are JSON"))
}

#[tokio::test]
async fn malformed_requests_get_clear_json_errors_and_store_nothing() {
    let database_url = fresh_database().await;
    let mut config = centaur_server::Config::new(&database_url);
    config.max_body_bytes = 4096;
    let server = TestServer::start_with(config, true).await;
    server.spawn("api:exists").await;
    let json_ct = Some("application/json");

    let (status, body) = raw(&server, "/agent/message", json_ct, "{\"thread_key\": ").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );

    let (status, body) = raw(
        &server,
        "/agent/message",
        json_ct,
        r#"{"thread_key":"api:exists","text":"x","colour":"red"}"#,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );

    let (status, body) = raw(
        &server,
        "/agent/message",
        json_ct,
        r#"{"thread_key":"api:exists"}"#,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("text"),
        "{body}"
    );

    let (status, body) = raw(
        &server,
        "/agent/message",
        None,
        r#"{"thread_key":"api:exists","text":"x"}"#,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );

    let big = json!({"thread_key": "api:exists", "text": "x".repeat(10_000)});
    let (status, body) = server.admin(Method::POST, "/agent/message", big).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("4096"),
        "{body}"
    );

    // Malformed thread keys: in a body, in a path. Always 400, never 500.
    for key in [
        "nocolon",
        "",
        "Upper:x",
        "slack:onlychannel",
        "cli:not-a-uuid",
        &format!("api:{}", "k".repeat(600)),
    ] {
        let (status, body) = server
            .admin(Method::POST, "/agent/spawn", json!({"thread_key": key}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("thread key"),
            "{body}"
        );
    }
    for path in [
        "/agent/threads/nocolon",
        "/agent/threads/api%3A%0A/events",
        "/agent/threads/slack:C1/release",
    ] {
        let (status, body) = server
            .admin(
                if path.ends_with("release") {
                    Method::POST
                } else {
                    Method::GET
                },
                path,
                json!(null),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_thread_key"),
            "{path}"
        );
    }

    // Unknown threads are 404 everywhere.
    for (method, path, body) in [
        (
            Method::POST,
            "/agent/message",
            json!({"thread_key": "api:ghost", "text": "x"}),
        ),
        (
            Method::POST,
            "/agent/execute",
            json!({"thread_key": "api:ghost"}),
        ),
        (Method::GET, "/agent/threads/api:ghost", json!(null)),
        (Method::GET, "/agent/threads/api:ghost/events", json!(null)),
        (
            Method::POST,
            "/agent/threads/api:ghost/interrupt",
            json!(null),
        ),
        (
            Method::POST,
            "/agent/threads/api:ghost/release",
            json!(null),
        ),
    ] {
        let (status, answer) = server.admin(method.clone(), path, body).await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::NOT_FOUND, "thread_not_found"),
            "{method} {path}"
        );
    }

    // Other bad shapes.
    let cases = [
        (
            Method::POST,
            "/agent/execute",
            json!({"thread_key": "api:exists", "max_duration_ms": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/agent/execute",
            json!({"thread_key": "api:exists", "max_duration_ms": 10_u64.pow(12)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/agent/execute",
            json!({"thread_key": "api:exists", "message": "  "}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/agent/spawn",
            json!({"thread_key": "api:exists", "harness": "vim"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/agent/message",
            json!({"thread_key": "api:exists", "text": "x", "role": "robot"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/agent/threads/api:exists/approvals/not-a-uuid",
            json!({"decision": "approve"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            &format!("/agent/threads/api:exists/approvals/{}", uuid::Uuid::nil()),
            json!({"decision": "maybe"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            &format!("/agent/threads/api:exists/approvals/{}", uuid::Uuid::nil()),
            json!({"decision": "approve"}),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/agent/threads?limit=0",
            json!(null),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/agent/threads?before=garbage",
            json!(null),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/agent/threads/api:exists/events?after_event_id=-1",
            json!(null),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/agent/threads/api:exists/events?after_event_id=abc",
            json!(null),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            &format!(
                "/agent/threads/api:exists/events?execution_id={}",
                uuid::Uuid::nil()
            ),
            json!(null),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/no/such/route",
            json!(null),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/agent/spawn",
            json!(null),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, body, want) in cases {
        let (status, answer) = server.admin(method.clone(), path, body.clone()).await;
        assert_eq!(status, want, "{method} {path} {body}: {answer}");
        assert!(!error_code(&answer).is_empty());
    }
    let bad_header = server
        .request(
            Method::GET,
            "/agent/threads/api:exists/events",
            Some(ADMIN_KEY),
        )
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_header.status(), StatusCode::BAD_REQUEST);

    // None of that stored anything: the thread still has just its two spawn events.
    let (_, detail) = server
        .admin(Method::GET, "/agent/threads/api:exists", json!(null))
        .await;
    assert_eq!(detail["last_event_id"], 2);
    assert!(detail["last_execution"].is_null());
    let (_, list) = server
        .admin(Method::GET, "/agent/threads", json!(null))
        .await;
    assert_eq!(
        list["threads"].as_array().unwrap().len(),
        1,
        "no thread was created by a bad request"
    );
}

/// Runner batches are validated before anything is stored.
#[tokio::test]
async fn bad_runner_batches_are_refused_whole() {
    let server = TestServer::start().await;
    let key = "api:runner-input";
    let (_, token) = server.spawn(key).await;
    let accepted = server
        .post("/agent/execute", json!({"thread_key": key}))
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().parse().unwrap();
    let mut runner = server.runner(&token);

    // Posting before claiming.
    let (status, body) = runner
        .post(
            execution_id,
            vec![json!({"type": "agent.message", "text": "early"})],
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "execution_not_started")
    );
    runner.must_claim(key).await;

    let cases = [
        (
            json!({"events": [{"seq": 1, "type": "execution.completed", "result_text": "forged"}]}),
            "event_not_allowed",
        ),
        (
            json!({"events": [{"seq": 1, "type": "agent.message"}]}),
            "invalid_request",
        ),
        (
            json!({"events": [{"seq": 1, "type": "no.such.type", "text": "x"}]}),
            "invalid_request",
        ),
        (
            json!({"events": [{"seq": 2, "type": "agent.message", "text": "a"}, {"seq": 2, "type": "agent.message", "text": "b"}]}),
            "invalid_seq",
        ),
        (
            json!({"events": [{"seq": 0, "type": "agent.message", "text": "a"}]}),
            "invalid_seq",
        ),
        (
            json!({"events": [], "finish": {"status": "completed"}}),
            "invalid_request",
        ),
        (
            json!({"events": [], "finish": {"status": "exploded", "error": "x"}}),
            "invalid_request",
        ),
    ];
    for (body, code) in cases {
        let (status, answer) = runner.post_raw(execution_id, body.clone()).await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::BAD_REQUEST, code),
            "{body}"
        );
    }
    let (status, answer) = runner
        .post_raw(uuid::Uuid::now_v7(), json!({"events": []}))
        .await;
    assert_eq!(
        (status, error_code(&answer)),
        (StatusCode::NOT_FOUND, "execution_not_found")
    );

    let (_, detail) = server
        .admin(Method::GET, &format!("/agent/threads/{key}"), json!(null))
        .await;
    assert_eq!(
        detail["last_event_id"], 4,
        "only spawn, queued and started were stored"
    );
    assert_eq!(detail["last_execution"]["status"], "running");
}
