//! The server keeps every sandbox's egress policy in PostgreSQL and pushes it to a real proxy
//! (the `centaur-proxy` library, serving its control API on loopback).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use centaur_test_support::pg::fresh_database;
use centaur_test_support::proxy::{PROXY_TOKEN, TestProxy};
use centaur_test_support::server::{TestServer, enc, error_code};
use centaur_test_support::temp::temp_dir;

async fn server_with_proxy(proxy: &TestProxy, dir: &std::path::Path) -> TestServer {
    std::fs::write(
        dir.join("policy.json"),
        json!({
            "allow": ["api.openai.com"],
            "secrets": [{"name": "OPENAI_API_KEY", "hosts": ["api.openai.com"],
                         "headers": ["authorization"], "format": "Bearer {value}"}],
        })
        .to_string(),
    )
    .unwrap();
    let mut config = centaur_server::Config::new(fresh_database().await);
    config.proxy_token = Some(PROXY_TOKEN.into());
    config.proxy_control_url = Some(format!("http://{}", proxy.addr));
    config.egress_policy = Some(dir.join("policy.json"));
    config.egress_sync_ms = 100;
    TestServer::start_with(config, true).await
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn sandbox_policies_are_pushed_to_the_proxy_and_follow_the_thread() {
    let dir = temp_dir("egress-push");
    let proxy = TestProxy::start(None, dir.join("sockets")).await;
    let server = server_with_proxy(&proxy, &dir).await;
    let key = "api:egress-push";
    let path = format!("/admin/threads/{}/egress-policy", enc(key));

    // The sandbox is served before it starts, with the deployment's default policy; the
    // backend gets the socket and the placeholders for the sandbox's environment.
    let (sandbox_id, _) = server.spawn(key).await;
    let egress = server
        .backend
        .spec(sandbox_id)
        .egress
        .expect("egress attached");
    assert!(egress.socket.as_ref().unwrap().exists());
    assert!(egress.placeholders["OPENAI_API_KEY"].starts_with("cph_"));
    assert!(proxy.allows(sandbox_id, "api.openai.com"));
    let served = proxy.registry.get(&sandbox_id.to_string()).unwrap();
    assert_eq!(served.config.thread_key.as_deref(), Some(key));
    assert_eq!(served.proxy_credential, egress.proxy_credential);

    let (status, view) = server.admin(Method::GET, &path, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["source"], "default");
    assert_eq!(view["sandbox_id"], sandbox_id.to_string());
    let first_version = view["version"].as_i64().unwrap();

    // An admin narrows the thread's policy: it is in force at once, with a newer version.
    let (status, view) = server
        .admin(
            Method::PUT,
            &path,
            json!({"allow": ["pypi.org", "*.pythonhosted.org"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["source"], "thread");
    assert!(view["version"].as_i64().unwrap() > first_version);
    assert!(proxy.allows(sandbox_id, "pypi.org"));
    assert!(!proxy.allows(sandbox_id, "api.openai.com"));

    // Policies that cannot work are refused and change nothing: bad shapes by the server,
    // unknown secrets by the proxy.
    for (bad, code) in [
        (json!({"allow": ["not a host!"]}), "invalid_request"),
        (
            json!({"allow": ["x.org"], "secrets": [{"name": "OPENAI_API_KEY", "hosts": ["x.org"]}]}),
            "invalid_policy",
        ),
        (
            json!({"allow": ["x.org"], "secrets": [{"name": "NOT_IN_PROXY", "hosts": ["x.org"], "headers": ["authorization"]}]}),
            "egress_policy_refused",
        ),
        // A secret's value is given out only for a tool the operator granted it.
        (
            json!({"allow": ["x.org"], "reveal": ["OPENAI_API_KEY"]}),
            "invalid_policy",
        ),
    ] {
        let (status, body) = server.admin(Method::PUT, &path, bad).await;
        assert!(
            status.is_client_error() || status == StatusCode::BAD_GATEWAY,
            "{status} {body}"
        );
        assert_eq!(error_code(&body), code, "{body}");
    }
    let (_, view) = server.admin(Method::GET, &path, Value::Null).await;
    assert_eq!(
        view["policy"]["allow"],
        json!(["pypi.org", "*.pythonhosted.org"])
    );
    assert!(proxy.allows(sandbox_id, "pypi.org"));

    // Only admins decide what a thread may reach.
    let token = server.backend.token(sandbox_id);
    let (status, _) = server
        .call(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"allow": ["evil.example"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A proxy that restarts empty is repopulated by the periodic sync, socket included.
    proxy.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let restarted = TestProxy::start(Some(proxy.addr), dir.join("sockets")).await;
    eventually("the sync repopulates the proxy", || {
        restarted.allows(sandbox_id, "pypi.org")
    })
    .await;
    assert!(egress.socket.as_ref().unwrap().exists());

    // Back to the default.
    let (status, view) = server.admin(Method::DELETE, &path, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["source"], "default");
    assert!(restarted.allows(sandbox_id, "api.openai.com"));

    // Released: gone from the proxy and from the desired state.
    server
        .post(&format!("/agent/threads/{}/release", enc(key)), json!({}))
        .await;
    assert!(restarted.registry.get(&sandbox_id.to_string()).is_none());
    assert!(!egress.socket.as_ref().unwrap().exists());
    let pool = sqlx::PgPool::connect(&server.database_url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sandbox_egress")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);

    let _ = std::fs::remove_dir_all(dir);
}

/// Without the proxy no sandbox starts, and nothing is left behind.
#[tokio::test]
async fn spawning_while_the_proxy_is_away_fails_cleanly() {
    let dir = temp_dir("egress-away");
    let proxy = TestProxy::start(None, dir.join("sockets")).await;
    let server = server_with_proxy(&proxy, &dir).await;
    proxy.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let key = "api:egress-away";
    let (status, body) = server
        .admin(
            Method::POST,
            "/agent/spawn",
            json!({"thread_key": key, "harness": "echo"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "egress_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
    let (_, detail) = server
        .admin(
            Method::GET,
            &format!("/agent/threads/{}", enc(key)),
            Value::Null,
        )
        .await;
    assert!(detail["sandbox"].is_null(), "{detail}");
    let pool = sqlx::PgPool::connect(&server.database_url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sandbox_egress")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);

    // Back: the next spawn works.
    let _proxy = TestProxy::start(Some(proxy.addr), dir.join("sockets")).await;
    let (sandbox_id, _) = server.spawn(key).await;
    assert!(server.backend.spec(sandbox_id).egress.is_some());
    let _ = std::fs::remove_dir_all(dir);
}

/// A server that restarts next to a proxy that restarted too (as `centaur dev` does) pushes
/// every sandbox's policy as soon as it is ready, not a sync period later: sandboxes it adopts
/// can reach their hosts from their first turn.
#[tokio::test]
async fn a_restarted_server_syncs_the_proxy_as_soon_as_it_is_ready() {
    let dir = temp_dir("egress-first-sync");
    let proxy = TestProxy::start(None, dir.join("sockets")).await;
    let mut first = server_with_proxy(&proxy, &dir).await;
    let (sandbox_id, _) = first.spawn("api:egress-restart").await;
    assert!(proxy.allows(sandbox_id, "api.openai.com"));
    let database_url = first.database_url.clone();
    first.shutdown().await;

    // Both come back: a fresh proxy knows nothing; the sync period is a minute.
    let proxy = TestProxy::start(None, dir.join("sockets-2")).await;
    let mut config = centaur_server::Config::new(&database_url);
    config.proxy_token = Some(PROXY_TOKEN.into());
    config.proxy_control_url = Some(format!("http://{}", proxy.addr));
    config.egress_policy = Some(dir.join("policy.json"));
    config.egress_sync_ms = 60_000;
    let _second = TestServer::start_with(config, true).await;
    eventually("the proxy knows the sandbox again", || {
        proxy.allows(sandbox_id, "api.openai.com")
    })
    .await;
}
