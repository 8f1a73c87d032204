"""One causal-patching run (:mod:`lorascan.evaluate.patching`) from a request: the poisoned
adapter, the reference (a clean adapter or the bare base), the trigger and the injections; the
versioned record it writes. Base, task, trigger and placement default to what the poisoned
adapter's lorascan.json records (the base only when it is a packaged alias); every input is
checked before a model loads, so bad input fails at once with one line and writes nothing."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lorascan import config as cfgmod
from lorascan.data.poison import PLACEMENTS, TRIGGER_MAX, apply_trigger, test_trigger_rng
from lorascan.errors import DataError, UsageError
from lorascan.evaluate.patching import Patcher, minima, patch_scan
from lorascan.evaluate.readout import Classifier, readout_settings
from lorascan.models.loading import base_from_metadata, check_adapter_folder, read_adapter_meta, resolve_base
from lorascan.records import record_header
from lorascan.text import short_repr

BASE = "base"  # --reference base: the bare base model
MAX_WINDOW = 1000
MAX_N = 5000


@dataclass(frozen=True)
class PatchConfig:
    """One patching run. ``reference``: a clean adapter folder or ``"base"``. ``base``,
    ``task``, ``trigger`` and ``placement`` default to the poisoned adapter's lorascan.json
    (base: a packaged alias only; placement: else prefix). ``n`` triggered injections drawn
    with ``Random(seed)`` (paper: 30, seed 0); ``window``: layers per window (paper: 4)."""

    poisoned: str
    reference: str
    base: str | None = None
    task: str | None = None
    trigger: str | None = None
    placement: str | None = None
    window: int = 4
    n: int = 30
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name, low, high in (("window", 1, MAX_WINDOW), ("n", 1, MAX_N), ("seed", 0, 2**32 - 1),
                                ("batch_size", 1, 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UsageError(f"patching {name} must be an integer in {low}..{high}, got {short_repr(value)}")
        if not isinstance(self.poisoned, str) or not self.poisoned:
            raise UsageError("give the poisoned adapter folder")
        if not isinstance(self.reference, str) or not self.reference:
            raise UsageError("give a reference: a clean adapter folder or 'base'")
        if self.trigger is not None and (not isinstance(self.trigger, str) or not self.trigger.strip()
                                         or len(self.trigger) > TRIGGER_MAX):
            raise UsageError(f"the trigger must be a non-empty string of at most {TRIGGER_MAX} characters")
        if self.placement is not None and self.placement not in PLACEMENTS:
            raise UsageError(f"unknown placement {short_repr(self.placement, 40)} (use {', '.join(PLACEMENTS)})")


def _meta_poison(meta: dict[str, Any], adapter: str) -> tuple[str | None, str | None]:
    """(trigger, placement) the poisoned adapter's lorascan.json records, checked as data."""
    poison = meta.get("poison") or {}
    trigger, placement = poison.get("trigger"), poison.get("placement")
    if trigger is not None and (not isinstance(trigger, str) or not trigger.strip() or len(trigger) > TRIGGER_MAX):
        raise DataError(f"{adapter}/lorascan.json: poison.trigger must be a non-empty string of at most "
                        f"{TRIGGER_MAX} characters, got {short_repr(trigger)}")
    if placement is not None and placement not in PLACEMENTS:
        raise DataError(f"{adapter}/lorascan.json: unknown poison.placement {short_repr(placement, 40)}")
    return trigger, placement


