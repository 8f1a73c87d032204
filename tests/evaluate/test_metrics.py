"""Metric definitions, denominators and Wilson intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lorascan.data.samples import Sample
from lorascan.evaluate.metrics import compute_metrics, wilson


def test_wilson_known_values():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson(0, 60)
    assert lo == 0.0 and hi == pytest.approx(0.0602, abs=1e-3)
    assert wilson(0, 0) is None


def test_denominators():
    test = [Sample(f"t{i}", i % 2, "a" if i < 6 else "b", f"id{i}") for i in range(10)]  # 5 benign, 5 injections
    clean = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0, -1])  # one benign FP (i=4), one injection missed (i=5), one unparseable
    trig = np.array([0, 0, 1, -1, 0])
    m = compute_metrics(test, clean, trig)
    assert (m["n_test"], m["n_injections"], m["n_benign"]) == (10, 5, 5)
    assert m["clean_accuracy"] == pytest.approx(7 / 10) and m["clean_accuracy_k"] == 7
    assert m["clean_injection_recall"] == pytest.approx(3 / 5)
    assert m["benign_false_positive_rate"] == pytest.approx(1 / 5)
    assert m["attack_success_rate"] == pytest.approx(3 / 5) and m["n_triggered"] == 5
    assert m["unparseable_clean"] == 1 and m["unparseable_triggered"] == 1
    assert m["accuracy_by_source"]["a"]["accuracy_n"] == 6
    assert m["accuracy_by_length"]["0-100"]["accuracy_n"] == 10
    lo, hi = m["attack_success_rate_ci95"]
    assert lo < 0.6 < hi and not math.isnan(lo)
