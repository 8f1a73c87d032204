"""Hand-made inputs for the hardening tests: small safetensors files, a LoRA adapter for
tiny-bert built without training, and a poison data folder with an editable manifest."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


def write_safetensors(path: Path, tensors: dict[str, np.ndarray] | None = None, header: bytes | None = None) -> Path:
    """A valid F32 safetensors file of ``tensors`` (or the raw ``header`` bytes with no data)."""
    if header is None:
        meta, data, at = {}, b"", 0
        for name, arr in (tensors or {}).items():
            raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            meta[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [at, at + len(raw)]}
            data += raw
            at += len(raw)
        header, tail = json.dumps(meta).encode(), data
    else:
        tail = b""
    path.write_bytes(struct.pack("<Q", len(header)) + header + tail)
    return path


def make_adapter(folder: Path, meta: dict | None = None, seed: int = 0) -> Path:
    """A seq-cls LoRA adapter (r=4 on query/value) for tiny-bert with random, non-zero B
    matrices, saved by peft, plus a ``lorascan.json`` (``meta`` None: a plausible one)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lorascan.models.loading import base_fingerprint, load_base, resolve_base

    model, _ = load_base(resolve_base("tiny-bert"), "seq-cls")
    fingerprint = base_fingerprint(model.config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=["query", "value"],
                                                      task_type="SEQ_CLS"))
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.5)
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    if meta is None:
        meta = {"base": "tiny-bert", "task": "seq-cls", "config": {"max_length": 32}, "base_fingerprint": fingerprint}
    (folder / "lorascan.json").write_text(json.dumps(meta))
    return folder


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
