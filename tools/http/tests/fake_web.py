"""A small web site (HTML, JSON, a redirect, text, an image, a 404) and a fake of the egress
proxy's refusals: `403` with `x-centaur-deny-reason` for a plain-HTTP request to a host it does
not allow, and for a `CONNECT` to one; allowed plain-HTTP requests are forwarded."""

from __future__ import annotations

import http.client
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

PAGE = """<!DOCTYPE html>
<html><head><title>Billing  guide</title>
<style>body { color: red }</style><script>document.write("<p>hidden</p>")</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<h1>Invoices</h1>
<p>An   invoice is <b>sent</b>
when <a href="/guide/send">the send guide</a> says so.</p>
<h2>Steps</h2>
<ul><li>Create it</li><li>Send it</li></ul>
<p>Questions: <a href="mailto:billing@example.com">billing@example.com</a>.</p>
</body></html>"""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _start(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


@dataclass
class FakeWeb:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> FakeWeb:
        self.server = _Server(("127.0.0.1", 0), _site(self))
        self.url = _start(self.server)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def _site(fake: FakeWeb) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = {
        "/page.html": (200, "text/html; charset=utf-8", PAGE.encode(), {}),
        "/data.json": (200, "application/json", json.dumps(
            {"invoices": [{"id": 1, "total": "30.00"}], "next": None}).encode(), {}),
        "/problem": (422, "application/problem+json",
                     b'{"title": "Unprocessable", "status": 422}', {}),
        "/old": (301, "text/html", b"moved", {"Location": "/data.json"}),
        "/notes.txt": (200, "text/plain; charset=latin-1", "café\n".encode("latin-1") * 1000,
                       {}),
        "/logo.png": (200, "image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, {}),
        "/missing": (404, "text/html", b"<html><body><h1>Not found</h1></body></html>", {}),
    }  # fmt: skip

    class Site(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            fake.seen.append(Seen(path, {k.lower(): v for k, v in self.headers.items()}))
            status, kind, body, headers = routes.get(path, routes["/missing"])
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Site


@dataclass
class FakeProxy:
    """The egress proxy as a tool's HTTP client meets it (through HTTP(S)_PROXY)."""

    allowed: set[str]
    url: str = ""
    requests: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> FakeProxy:
        self.server = _Server(("127.0.0.1", 0), _proxy(self))
        self.url = _start(self.server)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def _proxy(fake: FakeProxy) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _refuse(self, host: str) -> None:
            body = (
                f"Centaur egress proxy refused this request: {host} is not in the policy.\n"
            ).encode()
            self.send_response(403)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("x-centaur-deny-reason", f"{host} is not in the policy")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_CONNECT(self) -> None:
            fake.requests.append(f"CONNECT {self.path}")
            self._refuse(self.path.rsplit(":", 1)[0])

        def do_GET(self) -> None:
            fake.requests.append(f"GET {self.path}")
            target = urlsplit(self.path)
            host = target.hostname or ""
            if host not in fake.allowed:
                self._refuse(host)
                return
            upstream = http.client.HTTPConnection(host, target.port or 80, timeout=10)
            upstream.request(
                "GET",
                target.path or "/",
                headers={
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("proxy-connection", "connection")
                },
            )
            answer = upstream.getresponse()
            body = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            upstream.close()

    return Proxy
