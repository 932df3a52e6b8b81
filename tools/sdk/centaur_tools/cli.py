"""A command line for a plugin, for people: one subcommand per method, its options from the
method's schema, the answer printed as JSON.

A plugin's `cli.py`:

    from centaur_tools.cli import run
    from client import GitHub

    run(GitHub)

    $ python cli.py search-issues --query billing --limit 5
    $ python cli.py get-file --repo acme/api --path README.md

Options take the argument's name with `-` for `_`. Strings, numbers and enums are taken as
written, booleans are `--flag` / `--no-flag`, anything else (lists, objects) as JSON. Before
the call, a `.env` file beside the tool's `client.py` fills in the variables not already set
(settings and secrets: copy `.env.example`). Attachments are saved under `--save-to` (or
listed on stderr). A `ToolError` prints `error: …` and exits 1; a bad argument exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from centaur_tools.context import Context, Frame, Tool, ToolError
from centaur_tools.schema import ArgumentError, Method, methods_of
from centaur_tools.worker import invoke, invoke_async

ARGUMENT = "argument:"
"""The prefix of a method argument's name in the parsed namespace (apart from the options of
`run` itself)."""


def load_env_file(path: Path) -> None:
    """Sets the variables of a `.env` file (`NAME=value` lines, `#` comments, optional quotes)
    that the environment does not already have."""
    if not path.is_file():
        return
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name and value and not os.environ.get(name):
            os.environ[name] = value


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser_type(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "string":
        return str
    if kind == "integer":
        return int
    if kind == "number":
        return float
    return _json_or_text


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_parser(tool_class: type[Tool], methods: dict[str, Method]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name if sys.argv and sys.argv[0] else tool_class.__name__,
        description=(tool_class.__doc__ or "").strip() or None,
    )
    parser.add_argument(
        "--thread", dest=":thread", help="the thread the call is made for (context().thread)"
    )
    parser.add_argument("--user", dest=":user", help="who the call is made for (context().user)")
    parser.add_argument(
        "--save-to", dest=":save_to", type=Path, help="save the call's attachments here"
    )
    commands = parser.add_subparsers(dest=":method", metavar="METHOD", required=True)
    for name, method in methods.items():
        description = method.info["description"]
        summary = description.splitlines()[0] if description else None
        command = commands.add_parser(
            name.replace("_", "-"),
            aliases=[name] if "_" in name else [],
            help=summary,
            description=description or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(**{":method": name})
        schema = method.info["parameters"]
        for param in method.parameters:
            prop = schema["properties"][param.name]
            options = [_option(param.name)]
            if "_" in param.name:
                options.append("--" + param.name)
            help_text = prop.get("description")
            if "default" in prop:
                help_text = f"{help_text or ''} (default: {json.dumps(prop['default'])})".strip()
            if prop.get("type") == "boolean":
                command.add_argument(
                    *options,
                    dest=ARGUMENT + param.name,
                    action=argparse.BooleanOptionalAction,
                    required=param.required,
                    default=argparse.SUPPRESS,
                    help=help_text,
                )
                continue
            kwargs: dict[str, Any] = {}
            if "enum" in prop and all(isinstance(v, str) for v in prop["enum"]):
                kwargs["choices"] = prop["enum"]
            command.add_argument(
                *options,
                dest=ARGUMENT + param.name,
                type=_parser_type(prop),
                required=param.required,
                default=argparse.SUPPRESS,
                metavar=prop.get("type", "JSON").upper() if "choices" not in kwargs else None,
                help=help_text,
                **kwargs,
            )
    return parser


def run(tool_class: type[Tool], argv: list[str] | None = None) -> None:
    """Parses the command line, calls the method, prints its value as JSON; exits."""
    module = sys.modules.get(tool_class.__module__)
    module_file = getattr(module, "__file__", None)
    if module_file:
        load_env_file(Path(module_file).parent / ".env")
    methods = methods_of(tool_class)
    parser = build_parser(tool_class, methods)
    parsed = vars(parser.parse_args(argv))
    method = methods[parsed[":method"]]
    thread, user, save_to = parsed[":thread"], parsed[":user"], parsed[":save_to"]
    args = {
        key.removeprefix(ARGUMENT): value
        for key, value in parsed.items()
        if key.startswith(ARGUMENT)
    }

    def emit(frame: Frame) -> None:
        if frame["type"] == "log":
            print(f"{frame['level']}: {frame['message']}", file=sys.stderr)
            return
        data = base64.b64decode(frame["data"])
        if save_to is None:
            print(
                f"attachment {frame['name']} ({frame['mime']}, {len(data)} bytes): "
                "use --save-to DIR to keep it",
                file=sys.stderr,
            )
            return
        save_to.mkdir(parents=True, exist_ok=True)
        path = save_to / Path(frame["name"]).name
        path.write_bytes(data)
        print(f"attachment {frame['name']} saved to {path}", file=sys.stderr)

    ctx = Context(
        tool=os.environ.get("CENTAUR_TOOL") or tool_class.__name__.lower(),
        thread=thread,
        user=user,
        call_id=None,
        emit=emit,
    )
    try:
        instance = tool_class()
        if method.is_async:
            value = asyncio.run(invoke_async(instance, method, args, ctx))
        else:
            value = invoke(instance, method, args, ctx)
    except ArgumentError as error:
        parser.exit(2, f"error: {error}\n")
    except ToolError as error:
        parser.exit(1, f"error: {error}\n")
    print(json.dumps(value, indent=2, ensure_ascii=False))
    sys.exit(0)
