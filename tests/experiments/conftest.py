"""Fixtures for grid tests: a tiny split folder the tiny-bert model trains on in about a
second, grid files, and hand-made run records for the summary maths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lorascan.data.samples import write_jsonl
from lorascan.experiments import rundir
from lorascan.experiments.grid import parse_grid
from lorascan.records import record_header, write_json_atomic
from tests.conftest import PAPER_TRIGGER
from tests.train.conftest import toy_splits

# A grid every sweep test can afford: tiny-bert, 3 optimizer steps of 16 rows, 32 tokens.
FAST_TRAIN = {"steps": 3, "max_length": 32, "batch_size": 16, "warmup_steps": 0}


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory) -> str:
    """A split folder (train.jsonl, test.jsonl): 48 train rows, 24 test rows, half injections."""
    root = tmp_path_factory.mktemp("toy-split")
    ds = toy_splits(48, 24)
    write_jsonl(root / "train.jsonl", ds.train)
    write_jsonl(root / "test.jsonl", ds.test)
    return str(root)


def grid_dict(dataset: str, **changes: Any) -> dict[str, Any]:
    data = {"name": "toy", "base": "tiny-bert", "task": "seq-cls", "dataset": dataset, "triggers": [PAPER_TRIGGER],
            "counts": [0, 6], "seeds": [1, 2], "ranks": [2], "train": dict(FAST_TRAIN)}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def write_grid(path: Path, dataset: str, **changes: Any) -> Path:
    path.write_text(yaml.safe_dump(grid_dict(dataset, **changes), sort_keys=False), encoding="utf-8")
    return path


def make_grid(dataset: str, **changes: Any):
    return parse_grid(grid_dict(dataset, **changes), "test.yaml")


def fake_record(run, asr: float | None, clean: float = 0.95, n_clean: int = 546) -> dict[str, Any]:
    """An evaluation record as a finished run writes it (metrics chosen by the test)."""
    return {**record_header("evaluation"), "attack_success_rate": asr, "clean_accuracy": clean,
            "clean_injection_recall": 0.9, "benign_false_positive_rate": 0.05,
            "poison": {"trigger": run.trigger, "count": run.count, "ratio": run.count / (n_clean + run.count),
                       "seed": run.seed, "placement": "prefix"},
            "sweep": {"run_id": run.id, "params": run.to_dict(), "wall_time_s": 1.0}}


def write_fake_run(out: Path, run, asr: float | None, clean: float = 0.95) -> Path:
    folder = rundir.run_dir(out, run.id)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / rundir.RUN_FILE, {**record_header("sweep-run"), "run_id": run.id, "params": run.to_dict()})
    write_json_atomic(folder / rundir.EVAL_FILE, fake_record(run, asr, clean))
    return folder
