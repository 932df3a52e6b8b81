"""The worker as the server runs it: a subprocess speaking frames on stdin and stdout."""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SDK_DIR = Path(__file__).resolve().parents[1]
DEADLINE = 60.0
FRAME_TYPES = {"ready", "result", "error", "log", "attachment"}


def make_tool(root: Path, source: str, name: str = "demo") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "client.py").write_text(textwrap.dedent(source))
    return folder


def worker_env(tool_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tool_dir),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(SDK_DIR),
        "PYTHONUNBUFFERED": "1",
        "CENTAUR_TOOL": tool_dir.name,
        **extra,
    }


class Worker:
    """A worker process, its frames parsed as they arrive (every stdout line must be one)."""

    def __init__(self, tool_dir: Path, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "centaur_tools.worker", str(tool_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tool_dir,
            env=worker_env(tool_dir, **env),
        )
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.bad_lines: list[bytes] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.ready = self.next()
        assert self.ready["type"] == "ready", self.ready

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                frame = json.loads(line)
            except ValueError:
                self.bad_lines.append(line)
                continue
            if not isinstance(frame, dict) or frame.get("type") not in FRAME_TYPES:
                self.bad_lines.append(line)
                continue
            self.frames.put(frame)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.decode("utf-8", errors="replace"))

    def next(self) -> dict[str, Any]:
        try:
            frame = self.frames.get(timeout=DEADLINE)
        except queue.Empty:
            raise AssertionError(f"no frame within {DEADLINE} s; stderr: {self.stderr}") from None
        self.seen.append(frame)
        return frame

    def send(self, method: str, arguments: dict[str, Any] | None = None, **context: str) -> str:
        call_id = str(uuid.uuid4())
        frame = {
            "type": "call",
            "id": call_id,
            "method": method,
            "arguments": arguments or {},
            "context": context,
        }
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(frame).encode() + b"\n")
        self.process.stdin.flush()
        return call_id

    def answer(self, call_id: str) -> dict[str, Any]:
        """Reads frames until the call's result or error."""
        for frame in self.seen:
            if frame.get("id") == call_id and frame["type"] in ("result", "error"):
                return frame
        while True:
            frame = self.next()
            if frame.get("id") == call_id and frame["type"] in ("result", "error"):
                return frame

    def call(self, method: str, arguments: dict[str, Any] | None = None, **context: str) -> Any:
        return self.answer(self.send(method, arguments, **context))

    def frames_of(self, call_id: str, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.seen if f.get("id") == call_id and f["type"] == kind]

    def close(self) -> int:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        return self.process.wait(timeout=DEADLINE)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(source: str, **env: str) -> Worker:
        worker = Worker(make_tool(tmp_path, source), **env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
        assert worker.bad_lines == [], f"stdout lines that are not frames: {worker.bad_lines}"


def describe(tool_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "centaur_tools.worker", "--describe", str(tool_dir)],
        capture_output=True,
        text=True,
        cwd=tool_dir,
        env=worker_env(tool_dir),
        timeout=DEADLINE,
        check=False,
    )


