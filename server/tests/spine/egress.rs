use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use centaur_test_support::pg::fresh_database;
use centaur_test_support::proxy::PROXY_TOKEN;
use centaur_test_support::server::{ADMIN_KEY, TestServer, error_code};

fn record(
    sandbox_id: &str,
    thread_key: Option<&str>,
    decision: &str,
    host: &str,
    reason: Option<&str>,
) -> Value {
    let mut record = json!({
        "at": "2026-11-22T01:00:00Z", "sandbox_id": sandbox_id, "thread_key": thread_key,
        "host": host, "port": 443, "method": "GET", "path": "/", "status": 403,
        "bytes_up": 0, "bytes_down": 0, "decision": decision, "reason": reason,
        "secrets_swapped": if decision == "allowed" { json!(["OPENAI_API_KEY"]) } else { json!([]) },
        "duration_ms": 3,
    });
    if decision == "allowed" {
        // An agent's `env` output in a model request: forwarded, and named.
        record["body_placeholders"] = json!(["OPENAI_API_KEY"]);
        record["body_unknown_placeholders"] = json!(1);
    }
    record
}

/// The proxy reports its audit: everything is stored, refusals reach the streams of the threads
/// their sandboxes serve (whatever thread a record names).
#[tokio::test]
async fn egress_audit_is_stored_and_refusals_reach_the_thread() {
    let database_url = fresh_database().await;
    let mut config = centaur_server::Config::new(&database_url);
    config.proxy_token = Some(PROXY_TOKEN.into());
    let server = TestServer::start_with(config, true).await;
    let key = "api:egress";
    let (sandbox, sandbox_token) = server.spawn(key).await;
    let (other_sandbox, _) = server.spawn("api:egress-other").await;
    let (sandbox, other_sandbox) = (sandbox.to_string(), other_sandbox.to_string());
    let mut stream = server.events(key, "after_event_id=2").await;
    let mut other_stream = server.events("api:egress-other", "after_event_id=2").await;

    let batch = json!({"records": [
        record(&sandbox, Some(key), "allowed", "api.openai.com", None),
        record(&sandbox, Some(key), "denied", "evil.example", Some("evil.example:443 is not on this sandbox's list of allowed hosts")),
        record(&sandbox, None, "leak_blocked", "paste.example", Some("placeholder for OPENAI_API_KEY found in header `x-debug` of a request to paste.example, where it is not bound")),
        // A sandbox the server never started, naming a real thread: stored, no event.
        record("0190f5a8-0000-7000-8000-000000000000", Some(key), "denied", "x.example", None),
        record("sb-unknown", Some("api:egress-other"), "denied", "y.example", None),
        // Another thread's sandbox naming this thread: the event goes to its own thread.
        record(&other_sandbox, Some(key), "denied", "z.example", None),
    ]});
    let (status, answer) = server
        .call(
            Method::POST,
            "/proxy/v1/audit",
            Some(PROXY_TOKEN),
            Some(batch.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"stored": 6, "events": 3}));

    let frames = stream.until_id(4, Duration::from_secs(5)).await;
    assert_eq!(
        frames.iter().map(|f| f.event.as_str()).collect::<Vec<_>>(),
        ["egress.denied", "egress.denied"]
    );
    assert_eq!(frames[0].data["host"], "evil.example");
    assert!(
        frames[0].data["reason"]
            .as_str()
            .unwrap()
            .contains("not on this sandbox's list")
    );
    assert_eq!(frames[1].data["host"], "paste.example");
    // The other thread got its own sandbox's refusal, nothing else.
    let other = other_stream.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (other.event.as_str(), other.data["host"].as_str()),
        ("egress.denied", Some("z.example"))
    );
    assert!(
        other_stream
            .next(Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(stream.next(Duration::from_millis(300)).await.is_none());

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url)
        .await
        .unwrap();
    /// host, decision, secrets swapped, placeholders in the body, unknown ones.
    type Row = (String, String, Vec<String>, Vec<String>, i32);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT host, decision, secrets_swapped, body_placeholders, body_unknown_placeholders \
         FROM egress_audit ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 6);
    // The body's placeholders are stored by name (records without them read as none).
    assert_eq!(
        rows[0],
        (
            "api.openai.com".into(),
            "allowed".into(),
            vec!["OPENAI_API_KEY".to_owned()],
            vec!["OPENAI_API_KEY".to_owned()],
            1
        )
    );
    assert_eq!((rows[1].3.len(), rows[1].4), (0, 0));
    assert_eq!(rows[2].1, "leak_blocked");

    // Who may report: the proxy token and the admin key; nobody else. The proxy token can do
    // nothing else.
    for (token, want) in [
        (None, 401),
        (Some(sandbox_token.as_str()), 403),
        (Some(ADMIN_KEY), 200),
    ] {
        let (status, _) = server
            .call(
                Method::POST,
                "/proxy/v1/audit",
                token,
                Some(json!({"records": []})),
            )
            .await;
        assert_eq!(status.as_u16(), want, "{token:?}");
    }
    for (method, path) in [
        (Method::GET, "/agent/threads"),
        (Method::GET, "/agent/threads/api:egress"),
        (Method::GET, "/agent/threads/api:egress/events"),
    ] {
        let (status, _) = server
            .call(method.clone(), path, Some(PROXY_TOKEN), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    // A malformed record is refused whole.
    let (status, body) = server
        .call(
            Method::POST,
            "/proxy/v1/audit",
            Some(PROXY_TOKEN),
            Some(json!({"records": [{"host": "x"}]})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}
