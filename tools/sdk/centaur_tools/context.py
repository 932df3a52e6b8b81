"""A plugin's view of Centaur: its base class, its error, and the context of the current call.

A call's `Context` is held in a context variable: the worker sets it around each call (in the
call's pool thread, or in the call's asyncio task), so `context()` returns that call's context
from anywhere in the plugin. Outside a call (a plugin's tests, its `cli.py`, its `__init__`),
`context()` returns a context read from the environment: `CENTAUR_TOOL`, `CENTAUR_THREAD`,
`CENTAUR_USER`; its logs go to stderr and its attachments are saved under
`CENTAUR_ATTACHMENTS_DIR` when that is set (and otherwise only reported on stderr).
"""

from __future__ import annotations

import base64
import contextvars
import logging
import mimetypes
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Frame = dict[str, Any]
"""A worker frame (`log`, `attachment`) as a JSON object."""

MAX_ATTACHMENTS = 10 << 20
"""A call's attachments together, at most (bytes): the server's limit (`MAX_ATTACHMENTS` in
`server/src/tools/worker.rs`); one file larger than this, or past it, raises `ToolError`."""
MAX_LOG_MESSAGE = 64 << 10
"""A log message longer than this (characters) is cut."""


class FrameError(ValueError):
    """A frame the worker cannot send: not valid UTF-8 (a lone surrogate), not JSON, or larger
    than the server takes (16 MiB). The message says which, without the frame's text."""


class Tool:
    """The base class of a plugin: `client.py` defines exactly one subclass, instantiated once
    per worker; its public methods (no leading `_`) are the tool's methods, and their type
    hints, defaults and Google-style docstrings are their JSON Schema."""


class ToolError(Exception):
    """A failure meant for the caller: its message reaches the agent as the call's error
    (`kind: tool_error`). Say what went wrong and what to do instead."""


def level_name(levelno: int) -> str:
    """The protocol's level for a `logging` level number."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


class _FrameHandler(logging.Handler):
    """Turns a call's log records into `log` frames carrying its call id."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(logging.DEBUG)
        self._ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if len(message) > MAX_LOG_MESSAGE:
            message = message[:MAX_LOG_MESSAGE] + " … (cut)"
        # A lone surrogate (text decoded with errors="surrogateescape") cannot be sent: "?".
        message = message.encode("utf-8", "replace").decode("utf-8")
        try:
            self._ctx.emit(
                {
                    "type": "log",
                    "id": self._ctx.call_id,
                    "level": level_name(record.levelno),
                    "message": message,
                }
            )
        except FrameError:
            self.handleError(record)


