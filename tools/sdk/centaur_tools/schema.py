"""Type hints as JSON Schema, and values across the JSON boundary.

A tool's public methods are read once (`methods_of`): each parameter's type hint, default and
`Args:` docstring entry become a property of the method's `parameters` schema; the return hint
and the `Returns:` entry its `returns` schema. A call's JSON arguments are converted to the
hinted types (`convert_arguments`: a dataclass from an object, an Enum from its value, a
datetime from an ISO string), and a method's value back to JSON (`to_json`).

| hint | schema |
|---|---|
| `str`, `int`, `float`, `bool`, `None` | `string`, `integer`, `number`, `boolean`, `null` |
| `list[T]`, `Sequence[T]`, `set[T]` | `array` of `T` (`uniqueItems` for sets) |
| `tuple[A, B]`, `tuple[T, ...]` | `array` with `prefixItems` and a fixed length, or of `T` |
| `dict[str, T]`, `Mapping[str, T]` | `object` whose values are `T` |
| `T \\| None`, `Optional[T]`, `A \\| B` | `anyOf` (with `null`) |
| `Literal[...]`, an `enum.Enum` | `enum` of the values |
| a dataclass, a `TypedDict` | `object` with `properties`, `required`, no other keys |
| `datetime`, `date`, `time`, `UUID` | `string` with `format` |
| `Annotated[T, "text"]` | `T` with that `description` |
| `Any` | no constraint |
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import inspect
import json
import math
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any, Literal, NotRequired, Required, Union

from centaur_tools.context import Tool

NoneType = type(None)
JsonSchema = dict[str, Any]


class SchemaError(Exception):
    """A method the SDK cannot describe (a parameter without a type hint, `*args`, a hint JSON
    cannot carry). Raised when the tool is described, naming the method and parameter."""


class ArgumentError(Exception):
    """A call's argument that is missing, unknown, or not of its hinted type."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f'argument "{argument}": {message}')
        self.argument = argument
        self.reason = message


class ResultError(TypeError):
    """A method's value that is not JSON (bytes, an arbitrary object, a NaN)."""


class _ConversionError(ValueError):
    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def at(self, step: str) -> _ConversionError:
        return _ConversionError(self.message, step + self.path)

    def describe(self) -> str:
        return f"at {self.path}: {self.message}" if self.path else self.message


# Docstrings -------------------------------------------------------------------------------

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns|Return|"
    r"Yields|Raises|Attributes|Example|Examples|Note|Notes|See Also|Todo|Warning|Warnings)"
    r"\s*:\s*$"
)
_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_RETURN_TYPE = re.compile(r"^[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*:\s+")
_ARG_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments"}


@dataclasses.dataclass
class Docstring:
    """A Google-style docstring, split."""

    description: str = ""
    args: dict[str, str] = dataclasses.field(default_factory=dict)
    returns: str | None = None
    attributes: dict[str, str] = dataclasses.field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    """Splits a Google-style docstring: the text (summary, body, and sections other than
    `Args:`, `Returns:` and `Attributes:`), the argument descriptions, the return's."""
    if not doc:
        return Docstring()
    kept: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in inspect.cleandoc(doc).splitlines():
        match = _SECTION.match(line)
        if match:
            name = match.group(1)
            if name in _ARG_SECTIONS:
                current = sections.setdefault("Args", [])
            elif name in ("Returns", "Return"):
                current = sections.setdefault("Returns", [])
            elif name == "Attributes":
                current = sections.setdefault("Attributes", [])
            else:
                current = None
                kept.append(line)
            continue
        if current is not None and line and not line[0].isspace():
            # Unindented text after a section ends it.
            current = None
        if current is None:
            kept.append(line)
        else:
            current.append(line)
    returns = _join(sections.get("Returns", []))
    if returns:
        returns = _RETURN_TYPE.sub("", returns, count=1)
    return Docstring(
        description="\n".join(kept).strip(),
        args=_entries(sections.get("Args", [])),
        returns=returns or None,
        attributes=_entries(sections.get("Attributes", [])),
    )


def _join(lines: list[str]) -> str:
    return " ".join(line.strip() for line in lines if line.strip())


