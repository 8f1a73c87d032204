"""STRIP (Gao et al. 2019) as the paper ran it as a baseline (paper.md §9, nb20), made
trigger-blind: the entropy of an adapter's predictions on injections under perturbation.

The paper: 20 *triggered* injections, each perturbed 10 times by appending " " + a benign text
cut to 200 characters; score = the natural-log entropy of the predicted labels. A scan does not
know the trigger, so here the injections are untriggered: the ``n`` (20) shortest shipped probe
injections the adapter classifies as injections, each perturbed ``k`` (10) times with benign
probe texts drawn by ``Random(seed)``. STRIP's premise is that a backdoored model's predictions
are dominated by its trigger and so resist perturbation (low entropy); without the trigger in
the input, what remains is how easily benign text pulls injections over, which a backdoor
trained to answer "benign" on a cue might change. The paper measured STRIP's AUC at 0.0 in its
intended direction (poisoned entropy higher): a baseline that is expected to fail, reported so.

Scores: ``strip_entropy`` (mean over injections of the binary entropy, nats, of the k
predictions; the decision score, direction ``-`` as STRIP intends) and ``strip_flip_rate``
(share of perturbed injections predicted benign).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from lorascan.config import to_dict
from lorascan.detect.base import Detector, DetectorResult, NotApplicable, ScanContext, check_int_ranges
from lorascan.detect.injections import verification_injections
from lorascan.detect.verdict import verdict

NAME = "strip"
CUT = 200  # characters of each benign text appended (the paper's text[:200])
MIN_N = 4


@dataclass(frozen=True)
class StripConfig:
    n: int = 20
    k: int = 10
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_int_ranges(self, NAME, (("n", MIN_N, 1000), ("k", 2, 1000), ("batch_size", 1, 4096)))


def binary_entropy(p: float) -> float:
    """Entropy in nats of a two-outcome distribution (0 at p = 0 or 1, ln 2 at 0.5)."""
    return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log(p) + (1 - p) * math.log(1 - p))


class StripDetector(Detector):
    """STRIP behind the detector protocol (module docstring)."""

    name = NAME
    tasks = ("seq-cls", "label-word")
    cost = 150  # n x k = 200 short passes
    summary = "the paper's STRIP baseline, trigger-blind: prediction entropy of perturbed injections (§9)"
    decision = ("strip_entropy",)
    direction = "-"

    def __init__(self, n: int = 20, k: int = 10, seed: int = 0, batch_size: int = 64):
        self.config = StripConfig(n, k, seed, batch_size)

    @property
    def args(self) -> dict[str, Any]:
        return to_dict(self.config)

    def scan(self, context: ScanContext, profile: Any = None) -> DetectorResult:
        context.require_model(NAME)
        probes = context.require_probes(NAME)
        clf = context.classifier()
        cfg = self.config
        texts = verification_injections(clf, probes.injections, cfg.n, context.batch_size)
        if len(texts) < MIN_N or not probes.benign:
            raise NotApplicable(f"{NAME}: needs {MIN_N} probe injections the adapter classifies as injections and "
                                "benign probe texts to perturb them with")
        rng = random.Random(cfg.seed)
        perturbed = [f"{t} {rng.choice(probes.benign)[:CUT]}" for t in texts for _ in range(cfg.k)]
        benign = (clf.scores(perturbed, cfg.batch_size) <= 0).reshape(len(texts), cfg.k)
        entropy = [binary_entropy(float(row.mean())) for row in benign]
        scores = {"strip_entropy": float(np.mean(entropy)), "strip_flip_rate": float(benign.mean())}
        ctx = context.model_conditions()
        v = verdict(scores, profile, ctx, hint=f"lorascan scan-calibrate with --detectors {NAME}")
        return DetectorResult(NAME, self.args, scores, v, {"context": ctx, "n_injections": len(texts), "k": cfg.k})
