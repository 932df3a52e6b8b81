//! The runner socket: a Unix socket mounted into every local sandbox, on which the server
//! serves the runner API ([`crate::routes::runner_socket_router`]).
//!
//! Every connection carries who made it ([`SocketPeer`], from `SO_PEERCRED`), so a sandbox's
//! token is taken only from that sandbox's runner process. Each sandbox (told apart by the
//! PID namespace of the connecting process) may hold at most [`PER_SANDBOX`] connections at
//! once; past that, new ones are closed as soon as they are accepted, so no sandbox can take
//! the server to its descriptor limit. The runner (its sandbox's pid 2) has a budget of its
//! own, so the code it runs cannot use up its runner's connections. A connection whose sandbox
//! cannot be told (the process is already gone) is closed.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

/// Connections one sandbox may hold open at once (its runner needs a handful).
pub const PER_SANDBOX: usize = 64;

/// Who connected, as the kernel tells: the pid as this server sees it.
#[derive(Clone, Copy, Debug)]
pub struct SocketPeer {
    pub pid: Option<u32>,
}

impl Connected<IncomingStream<'_, RunnerSocket>> for SocketPeer {
    fn connect_info(stream: IncomingStream<'_, RunnerSocket>) -> SocketPeer {
        *stream.remote_addr()
    }
}

/// The listener: accepts, learns the peer, and enforces the per-sandbox cap.
pub struct RunnerSocket {
    listener: UnixListener,
    open: Arc<Mutex<HashMap<String, usize>>>,
    per_sandbox: usize,
}

impl RunnerSocket {
    /// Binds `path` (replacing a stale socket), open to every local user: sandboxes connect as
    /// their own host uids, and the socket's rules, not its mode, decide who may do what.
    pub fn bind(path: &Path) -> std::io::Result<RunnerSocket> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        Ok(RunnerSocket {
            listener,
            open: Arc::default(),
            per_sandbox: PER_SANDBOX,
        })
    }

    /// Counts the connection against its sandbox, or `None` when the sandbox is at its cap.
    fn admit(&self, sandbox: String) -> Option<Slot> {
        let mut open = self.open.lock().expect("open lock");
        let count = open.entry(sandbox.clone()).or_default();
        if *count >= self.per_sandbox {
            return None;
        }
        *count += 1;
        Some(Slot {
            open: self.open.clone(),
            sandbox,
        })
    }
}

impl Listener for RunnerSocket {
    type Io = Counted;
    type Addr = SocketPeer;

    async fn accept(&mut self) -> (Counted, SocketPeer) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, most likely: let some close before trying again.
                    tracing::warn!(%error, "runner socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let pid = stream
                .peer_cred()
                .ok()
                .and_then(|cred| cred.pid())
                .and_then(|pid| u32::try_from(pid).ok());
            let Some(sandbox) = pid.and_then(budget_of) else {
                tracing::debug!(peer_pid = ?pid, "runner socket: cannot tell the peer's sandbox; closing");
                continue;
            };
            match self.admit(sandbox) {
                Some(slot) => {
                    return (
                        Counted {
                            stream,
                            _slot: slot,
                        },
                        SocketPeer { pid },
                    );
                }
                None => {
                    tracing::debug!(
                        peer_pid = ?pid,
                        cap = self.per_sandbox,
                        "runner socket: a sandbox is at its connection cap; closing a new connection"
                    );
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketPeer> {
        Ok(SocketPeer { pid: None })
    }
}

/// Whose budget a connection from `pid` counts against: its PID namespace, and within it the
/// runner (the namespace's pid 2) apart from everything else.
fn budget_of(pid: u32) -> Option<String> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let inner = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .to_owned();
    let who = if inner == "2" { "runner" } else { "others" };
    Some(format!("{}/{who}", ns.to_string_lossy()))
}

/// One admitted connection's place in its sandbox's count, given back on drop.
struct Slot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    sandbox: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open lock");
        if let Some(count) = open.get_mut(&self.sandbox) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.sandbox);
            }
        }
    }
}

/// An admitted connection: the stream, holding its slot until it closes.
pub struct Counted {
    stream: UnixStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
