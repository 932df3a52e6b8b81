//! The proxy itself: listeners, and what happens to each request.
//!
//! - A Unix socket per sandbox (the local backend bind-mounts it into the sandbox): the socket
//!   names the sandbox.
//! - One TCP listener for all sandboxes (Kubernetes): each request names its sandbox with
//!   `Proxy-Authorization: Basic <sandbox_id:credential>`.
//!
//! Absolute-form `http://` requests are forwarded with credentials swapped and the response
//! scrubbed; `CONNECT` opens a tunnel to an allowed host. Every request is audited; every
//! refusal is a 403 (or 400, 407, 413, 429, 502, 503) whose body and `x-centaur-deny-reason`
//! header say, in words, why and what to do. Connections and buffered bytes are capped per
//! sandbox and for the whole proxy ([`crate::limits`]).
//!
//! Here: listeners, authentication, policy and address checks, tunnels and interception.
//! `exchange`: one request's way upstream and back, stage by stage. `relay`: upgraded
//! connections and response bodies on their way to the sandbox. `refusal`: what a refused
//! request or connection is answered with.

mod exchange;
mod refusal;
mod relay;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::address::resolve;
use crate::audit::{AuditRecord, AuditSink, Decision};
pub use crate::limits::Limits;
use crate::limits::{Admitted, CapReached, Caps, Counters, Slot};
use crate::pool::Pool;
use crate::registry::{Registry, Sandbox};
use crate::secrets::SecretStore;
use crate::tls::Interception;
use centaur_protocol::egress::policy::{DenyReason, Verdict};
pub use exchange::{CredentialUnavailable, UpstreamError};
pub use refusal::refusal;
use refusal::{answer_and_close, connection_refusal};
use relay::relay_io;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;
/// A refusal on its way to the sandbox (boxed: responses are large, and refusals rare).
type Refusal = Box<Response<ProxyBody>>;

pub struct Proxy {
    pub registry: Arc<Registry>,
    secrets: Arc<SecretStore>,
    audit: Arc<dyn AuditSink>,
    limits: Limits,
    interception: Option<Interception>,
    pool: Arc<Pool>,
    tunnels: Counters,
    in_flight: Counters,
    caps: Caps,
}

/// A request's context for audit and refusals.
struct Ctx {
    sandbox: Arc<Sandbox>,
    started: Instant,
    host: String,
    port: u16,
    method: String,
    path: String,
}

