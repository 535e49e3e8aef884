"""Typed JSON records: frozen dataclasses that read and write an on-disk JSON object exactly.

A manifest section is declared once, as a dataclass deriving from `Record`; `from_dict` checks every key
against the field's type and `to_dict` gives the JSON object back, so `to_dict(from_dict(x)) == x` for any
object the format allows. The rules, chosen so that every file written so far still loads:

- a field without a default is required: its absence is a `RecordError` naming the key's path;
- a field declared with `absent()` may be missing (older files lack it): it reads as None and is left out
  when written, unlike an `X | None` field, which is always written (as null when None);
- keys the record does not declare are kept in `extra` and written back after the declared ones, so a note
  added by hand survives a rewrite (`ideal occupancy`, `ideal mouth calibrate`);
- a field typed as a class of its own with `from_dict`/`to_dict` (ModelConfig, MelConfig, ...) is parsed by
  that class, which owns its schema; `Json` is a value kept as it is (a record nobody reads field by field).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Mapping, TypeVar, Union

Json = Any  # a JSON value stored as read: the record of a section no code reads field by field

_ABSENT = "absent"  # field metadata: may be missing from the file; left out when None
R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A JSON object does not match its record: `key` is the dotted path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"key '{key}' {problem}" if key else problem)
        self.key = key
        self.problem = problem


def absent() -> Any:
    """A field that older files may lack: None when missing, and not written when None."""
    return dataclasses.field(default=None, metadata={_ABSENT: True})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """Base of the typed sections; subclasses are `@dataclass(frozen=True, kw_only=True)` and declare their
    keys in the order the file has them (the order `to_dict` writes)."""

    extra: Mapping[str, Json] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls: type[R], data: Any, key: str = "") -> R:
        if not isinstance(data, dict):
            raise RecordError(key, f"should be an object, not {_kind(data)}")
        hints = _type_hints(cls)
        values: dict[str, Any] = {}
        for f in _fields(cls):
            path = f"{key}.{f.name}" if key else f.name
            if f.name in data:
                values[f.name] = _parse(hints[f.name], data[f.name], path)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(path, "is missing")
        known = {f.name for f in _fields(cls)}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Json]:
        out: dict[str, Json] = {}
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            if value is None and f.metadata.get(_ABSENT):
                continue
            out[f.name] = _dump(value)
        out.update(self.extra)
        return out


def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.name != "extra")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_NAMES = {bool: "true or false", str: "a string", float: "a number", int: "a whole number"}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _parse(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(inner, value, key)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecordError(key, f"should be an array, not {_kind(value)}")
        item = args[0] if args else Any
        items = [_parse(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is tuple and args[-1] is not Ellipsis and len(items) != len(args):
            raise RecordError(key, f"should have {len(args)} items, not {len(items)}")
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(key, f"should be an object, not {_kind(value)}")
        return {k: _parse(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(value, key)
    if hasattr(tp, "from_dict"):  # a config class that owns its schema
        try:
            return tp.from_dict(value)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordError(key, f"is not a valid {tp.__name__} ({type(exc).__name__}: {exc})") from exc
    return _scalar(tp, value, key)


def _scalar(tp: type, value: Any, key: str) -> Any:
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    raise RecordError(key, f"should be {_NAMES[tp]}, not {_kind(value)} ({value!r})")


def _dump(value: Any) -> Json:
    if hasattr(value, "to_dict"):  # a Record or a config class
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value
