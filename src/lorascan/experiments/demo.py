"""The demos. ``make demo`` runs :func:`run_scan_demo`: ``lorascan scan`` on two MiniLM adapters
shipped in the repo (``examples/adapters/``: a clean one and one backdoored with the paper's
trigger), the way a user would scan adapters handed to them (no lorascan.json, no data, no
trigger). :func:`pack_adapter` rebuilds those files from freshly trained adapters
(``experiments/demo-adapters.sh``): it keeps only adapter_config.json and the weights, stored
as float16 so each adapter stays under 2 MiB.

:func:`run_demo` (``lorascan demo --train``) is the attack lab end to end: offline-pi -> poison with the paper's trigger at a 4% ratio -> train a LoRA adapter ->
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


DEMO_ADAPTERS = ("minilm-clean", "minilm-rfc-r04")


def pack_adapter(src: str | Path, dst: str | Path) -> Path:
    """A foreign copy of an adapter for the repo: adapter_config.json (base named by its hub
    id, as a downloaded adapter would) and adapter_model.safetensors in float16."""
    import json

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from lorascan.models.adapter_files import check_adapter_folder
    from lorascan.records import atomic_dir

    cfg = check_adapter_folder(src)
    cfg["base_model_name_or_path"] = "sentence-transformers/all-MiniLM-L6-v2"
    tensors = {k: np.ascontiguousarray(v.astype(np.float16)) for k, v in load_file(str(Path(src) / "adapter_model.safetensors")).items()}
    with atomic_dir(dst, force=True) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / "adapter_model.safetensors"))
    return Path(dst)


def run_scan_demo(adapters: str | Path, out: str | Path, progress: bool = True) -> list[dict[str, Any]]:
    """Scan each demo adapter under ``adapters`` into ``out`` (JSON + HTML per adapter)."""
    from lorascan.report.scan import write_reports
    from lorascan.scan.batch import scan_one
    from lorascan.scan.pipeline import ScanConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = ScanConfig(progress=progress)
    results = []
    for name in DEMO_ADAPTERS:
        folder = Path(adapters) / name
        rec = scan_one(str(folder), config)
        paths = {"json": str(out / f"{name}.json"), "html": str(out / f"{name}.html")}
        write_reports(rec, paths if rec["status"] == "ok" else {"json": paths["json"]})
        results.append({"name": name, "record": rec, **paths})
    return results
