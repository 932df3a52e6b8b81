//! Benchmarks of the proxy's figures, against the real `centaur-proxy` binary pinned to one
//! core (`taskset -c 0`); this process (clients and the upstream) pins itself to the other.
//!
//! - added latency of HTTPS keep-alive requests through the proxy, with TLS interception and a
//!   credential swap, against the same requests sent directly;
//! - throughput through the proxy on one core;
//! - 16 concurrent keep-alive clients sending 2,000 requests through an HTTPS upstream that
//!   speaks only HTTP/1.1: requests/s, p50 added latency (against the same load sent directly)
//!   and how many upstream TLS connections the proxy opened (its pool at work);
//! - idle memory, and memory over a soak (`BENCH_SOAK_SECS`, e.g. 600).
//!
//! Run with `cargo bench -p centaur-proxy --bench proxy` (or `just bench-proxy`).
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use centaur_proxy::tls::{Authority, generate_ca};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUESTS: usize = 5000;
/// The concurrent case: clients, each on its own keep-alive connection, and requests in all.
const CONCURRENT_CLIENTS: usize = 16;
const CONCURRENT_REQUESTS: usize = 2000;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn main() {
    pin_to_cpu(1);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let dir = std::env::temp_dir().join(format!("centaur-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (upstream_ca, upstream_ca_key) = generate_ca().unwrap();
    let (upstream, _) = start_upstream(&upstream_ca, &upstream_ca_key, Alpn::Both).await;
    let (h1_upstream, h1_accepted) =
        start_upstream(&upstream_ca, &upstream_ca_key, Alpn::Http1Only).await;
    let (ca_cert, ca_key) = generate_ca().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_config(
        &dir,
        listen,
        [upstream, h1_upstream],
        (&ca_cert, &ca_key),
        &upstream_ca,
    );
    let mut proxy = ProxyProcess::start(&dir, listen);
    let auth_proxied = format!("Bearer {}", proxy.placeholder);
    println!("centaur-proxy benchmarks (proxy pinned to core 0, clients and upstream to core 1)\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "idle memory (RSS after start-up): {:.1} MiB",
        rss_mib(proxy.pid())
    );

    latency(listen, upstream, &upstream_ca, &ca_cert, &auth_proxied).await;
    concurrent(
        listen,
        h1_upstream,
        &h1_accepted,
        &upstream_ca,
        &ca_cert,
        &auth_proxied,
    )
    .await;

    // Throughput: many keep-alive connections at once for ten seconds.
    let rate = throughput(
        listen,
        upstream,
        &ca_cert,
        &auth_proxied,
        32,
        Duration::from_secs(10),
    )
    .await;
    println!(
        "throughput through the proxy on one core, 32 keep-alive connections: {rate:.0} requests/s"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "memory after the load, idle again: {:.1} MiB",
        rss_mib(proxy.pid())
    );

    soak(listen, upstream, &ca_cert, &auth_proxied, proxy.pid()).await;
    proxy.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The proxy's configuration in `dir`: the interception CA (`ca`: certificate, key), the
/// upstreams' CA, and one sandbox whose credential is bound to the upstreams.
fn write_config(
    dir: &std::path::Path,
    listen: SocketAddr,
    upstreams: [SocketAddr; 2],
    (ca_cert, ca_key): (&str, &str),
    upstream_ca: &str,
) {
    std::fs::write(dir.join("ca.pem"), ca_cert).unwrap();
    std::fs::write(dir.join("ca-key.pem"), ca_key).unwrap();
    std::fs::write(dir.join("upstream-ca.pem"), upstream_ca).unwrap();
    std::fs::write(dir.join("openai"), "sk-real-bench-0123456789").unwrap();
    let hosts: Vec<String> = upstreams
        .iter()
        .map(|u| format!("127.0.0.1:{}", u.port()))
        .collect();
    let config = json!({
        "listen": listen,
        "key_file": dir.join("key"),
        "ca_cert": dir.join("ca.pem"),
        "ca_key": dir.join("ca-key.pem"),
        "extra_roots": [dir.join("upstream-ca.pem")],
        "secrets": {"OPENAI_API_KEY": {"source": "file", "path": dir.join("openai")}},
        "sandboxes": [{
            "sandbox_id": "bench", "proxy_credential": "bench-credential",
            "policy": {
                "allow": hosts, "allow_private": ["127.0.0.1"],
                "secrets": [{"name": "OPENAI_API_KEY", "hosts": hosts,
                             "headers": ["authorization"], "format": "Bearer {value}"}],
            },
        }],
    });
    std::fs::write(dir.join("proxy.json"), config.to_string()).unwrap();
}

/// Latency: one keep-alive connection each way, sequential requests, direct and proxied in
/// turn.
async fn latency(
    listen: SocketAddr,
    upstream: SocketAddr,
    upstream_ca: &str,
    ca_cert: &str,
    auth_proxied: &str,
) {
    let mut direct = direct_connection(upstream, upstream_ca).await;
    let mut proxied = proxied_connection(listen, upstream, ca_cert).await;
    let auth_direct = "Bearer sk-real-bench-0123456789".to_owned();
    for _ in 0..500 {
        request(&mut direct, upstream, &auth_direct).await;
        request(&mut proxied, upstream, auth_proxied).await;
    }
    let (mut d, mut p) = (Vec::with_capacity(REQUESTS), Vec::with_capacity(REQUESTS));
    for _ in 0..REQUESTS {
        let t = Instant::now();
        request(&mut direct, upstream, &auth_direct).await;
        d.push(t.elapsed());
        let t = Instant::now();
        request(&mut proxied, upstream, auth_proxied).await;
        p.push(t.elapsed());
    }
    d.sort();
    p.sort();
    let pct = |v: &[Duration], q: f64| {
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "HTTPS keep-alive, {REQUESTS} sequential requests: direct p50 {:.3} ms p99 {:.3} ms | \
         proxied (interception + swap) p50 {:.3} ms p99 {:.3} ms | added p50 {:.3} ms, p99 {:.3} ms",
        pct(&d, 0.5),
        pct(&d, 0.99),
        pct(&p, 0.5),
        pct(&p, 0.99),
        pct(&p, 0.5) - pct(&d, 0.5),
        pct(&p, 0.99) - pct(&d, 0.99)
    );
}

/// The concurrent case: `CONCURRENT_CLIENTS` keep-alive clients share `CONCURRENT_REQUESTS`
/// requests to an HTTP/1.1-only HTTPS upstream, sent directly and then through the proxy
/// (interception + swap). `accepted` counts the upstream's TLS connections: the proxy needs
/// about one per client when its pool keeps what the load uses.
async fn concurrent(
    listen: SocketAddr,
    upstream: SocketAddr,
    accepted: &AtomicUsize,
    upstream_ca: &str,
    ca_cert: &str,
    auth_proxied: &str,
) {
    let mut direct = Vec::new();
    for _ in 0..CONCURRENT_CLIENTS {
        direct.push(direct_connection(upstream, upstream_ca).await);
    }
    let (_, direct_latencies) =
        share_requests(direct, upstream, "Bearer sk-real-bench-0123456789").await;
    let before = accepted.load(Ordering::Relaxed);
    let mut proxied = Vec::new();
    for _ in 0..CONCURRENT_CLIENTS {
        proxied.push(proxied_connection(listen, upstream, ca_cert).await);
    }
    let (elapsed, proxied_latencies) = share_requests(proxied, upstream, auth_proxied).await;
    let opened = accepted.load(Ordering::Relaxed) - before;
    let p50 = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1000.0;
    println!(
        "{CONCURRENT_CLIENTS} concurrent keep-alive clients, {CONCURRENT_REQUESTS} requests, HTTPS \
         HTTP/1.1-only upstream: {:.0} requests/s through the proxy | p50 direct {:.3} ms, \
         proxied {:.3} ms, added {:.3} ms | upstream TLS connections opened by the proxy: {opened}",
        CONCURRENT_REQUESTS as f64 / elapsed.as_secs_f64(),
        p50(&direct_latencies),
        p50(&proxied_latencies),
        p50(&proxied_latencies) - p50(&direct_latencies),
    );
}

/// Sends `CONCURRENT_REQUESTS` requests over `senders` at once, each taking the next request
/// when its last one is answered; returns the time it took and every request's latency, sorted.
async fn share_requests(
    senders: Vec<Sender>,
    upstream: SocketAddr,
    auth: &str,
) -> (Duration, Vec<Duration>) {
    let left = Arc::new(AtomicUsize::new(CONCURRENT_REQUESTS));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut sender in senders {
        let (left, auth) = (left.clone(), auth.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                request(&mut sender, upstream, &auth).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(CONCURRENT_REQUESTS);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    (elapsed, latencies)
}

/// With `BENCH_SOAK_SECS`, steady load for that long and the proxy's RSS every 30 s.
async fn soak(
    listen: SocketAddr,
    upstream: SocketAddr,
    ca_cert: &str,
    auth_proxied: &str,
    pid: u32,
) {
    let soak: u64 = std::env::var("BENCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if soak > 0 {
        println!("\nsoak: {soak} s of steady load, RSS every 30 s");
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(soak) {
            let rate = throughput(
                listen,
                upstream,
                ca_cert,
                auth_proxied,
                16,
                Duration::from_secs(30),
            )
            .await;
            let rss = rss_mib(pid);
            samples.push(rss);
            println!(
                "  t={:>4} s  {rate:>6.0} req/s  RSS {rss:.1} MiB",
                started.elapsed().as_secs()
            );
        }
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        let max = samples.iter().cloned().fold(0.0, f64::max);
        println!("soak: RSS first {first:.1} MiB, last {last:.1} MiB, max {max:.1} MiB");
    }
}

async fn request(sender: &mut Sender, upstream: SocketAddr, auth: &str) {
    let request = hyper::Request::post("/v1/responses")
        .header("host", upstream.to_string())
        .header("authorization", auth)
        .body(Full::new(Bytes::from_static(b"{\"input\":\"benchmark\"}")))
        .unwrap();
    let response = sender.send_request(request).await.expect("request");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
}

async fn throughput(
    proxy: SocketAddr,
    upstream: SocketAddr,
    ca: &str,
    auth: &str,
    connections: usize,
    duration: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut sender = proxied_connection(proxy, upstream, ca).await;
        let (done, auth) = (done.clone(), auth.to_owned());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < duration {
                request(&mut sender, upstream, &auth).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn direct_connection(upstream: SocketAddr, upstream_ca: &str) -> Sender {
    let stream = TcpStream::connect(upstream).await.unwrap();
    stream.set_nodelay(true).unwrap();
    handshake(tls_connect(stream, upstream, upstream_ca).await).await
}

async fn proxied_connection(proxy: SocketAddr, upstream: SocketAddr, proxy_ca: &str) -> Sender {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "bench:bench-credential",
    );
    stream
        .write_all(format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\nProxy-Authorization: Basic {auth}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    handshake(tls_connect(stream, upstream, proxy_ca).await).await
}

async fn tls_connect(
    stream: TcpStream,
    target: SocketAddr,
    ca: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .unwrap()
}

async fn handshake(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Sender {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// What an upstream offers in its TLS handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alpn {
    /// HTTP/2 and HTTP/1.1 (the proxy picks HTTP/2).
    Both,
    /// HTTP/1.1 only, like many gateways and local model servers.
    Http1Only,
}

/// An HTTPS keep-alive upstream with a certificate from the given CA, offering `alpn`; returns
/// its address and the count of TLS connections it has accepted.
async fn start_upstream(ca_cert: &str, ca_key: &str, alpn: Alpn) -> (SocketAddr, Arc<AtomicUsize>) {
    let mut server_config = Authority::from_pem(ca_cert, ca_key)
        .unwrap()
        .server_config("127.0.0.1")
        .unwrap();
    if alpn == Alpn::Http1Only {
        let mut config = (*server_config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        server_config = Arc::new(config);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        // Only the real credential is accepted: a request that was not swapped fails.
                        let swapped = request
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v == "Bearer sk-real-bench-0123456789");
                        request.into_body().collect().await.unwrap();
                        let mut response = hyper::Response::new(Full::new(Bytes::from_static(
                            b"{\"output\":\"ok\"}",
                        )));
                        if !swapped {
                            *response.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (addr, accepted)
}

struct ProxyProcess {
    child: Child,
    placeholder: String,
}

impl ProxyProcess {
    fn start(dir: &std::path::Path, listen: SocketAddr) -> ProxyProcess {
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(env!("CARGO_BIN_EXE_centaur-proxy"))
            .args(["serve", "--config"])
            .arg(dir.join("proxy.json"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start centaur-proxy under taskset");
        // The proxy prints `sandbox<TAB>secret<TAB>placeholder` for each binding.
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let placeholder = line.trim().rsplit('\t').next().unwrap().to_owned();
        for _ in 0..200 {
            if std::net::TcpStream::connect(listen).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        ProxyProcess { child, placeholder }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// RSS of the process (taskset execs the proxy, so the pid is the proxy's).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; we pass its size and pointer to the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}