class Context:
    """Who a call is made for, and what it may do besides returning a value."""

    thread: str | None
    """The calling thread's key, for calls from a sandbox."""
    user: str | None
    """Who asked: `api_key:<name>`, `admin`, or the person behind the thread's turn."""
    call_id: str | None
    """The call's id (a UUID), or None outside a call."""
    tool: str
    """The tool's name."""
    log: logging.Logger
    """The call's logger: its records become `log` frames with the call id (the server log)."""

    def __init__(
        self,
        *,
        tool: str,
        thread: str | None = None,
        user: str | None = None,
        call_id: str | None = None,
        emit: Callable[[Frame], None] | None = None,
    ) -> None:
        self.tool = tool
        self.thread = thread
        self.user = user
        self.call_id = call_id
        self._emit = emit if emit is not None else _environment_sink
        self._attached = 0
        self._attach_lock = threading.Lock()
        # A standalone Logger (not registered with logging.getLogger, so not kept forever),
        # whose only handler is this call's.
        self.log = logging.Logger(f"centaur_tools.{tool}")
        self.log.setLevel(logging.DEBUG)
        self.log.propagate = False
        self.log.addHandler(_FrameHandler(self))

    def __repr__(self) -> str:
        return (
            f"Context(tool={self.tool!r}, thread={self.thread!r}, user={self.user!r}, "
            f"call_id={self.call_id!r})"
        )

    def emit(self, frame: Frame) -> None:
        """Sends a frame for this call (used by `log` and `attach`)."""
        self._emit(frame)

    def secret(self, name: str) -> str:
        """The secret `name` from the environment: a placeholder the egress proxy swaps for the
        real value on the hosts it is bound to, or the value itself for a secret declared
        `reveal = true`."""
        value = os.environ.get(name)
        if not value:
            raise ToolError(
                f"secret {name} is not set: declare it under [tool.centaur.secrets] and give "
                "the proxy a source for it"
            )
        return value

    def setting(self, name: str, default: str | None = None) -> str | None:
        """A setting the tool declared under `[tool.centaur] env` (the server passes the
        server's environment variable of that name), or `default` when it is not set."""
        value = os.environ.get(name)
        return value if value else default

    def attach(self, name: str, data: bytes | str, mime: str | None = None) -> None:
        """Saves a file to the calling thread (an `attachment` frame). `mime` is guessed from
        the name when not given; text is encoded as UTF-8. A call saves at most 10 MiB of
        files (`MAX_ATTACHMENTS`, all its files together): past that, `ToolError`."""
        try:
            raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            name.encode("utf-8")
            if mime is not None:
                mime.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolError(
                f"the attachment {name!r} is not valid UTF-8 text (a lone surrogate, as from "
                "bytes decoded with errors='surrogateescape'): pass the bytes, or decode with "
                "errors='replace'"
            ) from None
        fallback = "text/plain" if isinstance(data, str) else "application/octet-stream"
        if mime is None:
            mime = mimetypes.guess_type(name)[0] or fallback
        limit = MAX_ATTACHMENTS >> 20
        with self._attach_lock:
            if len(raw) > MAX_ATTACHMENTS:
                raise ToolError(
                    f"the attachment {name!r} is {_mib(len(raw))}, over the {limit} MiB a "
                    "call may save: save a smaller file"
                )
            if self._attached + len(raw) > MAX_ATTACHMENTS:
                raise ToolError(
                    f"the attachment {name!r} ({_mib(len(raw))}) would take the call's files "
                    f"past {limit} MiB ({_mib(self._attached)} saved already): save less"
                )
            try:
                self.emit(
                    {
                        "type": "attachment",
                        "id": self.call_id,
                        "name": name,
                        "mime": mime,
                        "data": base64.b64encode(raw).decode("ascii"),
                    }
                )
            except FrameError as error:
                raise ToolError(f"the attachment {name!r} cannot be sent: {error}") from None
            self._attached += len(raw)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _environment_sink(frame: Frame) -> None:
    """Where a context outside a call sends its frames: logs to stderr, attachments to
    `CENTAUR_ATTACHMENTS_DIR` (when set)."""
    if frame["type"] == "log":
        print(f"{frame['level']}: {frame['message']}", file=sys.stderr)
        return
    folder = os.environ.get("CENTAUR_ATTACHMENTS_DIR")
    data = base64.b64decode(frame["data"])
    if folder:
        path = Path(folder) / Path(frame["name"]).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"attachment {frame['name']} ({frame['mime']}) saved to {path}", file=sys.stderr)
    else:
        print(
            f"attachment {frame['name']} ({frame['mime']}, {len(data)} bytes) not saved: "
            "set CENTAUR_ATTACHMENTS_DIR to keep attachments",
            file=sys.stderr,
        )


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "centaur_tools_context", default=None
)


def context() -> Context:
    """The current call's context; outside a call, a context read from the environment."""
    current = _current.get()
    if current is not None:
        return current
    return Context(
        tool=os.environ.get("CENTAUR_TOOL") or "tool",
        thread=os.environ.get("CENTAUR_THREAD") or None,
        user=os.environ.get("CENTAUR_USER") or None,
    )


def set_context(ctx: Context | None) -> contextvars.Token[Context | None]:
    """Makes `ctx` the current context (for the worker and `testing`); undo with
    `reset_context(token)`."""
    return _current.set(ctx)


def reset_context(token: contextvars.Token[Context | None]) -> None:
    _current.reset(token)
