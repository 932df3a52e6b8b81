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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::address::resolve;
use crate::audit::{AuditRecord, AuditSink, Decision};
use crate::credentials::{Credential, Scrubber, check_body, opaque_codings, swap_request};
pub use crate::limits::Limits;
use crate::limits::{Admitted, Buffered, CapReached, Caps, Counters, Slot};
use crate::pool::{Pool, PoolKey, Sender};
use crate::registry::{Registry, Sandbox};
use crate::secrets::SecretStore;
use crate::tls::Interception;
use crate::websocket::{ScrubbedFrames, check_upgrade};
use centaur_protocol::egress::policy::{DenyReason, Verdict};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

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

/// A request on its way upstream, credentials already swapped in.
struct Outbound<'a> {
    key: &'a PoolKey,
    addr: SocketAddr,
    tls: &'a Option<Arc<rustls::ClientConfig>>,
    /// May use (and create) kept-alive connections; not for upgrades.
    pooled: bool,
    method: &'a Method,
    authority: &'a str,
    path_and_query: String,
    headers: &'a HeaderMap,
    body: &'a Bytes,
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
            pool: Arc::new(Pool::default()),
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
        let upstream = match self.dial(addr).await {
            Ok(upstream) => upstream,
            Err(reason) => return self.fail(&ctx, &reason),
        };
        let proxy = self.clone();
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
            proxy.record(
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
        let proxy = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let upgraded = match hyper::upgrade::on(request).await {
                Ok(upgraded) => upgraded,
                Err(error) => return tracing::debug!(%error, "CONNECT upgrade failed"),
            };
            let handshake =
                tokio_rustls::TlsAcceptor::from(server_config).accept(TokioIo::new(upgraded));
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    let reason = format!(
                        "the sandbox's TLS handshake failed ({error}); does it trust the Centaur CA?"
                    );
                    return proxy.record(
                        &ctx,
                        None,
                        0,
                        0,
                        Decision::Denied,
                        Some(reason),
                        Vec::new(),
                    );
                }
                Err(_) => {
                    return proxy.record(
                        &ctx,
                        None,
                        0,
                        0,
                        Decision::Denied,
                        Some("TLS handshake timed out".into()),
                        Vec::new(),
                    );
                }
            };
            let base = Arc::new(ctx);
            let service = service_fn(move |request| {
                let (proxy, base) = (proxy.clone(), base.clone());
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
        });
        Response::new(empty())
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

    /// Swaps credentials, checks for leaks, sends the request to `addr` (over TLS when `tls` is
    /// given, with HTTP/2 if the upstream offers it) and returns the scrubbed, audited response.
    async fn exchange(
        &self,
        ctx: Ctx,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        cleartext_ok: bool,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        // Bounds the request bodies one sandbox can have buffered at once.
        let _in_flight = match self.take_slot(
            &ctx,
            &self.in_flight,
            self.limits.max_requests_per_sandbox,
            "requests in flight; wait for some to finish",
        ) {
            Ok(slot) => slot,
            Err(refusal) => return *refusal,
        };
        let credentials = match self.credentials(&ctx.sandbox, &ctx.host, ctx.port).await {
            Ok(credentials) => credentials,
            Err(reason) => return self.fail(&ctx, &reason),
        };
        let bound_here: Vec<&Credential> =
            credentials.iter().filter(|c| !c.value.is_empty()).collect();
        if tls.is_none() && !cleartext_ok && !bound_here.is_empty() {
            let carries = request.headers().values().any(|v| {
                bound_here.iter().any(|c| {
                    v.as_bytes()
                        .windows(c.placeholder.len())
                        .any(|w| w == c.placeholder.as_bytes())
                })
            }) || request
                .uri()
                .query()
                .is_some_and(|q| bound_here.iter().any(|c| q.contains(&c.placeholder)));
            if carries {
                return self.block_leak(
                    &ctx,
                    &format!("{} has bound credentials, which the proxy sends only over HTTPS; use https://", ctx.host),
                );
            }
        }
        let uri = request.uri().clone();
        let (mut parts, body) = request.into_parts();
        // Kept with the placeholders in, in case a rotated credential must be swapped in again.
        let has_bound = !bound_here.is_empty();
        let unswapped = has_bound.then(|| parts.headers.clone());
        let (new_query, swapped) = match swap_request(
            &credentials,
            &ctx.host,
            ctx.port,
            uri.path(),
            uri.query(),
            &mut parts.headers,
        ) {
            Ok(result) => result,
            Err(leak) => return self.block_leak(&ctx, &leak.to_string()),
        };
        // Held until the exchange is over: the body may be sent twice (a rotated credential).
        let (body, _buffered) = match self.read_body(&ctx, body).await {
            Ok(read) => read,
            Err(refusal) => return *refusal,
        };
        if let Err(leak) = check_body(&credentials, &ctx.host, &body) {
            return self.block_leak(&ctx, &leak.to_string());
        }

        let upgrade = upgrade_protocol(&parts.headers);
        let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let outgoing = |headers: &mut HeaderMap| {
            if has_bound {
                // A compressed echo would pass the scrubber: ask for plain bodies, and for
                // WebSocket frames without compression (or any other extension).
                headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("identity"),
                );
                headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
            }
            strip_hop_by_hop(headers);
            if let Some(protocol) = &upgrade {
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, protocol.clone());
            }
        };
        outgoing(&mut parts.headers);
        let default_port = if tls.is_some() { 443 } else { 80 };
        let authority = if ctx.port == default_port {
            ctx.host.clone()
        } else {
            format!("{}:{}", ctx.host, ctx.port)
        };
        let path_and_query = |query: Option<&str>| match query {
            Some(query) => format!("{}?{query}", uri.path()),
            None => uri.path().to_owned(),
        };
        let bytes_up = body.len() as u64;
        let key = PoolKey {
            sandbox_id: ctx.sandbox.config.sandbox_id.clone(),
            addr,
            server_name: tls
                .as_ref()
                .map(|_| centaur_protocol::egress::host::normalize(&ctx.host)),
        };
        let outbound = Outbound {
            key: &key,
            addr,
            tls: &tls,
            pooled: upgrade.is_none(),
            method: &parts.method,
            authority: &authority,
            path_and_query: path_and_query(new_query.as_deref().or(uri.query())),
            headers: &parts.headers,
            body: &body,
        };
        let (mut sender, mut response) = match self.send_upstream(&ctx, outbound).await {
            Ok(sent) => sent,
            Err(refusal) => return *refusal,
        };

        // The upstream rejected a swapped credential: if its source now holds another value
        // (it was rotated), swap that in and send the request once more.
        let mut credentials = credentials;
        if matches!(response.status().as_u16(), 401 | 403)
            && upgrade.is_none()
            && let Some(unswapped) = unswapped
            && let Some(rotated) = self.rotated(&credentials, &swapped).await
        {
            let mut headers = unswapped;
            if let Ok((new_query, _)) = swap_request(
                &rotated,
                &ctx.host,
                ctx.port,
                uri.path(),
                uri.query(),
                &mut headers,
            ) {
                outgoing(&mut headers);
                let outbound = Outbound {
                    key: &key,
                    addr,
                    tls: &tls,
                    pooled: true,
                    method: &parts.method,
                    authority: &authority,
                    path_and_query: path_and_query(new_query.as_deref().or(uri.query())),
                    headers: &headers,
                    body: &body,
                };
                (sender, response) = match self.send_upstream(&ctx, outbound).await {
                    Ok(sent) => sent,
                    Err(refusal) => return *refusal,
                };
                credentials = rotated;
            }
        }

        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            // WebSocket (or another upgrade): relay the streams both ways from here on, counted
            // against the sandbox's tunnels. With values to scrub, the upstream's side is read
            // as WebSocket frames and scrubbed; an upgrade that cannot be is refused.
            let mut scrubber = Scrubber::new(&credentials);
            let scrub_frames = !scrubber.is_empty();
            if scrub_frames && let Err(error) = check_upgrade(response.headers()) {
                // The reason quotes the upstream's headers: scrubbed like everything it sends.
                let reason = format!("{} {error}", ctx.host);
                let reason =
                    String::from_utf8_lossy(&scrubber.scrub_whole(reason.as_bytes())).into_owned();
                return self.fail(&ctx, &reason);
            }
            let slot = match self.take_tunnel(&ctx) {
                Ok(slot) => slot,
                Err(refusal) => return *refusal,
            };
            scrubber.scrub_headers(response.headers_mut());
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let idle = self.limits.idle_timeout;
            let mut record =
                self.audit_record(&ctx, Some(101), bytes_up, Decision::Allowed, None, swapped);
            let sink = self.audit.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) {
                    let (up, down) = relay_upgraded(
                        TokioIo::new(client),
                        TokioIo::new(upstream),
                        idle,
                        scrub_frames.then_some(scrubber),
                        &mut record,
                    )
                    .await;
                    record.bytes_up += up;
                    record.bytes_down = down;
                }
                sink.record(record);
            });
            let (mut parts, _) = response.into_parts();
            forget_upstream_wire(&mut parts.extensions);
            return Response::from_parts(parts, empty());
        }

        let (mut parts, body) = response.into_parts();
        forget_upstream_wire(&mut parts.extensions);
        let mut scrubber = Scrubber::new(&credentials);
        // Every coding counts (all `Content-Encoding` headers, their lists, `Transfer-Encoding`):
        // the scrubber sees only plain bytes.
        let opaque = opaque_codings(&parts.headers);
        if !opaque.is_empty() && !scrubber.is_empty() {
            // The reason quotes the upstream's headers: scrubbed like everything it sends.
            let reason = format!(
                "{} sent a body encoded as `{opaque}` although asked not to; the proxy cannot check it for credentials",
                ctx.host
            );
            let reason =
                String::from_utf8_lossy(&scrubber.scrub_whole(reason.as_bytes())).into_owned();
            return self.fail(&ctx, &reason);
        }
        scrubber.scrub_headers(&mut parts.headers);
        strip_hop_by_hop(&mut parts.headers);
        if !scrubber.is_empty() {
            // Scrubbing can change the length; the body goes out chunked.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let status = parts.status.as_u16();
        let record = self.audit_record(
            &ctx,
            Some(status),
            bytes_up,
            Decision::Allowed,
            None,
            swapped,
        );
        let give_back = match sender {
            Sender::Http1(_) => Some((self.pool.clone(), key, sender)),
            Sender::Http2(_) => None,
        };
        let body = Relayed {
            inner: body,
            scrubber: (!scrubber.is_empty()).then_some(scrubber),
            bytes_down: 0,
            audit: Some((record, self.audit.clone())),
            give_back,
            pending_trailers: None,
        };
        Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
    }

    /// Reads a request body whole, for inspection. Its bytes are counted against the sandbox's
    /// and the proxy's budgets as they arrive, and stay counted while the returned hold lives.
    /// Over `max_body_bytes` is a 413; a budget reached is a 429 (the sandbox's) or a 503 (the
    /// proxy's).
    async fn read_body(
        &self,
        ctx: &Ctx,
        mut body: Incoming,
    ) -> Result<(Bytes, Buffered<'_>), Box<Response<ProxyBody>>> {
        let mut buffered = self.caps.buffer(&ctx.sandbox.config.sandbox_id);
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                Box::new(self.fail(ctx, &format!("reading the request body failed: {error}")))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total = total.saturating_add(data.len());
            if total > self.limits.max_body_bytes {
                let reason = format!(
                    "the request body is larger than the proxy's limit of {} bytes",
                    self.limits.max_body_bytes
                );
                return Err(Box::new(self.deny(
                    ctx,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &reason,
                )));
            }
            if let Err(cap) = buffered.grow(data.len()) {
                return Err(Box::new(self.deny(ctx, cap.status(), &cap.to_string())));
            }
            chunks.push(data);
        }
        Ok((concat(chunks, total), buffered))
    }

    /// Sends one request upstream: on a kept-alive connection when `pooled` allows (a pooled
    /// connection the upstream closed in the meantime gets one retry on a new one), else on a
    /// new connection.
    async fn send_upstream(
        &self,
        ctx: &Ctx,
        out: Outbound<'_>,
    ) -> Result<(Sender, Response<Incoming>), Box<Response<ProxyBody>>> {
        let mut attempt_pooled = out.pooled;
        loop {
            let pooled = if attempt_pooled {
                self.pool.take(out.key)
            } else {
                None
            };
            let from_pool = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => match self
                    .connect_upstream(ctx, out.addr, out.tls.clone(), out.pooled)
                    .await
                {
                    Ok(sender) => sender,
                    Err(reason) => return Err(Box::new(self.fail(ctx, &reason))),
                },
            };
            if let (false, Sender::Http2(shared)) = (from_pool, &sender) {
                self.pool
                    .put(out.key.clone(), Sender::Http2(shared.clone()));
            }
            let scheme = if sender.is_http2() { "https" } else { "" };
            let uri = build_uri(scheme, out.authority, &out.path_and_query).map_err(|error| {
                Box::new(self.deny(ctx, StatusCode::BAD_REQUEST, &format!("bad URL: {error}")))
            })?;
            let mut headers = out.headers.clone();
            if sender.is_http2() {
                headers.remove(header::HOST);
            } else {
                headers.insert(
                    header::HOST,
                    HeaderValue::from_str(out.authority)
                        .expect("a host and port are a valid header"),
                );
            }
            let mut request = Request::new(Full::new(out.body.clone()));
            *request.method_mut() = out.method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
            match sender.send(request).await {
                Ok(response) => return Ok((sender, response)),
                Err(_) if from_pool => attempt_pooled = false,
                Err(error) => {
                    return Err(Box::new(
                        self.fail(ctx, &format!("{} did not answer: {error}", ctx.host)),
                    ));
                }
            }
        }
    }

    /// After an upstream rejected the `swapped` secrets: the credentials with the values their
    /// sources hold now, if any of them changed.
    async fn rotated(
        &self,
        credentials: &[Credential],
        swapped: &[String],
    ) -> Option<Vec<Credential>> {
        let mut changed = false;
        let mut rotated = Vec::with_capacity(credentials.len());
        for credential in credentials.iter() {
            let mut credential = credential.clone();
            if swapped.contains(&credential.binding.name)
                && let Some(value) = self
                    .secrets
                    .refresh(&credential.binding.name, &credential.value)
                    .await
            {
                credential.value = value;
                changed = true;
            }
            rotated.push(credential);
        }
        changed.then_some(rotated)
    }

    /// One of the sandbox's tunnels (CONNECT tunnels and upgraded connections), or a 429.
    fn take_tunnel(&self, ctx: &Ctx) -> Result<Slot, Box<Response<ProxyBody>>> {
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
    ) -> Result<Slot, Box<Response<ProxyBody>>> {
        Slot::take(counters, &ctx.sandbox.config.sandbox_id, limit).ok_or_else(|| {
            Box::new(self.deny(
                ctx,
                StatusCode::TOO_MANY_REQUESTS,
                &format!("this sandbox already has {limit} {what}"),
            ))
        })
    }

    /// A new connection to the upstream: TCP, then TLS (verifying its certificate) when `tls`
    /// is given, then HTTP/2 if both offer it and `allow_h2`, else HTTP/1.1.
    async fn connect_upstream(
        &self,
        ctx: &Ctx,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        allow_h2: bool,
    ) -> Result<Sender, String> {
        let stream = self.dial(addr).await?;
        let handshake = match tls {
            None => Sender::handshake_http1(TokioIo::new(stream)).await,
            Some(client) => {
                let server_name = rustls::pki_types::ServerName::try_from(
                    centaur_protocol::egress::host::normalize(&ctx.host),
                )
                .map_err(|e| format!("bad server name {}: {e}", ctx.host))?;
                let connecting =
                    tokio_rustls::TlsConnector::from(client).connect(server_name, stream);
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => return Err(format!("TLS with {} failed: {error}", ctx.host)),
                    Err(_) => return Err(format!("TLS with {} timed out", ctx.host)),
                };
                if allow_h2 && stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                    Sender::handshake_http2(TokioIo::new(stream)).await
                } else {
                    Sender::handshake_http1(TokioIo::new(stream)).await
                }
            }
        };
        handshake.map_err(|e| format!("HTTP handshake with {} failed: {e}", ctx.host))
    }

    /// The sandbox's credentials for a request to `host:port`: every placeholder (to detect
    /// leaks), and real values only for the secrets bound to this host, so a secret that cannot
    /// be read breaks only the hosts it is bound to.
    async fn credentials(
        &self,
        sandbox: &Sandbox,
        host: &str,
        port: u16,
    ) -> Result<Vec<Credential>, String> {
        let mut credentials = Vec::new();
        for binding in &sandbox.config.policy.secrets {
            let bound_here = binding.hosts.iter().any(|p| p.matches(host, port));
            let value = if bound_here {
                self.secrets.get(&binding.name).await.map_err(|error| {
                    tracing::warn!(secret = %binding.name, %error, "a bound credential is unavailable");
                    format!("credential `{}` is unavailable in the proxy; ask a person on this thread to check it", binding.name)
                })?
            } else {
                // Never swapped here (the swap refuses it first) and too short to scrub.
                String::new()
            };
            credentials.push(Credential {
                placeholder: sandbox.placeholders[&binding.name].clone(),
                binding: binding.clone(),
                value,
            });
        }
        Ok(credentials)
    }

    async fn dial(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(error)) => Err(format!("cannot connect to {addr}: {error}")),
            Err(_) => Err(format!("connecting to {addr} timed out")),
        }
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

