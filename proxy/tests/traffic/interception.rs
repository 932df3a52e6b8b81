//! TLS interception: swaps over HTTP/1.1 and HTTP/2, the same checks as plain requests, upstream
//! certificates verified, and curl over HTTPS.

use bytes::Bytes;
use centaur_proxy::audit::Decision;
use centaur_proxy::tls::generate_ca;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::support::{REAL_KEY, intercept_policy, intercepting, tls_through, tls_upstream};

#[tokio::test]
async fn intercepted_https_swaps_over_http1_and_http2() {
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();

    // HTTP/1.1 from the sandbox; the proxy speaks HTTP/2 upstream (the upstream offers it).
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post("/v1/responses")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .header("authorization", format!("Bearer {placeholder}"))
        .body(Full::new(Bytes::from_static(b"{\"input\":\"hi\"}")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        body.contains(&placeholder) && !body.contains(REAL_KEY),
        "the echo is scrubbed: {body}"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].headers["authorization"],
            format!("Bearer {REAL_KEY}")
        );
        assert_eq!(seen[0].method, "POST HTTP/2.0", "upstream spoke HTTP/2");
        assert_eq!(seen[0].body, "{\"input\":\"hi\"}");
    }
    let record = h.next_audit().await;
    assert_eq!(
        (
            record.decision,
            record.method.as_str(),
            record.path.as_str()
        ),
        (Decision::Allowed, "POST", "/v1/responses")
    );
    assert_eq!(record.secrets_swapped, ["OPENAI_API_KEY"]);

    // HTTP/2 from the sandbox.
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://127.0.0.1:{}/h2", up.port()))
        .header("authorization", format!("Bearer {placeholder}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        seen.lock().unwrap()[1].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );
    assert_eq!(h.next_audit().await.path, "/h2");
}

#[tokio::test]
async fn intercepted_requests_are_checked_like_any_other() {
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);

    // The placeholder in a header it is not bound to.
    let request = hyper::Request::post("/upload")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .header("x-debug", &placeholder)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(h.next_audit().await.decision, Decision::LeakBlocked);
    // In the body: forwarded unchanged, and named in the audit.
    let request = hyper::Request::post("/upload")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .body(Full::new(Bytes::from(format!("token={placeholder}"))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let record = h.next_audit().await;
    assert_eq!(record.decision, Decision::Allowed);
    assert_eq!(record.body_placeholders, ["OPENAI_API_KEY"]);
    assert_eq!(
        seen.lock().unwrap().pop().unwrap().body,
        format!("token={placeholder}")
    );
    // Domain fronting: a tunnel to one host asking for another.
    let request = hyper::Request::get("/")
        .header("host", "evil.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .contains("must open its own")
    );
    assert_eq!(h.next_audit().await.decision, Decision::Denied);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn upstream_certificates_are_verified() {
    let (up, _upstream_ca, seen) = tls_upstream().await;
    // This proxy does not trust the upstream's CA.
    let (unrelated_ca, _) = generate_ca().unwrap();
    let (mut h, proxy_ca) = intercepting(&unrelated_ca).await;
    h.sandbox("sb1", intercept_policy(up));
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 502);
    let reason = response.headers()["x-centaur-deny-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("TLS with 127.0.0.1 failed")
            && reason.to_lowercase().contains("certificate"),
        "{reason}"
    );
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision),
        (Some(502), Decision::Denied)
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn curl_over_https_through_the_intercepting_proxy() {
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let ca_file = h.dir.join("proxy-ca.pem");
    std::fs::write(&ca_file, &proxy_ca).unwrap();
    for version in ["--http1.1", "--http2"] {
        let output = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                version,
                "-x",
                &format!("http://sb1:cred-sb1@{}", h.tcp),
            ])
            .arg("--cacert")
            .arg(&ca_file)
            .args(["-H", &format!("Authorization: Bearer {placeholder}")])
            .arg(format!("https://127.0.0.1:{}/curl", up.port()))
            .output()
            .await
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{version}: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains(&placeholder) && !text.contains(REAL_KEY),
            "{version}: {text}"
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == format!("Bearer {REAL_KEY}"))
    );
}
