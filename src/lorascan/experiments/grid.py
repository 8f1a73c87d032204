"""Grid configs: a product of poison → train → evaluate runs, and the runs it expands to.

A grid file (YAML or JSON) holds::

    name: paper-sweep-minilm          # letters, digits, '.', '_', '-'
    base: minilm                      # one base model or a list
    task: seq-cls                     # label-word | seq-cls
    dataset: offline-pi               # anything 'lorascan poison --dataset' takes
    triggers: ["per RFC 8472 section 3.2"]
    counts: [0, 4, 8, 12]             # k, poisoned training rows; 0 = a clean adapter
    seeds: [42, 1, 2]                 # one seed sets both the poison recipe and training
    ranks: [16]
    train: {epochs: 2, lr: 0.001}     # TrainConfig overrides (not task, rank or seed)
    extra_runs:                       # optional: runs outside the product
      - {count: 0, seed: 3}           # a missing axis takes every value of the grid's axis
    placement: prefix                 # optional: prefix | suffix | random
    families:                         # optional: trigger family -> its triggers (cohort labels)
      reference: ["per RFC 8472 section 3.2"]
    readout: logits                   # optional: logits | generate
    eval_batch_size: 32               # optional
    description: "..."                # optional

Every combination of base × trigger × rank × count × seed is a run, then each ``extra_runs``
entry adds the product of its own values (a scalar or a list per axis). This is how a
calibration cohort gets more clean seeds than poisoned ones (paper §7: 4 clean, 30 poisoned).
A run that two entries describe is one run.

A run's folder name is built from its parameters only, never from raw attacker-controlled
text: ``{base}__{task}__t{sha256(trigger)[:8]}__k{count:03d}__s{seed}__r{rank}`` (plus
``__p{placement}`` for a non-prefix placement). Grids that share a dataset and training
settings therefore share run folders, so a sweep and a cohort written to one ``--out`` reuse
each other's finished runs. The dataset, training settings and readout are not in the name:
a run folder made with different ones is refused, never silently reused (see ``sweep.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lorascan import bounded
from lorascan import config as cfgmod
from lorascan.data.poison import PLACEMENTS
from lorascan.errors import UsageError
from lorascan.evaluate.readout import READOUTS
from lorascan.formulations import formulation_for, task_names, text_output_tasks
from lorascan.text import short_repr, slug
from lorascan.train.config import TrainConfig

AXES = ("base", "trigger", "count", "seed", "rank")   # the keys of an extra_runs entry
GRID_AXES = {"base": "base", "trigger": "triggers", "count": "counts", "seed": "seeds", "rank": "ranks"}
# fullmatch, not match with "$": "$" also matches before a trailing newline, which would put
# "name\n" into grids/<name>.json (issue 15).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Bounds (issue 15). The largest shipped grid has 24 runs and the paper's cohort 34; each run
# trains an adapter (minutes), so 10,000 runs is already months of CPU time: a grid asking for
# more is a mistake or an attack, and refusing it costs nothing (the product is counted, never
# built). Counts are capped again against the data when a run poisons (see data/poison.py);
# the cap here keeps a grid's own numbers sane. Ranks above 1,024 exceed the hidden size of
# every model lorascan trains; seeds fit in 32 bits (numpy and torch seed ranges).
MAX_RUNS = 10_000
MAX_COUNT = 10_000_000
MAX_RANK = 1024
MAX_SEED = 2**32 - 1
MAX_TEXT_CHARS = 1000   # a base id, dataset spec or trigger
MAX_FILE_BYTES = 1 << 20
BOUNDS = bounded.Bounds(max_bytes=MAX_FILE_BYTES, max_depth=8, max_nodes=50_000, max_string=10_000)
_TAG = "@grid"
_AXIS_TYPES = {"base": str, "trigger": str, "count": int, "seed": int, "rank": int}


def trigger_tag(trigger: str) -> str:
    """The 8-hex-digit tag that stands for a trigger in names (its SHA-256 prefix)."""
    return hashlib.sha256(trigger.encode("utf-8")).hexdigest()[:8]


def base_slug(base: str) -> str:
    """A file-name-safe form of a base model name (:func:`lorascan.text.slug`, kept under
    this name for the experiment code)."""
    return slug(base)


@dataclass(frozen=True)
class Run:
    """One poison → train → evaluate run. ``train`` is the full training config (its
    ``task``, ``rank`` and ``seed`` are the run's)."""

    base: str
    dataset: str
    trigger: str
    count: int
    train: TrainConfig
    placement: str = "prefix"
    readout: str = "logits"

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def rank(self) -> int:
        return self.train.rank

    @property
    def task(self) -> str:
        return str(self.train.task)

    @property
    def id(self) -> str:
        name = (f"{base_slug(self.base)}__{self.task}__t{trigger_tag(self.trigger)}"
                f"__k{self.count:03d}__s{self.seed}__r{self.rank}")
        return name if self.placement == "prefix" else f"{name}__p{self.placement}"

    def to_dict(self) -> dict[str, Any]:
        """The parameters as stored in ``run.json`` (JSON types only)."""
        return json.loads(json.dumps({"base": self.base, "dataset": self.dataset, "trigger": self.trigger,
                                      "count": self.count, "seed": self.seed, "rank": self.rank, "task": self.task,
                                      "placement": self.placement, "readout": self.readout,
                                      "train": cfgmod.to_dict(self.train)}))


@dataclass(frozen=True)
class GridConfig:
    """A grid of runs (module docstring). Validated on construction."""

    name: str
    base: str | tuple[str, ...]
    task: str
    dataset: str
    triggers: tuple[str, ...]
    counts: tuple[int, ...]
    seeds: tuple[int, ...]
    ranks: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)
    extra_runs: tuple[dict[str, Any], ...] = ()
    placement: str = "prefix"
    readout: str = "logits"
    eval_batch_size: int = 32
    description: str = ""
    families: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.base, str):
            object.__setattr__(self, "base", (self.base,))
        if not _NAME.fullmatch(self.name):
            raise UsageError(f"name: {short_repr(self.name, 40)} must be 1-64 letters, digits, '.', '_' or '-'")
        tasks = task_names()
        if self.task not in tasks:
            raise UsageError(f"task: unknown task {short_repr(self.task, 40)} (use {', '.join(tasks)})")
        if not self.dataset.strip():
            raise UsageError("dataset: must not be empty")
        if len(self.dataset) > MAX_TEXT_CHARS or len(self.description) > 10_000:
            raise UsageError(f"dataset or description: too long (at most {MAX_TEXT_CHARS} and 10000 characters)")
        for key in ("base", "triggers", "counts", "seeds", "ranks"):
            values = getattr(self, key)
            if not values:
                raise UsageError(f"{key}: the list is empty, so the grid has no runs")
            if len(values) > MAX_RUNS:
                raise UsageError(f"{key}: more than {MAX_RUNS} values")
            dup = _first_duplicate(values)
            if dup is not None:
                raise UsageError(f"{key}: value {short_repr(dup, 42)} is listed twice")
        _check_axis_values({"base": self.base, "trigger": self.triggers, "count": self.counts,
                            "seed": self.seeds, "rank": self.ranks}, "")
        if self.placement not in PLACEMENTS:
            raise UsageError(f"placement: unknown {short_repr(self.placement, 40)} (use {', '.join(PLACEMENTS)})")
        if self.readout not in READOUTS:
            raise UsageError(f"readout: unknown {short_repr(self.readout, 40)} (use {', '.join(READOUTS)})")
        if self.readout == "generate" and not formulation_for(self.task).text_output:
            raise UsageError(f"readout: 'generate' needs task {' or '.join(text_output_tasks())}")
        if not 1 <= self.eval_batch_size <= 4096:
            raise UsageError(f"eval_batch_size: must be in [1, 4096], got {short_repr(self.eval_batch_size)}")
        self.train_config()  # validate the overrides now, not at the first run
        self._check_families()
        if len(self.extra_runs) > MAX_RUNS:
            raise UsageError(f"extra_runs: more than {MAX_RUNS} entries")
        n_runs = _product_size(self._axes())
        for i, entry in enumerate(self.extra_runs):
            n_runs += _product_size(self._extra_axes(entry, f"extra_runs[{i}]"))
        if n_runs > MAX_RUNS:  # counted before any run is built (duplicates included)
            raise UsageError(f"the grid expands to {n_runs} runs, more than {MAX_RUNS}; split it into smaller grids")

    def _check_families(self) -> None:
        if not isinstance(self.families, dict):
            raise UsageError("families: expected a mapping of family name to a list of triggers")
        owner: dict[str, str] = {}
        for name, triggers in self.families.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name == "clean":
                raise UsageError(f"families: {short_repr(name, 40)} must be 1-64 letters, digits, '.', '_' or '-' "
                                 "(and not 'clean')")
            if isinstance(triggers, str) or not isinstance(triggers, (list, tuple)) or not triggers:
                raise UsageError(f"families.{name}: expected a non-empty list of triggers")
            for t in triggers:
                if not isinstance(t, str) or not t.strip() or len(t) > MAX_TEXT_CHARS:
                    raise UsageError(f"families.{name}: {short_repr(t, 40)} is not a trigger string")
                if t in owner:
                    raise UsageError(f"families: trigger {short_repr(t, 40)} is in both {owner[t]} and {name}")
                owner[t] = name
            object.__setattr__(self, "families", {**self.families, name: tuple(triggers)})

    def family_of(self, trigger: str) -> str | None:
        """The family ``families`` puts ``trigger`` in, or None."""
        return next((name for name, triggers in self.families.items() if trigger in triggers), None)

    def train_config(self) -> TrainConfig:
        """The training config shared by every run (before its rank and seed are set)."""
        fixed = sorted({"task", "rank", "seed"} & set(self.train))
        if fixed:
            where = {"task": "task", "rank": "ranks", "seed": "seeds"}[fixed[0]]
            raise UsageError(f"train.{fixed[0]}: set by the grid; use the top-level '{where}' key")
        try:
            cfg = cfgmod.from_dict(TrainConfig, dict(self.train), "train")
        except UsageError as err:
            msg = str(err)
            raise UsageError(msg if msg.startswith("train") else f"train: {msg}") from None
        return dataclasses.replace(cfg, task=self.task)

    def _axes(self) -> dict[str, tuple]:
        return {"base": self.base, "trigger": self.triggers, "count": self.counts, "seed": self.seeds,
                "rank": self.ranks}

    def _extra_axes(self, entry: Any, where: str) -> dict[str, tuple]:
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected a mapping of {', '.join(AXES)}")
        unknown = sorted(set(entry) - set(AXES))
        if unknown:
            raise UsageError(f"{where}: unknown key {short_repr(str(unknown[0]), 40)} (known: {', '.join(AXES)})")
        axes = dict(self._axes())
        for key, value in entry.items():
            values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            if not values:
                raise UsageError(f"{where}.{key}: the list is empty")
            if len(values) > MAX_RUNS:
                raise UsageError(f"{where}.{key}: more than {MAX_RUNS} values")
            axes[key] = values
        _check_axis_values({k: axes[k] for k in entry}, f"{where}.")
        return axes

    def runs(self) -> list[Run]:
        """Every run, in order: seed by seed (so the first seed's curve is complete first),
        then base, trigger, rank, count; then the extra runs. Duplicates appear once."""
        train = self.train_config()
        seen: dict[str, Run] = {}
        blocks = [self._axes()] + [self._extra_axes(e, f"extra_runs[{i}]") for i, e in enumerate(self.extra_runs)]
        for axes in blocks:
            for run in self._product(axes, train):
                seen.setdefault(run.id, run)
        return list(seen.values())

    def _product(self, axes: dict[str, tuple], train: TrainConfig) -> Iterator[Run]:
        for seed, base, trigger, rank, count in itertools.product(
                axes["seed"], axes["base"], axes["trigger"], axes["rank"], axes["count"]):
            cfg = dataclasses.replace(train, rank=rank, seed=seed)
            yield Run(base, self.dataset, trigger, count, cfg, self.placement, self.readout)

    def to_dict(self) -> dict[str, Any]:
        return cfgmod.to_dict(self)