/// A refusal the agent can read: status, `x-centaur-deny-reason`, and a plain-text body saying
/// why and how to ask for access.
pub fn refusal(status: StatusCode, reason: &str, host: &str) -> Response<ProxyBody> {
    let (header_reason, body) = refusal_text(reason, host);
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&header_reason) {
        headers.insert("x-centaur-deny-reason", value);
    }
    response
}

/// A refusal's `x-centaur-deny-reason` value (printable ASCII only) and its body.
fn refusal_text(reason: &str, host: &str) -> (String, String) {
    let header_reason: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let body = format!(
        "Centaur egress proxy refused this request: {reason}.\n\n\
         This sandbox reaches the network only through Centaur's egress proxy, which allows the \
         hosts in this thread's policy and swaps credential placeholders only where they are \
         bound. If the task needs {host}, stop and ask a person on this thread to allow it; \
         do not try to work around the proxy.\n"
    );
    (header_reason, body)
}

/// A whole HTTP/1.1 refusal of a connection, written before its request is read.
fn connection_refusal(cap: &CapReached) -> Vec<u8> {
    let status = cap.status();
    let (header_reason, body) = refusal_text(&cap.to_string(), "any host");
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         x-centaur-deny-reason: {header_reason}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// Sends `answer` on a refused connection and closes it. With `linger`, the request is read
/// (up to a bound, for a moment) after the answer, so the client can send it whole and read the
/// answer rather than meet a reset; without, the answer goes out only if the socket takes it at
/// once, and the connection is closed on the spot.
async fn answer_and_close<S>(mut stream: S, answer: Vec<u8>, linger: Option<OwnedSemaphorePermit>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(_linger) = linger else {
        let _ = stream.write_all(&answer).now_or_never();
        return;
    };
    let deadline = tokio::time::Instant::now() + REFUSAL_LINGER;
    let answered = tokio::time::timeout_at(deadline, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    });
    if !matches!(answered.await, Ok(Ok(()))) {
        return;
    }
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// How long a refused connection may stay open while its answer goes out and its request is
/// read, and how much of the request is read.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol a request asks to upgrade to (`Connection: upgrade` + `Upgrade: ...`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Origin-form for HTTP/1.1 (`scheme` empty), absolute for HTTP/2.
fn build_uri(
    scheme: &str,
    authority: &str,
    path_and_query: &str,
) -> Result<Uri, hyper::http::Error> {
    if scheme.is_empty() {
        Uri::builder().path_and_query(path_and_query).build()
    } else {
        Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
    }
}

/// One buffer of `chunks`, which hold `total` bytes (copied only if there are several).
fn concat(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut whole = bytes::BytesMut::with_capacity(total);
    for chunk in chunks {
        whole.extend_from_slice(&chunk);
    }
    whole.freeze()
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

/// Headers that belong to one connection, not to the request.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for name in listed {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// What hyper kept of the upstream's wire format in a response's extensions (its reason
/// phrase, which an upstream could fill with anything, a value included) stays behind: the
/// sandbox gets the canonical reason for the status.
fn forget_upstream_wire(extensions: &mut hyper::http::Extensions) {
    extensions.clear();
}

/// Relays an upgraded connection. With a `scrubber`, what the upstream sends is read as
/// WebSocket frames and scrubbed ([`crate::websocket`]); if the proxy has to end the connection
/// (a frame it cannot read), `record` turns into a denial that says why, like every refusal.
/// Returns the bytes sent up and down.
async fn relay_upgraded<A, B>(
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
async fn relay_io<A, B>(client: A, upstream: B, idle: Duration) -> (u64, u64)
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
struct Relayed {
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
