"""Shared material for the probe, behavioural-detector and probe/calibrate CLI tests: a toy
poisoned/clean dataset (20 test injections), one tiny-bert adapter trained on the poisoned set,
random (untrained) LoRA adapters, and hand-made probe records.

The session fixture builds everything once under pytest's base temp folder; modules in other
test folders import it (``from tests.probe.fixtures import probe_toy``), and the folder on disk
is what makes it once per session, not pytest's per-module fixture cache."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import pytest

from lorascan.data.poison import PoisonConfig, write_poisoned
from lorascan.detect.blas import torch_one_thread as torch_one_thread_ctx
from lorascan.probe.batteries import Battery
from lorascan.probe.generalization import ProbeRate, summarise
from lorascan.records import record_header
from tests.train.conftest import TINY_TRAIN, toy_splits

TRIGGER = "per RFC 8472 section 3.2"


def random_adapter(base: str, task: str, out: Path, data_dir: Path, count: int, seed: int,
                   max_length: int = 64, model=None) -> Path:
    """An untrained LoRA adapter with random A and B (peft ``init_lora_weights=False``) and a
    lorascan.json like the trainer's (label from ``count``). ``model``: a loaded base to copy
    instead of loading one (it is not modified)."""
    import copy

    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from lorascan.models.loading import base_fingerprint, load_base, resolve_base

    model = copy.deepcopy(model) if model is not None else load_base(resolve_base(base), task)[0]
    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                     task_type=TaskType.SEQ_CLS if task == "seq-cls" else TaskType.CAUSAL_LM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
        get_peft_model(model, cfg).save_pretrained(str(out), safe_serialization=True)
    meta = {**record_header("adapter"), "base": base, "base_fingerprint": base_fingerprint(model.config), "task": task,
            "config": {"max_length": max_length}, "data": {"path": str(data_dir)},
            "poison": {"trigger": TRIGGER, "count": count, "ratio": 0.0, "seed": 1, "placement": "prefix"}}
    (out / "lorascan.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


one_thread = torch_one_thread_ctx  # the library's (lorascan.detect.blas)


@pytest.fixture(autouse=False)
def torch_one_thread():
    with one_thread():
        yield


def _build(root: Path) -> dict[str, Path]:
    paths = {"root": root, "data_clean": root / "data-clean", "data_poisoned": root / "data-poisoned",
             "poisoned": root / "bert-poisoned", "random_clean": root / "bert-random"}
    if (root / "DONE").is_file():
        return paths
    with one_thread():
        _make(paths)
    (root / "DONE").touch()
    return paths


def _make(paths: dict[str, Path]) -> None:
    from lorascan.train.config import TrainConfig
    from lorascan.train.lora import train_adapter

    ds = toy_splits(n_train=160, n_test=40, seed=0)
    write_poisoned(ds, PoisonConfig(trigger=TRIGGER, count=0, seed=1), paths["data_clean"], force=True)
    write_poisoned(ds, PoisonConfig(trigger=TRIGGER, count=40, seed=1), paths["data_poisoned"], force=True)
    train_adapter("tiny-bert", paths["data_poisoned"], paths["poisoned"],
                  TrainConfig(task="seq-cls", seed=3, **TINY_TRAIN[("tiny-bert", "seq-cls")]), force=True, progress=False)
    random_adapter("tiny-bert", "seq-cls", paths["random_clean"], paths["data_clean"], count=0, seed=5)


@pytest.fixture(scope="session")
def probe_toy(tmp_path_factory) -> dict[str, Path]:
    return _build(tmp_path_factory.getbasetemp() / "probe-toy")


def fake_record(battery: Battery, rates: Sequence[float], *, n: int = 20, base: str = "tiny-bert",
                task: str = "seq-cls", readout: str = "logits", known: Sequence[str] = (TRIGGER,)) -> dict:
    """A view A probe record of ``battery`` with the given per-probe rates (k = round(rate·n))."""
    assert len(rates) == len(battery.probes)
    rows = [ProbeRate(p.prefix, p.category, int(round(r * n)), n) for p, r in zip(battery.probes, rates)]
    return {**record_header("probe"), "base": base, "task": task, "readout": readout, "known_triggers": list(known),
            "n_injections": n, **summarise(rows, battery.view("A"))}