_AXIS_RANGES = {"count": (0, MAX_COUNT, "k"), "seed": (0, MAX_SEED, "seeds"), "rank": (1, MAX_RANK, "rank")}


def _product_size(axes: dict[str, tuple]) -> int:
    n = 1
    for key in AXES:
        n *= len(axes[key])
    return n


def _first_duplicate(values: tuple) -> Any:
    """The first value listed twice (hashable values in linear time; a list is compared)."""
    seen: list = []
    hashed: set = set()
    for v in values:
        try:
            if (type(v), v) in hashed:
                return v
            hashed.add((type(v), v))
        except TypeError:  # unhashable: the type check will refuse it anyway
            if v in seen:
                return v
            seen.append(v)
    return None


def _check_axis_values(axes: dict[str, tuple], prefix: str) -> None:
    for key, values in axes.items():
        name = f"{prefix}{GRID_AXES[key] if not prefix else key}"
        for v in values:
            want = _AXIS_TYPES[key]
            if isinstance(v, bool) or not isinstance(v, want):
                raise UsageError(f"{name}: expected {'a string' if want is str else 'an integer'}, "
                                 f"got {type(v).__name__} {short_repr(v, 40)}")
            if want is str and not v.strip():
                raise UsageError(f"{name}: must not be an empty string")
            if want is str and len(v) > MAX_TEXT_CHARS:
                raise UsageError(f"{name}: longer than {MAX_TEXT_CHARS} characters")
            low, high, what = _AXIS_RANGES.get(key, (None, None, ""))
            if low is not None and v < low:
                raise UsageError(f"{name}: {what} must be >= {low}, got {short_repr(v)}")
            if high is not None and v > high:
                raise UsageError(f"{name}: {what} must be at most {high}, got {short_repr(v)}")


