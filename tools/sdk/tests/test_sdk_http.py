"""`centaur_tools.http` against a local `http.server` (and an HTTPS one whose certificate is
signed by a CA trusted only through `CENTAUR_PROXY_CA`)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from centaur_tools import ToolError, http

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        url = urlsplit(self.path)
        echo = {
            "method": self.command,
            "path": url.path,
            "query": parse_qs(url.query),
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": body,
        }
        self._send(200, json.dumps(echo).encode(), "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/echo":
            self._echo()
        elif path == "/missing":
            self._send(
                404, b'{"message": "Not Found", "detail": "no such issue"}', "application/json"
            )
        elif path == "/latin1":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif path == "/redirect":
            self._send(302, b"", "text/plain", Location="/echo?from=redirect")
        elif path == "/loop":
            self._send(302, b"", "text/plain", Location="/loop")
        elif path == "/big":
            self._send(200, b"x" * 5000, "text/plain")
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(5):
                self.wfile.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/not-json":
            self._send(200, b"<html>hello</html>", "text/html")
        elif path == "/hang":
            threading.Event().wait(10)
        else:
            self._send(500, b"unexpected", "text/plain")

    def do_POST(self) -> None:
        if urlsplit(self.path).path == "/see-other":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(303, b"", "text/plain", Location="/echo")
        else:
            self._echo()

    do_PUT = do_DELETE = do_PATCH = _echo


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that stops reading (max_bytes, timeouts) is what some tests do


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("CENTAUR_PROXY_CA", raising=False)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_get_with_params_and_headers(server: str) -> None:
    response = http.get(
        f"{server}/echo?a=1",
        params={"b": "two words", "c": [1, 2], "flag": True, "skip": None},
        headers={"X-Trace": "abc"},
    )
    assert response.status == 200
    assert response.url == f"{server}/echo?a=1&b=two+words&c=1&c=2&flag=true"
    assert response.headers["content-type"] == "application/json"
    echo = response.json()
    assert echo["query"] == {"a": ["1"], "b": ["two words"], "c": ["1", "2"], "flag": ["true"]}
    assert echo["headers"]["x-trace"] == "abc"
    assert echo["headers"]["user-agent"] == "centaur-tools/1"


def test_post_json_form_and_bytes(server: str) -> None:
    sent = http.post(f"{server}/echo", json={"title": "Bug", "labels": ["x"]}).json()
    assert sent["method"] == "POST"
    assert json.loads(sent["body"]) == {"title": "Bug", "labels": ["x"]}
    assert sent["headers"]["content-type"] == "application/json"
    form = http.post(f"{server}/echo", data={"q": "a b", "n": 1}).json()
    assert form["body"] == "q=a+b&n=1"
    assert form["headers"]["content-type"] == "application/x-www-form-urlencoded"
    raw = http.request(
        "put", f"{server}/echo", data=b"\x01", headers={"Content-Type": "x/y"}
    ).json()
    assert raw["method"] == "PUT"
    assert raw["headers"]["content-type"] == "x/y"
    with pytest.raises(ValueError, match="json or data"):
        http.post(f"{server}/echo", json={}, data=b"")


def test_an_error_status_is_returned_and_raise_for_status_names_it(server: str) -> None:
    response = http.get(f"{server}/missing?token=hidden")
    assert response.status == 404
    assert not response.ok
    with pytest.raises(http.HTTPError) as raised:
        response.raise_for_status()
    message = str(raised.value)
    assert message == (
        f'GET {server}/missing answered 404 Not Found: {{"message": "Not Found", '
        '"detail": "no such issue"}'
    )
    assert "hidden" not in message
    assert isinstance(raised.value, ToolError)
    assert raised.value.status == 404
    http.get(f"{server}/echo").raise_for_status()


def test_text_uses_the_charset_and_json_failure_is_a_tool_error(server: str) -> None:
    assert http.get(f"{server}/latin1").text() == "café"
    with pytest.raises(
        ToolError, match=r"answered 200 with something that is not JSON \(text/html"
    ):
        http.get(f"{server}/not-json").json()


def test_redirects_are_followed_or_not(server: str) -> None:
    response = http.get(f"{server}/redirect")
    assert response.status == 200
    assert response.url == f"{server}/echo?from=redirect"
    assert response.history == [f"{server}/redirect"]
    assert http.get(f"{server}/redirect", follow_redirects=False).status == 302
    after_post = http.post(f"{server}/see-other", json={"a": 1}).json()
    assert after_post["method"] == "GET"
    assert after_post["body"] == ""
    with pytest.raises(ToolError, match="more than 10 redirects"):
        http.get(f"{server}/loop")


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_a_body_over_max_bytes_is_refused(server: str, path: str) -> None:
    assert len(http.get(f"{server}{path}", max_bytes=5000).body) == 5000
    with pytest.raises(ToolError, match="larger than 4999 bytes"):
        http.get(f"{server}{path}", max_bytes=4999)


def test_connection_failures_name_the_host(server: str) -> None:
    free = socket_port()
    with pytest.raises(ToolError, match=r"cannot reach 127.0.0.1: .*[Rr]efused"):
        http.get(f"http://127.0.0.1:{free}/")
    with pytest.raises(ToolError, match=r"127.0.0.1 did not answer within 0.2 s"):
        http.get(f"{server}/hang", timeout=0.2)
    with pytest.raises(ToolError, match="is not an http:// or https:// URL"):
        http.get("ftp://example.com/file")


def socket_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_proxy_variables_are_honoured_and_no_proxy_bypasses(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server doubles as the "proxy": it receives the absolute-form request line.
    monkeypatch.setenv("HTTP_PROXY", server)
    echo = http.get("http://upstream.test/echo?x=1").json()
    assert echo["path"] == "/echo"
    assert echo["headers"]["host"] == "upstream.test"
    # A proxy that is down: requests fail, except those NO_PROXY sends directly.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{socket_port()}")
    with pytest.raises(ToolError, match=r"cannot reach 127.0.0.1"):
        http.get(f"{server}/echo")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert http.get(f"{server}/echo").status == 200


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=Test Proxy CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "leaf.key", "-out", "leaf.csr",
    )  # fmt: skip
    (folder / "leaf.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", "leaf.pem",
    )  # fmt: skip
    return {"ca": folder / "ca.pem", "cert": folder / "leaf.pem", "key": folder / "leaf.key"}


@pytest.fixture
def tls_server(certificates: dict[str, Path]) -> Iterator[str]:
    httpd = Server(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates["cert"], certificates["key"])
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_https_trusts_the_proxy_ca(
    tls_server: str, certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ToolError, match=r"cannot reach 127.0.0.1: its TLS certificate is not"):
        http.get(f"{tls_server}/echo")
    monkeypatch.setenv("CENTAUR_PROXY_CA", str(certificates["ca"]))
    assert http.get(f"{tls_server}/echo").json()["method"] == "GET"
