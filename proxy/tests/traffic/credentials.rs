//! The swap: a placeholder becomes the real value on its bound host and header, the echo is
//! scrubbed, and a secret that cannot be read breaks only its own hosts.

use centaur_proxy::Limits;
use centaur_proxy::audit::Decision;
use serde_json::{Value, json};

use crate::support::{Harness, REAL_KEY, openai_policy, upstream};

#[tokio::test]
async fn allowed_request_is_forwarded_with_the_credential_swapped_and_the_echo_scrubbed() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let placeholders = h.sandbox("sb1", openai_policy(up));
    let placeholder = &placeholders["OPENAI_API_KEY"];

    let response = h
        .client("sb1")
        .post(format!("http://{up}/v1/responses?stream=true"))
        .header("authorization", format!("Bearer {placeholder}"))
        .header("accept-encoding", "gzip")
        .body("{\"input\":\"hi\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The echo of the real key comes back as the placeholder, in headers and body.
    assert_eq!(
        response.headers()["x-echo-auth"],
        format!("Bearer {placeholder}")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["authorization"], format!("Bearer {placeholder}"));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].uri, "/v1/responses?stream=true");
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );
    assert_eq!(seen[0].body, "{\"input\":\"hi\"}");
    assert!(
        !seen[0].headers.contains_key("proxy-authorization"),
        "proxy credentials stay in the proxy"
    );
    assert_eq!(
        seen[0].headers["accept-encoding"], "identity",
        "no compressed echo past the scrubber"
    );

    let record = h.next_audit().await;
    assert_eq!(record.decision, Decision::Allowed);
    assert_eq!(record.sandbox_id, "sb1");
    assert_eq!(record.thread_key.as_deref(), Some("api:sb1"));
    assert_eq!(record.status, Some(200));
    assert_eq!(record.path, "/v1/responses");
    assert_eq!(record.secrets_swapped, ["OPENAI_API_KEY"]);
    assert_eq!(record.bytes_up, 14);
    assert!(record.bytes_down > 0);
    assert!(
        !serde_json::to_string(&record).unwrap().contains(REAL_KEY),
        "audit never holds a value"
    );
}

/// A secret that cannot be read breaks only the hosts it is bound to.
#[tokio::test]
async fn a_missing_secret_only_affects_its_own_hosts() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let (other, other_seen) = upstream().await;
    let mut policy = openai_policy(up);
    policy["secrets"][0]["name"] = json!("NOT_CONFIGURED");
    h.sandbox("sb1", policy);
    let client = h.client("sb1");
    assert_eq!(
        client
            .get(format!("http://{other}/fine"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(h.next_audit().await.decision, Decision::Allowed);
    let response = client
        .get(format!("http://{up}/needs-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("NOT_CONFIGURED")
    );
    assert_eq!(h.next_audit().await.decision, Decision::Denied);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(other_seen.lock().unwrap().len(), 1);
}