CALCULATOR = """
    import asyncio
    import os
    import subprocess
    import sys
    import threading
    from dataclasses import dataclass
    from enum import Enum

    from centaur_tools import Tool, ToolError, context

    print("imported, says the plugin on stdout")
    os.write(1, b"imported, says the plugin on fd 1\\n")

    class Unit(Enum):
        CM = "cm"
        INCH = "in"

    @dataclass
    class Length:
        value: float
        unit: Unit

    class Calculator(Tool):
        \"\"\"Does sums.\"\"\"

        def __init__(self):
            self.barrier = threading.Barrier(int(os.environ.get("PARTIES", "1")), timeout=30)
            self.event = None

        def add(self, a: int, b: int = 2) -> int:
            \"\"\"Adds two numbers.

            Args:
                a: The first.
                b: The second.
            \"\"\"
            return a + b

        def who(self) -> dict:
            ctx = context()
            return {"thread": ctx.thread, "user": ctx.user, "call_id": ctx.call_id,
                    "tool": ctx.tool}

        def convert(self, length: Length) -> Length:
            factor = 2.54 if length.unit is Unit.INCH else 1 / 2.54
            other = Unit.CM if length.unit is Unit.INCH else Unit.INCH
            return Length(round(length.value * factor, 2), other)

        def together(self, n: int) -> int:
            self.barrier.wait()
            return n

        async def wait_for_partner(self) -> str:
            self.event = self.event or asyncio.Event()
            await asyncio.wait_for(self.event.wait(), 30)
            return "woken"

        async def wake(self) -> str:
            self.event = self.event or asyncio.Event()
            self.event.set()
            return "woke"

        async def slow_add(self, a: int, b: int) -> int:
            await asyncio.sleep(0)
            return a + b

        def noisy(self) -> str:
            print("print() on stdout")
            sys.stdout.write("sys.stdout.write\\n")
            os.write(1, b"os.write to fd 1\\n")
            subprocess.run(["echo", "a subprocess on stdout"], check=True)
            subprocess.run([sys.executable, "-c", "import os; os.write(1, b'child fd 1\\\\n')"],
                           check=True)
            return "quiet"

        def stdin(self) -> dict:
            child = subprocess.run(["cat"], capture_output=True, timeout=30, check=True)
            return {"sys_stdin": sys.stdin.read(), "fd0": os.read(0, 100).decode(),
                    "child": child.stdout.decode()}

        def refuse(self, reason: str) -> None:
            raise ToolError(reason)

        def crash(self) -> None:
            {}["missing"]

        def raw(self) -> dict:
            return {"data": b"bytes"}

        def report(self) -> str:
            ctx = context()
            ctx.log.debug("debugging %d", 1)
            ctx.log.info("working on %s", "it")
            ctx.log.warning("careful")
            ctx.log.error("went wrong")
            ctx.attach("chart.png", b"\\x89PNG\\r\\n")
            ctx.attach("notes.txt", "some notes")
            ctx.attach("data.bin", b"\\x00\\x01", mime="application/x-custom")
            return "reported"

        def surrogate(self) -> dict:
            return {"name": b"caf\\xe9".decode("utf-8", "surrogateescape")}

        def surrogate_error(self) -> None:
            raise ToolError(b"caf\\xe9".decode("utf-8", "surrogateescape"))

        def surrogate_log(self) -> str:
            context().log.info("name %s", b"caf\\xe9".decode("utf-8", "surrogateescape"))
            return "logged"

        def huge(self, mib: int) -> str:
            return "x" * (mib << 20)

        def attach_size(self, sizes: list[int]) -> list[str]:
            saved = []
            for number, size in enumerate(sizes):
                try:
                    context().attach(f"file{number}.bin", b"\\0" * size)
                    saved.append("saved")
                except ToolError as error:
                    saved.append(str(error))
            return saved

        def secret(self, name: str) -> str:
            return context().secret(name)

        def setting(self, name: str) -> str | None:
            return context().setting(name, "fallback")
"""


def test_describe_prints_one_ready_frame_and_exits_0(tmp_path: Path) -> None:
    tool = make_tool(tmp_path, CALCULATOR)
    done = describe(tool)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    ready = json.loads(lines[0])
    assert ready["type"] == "ready"
    assert ready["protocol"] == 1
    add = next(method for method in ready["methods"] if method["name"] == "add")
    assert add == {
        "name": "add",
        "description": "Adds two numbers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "The first."},
                "b": {"type": "integer", "description": "The second.", "default": 2},
            },
            "required": ["a"],
            "additionalProperties": False,
        },
        "returns": {"type": "integer"},
        "approval": False,
    }
    names = [method["name"] for method in ready["methods"]]
    assert names[:3] == ["add", "who", "convert"]
    # What the plugin printed while importing went to stderr.
    assert "imported, says the plugin on stdout" in done.stderr
    assert "imported, says the plugin on fd 1" in done.stderr


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (
            "import not_a_module_anywhere\n",
            "client.py failed to import: ModuleNotFoundError: No module named "
            "'not_a_module_anywhere' (client.py line 1)",
        ),
        ("def broken(:\n", "client.py failed to import: SyntaxError:"),
        (
            "x = 1\nraise RuntimeError('no config')\n",
            "client.py failed to import: RuntimeError: no config (client.py line 2)",
        ),
        ("x = 1\n", "client.py defines no tool: subclass centaur_tools.Tool"),
        (
            "from centaur_tools import Tool\nclass A(Tool):\n    def a(self) -> int: ...\n"
            "class B(Tool):\n    def b(self) -> int: ...\n",
            "client.py defines 2 tools (A, B): keep exactly one",
        ),
        (
            "from centaur_tools import Tool\nclass A(Tool):\n    def a(self, x) -> int: ...\n",
            "A: method a: parameter x has no type hint",
        ),
        (
            "from centaur_tools import Tool\nclass A(Tool):\n    def _hidden(self) -> int: ...\n",
            "A has no public methods",
        ),
        ("import sys\nsys.exit(3)\n", "client.py failed to import: SystemExit: 3"),
    ],
)
def test_describe_fails_with_the_reason_on_the_last_line_of_stderr(
    tmp_path: Path, source: str, reason: str
) -> None:
    done = describe(make_tool(tmp_path, source))
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1].startswith(reason), done.stderr


