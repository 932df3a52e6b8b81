use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use centaur_test_support::http::http;
use centaur_test_support::pg::fresh_database;
use centaur_test_support::server::{ADMIN_KEY, TestServer, error_code};

/// Who may do what: admin key, API keys, sandbox tokens; 401 without a valid token, 403
/// without the right.
#[tokio::test]
async fn auth_matrix() {
    let server = TestServer::start().await;
    let (own_sandbox, sandbox_token) = server.spawn("api:mine").await;
    server.spawn("api:other").await;
    let accepted = server
        .post("/agent/execute", json!({"thread_key": "api:other"}))
        .await;
    let other_execution = accepted["execution_id"].as_str().unwrap().to_owned();

    let created = server.post("/admin/api-keys", json!({"name": "ci"})).await;
    let api_key = created["token"].as_str().unwrap().to_owned();
    assert!(api_key.starts_with("cak_"));

    // Public routes need nothing.
    for path in ["/healthz", "/readyz"] {
        let (status, _) = server.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }

    let spawn_body = || Some(json!({"thread_key": "api:new", "harness": "echo"}));
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/agent/spawn".into(), spawn_body()),
        (Method::GET, "/agent/threads".into(), None),
        (Method::GET, "/agent/threads/api:mine".into(), None),
        (Method::GET, "/agent/threads/api:other".into(), None),
        (
            Method::POST,
            "/agent/threads/api:other/interrupt".into(),
            Some(json!({})),
        ),
        (Method::GET, "/admin/api-keys".into(), None),
        (
            Method::POST,
            "/runner/v1/threads/api:mine/claim".into(),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/runner/v1/threads/api:other/claim".into(),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/runner/v1/executions/{other_execution}"),
            None,
        ),
    ];
    // Expected status per token: none, garbage, admin, API key, sandbox of api:mine.
    let expected: [[u16; 5]; 9] = [
        [401, 401, 200, 200, 403],
        [401, 401, 200, 200, 403],
        [401, 401, 200, 200, 200],
        [401, 401, 200, 200, 403],
        [401, 401, 200, 200, 403],
        [401, 401, 200, 403, 403],
        [401, 401, 204, 403, 204],
        // (the interrupt above cancelled api:other's execution: nothing to claim)
        [401, 401, 204, 403, 403],
        // Another thread's execution is no execution for a sandbox: 404, as for an id that
        // does not exist, so its answers tell nothing about other threads.
        [401, 401, 200, 403, 404],
    ];
    let tokens = [
        None,
        Some("cak_00000000000000000000000000000000_nope"),
        Some(ADMIN_KEY),
        Some(api_key.as_str()),
        Some(sandbox_token.as_str()),
    ];
    for ((method, path, body), want) in cases.iter().zip(expected) {
        for (token, want) in tokens.iter().zip(want) {
            let (status, answer) = server
                .call(method.clone(), path, *token, body.clone())
                .await;
            assert_eq!(
                status.as_u16(),
                want,
                "{method} {path} with token #{:?}: {answer}",
                tokens.iter().position(|t| t == token)
            );
            if want == 401 {
                assert_eq!(error_code(&answer), "unauthorized");
            }
            if want == 403 {
                assert_eq!(error_code(&answer), "forbidden");
            }
        }
    }

    // The scheme is case-insensitive (RFC 7235).
    let lower = server
        .http
        .get(format!("{}/agent/threads", server.url))
        .header("authorization", format!("bearer {ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), StatusCode::OK);

    // A sandbox can follow its own thread's stream but not another's.
    let (status, _) = server
        .call(
            Method::GET,
            "/agent/threads/api:other/events",
            Some(&sandbox_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let own = server
        .request(
            Method::GET,
            "/agent/threads/api:mine/events",
            Some(&sandbox_token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    drop(own);

    // A sandbox cannot decide approvals (not even its own thread's).
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/agent/threads/api:mine/approvals/{own_sandbox}"),
            Some(&sandbox_token),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Revocation takes effect at once; a wrong secret for a real key id is refused.
    let id = created["id"].as_str().unwrap();
    let tampered = format!("{}x", &api_key[..api_key.len() - 1]);
    let (status, _) = server
        .call(Method::GET, "/agent/threads", Some(&tampered), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/admin/api-keys/{id}"),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .call(Method::GET, "/agent/threads", Some(&api_key), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, keys) = server
        .admin(Method::GET, "/admin/api-keys", json!(null))
        .await;
    assert!(keys["api_keys"][0]["revoked_at"].is_string());
    assert!(
        keys.to_string().find(&api_key[40..]).is_none(),
        "secrets are never listed"
    );

    // Releasing the sandbox ends its token.
    server
        .post("/agent/threads/api:mine/release", json!(null))
        .await;
    let (status, _) = server
        .call(
            Method::GET,
            "/agent/threads/api:mine",
            Some(&sandbox_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Without an admin key configured, admin-looking tokens get nothing.
#[tokio::test]
async fn no_admin_key_means_no_admin() {
    let database_url = fresh_database().await;
    let mut config = centaur_server::Config::new(&database_url);
    config.admin_api_key = None;
    config.bind_addr = "127.0.0.1:0".parse().unwrap();
    let server = centaur_server::start(config).await.unwrap();
    let http = http().build().unwrap();
    while http
        .get(format!("{}/readyz", server.url()))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let response = http
        .get(format!("{}/agent/threads", server.url()))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    server.shutdown().await;
}

/// A short admin key is refused at start-up with a clear reason.
#[tokio::test]
async fn weak_admin_key_is_refused() {
    let mut config = centaur_server::Config::new("postgres://nobody@127.0.0.1:1/none");
    config.admin_api_key = Some("short".into());
    let error = centaur_server::start(config).await.err().expect("refused");
    assert!(error.to_string().contains("at least 16"), "{error}");
}
