//! `centaur tui`'s start: from starting the binary in a pseudo-terminal to its first frame,
//! against a server answering the thread list at once.
//!
//!     cargo bench -p centaur --bench startup
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::time::{Duration, Instant};

use centaur_test_support::measure::{ms, percentile};
use centaur_test_support::pty::Pty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(startup());
}

/// A fake server answering the thread list `centaur tui` asks for first.
async fn list_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let at = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                    request.drain(..at + 4);
                    let body = r#"{"threads":[],"next_before":null}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Starts `centaur tui` in a pseudo-terminal; returns how long until its first frame arrived.
fn time_to_first_frame(url: &str) -> Duration {
    let started = Instant::now();
    let pty = Pty::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_centaur"))
            .arg("tui")
            .env("CENTAUR_API_URL", url)
            .env("CENTAUR_API_TOKEN", "token")
            .env("TERM", "xterm-256color"),
        40,
        120,
    );
    while !pty.contents().contains("Threads") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no first frame"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    started.elapsed()
}

async fn startup() {
    let url = list_server().await;
    let url_for_thread = url.clone();
    let mut samples = tokio::task::spawn_blocking(move || {
        // The first start warms the page cache.
        time_to_first_frame(&url_for_thread);
        (0..30)
            .map(|_| time_to_first_frame(&url_for_thread))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    println!(
        "`centaur tui` start to first frame in a pseudo-terminal (30 starts): p50 {} / p99 {}",
        ms(percentile(&mut samples, 0.5)),
        ms(percentile(&mut samples, 0.99))
    );
}
