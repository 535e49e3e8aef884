"""Command-line options derived from config dataclasses, so a setting's type, default and help live in one
place (its dataclass field) and no CLI restates them.

A field's help is `field(metadata={"help": ...})`; a field without one is no option unless a command names it.
A command adds the fields it offers with `add_options`, optionally under other flag names, and gets back the
`ConfigOptions` that turns the parsed arguments into the dataclass. Options remember whether they were given on
the command line, so a preset (a training recipe) can supply every value the command line leaves out.

Types: int, float, str, Path, bool (its flag turns it on; when its default is on, `--no-` + it turns it off),
`X | None`, `Literal[...]` (choices) and `tuple[X, ...]` / `list[X]` (one or more values).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

C = TypeVar("C")

# Namespace attribute holding the dests given on the command line (argparse keeps no record of it).
_GIVEN = "_config_options_given"


def _mark_given(namespace: argparse.Namespace, dest: str) -> None:
    given = getattr(namespace, _GIVEN, None)
    if given is None:
        given = set()
        setattr(namespace, _GIVEN, given)
    given.add(dest)


class _Store(argparse.Action):
    def __init__(self, *args: Any, as_tuple: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.as_tuple = as_tuple

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, tuple(values) if isinstance(values, list) and self.as_tuple else values)
        _mark_given(namespace, self.dest)


class _Switch(argparse.Action):
    """A bool's flags turn it on, its `off` flag (the added `--no-` twin) off; like argparse.BooleanOptionalAction,
    remembering that it was given."""

    def __init__(self, option_strings, dest, default=None, help=None, off=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)
        self.off = off

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string != self.off)
        _mark_given(namespace, self.dest)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


@dataclass(frozen=True)
class Option:
    field: str  # the dataclass field
    dest: str  # its attribute in the parsed namespace
    flag: str  # its long flag ("--steps") or, for a positional argument, its name


@dataclass(frozen=True)
class ConfigOptions(Generic[C]):
    """The options one command derived from one config dataclass."""

    cls: type[C]
    options: tuple[Option, ...]
    base: C | None = None  # the instance whose values are the options' defaults (None: the dataclass defaults)

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """field -> value of every option given on the command line."""
        given = getattr(args, _GIVEN, set())
        return {o.field: getattr(args, o.dest) for o in self.options if o.dest in given}

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """field -> value of every option, defaults included."""
        return {o.field: getattr(args, o.dest) for o in self.options}

    def build(self, args: argparse.Namespace, base: C | None = None, **extra: Any) -> C:
        """The config of these arguments: `base` (a preset; default: the one the options were made with) with the
        given options on top, or, without one, every option's value over the dataclass defaults; `extra` sets
        fields the command computes itself."""
        base = base if base is not None else self.base
        if base is None:
            return self.cls(**self.values(args), **extra)
        return dataclasses.replace(base, **self.given(args), **extra)  # type: ignore[type-var]

    def flag(self, field_name: str) -> str:
        return next(o.flag for o in self.options if o.field == field_name)


def _unwrap_optional(tp: Any) -> Any:
    """X for `X | None`, else the type itself."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default_of(f: dataclasses.Field, base: Any) -> Any:
    if base is not None:
        return getattr(base, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _help(text: str, default: Any) -> str:
    """The help text with the default shown (argparse's own %(default)s would print 45.0 for 45 and None)."""
    if text == argparse.SUPPRESS:
        return text
    text = text.replace("%", "%%")
    if default is None or default is dataclasses.MISSING or default is False:
        return text
    if default is True:
        return f"{text} (default on)"
    if isinstance(default, (tuple, list)):
        return f"{text} (default {' '.join(map(str, default))})"
    return f"{text} (default {default:g})" if isinstance(default, float) else f"{text} (default {default})"


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type[C], *,
                fields: Iterable[str] | None = None, flags: Mapping[str, str | tuple[str, ...]] | None = None,
                dests: Mapping[str, str] | None = None, dest_prefix: str = "", helps: Mapping[str, str] | None = None,
                base: C | None = None, metavars: Mapping[str, str] | None = None) -> ConfigOptions[C]:
    """Add an option per field of `cls` to `parser` (or to an argument group of it).

    fields: the fields to offer, in this order (default: every field with a help text).
    flags: field -> flag name(s) when not `--field-name` (e.g. ("-o", "--output")); a bool that defaults to on also
        gets `--no-` + its last flag; a name without dashes makes a positional argument.
    dests: field -> attribute in the parsed namespace when not `dest_prefix` + the field name (a prefix keeps the
        fields of a nested config apart from its parent's).
    helps: field -> help text replacing the field's own (a command's angle on a shared setting).
    base: an instance whose values are the defaults shown and parsed (default: the dataclass defaults).
    metavars: field -> metavar when not the long flag in capitals.
    """
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    names = list(fields) if fields is not None else [n for n, f in by_name.items() if "help" in f.metadata]
    flags, dests, helps, metavars = flags or {}, dests or {}, helps or {}, metavars or {}
    options = []
    for name in names:
        f = by_name[name]
        tp = _unwrap_optional(hints[name])  # None is only ever a default, never parsed
        default = _default_of(f, base)
        text = helps.get(name, f.metadata.get("help"))
        if text is None:
            raise TypeError(f"{cls.__name__}.{name}: no help text (give it field(metadata={{'help': ...}}))")
        given = flags.get(name, "--" + name.replace("_", "-"))
        strings = (given,) if isinstance(given, str) else tuple(given)
        dest = dests.get(name, dest_prefix + name)
        if tp is bool:
            off = "--no-" + strings[-1][2:] if default else None
            parser.add_argument(*strings, *([off] if off else []), action=_Switch, dest=dest, default=default,
                                help=_help(text, default), off=off)
            options.append(Option(name, dest, strings[0]))
            continue
        kwargs: dict[str, Any] = {"help": _help(text, default)}
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            kwargs.update(choices=choices, type=type(choices[0]))
        elif origin in (tuple, list):
            kwargs.update(nargs="+", type=typing.get_args(tp)[0], as_tuple=origin is tuple)
        else:
            kwargs["type"] = tp
        if not strings[0].startswith("-"):  # positional: argparse takes its dest (and metavar) from the name
            dest = strings[0]
            if default is not dataclasses.MISSING:
                kwargs.update(nargs="?", default=default)
            parser.add_argument(dest, action=_Store, **kwargs)
            options.append(Option(name, dest, dest))
            continue
        if "choices" not in kwargs:
            kwargs["metavar"] = metavars.get(name, strings[-1].lstrip("-").replace("-", "_").upper())
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        parser.add_argument(*strings, action=_Store, dest=dest, **kwargs)
        options.append(Option(name, dest, strings[-1]))
    return ConfigOptions(cls, tuple(options), base)