def test_describe_of_a_folder_without_client_py_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = describe(tmp_path / "empty")
    assert done.returncode != 0
    assert done.stderr.splitlines()[-1].endswith(
        "client.py does not exist: a tool's folder holds its client.py"
    )


def test_a_worker_sends_ready_then_answers_calls(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    assert {m["name"] for m in worker.ready["methods"]} >= {"add", "who", "noisy"}
    answer = worker.call("add", {"a": 40})
    assert answer["type"] == "result"
    assert answer["value"] == 42
    assert worker.call("add", {"a": 1, "b": 1})["value"] == 2


def test_a_call_runs_with_its_context(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    call_id = worker.send("who", thread="t-1", user="api_key:ci")
    assert worker.answer(call_id)["value"] == {
        "thread": "t-1",
        "user": "api_key:ci",
        "call_id": call_id,
        "tool": "demo",
    }
    anonymous = worker.send("who")
    assert worker.answer(anonymous)["value"]["thread"] is None


def test_arguments_and_values_cross_json_as_their_types(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    answer = worker.call("convert", {"length": {"value": 10, "unit": "in"}})
    assert answer["value"] == {"value": 25.4, "unit": "cm"}


def test_sync_calls_run_concurrently(start: Callable[..., Worker]) -> None:
    # Four calls meet at a barrier: it only opens if all four run at once.
    worker = start(CALCULATOR, PARTIES="4", CENTAUR_TOOL_CONCURRENCY="4")
    ids = [worker.send("together", {"n": n}) for n in range(4)]
    answers = [worker.answer(call_id) for call_id in ids]
    assert [answer["value"] for answer in answers] == [0, 1, 2, 3]


def test_async_calls_share_one_loop_and_run_concurrently(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR, CENTAUR_TOOL_CONCURRENCY="1")
    waiting = worker.send("wait_for_partner")
    waking = worker.send("wake")
    assert worker.answer(waking)["value"] == "woke"
    assert worker.answer(waiting)["value"] == "woken"
    assert worker.call("slow_add", {"a": 2, "b": 3})["value"] == 5


def test_output_of_the_plugin_never_reaches_the_frames(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    answer = worker.call("noisy")
    assert answer == {"type": "result", "id": answer["id"], "value": "quiet"}
    assert worker.call("add", {"a": 1})["value"] == 3
    worker.close()
    stderr = "".join(worker.stderr)
    for noise in (
        "print() on stdout",
        "sys.stdout.write",
        "os.write to fd 1",
        "a subprocess on stdout",
        "child fd 1",
    ):
        assert noise in stderr
    # The fixture checks that every stdout line was a frame.


def test_the_plugin_cannot_read_the_frames_on_stdin(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    answer = worker.call("stdin")
    assert answer["value"] == {"sys_stdin": "", "fd0": "", "child": ""}
    assert worker.call("add", {"a": 5})["value"] == 7


def test_a_tool_error_reaches_the_caller_as_its_message(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    answer = worker.call("refuse", {"reason": "the repository acme/x does not exist"})
    assert answer["type"] == "error"
    assert answer["error"] == {
        "kind": "tool_error",
        "message": "the repository acme/x does not exist",
    }


def test_an_exception_becomes_an_error_with_its_type_and_the_worker_lives_on(
    start: Callable[..., Worker],
) -> None:
    worker = start(CALCULATOR)
    answer = worker.call("crash")
    assert answer["error"] == {"kind": "exception", "message": "KeyError: 'missing'"}
    assert worker.call("add", {"a": 0})["value"] == 2
    worker.close()
    assert "Traceback" in "".join(worker.stderr)


def test_a_value_that_is_not_json_is_an_error(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    answer = worker.call("raw")
    assert answer["error"]["kind"] == "exception"
    assert "raw returned a value that is not JSON: bytes are not JSON" in answer["error"]["message"]


def test_a_result_that_is_not_valid_utf8_is_an_error(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    error = worker.call("surrogate")["error"]
    assert error["kind"] == "exception"
    assert error["message"].startswith("the result is not valid UTF-8: it holds a lone surrogate")
    error = worker.call("surrogate_error")["error"]
    assert error["kind"] == "exception"
    assert error["message"].startswith("the error is not valid UTF-8")
    call_id = worker.send("surrogate_log")
    assert worker.answer(call_id)["value"] == "logged"
    assert [f["message"] for f in worker.frames_of(call_id, "log")] == ["name caf?"]
    assert worker.call("add", {"a": 1})["value"] == 3


def test_a_result_over_16_mib_is_an_error_and_the_worker_lives_on(
    start: Callable[..., Worker],
) -> None:
    worker = start(CALCULATOR)
    assert len(worker.call("huge", {"mib": 15})["value"]) == 15 << 20
    error = worker.call("huge", {"mib": 16})["error"]
    assert error == {
        "kind": "exception",
        "message": "the result is larger than 16 MiB: return less",
    }
    assert worker.call("add", {"a": 1})["value"] == 3


def test_a_call_saves_at_most_10_mib_of_files(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    mib = 1 << 20
    call_id = worker.send("attach_size", {"sizes": [10 * mib + 1, 6 * mib, 5 * mib, 4 * mib]})
    saved = worker.answer(call_id)["value"]
    assert saved[0] == (
        "the attachment 'file0.bin' is 10.0 MiB, over the 10 MiB a call may save: "
        "save a smaller file"
    )
    assert saved[1] == "saved"
    assert saved[2].startswith("the attachment 'file2.bin' (5.0 MiB) would take the call's files ")
    assert saved[3] == "saved"
    assert [f["name"] for f in worker.frames_of(call_id, "attachment")] == [
        "file1.bin",
        "file3.bin",
    ]
    # The limit is per call: the next call saves again.
    assert worker.call("attach_size", {"sizes": [10 * mib]})["value"] == ["saved"]


def test_a_frame_that_cannot_be_encoded_still_answers_its_call() -> None:
    from centaur_tools.worker import FrameWriter

    class Stream:
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.lines.append(data)

        def flush(self) -> None:
            pass

    stream = Stream()
    writer = FrameWriter(stream)  # type: ignore[arg-type]
    writer.answer("1", {"type": "result", "id": "1", "value": "caf\udce9"})
    writer.answer("2", {"type": "result", "id": "2", "value": object()})
    writer.answer("3", {"type": "result", "id": "3", "value": float("nan")})
    answers = [json.loads(line) for line in stream.lines]
    assert [a["id"] for a in answers] == ["1", "2", "3"]
    assert all(a["type"] == "error" for a in answers)
    assert answers[1]["error"]["message"].startswith("the result is not JSON (TypeError")
    assert answers[2]["error"]["message"].startswith("the result is not JSON (ValueError")


@pytest.mark.parametrize(
    ("method", "arguments", "argument", "message"),
    [
        ("add", {"a": "one"}, "a", 'argument "a": expected an integer, got "one"'),
        ("add", {}, "a", 'argument "a": is required'),
        ("add", {"a": 1, "c": 2}, "c", 'argument "c": add takes no such argument'),
        (
            "convert",
            {"length": {"value": 1, "unit": "mile"}},
            "length",
            'argument "length": at .unit: expected one of "cm", "in", got "mile"',
        ),
    ],
)
def test_invalid_arguments_name_the_argument(
    start: Callable[..., Worker],
    method: str,
    arguments: dict[str, Any],
    argument: str,
    message: str,
) -> None:
    worker = start(CALCULATOR)
    error = worker.call(method, arguments)["error"]
    assert error["kind"] == "invalid_arguments"
    assert error["argument"] == argument
    assert error["message"].startswith(message)


def test_arguments_that_are_not_an_object_are_invalid(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    call_id = str(uuid.uuid4())
    assert worker.process.stdin is not None
    frame = {"type": "call", "id": call_id, "method": "add", "arguments": [1], "context": {}}
    worker.process.stdin.write(json.dumps(frame).encode() + b"\n" + b"not json\n")
    worker.process.stdin.flush()
    assert worker.answer(call_id)["error"]["kind"] == "invalid_arguments"
    assert worker.call("add", {"a": 1})["value"] == 3


def test_an_unknown_method_is_an_error(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    error = worker.call("_private")["error"]
    assert error["kind"] == "unknown_method"
    assert "has no method '_private'" in error["message"]


def test_logs_and_attachments_are_frames_of_the_call(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    call_id = worker.send("report")
    assert worker.answer(call_id)["value"] == "reported"
    logs = [(f["level"], f["message"]) for f in worker.frames_of(call_id, "log")]
    assert logs == [
        ("debug", "debugging 1"),
        ("info", "working on it"),
        ("warning", "careful"),
        ("error", "went wrong"),
    ]
    attachments = [
        (f["name"], f["mime"], base64.b64decode(f["data"]))
        for f in worker.frames_of(call_id, "attachment")
    ]
    assert attachments == [
        ("chart.png", "image/png", b"\x89PNG\r\n"),
        ("notes.txt", "text/plain", b"some notes"),
        ("data.bin", "application/x-custom", b"\x00\x01"),
    ]


def test_secrets_and_settings_come_from_the_environment(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR, GITHUB_TOKEN="centaur-placeholder-1", API_URL="http://x")
    assert worker.call("secret", {"name": "GITHUB_TOKEN"})["value"] == "centaur-placeholder-1"
    missing = worker.call("secret", {"name": "SLACK_TOKEN"})["error"]
    assert missing == {
        "kind": "tool_error",
        "message": "secret SLACK_TOKEN is not set: declare it under [tool.centaur.secrets] "
        "and give the proxy a source for it",
    }
    assert worker.call("setting", {"name": "API_URL"})["value"] == "http://x"
    assert worker.call("setting", {"name": "OTHER"})["value"] == "fallback"


def test_the_worker_exits_at_the_end_of_stdin(start: Callable[..., Worker]) -> None:
    worker = start(CALCULATOR)
    assert worker.close() == 0


def test_calls_in_flight_at_the_end_of_stdin_are_answered(
    start: Callable[..., Worker],
) -> None:
    worker = start(CALCULATOR, PARTIES="2", CENTAUR_TOOL_CONCURRENCY="2")
    first = worker.send("together", {"n": 1})
    second = worker.send("together", {"n": 2})
    assert worker.close() == 0
    assert worker.answer(first)["value"] == 1
    assert worker.answer(second)["value"] == 2


def test_a_worker_whose_tool_fails_to_start_exits_with_the_reason(tmp_path: Path) -> None:
    tool = make_tool(
        tmp_path,
        """
        from centaur_tools import Tool, context

        class Needy(Tool):
            def __init__(self):
                self.token = context().secret("NEEDY_TOKEN")

            def go(self) -> str:
                return self.token
        """,
    )
    process = subprocess.run(
        [sys.executable, "-m", "centaur_tools.worker", str(tool)],
        input=b"",
        capture_output=True,
        cwd=tool,
        env=worker_env(tool),
        timeout=DEADLINE,
        check=False,
    )
    assert process.returncode != 0
    assert process.stdout == b""
    assert process.stderr.decode().splitlines()[-1] == (
        "Needy() failed: secret NEEDY_TOKEN is not set: declare it under "
        "[tool.centaur.secrets] and give the proxy a source for it"
    )
