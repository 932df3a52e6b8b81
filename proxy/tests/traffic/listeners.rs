//! The listeners: the TCP listener's sandbox credential, and a real client (curl) through it.

use centaur_proxy::Limits;
use serde_json::json;

use crate::support::{Harness, REAL_KEY, http, openai_policy, upstream};

#[tokio::test]
async fn the_tcp_listener_needs_the_sandbox_credential() {
    let h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    h.sandbox(
        "sb1",
        json!({"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]}),
    );
    let anonymous = http()
        .proxy(reqwest::Proxy::all(format!("http://{}", h.tcp)).unwrap())
        .build()
        .unwrap();
    let response = anonymous.get(format!("http://{up}/")).send().await.unwrap();
    assert_eq!(response.status(), 407);
    assert_eq!(
        response.headers()["proxy-authenticate"],
        "Basic realm=\"centaur\""
    );
    let wrong = http()
        .proxy(
            reqwest::Proxy::all(format!("http://{}", h.tcp))
                .unwrap()
                .basic_auth("sb1", "cred-sb2"),
        )
        .build()
        .unwrap();
    assert_eq!(
        wrong
            .get(format!("http://{up}/"))
            .send()
            .await
            .unwrap()
            .status(),
        407
    );
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(
        h.client("sb1")
            .get(format!("http://{up}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn curl_through_the_proxy() {
    let h = Harness::start(Limits::default()).await;
    let (up, seen) = upstream().await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "5",
            "-x",
            &format!("http://sb1:cred-sb1@{}", h.tcp),
        ])
        .args(["-H", &format!("Authorization: Bearer {placeholder}")])
        .arg(format!("http://{up}/from-curl"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains(REAL_KEY),
        "the sandbox never sees the real key: {text}"
    );
    assert_eq!(
        seen.lock().unwrap()[0].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );

    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "5",
            "-x",
            &format!("http://sb1:cred-sb1@{}", h.tcp),
        ])
        .arg("http://not-allowed.example/")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains(
            "x-centaur-deny-reason: not-allowed.example:80 is not on this sandbox's list"
        ),
        "{text}"
    );
}
