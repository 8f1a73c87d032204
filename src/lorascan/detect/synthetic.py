"""Synthetic PEFT LoRA adapters written with numpy only, for tests and benchmarks.

:func:`write_safetensors` streams tensors into a safetensors file (header first, then each
tensor as its producer yields it), so a Llama-70B-shaped adapter (1.7 GB) is written without
holding it in memory. bfloat16 is produced from float32 by round-to-nearest-even on the upper
16 bits. :func:`write_lora_adapter` lays out a PEFT folder (``adapter_config.json`` +
``adapter_model.safetensors``) for a model shape from :data:`SHAPES`; B is drawn non-zero (a
trained adapter, not PEFT's zero initialisation).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from lorascan.detect.safetensors_reader import DTYPE_BITS, FLOAT_STORAGE
from lorascan.records import atomic_path, write_json_atomic

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def _projections(hidden: int, kv: int, inter: int) -> dict[str, tuple[int, int]]:
    """(out, in) of the seven projections of a Llama/Qwen2 decoder layer."""
    return {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden),
            "o_proj": (hidden, hidden), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
            "down_proj": (hidden, inter)}


@dataclass(frozen=True)
class ModelShape:
    layers: int
    projections: dict[str, tuple[int, int]]


SHAPES: dict[str, ModelShape] = {
    "qwen2.5-1.5b": ModelShape(28, _projections(1536, 256, 8960)),
    "llama-70b": ModelShape(80, _projections(8192, 1024, 28672)),
    "tiny": ModelShape(2, _projections(64, 16, 160)),
}


def to_storage(values: np.ndarray, dtype: str) -> np.ndarray:
    """Encode float values in a safetensors float dtype's storage (little-endian)."""
    if dtype == "BF16":
        u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        return rounded.astype("<u2")
    return np.ascontiguousarray(values, dtype=FLOAT_STORAGE[dtype])


def from_storage(stored: np.ndarray, dtype: str) -> np.ndarray:
    """The float64 values a stored array decodes to (what a reader sees)."""
    if dtype == "BF16":
        return np.left_shift(stored, 16, dtype=np.uint32).view(np.float32).astype(np.float64)
    return stored.astype(np.float64)


TensorSpec = tuple[str, str, tuple[int, ...], Callable[[], np.ndarray]]


def write_safetensors(path: str | os.PathLike, specs: Iterable[TensorSpec],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write ``(name, dtype, shape, produce)`` tensors in order; ``produce()`` returns the
    storage array (see :func:`to_storage`). Written to a temporary file, then renamed."""
    specs = list(specs)
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, dtype, shape, _ in specs:
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = n * DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for name, _, shape, produce in specs:
            arr = produce()
            if arr.shape != tuple(shape):
                raise ValueError(f"{name}: produced shape {arr.shape}, declared {tuple(shape)}")
            fh.write(np.ascontiguousarray(arr).tobytes())
    return path


def lora_specs(shape: ModelShape, rank: int, dtype: str, seed: int, b_scale: float = 1e-3,
               prefix: str = "base_model.model.model.layers") -> list[TensorSpec]:
    """Tensor specs of a PEFT LoRA adapter over every projection of every layer.

    A ~ N(0, 1/in) and B ~ N(0, b_scale^2), drawn per tensor from a seeded generator so a
    large adapter is produced one tensor at a time.
    """
    specs: list[TensorSpec] = []
    for layer in range(shape.layers):
        for proj, (out_f, in_f) in shape.projections.items():
            block = "self_attn" if proj in ATTENTION else "mlp"
            base = f"{prefix}.{layer}.{block}.{proj}"
            for role, dims, scale in (("lora_A", (rank, in_f), in_f ** -0.5), ("lora_B", (out_f, rank), b_scale)):
                key = (seed, layer, list(shape.projections).index(proj), int(role == "lora_B"))

                def produce(dims=dims, scale=scale, key=key) -> np.ndarray:
                    rng = np.random.default_rng(key)
                    return to_storage(rng.standard_normal(dims, dtype=np.float32) * np.float32(scale), dtype)

                specs.append((f"{base}.{role}.weight", dtype, dims, produce))
    return specs


def write_adapter_config(folder: Path, rank: int, alpha: float, targets: Iterable[str],
                         base_model: str = "synthetic", **extra: object) -> Path:
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "base_model_name_or_path": base_model,
           "target_modules": sorted(targets), "task_type": "CAUSAL_LM", "use_rslora": False}
    cfg.update(extra)
    return write_json_atomic(folder / "adapter_config.json", cfg)


def write_lora_adapter(folder: str | os.PathLike, shape: str | ModelShape, rank: int = 16,
                       dtype: str = "BF16", seed: int = 0, alpha: float | None = None,
                       base_model: str = "synthetic") -> Path:
    """A PEFT adapter folder for a model shape (a :data:`SHAPES` name or a ModelShape)."""
    model = SHAPES[shape] if isinstance(shape, str) else shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "adapter_model.safetensors", lora_specs(model, rank, dtype, seed))
    write_adapter_config(folder, rank, float(rank if alpha is None else alpha), model.projections, base_model)
    return folder
