//! Policies: denied hosts, one policy per sandbox, and changes that apply inside open tunnels.

use std::net::SocketAddr;

use bytes::Bytes;
use centaur_proxy::Limits;
use centaur_proxy::audit::Decision;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::support::{
    Harness, http, intercept_policy, intercepting, openai_policy, tls_through, tls_upstream,
    upstream,
};

#[tokio::test]
async fn denied_hosts_get_a_readable_403_and_nothing_reaches_upstream() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    h.sandbox(
        "sb1",
        json!({"allow": ["*.allowed.test"], "deny": ["bad.allowed.test"]}),
    );
    let client = h.client("sb1");

    let response = client.get(format!("http://{up}/")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let reason = response.headers()["x-centaur-deny-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("not on this sandbox's list of allowed hosts"),
        "{reason}"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("ask a person on this thread"), "{body}");
    assert_eq!(h.next_audit().await.decision, Decision::Denied);

    let response = client.get("http://bad.allowed.test/").send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("explicitly denied")
    );
    assert!(seen.lock().unwrap().is_empty());
}

/// Two sandboxes on one proxy, each on its own Unix socket: different policies, and one's
/// placeholder is worthless (and blocked) in the other.
#[tokio::test]
async fn two_sandboxes_with_different_policies_on_unix_sockets() {
    let mut h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let a_placeholder = h.sandbox("sb-a", openai_policy(up))["OPENAI_API_KEY"].clone();
    h.sandbox("sb-b", json!({"allow": ["*.allowed.test"]}));
    let a = h.unix_forwarder("sb-a").await;
    let b = h.unix_forwarder("sb-b").await;
    let via = |addr: SocketAddr| {
        http()
            .proxy(reqwest::Proxy::all(format!("http://{addr}")).unwrap())
            .build()
            .unwrap()
    };

    let response = via(a)
        .get(format!("http://{up}/a"))
        .header("authorization", format!("Bearer {a_placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(h.next_audit().await.sandbox_id, "sb-a");
    let response = via(b).get(format!("http://{up}/b")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.sandbox_id, "sb-b");

    // B cannot use A's placeholder even where A could.
    h.sandbox("sb-b", openai_policy(up));
    let response = via(b)
        .get(format!("http://{up}/b"))
        .header("authorization", format!("Bearer {a_placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let record = h.next_audit().await;
    assert_eq!(
        (record.sandbox_id.as_str(), record.decision),
        ("sb-b", Decision::LeakBlocked)
    );
    assert!(record.reason.unwrap().contains("unknown placeholder"));
    assert_eq!(seen.lock().unwrap().len(), 1);

    // A sandbox removed from the registry is refused at once on its socket.
    h.registry.remove("sb-a");
    let response = via(a).get(format!("http://{up}/a")).send().await.unwrap();
    assert_eq!(response.status(), 403);
}

/// A policy change reaches requests inside an already open intercepted tunnel.
#[tokio::test]
async fn policy_changes_apply_inside_open_tunnels() {
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = |auth: String| {
        hyper::Request::get("/")
            .header("host", format!("127.0.0.1:{}", up.port()))
            .header("authorization", auth)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let response = sender
        .send_request(request(format!("Bearer {placeholder}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    assert_eq!(h.next_audit().await.decision, Decision::Allowed);

    // The host is taken off the list while the tunnel is open.
    h.sandbox("sb1", json!({"allow": ["*.allowed.test"]}));
    let response = sender
        .send_request(request("Bearer x".into()))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.decision, Decision::Denied);
    assert_eq!(seen.lock().unwrap().len(), 1);
}
