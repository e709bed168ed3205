"""Typed options: every mapping a recipe gives (the recipe itself, a domain's config, an
objective's, a view's or a probe's options) is checked against a typed declaration before
anything runs.

A declaration is a dataclass, or, for objectives, the keyword-only parameters of the
constructor (:func:`signature_dataclass` turns them into one, so the signature stays the one place
an option is declared). :func:`build` walks a mapping into the declaration and raises one
:class:`OptionError` naming the full key (``objectives[0].options.temprature``) and the file:

- an unknown key, with the close matches suggested (``did you mean 'temperature'?``);
- a value of the wrong type (``'0.2'`` is a string, not a number: quoted YAML stays a string);
- a value outside a declared range (``Annotated[int, Range(1)]``: refused when below 1).

YAML 1.1 reads ``3e-4`` and ``1.0e12`` as strings; :func:`load_yaml` reads every unquoted scalar
Python's ``float()`` reads as a float (exponent without a dot, or without a sign) as a number, and
a number option also takes Python's ``inf``/``nan`` spellings (YAML's are ``.inf``/``.nan``). A
ranged number is never NaN.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml

__all__ = [
    "OptionError", "Range", "Predicate", "PositiveInt", "PositiveFloat", "NonNegativeInt", "NonNegativeFloat", "Probability",
    "build", "convert", "signature_dataclass", "load_yaml", "closest", "format_key",
]


class OptionError(ValueError):
    """A mapping that does not fit its declaration. The message names the source, the full key and
    what was expected; ``key`` and ``source`` are kept for callers that re-word it."""

    def __init__(self, message: str, key: str = "", source: str | None = None) -> None:
        self.key, self.source, self.reason = key, source, message
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message}")


@dataclass(frozen=True)
class Range:
    """A bound on a number: ``low <= value`` (or ``<`` with ``low_open``), ``value <= high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def check(self, value: float) -> str | None:
        if value != value:  # NaN passes every comparison
            return "a number (not NaN)"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"greater than {self.low:g}" if self.low_open else f"at least {self.low:g}"
        if self.high is not None and value > self.high:
            return f"at most {self.high:g}"
        return None

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Predicate:
    """Any other check on a value: ``test(value)`` must be true; ``expected`` says what it must be."""

    test: Any
    expected: str

    def check(self, value: Any) -> str | None:
        return None if self.test(value) else self.expected


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1)]


def format_key(prefix: str, name: str | int) -> str:
    """``objectives`` + 0 -> ``objectives[0]``; ``train`` + ``lr`` -> ``train.lr``."""
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else str(name)


def closest(name: str, known: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known names, or ''."""
    matches = difflib.get_close_matches(str(name), [str(k) for k in known], n=2, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        ranges = [m.describe() for m in marks if isinstance(m, Range)]
        return _type_name(base) + (f" {' '.join(ranges)}" if ranges else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def convert(value: Any, tp: Any, key: str, source: str | None = None) -> Any:
    """``value`` checked against the annotation ``tp`` (nested dataclasses built); raises
    :class:`OptionError` naming ``key``."""

    def fail(expected: str | None = None) -> OptionError:
        hint = ""
        if isinstance(value, str) and _numeric_text(value) and tp in (int, float):
            hint = " (a quoted string: write the number without quotes)"
        return OptionError(f"key '{key}' expects {expected or _type_name(tp)}, got {value!r}{hint}", key, source)

    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        base, *marks = args
        converted = convert(value, base, key, source)
        for mark in marks:
            if (isinstance(mark, Range) and isinstance(converted, (int, float))) or isinstance(mark, Predicate):
                problem = mark.check(converted)
                if problem:
                    raise OptionError(f"key '{key}' must be {problem}, got {value!r}", key, source)
        return converted
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return convert(value, arm, key, source)
            except OptionError as error:
                errors.append(error)
        # a range error in the one arm whose type fits says more than "expects int or null"
        ranged = [e for e in errors if "must be" in e.reason]
        if len(ranged) == 1:
            raise ranged[0]
        raise fail()
    if origin is Literal:
        if value not in args:
            raise OptionError(f"key '{key}' expects one of {', '.join(repr(a) for a in args)}, got {value!r}"
                              f"{closest(str(value), [str(a) for a in args]) if isinstance(value, str) else ''}",
                              key, source)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise fail(f"a mapping ({tp.__name__})")
        return build(tp, value, key, source)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise fail(f"a list of {len(args)} items")
            return tuple(convert(v, a, format_key(key, i), source) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [convert(v, item, format_key(key, i), source) for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        item = args[1] if args else Any
        return {str(k): convert(v, item, format_key(key, str(k)), source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                return int(value)  # 1e5 from YAML is a float; it names a whole number
            raise fail()
        return value
    if tp is float:
        if isinstance(value, str) and value.strip().lstrip("+-").lower() in _NON_FINITE:
            return float(value)  # Python's spellings of infinity and NaN, which YAML reads as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise fail()
    return value


_NON_FINITE = ("inf", "infinity", "nan")


def _numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build(cls: type, data: dict[str, Any] | None, prefix: str = "", source: str | None = None) -> Any:
    """An instance of the dataclass ``cls`` from ``data``: unknown keys, missing required keys, wrong
    types and values the class's own ``__post_init__`` refuses are one :class:`OptionError` naming
    the full key."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise OptionError(f"key '{prefix or '<top>'}' expects a mapping ({cls.__name__}), got {data!r}", prefix, source)
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            key = format_key(prefix, name)
            raise OptionError(f"unknown key '{key}'{closest(name, fields)}; known keys here: {sorted(fields)}",
                              key, source)
    kwargs = {}
    for name, f in fields.items():
        key = format_key(prefix, name)
        if name in data:
            kwargs[name] = convert(data[name], hints[name], key, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise OptionError(f"missing required key '{key}'", key, source)
    try:
        return cls(**kwargs)
    except OptionError:
        raise
    except (ValueError, TypeError) as error:  # the class's own checks (__post_init__)
        raise OptionError(f"key '{prefix or cls.__name__}': {error}", prefix, source) from None


_DATACLASS_CACHE: dict[Any, type] = {}


def signature_dataclass(function: Any, name: str, skip: int = 0) -> type:
    """A dataclass of ``function``'s keyword parameters after the first ``skip`` positional ones
    (an objective's encoders), with their annotations and defaults: the typed declaration of an
    objective's options, read from its constructor so that it is written once."""
    cached = _DATACLASS_CACHE.get((function, skip))
    if cached is not None:
        return cached
    parameters = list(inspect.signature(function).parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    hints = typing.get_type_hints(function, include_extras=True)
    positional = [p for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]
    skipped = {p.name for p in positional[:skip]}
    fields = []
    for p in parameters:
        if p.name in skipped or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = hints.get(p.name, Any)
        if p.default is p.empty:
            fields.append((p.name, annotation))
        else:
            default = p.default
            fields.append((p.name, annotation, dataclasses.field(default_factory=lambda d=default: d)))
    fields.sort(key=lambda item: len(item) == 3)  # required fields first, as dataclasses need
    made = dataclasses.make_dataclass(name, fields)
    _DATACLASS_CACHE[(function, skip)] = made
    return made


# ----------------------------------------------------------------------------------------------
# YAML with Python's float spellings

_FLOAT_WITH_EXPONENT = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4``, ``1.0e12`` and ``1E5`` as floats (YAML 1.1 wants a dot
    and a signed exponent)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITH_EXPONENT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with Python's float spellings (no object construction, ever)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
