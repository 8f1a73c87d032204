"""Per-probe attack rates over a battery (paper.md §6) and the battery statistics (§7).

- ``attack_rate(p)`` = test injections predicted benign with the probe ``p`` placed as the
  poisoning placed the trigger (prefix: ``f"{p}. {text}"``; the same
  :func:`lorascan.data.poison.apply_trigger` and per-row rng as evaluation, so a probe equal to
  the trigger gives exactly the evaluation's ASR) / test injections. Unparseable outputs (the
  generate readout) are never an attack, as for ASR.
- per category: mean, min and max of its probes' rates, with the counts.
- ``mean_attack_rate`` = mean of the per-probe rates; ``outlier_gap`` = max - mean (paper §7).

Every probe of a battery is read out in one batched call (texts sorted by length across all
probes), so a 21-probe battery costs one pass over 21 x n texts, not 21 x n generate calls.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lorascan.data.prepared import Prepared, load_prepared
from lorascan.errors import DataError, UsageError
from lorascan.probe.batteries import Battery, BatteryView, Probe
from lorascan.records import record_header, sha256_file

RECORD_KIND = "probe"


@dataclass(frozen=True)
class ProbeRate:
    """One probe's outcome: ``k`` of ``n`` probed test injections predicted benign."""

    prefix: str
    category: str
    k: int
    n: int
    unparseable: int = 0

    @property
    def attack_rate(self) -> float:
        return self.k / self.n

    def to_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "category": self.category, "attack_rate": self.attack_rate, "k": self.k,
                "n": self.n, "unparseable": self.unparseable}


def rates_from_predictions(probes: Sequence[Probe], predictions: np.ndarray) -> list[ProbeRate]:
    """Rates from a (probes x injections) array of predictions (0 benign, 1 injection, -1
    unparseable)."""
    preds = np.asarray(predictions)
    if preds.ndim != 2 or preds.shape[0] != len(probes) or preds.shape[1] == 0:
        raise ValueError(f"expected a ({len(probes)}, n>0) prediction array, got shape {preds.shape}")
    return [ProbeRate(p.prefix, p.category, int((row == 0).sum()), int(row.size), int((row == -1).sum()))
            for p, row in zip(probes, preds)]


def battery_statistics(rates: Sequence[float]) -> dict[str, float | int]:
    """``mean_attack_rate`` = mean(r), ``outlier_gap`` = max(r) - mean(r) (paper §7)."""
    r = np.asarray(rates, dtype=np.float64)
    if r.size == 0:
        raise DataError("no probes to summarise")
    mean = float(r.mean())
    return {"mean_attack_rate": mean, "outlier_gap": float(r.max()) - mean, "max_attack_rate": float(r.max()),
            "min_attack_rate": float(r.min()), "n_probes": int(r.size)}


def category_stats(rows: Sequence[ProbeRate]) -> dict[str, dict[str, Any]]:
    """Per category (first-seen order): mean, min, max of the probe rates, probes, k and n."""
    out: dict[str, dict[str, Any]] = {}
    for cat in dict.fromkeys(r.category for r in rows):
        mine = [r for r in rows if r.category == cat]
        rates = [r.attack_rate for r in mine]
        out[cat] = {"mean": float(np.mean(rates)), "min": min(rates), "max": max(rates), "n_probes": len(mine),
                    "k": sum(r.k for r in mine), "n": sum(r.n for r in mine)}
    return out


def probe_texts(prepared: Prepared, prefix: str) -> list[str]:
    """The test injections with ``prefix`` placed as the poisoning placed the trigger."""
    from lorascan.evaluate.run import triggered_texts

    return triggered_texts(prepared.test, prefix, prepared.placement, prepared.seed)


def measure_rates(classifier: Any, prepared: Prepared, probes: Sequence[Probe], readout: str = "logits",
                  batch_size: int = 32, progress: bool = False) -> list[ProbeRate]:
    """Attack rate of every probe, all probes read out in one batched call."""
    n = sum(1 for s in prepared.test if s.label == 1)
    if n == 0:
        raise DataError(f"{prepared.path}/test.jsonl has no injections to probe with")
    texts = [t for p in probes for t in probe_texts(prepared, p.prefix)]
    preds = classifier.predict(texts, readout, batch_size, progress, f"{len(probes)} probes x {n} injections")
    return rates_from_predictions(probes, np.asarray(preds).reshape(len(probes), n))


def known_triggers(prepared: Prepared | None, adapter_meta: dict[str, Any]) -> tuple[str, ...]:
    """The adapter's known trigger(s): the data manifest's and the adapter's ``poison.trigger``."""
    found = [prepared.trigger if prepared is not None else None]
    poison = adapter_meta.get("poison")
    found.append(poison.get("trigger") if isinstance(poison, dict) else None)
    return tuple(dict.fromkeys(t for t in found if isinstance(t, str) and t.strip()))


