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

/// A tool's principal (`tool-<name>`) is pushed like a sandbox, without a thread; the server
/// reads a secret the tool's policy lists in `reveal` through the control API. Every reveal,
/// given or refused, is audited under the principal by name, never by value; only principals
/// the proxy serves get one, and only with the control token.
#[tokio::test]
async fn a_tool_principal_gets_a_revealed_secret_and_the_reveal_is_audited() {
    use centaur_protocol::egress::control::DesiredSandbox;
    use centaur_proxy::audit::Decision;
    let mut h = Harness::start(Limits::default()).await;
    let (addr, _control) = control_api(&h).await;
    let client = ControlApi {
        base: format!("http://{addr}"),
        token: "control-token",
    };

    // Not served yet: refused, and nothing is read or audited.
    match client.reveal("OPENAI_API_KEY", "tool-postgres").await {
        Err(Refused(404, code, message)) => {
            assert_eq!(code, ControlErrorCode::UnknownPrincipal);
            assert!(message.contains("tool-postgres"), "{message}");
        }
        other => panic!("expected a 404, got {other:?}"),
    }

    let applied = client
        .apply(
            "tool-postgres",
            &DesiredSandbox {
                version: 1,
                thread_key: None,
                policy: serde_json::from_value(
                    json!({"allow": ["127.0.0.1"], "reveal": ["OPENAI_API_KEY"]}),
                )
                .unwrap(),
            },
        )
        .await
        .unwrap();
    assert!(applied.socket.is_some());
    assert_eq!(
        client
            .reveal("OPENAI_API_KEY", "tool-postgres")
            .await
            .unwrap(),
        REAL_KEY
    );
    let record = h.next_audit().await;
    assert_eq!(
        (
            record.sandbox_id.as_str(),
            record.method.as_str(),
            record.decision,
            record.thread_key.as_deref()
        ),
        ("tool-postgres", "REVEAL", Decision::Allowed, None)
    );
    assert_eq!(record.secrets_swapped, ["OPENAI_API_KEY"]);
    assert!(!format!("{record:?}").contains(REAL_KEY));

    // A policy listing in `reveal` a secret the proxy has no source for is refused, as a
    // binding of one is; the principal keeps its policy, and the secret is not revealed.
    match client
        .apply(
            "tool-postgres",
            &DesiredSandbox {
                version: 2,
                thread_key: None,
                policy: serde_json::from_value(json!({"reveal": ["NOT_CONFIGURED"]})).unwrap(),
            },
        )
        .await
    {
        Err(Refused(400, code, message)) => {
            assert_eq!(code, ControlErrorCode::InvalidRequest);
            assert!(message.contains("NOT_CONFIGURED"), "{message}");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    match client.reveal("NOT_CONFIGURED", "tool-postgres").await {
        Err(Refused(403, code, _)) => assert_eq!(code, ControlErrorCode::RevealNotAllowed),
        other => panic!("expected a 403, got {other:?}"),
    }
    let record = h.next_audit().await;
    assert_eq!(
        (record.decision, record.status),
        (Decision::Denied, Some(403))
    );
    assert_eq!(record.secrets_swapped, ["NOT_CONFIGURED"]);

    // A source that cannot be read: a 502 naming the secret, without a value.
    let fresh = Harness::start(Limits::default()).await;
    std::fs::remove_file(fresh.dir.join("openai")).unwrap();
    let (fresh_addr, _fresh_control) = control_api(&fresh).await;
    let fresh_client = ControlApi {
        base: format!("http://{fresh_addr}"),
        token: "control-token",
    };
    fresh_client
        .apply(
            "tool-x",
            &DesiredSandbox {
                version: 1,
                thread_key: None,
                policy: serde_json::from_value(json!({"reveal": ["OPENAI_API_KEY"]})).unwrap(),
            },
        )
        .await
        .unwrap();
    match fresh_client.reveal("OPENAI_API_KEY", "tool-x").await {
        Err(Refused(502, code, message)) => {
            assert_eq!(code, ControlErrorCode::SecretUnavailable);
            assert!(message.contains("OPENAI_API_KEY"), "{message}");
        }
        other => panic!("expected a 502, got {other:?}"),
    }

    // Without the control token, nothing.
    let wrong = ControlApi {
        base: format!("http://{addr}"),
        token: "wrong",
    };
    assert!(matches!(
        wrong.reveal("OPENAI_API_KEY", "tool-postgres").await,
        Err(Refused(401, _, _))
    ));
}

/// The proxy reveals only what a tool principal's pushed policy lists: a principal gets a value
/// only if it is a tool's and its policy in force lists the secret in `reveal`. (Whoever holds
/// the control token can push such a policy: the token holder is trusted as the server is.) A sandbox (even one
/// whose policy lists it) and a tool whose policy binds the secret but does not list it are
/// refused with `reveal_not_allowed`, and the refusal is audited under the principal.
#[tokio::test]
async fn a_reveal_not_in_a_tools_policy_is_refused() {
    use centaur_protocol::egress::control::DesiredSandbox;
    use centaur_proxy::audit::Decision;
    let mut h = Harness::start(Limits::default()).await;
    let (up, _seen) = upstream().await;
    let (addr, _control) = control_api(&h).await;
    let client = ControlApi {
        base: format!("http://{addr}"),
        token: "control-token",
    };
    let push = |id: &'static str, policy: Value| {
        let client = &client;
        async move {
            client
                .apply(
                    id,
                    &DesiredSandbox {
                        version: 1,
                        thread_key: (!id.starts_with("tool-")).then(|| "api:t".to_owned()),
                        policy: serde_json::from_value(policy).unwrap(),
                    },
                )
                .await
                .unwrap()
        }
    };
    // A sandbox whose policy asks for it anyway, and a tool that only has it bound.
    push("sb-1", json!({"reveal": ["OPENAI_API_KEY"]})).await;
    push("tool-slack", openai_policy(up)).await;
    for principal in ["sb-1", "tool-slack"] {
        match client.reveal("OPENAI_API_KEY", principal).await {
            Err(Refused(403, code, message)) => {
                assert_eq!(code, ControlErrorCode::RevealNotAllowed);
                assert!(
                    message.contains(principal) && message.contains("OPENAI_API_KEY"),
                    "{message}"
                );
                assert!(!message.contains(REAL_KEY), "{message}");
            }
            other => panic!("{principal}: expected a 403, got {other:?}"),
        }
        let record = h.next_audit().await;
        assert_eq!(
            (
                record.sandbox_id.as_str(),
                record.method.as_str(),
                record.decision,
                record.status
            ),
            (principal, "REVEAL", Decision::Denied, Some(403))
        );
    }
}

/// A tool that speaks a protocol other than HTTP (PostgreSQL) reaches its server on a port
/// other than 443 through a blind tunnel from its principal's Unix socket, when the host is
/// allowed (a pattern without a port allows every port) and may be private.
#[tokio::test]
async fn a_tool_tunnels_to_a_private_non_https_port_through_its_socket() {
    use centaur_protocol::egress::control::DesiredSandbox;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(Limits::default()).await;
    let echo = crate::support::echo_server().await;
    let (addr, _control) = control_api(&h).await;
    let client = ControlApi {
        base: format!("http://{addr}"),
        token: "control-token",
    };
    let policy = |allow_private: Value| DesiredSandbox {
        version: 1,
        thread_key: None,
        policy: serde_json::from_value(
            json!({"allow": ["127.0.0.1"], "allow_private": allow_private}),
        )
        .unwrap(),
    };
    let applied = client
        .apply("tool-postgres", &policy(json!(["127.0.0.1"])))
        .await
        .unwrap();
    let socket = applied.socket.unwrap();
    let connect = |target: String| {
        let socket = socket.clone();
        async move {
            let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
            stream
                .write_all(
                    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            (stream, String::from_utf8(head).unwrap())
        }
    };
    let (mut tunnel, head) = connect(echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The start of a PostgreSQL session (an SSLRequest), relayed untouched.
    let ssl_request = [0u8, 0, 0, 8, 4, 210, 22, 47];
    tunnel.write_all(&ssl_request).await.unwrap();
    let mut back = [0u8; 8];
    tunnel.read_exact(&mut back).await.unwrap();
    assert_eq!(back, ssl_request);

    // Not allowed to be private: refused after resolution.
    client
        .apply(
            "tool-postgres",
            &DesiredSandbox {
                version: 2,
                ..policy(json!([]))
            },
        )
        .await
        .unwrap();
    let (_, head) = connect(echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}
