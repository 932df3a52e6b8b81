//! Echoes the scrubber must catch: reason phrases, header names, bodies in codings it cannot read.

use centaur_proxy::Limits;
use centaur_proxy::audit::Decision;

use crate::support::{Harness, REAL_KEY, openai_policy, raw_through, raw_upstream};

/// An upstream that writes the key as its status line's reason phrase: the sandbox gets the
/// canonical phrase instead.
#[tokio::test]
async fn a_reason_phrase_never_carries_a_secret() {
    let mut h = Harness::start(Limits::default()).await;
    let answer = format!("HTTP/1.1 200 {REAL_KEY}\r\ncontent-length: 2\r\n\r\nok");
    let (up, heads) = raw_upstream(answer.into_bytes()).await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let request = format!(
        "GET http://{up}/ HTTP/1.1\r\nHost: {up}\r\nAuthorization: Bearer {placeholder}\r\n"
    );
    let (_stream, head) = raw_through(h.tcp, "sb1", &request).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(!head.contains(REAL_KEY), "{head}");
    assert!(
        heads.lock().unwrap()[0].contains(&format!("authorization: bearer {REAL_KEY}")),
        "the upstream got the real key"
    );
    assert_eq!(h.next_audit().await.decision, Decision::Allowed);
}

/// Headers named after the key (whole, or as part of the name) reach the sandbox named after the
/// placeholder.
#[tokio::test]
async fn response_header_names_never_carry_a_secret() {
    let h = Harness::start(Limits::default()).await;
    let answer = format!(
        "HTTP/1.1 200 OK\r\n{REAL_KEY}: 1\r\nx-{REAL_KEY}-echo: {REAL_KEY}\r\ncontent-length: 2\r\n\r\nok"
    );
    let (up, _) = raw_upstream(answer.into_bytes()).await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let response = h
        .client("sb1")
        .get(format!("http://{up}/"))
        .header("authorization", format!("Bearer {placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for (name, value) in response.headers() {
        assert!(!name.as_str().contains(REAL_KEY), "{name}");
        assert!(
            !value.to_str().unwrap().contains(REAL_KEY),
            "{name}: {value:?}"
        );
    }
    assert_eq!(response.headers()[placeholder.as_str()], "1");
    assert_eq!(
        response.headers()[format!("x-{placeholder}-echo").as_str()],
        placeholder.as_str()
    );
}

/// Every coding counts, not only the first `Content-Encoding`: a body the scrubber cannot read
/// is refused with a 502 (and audited), never passed on.
#[tokio::test]
async fn bodies_in_codings_the_scrubber_cannot_read_are_refused() {
    let mut h = Harness::start(Limits::default()).await;
    // Stands for a compressed body: the scrubber cannot see the key inside it.
    let body = "\u{1f}\u{8b}compressed";
    let cases = [
        (
            "two headers",
            format!(
                "content-encoding: identity\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            Some("gzip"),
        ),
        (
            "a list",
            format!(
                "content-encoding: identity, br\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            Some("br"),
        ),
        (
            "a transfer coding",
            format!(
                "transfer-encoding: gzip, chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            ),
            Some("gzip"),
        ),
        (
            "identity only",
            format!(
                "content-encoding: identity\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            None,
        ),
    ];
    for (i, (case, rest, refused)) in cases.into_iter().enumerate() {
        let (up, heads) = raw_upstream(format!("HTTP/1.1 200 OK\r\n{rest}").into_bytes()).await;
        let id = format!("sb{i}");
        let placeholder = h.sandbox(&id, openai_policy(up))["OPENAI_API_KEY"].clone();
        let response = h
            .client(&id)
            .get(format!("http://{up}/"))
            .header("authorization", format!("Bearer {placeholder}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            heads.lock().unwrap().len(),
            1,
            "{case}: the request went out"
        );
        let record = h.next_audit().await;
        let Some(coding) = refused else {
            assert_eq!(response.status(), 200, "{case}");
            assert_eq!(record.decision, Decision::Allowed, "{case}");
            continue;
        };
        assert_eq!(response.status(), 502, "{case}");
        let reason = response.headers()["x-centaur-deny-reason"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            reason.contains(coding) && reason.contains("cannot check"),
            "{case}: {reason}"
        );
        assert!(
            !response.text().await.unwrap().contains("compressed"),
            "{case}"
        );
        assert_eq!(record.decision, Decision::Denied, "{case}");
        assert_eq!(record.reason.as_deref(), Some(reason.as_str()), "{case}");
    }
}
