"""`centaur_tools.testing` (in-process calls for a plugin's tests) and `centaur_tools.cli`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from centaur_tools import ToolError, context, testing
from centaur_tools.cli import run
from centaur_tools.schema import ArgumentError, ResultError

SDK_DIR = Path(__file__).resolve().parents[1]

NOTES = """
    import datetime
    from dataclasses import dataclass
    from enum import Enum

    from centaur_tools import Tool, ToolError, context

    class Priority(Enum):
        LOW = "low"
        HIGH = "high"

    @dataclass
    class Note:
        title: str
        due: datetime.date | None = None
        priority: Priority = Priority.LOW

    class Notes(Tool):
        \"\"\"Keeps notes.\"\"\"

        def __init__(self):
            self.notes = []

        def add(self, note: Note, tags: list[str] | None = None, pinned: bool = False) -> dict:
            \"\"\"Adds a note.

            Args:
                note: The note.
                tags: Labels for it.
                pinned: Keep it on top.
            \"\"\"
            ctx = context()
            ctx.log.info("adding %s for %s", note.title, ctx.user)
            ctx.attach(f"{note.title}.md", f"# {note.title}")
            self.notes.append(note)
            return {"note": note, "tags": tags or [], "pinned": pinned, "thread": ctx.thread,
                    "count": len(self.notes)}

        def find(self, title: str) -> Note:
            for note in self.notes:
                if note.title == title:
                    return note
            raise ToolError(f"no note titled {title!r}")

        async def count(self) -> int:
            return len(self.notes)

        def echo(self, method: str, arguments: str, thread: str = "") -> list[str]:
            return [method, arguments, thread]

        def token(self) -> str:
            return context().secret("NOTES_TOKEN")
