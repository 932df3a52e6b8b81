"""The worker: one tool's long-lived process, speaking the worker protocol with the server.

    python -m centaur_tools.worker [--describe] <tool dir>

Frames are JSON lines (`WorkerRequest` / `WorkerMessage` in `protocol/src/tools.rs`): calls
arrive on stdin; `ready`, `result`, `error`, `log` and `attachment` frames leave on the
descriptor that was stdout at start. Before the plugin is imported, fd 1 is pointed at stderr
(so prints, C extensions and subprocesses cannot corrupt the frames) and fd 0 at /dev/null (so
nothing but the frame reader reads the requests). With `CENTAUR_PROXY_SOCKET` set, the proxy
variables point at a loopback forwarder to the egress proxy.

`--describe` prints the `ready` frame and exits 0, or exits 1 with the reason on the last line
of stderr. Otherwise the worker instantiates the tool, sends `ready`, and serves calls
concurrently (sync methods in a pool of `CENTAUR_TOOL_CONCURRENCY` threads, `async def`
methods on one asyncio loop), each ending with one `result` or `error` frame, until stdin
ends; then it lets the calls in flight finish and exits.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

from centaur_tools import egress
from centaur_tools.context import (
    Context,
    Frame,
    FrameError,
    Tool,
    ToolError,
    reset_context,
    set_context,
)
from centaur_tools.schema import (
    ArgumentError,
    Method,
    ResultError,
    SchemaError,
    convert_arguments,
    methods_of,
    to_json,
)

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

PROTOCOL = 1
"""`WORKER_PROTOCOL` in `protocol/src/tools.rs`."""
DEFAULT_CONCURRENCY = 8
MAX_FRAME = 16 << 20
"""The longest frame the server reads (bytes, without the newline): `MAX_FRAME` in
`server/src/tools/worker.rs`. A longer one would end the worker and every call on it."""


class LoadError(Exception):
    """A tool that cannot be loaded: the message is the one-line reason."""


# Loading ----------------------------------------------------------------------------------


def load_module(tool_dir: Path, module_name: str = "client") -> ModuleType:
    """Imports `<tool_dir>/client.py` as `module_name`, with the tool's folder on `sys.path`."""
    client = tool_dir / "client.py"
    if not client.is_file():
        raise LoadError(f"{client} does not exist: a tool's folder holds its client.py")
    if str(tool_dir) not in sys.path:
        sys.path.insert(0, str(tool_dir))
    spec = importlib.util.spec_from_file_location(module_name, client)
    if spec is None or spec.loader is None:
        raise LoadError(f"{client} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        del sys.modules[module_name]
        if isinstance(error, KeyboardInterrupt):
            raise
        raise LoadError(
            f"client.py failed to import: {_one_line(error)}{_where(error, tool_dir)}"
        ) from error
    return module


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _where(error: BaseException, tool_dir: Path) -> str:
    """` (client.py line 3)`: the deepest line of the tool's own code in the traceback."""
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        filename, line = error.filename, error.lineno
    else:
        frames = [
            frame
            for frame in traceback.extract_tb(error.__traceback__)
            if frame.filename.startswith(str(tool_dir))
        ]
        if not frames:
            return ""
        filename, line = frames[-1].filename, frames[-1].lineno
    try:
        name = str(Path(filename).relative_to(tool_dir))
    except ValueError:
        name = filename
    return f" ({name} line {line})"


def tool_class(module: ModuleType) -> type[Tool]:
    """The one `Tool` subclass that `module` defines."""
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Tool)
        and value is not Tool
        and value.__module__ == module.__name__
    ]
    if not found:
        raise LoadError(
            "client.py defines no tool: subclass centaur_tools.Tool "
            "(class MyTool(Tool): ...) and give it public methods"
        )
    if len(found) > 1:
        names = ", ".join(cls.__name__ for cls in found)
        raise LoadError(f"client.py defines {len(found)} tools ({names}): keep exactly one")
    return found[0]


def describe_class(cls: type[Tool]) -> dict[str, Method]:
    try:
        methods = methods_of(cls)
    except SchemaError as error:
        raise LoadError(f"{cls.__name__}: {' '.join(str(error).split())}") from error
    if not methods:
        raise LoadError(f"{cls.__name__} has no public methods: a tool offers at least one")
    return methods


def instantiate(cls: type[Tool]) -> Tool:
    try:
        return cls()
    except ToolError as error:
        raise LoadError(f"{cls.__name__}() failed: {' '.join(str(error).split())}") from error
    except Exception as error:
        raise LoadError(f"{cls.__name__}() failed: {_one_line(error)}") from error


def ready_frame(methods: Mapping[str, Method]) -> Frame:
    return {
        "type": "ready",
        "protocol": PROTOCOL,
        "methods": [method.info for method in methods.values()],
    }


# Calling ----------------------------------------------------------------------------------


def _result(method: Method, value: Any) -> Any:
    try:
        return to_json(value)
    except ResultError as error:
        raise ResultError(f"{method.name} returned a value that is not JSON: {error}") from None


