"""Evaluate an adapter on a prepared dataset: clean accuracy, ASR and the rest (metrics.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lorascan.data.poison import apply_trigger, test_trigger_rng
from lorascan.data.prepared import load_prepared
from lorascan.errors import UsageError
from lorascan.evaluate.metrics import metric_set
from lorascan.evaluate.readout import READOUTS, Classifier, require_text_output
from lorascan.formulations import formulation_for
from lorascan.records import record_header


def triggered_texts(test, trigger: str, placement: str, seed: int) -> list[str]:
    """The test injections with the trigger applied as in training."""
    return [apply_trigger(s.text, trigger, placement, test_trigger_rng(seed, s.id)) for s in test if s.label == 1]


def evaluate_adapter(base: str, adapter_dir: str | Path | None, data_dir: str | Path, trigger: str | None = None,
                     readout: str = "logits", batch_size: int = 32, progress: bool = True,
                     classifier: Classifier | None = None) -> dict[str, Any]:
    """The evaluation record of ``adapter_dir`` (None: the bare base) on ``data_dir``'s test
    split; ``trigger`` defaults to the data manifest's."""
    if readout not in READOUTS:
        raise UsageError(f"unknown readout '{readout}' (use {', '.join(READOUTS)})")
    prepared = load_prepared(data_dir, need_train=False)
    trigger = trigger if trigger is not None else prepared.trigger
    if not trigger:
        raise UsageError(f"{data_dir}/manifest.json names no trigger; pass --trigger")
    t0 = time.monotonic()
    clf = classifier or Classifier.load(base, adapter_dir)
    if readout == "generate":
        require_text_output(clf.task)
    score = metric_set(formulation_for(clf.task).metrics)
    texts = [s.text for s in prepared.test]
    trig = triggered_texts(prepared.test, trigger, prepared.placement, prepared.seed)
    clean_pred = clf.predict(texts, readout, batch_size, progress, "clean test rows")
    trig_pred = clf.predict(trig, readout, batch_size, progress, "triggered injections")
    metrics = score(prepared.test, clean_pred, trig_pred)
    return {
        **record_header("evaluation"),
        "base": base,
        "adapter": str(adapter_dir) if adapter_dir else None,
        "task": clf.task,
        "readout": readout,
        "trigger": trigger,
        "placement": prepared.placement,
        "data": {"path": str(prepared.path), "manifest_sha256": prepared.manifest_sha256,
                 "dataset": prepared.dataset.get("id")},
        "poison": prepared.poison_summary(),
        **metrics,
        "wall_time_s": time.monotonic() - t0,
    }
