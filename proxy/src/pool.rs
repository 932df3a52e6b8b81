//! Upstream connections kept alive between requests, per sandbox, upstream address and TLS
//! server name. An HTTP/1.1 connection goes back to the pool only after its response body has
//! ended cleanly; an HTTP/2 connection is shared while it lives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;

/// Idle HTTP/1.1 connections kept per key.
const MAX_IDLE: usize = 8;
/// An idle connection older than this is not reused (servers close them around here).
const MAX_IDLE_AGE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub sandbox_id: String,
    pub addr: SocketAddr,
    /// The TLS server name, or `None` for plain HTTP.
    pub server_name: Option<String>,
}

/// A request sender to an upstream, HTTP/1.1 or HTTP/2.
pub enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub async fn handshake_http1<T>(io: T) -> Result<Sender, hyper::Error>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(Sender::Http1(sender))
    }

    pub async fn handshake_http2<T>(io: T) -> Result<Sender, hyper::Error>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Sender::Http2(sender))
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<(Sender, Instant)>>>,
}

impl Pool {
    /// A live connection for `key`, if one is idle (HTTP/2: shared).
    pub fn take(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        let entries = idle.get_mut(key)?;
        while let Some((sender, since)) = entries.pop() {
            if sender.is_closed() || since.elapsed() > MAX_IDLE_AGE {
                continue;
            }
            if let Sender::Http2(shared) = &sender {
                let clone = Sender::Http2(shared.clone());
                entries.push((sender, Instant::now()));
                return Some(clone);
            }
            return Some(sender);
        }
        None
    }

    /// Keeps a connection for reuse. HTTP/1.1: call only after its response ended cleanly.
    pub fn put(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let entries = idle.entry(key).or_default();
        let shared_h2 = entries.iter().any(|(s, _)| s.is_http2() && !s.is_closed());
        if sender.is_http2() && shared_h2 {
            return;
        }
        if entries.len() < MAX_IDLE {
            entries.push((sender, Instant::now()));
        }
    }
}