def invoke(instance: Tool, method: Method, arguments: Mapping[str, Any], ctx: Context) -> Any:
    """Calls a sync method with `ctx` as the current context; returns its value as JSON."""
    kwargs = convert_arguments(method, arguments)
    token = set_context(ctx)
    try:
        value = method.bind(instance)(**kwargs)
    finally:
        reset_context(token)
    return _result(method, value)


async def invoke_async(
    instance: Tool, method: Method, arguments: Mapping[str, Any], ctx: Context
) -> Any:
    """Calls an `async def` method (in its own task, so its context stays its own)."""
    kwargs = convert_arguments(method, arguments)
    set_context(ctx)
    value = await method.bind(instance)(**kwargs)
    return _result(method, value)


def error_of(error: BaseException) -> dict[str, Any]:
    """The `error` of an `error` frame for an exception a call raised."""
    if isinstance(error, ArgumentError):
        return {"kind": "invalid_arguments", "message": str(error), "argument": error.argument}
    if isinstance(error, ToolError):
        return {"kind": "tool_error", "message": str(error) or type(error).__name__}
    return {"kind": "exception", "message": _one_line(error)}


# Serving ----------------------------------------------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    """`frame` as one line of UTF-8 JSON, or `FrameError` saying why it cannot be sent."""
    try:
        line = json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        data = line.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError(
            "is not valid UTF-8: it holds a lone surrogate (text decoded from bytes with "
            "errors='surrogateescape'); decode with errors='replace' or return base64"
        ) from None
    except (TypeError, ValueError, RecursionError) as error:
        raise FrameError(f"is not JSON ({_one_line(error)})") from None
    if len(data) > MAX_FRAME:
        raise FrameError(f"is larger than {MAX_FRAME >> 20} MiB: return less")
    return data + b"\n"


def _last_resort(call_id: str) -> bytes:
    """An `error` frame that always encodes (ASCII, small), for when nothing else could."""
    return encode_frame(
        {
            "type": "error",
            "id": call_id,
            "error": {"kind": "exception", "message": "the worker could not send the answer"},
        }
    )


