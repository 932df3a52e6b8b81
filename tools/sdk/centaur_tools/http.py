"""A small HTTP client on the standard library, for plugins that need no other dependency.

It honours the proxy variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, either
case), which in a worker point at the egress proxy, and trusts `CENTAUR_PROXY_CA` (the proxy's
CA, which signs what it intercepts) besides the system roots. A 4xx or 5xx answer is returned
like any other (`Response.raise_for_status()` turns it into an `HTTPError`); what keeps a call
from getting an answer at all (the proxy refusing the host, a connection or TLS failure, a
timeout, a body over `max_bytes`) raises `ToolError`, whose message reaches the agent.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json as jsonlib
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from centaur_tools.context import ToolError

USER_AGENT = "centaur-tools/1"
MAX_REDIRECTS = 10
DENY_REASON = "x-centaur-deny-reason"
"""The header on the egress proxy's refusals, naming the reason."""

Params = Mapping[str, Any] | list[tuple[str, Any]]


class HTTPError(ToolError):
    """A 4xx or 5xx answer, raised by `Response.raise_for_status()`."""

    def __init__(self, response: Response) -> None:
        excerpt = response.excerpt()
        message = (
            f"{response.method} {_without_query(response.url)} answered {response.status}"
            f"{' ' + response.reason if response.reason else ''}"
            f"{': ' + excerpt if excerpt else ''}"
        )
        super().__init__(message)
        self.response = response
        self.status = response.status


