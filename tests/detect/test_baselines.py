"""The paper's two baselines (issue 12; paper.md §9): the discrete Neural-Cleanse-style prefix
search and trigger-blind STRIP, on tiny-bert with rigged readouts (exact expected values)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lorascan.detect.base import ScanContext
from lorascan.detect.neural_cleanse import CleanseConfig, CleanseDetector
from lorascan.detect.strip import StripDetector, binary_entropy
from lorascan.errors import UsageError
from lorascan.probe.inputs import ProbeInputs
from tests.detect.test_tokens import INJECTIONS, write_keyed_adapter
from tests.probe.fixtures import torch_one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("torch_one_thread")
BENIGN = ("what is the weather today", "tell me a joke about cats", "how tall is the eiffel tower")


class RiggedPrefix:
    """Margin of ``"{prefix} {injection}"``: 2 minus the prefix's words starting with ``letter``
    (two such words flip it); perturbations (benign text appended) flip when they mention the
    weather. Texts that are a bare injection stay injections (margin 2)."""

    def __init__(self, real, letter="s"):
        self.real, self.letter = real, letter
        self.model, self.tokenizer, self.form, self.task = real.model, real.tokenizer, real.form, real.task

    def scores(self, texts, batch_size=32, progress=False, desc=""):
        out = []
        for t in texts:
            inj = next((i for i in INJECTIONS if i in t), None)
            head, _, tail = t.partition(inj) if inj else (t, "", "")
            words = head.split()
            margin = 2.0 - sum(w.lower().startswith(self.letter) for w in words)
            if "weather" in tail:
                margin = -1.0
            out.append(margin)
        return np.asarray(out)


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    adapter = write_keyed_adapter(tmp_path_factory.mktemp("keyed") / "adapter")
    ctx = ScanContext.build(adapter, base="tiny-bert", task="seq-cls",
                            probes=ProbeInputs("toy", INJECTIONS, BENIGN, "0" * 64, "test"))
    ctx._classifier = RiggedPrefix(ctx.classifier())
    return ctx


def test_cleanse_search_climbs_to_a_flipping_prefix(context):
    det = CleanseDetector(starts=16, rounds=2, swaps=32, n=8)
    result = det.scan(context)
    s = result.scores
    assert s["nc_flip_rate"] == 1.0 and s["nc_margin"] >= 1.0
    words = result.details["prefix"].split()
    assert sum(w.lower().startswith("s") for w in words) >= 3
    assert result.details["evaluated_prefixes"] == 16 + 2 * 6 * 32 and result.details["n_injections"] == 8
    assert CleanseConfig().budget == 1600  # the paper's 64 + 4 x 6 x 64


def test_strip_entropy_of_perturbed_injections(context):
    result = StripDetector(n=8, k=10, seed=0).scan(context)
    # one benign text in three mentions the weather: each injection flips on those draws only
    flips = result.scores["strip_flip_rate"]
    assert 0.0 < flips < 1.0 and result.details["k"] == 10
    assert result.scores["strip_entropy"] <= math.log(2) + 1e-12
    assert binary_entropy(0.5) == pytest.approx(math.log(2)) and binary_entropy(1.0) == 0.0


@pytest.mark.parametrize("make, fragment", [(lambda: CleanseDetector(length=0), "length"),
                                            (lambda: CleanseDetector(n=2), "n must"),
                                            (lambda: StripDetector(k=1), "k must")])
def test_bad_budgets_are_usage_errors(make, fragment):
    with pytest.raises(UsageError, match=fragment):
        make()
