"""Testing a plugin in-process, with pytest.

    from centaur_tools import testing

    TOOL = Path(__file__).parent.parent          # the tool's folder

    def test_search(monkeypatch, fake_api):
        monkeypatch.setenv("GITHUB_API_URL", fake_api.url)
        result = testing.call(TOOL, "search_issues", query="billing", limit=5)
        assert result["items"][0]["number"] == 7
        assert testing.last_logs()[0].message.startswith("searching")

`call` does what the worker does: the arguments go through JSON and are converted to the
method's type hints (a bad one raises `ArgumentError`, as the server would answer 400), the
method runs with a `Context` (the given `thread` and `user`) whose logs and attachments are
collected (`last_logs()`, `last_attachments()`), and the value comes back as the JSON the
caller would get (a value the worker could not send, such as text with a lone surrogate or
a result over 16 MiB, raises `ResultError` as the worker would answer an error). `ToolError` and
other exceptions propagate as they are.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from centaur_tools.context import Context, Frame, FrameError, Tool
from centaur_tools.schema import ArgumentError, Method, ResultError, methods_of, to_json
from centaur_tools.worker import (
    describe_class,
    encode_frame,
    invoke,
    invoke_async,
    load_module,
    tool_class,
)

__all__ = [
    "ArgumentError",
    "Attachment",
    "LogLine",
    "call",
    "describe",
    "last_attachments",
    "last_logs",
    "load",
]


@dataclasses.dataclass(frozen=True)
class Attachment:
    """A file a call saved with `context().attach`."""

    name: str
    mime: str
    data: bytes


@dataclasses.dataclass(frozen=True)
class LogLine:
    """A record a call logged with `context().log`."""

    level: str
    message: str


_classes: dict[Path, type[Tool]] = {}
_lock = threading.Lock()
_last_attachments: list[Attachment] = []
_last_logs: list[LogLine] = []


def _tool_class(tool_dir: str | Path) -> type[Tool]:
    folder = Path(tool_dir).resolve()
    with _lock:
        cls = _classes.get(folder)
        if cls is None:
            # A module name per folder, so that several tools load side by side.
            name = f"centaur_tool_{len(_classes)}_{folder.name.replace('-', '_')}"
            cls = tool_class(load_module(folder, name))
            _classes[folder] = cls
    return cls


def load(tool_dir: str | Path) -> Tool:
    """A new instance of the tool in `tool_dir` (its `client.py` is imported once)."""
    return _tool_class(tool_dir)()


def describe(tool_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The tool's methods as the worker's `ready` frame lists them (`MethodInfo` objects),
    by name."""
    return {name: method.info for name, method in describe_class(_tool_class(tool_dir)).items()}


def call(
    tool: str | Path | Tool,
    method: str,
    /,
    *,
    thread: str | None = None,
    user: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Calls `method` of a tool (a folder, loaded afresh, or an instance from `load`) the way
    the worker would, and returns the JSON value the caller would get.

    Arguments are given as keywords, or in `arguments` (for one named `thread`, `user` or
    `arguments`). An `async def` method runs on a new event loop.
    """
    instance = load(tool) if isinstance(tool, str | Path) else tool
    methods = _methods(type(instance))
    found = methods.get(method)
    if found is None:
        raise ArgumentError(method, f"{type(instance).__name__} has no method {method!r}")
    wire_arguments = to_json({**(arguments or {}), **kwargs})
    attachments: list[Attachment] = []
    logs: list[LogLine] = []

    def collect(frame: Frame) -> None:
        if frame["type"] == "attachment":
            data = base64.b64decode(frame["data"])
            attachments.append(Attachment(frame["name"], frame["mime"], data))
        elif frame["type"] == "log":
            logs.append(LogLine(frame["level"], frame["message"]))

    ctx = Context(
        tool=Path(tool).name if isinstance(tool, str | Path) else type(instance).__name__.lower(),
        thread=thread,
        user=user,
        call_id="00000000-0000-0000-0000-000000000000",
        emit=collect,
    )
    try:
        if found.is_async:
            value = asyncio.run(invoke_async(instance, found, wire_arguments, ctx))
        else:
            value = invoke(instance, found, wire_arguments, ctx)
        try:
            encode_frame({"type": "result", "id": ctx.call_id, "value": value})
        except FrameError as error:
            # The worker would answer the call with this error instead of the value.
            raise ResultError(f"the result {error}") from None
        return value
    finally:
        _last_attachments[:] = attachments
        _last_logs[:] = logs


def _methods(cls: type[Tool]) -> dict[str, Method]:
    return methods_of(cls)


def last_attachments() -> list[Attachment]:
    """The attachments of the last `call` (in this process)."""
    return list(_last_attachments)


def last_logs() -> list[LogLine]:
    """The log records of the last `call` (in this process)."""
    return list(_last_logs)
