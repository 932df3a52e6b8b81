//! One request on its way upstream and back, stage by stage: admit (a slot among the sandbox's
//! requests in flight) → leak check (bound credentials never in cleartext to a public host) →
//! credential swap (headers and query only) → the body's placeholders noted (it is forwarded
//! unchanged) → send (and once more with a rotated credential) → relay an upgrade, or scrub the
//! response → audit, when its body ends.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::{request, response};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::relay::{Relayed, relay_upgraded};
use super::{BoxError, Ctx, HANDSHAKE_TIMEOUT, Proxy, ProxyBody, Refusal, empty};
use crate::audit::{AuditRecord, Decision};
use crate::credentials::{
    BodyPlaceholders, Credential, Scrubber, body_placeholders, opaque_codings, swap_request,
};
use crate::limits::{Buffered, Slot};
use crate::pool::{PoolKey, Sender};
use crate::registry::Sandbox;
use crate::secrets::SecretError;
use crate::websocket::check_upgrade;

/// Why the proxy could not open a connection to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("connecting to {addr} timed out")]
    ConnectTimedOut { addr: SocketAddr },
    #[error("bad server name {host}: {error}")]
    ServerName {
        host: String,
        error: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("TLS with {host} failed: {error}")]
    Tls { host: String, error: std::io::Error },
    #[error("TLS with {host} timed out")]
    TlsTimedOut { host: String },
    #[error("HTTP handshake with {host} failed: {error}")]
    Handshake { host: String, error: hyper::Error },
}

/// A secret bound to the request's host whose value the proxy cannot read. The sandbox is told
/// only its name; why is logged.
#[derive(Debug, thiserror::Error)]
#[error("credential `{name}` is unavailable in the proxy; ask a person on this thread to check it")]
pub struct CredentialUnavailable {
    pub name: String,
    #[source]
    pub error: SecretError,
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

/// What the credential swap made of a request's headers and query.
struct Swapped {
    /// The query with credentials swapped in, if it held any.
    query: Option<String>,
    /// The names of the secrets swapped in.
    names: Vec<String>,
    /// The headers as the sandbox sent them (placeholders in), kept when credentials are bound
    /// to this host, in case a rotated credential must be swapped in again.
    unswapped: Option<HeaderMap>,
}

/// What every request sent upstream has done to its headers, the retry with a rotated
/// credential included.
struct Outgoing<'a> {
    /// Credentials are bound to this host: its echoes must reach the scrubber readable.
    has_bound: bool,
    /// The protocol the sandbox asked to upgrade to.
    upgrade: Option<&'a HeaderValue>,
}

/// The upstream's answer: the connection it came on, and the credentials it was given.
struct Answer {
    sender: Sender,
    response: Response<Incoming>,
    credentials: Vec<Credential>,
}

impl Proxy {
    /// Swaps credentials, checks for leaks, sends the request to `addr` (over TLS when `tls` is
    /// given, with HTTP/2 if the upstream offers it) and returns the scrubbed, audited response.
    /// Plain HTTP (`tls` is `None`) carries credentials only with `cleartext_ok`.
    pub(super) async fn exchange(
        &self,
        ctx: Ctx,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        cleartext_ok: bool,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        self.try_exchange(&ctx, addr, tls, cleartext_ok, request)
            .await
            .unwrap_or_else(|refusal| *refusal)
    }

