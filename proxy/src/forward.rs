//! The sandbox side of the proxy socket: inside a sandbox there is no network but loopback, so
//! a forwarder listens on `127.0.0.1` (what `HTTP_PROXY`/`HTTPS_PROXY` point at) and relays
//! each connection to the proxy's Unix socket, bind-mounted into the sandbox.

use std::path::PathBuf;

use tokio::net::{TcpListener, UnixStream};

/// Relays every connection on `listener` to the Unix socket at `socket`, until the listener
/// fails.
pub async fn serve(listener: TcpListener, socket: PathBuf) -> std::io::Result<()> {
    loop {
        let (mut tcp, _) = listener.accept().await?;
        let socket = socket.clone();
        tokio::spawn(async move {
            match UnixStream::connect(&socket).await {
                Ok(mut unix) => {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
                Err(error) => {
                    tracing::warn!(%error, socket = %socket.display(), "cannot reach the proxy socket");
                }
            }
        });
    }
}

/// The environment a sandbox needs to use the proxy and trust its CA, given the forwarder's
/// address, the CA file's path inside the sandbox, and the sandbox's placeholders (exported
/// under their secret names).
pub fn sandbox_env<'a>(
    proxy_url: &str,
    ca_file: &str,
    placeholders: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), proxy_url.to_owned()))
    .collect();
    env.push(("NO_PROXY".into(), String::new()));
    for name in [
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        env.push((name.to_owned(), ca_file.to_owned()));
    }
    env.extend(
        placeholders
            .into_iter()
            .map(|(name, placeholder)| (name.clone(), placeholder.clone())),
    );
    env
}
