"""Causal patching (paper.md §10, nb21): which LoRA modules carry a backdoor.

For each projection type and each window of ``W`` consecutive layers (start 0..L-W), the
poisoned adapter reads triggered injections with the outputs of that window's modules of that
type replaced by the reference's outputs for the same inputs: a clean adapter's, or the bare
base's. The attack success rate (ASR: triggered injections classified benign / triggered
injections) of each patched run says how much of the backdoor the window carries. The paper
(bf16 Qwen2.5-1.5B, 30 triggered injections, 4-layer windows) measured ASR .733 unpatched and
minima of .033 (down_proj, layers 18-21), .10 (gate_proj, 17-20) and .467 (v_proj, 20-23).

A projection type is the path of a LoRA-wrapped module inside its layer, e.g.
``self_attn.q_proj`` or ``mlp.down_proj`` (Llama), ``attention.self.query`` or
``intermediate.dense`` (BERT), for the modules either adapter wraps.

How (issue 13): both adapters are loaded on their own copy of the base and not merged (a base
reference is the plain base). The reference first reads the injections with forward hooks
that keep its modules' outputs, call by call; the poisoned model then reads the same texts with
forward hooks returning the kept outputs in the same order. Both read through the same
:meth:`lorascan.evaluate.readout.Classifier.scores` (length-sorted batches, the same padding,
the shared chat-template prefix run once for label-word, the two-row label head), so the n-th
call of a module is the same batch in both runs; each kept tensor is checked against the shape
the poisoned module produced and every kept output must be used, so runs that diverge fail
rather than mix up prompts. Both classifiers read one injection without hooks first, so the
decisions a classifier takes once (the label-head check, which runs extra passes) are taken
before any hook counts calls. The prefix pass is patched like the rest: its positions get the
reference's outputs for the prefix, as every prompt's prefix would in a run without sharing.

Beside the heatmap (LoRA modules inside the layer stack): modules outside it (a BERT pooler,
modules_to_save such as a seq-cls classification head) are each patched alone (a head whose
output is the logits gives the reference's ASR by construction), and a full substitution
patches every module either adapter changes; it must reproduce the reference's own margins,
stored as ``max_abs_margin_diff`` (a check on every record). Requests, defaults and the
record: :mod:`lorascan.evaluate.patching_run`.

Deviations from the paper: the injections are drawn with ``Random(seed)`` (the paper's 0) from
a probe set (by default the shipped ``offline-pi-v1``), not from the adapter's test split; a
seq-cls base reference has an untrained (seeded random) head, so its own ASR and the
head-alone patch mean little there; the windows keep the poisoned head.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from lorascan.errors import DataError, UsageError
from lorascan.evaluate.metrics import rate
from lorascan.evaluate.readout import Classifier
from lorascan.progress import bar
from lorascan.text import short_repr

PEFT_PREFIX = "base_model.model."
_LAYERED = re.compile(r"^(?P<stack>.*?)\.(?P<layer>\d+)\.(?P<rel>.+)$")  # the first numbered segment is the layer


@dataclass(frozen=True)
class Targets:
    """The modules patching replaces, by their path in the base model: ``cells`` maps
    (type, layer) to a path for LoRA modules inside the layer stack of ``layers`` layers,
    ``extras`` are the other modules either adapter changes (outside the stack, saved heads)."""

    layers: int
    types: tuple[str, ...]
    cells: dict[tuple[str, int], str]
    extras: tuple[str, ...]

    def paths(self, types: Sequence[str] | None = None, layers: range | None = None) -> list[str]:
        return [p for (t, i), p in self.cells.items()
                if (types is None or t in types) and (layers is None or i in layers)]

    def everything(self) -> list[str]:
        return self.paths() + list(self.extras)

    def labels(self) -> dict[str, str]:
        """Short names: the last part of each type when that is unambiguous, else the path."""
        last = [t.rsplit(".", 1)[-1] for t in self.types]
        return {t: s if last.count(s) == 1 else t for t, s in zip(self.types, last)}


def _adapter_paths(model) -> tuple[list[str], list[str]]:
    """(LoRA-wrapped paths, modules_to_save paths) of a PEFT model, in module order, without
    the PEFT prefix; a LoRA module inside a saved module is covered by it."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    lora: list[str] = []
    saved: list[str] = []
    for name, module in model.named_modules():
        path = name.removeprefix(PEFT_PREFIX)
        if any(path.startswith(s + ".") for s in saved):
            continue
        if isinstance(module, ModulesToSaveWrapper):
            saved.append(path)
        elif isinstance(module, LoraLayer):
            lora.append(path)
    return lora, saved


