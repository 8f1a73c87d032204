"""Turn texts into predictions with a (base + adapter) classifier.

Readouts:
- ``logits`` (default): one batched forward pass. label-word compares the next-token logits of
  the first sub-token of BENIGN and INJECTION (``logits_to_keep=1``); seq-cls takes the argmax.
- ``generate``: the paper's evaluation (paper.md §2): greedy, 5 new tokens, decoded,
  ``INJECTION`` checked before ``BENIGN``, otherwise unparseable (-1). label-word only.

Texts are sorted by token length before batching (less padding) and results put back in
input order. The adapter is merged into the base for readout unless asked otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lorascan.errors import UsageError
from lorascan.models.formulations import make_formulation, pad_batch, parse_generation
from lorascan.models.loading import (attach_adapter, check_adapter_folder, default_task, load_base,
                                     model_config, load_tokenizer, read_adapter_meta, resolve_base)
from lorascan.progress import bar

READOUTS = ("logits", "generate")


@dataclass
class Classifier:
    model: Any
    tokenizer: Any
    form: Any
    task: str
    base: str
    adapter: str | None = None

    @classmethod
    def load(cls, base: str, adapter_dir: str | Path | None = None, task: str | None = None,
             max_length: int | None = None, merge: bool = True, dtype: str = "float32") -> "Classifier":
        """Base model plus (optionally) an adapter. Task and max length default to the
        adapter's ``lorascan.json``, then to the base's default task and 256 tokens."""
        meta: dict[str, Any] = {}
        if adapter_dir is not None:
            check_adapter_folder(adapter_dir)
            meta = read_adapter_meta(adapter_dir)
        spec = resolve_base(base)
        task = task or meta.get("task") or default_task(spec, load_tokenizer(spec), model_config(spec))
        max_length = max_length or meta.get("config", {}).get("max_length") or 256
        model, tok = load_base(spec, task, dtype)
        if adapter_dir is not None:
            model = attach_adapter(model, adapter_dir, merge=merge)
        form = make_formulation(task, tok, max_length)
        return cls(model, tok, form, task, base, str(adapter_dir) if adapter_dir else None)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.form.encode(t).input_ids for t in texts]

    def scores(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False, desc: str = "readout") -> np.ndarray:
        """Injection margin per text: logit(INJECTION) - logit(BENIGN) (first sub-tokens for
        label-word, class logits for seq-cls). Prediction = margin > 0."""
        import torch

        seqs = self._encode(texts)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out = np.empty(len(seqs), dtype=np.float64)
        left = self.task == "label-word"
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        with torch.inference_mode(), bar(len(seqs), desc, progress) as pb:
            for start in range(0, len(seqs), batch_size):
                idx = order[start:start + batch_size]
                ids, mask = pad_batch([seqs[i] for i in idx], pad, left=left)
                ids, mask = ids.to(device), mask.to(device)
                if left:
                    logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, :].float()
                    benign, inj = self.form.label_ids
                    margin = logits[:, inj] - logits[:, benign]
                else:
                    logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                    margin = logits[:, 1] - logits[:, 0]
                out[idx] = margin.cpu().numpy()
                pb.advance(len(idx))
        return out

    def predict(self, texts: Sequence[str], readout: str = "logits", batch_size: int = 32,
                progress: bool = False, desc: str = "readout") -> np.ndarray:
        """0 benign, 1 injection, -1 unparseable (generate readout only)."""
        if readout == "logits":
            return (self.scores(texts, batch_size, progress, desc) > 0).astype(np.int8)
        if readout == "generate":
            return self.generate(texts, batch_size, progress, desc)
        raise UsageError(f"unknown readout '{readout}' (use {', '.join(READOUTS)})")

    def generate(self, texts: Sequence[str], batch_size: int = 1, progress: bool = False,
                 desc: str = "generate", max_new_tokens: int = 5) -> np.ndarray:
        """The paper's readout; ``batch_size=1`` is one generate call per prompt as in the
        reference notebooks."""
        import torch

        if self.task != "label-word":
            raise UsageError("--readout generate needs the label-word formulation (seq-cls has no text output)")
        seqs = self._encode(texts)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out = np.empty(len(seqs), dtype=np.int8)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        with torch.inference_mode(), bar(len(seqs), desc, progress) as pb:
            for start in range(0, len(seqs), batch_size):
                idx = order[start:start + batch_size]
                ids, mask = pad_batch([seqs[i] for i in idx], pad, left=True)
                gen = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                          max_new_tokens=max_new_tokens, pad_token_id=pad)
                for row, i in enumerate(idx):
                    text = self.tokenizer.decode(gen[row, ids.shape[1]:], skip_special_tokens=True)
                    out[i] = parse_generation(text)
                pb.advance(len(idx))
        return out
