//! Relaying what the upstream sends: the bytes of an upgraded connection (WebSocket frames
//! scrubbed), and response bodies, scrubbed, counted and audited when they end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;

use crate::audit::{AuditRecord, AuditSink, Decision};
use crate::credentials::Scrubber;
use crate::pool::{Pool, PoolKey, Sender};
use crate::websocket::ScrubbedFrames;

/// Relays an upgraded connection. With a `scrubber`, what the upstream sends is read as
/// WebSocket frames and scrubbed ([`crate::websocket`]); if the proxy has to end the connection
/// (a frame it cannot read), `record` turns into a denial that says why, like every refusal.
/// Returns the bytes sent up and down.
pub(super) async fn relay_upgraded<A, B>(
    client: A,
    upstream: B,
    idle: Duration,
    scrubber: Option<Scrubber>,
    record: &mut AuditRecord,
) -> (u64, u64)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(scrubber) = scrubber else {
        return relay_io(client, upstream, idle).await;
    };
    let upstream = ScrubbedFrames::new(upstream, scrubber);
    let refusal = upstream.refusal();
    let moved = relay_io(client, upstream, idle).await;
    if let Some(reason) = refusal.get() {
        record.decision = Decision::Denied;
        record.reason = Some(format!("the proxy ended the WebSocket: {reason}"));
    }
    moved
}

/// Copies both ways until either side closes or nothing moves for `idle`; returns the bytes
/// sent up and down.
pub(super) async fn relay_io<A, B>(client: A, upstream: B, idle: Duration) -> (u64, u64)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let (mut up, mut down) = (0u64, 0u64);
    let mut to_upstream = vec![0u8; 16 * 1024];
    let mut to_client = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = tokio::time::timeout(idle, client_read.read(&mut to_upstream)) => match read {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    if upstream_write.write_all(&to_upstream[..n]).await.is_err() { break; }
                    up += n as u64;
                }
            },
            read = tokio::time::timeout(idle, upstream_read.read(&mut to_client)) => match read {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    if client_write.write_all(&to_client[..n]).await.is_err() { break; }
                    down += n as u64;
                }
            },
        }
    }
    let _ = upstream_write.shutdown().await;
    let _ = client_write.shutdown().await;
    (up, down)
}

/// An upstream response body on its way to the sandbox: scrubbed, counted, and audited when it
/// ends (or is dropped).
pub(super) struct Relayed {
    inner: Incoming,
    scrubber: Option<Scrubber>,
    bytes_down: u64,
    audit: Option<(AuditRecord, Arc<dyn AuditSink>)>,
    /// An HTTP/1.1 connection to return to the pool once this body has ended cleanly.
    give_back: Option<(Arc<Pool>, PoolKey, Sender)>,
    /// Trailers held while the scrubber's last bytes go out first.
    pending_trailers: Option<HeaderMap>,
}

impl Relayed {
    /// `audit` is recorded with the bytes relayed when the body ends or is dropped.
    pub(super) fn new(
        inner: Incoming,
        scrubber: Option<Scrubber>,
        audit: (AuditRecord, Arc<dyn AuditSink>),
        give_back: Option<(Arc<Pool>, PoolKey, Sender)>,
    ) -> Relayed {
        Relayed {
            inner,
            scrubber,
            bytes_down: 0,
            audit: Some(audit),
            give_back,
            pending_trailers: None,
        }
    }

    fn emit_audit(&mut self) {
        if let Some((mut record, sink)) = self.audit.take() {
            record.bytes_down = self.bytes_down;
            sink.record(record);
        }
    }
}

impl hyper::body::Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(trailers) = this.pending_trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    this.bytes_down += data.len() as u64;
                    let data = match &mut this.scrubber {
                        Some(scrubber) => Bytes::from(scrubber.push(&data)),
                        None => data,
                    };
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    let Ok(mut trailers) = frame.into_trailers() else {
                        return Poll::Ready(None);
                    };
                    match &mut this.scrubber {
                        Some(scrubber) => {
                            scrubber.scrub_headers(&mut trailers);
                            let tail = scrubber.finish();
                            this.scrubber = None;
                            if tail.is_empty() {
                                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                            } else {
                                this.pending_trailers = Some(trailers);
                                Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))))
                            }
                        }
                        None => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    }
                }
            },
            Some(Err(error)) => Poll::Ready(Some(Err(error))),
            None => {
                if let Some(mut scrubber) = this.scrubber.take() {
                    let tail = scrubber.finish();
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
                    }
                }
                if let Some((pool, key, sender)) = this.give_back.take() {
                    pool.put(key, sender);
                }
                this.emit_audit();
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        self.emit_audit();
    }
}
