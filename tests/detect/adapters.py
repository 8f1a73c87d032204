"""Builders of small safetensors files and PEFT adapters for the weight-detector tests
(numpy only), and the naive reference: form B·A in float64 and take its full SVD."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lorascan.detect.synthetic import from_storage, to_storage, write_safetensors

TINY = {"q_proj": (24, 32), "v_proj": (8, 32), "down_proj": (32, 48)}  # (out, in)


def raw_file(path: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    """A safetensors file from a header object (or raw header bytes) and data bytes."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(blob) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + blob + data)
    return path


def make_adapter(folder: Path, *, layers: int = 2, shapes: dict | None = None, rank: int = 4,
                 dtype: str = "F32", seed: int = 0, alpha: float | None = None, extra: dict | None = None,
                 config: dict | None = None, key: str = "base_model.model.model.layers.{l}.{blk}.{p}.{role}.weight",
                 roles: tuple[str, str] = ("lora_A", "lora_B"),
                 scale_b: float = 1e-2, spike: tuple[int, str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a PEFT adapter; returns {module path: (A, B)} as float64 exactly as stored."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    specs, truth = [], {}
    for layer in range(layers):
        for proj, (out_f, in_f) in (TINY if shapes is None else shapes).items():
            blk = "mlp" if proj.endswith(("gate_proj", "up_proj", "down_proj")) else "self_attn"
            a = to_storage(rng.standard_normal((rank, in_f)) / math.sqrt(in_f), dtype)
            b = to_storage(rng.standard_normal((out_f, rank)) * scale_b * (6.0 if spike == (layer, proj) else 1.0), dtype)
            for role, arr in zip(roles, (a, b)):
                specs.append((key.format(l=layer, blk=blk, p=proj, role=role), dtype, arr.shape, lambda arr=arr: arr))
            truth[f"model.layers.{layer}.{blk}.{proj}"] = (from_storage(a, dtype), from_storage(b, dtype))
    for name, (dt, arr) in (extra or {}).items():
        specs.append((name, dt, arr.shape, lambda arr=arr: arr))
    write_safetensors(folder / "adapter_model.safetensors", specs)
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": rank if alpha is None else alpha,
           "base_model_name_or_path": "tiny/base", "target_modules": sorted(TINY if shapes is None else shapes)}
    cfg.update(config or {})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return truth


def naive_module(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> dict[str, Any]:
    """Reference features of ΔW = scale·B·A by forming it (float64, full SVD)."""
    dw = scale * (b @ a)
    r = a.shape[0]
    sv = np.linalg.svd(dw, compute_uv=False)[:r]
    sv = np.concatenate([sv, np.zeros(r - sv.size)])
    p = sv / sv.sum()
    return {"frobN": np.linalg.norm(dw) / math.sqrt(dw.size), "singular_values": sv,
            "spectral_entropy": float(-np.sum(p[p > 0] * np.log(p[p > 0]))),
            "participation_ratio": float(sv.sum() ** 2 / np.sum(sv ** 2)),
            "sv_max_mean": float(sv.max() / sv.mean()), "sv_max_sum": float(sv.max() / sv.sum()),
            "ab_asymmetry": math.log10(np.linalg.norm(b) / np.linalg.norm(a))}
