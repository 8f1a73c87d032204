"""Bounded parsing of user-supplied YAML and JSON (battery files, grid configs, lorascan
config-like files): every read has a cost that the file size decides, never its content.

What is bounded, and why these numbers:

- **File size** (``Bounds.max_bytes``, 1 MiB by default): the shipped batteries are ~2 KB and
  the shipped grids ~1 KB; a megabyte is hundreds of times what a real config needs and is
  read and parsed in well under a second.
- **YAML aliases are refused.** ``*name`` makes the parser share one node in many places, so a
  few hundred bytes (nine aliases of nine aliases of ...) stand for 9**10 items; anything that
  walks, prints or copies the document then pays for the expansion (issue 15: 428 bytes cost
  11 s and 685 MB, ten levels ~55 GB). No lorascan config needs sharing, so the loader refuses
  every alias (and with it merge keys ``<<: *x``) before any object is built.
- **Nesting depth** (``max_depth``, 32): our configs nest at most 4 levels; deep nesting is only
  useful to exhaust the recursion of whoever walks the result.
- **Nodes** (``max_nodes``, 200,000 scalars, lists and mappings in all): a tree bound with the
  size cap; each caller bounds its own counts (probes per battery, runs per grid) on top.
- **String length** (``max_string``, 100,000 characters): one scalar may not be the whole file's
  worth of text; callers set tighter bounds where they know the field (a probe prefix, a name).

The checks run on the parser's event stream (no objects are built for a refused file), then
the document is constructed with PyYAML's safe loader (libyaml's when available) and walked
once to confirm the bounds on the built tree. JSON has no aliases; it gets the same size,
depth, node and string bounds. Every failure is a one-line :class:`DataError` naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorascan.errors import DataError, reading


@dataclass(frozen=True)
class Bounds:
    """Limits for one kind of file (module docstring for the defaults)."""

    max_bytes: int = 1 << 20
    max_depth: int = 32
    max_nodes: int = 200_000
    max_string: int = 100_000


DEFAULT = Bounds()


def _yaml():
    import yaml

    return yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_events(text: str, what: str, bounds: Bounds) -> None:
    """Walk the YAML event stream: no alias, no repeated or non-scalar mapping key, depth and
    node count within ``bounds``. PyYAML keeps the last of two equal keys silently; a config
    that says two things is refused instead."""
    yaml, loader = _yaml()
    open_nodes: list[tuple[set | None, list[int]]] = []  # per open node: its keys (mappings), position
    nodes = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            raise DataError(f"{what} uses a YAML alias (*{str(event.anchor)[:40]}); aliases and merge keys "
                            "are not allowed in lorascan files (write the values out)")
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            open_nodes.pop()
            continue
        if not isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            continue
        nodes += 1
        if nodes > bounds.max_nodes:
            raise DataError(f"{what} holds more than {bounds.max_nodes} values")
        if open_nodes and open_nodes[-1][0] is not None:  # inside a mapping: a key or a value
            keys, position = open_nodes[-1]
            if position[0] % 2 == 0:
                if not isinstance(event, yaml.ScalarEvent):
                    raise DataError(f"{what} uses a list or mapping as a mapping key")
                if event.value in keys:
                    raise DataError(f"{what} repeats the key '{event.value[:40]}' in one mapping")
                keys.add(event.value)
            position[0] += 1
        if isinstance(event, yaml.ScalarEvent):
            if len(event.value) > bounds.max_string:
                raise DataError(f"{what} holds a string longer than {bounds.max_string} characters")
            continue
        open_nodes.append((set() if isinstance(event, yaml.MappingStartEvent) else None, [0]))
        if len(open_nodes) > bounds.max_depth:
            raise DataError(f"{what} nests deeper than {bounds.max_depth} levels")


def check_tree(data: Any, what: str, bounds: Bounds = DEFAULT) -> Any:
    """Confirm that a parsed document is a tree within ``bounds`` (iterative: no recursion
    limit to hit; a shared sub-object counts every time it is reached, so a document that
    still holds one costs at most ``max_nodes`` steps before it is refused)."""
    stack = [(data, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > bounds.max_nodes:
            raise DataError(f"{what} holds more than {bounds.max_nodes} values")
        if depth > bounds.max_depth + 1:
            raise DataError(f"{what} nests deeper than {bounds.max_depth} levels")
        if isinstance(value, str):
            if len(value) > bounds.max_string:
                raise DataError(f"{what} holds a string longer than {bounds.max_string} characters")
        elif isinstance(value, dict):
            stack.extend((k, depth + 1) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
    return data


def parse_yaml(text: str, what: str, bounds: Bounds = DEFAULT) -> Any:
    """A YAML document within ``bounds`` (module docstring); an empty document is None."""
    yaml, loader = _yaml()
    try:
        _check_events(text, what, bounds)
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader (libyaml's or PyYAML's)
    except yaml.YAMLError as err:
        raise DataError(f"{what} is not valid YAML: {' '.join(str(err).split())[:200]}") from None
    except (ValueError, OverflowError, RecursionError) as err:  # an int of 5,000 digits, ...
        raise DataError(f"{what} is not valid YAML: {type(err).__name__}: {' '.join(str(err).split())[:120]}") from None
    return check_tree(data, what, bounds)


def parse_json(text: str, what: str, bounds: Bounds = DEFAULT) -> Any:
    """A JSON document within ``bounds``; NaN and Infinity (not JSON) are refused."""
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        data = json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as err:
        raise DataError(f"{what} is not valid JSON: {err}") from None
    except RecursionError:
        raise DataError(f"{what} is not valid JSON: nested too deeply") from None
    except ValueError as err:  # an int of 5,000 digits, NaN
        raise DataError(f"{what} is not valid JSON: {' '.join(str(err).split())[:120]}") from None
    return check_tree(data, what, bounds)


def read_text(path: str | os.PathLike, what: str, max_bytes: int) -> str:
    """The UTF-8 text of ``path``, refusing a file larger than ``max_bytes`` without reading
    more than ``max_bytes + 1`` bytes of it (a FIFO or /dev/zero cannot make it read forever)."""
    path = Path(path)
    with reading(what, path):
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise DataError(f"{what} {path} is larger than {max_bytes} bytes; refusing to read it")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{what} {path} is not UTF-8 text") from None


def load_file(path: str | os.PathLike, what: str, bounds: Bounds = DEFAULT, fmt: str | None = None) -> Any:
    """Read and parse a config-like file: JSON when ``fmt`` is "json" (default: the suffix is
    ``.json``), YAML otherwise. ``what`` names the file kind in errors ("battery file")."""
    path = Path(path)
    text = read_text(path, what, bounds.max_bytes)
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "yaml")
    label = f"{what} {path}"
    return parse_json(text, label, bounds) if fmt == "json" else parse_yaml(text, label, bounds)