class FrameWriter:
    """Writes frames, one JSON line each, under a lock."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, frame: Frame) -> None:
        """Sends a frame; `FrameError` when it cannot be sent (nothing is written)."""
        self._send(encode_frame(frame))

    def answer(self, call_id: str, frame: Frame) -> None:
        """Sends a call's `result` or `error` frame. It never fails to send one: a frame that
        cannot be sent becomes an `error` frame saying why (`the result is larger than 16 MiB:
        return less`), and if even that fails, a fixed one."""
        try:
            try:
                data = encode_frame(frame)
            except FrameError as error:
                what = "result" if frame.get("type") == "result" else "error"
                logging.error("the %s of call %s %s", what, call_id, error)
                data = encode_frame(
                    {
                        "type": "error",
                        "id": call_id,
                        "error": {"kind": "exception", "message": f"the {what} {error}"},
                    }
                )
        except BaseException:
            logging.exception("the answer of call %s", call_id)
            data = _last_resort(call_id)
        self._send(data)

    def _send(self, data: bytes) -> None:
        with self._lock:
            try:
                self._stream.write(data)
                self._stream.flush()
            except BrokenPipeError:
                # The server is gone: nobody is left to answer.
                os._exit(0)
            except BaseException:
                # A frame half written cannot be taken back, and an answer not written would
                # leave its call waiting: end the worker, so the server fails its calls now.
                logging.exception("the frames cannot be written")
                sys.stderr.flush()
                os._exit(1)


class Worker:
    def __init__(
        self,
        tool: str,
        instance: Tool,
        methods: Mapping[str, Method],
        frames: FrameWriter,
        concurrency: int,
    ) -> None:
        self.tool = tool
        self.instance = instance
        self.methods = methods
        self.frames = frames
        self.pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="call")
        self._in_flight = 0
        self._idle = threading.Condition()
        self._loop: AbstractEventLoop | None = None

    def _event_loop(self) -> AbstractEventLoop:
        if self._loop is None:
            import asyncio  # only for tools with async methods: it takes a while to import

            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="async-calls", daemon=True).start()
            self._loop = loop
        return self._loop

    def serve(self, requests: IO[bytes]) -> None:
        """Reads frames until EOF, then waits for the calls in flight."""
        for line in requests:
            if line.strip():
                self.handle(line)
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0)

    def handle(self, line: bytes) -> None:
        try:
            frame = json.loads(line)
        except ValueError as error:
            logging.error("ignoring a frame that is not JSON (%s): %.200r", error, line)
            return
        if not isinstance(frame, dict) or frame.get("type") != "call" or "id" not in frame:
            logging.error("ignoring an unknown frame: %.200r", line)
            return
        call_id = str(frame["id"])
        name = frame.get("method")
        method = self.methods.get(name) if isinstance(name, str) else None
        if method is None:
            known = ", ".join(self.methods)
            self.frames.answer(
                call_id,
                {
                    "type": "error",
                    "id": call_id,
                    "error": {
                        "kind": "unknown_method",
                        "message": f"{self.tool} has no method {name!r} (it has {known})",
                    },
                },
            )
            return
        arguments = frame.get("arguments") or {}
        context = frame.get("context") or {}
        if not isinstance(arguments, dict) or not isinstance(context, dict):
            self.frames.answer(
                call_id,
                {
                    "type": "error",
                    "id": call_id,
                    "error": {
                        "kind": "invalid_arguments",
                        "message": "a call's arguments and context are JSON objects",
                    },
                },
            )
            return
        ctx = Context(
            tool=self.tool,
            thread=context.get("thread"),
            user=context.get("user"),
            call_id=call_id,
            emit=self.frames.write,
        )
        future: concurrent.futures.Future[Any]
        try:
            if method.is_async:
                loop = self._event_loop()
                coroutine = invoke_async(self.instance, method, arguments, ctx)
                future = _run_threadsafe(coroutine, loop)
            else:
                future = self.pool.submit(invoke, self.instance, method, arguments, ctx)
        except Exception as error:
            logging.exception("%s.%s: call %s could not start", self.tool, name, call_id)
            self.frames.answer(call_id, {"type": "error", "id": call_id, "error": error_of(error)})
            return
        with self._idle:
            self._in_flight += 1
        future.add_done_callback(lambda done: self._answer(call_id, method, done))

    def _answer(self, call_id: str, method: Method, future: concurrent.futures.Future[Any]) -> None:
        try:
            try:
                frame = self._answer_frame(call_id, method, future)
            except BaseException:
                logging.exception("%s.%s: the answer of call %s", self.tool, method.name, call_id)
                frame = {
                    "type": "error",
                    "id": call_id,
                    "error": {"kind": "exception", "message": "the worker could not answer"},
                }
            self.frames.answer(call_id, frame)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _answer_frame(
        self, call_id: str, method: Method, future: concurrent.futures.Future[Any]
    ) -> Frame:
        error = future.exception()
        if error is None:
            return {"type": "result", "id": call_id, "value": future.result()}
        if not isinstance(error, ToolError | ArgumentError):
            # The traceback is for the server log; the agent gets the one-line message.
            logging.error(
                "%s.%s failed",
                self.tool,
                method.name,
                exc_info=(type(error), error, error.__traceback__),
            )
        return {"type": "error", "id": call_id, "error": error_of(error)}


def _run_threadsafe(
    coroutine: Coroutine[Any, Any, Any], loop: AbstractEventLoop
) -> concurrent.futures.Future[Any]:
    import asyncio

    return asyncio.run_coroutine_threadsafe(coroutine, loop)


def _take_stdio() -> tuple[IO[bytes], IO[bytes]]:
    """Keeps the real stdin and stdout for frames and points fds 0 and 1 (and `sys.stdin`,
    `sys.stdout`) elsewhere. The kept descriptors are not inherited by subprocesses."""
    sys.stdout.flush()
    frames_fd = os.dup(1)
    requests_fd = os.dup(0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
    return os.fdopen(requests_fd, "rb"), os.fdopen(frames_fd, "wb")


def _fail(reason: str) -> int:
    sys.stderr.flush()
    print(" ".join(reason.split()), file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m centaur_tools.worker",
        description="Serves a Centaur tool over the worker protocol on stdin/stdout.",
    )
    parser.add_argument("--describe", action="store_true", help="print the ready frame, exit")
    parser.add_argument("tool_dir", type=Path, help="the tool's folder (holding client.py)")
    args = parser.parse_args(argv)

    requests, frames_out = _take_stdio()
    frames = FrameWriter(frames_out)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    tool_dir: Path = args.tool_dir.resolve()
    tool = os.environ.get("CENTAUR_TOOL") or tool_dir.name
    proxy_socket = os.environ.get(egress.PROXY_SOCKET)
    if proxy_socket and not args.describe:
        egress.install_proxy(proxy_socket)
    try:
        cls = tool_class(load_module(tool_dir))
        methods = describe_class(cls)
        if args.describe:
            frames.write(ready_frame(methods))
            return 0
        instance = instantiate(cls)
    except LoadError as error:
        if error.__cause__ is not None and not isinstance(error.__cause__, SchemaError):
            traceback.print_exception(error.__cause__, file=sys.stderr)
        return _fail(str(error))

    try:
        concurrency = max(1, int(os.environ.get("CENTAUR_TOOL_CONCURRENCY") or DEFAULT_CONCURRENCY))
    except ValueError:
        concurrency = DEFAULT_CONCURRENCY
    worker = Worker(tool, instance, methods, frames, concurrency)
    frames.write(ready_frame(methods))
    worker.serve(requests)
    sys.stderr.flush()
    # Threads the plugin started must not keep a worker whose server is gone.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
