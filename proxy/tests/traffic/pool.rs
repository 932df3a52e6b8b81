//! Kept-alive upstream connections: concurrent keep-alive clients reuse about one upstream
//! connection each, instead of a new TLS connection for most requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::support::{intercept_policy, intercepting, tls_http1_upstream, tls_through};

const CLIENTS: usize = 16;
const REQUESTS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_keep_alive_clients_reuse_upstream_connections() {
    let (up, upstream_ca, accepted) = tls_http1_upstream().await;
    let (h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let left = Arc::new(AtomicUsize::new(REQUESTS));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let (left, auth) = (left.clone(), format!("Bearer {placeholder}"));
        clients.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let request = hyper::Request::post("/v1/responses")
                    .header("host", format!("127.0.0.1:{}", up.port()))
                    .header("authorization", &auth)
                    .body(Full::new(Bytes::from_static(b"{\"input\":\"hi\"}")))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        opened <= 2 * CLIENTS,
        "{CLIENTS} concurrent keep-alive clients made the proxy open {opened} upstream connections for {REQUESTS} requests"
    );
    assert!(
        h.proxy.idle_upstream_connections() <= CLIENTS,
        "the pool keeps no more than the load used"
    );
}
