//! Placeholders where they are not bound, or on their way to a public host in cleartext, are
//! blocked as leaks.

use centaur_proxy::Limits;
use centaur_proxy::audit::Decision;
use serde_json::json;

use crate::support::{Harness, openai_policy, upstream};

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

    // In another header, and in the body, of the bound host.
    let response = client
        .get(format!("http://{up}/"))
        .header("x-debug", &placeholder)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);
    let response = client
        .post(format!("http://{up}/"))
        .body(format!("key={placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("request body")
    );
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
