//! Address checks after resolution: private, metadata, documentation and wrapped addresses.

use centaur_proxy::Limits;
use centaur_proxy::audit::Decision;
use serde_json::json;

use crate::support::{Harness, upstream};

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_after_resolution() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    // Allowed by name, but not allowed to be private: loopback is refused after resolution.
    h.sandbox(
        "sb1",
        json!({"allow": ["127.0.0.1", "localhost", "169.254.169.254"]}),
    );
    let client = h.client("sb1");
    for url in [
        format!("http://{up}/"),
        format!("http://localhost:{}/", up.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 403, "{url}");
        let reason = response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            reason.contains("loopback") || reason.contains("cloud metadata"),
            "{url}: {reason}"
        );
        assert_eq!(h.next_audit().await.decision, Decision::Denied);
    }
    assert!(seen.lock().unwrap().is_empty());
}

/// Documentation ranges, and private addresses wrapped in NAT64 or 6to4, are refused like any
/// other non-public address.
#[tokio::test]
async fn documentation_and_wrapped_private_addresses_are_refused() {
    let mut h = Harness::start(Limits::default()).await;
    let targets = [
        "192.0.2.10",
        "198.51.100.10",
        "203.0.113.10",
        "[2001:db8::1]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a00:1::1]",
    ];
    let hosts: Vec<&str> = targets.iter().map(|t| t.trim_matches(['[', ']'])).collect();
    h.sandbox("sb1", json!({ "allow": hosts }));
    let client = h.client("sb1");
    for target in targets {
        let response = client
            .get(format!("http://{target}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{target}");
        let reason = response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            ["documentation", "cloud metadata", "private"]
                .iter()
                .any(|class| reason.contains(&format!("a {class} address"))),
            "{target}: {reason}"
        );
        assert_eq!(h.next_audit().await.decision, Decision::Denied, "{target}");
    }
}
