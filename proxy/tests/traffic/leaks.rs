//! Placeholders where they are not bound (headers, query, path), or on their way to a public
//! host in cleartext, are blocked as leaks; placeholders in request bodies are forwarded
//! unchanged and named in the audit.

use centaur_proxy::Limits;
use centaur_proxy::audit::Decision;
use serde_json::json;

use crate::support::{Harness, REAL_KEY, openai_policy, upstream};

#[tokio::test]
async fn placeholders_where_they_are_not_bound_are_blocked_as_leaks() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let (other, other_seen) = upstream().await;
    let mut policy = openai_policy(up);
    policy["allow"] = json!(["127.0.0.1"]);
    let placeholder = h.sandbox("sb1", policy)["OPENAI_API_KEY"].clone();
    let client = h.client("sb1");

    // To a host it is not bound to (same address, other port).
    let response = client
        .get(format!("http://{other}/"))
        .header("authorization", format!("Bearer {placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let record = h.next_audit().await;
    assert_eq!(record.decision, Decision::LeakBlocked);
    assert!(record.reason.unwrap().contains("OPENAI_API_KEY"));

    // In another header of the bound host, and in the query of another.
    let response = client
        .get(format!("http://{up}/"))
        .header("x-debug", &placeholder)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);
    let response = client
        .get(format!("http://{other}/?key={placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);

    assert!(seen.lock().unwrap().is_empty());
    assert!(other_seen.lock().unwrap().is_empty());
}

/// Credentials never travel in cleartext to a public address.
#[tokio::test]
async fn credentials_are_not_sent_over_plain_http_to_public_hosts() {
    let mut h = Harness::start(Limits::default()).await;
    // 192.31.196.1 (AS112, a globally reachable special-purpose block) counts as public; the
    // request must be refused before any dial.
    let placeholder = h.sandbox("sb1", json!({
        "allow": ["192.31.196.1"],
        "secrets": [{"name": "OPENAI_API_KEY", "hosts": ["192.31.196.1"], "headers": ["authorization"]}],
    }))["OPENAI_API_KEY"].clone();
    let response = h
        .client("sb1")
        .get("http://192.31.196.1/v1")
        .header("authorization", &placeholder)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("only over HTTPS")
    );
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);
}

/// An agent ran `env` and its output (placeholders in) went back to the model in the next
/// request body, and stays in every later request of the thread: each is forwarded unchanged,
/// with the bound header swapped, and audited with the body's placeholders named. The real value
/// never enters a body.
#[tokio::test]
async fn placeholders_in_bodies_are_forwarded_unchanged_and_audited() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let (other, other_seen) = upstream().await;
    let mut policy = openai_policy(up);
    policy["allow"] = json!(["127.0.0.1"]);
    let placeholder = h.sandbox("sb1", policy.clone())["OPENAI_API_KEY"].clone();
    // One an earlier sandbox of the thread was given.
    let earlier = h.sandbox("sb0", policy)["OPENAI_API_KEY"].clone();
    let client = h.client("sb1");
    let body = json!({"input": [{"type": "function_call_output",
        "output": format!("OPENAI_API_KEY={placeholder}\nOLD_KEY={earlier}\nHOME=/workspace")}]})
    .to_string();

    for turn in 0..3 {
        let response = client
            .post(format!("http://{up}/v1/responses"))
            .header("authorization", format!("Bearer {placeholder}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "turn {turn}");
        let record = h.next_audit().await;
        assert_eq!(record.decision, Decision::Allowed, "turn {turn}");
        assert_eq!(record.secrets_swapped, ["OPENAI_API_KEY"]);
        assert_eq!(record.body_placeholders, ["OPENAI_API_KEY"]);
        assert_eq!(record.body_unknown_placeholders, 1);
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for request in seen.iter() {
            assert_eq!(request.body, body, "the body is forwarded unchanged");
            assert!(!request.body.contains(REAL_KEY));
            assert_eq!(
                request.headers["authorization"],
                format!("Bearer {REAL_KEY}")
            );
        }
    }

    // To an allowed host the secret is not bound to: forwarded too (the placeholder is
    // worthless there), and audited.
    let response = client
        .post(format!("http://{other}/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let record = h.next_audit().await;
    assert_eq!(record.decision, Decision::Allowed);
    assert_eq!(record.body_placeholders, ["OPENAI_API_KEY"]);
    assert!(record.secrets_swapped.is_empty());
    assert_eq!(other_seen.lock().unwrap()[0].body, body);

    // A coded body is forwarded as it is, not decoded: nothing is named.
    let response = client
        .post(format!("http://{other}/upload"))
        .header("content-encoding", "zstd")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let record = h.next_audit().await;
    assert_eq!(record.decision, Decision::Allowed);
    assert!(record.body_placeholders.is_empty());
}