def _entries(lines: list[str]) -> dict[str, str]:
    content = [line for line in lines if line.strip()]
    if not content:
        return {}
    indent = min(len(line) - len(line.lstrip()) for line in content)
    entries: dict[str, list[str]] = {}
    name: str | None = None
    for line in content:
        depth = len(line) - len(line.lstrip())
        match = _ENTRY.match(line.strip()) if depth == indent else None
        if match:
            name = match.group(1)
            entries[name] = [match.group(2)]
        elif name is not None:
            entries[name].append(line)
    return {key: _join(value) for key, value in entries.items()}


# Type hints to schemas --------------------------------------------------------------------

_SEQUENCES = {
    list,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
}
_SETS = {set, frozenset, collections.abc.Set, collections.abc.MutableSet}
_MAPPINGS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}
_FORMATS: dict[type, str] = {
    dt.datetime: "date-time",
    dt.date: "date",
    dt.time: "time",
    uuid.UUID: "uuid",
}


def type_schema(hint: Any) -> JsonSchema:
    """The JSON Schema of values of the type `hint`; `SchemaError` when JSON cannot carry it."""
    return _schema(hint, ())


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise SchemaError(f"{value!r} is not a JSON scalar")


def _enum_schema(values: list[Any]) -> JsonSchema:
    schema: JsonSchema = {}
    kinds = {_json_type(value) for value in values}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    schema["enum"] = values
    return schema


