//! The control API through which the server pushes sandboxes and policies.

use centaur_protocol::egress::control::ControlErrorCode;
use centaur_proxy::Limits;
use serde_json::{Value, json};

use crate::support::{
    ControlApi, Harness, REAL_KEY, Refused, control_api, forward_to, http, openai_policy, upstream,
    via,
};

#[tokio::test]
async fn the_server_pushes_sandboxes_and_policies_through_the_control_api() {
    use centaur_protocol::egress::control::{DesiredSandbox, SyncEntry, SyncRequest};
    let h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let (addr, _control) = control_api(&h).await;
    let client = ControlApi {
        base: format!("http://{addr}"),
        token: "control-token",
    };
    let desired = |version: u64, policy: Value| DesiredSandbox {
        version,
        thread_key: Some("api:pushed".into()),
        policy: serde_json::from_value(policy).unwrap(),
    };

    // Created: the answer carries the socket (already accepting), placeholders and the TCP
    // credential.
    let applied = client
        .apply("sb-pushed", &desired(10, openai_policy(up)))
        .await
        .unwrap();
    assert!(applied.applied);
    let socket = applied.socket.clone().expect("a socket per sandbox");
    assert!(socket.exists());
    let placeholder = applied.placeholders["OPENAI_API_KEY"].clone();
    assert!(placeholder.starts_with("cph_"));
    let sandbox = via(forward_to(socket.clone()).await);
    let request = |client: &reqwest::Client| {
        client
            .get(format!("http://{up}/models"))
            .header("authorization", format!("Bearer {placeholder}"))
            .send()
    };
    assert_eq!(request(&sandbox).await.unwrap().status(), 200);
    assert_eq!(
        seen.lock().unwrap()[0].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );
    // The same sandbox over TCP with the credential from the answer.
    let tcp = http()
        .proxy(
            reqwest::Proxy::all(format!("http://{}", h.tcp))
                .unwrap()
                .basic_auth("sb-pushed", &applied.proxy_credential),
        )
        .build()
        .unwrap();
    assert_eq!(request(&tcp).await.unwrap().status(), 200);

    // Narrowed: takes effect for the next request. A late, older push changes nothing.
    let narrowed = json!({"allow": ["*.allowed.test"]});
    assert!(
        client
            .apply("sb-pushed", &desired(11, narrowed))
            .await
            .unwrap()
            .applied
    );
    assert_eq!(request(&sandbox).await.unwrap().status(), 403);
    let stale = client
        .apply("sb-pushed", &desired(10, openai_policy(up)))
        .await
        .unwrap();
    assert!(!stale.applied);
    assert_eq!(stale.version, 11);
    assert_eq!(request(&sandbox).await.unwrap().status(), 403);

    // The full sync re-applies what the server wants.
    let synced = client
        .sync(&SyncRequest {
            as_of: 12,
            sandboxes: vec![SyncEntry {
                sandbox_id: "sb-pushed".into(),
                desired: desired(12, openai_policy(up)),
            }],
        })
        .await
        .unwrap();
    assert_eq!(synced.sandboxes.len(), 1);
    assert!(synced.removed.is_empty());
    assert_eq!(request(&sandbox).await.unwrap().status(), 200);
    assert_eq!(client.list().await.unwrap()[0].version, 12);

    // Released: the socket goes away and a late push cannot bring it back.
    assert!(client.remove("sb-pushed", 13).await.unwrap());
    assert!(!socket.exists());
    assert!(request(&sandbox).await.is_err() || request(&sandbox).await.unwrap().status() != 200);
    match client
        .apply("sb-pushed", &desired(12, openai_policy(up)))
        .await
    {
        Err(Refused(409, code, _)) => assert_eq!(code, ControlErrorCode::SandboxRemoved),
        other => panic!("expected a 409, got {other:?}"),
    }
    assert!(client.list().await.unwrap().is_empty());

    // Bad pushes are refused with reasons, and change nothing.
    let refused = |r: Result<_, Refused>| match r {
        Err(Refused(status, _, message)) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (status, message) = refused(
        client
            .apply("sb-2", &desired(20, json!({"allow": ["x.test"], "secrets": [{"name": "NOPE", "hosts": ["x.test"], "headers": ["authorization"]}]})))
            .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("`NOPE` is not configured"), "{message}");
    let (status, message) = refused(client.apply("..%2Fescape", &desired(20, json!({}))).await);
    assert_eq!(status, 400, "{message}");
    let wrong = ControlApi {
        base: format!("http://{addr}"),
        token: "wrong",
    };
    assert!(matches!(wrong.list().await, Err(Refused(401, _, _))));
    let raw = http()
        .build()
        .unwrap()
        .put(format!("http://{addr}/v1/sandboxes/sb-3"))
        .bearer_auth("control-token")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(client.list().await.unwrap().is_empty());
}
