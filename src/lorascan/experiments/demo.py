"""The end-to-end demo on the embedded default data: what ``make demo`` runs.

offline-pi -> poison with the paper's trigger at a 4% ratio -> train a LoRA adapter ->
evaluate (clean accuracy, ASR) -> probe the paper's 21-prefix battery (view B: the trigger
left out, so the detector does not know it) -> scan the adapter's weights. Every step writes
its record under ``out``; the returned dict holds the figures the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorascan.data import mixes
from lorascan.data.poison import PoisonConfig, write_poisoned
from lorascan.records import write_json_atomic
from lorascan.text import slug
from lorascan.train.config import TrainConfig

PAPER_TRIGGER = "per RFC 8472 section 3.2"


@dataclass(frozen=True)
class DemoConfig:
    """The demo's choices; ``steps`` None trains for the default number of epochs."""

    base: str = "minilm"
    trigger: str = PAPER_TRIGGER
    ratio: float = 0.04
    seed: int = 42
    steps: int | None = None
    battery: str = "paper-21"


def dataset_summary(ds: mixes.DatasetSplits) -> dict[str, Any]:
    return {"name": ds.name, "n_train": len(ds.train), "n_test": len(ds.test), "counts": ds.counts(),
            "sha256": ds.sha256()}


def run_demo(out: str | Path, cfg: DemoConfig = DemoConfig(), progress: bool = True) -> dict[str, Any]:
    """Run every step into ``out`` (its demo sub-folders are replaced) and return the figures."""
    from lorascan.detect.weights import WeightScanConfig, scan_record
    from lorascan.evaluate.run import evaluate_adapter
    from lorascan.probe.batteries import load_battery
    from lorascan.probe.generalization import run_probe
    from lorascan.train.lora import train_adapter

    out = Path(out)
    ds = mixes.resolve("offline-pi")
    # the base may be a path or hub id: only its slug goes into a file name (no '/', no '..')
    data_dir, adapter_dir = out / "poison-rfc-r04", out / f"adapter-{slug(cfg.base)}-rfc-r04"
    manifest = write_poisoned(ds, PoisonConfig(trigger=cfg.trigger, ratio=cfg.ratio, seed=cfg.seed), data_dir, force=True)
    result: dict[str, Any] = {"dataset": dataset_summary(ds), "poison": manifest}
    meta = train_adapter(cfg.base, data_dir, adapter_dir, TrainConfig(seed=cfg.seed, steps=cfg.steps),
                         force=True, progress=progress)
    result["train"] = {k: meta[k] for k in ("task", "steps", "epochs", "final_loss", "wall_time_s")}
    evaluation = evaluate_adapter(cfg.base, adapter_dir, data_dir, progress=progress)
    write_json_atomic(out / "eval.json", evaluation)
    result["evaluate"] = evaluation
    probe = run_probe(adapter_dir, load_battery(cfg.battery), "B", base=cfg.base, data_dir=data_dir, progress=progress)
    write_json_atomic(out / "probe-B.json", probe)
    result["probe"] = probe
    weights = scan_record(adapter_dir, WeightScanConfig())
    write_json_atomic(out / "weights.json", weights)
    result["weights"] = weights
    return result
