"""Reaching the network through the egress proxy's Unix socket (`CENTAUR_PROXY_SOCKET`).

A worker's jail has no network but that socket. `start_forwarder` gives HTTP libraries a
loopback proxy address (127.0.0.1:<port>, relayed byte for byte to the socket) and the worker
points the proxy variables at it; `tunnel` gives non-HTTP clients (a database driver) a
loopback endpoint whose connections are `CONNECT`-tunnelled to one host and port.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time

from centaur_tools.context import ToolError

PROXY_SOCKET = "CENTAUR_PROXY_SOCKET"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_SPARE_MAX_AGE = 5.0
"""Seconds a tunnel probed by `tunnel()` is kept for the first client to connect."""


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _splice(left: socket.socket, right: socket.socket) -> None:
    """Relays both ways until both directions end, then closes both."""
    other = threading.Thread(target=_relay, args=(right, left), daemon=True)
    other.start()
    _relay(left, right)
    other.join()
    left.close()
    right.close()


def _open_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def _serve(listener: socket.socket, handle: object) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=handle, args=(client,), daemon=True).start()


def start_forwarder(socket_path: str) -> tuple[str, int]:
    """Listens on 127.0.0.1:<free port> and relays each connection to the Unix socket at
    `socket_path`, in daemon threads; returns the loopback address."""
    listener = socket.create_server(("127.0.0.1", 0))

    def handle(client: socket.socket) -> None:
        try:
            upstream = _open_unix(socket_path)
        except OSError as error:
            print(f"centaur_tools: cannot reach the egress proxy: {error}", file=sys.stderr)
            client.close()
            return
        _splice(client, upstream)

    threading.Thread(target=_serve, args=(listener, handle), daemon=True).start()
    host, port = listener.getsockname()[:2]
    return host, port


def install_proxy(socket_path: str) -> str:
    """Starts the forwarder and points every proxy variable (both cases) at it, with
    `NO_PROXY` empty, so that HTTP libraries reach the network only through the proxy;
    returns the proxy URL."""
    host, port = start_forwarder(socket_path)
    url = f"http://{host}:{port}"
    for name in PROXY_VARIABLES:
        os.environ[name] = url
        os.environ[name.lower()] = url
    os.environ["NO_PROXY"] = ""
    os.environ["no_proxy"] = ""
    return url


def _connect(socket_path: str, host: str, port: int) -> socket.socket:
    """A connection to `host:port` through the proxy (`CONNECT`); `ToolError` if refused."""
    try:
        sock = _open_unix(socket_path)
    except OSError as error:
        raise ToolError(f"cannot reach the egress proxy at {socket_path}: {error}") from None
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            byte = sock.recv(1)
            if not byte:
                raise ToolError(f"the egress proxy closed the connection to {host}:{port}")
            head += byte
            if len(head) > 65536:
                raise ToolError("the egress proxy's answer to CONNECT is too long")
        lines = head.decode("latin-1").split("\r\n")
        status_parts = lines[0].split(" ", 2)
        status = int(status_parts[1]) if len(status_parts) > 1 and status_parts[1].isdigit() else 0
        if status == 200:
            return sock
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        reason = headers.get("x-centaur-deny-reason") or (
            status_parts[2] if len(status_parts) > 2 else ""
        )
        if status == 403:
            raise ToolError(
                f"{host} is not allowed for this tool: the egress proxy refused it ({reason})"
            )
        raise ToolError(f"cannot reach {host}:{port} through the egress proxy: {status} {reason}")
    except BaseException:
        sock.close()
        raise


class _Tunnel:
    def __init__(self, socket_path: str, host: str, port: int) -> None:
        self.socket_path = socket_path
        self.host = host
        self.port = port
        # The first connection, opened by tunnel() to find out at once whether the proxy
        # allows the host; the first client to connect soon after uses it.
        self._spare: tuple[socket.socket, float] | None = (
            _connect(socket_path, host, port),
            time.monotonic(),
        )
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=_serve, args=(self.listener, self._handle), daemon=True).start()

    def _upstream(self) -> socket.socket:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            sock, opened = spare
            if time.monotonic() - opened < _SPARE_MAX_AGE:
                return sock
            sock.close()
        return _connect(self.socket_path, self.host, self.port)

    def _handle(self, client: socket.socket) -> None:
        try:
            upstream = self._upstream()
        except ToolError as error:
            print(f"centaur_tools: tunnel to {self.host}:{self.port}: {error}", file=sys.stderr)
            client.close()
            return
        _splice(client, upstream)


_tunnels: dict[tuple[str, str, int], _Tunnel] = {}
_tunnels_lock = threading.Lock()


def tunnel(host: str, port: int) -> tuple[str, int]:
    """A local TCP endpoint whose connections are tunnelled through the egress proxy to
    `host:port` (for protocols other than HTTP: PostgreSQL, Redis, …). Without a proxy socket
    (outside a worker) it returns `(host, port)` itself. Raises `ToolError` when the proxy does
    not allow the host."""
    socket_path = os.environ.get(PROXY_SOCKET)
    if not socket_path:
        return host, port
    key = (socket_path, host, port)
    with _tunnels_lock:
        existing = _tunnels.get(key)
        if existing is None:
            existing = _Tunnel(socket_path, host, port)
            _tunnels[key] = existing
    local_host, local_port = existing.listener.getsockname()[:2]
    return local_host, local_port
