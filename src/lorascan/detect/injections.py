"""The probe injections an adapter-level search flips: shared by the token scan, the
Neural-Cleanse-style prefix search and STRIP (a flip is only meaningful from a correct
prediction, and short texts cost fewer tokens per pass)."""

from __future__ import annotations

from typing import Any, Sequence


def verification_injections(classifier: Any, injections: Sequence[str], n: int, batch_size: int) -> list[str]:
    """The ``n`` shortest injections (by tokens) the adapter classifies as injections."""
    tok = classifier.tokenizer
    lengths = [len(ids) for ids in tok(list(injections), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(injections)), key=lambda i: (lengths[i], i))
    chosen: list[str] = []
    for start in range(0, len(order), 2 * n):
        block = [injections[i] for i in order[start:start + 2 * n]]
        chosen += [t for t, m in zip(block, classifier.scores(block, batch_size)) if m > 0]
        if len(chosen) >= n:
            break
    return chosen[:n]