"""


@pytest.fixture
def tool_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "client.py").write_text(textwrap.dedent(NOTES))
    return folder


def test_call_converts_arguments_and_returns_json(tool_dir: Path) -> None:
    result = testing.call(
        tool_dir,
        "add",
        thread="thread-1",
        user="api_key:ci",
        note={"title": "Ship", "due": "2024-06-01", "priority": "high"},
        tags=["work"],
    )
    assert result == {
        "note": {"title": "Ship", "due": "2024-06-01", "priority": "high"},
        "tags": ["work"],
        "pinned": False,
        "thread": "thread-1",
        "count": 1,
    }
    assert testing.last_logs() == [testing.LogLine("info", "adding Ship for api_key:ci")]
    assert testing.last_attachments() == [testing.Attachment("Ship.md", "text/markdown", b"# Ship")]


def test_an_instance_keeps_its_state_between_calls(tool_dir: Path) -> None:
    notes = testing.load(tool_dir)
    testing.call(notes, "add", note={"title": "a"})
    assert testing.call(notes, "find", title="a") == {"title": "a", "due": None, "priority": "low"}
    assert testing.call(notes, "count") == 1
    assert testing.call(testing.load(tool_dir), "count") == 0


def test_python_values_are_sent_as_the_worker_would_receive_them(tool_dir: Path) -> None:
    import datetime

    notes = testing.load(tool_dir)
    module = sys.modules[type(notes).__module__]
    note = module.Note("b", datetime.date(2024, 1, 2), module.Priority.HIGH)
    assert testing.call(notes, "add", note=note)["note"] == {
        "title": "b",
        "due": "2024-01-02",
        "priority": "high",
    }


def test_arguments_named_like_call_parameters_go_in_arguments(tool_dir: Path) -> None:
    assert testing.call(
        tool_dir, "echo", method="m", arguments={"arguments": "a", "thread": "t"}
    ) == ["m", "a", "t"]


def test_errors_propagate(tool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ToolError, match="no note titled 'x'"):
        testing.call(tool_dir, "find", title="x")
    with pytest.raises(ArgumentError, match='argument "note": Note needs the field "title"'):
        testing.call(tool_dir, "add", note={})
    with pytest.raises(ArgumentError, match="has no method 'nope'"):
        testing.call(tool_dir, "nope")
    monkeypatch.delenv("NOTES_TOKEN", raising=False)
    with pytest.raises(ToolError, match="secret NOTES_TOKEN is not set"):
        testing.call(tool_dir, "token")
    monkeypatch.setenv("NOTES_TOKEN", "placeholder")
    assert testing.call(tool_dir, "token") == "placeholder"


def test_a_value_the_worker_could_not_send_raises_as_the_worker_answers(tool_dir: Path) -> None:
    lone = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(ResultError, match="the result is not valid UTF-8: it holds a lone"):
        testing.call(tool_dir, "echo", method=lone, arguments={"arguments": "a"})


def test_describe_lists_the_methods_as_the_ready_frame_does(tool_dir: Path) -> None:
    methods = testing.describe(tool_dir)
    assert list(methods) == ["add", "find", "count", "echo", "token"]
    add = methods["add"]
    assert add["description"] == "Adds a note."
    assert add["parameters"]["required"] == ["note"]
    assert add["parameters"]["properties"]["pinned"] == {
        "type": "boolean",
        "description": "Keep it on top.",
        "default": False,
    }


def test_context_outside_a_call_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CENTAUR_TOOL", "notes")
    monkeypatch.setenv("CENTAUR_THREAD", "t-9")
    monkeypatch.delenv("CENTAUR_USER", raising=False)
    monkeypatch.setenv("CENTAUR_ATTACHMENTS_DIR", str(tmp_path / "out"))
    ctx = context()
    assert (ctx.tool, ctx.thread, ctx.user, ctx.call_id) == ("notes", "t-9", None, None)
    ctx.log.warning("outside %s", "a call")
    ctx.attach("report.csv", "a,b\n")
    assert (tmp_path / "out" / "report.csv").read_text() == "a,b\n"
    assert "warning: outside a call" in capsys.readouterr().err


def cli(tool_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tool_dir / "cli.py").write_text(
        "from centaur_tools.cli import run\nfrom client import Notes\n\nrun(Notes)\n"
    )
    return subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=tool_dir,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SDK_DIR)},
        timeout=60,
        check=False,
    )


def test_cli_calls_a_method_from_options(tool_dir: Path) -> None:
    done = cli(
        tool_dir,
        "--thread",
        "t-1",
        "add",
        "--note",
        '{"title": "From the shell"}',
        "--tags",
        '["a", "b"]',
        "--pinned",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "note": {"title": "From the shell", "due": None, "priority": "low"},
        "tags": ["a", "b"],
        "pinned": True,
        "thread": "t-1",
        "count": 1,
    }
    assert "info: adding From the shell for None" in done.stderr
    assert "attachment From the shell.md (text/markdown, 16 bytes)" in done.stderr


def test_cli_reports_errors_and_reads_dot_env(tool_dir: Path) -> None:
    done = cli(tool_dir, "find", "--title", "x")
    assert done.returncode == 1
    assert done.stderr.strip().endswith("error: no note titled 'x'")
    done = cli(tool_dir, "add", "--note", '{"nope": 1}')
    assert done.returncode == 2
    assert 'argument "note": Note has no field "nope"' in done.stderr
    done = cli(tool_dir, "token")
    assert done.returncode == 1
    (tool_dir / ".env").write_text("# secrets\nNOTES_TOKEN='from-dot-env'\n")
    done = cli(tool_dir, "token")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "from-dot-env"


def test_cli_help_lists_the_methods(tool_dir: Path) -> None:
    done = cli(tool_dir, "--help")
    assert done.returncode == 0
    assert "add" in done.stdout and "find" in done.stdout
    done = cli(tool_dir, "add", "--help")
    assert "--note" in done.stdout and "--no-pinned" in done.stdout


def test_run_in_process(tool_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = type(testing.load(tool_dir))
    with pytest.raises(SystemExit) as exited:
        run(notes, ["echo", "--method", "m", "--arguments", "a"])
    assert exited.value.code == 0
    assert json.loads(capsys.readouterr().out) == ["m", "a", ""]
