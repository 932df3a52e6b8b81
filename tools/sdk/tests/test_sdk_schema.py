"""Schema generation from type hints, argument conversion and result conversion."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict, Union

import pytest

from centaur_tools import Tool
from centaur_tools.schema import (
    ArgumentError,
    ResultError,
    SchemaError,
    convert_arguments,
    methods_of,
    parse_docstring,
    to_json,
    type_schema,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    """A point on the plane.

    Attributes:
        x: Across.
        y: Up, from the bottom.
    """

    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    color: Color | None = None


class Filters(TypedDict):
    label: str
    since: NotRequired[dt.date]


class Loose(TypedDict, total=False):
    limit: int


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node]


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (type(None), {"type": "null"}),
        (Any, {}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (list, {"type": "array"}),
        (Sequence[str], {"type": "array", "items": {"type": "string"}}),
        (set[str], {"type": "array", "uniqueItems": True, "items": {"type": "string"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (tuple[float, ...], {"type": "array", "items": {"type": "number"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (dict[str, Any], {"type": "object"}),
        (dict, {"type": "object"}),
        (Mapping[str, bool], {"type": "object", "additionalProperties": {"type": "boolean"}}),
        (str | None, {"anyOf": [{"type": "string"}, {"type": "null"}]}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (Union[int, str], {"anyOf": [{"type": "integer"}, {"type": "string"}]}),  # noqa: UP007
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, "x"], {"enum": [1, "x"]}),
        (Color, {"type": "string", "enum": ["red", "green"]}),
        (Level, {"type": "integer", "enum": [1, 2]}),
        (dt.datetime, {"type": "string", "format": "date-time"}),
        (dt.date, {"type": "string", "format": "date"}),
        (dt.time, {"type": "string", "format": "time"}),
        (uuid.UUID, {"type": "string", "format": "uuid"}),
        (Annotated[int, "How many."], {"type": "integer", "description": "How many."}),
        (
            list[Color] | None,
            {
                "anyOf": [
                    {"type": "array", "items": {"type": "string", "enum": ["red", "green"]}},
                    {"type": "null"},
                ]
            },
        ),
    ],
)
def test_a_type_hint_maps_to_its_schema(hint: Any, schema: dict[str, Any]) -> None:
    assert type_schema(hint) == schema


def test_a_dataclass_is_an_object_with_its_fields_and_their_descriptions() -> None:
    assert type_schema(Point) == {
        "type": "object",
        "description": "A point on the plane.",
        "properties": {
            "x": {"type": "integer", "description": "Across."},
            "y": {"type": "integer", "description": "Up, from the bottom.", "default": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["x"],
        "additionalProperties": False,
    }
    nested = type_schema(Shape)
    assert nested["required"] == ["name", "points"]
    assert nested["properties"]["points"]["items"]["properties"]["x"] == {
        "type": "integer",
        "description": "Across.",
    }
    assert nested["properties"]["color"]["default"] is None


def test_a_typeddict_is_an_object_whose_required_keys_follow_total_and_notrequired() -> None:
    assert type_schema(Filters) == {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "since": {"type": "string", "format": "date"},
        },
        "required": ["label"],
        "additionalProperties": False,
    }
    assert type_schema(Loose)["required"] == []


@pytest.mark.parametrize(
    ("hint", "fragment"),
    [
        (bytes, "bytes cannot travel as JSON"),
        (dict[int, str], "JSON object keys are strings"),
        (Node, "Node refers to itself"),
        (complex, "complex cannot be expressed"),
        (type[int], "cannot be expressed"),
    ],
)
def test_a_hint_json_cannot_carry_is_refused(hint: Any, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment):
        type_schema(hint)


class Documented(Tool):
    """A tool whose methods show every part of the schema."""

    def search(
        self,
        query: str,
        limit: int = 10,
        labels: list[str] | None = None,
        state: Literal["open", "closed"] = "open",
        color: Color = Color.RED,
        since: dt.date | None = None,
    ) -> list[Point]:
        """Searches the points.

        Matches are ranked by how close they are.

        Args:
            query: What to look for; a phrase
                in quotes matches exactly.
            limit (int): At most this many.
            labels: Only points with all these labels.

        Returns:
            list[Point]: The points found, best first.

        Raises:
            ToolError: When the index is down.
        """
        return []

    async def refresh(self) -> None:
        """Rebuilds the index."""

    def _private(self, anything) -> None:  # type: ignore[no-untyped-def]
        """Not a method of the tool: no hints needed."""

    @staticmethod
    def version() -> str:
        return "1"


def test_a_methods_schema_comes_from_its_signature_and_docstring() -> None:
    methods = methods_of(Documented)
    assert list(methods) == ["search", "refresh", "version"]
    search = methods["search"].info
    assert search["name"] == "search"
    assert search["description"] == (
        "Searches the points.\n\nMatches are ranked by how close they are.\n\n"
        "Raises:\n    ToolError: When the index is down."
    )
    assert search["approval"] is False
    parameters = search["parameters"]
    assert parameters["type"] == "object"
    assert parameters["additionalProperties"] is False
    assert parameters["required"] == ["query"]
    properties = parameters["properties"]
    assert properties["query"] == {
        "type": "string",
        "description": "What to look for; a phrase in quotes matches exactly.",
    }
    assert properties["limit"] == {
        "type": "integer",
        "description": "At most this many.",
        "default": 10,
    }
    assert properties["labels"] == {
        "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
        "description": "Only points with all these labels.",
        "default": None,
    }
    assert properties["state"] == {"type": "string", "enum": ["open", "closed"], "default": "open"}
    assert properties["color"]["default"] == "red"
    assert properties["since"]["anyOf"][0] == {"type": "string", "format": "date"}
    assert search["returns"]["type"] == "array"
    assert search["returns"]["description"] == "The points found, best first."
    assert methods["search"].is_async is False
    assert methods["refresh"].is_async is True
    assert methods["refresh"].info["parameters"] == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    assert methods["refresh"].info["returns"] == {"type": "null"}


def test_a_method_without_a_return_hint_has_no_returns() -> None:
    class NoReturn(Tool):
        def ping(self, host: str):  # type: ignore[no-untyped-def]
            return host

    assert "returns" not in methods_of(NoReturn)["ping"].info


def test_methods_of_a_base_class_are_included_and_overrides_keep_their_place() -> None:
    class Base(Tool):
        def first(self) -> int:
            return 1

        def second(self) -> int:
            return 2

    class Child(Base):
        def second(self) -> int:
            return 22

        def third(self) -> int:
            return 3

    assert list(methods_of(Child)) == ["first", "second", "third"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "def fetch(self, url, limit: int = 1) -> str: ...",
            "method fetch: parameter url has no type hint",
        ),
        ("def fetch(self, *urls: str) -> str: ...", r"method fetch: \*urls is not allowed"),
        (
            "def fetch(self, url: str, **options: str) -> str: ...",
            r"method fetch: \*\*options is not allowed",
        ),
        ("def fetch(self, url: str, /) -> str: ...", "method fetch: parameter url is positional"),
        (
            "def fetch(self, data: bytes) -> str: ...",
            "method fetch: parameter data: bytes cannot travel as JSON",
        ),
        ("def fetch(self) -> bytes: ...", "method fetch: its return type: bytes"),
        ("def fetch(self, url: 'Missing') -> str: ...", "method fetch: its type hints cannot"),
        ("def fetch(self):\n        yield 1", "method fetch: a generator"),
    ],
)
def test_a_method_the_schema_cannot_describe_is_refused_by_name(source: str, message: str) -> None:
    namespace: dict[str, Any] = {"Tool": Tool}
    exec(f"class Bad(Tool):\n    {source}\n", namespace)
    with pytest.raises(SchemaError, match=message):
        methods_of(namespace["Bad"])


def test_string_annotations_resolve_in_the_methods_module() -> None:
    # This module uses `from __future__ import annotations`: every hint above is a string.
    assert methods_of(Documented)["search"].info["returns"]["items"]["properties"]["x"]


def test_parse_docstring_splits_google_sections() -> None:
    doc = parse_docstring(
        """Summary line.

        Body text.

        Args:
            a: First.
            b (list[str], optional): Second,
                continued.
            *rest: Ignored.

        Returns:
            The answer.
        """
    )
    assert doc.description == "Summary line.\n\nBody text."
    assert doc.args == {"a": "First.", "b": "Second, continued.", "rest": "Ignored."}
    assert doc.returns == "The answer."
    assert parse_docstring(None).description == ""


class Converting(Tool):
    def draw(
        self,
        shape: Shape,
        at: dt.datetime,
        on: dt.date,
        color: Color,
        level: Level,
        ratio: float,
        count: int,
        key: uuid.UUID | None = None,
        pair: tuple[int, str] = (0, ""),
        tags: set[str] | None = None,
        filters: Filters | None = None,
        mode: Literal["fast", "slow"] = "fast",
    ) -> dict[str, Any]:
        return {}


def test_arguments_are_converted_to_their_hinted_types() -> None:
    method = methods_of(Converting)["draw"]
    converted = convert_arguments(
        method,
        {
            "shape": {"name": "tri", "points": [{"x": 1}, {"x": 2, "y": 3}], "color": "green"},
            "at": "2024-05-01T10:00:00Z",
            "on": "2024-05-01",
            "color": "red",
            "level": 2,
            "ratio": 1,
            "count": 3.0,
            "key": "12345678-1234-5678-1234-567812345678",
            "pair": [1, "a"],
            "tags": ["x", "x", "y"],
            "filters": {"label": "bug", "since": "2024-01-31"},
            "mode": "slow",
        },
    )
    assert converted["shape"] == Shape("tri", [Point(1), Point(2, 3)], Color.GREEN)
    assert converted["at"] == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert converted["on"] == dt.date(2024, 5, 1)
    assert converted["color"] is Color.RED
    assert converted["level"] is Level.HIGH
    assert converted["ratio"] == 1.0 and isinstance(converted["ratio"], float)
    assert converted["count"] == 3 and isinstance(converted["count"], int)
    assert converted["key"] == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert converted["pair"] == (1, "a")
    assert converted["tags"] == {"x", "y"}
    assert converted["filters"] == {"label": "bug", "since": dt.date(2024, 1, 31)}
    assert converted["mode"] == "slow"


def test_optional_arguments_may_be_left_out_or_null() -> None:
    method = methods_of(Converting)["draw"]
    base = {
        "shape": {"name": "s", "points": []},
        "at": "2024-05-01T10:00:00",
        "on": "2024-05-01",
        "color": "red",
        "level": 1,
        "ratio": 0.5,
        "count": 1,
    }
    assert "key" not in convert_arguments(method, base)
    assert convert_arguments(method, {**base, "key": None})["key"] is None


@pytest.mark.parametrize(
    ("change", "argument", "message"),
    [
        ({"count": "3"}, "count", 'expected an integer, got "3"'),
        ({"count": True}, "count", "expected an integer, got true"),
        ({"count": 1.5}, "count", "expected an integer, got 1.5"),
        ({"ratio": "x"}, "ratio", "expected a number"),
        ({"color": "blue"}, "color", 'expected one of "red", "green", got "blue"'),
        ({"level": "2"}, "level", "expected one of 1, 2"),
        ({"at": "yesterday"}, "at", "expected an ISO 8601 date-time"),
        ({"on": 20240501}, "on", "expected a date string"),
        ({"key": "nope"}, "key", 'expected a UUID, got "nope"'),
        ({"shape": {"name": "s"}}, "shape", 'Shape needs the field "points"'),
        ({"shape": {"name": "s", "points": [], "area": 1}}, "shape", 'no field "area"'),
        (
            {"shape": {"name": "s", "points": [{"x": 1}, {"x": "a"}]}},
            "shape",
            'at .points\\[1\\].x: expected an integer, got "a"',
        ),
        ({"pair": [1]}, "pair", "expected an array of 2 items"),
        ({"mode": "medium"}, "mode", 'expected one of "fast", "slow"'),
        ({"filters": {"since": "2024-01-01"}}, "filters", 'needs the field "label"'),
        ({"nope": 1}, "nope", "draw takes no such argument"),
    ],
)
def test_a_bad_argument_is_named(change: dict[str, Any], argument: str, message: str) -> None:
    method = methods_of(Converting)["draw"]
    arguments = {
        "shape": {"name": "s", "points": []},
        "at": "2024-05-01T10:00:00",
        "on": "2024-05-01",
        "color": "red",
        "level": 1,
        "ratio": 0.5,
        "count": 1,
        **change,
    }
    with pytest.raises(ArgumentError, match=message) as raised:
        convert_arguments(method, arguments)
    assert raised.value.argument == argument
    assert str(raised.value).startswith(f'argument "{argument}": ')


def test_a_missing_required_argument_is_named() -> None:
    with pytest.raises(ArgumentError, match='argument "shape": is required'):
        convert_arguments(methods_of(Converting)["draw"], {})


def test_values_become_json() -> None:
    value = {
        "point": Point(1, 2, ["a"]),
        "color": Color.GREEN,
        "level": Level.LOW,
        "when": dt.datetime(2024, 5, 1, 10, 30, tzinfo=dt.UTC),
        "day": dt.date(2024, 5, 1),
        "id": uuid.UUID(int=1),
        "price": decimal.Decimal("1.50"),
        "pair": (1, "a"),
        "set": {3},
        Color.RED: "enum key",
        1: "int key",
    }
    assert to_json(value) == {
        "point": {"x": 1, "y": 2, "tags": ["a"]},
        "color": "green",
        "level": 1,
        "when": "2024-05-01T10:30:00+00:00",
        "day": "2024-05-01",
        "id": "00000000-0000-0000-0000-000000000001",
        "price": "1.50",
        "pair": [1, "a"],
        "set": [3],
        "red": "enum key",
        "1": "int key",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"raw", "bytes are not JSON"),
        (float("nan"), "nan is not a JSON number"),
        ({"x": object()}, "a object is not JSON"),
        ({(1, 2): "x"}, "a tuple cannot be a JSON object key"),
    ],
)
def test_a_value_that_is_not_json_is_refused(value: Any, message: str) -> None:
    with pytest.raises(ResultError, match=message):
        to_json(value)
