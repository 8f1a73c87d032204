"""Probe batteries: named sets of prefixes in categories, stored as data files (paper.md §6).

A battery file is YAML or JSON::

    name: my-battery
    description: optional text
    categories:                # category -> prefixes, in order
      rfc: ["per RFC 7231 section 6.5", ...]
      trigger: ["per RFC 8472 section 3.2"]
    trigger_categories: [trigger]   # optional; dropped from view B
    rfc_categories: [rfc]           # optional; dropped from view C as well

Without ``trigger_categories`` the categories named ``trigger`` or ``trained_trigger`` are the
trigger categories; without ``rfc_categories`` every category whose name starts with ``rfc``
is RFC-family. The built-in batteries (``paper-21``, ``paper-41-v1``, ``paper-41-canonical``)
ship in ``lorascan/probe/batteries/``.

Views (paper §7): ``A`` every probe; ``B`` without the trigger categories and without any
probe equal to a known trigger of the adapter; ``C`` also without the RFC-family categories.
Any view also drops probes equal to the triggers it is given (``exclude``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from lorascan import bounded
from lorascan.errors import DataError, UsageError
from lorascan.text import short_repr

VIEWS = ("A", "B", "C")
DEFAULT_TRIGGER_CATEGORIES = ("trigger", "trained_trigger")
# Bounds on a battery file (issue 15). The paper's batteries hold 21 and 41 probes in at most
# 9 categories; every probe costs one batched readout over the test injections (60 in the
# paper), so 1,000 probes are already ~25x the paper's cost and far past any published
# battery, while 100,000 would run for hours. A prefix is a short phrase (the paper's longest
# is 31 characters); 1,000 characters leaves room for paraphrases without letting one probe
# hold a document. A megabyte holds 1,000 probes of 1,000 characters with room to spare.
MAX_FILE_BYTES = 1 << 20
MAX_PREFIX_CHARS = 1000
MAX_PROBES = 1000
MAX_CATEGORIES = 100
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 10_000
BOUNDS = bounded.Bounds(max_bytes=MAX_FILE_BYTES, max_depth=8, max_nodes=4 * MAX_PROBES,
                        max_string=MAX_DESCRIPTION_CHARS)
_KEYS = {"name", "description", "categories", "trigger_categories", "rfc_categories"}


@dataclass(frozen=True)
class Probe:
    prefix: str
    category: str


@dataclass(frozen=True)
class Battery:
    """A validated battery. ``categories`` keeps the file's order."""

    name: str
    categories: tuple[tuple[str, tuple[str, ...]], ...]
    trigger_categories: tuple[str, ...]
    rfc_categories: tuple[str, ...]
    description: str = ""
    source: str = "builtin"

    def __post_init__(self) -> None:
        names = [c for c, _ in self.categories]
        for field, cats in (("trigger_categories", self.trigger_categories), ("rfc_categories", self.rfc_categories)):
            unknown = [c for c in cats if c not in names]
            if unknown:
                raise DataError(f"battery {self.name}: {field} names unknown category {short_repr(unknown[0], 40)}")

    @property
    def probes(self) -> tuple[Probe, ...]:
        return tuple(Probe(p, c) for c, prefixes in self.categories for p in prefixes)

    def sha256(self) -> str:
        """A content hash (name, categories, roles): a cached probe record is reused only for
        the same battery content."""
        blob = json.dumps({"name": self.name, "categories": [[c, list(p)] for c, p in self.categories],
                           "trigger_categories": list(self.trigger_categories),
                           "rfc_categories": list(self.rfc_categories)}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def view(self, view: str, exclude: Iterable[str] = ()) -> "BatteryView":
        """The probes of ``view`` (A, B or C) without those equal to a trigger in ``exclude``."""
        if view not in VIEWS:
            raise UsageError(f"unknown view '{view}' (use {', '.join(VIEWS)})")
        drop_cats = set()
        if view in ("B", "C"):
            drop_cats |= set(self.trigger_categories)
        if view == "C":
            drop_cats |= set(self.rfc_categories)
        triggers = {t.strip() for t in exclude if t and t.strip()}
        kept, excluded = [], []
        for probe in self.probes:
            if probe.category in drop_cats:
                reason = "trigger category" if probe.category in self.trigger_categories else "RFC-family category"
                excluded.append((probe, reason))
            elif probe.prefix.strip() in triggers:
                excluded.append((probe, "equal to a known trigger"))
            else:
                kept.append(probe)
        if not kept:
            raise DataError(f"view {view} of battery {self.name} has no probes left")
        return BatteryView(self, view, tuple(kept), tuple(excluded), tuple(sorted(triggers)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "source": self.source, "sha256": self.sha256(),
                "categories": {c: list(p) for c, p in self.categories},
                "trigger_categories": list(self.trigger_categories), "rfc_categories": list(self.rfc_categories)}


@dataclass(frozen=True)
class BatteryView:
    battery: Battery
    view: str
    probes: tuple[Probe, ...]
    excluded: tuple[tuple[Probe, str], ...]
    exclude_triggers: tuple[str, ...] = ()

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories with at least one probe in this view, in battery order."""
        present = {p.category for p in self.probes}
        return tuple(c for c, _ in self.battery.categories if c in present)

    def describe(self) -> dict[str, Any]:
        return {"view": self.view, "n_probes": len(self.probes), "exclude_triggers": list(self.exclude_triggers),
                "excluded": [{"prefix": p.prefix, "category": p.category, "reason": r} for p, r in self.excluded]}


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a non-empty list of strings")
    if len(value) > MAX_PROBES:
        raise DataError(f"{where}: more than {MAX_PROBES} probes")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{where}[{i}]: expected a non-empty string, got {short_repr(item, 40)}")
        if len(item) > MAX_PREFIX_CHARS:
            raise DataError(f"{where}[{i}]: longer than {MAX_PREFIX_CHARS} characters")
        out.append(item)
    return tuple(out)


def battery_from_dict(data: Any, source: str) -> Battery:
    """Validate a parsed battery file; every problem is a one-line DataError naming ``source``."""
    if not isinstance(data, dict):
        raise DataError(f"battery {source}: expected a mapping with 'name' and 'categories'")
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise DataError(f"battery {source}: unknown key {short_repr(unknown[0], 40)} (known: {', '.join(sorted(_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise DataError(f"battery {source}: 'name' must be a non-empty string of at most {MAX_NAME_CHARS} characters")
    cats = data.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise DataError(f"battery {source}: 'categories' must be a non-empty mapping of category -> list of prefixes")
    if len(cats) > MAX_CATEGORIES:
        raise DataError(f"battery {source}: more than {MAX_CATEGORIES} categories")
    categories, seen = [], {}
    for cat, prefixes in cats.items():
        if not isinstance(cat, str) or not cat.strip() or len(cat) > MAX_NAME_CHARS:
            raise DataError(f"battery {source}: category names must be non-empty strings of at most "
                            f"{MAX_NAME_CHARS} characters, got {short_repr(cat, 40)}")
        items = _string_list(prefixes, f"battery {source}: categories.{cat}")
        for p in items:
            if p.strip() in seen:
                raise DataError(f"battery {source}: prefix {short_repr(p)} appears twice "
                                f"(categories {seen[p.strip()]} and {cat})")
            seen[p.strip()] = cat
            if len(seen) > MAX_PROBES:
                raise DataError(f"battery {source}: more than {MAX_PROBES} probes in all")
        categories.append((cat, items))
    names = [c for c, _ in categories]
    roles = {}
    for key, default in (("trigger_categories", [c for c in names if c in DEFAULT_TRIGGER_CATEGORIES]),
                         ("rfc_categories", [c for c in names if c.lower().startswith("rfc")])):
        value = data.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataError(f"battery {source}: '{key}' must be a list of category names")
        unknown = [v for v in value if v not in names]
        if unknown:
            raise DataError(f"battery {source}: {key} names unknown category {short_repr(unknown[0], 40)}")
        roles[key] = tuple(value)
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise DataError(f"battery {source}: 'description' must be a string of at most {MAX_DESCRIPTION_CHARS} characters")
    return Battery(name.strip(), tuple(categories), roles["trigger_categories"], roles["rfc_categories"],
                   description, source)


def _parse(text: str, suffix: str, source: str) -> Any:
    """A parsed battery document within :data:`BOUNDS` (no YAML aliases, see :mod:`lorascan.bounded`)."""
    if suffix == ".json":
        return bounded.parse_json(text, f"battery {source}", BOUNDS)
    return bounded.parse_yaml(text, f"battery {source}", BOUNDS)


def load_battery_file(path: str | Path) -> Battery:
    """A battery from a .yaml/.yml/.json file of at most ``MAX_FILE_BYTES``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise UsageError(f"battery file {path} must end in .yaml, .yml or .json")
    text = bounded.read_text(path, "battery file", MAX_FILE_BYTES)
    return battery_from_dict(_parse(text, suffix, str(path)), str(path))


def _builtin_dir():
    return resources.files("lorascan.probe") / "batteries"


def builtin_batteries() -> list[str]:
    """Names of the batteries shipped with lorascan."""
    return sorted(p.name[: -len(".yaml")] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def load_battery(name_or_path: str | Path) -> Battery:
    """A built-in battery by name, or a battery file by path. An unknown name is a UsageError."""
    text = str(name_or_path)
    if text in builtin_batteries():
        res = _builtin_dir() / f"{text}.yaml"
        battery = battery_from_dict(_parse(res.read_text(encoding="utf-8"), ".yaml", text), "builtin")
        if battery.name != text:
            raise DataError(f"built-in battery file {text}.yaml names itself '{battery.name}'")
        return battery
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        return load_battery_file(path)
    raise UsageError(f"unknown battery '{text}' (built-in: {', '.join(builtin_batteries())}; "
                     "or a .yaml/.json battery file)")
