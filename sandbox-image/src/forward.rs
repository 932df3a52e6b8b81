//! Inside the sandbox, the proxy is a Unix socket; tools expect `HTTP_PROXY=http://host:port`.
//! This forwards a loopback port to the socket, one connection for one connection.

use std::path::PathBuf;

use tokio::net::{TcpListener, UnixStream};

/// Accepts on `listener` and relays each connection to the socket at `socket`.
pub async fn serve(listener: TcpListener, socket: PathBuf) {
    loop {
        let mut tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(%error, "the proxy forwarder cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let socket = socket.clone();
        tokio::spawn(async move {
            match UnixStream::connect(&socket).await {
                Ok(mut unix) => {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
                Err(error) => {
                    tracing::warn!(%error, socket = %socket.display(), "the egress proxy is unreachable");
                }
            }
        });
    }
}

/// The environment that sends a sandbox's HTTP(S) traffic to the forwarder at `proxy_url` and
/// makes it trust the proxy's CA at `ca_file`.
pub fn proxy_env(proxy_url: &str, ca_file: Option<&str>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .iter()
    .map(|k| (k.to_string(), proxy_url.to_owned()))
    .collect();
    env.push(("NO_PROXY".into(), String::new()));
    env.push(("no_proxy".into(), String::new()));
    if let Some(ca) = ca_file {
        for var in [
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            env.push((var.into(), ca.to_owned()));
        }
    }
    env
}