def parse_grid(data: Any, where: str = "grid") -> GridConfig:
    """A grid from a parsed mapping; errors name the file (``where``) and the key."""
    if isinstance(data, dict):
        known = {f.name: f for f in dataclasses.fields(GridConfig)}
        unknown = sorted(str(k) for k in set(data) - set(known))
        if unknown:
            raise UsageError(f"{where}: unknown key {short_repr(unknown[0], 40)} (known: {', '.join(sorted(known))})")
        required = [n for n, f in known.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise UsageError(f"{where}: missing key '{missing[0]}' (required: {', '.join(required)})")
    try:
        return cfgmod.from_dict(GridConfig, data, _TAG)
    except UsageError as err:  # from_dict says "<tag>.key: ..." or "<tag>: ..."; name the file instead
        msg = str(err)
        if msg.startswith(_TAG):
            msg = msg[len(_TAG):].lstrip(".:").lstrip()
        raise UsageError(f"{where}: {msg}") from None


def load_grid(path: str | Path) -> GridConfig:
    """Read a grid file: ``.json`` as JSON, anything else as YAML (a superset of JSON), within
    :data:`BOUNDS` (no YAML aliases, at most ``MAX_FILE_BYTES``; see :mod:`lorascan.bounded`)."""
    path = Path(path)
    data = bounded.load_file(path, "grid config", BOUNDS)
    if data is None:
        raise UsageError(f"{path.name}: the file is empty, so the grid has no runs")
    return parse_grid(data, path.name)
