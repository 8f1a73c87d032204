"""Helpers for configs: frozen dataclasses that validate in ``__post_init__`` and round-trip
to JSON. :func:`from_dict` names the offending key on unknown keys or wrong types."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from lorascan.errors import UsageError
from lorascan.text import short_repr

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check (and lightly coerce: list -> tuple, int -> float) a value against an annotation.
    Values are quoted with :func:`short_repr`: a YAML alias bomb's repr is exponential in size."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_type(value, arg, where)
            except UsageError:
                continue
        raise UsageError(f"{where}: expected {_name(tp)}, got {type(value).__name__} {short_repr(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise UsageError(f"{where}: expected null, got {short_repr(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where}: expected a list, got {type(value).__name__} {short_repr(value)}")
        inner = args[0] if args else Any
        return tuple(_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where}: expected a number, got {type(value).__name__} {short_repr(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where}: expected an integer, got {type(value).__name__} {short_repr(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false, got {short_repr(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UsageError(f"{where}: expected a string, got {type(value).__name__} {short_repr(value)}")
        return value
    return value


_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false", type(None): "null"}


def _name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list"
    return _NAMES.get(tp) or getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build a config dataclass from a mapping; unknown keys and wrong types are UsageErrors."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in set(data) - set(fields))  # str: YAML keys may be numbers
    if unknown:
        raise UsageError(f"{where}: unknown key {short_repr(unknown[0])} (known: {', '.join(sorted(fields))})")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise UsageError(f"{where}: {err}") from None


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that ignores None values (unset CLI flags)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