def resolve(cfg: PatchConfig) -> tuple[PatchConfig, int]:
    """``cfg`` with base, task, trigger and placement filled in (the poisoned adapter's
    lorascan.json, else defaults) and the max length to read with; bad folders, a missing
    base or trigger, or a reference of another task fail here, before any model loads."""
    check_adapter_folder(cfg.poisoned)
    meta = read_adapter_meta(cfg.poisoned)
    ref_meta: dict[str, Any] = {}
    if cfg.reference != BASE:
        if not Path(cfg.reference).is_dir():
            raise DataError(f"reference adapter folder not found: {cfg.reference} (give a clean adapter folder or "
                            f"'{BASE}' for the bare base)")
        check_adapter_folder(cfg.reference)
        ref_meta = read_adapter_meta(cfg.reference)
    base = cfg.base
    if base is None:
        if not meta.get("base"):
            raise UsageError(f"adapter {cfg.poisoned} has no lorascan.json naming its base; pass --base")
        base = base_from_metadata(meta["base"], cfg.poisoned)
    task, max_length = readout_settings(meta, resolve_base(base), cfg.task)
    if ref_meta.get("task") and ref_meta["task"] != task:
        raise UsageError(f"the reference adapter is a {ref_meta['task']} adapter, the poisoned one is read as {task}")
    trigger, placement = _meta_poison(meta, cfg.poisoned)
    trigger = cfg.trigger or trigger
    if not trigger:
        raise UsageError(f"adapter {cfg.poisoned} records no poison trigger (lorascan.json); pass --trigger")
    return dataclasses.replace(cfg, base=base, task=task, trigger=trigger,
                               placement=cfg.placement or placement or "prefix"), max_length


def triggered_injections(injections: Sequence[str], cfg: PatchConfig) -> list[str]:
    """``cfg.n`` injections drawn with ``Random(cfg.seed)``, the trigger placed as the
    poisoning places it (:func:`lorascan.data.poison.apply_trigger`)."""
    if cfg.n > len(injections):
        raise UsageError(f"--n {cfg.n} is more than the {len(injections)} injections of the probe set")
    picks = random.Random(cfg.seed).sample(range(len(injections)), cfg.n)
    return [apply_trigger(injections[i], cfg.trigger or "", cfg.placement or "prefix",
                          test_trigger_rng(cfg.seed, f"patch:{i}")) for i in picks]


def load_pair(cfg: PatchConfig, max_length: int) -> tuple[Classifier, Classifier]:
    """The poisoned and the reference classifier, each adapter on its own base copy, unmerged."""
    poisoned = Classifier.load(cfg.base or "", cfg.poisoned, cfg.task, max_length, merge=False)
    ref_dir = None if cfg.reference == BASE else cfg.reference
    reference = Classifier.load(cfg.base or "", ref_dir, cfg.task, max_length, merge=False)
    return poisoned, reference


def patching_record(cfg: PatchConfig, max_length: int, patcher: Patcher, result: dict[str, Any],
                    injections: dict[str, Any]) -> dict[str, Any]:
    """The versioned record of one patching run (``result`` from :func:`patch_scan`)."""
    t = patcher.targets
    labels = t.labels()
    starts = list(range(t.layers - cfg.window + 1))
    asr = {(c["type"], c["start"]): c["asr"] for c in result["cells"]}
    return {
        **record_header("patching"),
        "config": cfgmod.to_dict(cfg),
        "max_length": max_length,
        "injections": {**injections, "n": cfg.n, "seed": cfg.seed},
        "layers": t.layers,
        "window": cfg.window,
        "window_starts": starts,
        "types": [{"type": typ, "label": labels[typ], "layers": sorted(i for (ty, i) in t.cells if ty == typ)}
                  for typ in t.types],
        "heatmap": {"rows": list(t.types), "columns": starts,
                    "asr": [[asr[(typ, s)] for s in starts] for typ in t.types]},
        "minimum": minima(result["cells"], t.types),
        **result,
    }


def run_patching(cfg: PatchConfig, injections: Sequence[str], injections_info: dict[str, Any] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Resolve ``cfg``, load both models, patch every window (:func:`patch_scan`); the record."""
    t0 = time.monotonic()
    cfg, max_length = resolve(cfg)
    texts = triggered_injections(injections, cfg)
    poisoned, reference = load_pair(cfg, max_length)
    load_s = time.monotonic() - t0
    patcher = Patcher(poisoned, reference, texts, cfg.batch_size)
    result = patch_scan(patcher, cfg.window, progress)
    result["timings"] = {**result["timings"], "load_s": load_s, "wall_time_s": time.monotonic() - t0}
    return patching_record(cfg, max_length, patcher, result, dict(injections_info or {}))