def submodule(model, path: str):
    """The module at ``path`` (a base-model path) of a PEFT model or a plain one."""
    from peft import PeftModel

    return model.get_submodule(PEFT_PREFIX + path if isinstance(model, PeftModel) else path)


def find_targets(poisoned_model, reference_model) -> Targets:
    """The union of both adapters' modules (the reference's are none for a bare base),
    grouped into the layer stack's (type, layer) cells and the rest."""
    from peft import PeftModel

    lora, saved = _adapter_paths(poisoned_model)
    if isinstance(reference_model, PeftModel):
        ref_lora, ref_saved = _adapter_paths(reference_model)
        lora += [p for p in ref_lora if p not in lora]
        saved += [p for p in ref_saved if p not in saved]
    if not lora:
        raise DataError("the poisoned adapter wraps no module with LoRA; there is nothing to patch")
    cells: dict[tuple[str, int], str] = {}
    types: list[str] = []
    stacks = set()
    extras = []
    for path in lora:
        m = _LAYERED.match(path)
        if m is None:
            extras.append(path)
            continue
        stacks.add(m["stack"])
        cells[(m["rel"], int(m["layer"]))] = path
        if m["rel"] not in types:
            types.append(m["rel"])
    if len(stacks) != 1:
        raise DataError(f"patching needs the LoRA modules in one layer stack, found {len(stacks)} "
                        f"({', '.join(sorted(short_repr(s, 60) for s in stacks)) or 'none'})")
    config = getattr(poisoned_model, "config", None)
    layers = getattr(config, "num_hidden_layers", None) or 1 + max(i for _, i in cells)
    return Targets(int(layers), tuple(types), cells, tuple(extras + saved))


def _tensor(out: Any, path: str):
    import torch

    if not isinstance(out, torch.Tensor):
        raise DataError(f"module {short_repr(path, 80)} returns a {type(out).__name__}, not a tensor; "
                        "patching replaces tensor outputs only")
    return out