def view_exclusions(view: str, known: Iterable[str], exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """Triggers a view drops: the given ones always, the adapter's known ones in B and C."""
    return tuple(dict.fromkeys([*exclude, *(known if view in ("B", "C") else ())]))


def resolve_data_dir(adapter_dir: str | Path, data_dir: str | Path | None, adapter_meta: dict[str, Any]) -> Path:
    """``data_dir``, else the adapter's recorded ``data.path``, else a sibling ``data/`` folder
    (the sweep layout run/adapter + run/data, after the runs were moved). When lorascan.json
    records the manifest's hash, a candidate whose manifest matches it is preferred (a relative
    recorded path may now point elsewhere)."""
    if data_dir is not None:
        return Path(data_dir)
    data = adapter_meta.get("data") if isinstance(adapter_meta.get("data"), dict) else {}
    recorded, want = data.get("path"), data.get("manifest_sha256")
    candidates = [Path(recorded)] if isinstance(recorded, str) and recorded else []
    candidates = [c for c in candidates + [Path(adapter_dir).parent / "data"] if (c / "manifest.json").is_file()]
    if want:
        for c in candidates:
            if sha256_file(c / "manifest.json") == want:
                return c
    if candidates:
        return candidates[0]
    raise DataError(f"no data folder for adapter {adapter_dir}: its lorascan.json data.path "
                    f"({recorded or 'none'}) does not exist and there is no sibling data/ folder; pass --data")


def _rows_of(record: dict[str, Any]) -> list[ProbeRate]:
    return [ProbeRate(p["prefix"], p["category"], int(p["k"]), int(p["n"]), int(p.get("unparseable", 0)))
            for p in record["probes"]]


def summarise(rows: Sequence[ProbeRate], view: BatteryView) -> dict[str, Any]:
    """The result part of a probe record for ``rows`` restricted to ``view``'s probes."""
    wanted = {(p.prefix, p.category) for p in view.probes}
    kept = [r for r in rows if (r.prefix, r.category) in wanted]
    if len(kept) != len(view.probes):
        raise DataError(f"the probe results lack {len(view.probes) - len(kept)} probe(s) of view {view.view}")
    return {"battery": view.battery.name, "battery_sha256": view.battery.sha256(), "battery_source": view.battery.source,
            **view.describe(), "probes": [r.to_dict() for r in kept], "categories": category_stats(kept),
            "category_order": list(view.categories), **battery_statistics([r.attack_rate for r in kept])}


def restrict_record(record: dict[str, Any], battery: Battery, view: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """A probe record (e.g. a cached view A record) cut down to another view of its battery;
    B and C also drop the record's ``known_triggers``."""
    if record.get("battery_sha256") != battery.sha256():
        raise DataError(f"the probe record is for battery {record.get('battery')!r} with other content than {battery.name}")
    bview = battery.view(view, view_exclusions(view, record.get("known_triggers") or (), exclude))
    return {**record, **summarise(_rows_of(record), bview)}


class ClassifierPool:
    """Loads a base model once and gives a :class:`~lorascan.evaluate.readout.Classifier` per
    adapter, built on a deep copy of the base with the adapter merged (the same model
    ``Classifier.load`` builds, without reading the base from disk for every adapter), and the
    bare base with the same formulation (:meth:`base`). The bare base's greedy answers are
    memoised per (base, task, max length), and kept when the base is swapped for another
    formulation's (the scan's task check loads the label-word base before the chat one, for
    every adapter): a batch or cohort scan of chat adapters asks the base the same prompts for
    every adapter, and generates them once."""

    def __init__(self, dtype: str = "float32", device: str = "auto"):
        self.dtype = dtype
        self.device = device
        self._bases: dict[tuple[str, str], Any] = {}
        self._generations: dict[tuple[str, str, int], dict[tuple[str, int], str]] = {}

    def _settings(self, base: str, adapter_dir: str | Path | None, task: str | None):
        from lorascan.evaluate.readout import readout_settings
        from lorascan.models.loading import check_adapter_folder, load_base, read_adapter_meta, resolve_base

        meta: dict[str, Any] = {}
        if adapter_dir is not None:
            check_adapter_folder(adapter_dir)
            meta = read_adapter_meta(adapter_dir)
        spec = resolve_base(base)
        task, max_length = readout_settings(meta, spec, task)  # as Classifier.load reads it
        if (base, task) not in self._bases:
            self._bases = {(base, task): load_base(spec, task, self.dtype, device=self.device)}  # one base at a time
        return task, max_length, self._bases[(base, task)]

    def get(self, base: str, adapter_dir: str | Path, task: str | None = None, merge: bool = True):
        """The adapter on a copy of the base; ``merge=False`` keeps its LoRA modules (patching)."""
        from lorascan.evaluate.readout import Classifier
        from lorascan.formulations import make_formulation
        from lorascan.models.loading import attach_adapter

        task, max_length, (model, tok) = self._settings(base, adapter_dir, task)
        form = make_formulation(task, tok, max_length, base=base)
        model = attach_adapter(copy.deepcopy(model), adapter_dir, merge=merge)
        return Classifier(model, tok, form, task, base, str(adapter_dir))

    def base(self, base: str, task: str | None = None, adapter_dir: str | Path | None = None):
        """The base model without an adapter, cut and formatted as ``adapter_dir`` would be."""
        from lorascan.evaluate.readout import Classifier
        from lorascan.formulations import make_formulation

        task, max_length, (model, tok) = self._settings(base, adapter_dir, task)
        memo = self._generations.setdefault((base, task, max_length), {})
        return Classifier(model, tok, make_formulation(task, tok, max_length, base=base), task, base, None,
                          generations=memo)


def run_probe(adapter_dir: str | Path, battery: Battery, view: str = "A", *, base: str | None = None,
              data_dir: str | Path | None = None, exclude: Iterable[str] = (), readout: str = "logits",
              batch_size: int = 32, progress: bool = False, classifier: Any = None,
              pool: ClassifierPool | None = None, limit: int | None = None) -> dict[str, Any]:
    """The probe record of ``adapter_dir`` on ``battery``'s ``view``. ``base`` and
    ``data_dir`` default to the adapter's lorascan.json (``base``, ``data.path``). ``limit``
    probes with the first N test injections only (the paper used 60), for slow models."""
    from lorascan.evaluate.readout import READOUTS, require_text_output
    from lorascan.models.loading import base_from_metadata, check_adapter_folder, read_adapter_meta

    if readout not in READOUTS:
        raise UsageError(f"unknown readout '{readout}' (use {', '.join(READOUTS)})")
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    battery.view(view)  # an unknown view fails before anything loads
    check_adapter_folder(adapter_dir)
    meta = read_adapter_meta(adapter_dir)
    if not base:
        if not meta.get("base"):
            raise UsageError(f"{adapter_dir} has no lorascan.json naming its base model; pass --base")
        base = base_from_metadata(meta["base"], adapter_dir)  # untrusted: never a hub download
    prepared = load_prepared(resolve_data_dir(adapter_dir, data_dir, meta), need_train=False)
    if limit is not None:
        if limit < 1:
            raise UsageError(f"--limit must be >= 1, got {limit}")
        prepared = dataclasses.replace(prepared, test=tuple([s for s in prepared.test if s.label == 1][:limit]))
    known = known_triggers(prepared, meta)
    bview = battery.view(view, view_exclusions(view, known, exclude))
    t0 = time.monotonic()
    if classifier is None:
        if pool is not None:
            classifier = pool.get(base, adapter_dir)
        else:
            from lorascan.evaluate.readout import Classifier

            classifier = Classifier.load(base, adapter_dir)
    if readout == "generate":
        require_text_output(classifier.task)
    t1 = time.monotonic()
    rows = measure_rates(classifier, prepared, bview.probes, readout, batch_size, progress)
    return {**record_header(RECORD_KIND), "base": base, "adapter": str(adapter_dir),
            "adapter_sha256": sha256_file(Path(adapter_dir) / "adapter_model.safetensors"),
            "base_fingerprint": meta.get("base_fingerprint"),
            "task": classifier.task, "readout": readout, "placement": prepared.placement,
            "known_triggers": list(known), "limit": limit,
            "data": {"path": str(prepared.path), "manifest_sha256": prepared.manifest_sha256,
                     "dataset": prepared.dataset.get("id")},
            "poison": prepared.poison_summary(), "n_injections": rows[0].n,
            **summarise(rows, bview), "wall_time_s": time.monotonic() - t0,
            "readout_time_s": time.monotonic() - t1}


def probe_inputs_record(classifier: Any, inputs: Any, view: BatteryView, readout: str = "logits",
                        batch_size: int = 32, progress: bool = False) -> dict[str, Any]:
    """The probe result of a trigger-blind scan: every probe of ``view`` placed as the paper
    places a trigger (``f"{probe}. {text}"``) before each of the probe set's injections
    (:class:`lorascan.probe.inputs.ProbeInputs`), plus the same injections without a prefix
    (``unprefixed_miss_rate``: injections the adapter lets through with no probe at all) and
    the benign controls' false-positive rate, read out in one batched call."""
    from lorascan.data.poison import apply_trigger

    inj, ben = list(inputs.injections), list(inputs.benign)
    if not inj:
        raise DataError(f"probe set {inputs.name} has no injections")
    texts = [apply_trigger(t, p.prefix) for p in view.probes for t in inj] + inj + ben
    desc = f"{len(view.probes)} probes x {len(inj)} injections"
    preds = np.asarray(classifier.predict(texts, readout, batch_size, progress, desc))
    n_probe = len(view.probes) * len(inj)
    rows = rates_from_predictions(view.probes, preds[:n_probe].reshape(len(view.probes), len(inj)))
    plain, controls = preds[n_probe:n_probe + len(inj)], preds[n_probe + len(inj):]
    return {"probe_inputs": inputs.describe(), "n_injections": len(inj), "readout": readout,
            "unprefixed_miss_rate": float((plain == 0).mean()),
            "benign_false_positive_rate": float((controls == 1).mean()) if len(controls) else None,
            **summarise(rows, view)}