def _schema(hint: Any, stack: tuple[type, ...]) -> JsonSchema:
    if hint is Any or hint is object:
        return {}
    if hint is None or hint is NoneType:
        return {"type": "null"}
    alias_value = getattr(hint, "__value__", None)
    if alias_value is not None and type(hint).__name__ == "TypeAliasType":
        return _schema(alias_value, stack)
    supertype = getattr(hint, "__supertype__", None)
    if supertype is not None:  # typing.NewType
        return _schema(supertype, stack)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema = dict(_schema(args[0], stack))
        notes = [note for note in args[1:] if isinstance(note, str)]
        if notes:
            schema["description"] = notes[0]
        return schema
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [_schema(arm, stack) for arm in args]}
    if origin is Literal:
        return _enum_schema([arg.value if isinstance(arg, enum.Enum) else arg for arg in args])
    if origin in (Required, NotRequired):
        return _schema(args[0], stack)
    if origin in _SEQUENCES or hint in (list, collections.abc.Sequence):
        schema = {"type": "array"}
        if args and args[0] is not Any:
            schema["items"] = _schema(args[0], stack)
        return schema
    if origin in _SETS or hint in (set, frozenset):
        schema = {"type": "array", "uniqueItems": True}
        if args and args[0] is not Any:
            schema["items"] = _schema(args[0], stack)
        return schema
    if origin is tuple or hint is tuple:
        if not args or args == ((),):
            return {"type": "array"} if not args else {"type": "array", "maxItems": 0}
        if len(args) == 2 and args[1] is Ellipsis:
            schema = {"type": "array"}
            if args[0] is not Any:
                schema["items"] = _schema(args[0], stack)
            return schema
        return {
            "type": "array",
            "prefixItems": [_schema(arg, stack) for arg in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin in _MAPPINGS or hint in (dict, collections.abc.Mapping):
        schema = {"type": "object"}
        if args:
            key, value = args
            if key is not str and key is not Any:
                raise SchemaError(f"{_name(hint)}: JSON object keys are strings, use dict[str, …]")
            if value is not Any:
                schema["additionalProperties"] = _schema(value, stack)
        return schema
    if origin is not None:
        raise SchemaError(f"{_name(hint)} cannot be expressed as JSON Schema")
    if not isinstance(hint, type):
        raise SchemaError(f"{hint!r} is not a type")
    if issubclass(hint, enum.Enum):
        return _enum_schema([member.value for member in hint])
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    for kind, fmt in _FORMATS.items():
        if hint is kind:
            return {"type": "string", "format": fmt}
    if hint in (bytes, bytearray, memoryview):
        raise SchemaError("bytes cannot travel as JSON: take a str (base64 if need be)")
    if dataclasses.is_dataclass(hint) or typing.is_typeddict(hint):
        if hint in stack:
            raise SchemaError(f"{hint.__name__} refers to itself, which is not supported")
        return _object_schema(hint, (*stack, hint))
    raise SchemaError(f"{_name(hint)} cannot be expressed as JSON Schema")


def _name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else repr(hint).replace("typing.", "")


def _object_schema(cls: type, stack: tuple[type, ...]) -> JsonSchema:
    hints = typing.get_type_hints(cls, include_extras=True)
    doc = parse_docstring(_own_doc(cls))
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    if dataclasses.is_dataclass(cls):
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            prop = _property(_schema(hints[field.name], stack), doc.attributes.get(field.name))
            if field.default is not dataclasses.MISSING:
                _set_default(prop, field.default)
            elif field.default_factory is dataclasses.MISSING:
                required.append(field.name)
            properties[field.name] = prop
    else:
        required_keys = _required_keys(cls, hints)
        for name, hint in hints.items():
            properties[name] = _property(_schema(hint, stack), doc.attributes.get(name))
            if name in required_keys:
                required.append(name)
    schema: JsonSchema = {"type": "object"}
    if doc.description:
        schema["description"] = doc.description
    schema["properties"] = properties
    schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _required_keys(cls: type, hints: dict[str, Any]) -> set[str]:
    """A TypedDict's required keys. `__required_keys__` misses `NotRequired[...]` written as a
    string annotation (`from __future__ import annotations`) before Python 3.12, so the hints,
    resolved with their extras, have the last word."""
    required = set(getattr(cls, "__required_keys__", ()))
    for name, hint in hints.items():
        origin = typing.get_origin(hint)
        if origin is NotRequired:
            required.discard(name)
        elif origin is Required:
            required.add(name)
    return required


def _own_doc(cls: type) -> str | None:
    """A class's own docstring, not the one dataclasses and TypedDict generate."""
    doc = cls.__dict__.get("__doc__")
    if not doc or doc.startswith(f"{cls.__name__}("):
        return None
    return doc


def _property(schema: JsonSchema, description: str | None) -> JsonSchema:
    if description and "description" not in schema:
        return {**schema, "description": description}
    return schema


def _set_default(schema: JsonSchema, default: Any) -> None:
    # A default JSON cannot show (a sentinel) is still the default; it is just not shown.
    with contextlib.suppress(ResultError):
        schema["default"] = to_json(default)


# Methods ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Parameter:
    name: str
    hint: Any
    required: bool
    default: Any = None


@dataclasses.dataclass
class Method:
    """One public method of a tool: how to call it, and its `MethodInfo`."""

    name: str
    parameters: list[Parameter]
    is_async: bool
    info: dict[str, Any]

    def bind(self, instance: Tool) -> Callable[..., Any]:
        return getattr(instance, self.name)


def methods_of(cls: type[Tool]) -> dict[str, Method]:
    """The public methods of a `Tool` subclass, in definition order (base classes first)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass is Tool:
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_"):
                continue
            if inspect.isfunction(attr) or isinstance(attr, staticmethod | classmethod):
                found[name] = attr
            elif name in found:
                del found[name]  # overridden by something that is not a method
    return {name: describe_method(name, attr) for name, attr in found.items()}


def describe_method(name: str, attr: Any) -> Method:
    """Reads one method's signature and docstring; `SchemaError` names what cannot be
    described."""
    function = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
    if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
        raise SchemaError(f"method {name}: a generator cannot answer a call; return a list")
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as error:
        raise SchemaError(
            f"method {name}: its type hints cannot be resolved ({type(error).__name__}: {error})"
        ) from error
    signature = inspect.signature(function)
    params = list(signature.parameters.values())
    if not isinstance(attr, staticmethod) and params:
        params = params[1:]  # self, or cls
    doc = parse_docstring(inspect.getdoc(function))
    parameters: list[Parameter] = []
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for param in params:
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise SchemaError(
                f"method {name}: *{param.name} is not allowed: declare each argument by name "
                "with a type hint"
            )
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            raise SchemaError(
                f"method {name}: **{param.name} is not allowed: declare each argument by name "
                "with a type hint"
            )
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise SchemaError(
                f"method {name}: parameter {param.name} is positional-only; arguments are "
                "passed by name"
            )
        if param.name not in hints:
            raise SchemaError(
                f"method {name}: parameter {param.name} has no type hint: add one "
                f"({param.name}: str, …) so callers know what to send"
            )
        hint = hints[param.name]
        try:
            schema = _property(type_schema(hint), doc.args.get(param.name))
        except SchemaError as error:
            raise SchemaError(f"method {name}: parameter {param.name}: {error}") from error
        has_default = param.default is not inspect.Parameter.empty
        if has_default:
            _set_default(schema, param.default)
        else:
            required.append(param.name)
        properties[param.name] = schema
        parameters.append(
            Parameter(param.name, hint, not has_default, param.default if has_default else None)
        )
    info: dict[str, Any] = {
        "name": name,
        "description": doc.description,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    }
    if "return" in hints:
        try:
            returns = _property(type_schema(hints["return"]), doc.returns)
        except SchemaError as error:
            raise SchemaError(f"method {name}: its return type: {error}") from error
        info["returns"] = returns
    info["approval"] = False
    return Method(
        name=name,
        parameters=parameters,
        is_async=inspect.iscoroutinefunction(function),
        info=info,
    )


# JSON to hinted values --------------------------------------------------------------------


def convert_arguments(method: Method, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments for a call: each JSON argument converted to its hinted type;
    `ArgumentError` names a missing, unknown or ill-typed one."""
    known = {param.name for param in method.parameters}
    for name in arguments:
        if name not in known:
            expected = ", ".join(sorted(known)) or "none"
            raise ArgumentError(name, f"{method.name} takes no such argument (it takes {expected})")
    converted: dict[str, Any] = {}
    for param in method.parameters:
        if param.name not in arguments:
            if param.required:
                raise ArgumentError(param.name, "is required")
            continue
        try:
            converted[param.name] = from_json(arguments[param.name], param.hint)
        except _ConversionError as error:
            raise ArgumentError(param.name, error.describe()) from None
    return converted


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr)
    except ValueError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(what: str, value: Any) -> _ConversionError:
    return _ConversionError(f"expected {what}, got {_short(value)}")


def from_json(value: Any, hint: Any) -> Any:
    """`value` (decoded JSON) as the type `hint`."""
    if hint is Any or hint is object:
        return value
    if hint is None or hint is NoneType:
        if value is None:
            return None
        raise _expected("null", value)
    alias_value = getattr(hint, "__value__", None)
    if alias_value is not None and type(hint).__name__ == "TypeAliasType":
        return from_json(value, alias_value)
    supertype = getattr(hint, "__supertype__", None)
    if supertype is not None:
        return from_json(value, supertype)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated or origin in (Required, NotRequired):
        return from_json(value, args[0])
    if origin is Union or origin is types.UnionType:
        if value is None and NoneType in args:
            return None
        others = [arm for arm in args if arm is not NoneType]
        if len(others) == 1:
            return from_json(value, others[0])
        for arm in args:
            if arm is NoneType:
                continue
            try:
                return from_json(value, arm)
            except _ConversionError:
                continue
        raise _expected(" or ".join(_describe(arm) for arm in args), value)
    if origin is Literal:
        for option in args:
            plain = option.value if isinstance(option, enum.Enum) else option
            if value == plain and type(value) is type(plain):
                return option
        raise _expected("one of " + ", ".join(_short(_plain(option)) for option in args), value)
    if origin in _SEQUENCES or origin in _SETS or origin is tuple or hint in (list, set, tuple):
        return _sequence(value, hint, origin or hint, args)
    if origin in _MAPPINGS or hint in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise _expected("an object", value)
        item = args[1] if args else Any
        result = {}
        for key, entry in value.items():
            try:
                result[key] = from_json(entry, item)
            except _ConversionError as error:
                raise error.at(f".{key}") from None
        return result
    if not isinstance(hint, type):
        return value
    if issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        for member in hint:
            if member.value == value and type(member.value) is type(value):
                return member
        raise _expected("one of " + ", ".join(_short(member.value) for member in hint), value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _expected("a boolean", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _expected("an integer", value)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _expected("a number", value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _expected("a string", value)
    if hint in _FORMATS:
        return _formatted(value, hint)
    if dataclasses.is_dataclass(hint) or typing.is_typeddict(hint):
        return _object(value, hint)
    return value


def _plain(option: Any) -> Any:
    return option.value if isinstance(option, enum.Enum) else option


def _describe(hint: Any) -> str:
    if hint is NoneType:
        return "null"
    schema_type = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return schema_type.get(hint, _name(hint))


def _sequence(value: Any, hint: Any, kind: Any, args: tuple[Any, ...]) -> Any:
    if not isinstance(value, list | tuple):
        raise _expected("an array", value)
    if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if args == ((),):
            args = ()
        if len(value) != len(args):
            raise _expected(f"an array of {len(args)} items", value)
        items = []
        for index, (entry, item_hint) in enumerate(zip(value, args, strict=True)):
            try:
                items.append(from_json(entry, item_hint))
            except _ConversionError as error:
                raise error.at(f"[{index}]") from None
        return tuple(items)
    item_hint = args[0] if args else Any
    items = []
    for index, entry in enumerate(value):
        try:
            items.append(from_json(entry, item_hint))
        except _ConversionError as error:
            raise error.at(f"[{index}]") from None
    if kind in _SETS:
        return frozenset(items) if kind is frozenset else set(items)
    if kind is tuple:
        return tuple(items)
    return items


def _formatted(value: Any, hint: type) -> Any:
    if isinstance(value, hint) and not (hint is dt.date and isinstance(value, dt.datetime)):
        return value
    if not isinstance(value, str):
        raise _expected(f"a {_FORMATS[hint]} string", value)
    try:
        if hint is uuid.UUID:
            return uuid.UUID(value)
        return hint.fromisoformat(value)  # type: ignore[attr-defined]
    except ValueError:
        what = "a UUID" if hint is uuid.UUID else f"an ISO 8601 {_FORMATS[hint]}"
        raise _expected(what, value) from None


def _object(value: Any, hint: type) -> Any:
    if not isinstance(value, dict):
        raise _expected(f"an object ({hint.__name__})", value)
    hints = typing.get_type_hints(hint, include_extras=True)
    if dataclasses.is_dataclass(hint):
        fields = {field.name: field for field in dataclasses.fields(hint) if field.init}
        required = {
            name
            for name, field in fields.items()
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        }
    else:
        fields = dict.fromkeys(hints)
        required = _required_keys(hint, hints)
    for key in value:
        if key not in fields:
            raise _ConversionError(f'{hint.__name__} has no field "{key}"')
    converted: dict[str, Any] = {}
    for name in fields:
        if name not in value:
            if name in required:
                raise _ConversionError(f'{hint.__name__} needs the field "{name}"')
            continue
        try:
            converted[name] = from_json(value[name], hints[name])
        except _ConversionError as error:
            raise error.at(f".{name}") from None
    if dataclasses.is_dataclass(hint):
        return hint(**converted)
    return converted


# Values to JSON ---------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """`value` as plain JSON: dataclasses and TypedDicts as objects, enums as their values,
    dates and times as ISO 8601, UUIDs, paths and decimals as strings, tuples and sets as
    arrays. Bytes, non-finite floats and other objects raise `ResultError`."""
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ResultError(f"{value} is not a JSON number")
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {_key(key): to_json(entry) for key, entry in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(entry) for entry in value]
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | PurePath | decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise ResultError(
            "bytes are not JSON: return text (base64 if need be), or save them with "
            "context().attach(name, data)"
        )
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return to_json(dump(mode="json"))
    raise ResultError(
        f"a {type(value).__name__} is not JSON: return dicts, lists, strings, numbers, "
        "dataclasses or TypedDicts"
    )


def _key(key: Any) -> str:
    if isinstance(key, enum.Enum):
        key = key.value
    if isinstance(key, str):
        return key
    if isinstance(key, bool | int | float) or key is None:
        return json.dumps(key)
    raise ResultError(f"a {type(key).__name__} cannot be a JSON object key")