@contextlib.contextmanager
def _hooks(model, hooks: dict[str, Any]) -> Iterator[None]:
    handles = [submodule(model, path).register_forward_hook(fn) for path, fn in hooks.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class Patcher:
    """Reads ``texts`` with the poisoned classifier, some of its modules' outputs replaced by
    those the reference classifier produced on the same texts (module docstring)."""

    def __init__(self, poisoned: Classifier, reference: Classifier, texts: Sequence[str], batch_size: int = 32):
        self.poisoned, self.reference = poisoned, reference
        self.texts, self.batch_size = list(texts), batch_size
        if [poisoned.form.encode(t).input_ids for t in self.texts] != \
                [reference.form.encode(t).input_ids for t in self.texts]:
            raise DataError("the poisoned and reference models tokenize the injections differently; "
                            "patching needs the same base and task for both")
        self.targets = find_targets(poisoned.model, reference.model)
        self._warm = False

    def margins(self, clf: Classifier) -> np.ndarray:
        """Unpatched injection margins (>0: injection) of ``clf``."""
        return clf.scores(self.texts, self.batch_size)

    def _warm_up(self) -> None:
        """One unhooked read by each classifier, so what a classifier decides once (the label-head
        check, which runs extra passes) is decided before hooks count calls."""
        if not self._warm:
            for clf in (self.poisoned, self.reference):
                clf.scores(self.texts[:1], 1)
            self._warm = True

    def record(self, paths: Sequence[str]) -> tuple[dict[str, list], np.ndarray]:
        """The reference's outputs of ``paths``, call by call, and its margins."""
        self._warm_up()
        kept: dict[str, list] = {p: [] for p in paths}

        def keep(path):
            return lambda module, args, out: kept[path].append(_tensor(out, path).detach().clone())

        with _hooks(self.reference.model, {p: keep(p) for p in paths}):
            margins = self.margins(self.reference)
        return kept, margins

    def replay(self, kept: dict[str, list], paths: Sequence[str]) -> np.ndarray:
        """The poisoned model's margins with the outputs of ``paths`` replaced by ``kept``."""
        self._warm_up()
        used = {p: 0 for p in paths}

        def swap(path):
            def hook(module, args, out):
                i = used[path]
                out = _tensor(out, path)
                if i >= len(kept[path]) or kept[path][i].shape != out.shape:
                    raise DataError(f"patching: the reference and poisoned runs diverged at {short_repr(path, 80)} "
                                    f"(call {i + 1}); they must batch the same texts the same way")
                used[path] = i + 1
                return kept[path][i].clone()
            return hook

        with _hooks(self.poisoned.model, {p: swap(p) for p in paths}):
            margins = self.margins(self.poisoned)
        short = [p for p in paths if used[p] != len(kept[p])]
        if short:
            raise DataError(f"patching: {short_repr(short[0], 80)} ran {used[short[0]]} times in the poisoned run, "
                            f"{len(kept[short[0]])} in the reference run")
        return margins


def _cell(margins: np.ndarray, **where: Any) -> dict[str, Any]:
    k = int((margins <= 0).sum())  # predicted benign: the readout's prediction is margin > 0
    return {**where, **rate("asr", k, len(margins)), "mean_margin": float(margins.mean())}


def patch_scan(patcher: Patcher, window: int, progress: bool = False) -> dict[str, Any]:
    """Every (type, window) cell, the modules outside the stack one by one, and the full
    substitution; with the unpatched and the reference's own results and wall times."""
    t = patcher.targets
    if window > t.layers:
        raise UsageError(f"--window {window} is larger than the model's {t.layers} layers")
    starts = range(t.layers - window + 1)
    t0 = time.monotonic()
    unpatched = patcher.margins(patcher.poisoned)
    reference = patcher.margins(patcher.reference)
    cells, extras, run_s = [], [], []
    with bar(len(t.types) * len(starts) + len(t.extras) + 1, "patching", progress) as pb:
        for typ in t.types:
            kept, _ = patcher.record(t.paths([typ]))
            for s in starts:
                r0 = time.monotonic()
                m = patcher.replay(kept, t.paths([typ], range(s, s + window)))
                run_s.append(time.monotonic() - r0)
                cells.append(_cell(m, type=typ, start=s, end=s + window - 1))
                pb.advance(1, f"{typ} {s}-{s + window - 1}: ASR {cells[-1]['asr']:.3f}")
        kept, _ = patcher.record(t.everything())
        for path in t.extras:
            extras.append(_cell(patcher.replay(kept, [path]), module=path))
            pb.advance(1)
        full = patcher.replay(kept, t.everything())
        pb.advance(1)
    return {"unpatched": _cell(unpatched), "reference": _cell(reference), "cells": cells, "extras": extras,
            "full_substitution": {**_cell(full), "max_abs_margin_diff": float(np.abs(full - reference).max())},
            "margins": {"unpatched": unpatched.tolist(), "reference": reference.tolist(), "full": full.tolist()},
            "timings": {"total_s": time.monotonic() - t0, "patched_runs": len(run_s),
                        "per_run_s": float(np.mean(run_s)) if run_s else None}}


def minima(cells: Sequence[dict[str, Any]], types: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per type the window of lowest ASR; ties go to the higher mean margin (the injections
    pushed furthest back to injection), then the earlier start."""
    out = {}
    for typ in types:
        rows = [c for c in cells if c["type"] == typ]
        if rows:
            best = min(rows, key=lambda c: (c["asr"], -c["mean_margin"], c["start"]))
            out[typ] = {k: best[k] for k in ("asr", "asr_k", "asr_n", "start", "end", "mean_margin")}
    return out
