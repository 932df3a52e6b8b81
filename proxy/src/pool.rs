//! Upstream connections kept alive between requests, per sandbox, upstream address and TLS
//! server name. An HTTP/1.1 connection goes back to the pool only after its response body has
//! ended cleanly; an HTTP/2 connection is shared while it lives. Idle connections are capped for
//! the whole proxy ([`crate::Limits::max_idle_upstream`]), not per key: a sandbox with 16
//! concurrent clients keeps 16, rather than opening a new TLS connection for most requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;

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

/// The kept-alive connections of every sandbox and upstream, capped all together: a key keeps
/// as many idle connections as its load left behind (at most the requests it had in flight at
/// once), and when the cap is reached the connection idle the longest, whoever's, is closed.
pub struct Pool {
    idle: Mutex<Idle>,
    /// Idle connections kept for all keys together.
    max_idle: usize,
}

#[derive(Default)]
struct Idle {
    /// Per key, oldest first (taken from the back: the most recently used is the likeliest
    /// to be alive).
    by_key: HashMap<PoolKey, Vec<(Sender, Instant)>>,
    /// Entries over all keys.
    total: usize,
}

impl Idle {
    /// Closes the connection that has been idle the longest, over all keys.
    fn evict_oldest(&mut self) {
        let oldest = self
            .by_key
            .iter()
            .filter_map(|(key, entries)| entries.first().map(|(_, since)| (since, key)))
            .min_by_key(|(since, _)| **since)
            .map(|(_, key)| key.clone());
        if let Some(key) = oldest {
            self.remove_at(&key, 0);
        }
    }

    fn remove_at(&mut self, key: &PoolKey, index: usize) -> Option<(Sender, Instant)> {
        let entries = self.by_key.get_mut(key)?;
        let removed = (index < entries.len()).then(|| entries.remove(index));
        if entries.is_empty() {
            self.by_key.remove(key);
        }
        if removed.is_some() {
            self.total -= 1;
        }
        removed
    }

    /// Drops the connections of `key` that closed or grew too old.
    fn prune(&mut self, key: &PoolKey) {
        let Some(entries) = self.by_key.get_mut(key) else {
            return;
        };
        let before = entries.len();
        entries.retain(|(sender, since)| !sender.is_closed() && since.elapsed() <= MAX_IDLE_AGE);
        self.total -= before - entries.len();
        if entries.is_empty() {
            self.by_key.remove(key);
        }
    }
}

impl Pool {
    /// A pool that keeps at most `max_idle` idle connections in all (0 keeps none).
    pub fn new(max_idle: usize) -> Pool {
        Pool {
            idle: Mutex::new(Idle::default()),
            max_idle,
        }
    }

    /// A live connection for `key`, if one is idle (HTTP/2: shared).
    pub fn take(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.prune(key);
        let last = idle.by_key.get(key)?.len().checked_sub(1)?;
        let (sender, _) = idle.remove_at(key, last)?;
        if let Sender::Http2(shared) = &sender {
            let clone = Sender::Http2(shared.clone());
            idle.total += 1;
            idle.by_key
                .entry(key.clone())
                .or_default()
                .push((sender, Instant::now()));
            return Some(clone);
        }
        Some(sender)
    }

    /// Keeps a connection for reuse, closing the one idle the longest if the pool is full.
    /// HTTP/1.1: call only after its response ended cleanly.
    pub fn put(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        idle.prune(&key);
        let shared_h2 = idle
            .by_key
            .get(&key)
            .is_some_and(|entries| entries.iter().any(|(s, _)| s.is_http2()));
        if sender.is_http2() && shared_h2 {
            return;
        }
        while idle.total >= self.max_idle {
            idle.evict_oldest();
        }
        idle.total += 1;
        idle.by_key
            .entry(key)
            .or_default()
            .push((sender, Instant::now()));
    }

    /// Idle connections kept, over all keys.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().expect("pool lock").total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> PoolKey {
        PoolKey {
            sandbox_id: "sb".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], n)),
            server_name: None,
        }
    }

    /// An HTTP/1.1 sender over an in-memory pipe (its other end kept open by the caller).
    async fn sender() -> (Sender, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let sender = Sender::handshake_http1(hyper_util::rt::TokioIo::new(ours))
            .await
            .unwrap();
        (sender, theirs)
    }

    #[tokio::test]
    async fn keeps_what_the_load_left_and_evicts_the_oldest_over_all_keys() {
        let pool = Pool::new(3);
        let mut ends = Vec::new();
        // One key keeps more than the old per-key cap of 8 if the cap allows.
        let wide = Pool::new(100);
        for _ in 0..16 {
            let (s, end) = sender().await;
            ends.push(end);
            wide.put(key(1), s);
        }
        assert_eq!(wide.idle_count(), 16);
        for _ in 0..16 {
            assert!(wide.take(&key(1)).is_some());
        }
        assert!(wide.take(&key(1)).is_none());

        for port in [1, 2, 3, 4] {
            let (s, end) = sender().await;
            ends.push(end);
            pool.put(key(port), s);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(pool.idle_count(), 3, "capped over all keys");
        assert!(pool.take(&key(1)).is_none(), "the oldest was evicted");
        for port in [2, 3, 4] {
            assert!(pool.take(&key(port)).is_some(), "key {port} kept");
        }
        assert_eq!(pool.idle_count(), 0);
    }
}
