"""Shared settings and the case counter of the property-based fuzz tests (hypothesis).

Every fuzz test counts the inputs it ran (:func:`count`); the total, per target, and the wall
time of the fuzz tests are printed at the end of the pytest run, so each ``make test`` shows
that the suite ran its >= 10,000 generated inputs (issue 15). Runs are reproducible:
``derandomize=True`` derives every example from the test itself, and no example database is
written (nothing appears in the working tree)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

CASES: Counter = Counter()
WALL = {"s": 0.0}


def fuzz_settings(max_examples: int):
    """Settings of one fuzz test: ``max_examples`` reproducible inputs, no deadline (a slow
    shared CI core must not fail a test), no example database."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def count(target: str) -> None:
    CASES[target] += 1


@pytest.fixture(autouse=True)
def _fuzz_clock():
    t0 = time.monotonic()
    yield
    WALL["s"] += time.monotonic() - t0


def pytest_terminal_summary(terminalreporter):
    if CASES:
        parts = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz: {sum(CASES.values())} generated inputs in {WALL['s']:.1f} s ({parts})")
