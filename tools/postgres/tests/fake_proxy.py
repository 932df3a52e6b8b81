"""The egress proxy's Unix socket as a tool meets it for TCP: `CONNECT host:port` answered
`200` and spliced to where the test maps the host, or `403` with `x-centaur-deny-reason`."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeEgress:
    # host:port as the tool asks for it -> the real address on this machine.
    routes: dict[str, tuple[str, int]]
    connects: list[str] = field(default_factory=list)
    path: str = ""
    listener: socket.socket | None = None

    def start(self) -> FakeEgress:
        folder = Path(tempfile.mkdtemp(prefix="centaur-egress-"))
        self.path = str(folder / "proxy.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.listener:
            self.listener.close()

    def _serve(self) -> None:
        assert self.listener is not None
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            byte = client.recv(1)
            if not byte:
                client.close()
                return
            head += byte
        request = head.decode("latin-1").split("\r\n")[0]
        method, target, _ = request.split(" ", 2)
        self.connects.append(f"{method} {target}")
        route = self.routes.get(target)
        if method != "CONNECT" or route is None:
            host = target.rsplit(":", 1)[0]
            body = f"Centaur egress proxy refused this request: {host} is not allowed.\n"
            client.sendall(
                (
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    f"x-centaur-deny-reason: {host} is not in the policy\r\n"
                    f"content-length: {len(body)}\r\n\r\n{body}"
                ).encode()
            )
            client.close()
            return
        upstream = socket.create_connection(route)
        client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
