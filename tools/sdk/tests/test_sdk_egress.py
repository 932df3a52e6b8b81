"""A worker's egress: the loopback forwarder to the proxy's Unix socket, the proxy variables,
`centaur_tools.http` through the proxy, and `egress.tunnel`, against a small stand-in for the
egress proxy that speaks its wire format (absolute-form requests, CONNECT, 403 refusals with
`x-centaur-deny-reason`)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_sdk_worker import Worker, make_tool

from centaur_tools import ToolError, egress


class FakeProxy:
    """Serves on a Unix socket; `allowed` hosts are answered (plain HTTP: a JSON echo of the
    request; CONNECT: a tunnel to an echo service), others refused as the egress proxy does."""

    def __init__(self, path: Path, allowed: set[str]) -> None:
        self.path = path
        self.allowed = allowed
        self.request_lines: list[str] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = conn.recv(1)
                if not byte:
                    return
                head += byte
            lines = head.decode("latin-1").split("\r\n")
            self.request_lines.append(lines[0])
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                if host not in self.allowed:
                    self._refuse(conn, host, int(port))
                    return
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                while data := conn.recv(65536):
                    conn.sendall(b"echo:" + data)
                return
            url = urlsplit(target)
            if url.hostname not in self.allowed:
                self._refuse(conn, url.hostname or "?", url.port or 80)
                return
            body = json.dumps({"request_line": lines[0], "headers": headers}).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

    def _refuse(self, conn: socket.socket, host: str, port: int) -> None:
        reason = f"{host}:{port} is not on this sandbox's list of allowed hosts"
        body = f"Centaur egress proxy refused this request: {reason}.\n".encode()
        conn.sendall(
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n"
            + f"x-centaur-deny-reason: {reason}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[FakeProxy]:
    fake = FakeProxy(tmp_path / "proxy.sock", {"api.allowed.test", "db.allowed.test"})
    yield fake
    fake.close()


NETWORKED = """
    import os
    import socket
    import urllib.request

    from centaur_tools import Tool, egress, http

    class Net(Tool):
        def fetch(self, url: str) -> dict:
            response = http.get(url)
            return {"status": response.status, "body": response.json()}

        def fetch_with_urllib(self, url: str) -> dict:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json_of(response.read())

        def proxy_env(self) -> dict:
            names = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"]
            return {name: os.environ.get(name) for name in names + [n.lower() for n in names]}

        def echo_through(self, host: str, port: int, data: str) -> str:
            local = egress.tunnel(host, port)
            with socket.create_connection(local, timeout=30) as conn:
                conn.sendall(data.encode())
                conn.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := conn.recv(1024):
                    received += chunk
            return received.decode()

    def json_of(raw):
        import json
        return json.loads(raw)
"""


@pytest.fixture
def net(tmp_path: Path, proxy: FakeProxy) -> Iterator[Worker]:
    worker = Worker(make_tool(tmp_path, NETWORKED, "net"), CENTAUR_PROXY_SOCKET=str(proxy.path))
    yield worker
    worker.close()
    assert worker.bad_lines == []


def test_the_worker_points_every_proxy_variable_at_its_forwarder(net: Worker) -> None:
    env = net.call("proxy_env")["value"]
    proxy = env["HTTP_PROXY"]
    assert proxy.startswith("http://127.0.0.1:")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        assert env[name] == proxy
        assert env[name.lower()] == proxy
    assert env["NO_PROXY"] == ""
    assert env["no_proxy"] == ""


def test_http_reaches_an_allowed_host_through_the_proxy(net: Worker, proxy: FakeProxy) -> None:
    answer = net.call("fetch", {"url": "http://api.allowed.test/items?q=1"})
    assert answer["value"]["status"] == 200
    assert (
        answer["value"]["body"]["request_line"] == "GET http://api.allowed.test/items?q=1 HTTP/1.1"
    )
    assert "GET http://api.allowed.test/items?q=1 HTTP/1.1" in proxy.request_lines


def test_any_http_library_goes_through_the_proxy(net: Worker, proxy: FakeProxy) -> None:
    answer = net.call("fetch_with_urllib", {"url": "http://api.allowed.test/plain"})
    assert answer["value"]["request_line"] == "GET http://api.allowed.test/plain HTTP/1.1"


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_host_the_proxy_refuses_is_a_tool_error_naming_it(
    net: Worker, proxy: FakeProxy, scheme: str
) -> None:
    error = net.call("fetch", {"url": f"{scheme}://denied.test/secrets"})["error"]
    port = 443 if scheme == "https" else 80
    assert error == {
        "kind": "tool_error",
        "message": "denied.test is not allowed for this tool: the egress proxy refused it "
        f"(denied.test:{port} is not on this sandbox's list of allowed hosts)",
    }
    expected = (
        "CONNECT denied.test:443 HTTP/1.1"
        if scheme == "https"
        else "GET http://denied.test/secrets HTTP/1.1"
    )
    assert expected in proxy.request_lines


def test_a_tunnel_carries_another_protocol_through_connect(net: Worker, proxy: FakeProxy) -> None:
    answer = net.call("echo_through", {"host": "db.allowed.test", "port": 5432, "data": "ping"})
    assert answer["value"] == "echo:ping"
    assert "CONNECT db.allowed.test:5432 HTTP/1.1" in proxy.request_lines
    again = net.call("echo_through", {"host": "db.allowed.test", "port": 5432, "data": "again"})
    assert again["value"] == "echo:again"


def test_a_tunnel_to_a_refused_host_is_a_tool_error(net: Worker) -> None:
    error = net.call("echo_through", {"host": "db.denied.test", "port": 5432, "data": "x"})["error"]
    assert error["kind"] == "tool_error"
    assert error["message"].startswith("db.denied.test is not allowed for this tool")


def test_tunnel_without_a_proxy_is_the_address_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CENTAUR_PROXY_SOCKET", raising=False)
    assert egress.tunnel("db.example.com", 5432) == ("db.example.com", 5432)


def test_tunnel_in_process(monkeypatch: pytest.MonkeyPatch, proxy: FakeProxy) -> None:
    monkeypatch.setenv("CENTAUR_PROXY_SOCKET", str(proxy.path))
    host, port = egress.tunnel("db.allowed.test", 6543)
    assert host == "127.0.0.1"
    assert egress.tunnel("db.allowed.test", 6543) == (host, port)
    for message in (b"one", b"two"):
        with socket.create_connection((host, port), timeout=30) as conn:
            conn.sendall(message)
            assert conn.recv(100) == b"echo:" + message
    with pytest.raises(ToolError, match=r"nope.test is not allowed for this tool"):
        egress.tunnel("nope.test", 5432)


def test_the_forwarder_relays_bytes_both_ways(proxy: FakeProxy) -> None:
    host, port = egress.start_forwarder(str(proxy.path))
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(b"CONNECT db.allowed.test:1 HTTP/1.1\r\nHost: db.allowed.test:1\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 200")
        conn.sendall(b"hello")
        assert conn.recv(100) == b"echo:hello"


def test_a_forwarder_whose_proxy_is_gone_closes_the_connection(tmp_path: Path) -> None:
    host, port = egress.start_forwarder(str(tmp_path / "missing.sock"))
    with socket.create_connection((host, port), timeout=30) as conn:
        assert conn.recv(100) == b""
