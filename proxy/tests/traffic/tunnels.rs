//! `CONNECT` tunnels to allowed hosts, and the ones refused.

use centaur_proxy::Limits;
use centaur_proxy::audit::Decision;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Harness, connect, echo_server};

#[tokio::test]
async fn connect_tunnels_allowed_hosts_and_refuses_the_rest() {
    let mut h = Harness::start(Limits {
        max_tunnels_per_sandbox: 2,
        ..Limits::default()
    })
    .await;
    let echo = echo_server().await;
    h.sandbox(
        "sb1",
        json!({
            "allow": [format!("127.0.0.1:{}", echo.port()), "intercepted.test"],
            "allow_private": ["127.0.0.1"],
            "intercept": ["intercepted.test"],
        }),
    );

    let (mut tunnel, head) = connect(h.tcp, "sb1:cred-sb1", &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the tunnel");

    // Limits: a second tunnel is fine, a third is refused while both are open.
    let (second, head) = connect(h.tcp, "sb1:cred-sb1", &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_third, head) = connect(h.tcp, "sb1:cred-sb1", &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.contains("x-centaur-deny-reason: this sandbox already has 2 tunnels open"),
        "{head}"
    );
    assert_eq!(h.next_audit().await.decision, Decision::Denied);

    // Closing tunnels frees their slots and audits their bytes.
    drop(tunnel);
    drop(second);
    let mut closed = Vec::new();
    for _ in 0..2 {
        closed.push(h.next_audit().await);
    }
    assert!(
        closed
            .iter()
            .all(|r| r.decision == Decision::Allowed && r.method == "CONNECT")
    );
    assert!(
        closed
            .iter()
            .any(|r| r.bytes_up == 23 && r.bytes_down == 23),
        "{closed:?}"
    );
    let (_again, head) = connect(h.tcp, "sb1:cred-sb1", &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Not allowed; and a host that must be intercepted is never tunnelled blind.
    let (_, head) = connect(h.tcp, "sb1:cred-sb1", "example.com:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_, head) = connect(h.tcp, "sb1:cred-sb1", "intercepted.test:443").await;
    assert!(
        head.starts_with("HTTP/1.1 403") && head.contains("must be intercepted"),
        "{head}"
    );
    // SSRF through CONNECT.
    let (_, head) = connect(h.tcp, "sb1:cred-sb1", "169.254.169.254:80").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}
