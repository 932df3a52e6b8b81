//! A credential rotated at its source is picked up when the upstream rejects the old one.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use centaur_proxy::Limits;
use http_body_util::Full;

use crate::support::{Harness, REAL_KEY, openai_policy, serve_http};

/// A credential rotated at its source is picked up as soon as the upstream rejects the old
/// one: the request is sent again with the new value, and the sandbox never notices.
#[tokio::test]
async fn a_rejected_credential_is_read_again_and_the_request_retried() {
    let mut h = Harness::start(Limits::default()).await;
    let accepted = Arc::new(Mutex::new(REAL_KEY.to_owned()));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (accepted_by_upstream, log) = (accepted.clone(), seen.clone());
    let up = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
        let (accepted, log) = (accepted_by_upstream.clone(), log.clone());
        async move {
            let auth = request.headers()["authorization"]
                .to_str()
                .unwrap()
                .to_owned();
            log.lock().unwrap().push(auth.clone());
            let ok = auth == format!("Bearer {}", accepted.lock().unwrap());
            let mut response = hyper::Response::new(Full::new(Bytes::from(if ok {
                "ok"
            } else {
                "invalid key"
            })));
            if !ok {
                *response.status_mut() = hyper::StatusCode::UNAUTHORIZED;
            }
            response
        }
    })
    .await;
    let placeholders = h.sandbox("sb-rot", openai_policy(up));
    let placeholder = &placeholders["OPENAI_API_KEY"];
    let send = || {
        h.client("sb-rot")
            .post(format!("http://{up}/v1/responses"))
            .header("authorization", format!("Bearer {placeholder}"))
            .body("{}")
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);

    // Rotated: the upstream takes only the new key, and the proxy's cache still holds the old.
    *accepted.lock().unwrap() = "sk-rotated-9876".into();
    std::fs::write(h.dir.join("openai"), "sk-rotated-9876\n").unwrap();
    let response = send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("Bearer {REAL_KEY}"),
            format!("Bearer {REAL_KEY}"),
            "Bearer sk-rotated-9876".to_owned()
        ]
    );
    // From now on the new value goes first.
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(seen.lock().unwrap().len(), 4);

    // A key that is simply wrong is not retried: the 401 reaches the sandbox.
    *accepted.lock().unwrap() = "sk-something-else".into();
    let response = send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        seen.lock().unwrap().len(),
        5,
        "one attempt: the source still has the same value"
    );
    for _ in 0..3 {
        assert_eq!(h.next_audit().await.status, Some(200));
    }
    assert_eq!(h.next_audit().await.status, Some(401));
}
