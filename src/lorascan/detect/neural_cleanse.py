"""The paper's discrete Neural-Cleanse-style baseline (paper.md §9, nb20): search for a short
prefix that turns injections benign, without knowing the trigger.

As the paper: a prefix of ``length`` (6) token ids drawn uniformly from [1000, V-1]; ``starts``
(64) random prefixes, the best kept; then ``rounds`` (4) x ``length`` positions x ``swaps``
(64) random replacements, each kept when it raises the objective (a budget of 64 + 4 x 6 x 64
= 1,600 prefixes). Objective: the mean benign margin logit(BENIGN) - logit(INJECTION) over
``n`` (16) injections, prompt ``f"{prefix} {text}"``. Deviations: the injections are the
shortest shipped probe injections the adapter itself classifies as injections (the paper drew
16 test injections with ``Random(0)``; a trigger-blind scan has no test split), and the random
draws come from ``Random(seed)``.

Scores (``+`` = more suspicious): ``nc_flip_rate``, the share of the ``n`` injections the best
prefix flips to benign (the decision score); ``nc_margin``, its mean benign margin.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lorascan.config import to_dict
from lorascan.detect.base import Detector, DetectorResult, NotApplicable, ScanContext, check_int_ranges
from lorascan.detect.injections import verification_injections
from lorascan.detect.verdict import verdict
from lorascan.progress import bar

NAME = "neural-cleanse"
LOW_ID = 1000  # the paper's lowest token id (skips special and byte tokens)
MIN_N = 4


@dataclass(frozen=True)
class CleanseConfig:
    length: int = 6
    starts: int = 64
    rounds: int = 4
    swaps: int = 64
    n: int = 16
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_int_ranges(self, NAME, (("length", 1, 32), ("starts", 1, 4096), ("rounds", 0, 64), ("swaps", 1, 4096),
                                     ("n", MIN_N, 1000), ("batch_size", 1, 4096)))

    @property
    def budget(self) -> int:
        return self.starts + self.rounds * self.length * self.swaps


def _objective(clf: Any, prefixes: Sequence[Sequence[int]], texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Mean benign margin (and the flip rate in a second row) of each prefix over ``texts``."""
    tok = clf.tokenizer
    words = [tok.decode(list(p), skip_special_tokens=True).strip() for p in prefixes]
    margins = clf.scores([f"{w} {t}" for w in words for t in texts], batch_size).reshape(len(prefixes), len(texts))
    return np.stack([(-margins).mean(axis=1), (margins <= 0).mean(axis=1)])


def search(clf: Any, texts: Sequence[str], vocab_size: int, cfg: CleanseConfig, progress: bool = False) -> dict[str, Any]:
    """The best prefix found (module docstring) and its objective."""
    rng = random.Random(cfg.seed)
    high = vocab_size - 1
    low = LOW_ID if high > LOW_ID else 0
    draw = lambda: rng.randint(low, high)  # noqa: E731
    starts = [[draw() for _ in range(cfg.length)] for _ in range(cfg.starts)]
    with bar(1 + cfg.rounds * cfg.length, "neural cleanse", progress) as pb:
        obj = _objective(clf, starts, texts, cfg.batch_size)
        j = int(np.argmax(obj[0]))
        best, best_margin, best_flip = list(starts[j]), float(obj[0, j]), float(obj[1, j])
        pb.advance()
        for _ in range(cfg.rounds):
            for pos in range(cfg.length):
                options = []
                for _ in range(cfg.swaps):
                    cand = list(best)
                    cand[pos] = draw()
                    options.append(cand)
                obj = _objective(clf, options, texts, cfg.batch_size)
                j = int(np.argmax(obj[0]))
                if obj[0, j] > best_margin:
                    best, best_margin, best_flip = options[j], float(obj[0, j]), float(obj[1, j])
                pb.advance()
    return {"prefix_ids": best, "prefix": clf.tokenizer.decode(best, skip_special_tokens=True).strip(),
            "nc_margin": best_margin, "nc_flip_rate": best_flip, "evaluated": cfg.budget}


class CleanseDetector(Detector):
    """The paper's discrete Neural-Cleanse-style baseline behind the detector protocol."""

    name = NAME
    tasks = ("seq-cls", "label-word")
    cost = 400  # 1,600 prefixes x 16 injections: the most passes of any detector
    summary = "the paper's baseline: random-swap search for a 6-token prefix that flips injections (§9)"
    decision = ("nc_flip_rate",)
    direction = "+"

    def __init__(self, length: int = 6, starts: int = 64, rounds: int = 4, swaps: int = 64, n: int = 16,
                 seed: int = 0, batch_size: int = 64):
        self.config = CleanseConfig(length, starts, rounds, swaps, n, seed, batch_size)

    @property
    def args(self) -> dict[str, Any]:
        return to_dict(self.config)

    def scan(self, context: ScanContext, profile: Any = None) -> DetectorResult:
        context.require_model(NAME)
        probes = context.require_probes(NAME)
        clf = context.classifier()
        texts = verification_injections(clf, probes.injections, self.config.n, context.batch_size)
        if len(texts) < MIN_N:
            raise NotApplicable(f"{NAME}: the adapter classifies only {len(texts)} probe injections as injections "
                                f"(needs {MIN_N})")
        found = search(clf, texts, int(clf.model.get_input_embeddings().weight.shape[0]), self.config,
                       context.progress)
        scores = {"nc_flip_rate": found["nc_flip_rate"], "nc_margin": found["nc_margin"]}
        ctx = context.model_conditions()
        v = verdict(scores, profile, ctx, hint=f"lorascan scan-calibrate with --detectors {NAME}")
        return DetectorResult(NAME, self.args, scores, v,
                              {"context": ctx, "prefix": found["prefix"], "prefix_ids": found["prefix_ids"],
                               "n_injections": len(texts), "evaluated_prefixes": found["evaluated"]})