@dataclass
class Response:
    """An HTTP answer, read whole."""

    status: int
    url: str
    """The URL that answered (after redirects)."""
    headers: dict[str, str]
    """Header names in lower case; repeated headers joined with `, `."""
    body: bytes
    method: str = "GET"
    reason: str = ""
    history: list[str] = field(default_factory=list)
    """The URLs redirected from, in order."""

    @property
    def ok(self) -> bool:
        return self.status < 400

    def text(self) -> str:
        """The body decoded with the charset of its `content-type` (UTF-8 by default)."""
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; `ToolError` when it is not."""
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            kind = self.headers.get("content-type", "no content-type")
            raise ToolError(
                f"{self.method} {_without_query(self.url)} answered {self.status} with "
                f"something that is not JSON ({kind}): {self.excerpt()}"
            ) from None

    def raise_for_status(self) -> None:
        """Raises `HTTPError` (a `ToolError`) for a 4xx or 5xx answer."""
        if self.status >= 400:
            raise HTTPError(self)

    def excerpt(self, limit: int = 200) -> str:
        text = " ".join(self.text().split())
        return text if len(text) <= limit else text[: limit - 3] + "..."


def get(url: str, **kwargs: Any) -> Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> Response:
    return request("POST", url, **kwargs)


def put(url: str, **kwargs: Any) -> Response:
    return request("PUT", url, **kwargs)


def patch(url: str, **kwargs: Any) -> Response:
    return request("PATCH", url, **kwargs)


def delete(url: str, **kwargs: Any) -> Response:
    return request("DELETE", url, **kwargs)


def request(
    method: str,
    url: str,
    *,
    params: Params | None = None,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    data: bytes | str | Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    max_bytes: int = 10_000_000,
    follow_redirects: bool = True,
) -> Response:
    """Sends a request and reads the whole answer.

    Args:
        method: GET, POST, …
        url: An absolute http:// or https:// URL.
        params: Query parameters, added to those of the URL (a list value repeats the name).
        headers: Request headers.
        json: A body sent as JSON (`content-type: application/json`).
        data: A body: bytes, text (UTF-8), or a form (`application/x-www-form-urlencoded`).
        timeout: Seconds to wait for the connection and for each read.
        max_bytes: The largest body accepted; a larger one raises `ToolError`.
        follow_redirects: Follow 3xx answers (at most 10).
    """
    if json is not None and data is not None:
        raise ValueError("give json or data, not both")
    method = method.upper()
    url = _with_params(url, params)
    sent: dict[str, tuple[str, str]] = {
        "user-agent": ("User-Agent", USER_AGENT),
        "accept": ("Accept", "*/*"),
    }
    body: bytes | None = None
    if json is not None:
        body = jsonlib.dumps(json, separators=(",", ":")).encode("utf-8")
        sent["content-type"] = ("Content-Type", "application/json")
    elif isinstance(data, Mapping):
        body = urlencode(list(data.items()), doseq=True).encode("ascii")
        sent["content-type"] = ("Content-Type", "application/x-www-form-urlencoded")
    elif isinstance(data, str):
        body = data.encode("utf-8")
        sent["content-type"] = ("Content-Type", "text/plain; charset=utf-8")
    elif data is not None:
        body = bytes(data)
        sent["content-type"] = ("Content-Type", "application/octet-stream")
    for name, value in (headers or {}).items():
        sent[name.lower()] = (name, value)

    history: list[str] = []
    while True:
        response = _send(method, url, dict(sent.values()), body, timeout, max_bytes)
        location = response.headers.get("location")
        if not (follow_redirects and location and response.status in (301, 302, 303, 307, 308)):
            response.history = history
            return response
        if len(history) >= MAX_REDIRECTS:
            raise ToolError(f"{method} {_without_query(url)}: more than {MAX_REDIRECTS} redirects")
        history.append(url)
        target = urljoin(url, location)
        if urlsplit(target).hostname != urlsplit(url).hostname:
            sent.pop("authorization", None)
            sent.pop("cookie", None)
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            if method != "HEAD":
                method = "GET"
            body = None
            sent.pop("content-type", None)
        url = target


def _with_params(url: str, params: Params | None) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    pairs = [(key, _param(value)) for key, value in items if value is not None]
    extra = urlencode(pairs, doseq=True)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return [_param(item) for item in value]
    return value


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment=""))


@dataclass
class _Proxy:
    host: str
    port: int
    authorization: str | None


def _variable(name: str) -> str:
    """A proxy variable, the lower-case spelling first (as curl and urllib read them)."""
    return os.environ.get(name.lower()) or os.environ.get(name.upper()) or ""


def _bypassed(host: str) -> bool:
    """Whether `NO_PROXY` sends requests to `host` directly (`*`, a host, or a domain)."""
    host = host.lower()
    for entry in _variable("no_proxy").split(","):
        entry = entry.strip().lower()
        if entry == "*":
            return True
        if entry.startswith("["):  # [::1] or [::1]:8080
            entry = entry[1:].split("]")[0]
        elif entry.count(":") == 1:  # host:port
            entry = entry.split(":")[0]
        entry = entry.lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    address = _variable(f"{scheme}_proxy") or _variable("all_proxy")
    if not address or _bypassed(host):
        return None
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    if parts.scheme != "http" or not parts.hostname:
        raise ToolError(f"the proxy {address} is not supported: use an http:// proxy")
    authorization = None
    if parts.username:
        credentials = f"{parts.username}:{parts.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return _Proxy(parts.hostname, parts.port or 80, authorization)


@functools.lru_cache(maxsize=4)
def _tls(proxy_ca: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if proxy_ca:
        context.load_verify_locations(cafile=proxy_ca)
    return context


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class _TunnelledHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS through a proxy's CONNECT tunnel, keeping the proxy's refusal reason (which
    `http.client`'s own tunnelling drops)."""

    def __init__(
        self, host: str, port: int, proxy: _Proxy, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._proxy = proxy
        self._tls_context = context

    def connect(self) -> None:
        sock = socket.create_connection((self._proxy.host, self._proxy.port), self.timeout)
        try:
            authority = _authority(self.host, self.port or 443)
            lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
            if self._proxy.authorization:
                lines.append(f"Proxy-Authorization: {self._proxy.authorization}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
            answer = http.client.HTTPResponse(sock, method="CONNECT")
            answer.begin()
            if answer.status != 200:
                reason = answer.getheader(DENY_REASON) or _first_line(answer.read(2000))
                raise _Refused(answer.status, reason or answer.reason)
            self.sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0] if text else ""


def _send(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    timeout: float,
    max_bytes: int,
) -> Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(f"{url!r} is not an http:// or https:// URL")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ToolError(f"{url!r} has an invalid port") from None
    proxy = _proxy_for(parts.scheme, host)
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        context = _tls(os.environ.get("CENTAUR_PROXY_CA") or None)
        if proxy is not None:
            connection = _TunnelledHTTPSConnection(host, port, proxy, timeout, context)
        else:
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        target = path
    elif proxy is not None:
        connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout)
        target = urlunsplit(parts._replace(fragment=""))
        if proxy.authorization:
            headers = {**headers, "Proxy-Authorization": proxy.authorization}
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        target = path
    try:
        connection.request(method, target, body=body, headers=headers)
        answer = connection.getresponse()
        received: dict[str, str] = {}
        for name, value in answer.getheaders():
            key = name.lower()
            received[key] = f"{received[key]}, {value}" if key in received else value
        if proxy is not None and DENY_REASON in received:
            raise _Refused(answer.status, received[DENY_REASON])
        length = received.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise _too_large(method, url, max_bytes)
        content = answer.read(max_bytes + 1)
        if len(content) > max_bytes:
            raise _too_large(method, url, max_bytes)
        return Response(
            status=answer.status,
            url=url,
            headers=received,
            body=content,
            method=method,
            reason=answer.reason or "",
        )
    except _Refused as refusal:
        if refusal.status == 403:
            raise ToolError(
                f"{host} is not allowed for this tool: the egress proxy refused it "
                f"({refusal.reason})"
            ) from None
        raise ToolError(
            f"cannot reach {host} through the egress proxy: {refusal.status} {refusal.reason}"
        ) from None
    except TimeoutError:
        raise ToolError(f"{host} did not answer within {timeout:g} s") from None
    except ssl.SSLCertVerificationError as error:
        raise ToolError(
            f"cannot reach {host}: its TLS certificate is not trusted ({error.verify_message})"
        ) from None
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        if proxy is None and _in_a_jailed_worker():
            reason += (
                " (no egress proxy is configured, so a jailed worker has no network: "
                "set the server's CENTAUR_PROXY_CONTROL_URL)"
            )
        raise ToolError(f"cannot reach {host}: {reason}") from None
    finally:
        connection.close()


def _in_a_jailed_worker() -> bool:
    """Whether this is a server-run worker (which reaches nothing but through the proxy)."""
    return "CENTAUR_TOOL" in os.environ and "CENTAUR_PROXY_SOCKET" not in os.environ


def _too_large(method: str, url: str, max_bytes: int) -> ToolError:
    return ToolError(
        f"{method} {_without_query(url)}: the answer is larger than {max_bytes} bytes (max_bytes)"
    )