impl Proxy {
    /// After shutdown has begun: resolves when the audit sink has delivered what it held.
    pub fn audit_drained(&self) -> futures_util::future::BoxFuture<'_, ()> {
        self.audit.drained()
    }

    /// Without `interception`, hosts that must be intercepted are refused (never tunnelled).
    pub fn new(
        registry: Arc<Registry>,
        secrets: Arc<SecretStore>,
        audit: Arc<dyn AuditSink>,
        limits: Limits,
        interception: Option<Interception>,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            registry,
            secrets,
            audit,
            interception,
            pool: Arc::new(Pool::new(limits.max_idle_upstream)),
            tunnels: Counters::default(),
            in_flight: Counters::default(),
            caps: Caps::new(&limits),
            limits,
        })
    }

    /// Serves one sandbox on a Unix socket at `path` until `shutdown`.
    pub async fn serve_unix(
        self: &Arc<Self>,
        path: &Path,
        sandbox_id: String,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        self.serve_unix_listener(listener, sandbox_id, shutdown)
            .await
    }

    /// Serves one sandbox on a bound Unix socket until `shutdown`.
    pub async fn serve_unix_listener(
        self: &Arc<Self>,
        listener: UnixListener,
        sandbox_id: String,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => accepted?,
            };
            let admitted = match self.caps.admit_connection(Some(&sandbox_id)) {
                Ok(admitted) => admitted,
                Err(cap) => {
                    self.refuse_connection(stream, Some(&sandbox_id), &cap);
                    continue;
                }
            };
            let proxy = self.clone();
            let sandbox_id = sandbox_id.clone();
            tokio::spawn(async move {
                proxy
                    .serve_connection(stream, Some(sandbox_id), admitted)
                    .await
            });
        }
    }

    /// Delivers every audit record of `sandbox_id` the proxy still holds to the server before
    /// it returns; how many (none for a sandbox it has nothing of).
    pub async fn flush_audit(&self, sandbox_id: &str) -> Result<usize, crate::audit::FlushError> {
        self.audit.flush(sandbox_id).await
    }

    /// Idle upstream connections kept alive for reuse, over all sandboxes and hosts.
    pub fn idle_upstream_connections(&self) -> usize {
        self.pool.idle_count()
    }

    /// Hands a record to the audit sink (the control API's reveals; requests record their
    /// own).
    pub fn record_audit(&self, record: AuditRecord) {
        self.audit.record(record);
    }

    /// The secret sources this proxy reads.
    pub fn secrets(&self) -> &SecretStore {
        &self.secrets
    }

    /// Serves all sandboxes on TCP, each authenticating with its proxy credential.
    pub async fn serve_tcp(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => accepted?,
            };
            let _ = stream.set_nodelay(true);
            let admitted = match self.caps.admit_connection(None) {
                Ok(admitted) => admitted,
                Err(cap) => {
                    self.refuse_connection(stream, None, &cap);
                    continue;
                }
            };
            let proxy = self.clone();
            tokio::spawn(async move { proxy.serve_connection(stream, None, admitted).await });
        }
    }

    /// Answers a connection that a cap refused (429 or 503) and closes it, promptly: refused
    /// connections must not pile up. The refusal is audited for the sandbox whose socket it
    /// came in on, at most once a second (see [`Caps::audit_refusal`]); on the shared TCP
    /// listener the sandbox is not known yet, so it is only logged.
    fn refuse_connection<S>(&self, stream: S, sandbox_id: Option<&str>, cap: &CapReached)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match sandbox_id {
            Some(id) => self.audit_refused_connection(id, cap),
            None => tracing::warn!(reason = %cap, "refused a connection on the TCP listener"),
        }
        let answer = answer_and_close(stream, connection_refusal(cap), self.caps.linger());
        tokio::spawn(answer);
    }

    fn audit_refused_connection(&self, sandbox_id: &str, cap: &CapReached) {
        let Some(sandbox) = self.registry.get(sandbox_id) else {
            return;
        };
        let Some(left_out) = self.caps.audit_refusal(sandbox_id) else {
            return;
        };
        let reason = match left_out {
            0 => cap.to_string(),
            n => format!("{cap} ({n} more connections were refused since the last record)"),
        };
        let ctx = Ctx {
            sandbox,
            started: Instant::now(),
            host: "any host".into(),
            port: 0,
            method: String::new(),
            path: String::new(),
        };
        self.record(
            &ctx,
            Some(cap.status().as_u16()),
            0,
            0,
            Decision::Denied,
            Some(reason),
            Vec::new(),
        );
    }

    /// Serves one accepted connection; `_admitted` holds its place under the caps until it
    /// closes.
    async fn serve_connection<S>(
        self: Arc<Self>,
        stream: S,
        sandbox_id: Option<String>,
        _admitted: Admitted,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            let sandbox_id = sandbox_id.clone();
            async move { Ok::<_, Infallible>(proxy.handle(sandbox_id.as_deref(), request).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .preserve_header_case(true)
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        if let Err(error) = connection.await {
            tracing::debug!(%error, "proxy connection ended with an error");
        }
    }

    async fn handle(
        self: Arc<Self>,
        listener_sandbox: Option<&str>,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let sandbox = match listener_sandbox {
            Some(id) => match self.registry.get(id) {
                Some(sandbox) => sandbox,
                None => {
                    return refusal(
                        StatusCode::FORBIDDEN,
                        "this sandbox is not registered with the egress proxy (it may have been released)",
                        "any host",
                    );
                }
            },
            None => match self.authenticate(request.headers()) {
                Some(sandbox) => sandbox,
                None => {
                    let mut response = refusal(
                        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                        "the proxy needs this sandbox's credentials (Proxy-Authorization: Basic sandbox_id:credential)",
                        "any host",
                    );
                    response.headers_mut().insert(
                        header::PROXY_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"centaur\""),
                    );
                    return response;
                }
            },
        };
        if request.method() == Method::CONNECT {
            self.connect(sandbox, request).await
        } else {
            self.forward(sandbox, request).await
        }
    }

    fn authenticate(&self, headers: &HeaderMap) -> Option<Arc<Sandbox>> {
        let value = headers.get(header::PROXY_AUTHORIZATION)?.to_str().ok()?;
        let (scheme, encoded) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (sandbox_id, credential) = decoded.split_once(':')?;
        let sandbox = self.registry.get(sandbox_id)?;
        let expected = sandbox.proxy_credential.as_bytes();
        bool::from(expected.ct_eq(credential.as_bytes())).then_some(sandbox)
    }

    /// `CONNECT host:port`: a tunnel to an allowed host.
    async fn connect(
        self: Arc<Self>,
        sandbox: Arc<Sandbox>,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let target = request
            .uri()
            .authority()
            .map(|a| (a.host().to_owned(), a.port_u16().unwrap_or(443)));
        let ctx = Ctx {
            sandbox,
            started: Instant::now(),
            host: target
                .as_ref()
                .map_or_else(|| request.uri().to_string(), |(host, _)| host.clone()),
            port: target.as_ref().map_or(0, |(_, port)| *port),
            method: "CONNECT".into(),
            path: String::new(),
        };
        if target.is_none() {
            return self.deny(
                &ctx,
                StatusCode::BAD_REQUEST,
                "CONNECT needs a host:port target",
            );
        }
        let (intercept, allow_private) =
            match ctx.sandbox.config.policy.verdict(&ctx.host, ctx.port) {
                Verdict::Denied(reason) => {
                    return self.deny(&ctx, StatusCode::FORBIDDEN, &policy_reason(&reason, &ctx));
                }
                Verdict::Allowed {
                    intercept,
                    allow_private,
                } => (intercept, allow_private),
            };
        // Hosts that need TLS terminated (bound secrets, or the policy says so) are never
        // tunnelled blind: that would let credentials and data pass unchecked.
        if intercept && self.interception.is_none() {
            return self.deny(
                &ctx,
                StatusCode::FORBIDDEN,
                &format!("{} must be intercepted (it has bound credentials or the policy says so), and this proxy has no CA for interception", ctx.host),
            );
        }
        let addr = match resolve(&ctx.host, ctx.port, allow_private).await {
            Ok(addr) => addr,
            Err(error) => return self.deny(&ctx, StatusCode::FORBIDDEN, &error.to_string()),
        };
        let slot = match self.take_tunnel(&ctx) {
            Ok(slot) => slot,
            Err(refusal) => return *refusal,
        };
        if intercept {
            return self.intercept(ctx, addr, slot, request);
        }
        self.tunnel(ctx, addr, slot, request).await
    }

    /// A blind tunnel: dials the host, answers the CONNECT, and relays bytes both ways until
    /// either side closes or goes idle; audited then.
    async fn tunnel(
        self: Arc<Self>,
        ctx: Ctx,
        addr: SocketAddr,
        slot: Slot,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let upstream = match self.dial(addr).await {
            Ok(upstream) => upstream,
            Err(error) => return self.fail(&ctx, &error.to_string()),
        };
        let idle = self.limits.idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let (up, down) = match hyper::upgrade::on(request).await {
                Ok(upgraded) => relay_io(TokioIo::new(upgraded), upstream, idle).await,
                Err(error) => {
                    tracing::debug!(%error, "CONNECT upgrade failed");
                    (0, 0)
                }
            };
            self.record(
                &ctx,
                Some(200),
                up,
                down,
                Decision::Allowed,
                None,
                Vec::new(),
            );
        });
        Response::new(empty())
    }

    /// An absolute-form `http://` request: policy, swap, forward, scrub.
    async fn forward(
        self: Arc<Self>,
        sandbox: Arc<Sandbox>,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let uri = request.uri().clone();
        let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            let ctx = Ctx {
                sandbox,
                started: Instant::now(),
                host: uri.host().unwrap_or("?").to_owned(),
                port: uri.port_u16().unwrap_or(0),
                method: request.method().to_string(),
                path: uri.path().to_owned(),
            };
            return self.deny(
                &ctx,
                StatusCode::BAD_REQUEST,
                "send absolute http:// URLs to the proxy, and use CONNECT for https",
            );
        };
        let ctx = Ctx {
            sandbox,
            started: Instant::now(),
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(80),
            method: request.method().to_string(),
            path: uri.path().to_owned(),
        };
        let allow_private = match ctx.sandbox.config.policy.verdict(&ctx.host, ctx.port) {
            Verdict::Denied(reason) => {
                return self.deny(&ctx, StatusCode::FORBIDDEN, &policy_reason(&reason, &ctx));
            }
            Verdict::Allowed { allow_private, .. } => allow_private,
        };
        let addr = match resolve(&ctx.host, ctx.port, allow_private).await {
            Ok(addr) => addr,
            Err(error) => return self.deny(&ctx, StatusCode::FORBIDDEN, &error.to_string()),
        };
        // Plain HTTP carries credentials only to hosts explicitly allowed to be private (the
        // Centaur API, services on the same network); everything else must use HTTPS.
        self.exchange(ctx, addr, None, allow_private, request).await
    }

    /// Answers the CONNECT, then terminates TLS with a leaf minted for the host and serves the
    /// sandbox's HTTP/1.1 or HTTP/2 requests one by one through [`Proxy::exchange`].
    fn intercept(
        self: Arc<Self>,
        ctx: Ctx,
        addr: SocketAddr,
        slot: Slot,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let interception = self.interception.as_ref().expect("checked by the caller");
        let server_config = match interception.authority.server_config(&ctx.host) {
            Ok(config) => config,
            Err(error) => {
                return self.fail(
                    &ctx,
                    &format!("cannot mint a certificate for {}: {error}", ctx.host),
                );
            }
        };
        tokio::spawn(async move {
            let _slot = slot;
            let upgraded = match hyper::upgrade::on(request).await {
                Ok(upgraded) => upgraded,
                Err(error) => return tracing::debug!(%error, "CONNECT upgrade failed"),
            };
            if let Some(tls) = self.accept_tls(&ctx, server_config, upgraded).await {
                self.serve_intercepted(ctx, addr, tls).await;
            }
        });
        Response::new(empty())
    }

    /// The sandbox's side of an intercepted tunnel: TLS with the leaf minted for its host. A
    /// failed handshake is audited as a denial (the sandbox may not trust the Centaur CA).
    async fn accept_tls(
        &self,
        ctx: &Ctx,
        server_config: Arc<rustls::ServerConfig>,
        upgraded: Upgraded,
    ) -> Option<TlsStream<TokioIo<Upgraded>>> {
        let handshake =
            tokio_rustls::TlsAcceptor::from(server_config).accept(TokioIo::new(upgraded));
        let reason = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => return Some(tls),
            Ok(Err(error)) => format!(
                "the sandbox's TLS handshake failed ({error}); does it trust the Centaur CA?"
            ),
            Err(_) => "TLS handshake timed out".into(),
        };
        self.record(ctx, None, 0, 0, Decision::Denied, Some(reason), Vec::new());
        None
    }

    /// Serves the sandbox's HTTP/1.1 or HTTP/2 requests inside an intercepted tunnel to `addr`,
    /// each through [`Proxy::intercepted`], until the sandbox closes it.
    async fn serve_intercepted(
        self: Arc<Self>,
        ctx: Ctx,
        addr: SocketAddr,
        tls: TlsStream<TokioIo<Upgraded>>,
    ) {
        let base = Arc::new(ctx);
        let service = service_fn(move |request| {
            let (proxy, base) = (self.clone(), base.clone());
            async move { Ok::<_, Infallible>(proxy.intercepted(&base, addr, request).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(32)
            .keep_alive_interval(Duration::from_secs(60));
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(tls), service)
            .await;
        if let Err(error) = served {
            tracing::debug!(%error, "intercepted connection ended with an error");
        }
    }

    /// One request inside an intercepted tunnel. It may only talk to the tunnel's host: a
    /// different `Host` or `:authority` (domain fronting) is refused.
    async fn intercepted(
        &self,
        base: &Ctx,
        addr: SocketAddr,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let named = request.uri().host().map(str::to_owned).or_else(|| {
            let host = request.headers().get(header::HOST)?.to_str().ok()?;
            Some(host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned())
        });
        // The sandbox's current policy, not the one the tunnel was opened under: a narrowed or
        // removed policy takes effect for the next request.
        let current = self.registry.get(&base.sandbox.config.sandbox_id);
        let registered = current.is_some();
        let ctx = Ctx {
            // A released sandbox's refusal is audited under the registration it had.
            sandbox: current.unwrap_or_else(|| base.sandbox.clone()),
            started: Instant::now(),
            host: base.host.clone(),
            port: base.port,
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
        };
        if !registered {
            return self.deny(
                &ctx,
                StatusCode::FORBIDDEN,
                "this sandbox is no longer registered with the egress proxy",
            );
        }
        match ctx.sandbox.config.policy.verdict(&ctx.host, ctx.port) {
            Verdict::Denied(reason) => {
                return self.deny(&ctx, StatusCode::FORBIDDEN, &policy_reason(&reason, &ctx));
            }
            Verdict::Allowed { allow_private, .. } => {
                if let (false, Some(class)) = (allow_private, crate::address::special(addr.ip())) {
                    let reason = format!(
                        "{} is a {class} address, which sandboxes may not reach",
                        addr.ip()
                    );
                    return self.deny(&ctx, StatusCode::FORBIDDEN, &reason);
                }
            }
        }
        if let Some(named) = named
            && centaur_protocol::egress::host::normalize(&named)
                != centaur_protocol::egress::host::normalize(&ctx.host)
        {
            return self.deny(
                &ctx,
                StatusCode::FORBIDDEN,
                &format!(
                    "this connection was opened to {}; a request for {named} must open its own",
                    ctx.host
                ),
            );
        }
        let tls = self.interception.as_ref().map(|i| i.client.clone());
        self.exchange(ctx, addr, tls, false, request).await
    }

    /// One of the sandbox's tunnels (CONNECT tunnels and upgraded connections), or a 429.
    fn take_tunnel(&self, ctx: &Ctx) -> Result<Slot, Refusal> {
        self.take_slot(
            ctx,
            &self.tunnels,
            self.limits.max_tunnels_per_sandbox,
            "tunnels open; close some first",
        )
    }

    /// One unit of a per-sandbox limit, or a 429 that says which limit and what to do.
    fn take_slot(
        &self,
        ctx: &Ctx,
        counters: &Counters,
        limit: usize,
        what: &str,
    ) -> Result<Slot, Refusal> {
        Slot::take(counters, &ctx.sandbox.config.sandbox_id, limit).ok_or_else(|| {
            Box::new(self.deny(
                ctx,
                StatusCode::TOO_MANY_REQUESTS,
                &format!("this sandbox already has {limit} {what}"),
            ))
        })
    }

    fn deny(&self, ctx: &Ctx, status: StatusCode, reason: &str) -> Response<ProxyBody> {
        self.record(
            ctx,
            Some(status.as_u16()),
            0,
            0,
            Decision::Denied,
            Some(reason.to_owned()),
            Vec::new(),
        );
        refusal(status, reason, &ctx.host)
    }

    fn block_leak(&self, ctx: &Ctx, reason: &str) -> Response<ProxyBody> {
        tracing::warn!(sandbox_id = %ctx.sandbox.config.sandbox_id, host = %ctx.host, %reason, "blocked an attempted credential leak");
        self.record(
            ctx,
            Some(403),
            0,
            0,
            Decision::LeakBlocked,
            Some(reason.to_owned()),
            Vec::new(),
        );
        refusal(StatusCode::FORBIDDEN, reason, &ctx.host)
    }

    /// A 502: the upstream could not be reached or failed its checks (certificate, encoded
    /// body), or a bound credential is unavailable. It is audited as a denial, like every
    /// refusal the sandbox is answered with, so it reaches the thread as `egress.denied`.
    fn fail(&self, ctx: &Ctx, reason: &str) -> Response<ProxyBody> {
        self.record(
            ctx,
            Some(502),
            0,
            0,
            Decision::Denied,
            Some(reason.to_owned()),
            Vec::new(),
        );
        refusal(StatusCode::BAD_GATEWAY, reason, &ctx.host)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        ctx: &Ctx,
        status: Option<u16>,
        up: u64,
        down: u64,
        decision: Decision,
        reason: Option<String>,
        swapped: Vec<String>,
    ) {
        let mut record = self.audit_record(ctx, status, up, decision, reason, swapped);
        record.bytes_down = down;
        self.audit.record(record);
    }

    fn audit_record(
        &self,
        ctx: &Ctx,
        status: Option<u16>,
        up: u64,
        decision: Decision,
        reason: Option<String>,
        swapped: Vec<String>,
    ) -> AuditRecord {
        AuditRecord {
            at: chrono::Utc::now(),
            sandbox_id: ctx.sandbox.config.sandbox_id.clone(),
            thread_key: ctx.sandbox.config.thread_key.clone(),
            host: ctx.host.clone(),
            port: ctx.port,
            method: ctx.method.clone(),
            path: ctx.path.clone(),
            status,
            bytes_up: up,
            bytes_down: 0,
            decision,
            reason,
            secrets_swapped: swapped,
            duration_ms: ctx.started.elapsed().as_millis() as u64,
            body_placeholders: Vec::new(),
            body_unknown_placeholders: 0,
        }
    }
}

fn policy_reason(reason: &DenyReason, ctx: &Ctx) -> String {
    match reason {
        DenyReason::NotAllowed => format!(
            "{}:{} is not on this sandbox's list of allowed hosts",
            ctx.host, ctx.port
        ),
        DenyReason::ExplicitlyDenied => format!(
            "{}:{} is explicitly denied for this sandbox",
            ctx.host, ctx.port
        ),
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn empty() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}