    async fn try_exchange(
        &self,
        ctx: &Ctx,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        cleartext_ok: bool,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        // Bounds the request bodies one sandbox can have buffered at once.
        let _in_flight = self.admit(ctx)?;
        let credentials = self
            .credentials(&ctx.sandbox, &ctx.host, ctx.port)
            .await
            .map_err(|error| Box::new(self.fail(ctx, &error.to_string())))?;
        if tls.is_none() && !cleartext_ok {
            self.check_cleartext(ctx, &credentials, &request)?;
        }
        let (mut parts, body) = request.into_parts();
        let mut swapped = self.swap(ctx, &credentials, &mut parts)?;
        // Held until the exchange is over: the body may be sent twice (a rotated credential).
        let (body, _buffered) = self.read_body(ctx, body).await?;
        // Never a leak: the sandbox holds no real value to put in a body, and the proxy never
        // swaps one into it. Named in the audit; a coded body is not decoded for it.
        let in_body = if opaque_codings(&parts.headers).is_empty() {
            body_placeholders(&credentials, &body)
        } else {
            BodyPlaceholders::default()
        };

        let upgrade = upgrade_protocol(&parts.headers);
        let client_upgrade = parts.extensions.remove::<OnUpgrade>();
        let outgoing = Outgoing {
            has_bound: swapped.unswapped.is_some(),
            upgrade: upgrade.as_ref(),
        };
        outgoing.apply(&mut parts.headers);
        let (authority, key) = upstream_names(ctx, addr, tls.is_some());
        let outbound = Outbound {
            key: &key,
            addr,
            tls: &tls,
            pooled: upgrade.is_none(),
            method: &parts.method,
            authority: &authority,
            path_and_query: path_and_query(
                parts.uri.path(),
                swapped.query.as_deref().or(parts.uri.query()),
            ),
            headers: &parts.headers,
            body: &body,
        };
        let answer = self
            .send(
                ctx,
                &outbound,
                &parts.uri,
                &outgoing,
                credentials,
                &mut swapped,
            )
            .await?;

        let bytes_up = body.len() as u64;
        if answer.response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            return self.relay_upgrade(
                ctx,
                answer,
                client_upgrade,
                bytes_up,
                (swapped.names, in_body),
            );
        }
        let (mut parts, body) = answer.response.into_parts();
        forget_upstream_wire(&mut parts.extensions);
        let scrubber = self.scrub_head(ctx, &mut parts, &answer.credentials)?;
        let mut record = self.audit_record(
            ctx,
            Some(parts.status.as_u16()),
            bytes_up,
            Decision::Allowed,
            None,
            swapped.names,
        );
        note_body_placeholders(&mut record, in_body);
        Ok(self.relay_body(parts, body, scrubber, record, answer.sender, key))
    }

    /// Admission: a slot among the sandbox's requests in flight, or a 429.
    fn admit(&self, ctx: &Ctx) -> Result<Slot, Refusal> {
        self.take_slot(
            ctx,
            &self.in_flight,
            self.limits.max_requests_per_sandbox,
            "requests in flight; wait for some to finish",
        )
    }

    /// The leak check for plain HTTP to a host not allowed to be private: a placeholder bound
    /// here, in a header or the query, would travel in cleartext.
    fn check_cleartext(
        &self,
        ctx: &Ctx,
        credentials: &[Credential],
        request: &Request<Incoming>,
    ) -> Result<(), Refusal> {
        let bound_here = || credentials.iter().filter(|c| !c.value.is_empty());
        if bound_here().next().is_none() {
            return Ok(());
        }
        let in_headers = request.headers().values().any(|v| {
            bound_here().any(|c| {
                v.as_bytes()
                    .windows(c.placeholder.len())
                    .any(|w| w == c.placeholder.as_bytes())
            })
        });
        let carries = in_headers
            || request
                .uri()
                .query()
                .is_some_and(|q| bound_here().any(|c| q.contains(&c.placeholder)));
        if carries {
            return Err(Box::new(self.block_leak(
                ctx,
                &format!(
                    "{} has bound credentials, which the proxy sends only over HTTPS; use https://",
                    ctx.host
                ),
            )));
        }
        Ok(())
    }

    /// The credential swap, in the request's headers and query; a placeholder where it may not
    /// go is blocked as a leak.
    fn swap(
        &self,
        ctx: &Ctx,
        credentials: &[Credential],
        parts: &mut request::Parts,
    ) -> Result<Swapped, Refusal> {
        let has_bound = credentials.iter().any(|c| !c.value.is_empty());
        let unswapped = has_bound.then(|| parts.headers.clone());
        let (query, names) = swap_request(
            credentials,
            &ctx.host,
            ctx.port,
            parts.uri.path(),
            parts.uri.query(),
            &mut parts.headers,
        )
        .map_err(|leak| Box::new(self.block_leak(ctx, &leak.to_string())))?;
        Ok(Swapped {
            query,
            names,
            unswapped,
        })
    }

    /// Sends the request. If the upstream rejects it (401 or 403) and a swapped credential's
    /// source now holds another value (it was rotated), swaps that in and sends the request once
    /// more. Upgrades are sent once.
    /// `uri` is the request's as the sandbox sent it, placeholders in.
    async fn send(
        &self,
        ctx: &Ctx,
        outbound: &Outbound<'_>,
        uri: &Uri,
        outgoing: &Outgoing<'_>,
        mut credentials: Vec<Credential>,
        swapped: &mut Swapped,
    ) -> Result<Answer, Refusal> {
        let (mut sender, mut response) = self.send_upstream(ctx, outbound).await?;
        if matches!(response.status().as_u16(), 401 | 403)
            && outgoing.upgrade.is_none()
            && let Some(mut headers) = swapped.unswapped.take()
            && let Some(rotated) = self.rotated(&credentials, &swapped.names).await
            && let Ok((query, _)) = swap_request(
                &rotated,
                &ctx.host,
                ctx.port,
                uri.path(),
                uri.query(),
                &mut headers,
            )
        {
            outgoing.apply(&mut headers);
            let retry = Outbound {
                pooled: true,
                path_and_query: path_and_query(uri.path(), query.as_deref().or(uri.query())),
                headers: &headers,
                ..*outbound
            };
            (sender, response) = self.send_upstream(ctx, &retry).await?;
            credentials = rotated;
        }
        Ok(Answer {
            sender,
            response,
            credentials,
        })
    }

    /// An upgrade the upstream accepted (a WebSocket, or another protocol): the streams are
    /// relayed both ways from here on, counted against the sandbox's tunnels, and audited when
    /// they close. With values to scrub, the upstream's side is read as WebSocket frames and
    /// scrubbed; an upgrade that cannot be is refused.
    fn relay_upgrade(
        &self,
        ctx: &Ctx,
        answer: Answer,
        client_upgrade: OnUpgrade,
        bytes_up: u64,
        (swapped, in_body): (Vec<String>, BodyPlaceholders),
    ) -> Result<Response<ProxyBody>, Refusal> {
        let Answer {
            mut response,
            credentials,
            ..
        } = answer;
        let mut scrubber = Scrubber::new(&credentials);
        let scrub_frames = !scrubber.is_empty();
        if scrub_frames && let Err(error) = check_upgrade(response.headers()) {
            let reason = scrubbed_reason(&mut scrubber, format!("{} {error}", ctx.host));
            return Err(Box::new(self.fail(ctx, &reason)));
        }
        let slot = self.take_tunnel(ctx)?;
        scrubber.scrub_headers(response.headers_mut());
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let idle = self.limits.idle_timeout;
        let mut record =
            self.audit_record(ctx, Some(101), bytes_up, Decision::Allowed, None, swapped);
        note_body_placeholders(&mut record, in_body);
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
        Ok(Response::from_parts(parts, empty()))
    }

    /// Scrubs a response's head; returns the scrubber for its body when there are values to
    /// scrub. A body in a coding the scrubber cannot read is refused: every coding counts (all
    /// `Content-Encoding` headers, their lists, `Transfer-Encoding`), the scrubber sees only
    /// plain bytes.
    fn scrub_head(
        &self,
        ctx: &Ctx,
        parts: &mut response::Parts,
        credentials: &[Credential],
    ) -> Result<Option<Scrubber>, Refusal> {
        let mut scrubber = Scrubber::new(credentials);
        let opaque = opaque_codings(&parts.headers);
        if !opaque.is_empty() && !scrubber.is_empty() {
            let reason = scrubbed_reason(
                &mut scrubber,
                format!(
                    "{} sent a body encoded as `{opaque}` although asked not to; the proxy cannot check it for credentials",
                    ctx.host
                ),
            );
            return Err(Box::new(self.fail(ctx, &reason)));
        }
        scrubber.scrub_headers(&mut parts.headers);
        strip_hop_by_hop(&mut parts.headers);
        if scrubber.is_empty() {
            return Ok(None);
        }
        // Scrubbing can change the length; the body goes out chunked.
        parts.headers.remove(header::CONTENT_LENGTH);
        Ok(Some(scrubber))
    }

    /// The response on its way to the sandbox: its body scrubbed and counted, and `record`
    /// audited with the bytes relayed when it ends; an HTTP/1.1 connection goes back to the pool
    /// once the body has ended cleanly.
    fn relay_body(
        &self,
        parts: response::Parts,
        body: Incoming,
        scrubber: Option<Scrubber>,
        record: AuditRecord,
        sender: Sender,
        key: PoolKey,
    ) -> Response<ProxyBody> {
        let give_back = match sender {
            Sender::Http1(_) => Some((self.pool.clone(), key, sender)),
            Sender::Http2(_) => None,
        };
        let body = Relayed::new(body, scrubber, (record, self.audit.clone()), give_back);
        Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
    }

    /// and the proxy's budgets as they arrive, and stay counted while the returned hold lives.
    /// Over `max_body_bytes` is a 413; a budget reached is a 429 (the sandbox's) or a 503 (the
    /// proxy's).
    async fn read_body(
        &self,
        ctx: &Ctx,
        mut body: Incoming,
    ) -> Result<(Bytes, Buffered<'_>), Refusal> {
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
        out: &Outbound<'_>,
    ) -> Result<(Sender, Response<Incoming>), Refusal> {
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
                    Err(error) => return Err(Box::new(self.fail(ctx, &error.to_string()))),
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

    /// A new connection to the upstream: TCP, then TLS (verifying its certificate) when `tls`
    /// is given, then HTTP/2 if both offer it and `allow_h2`, else HTTP/1.1.
    async fn connect_upstream(
        &self,
        ctx: &Ctx,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        allow_h2: bool,
    ) -> Result<Sender, UpstreamError> {
        let stream = self.dial(addr).await?;
        let handshake = match tls {
            None => Sender::handshake_http1(TokioIo::new(stream)).await,
            Some(client) => {
                let server_name = rustls::pki_types::ServerName::try_from(
                    centaur_protocol::egress::host::normalize(&ctx.host),
                )
                .map_err(|error| UpstreamError::ServerName {
                    host: ctx.host.clone(),
                    error,
                })?;
                let connecting =
                    tokio_rustls::TlsConnector::from(client).connect(server_name, stream);
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        return Err(UpstreamError::Tls {
                            host: ctx.host.clone(),
                            error,
                        });
                    }
                    Err(_) => {
                        return Err(UpstreamError::TlsTimedOut {
                            host: ctx.host.clone(),
                        });
                    }
                };
                if allow_h2 && stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                    Sender::handshake_http2(TokioIo::new(stream)).await
                } else {
                    Sender::handshake_http1(TokioIo::new(stream)).await
                }
            }
        };
        handshake.map_err(|error| UpstreamError::Handshake {
            host: ctx.host.clone(),
            error,
        })
    }

    /// The sandbox's credentials for a request to `host:port`: every placeholder (to detect
    /// leaks), and real values only for the secrets bound to this host, so a secret that cannot
    /// be read breaks only the hosts it is bound to.
    async fn credentials(
        &self,
        sandbox: &Sandbox,
        host: &str,
        port: u16,
    ) -> Result<Vec<Credential>, CredentialUnavailable> {
        let mut credentials = Vec::new();
        for binding in &sandbox.config.policy.secrets {
            let bound_here = binding.hosts.iter().any(|p| p.matches(host, port));
            let value = if bound_here {
                self.secrets.get(&binding.name).await.map_err(|error| {
                    tracing::warn!(secret = %binding.name, %error, "a bound credential is unavailable");
                    CredentialUnavailable {
                        name: binding.name.clone(),
                        error,
                    }
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

    /// A TCP connection to `addr`, within the connect timeout.
    pub(super) async fn dial(&self, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
        match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(error)) => Err(UpstreamError::Connect { addr, error }),
            Err(_) => Err(UpstreamError::ConnectTimedOut { addr }),
        }
    }
}

impl Outgoing<'_> {
    fn apply(&self, headers: &mut HeaderMap) {
        if self.has_bound {
            // A compressed echo would pass the scrubber: ask for plain bodies, and for
            // WebSocket frames without compression (or any other extension).
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
        }
        strip_hop_by_hop(headers);
        if let Some(protocol) = self.upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
    }
}

/// The upstream's authority as requests name it (with the port unless it is the scheme's
/// default), and the key its kept-alive connections are pooled under.
fn upstream_names(ctx: &Ctx, addr: SocketAddr, tls: bool) -> (String, PoolKey) {
    let default_port = if tls { 443 } else { 80 };
    let authority = if ctx.port == default_port {
        ctx.host.clone()
    } else {
        format!("{}:{}", ctx.host, ctx.port)
    };
    let key = PoolKey {
        sandbox_id: ctx.sandbox.config.sandbox_id.clone(),
        addr,
        server_name: tls.then(|| centaur_protocol::egress::host::normalize(&ctx.host)),
    };
    (authority, key)
}

/// Names in `record` the placeholders its request body carried.
fn note_body_placeholders(record: &mut AuditRecord, in_body: BodyPlaceholders) {
    record.body_placeholders = in_body.secrets;
    record.body_unknown_placeholders = in_body.unknown;
}

/// The origin-form target of a request: `path`, and `?query` if there is one.
fn path_and_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    }
}

/// A refusal's reason that quotes the upstream's headers: scrubbed like everything it sends.
fn scrubbed_reason(scrubber: &mut Scrubber, reason: String) -> String {
    String::from_utf8_lossy(&scrubber.scrub_whole(reason.as_bytes())).into_owned()
}

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
