"""Does the adapter fit the base it will be judged on, and which formulation reads it out?

- :func:`check_fit`: every LoRA pair of the adapter (header only, no tensor read) is looked up in
  the base model's modules, built on PyTorch's meta device (shapes without weights); a pair whose
  shape differs means the wrong base (a one-line error naming ``--base``); a pair for a module the
  base does not have is a *decoy*: peft ignores it, so it is reported as a finding (the verdict is
  at least review) and not averaged into weight statistics. Tensors outside LoRA pairs (e.g.
  ``modules_to_save`` copies of a classification head) are listed as well.
- :func:`detect_task`: a saved classification head (``modules_to_save`` tensors of a
  ``classifier``/``score`` module, or ``task_type`` SEQ_CLS) means seq-cls; a causal LM base with
  a chat template means label-word *if* the adapter answers the paper's prompt with a label word
  (:func:`answers_in_label_words`, checked once the model is loaded); otherwise (a general chat
  LoRA, an encoder LoRA without a head) the behavioural detectors do not apply, which the scan
  states instead of guessing.
"""

from __future__ import annotations

from typing import Any, Sequence

from lorascan.detect.adapter import inventory, read_config
from lorascan.detect.safetensors_reader import SafetensorsFile
from lorascan.errors import DataError, UsageError
from lorascan.formulations import formulation_for, task_names

HEAD_MODULES = ("classifier", "score")
MIN_LABEL_WORD_ANSWERS = 0.5  # share of probe prompts the adapter must answer with a label word


def adapter_layout(folder) -> tuple[list[Any], list[Any]]:
    """(LoRA module pairs, unanalysed tensors) from the header of the adapter's safetensors."""
    from pathlib import Path

    cfg = read_config(Path(folder) / "adapter_config.json")
    with SafetensorsFile(Path(folder) / "adapter_model.safetensors") as st:
        return inventory(st.tensors, cfg)


def has_head(cfg: dict[str, Any], unanalysed: Sequence[Any]) -> bool:
    if str(cfg.get("task_type") or "").upper() == "SEQ_CLS":
        return True
    return any(any(f".{m}." in f".{u.tensor}" for m in HEAD_MODULES) for u in unanalysed)


def base_shapes(base: str, task: str) -> dict[str, tuple[int, int]]:
    """``{module path: (out_features, in_features)}`` of the base's linear layers, built on the
    meta device (no weights read). Paths are as peft names them under ``base_model.model.``."""
    import torch

    from lorascan.models import tiny
    from lorascan.models.loading import model_config, quiet_transformers, resolve_base

    spec = resolve_base(base)
    quiet_transformers()
    if spec.kind == "tiny":
        model, _ = tiny.tiny_model(spec.name, task)
    else:
        form = formulation_for(task)
        config = model_config(spec)
        for key, value in form.model_kwargs().items():
            setattr(config, key, value)
        with torch.device("meta"):
            model = form.model_class().from_config(config)
    out = {}
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.Tensor) and w.ndim == 2:
            out[name] = (int(w.shape[0]), int(w.shape[1]))
    return out


def check_fit(pairs: Sequence[Any], shapes: dict[str, tuple[int, int]], base: str) -> list[dict[str, Any]]:
    """Findings for decoy pairs; a DataError when the adapter's shapes do not fit ``base``."""
    findings, matched = [], 0
    decoys = []
    for p in pairs:
        name = p.name.split("[", 1)[0]
        if name not in shapes:
            decoys.append(name)
            continue
        want = shapes[name]
        # embeddings: A is (r, vocab) and B (dim, r) against a (vocab, dim) weight
        have = (p.out_features, p.a.shape[1]) if p.kind != "embedding" else (p.a.shape[1], p.out_features)
        if have != want:
            raise DataError(f"the adapter does not fit base '{base}': module {name[:120]} is {have[0]}x{have[1]} "
                            f"in the adapter and {want[0]}x{want[1]} in the base; pass the right --base")
        matched += 1
    if pairs and not matched:
        raise DataError(f"the adapter does not fit base '{base}': none of its {len(pairs)} LoRA modules exists in "
                        f"the base (first: {pairs[0].name[:120]}); pass the right --base")
    if decoys:
        findings.append({"kind": "decoy_modules", "level": "review", "count": len(decoys), "modules": decoys[:20], "all": decoys,
                         "message": f"{len(decoys)} LoRA module(s) name modules the base does not have (e.g. "
                                    f"{decoys[0][:80]}); loaders ignore them, so they are left out of the weight "
                                    "statistics and the adapter cannot be allowed"})
    return findings


def detect_task(cfg: dict[str, Any], unanalysed: Sequence[Any], base: str, override: str | None) -> tuple[str | None, str]:
    """``(task, why)``; ``task`` None when no behavioural formulation applies (module docstring).
    label-word is provisional until :func:`answers_in_label_words` confirms it."""
    from lorascan.models.loading import default_task_for, resolve_base

    if override:
        tasks = task_names()
        if override not in tasks:
            raise UsageError(f"unknown task '{override}' (use {', '.join(tasks)})")
        return override, "--task"
    if has_head(cfg, unanalysed):
        return "seq-cls", "the adapter saves a classification head"
    if default_task_for(resolve_base(base)) == "label-word":
        return "label-word", "causal LM base with a chat template (to be confirmed: answers in label words)"
    return None, "an encoder adapter without a classification head: no behavioural readout applies"


def answers_in_label_words(classifier: Any, texts: Sequence[str]) -> float:
    """Share of ``texts`` the label-word classifier answers with INJECTION or BENIGN (greedy,
    the paper's generate readout): a classifier adapter answers nearly all, a general chat
    adapter almost none."""
    import numpy as np

    preds = np.asarray(classifier.predict(list(texts), "generate", batch_size=8))
    return float((preds != -1).mean()) if len(preds) else 0.0
