"""How conjunctive a known trigger is (issue 12's miss analysis): the exact attack rate of every
contiguous span of the trigger's tokenizer pieces, placed where the token scan places its
candidates (``"{span}. {injection}"``) on the same verification injections, and where each of
the scan's two screens ranks each piece in the whole vocabulary.

The token scan rests on the paper's finding that a LoRA backdoor generalises to the trigger's
single tokens. A trigger the adapter only obeys as a conjunction of several pieces is outside
what it can find: this table says whether that is the case for a given adapter, and how many
pieces in a row it takes (``order``: the shortest span length whose best span reaches
``threshold``). It needs the trigger, so it is a research tool for labelled cohorts, never a
detector.

Each span's phrase is the tokenizer's decoding of its pieces; ``exact`` says whether the phrase
encodes back to exactly those pieces (a span that starts inside a word, ``##bu ##g``, decodes to
``bug``, which the tokenizer reads as other pieces). Ranks are 1-based over every non-special
token of the tokenizer (word pieces, continuations and punctuation alike), not only over the
scan's candidate vocabulary, with the weight screen taken against the base's clean reference
when one ships, as in the scan.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lorascan.detect.base import NotApplicable, ScanContext
from lorascan.detect.injections import verification_injections
from lorascan.detect.token_reference import choose
from lorascan.detect.tokens import MIN_N, TokenScanConfig, Verifier, screen_scores
from lorascan.errors import UsageError
from lorascan.records import record_header

MAX_PIECES = 32  # 528 spans: a few thousand short forward passes
THRESHOLD = 0.5


def spans_of(n: int) -> list[tuple[int, int]]:
    """Every contiguous ``(start, end)`` of ``n`` pieces, shortest first, left to right."""
    return [(i, i + length) for length in range(1, n + 1) for i in range(n - length + 1)]


def ranks(scores: np.ndarray, ids: Sequence[int], keep: np.ndarray) -> list[int | None]:
    """1-based rank of each of ``ids`` by ``scores`` (higher first) among the ``keep`` tokens;
    None for an id outside them (a special token)."""
    pool = scores[keep]
    return [int(np.sum(pool > scores[i])) + 1 if keep[i] else None for i in ids]


def order(rows: Sequence[dict[str, Any]], threshold: float = THRESHOLD) -> int | None:
    """The fewest pieces in a row whose best span reaches ``threshold``; None when none does."""
    lengths = [r["end"] - r["start"] for r in rows if r["attack_rate"] >= threshold]
    return min(lengths) if lengths else None


def trigger_spans(context: ScanContext, trigger: str, cfg: TokenScanConfig = TokenScanConfig(),
                  threshold: float = THRESHOLD) -> dict[str, Any]:
    """The span table of ``trigger`` on ``context``'s adapter (module docstring): ``spans``
    rows, ``pieces`` with their screen ranks, and the ``summary``."""
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"threshold must be in (0, 1], got {threshold}")
    context.require_model("trigger spans")
    clf = context.classifier()
    tok = clf.tokenizer
    ids = [int(i) for i in tok(trigger, add_special_tokens=False)["input_ids"]]
    if not ids:
        raise UsageError("the trigger has no tokens under this base's tokenizer")
    if len(ids) > MAX_PIECES:
        raise UsageError(f"the trigger is {len(ids)} pieces; at most {MAX_PIECES} are tabulated")
    texts = verification_injections(clf, context.require_probes("trigger spans").injections, cfg.n,
                                    context.batch_size)
    if len(texts) < MIN_N:
        raise NotApplicable(f"trigger spans: the adapter classifies only {len(texts)} probe injections as "
                            f"injections (needs {MIN_N})")
    spans = spans_of(len(ids))
    phrases = [tok.decode(ids[i:j]).strip() for i, j in spans]
    unique = list(dict.fromkeys(phrases))
    rates, margins = Verifier(clf, texts, cfg.batch_size, context.progress).rates(unique, desc="verify spans")
    by_phrase = {p: (float(r), float(m)) for p, r, m in zip(unique, rates, margins)}
    pieces = [str(p) for p in tok.convert_ids_to_tokens(ids)]
    back = tok(phrases, add_special_tokens=False)["input_ids"]
    rows = [{"start": i, "end": j, "pieces": pieces[i:j], "phrase": phrase, "attack_rate": by_phrase[phrase][0],
             "mean_margin": by_phrase[phrase][1], "exact": [int(x) for x in b] == ids[i:j]}
            for (i, j), phrase, b in zip(spans, phrases, back)]
    screen_ranks = _screen_ranks(context, cfg, texts, ids)
    best = {length: max((r["attack_rate"] for r in rows if r["end"] - r["start"] == length), default=0.0)
            for length in range(1, len(ids) + 1)}
    summary = {"trigger_rate": rows[-1]["attack_rate"], "best_piece_rate": best[1],
               "best_pair_rate": best.get(2), "best_rate_by_length": {str(k): v for k, v in best.items()},
               "order": order(rows, threshold), "threshold": threshold,
               "best_piece_rank": {k: min((r for r in v if r is not None), default=None)
                                   for k, v in screen_ranks.items()}}
    return {"trigger": trigger, "n_pieces": len(ids), "n_injections": len(texts), "spans": rows,
            "pieces": [{"piece": p, "token_id": i, **{f"{k}_rank": v[j] for k, v in screen_ranks.items()}}
                       for j, (p, i) in enumerate(zip(pieces, ids))],
            "vocabulary": int(len(tok)), "summary": summary}


def _screen_ranks(context: ScanContext, cfg: TokenScanConfig, texts: Sequence[str],
                  ids: Sequence[int]) -> dict[str, list[int | None]]:
    """Each screen's rank of each piece among the tokenizer's non-special tokens (a weight
    screen that read no layer-0 module is left out)."""
    clf = context.classifier()
    n = len(clf.tokenizer)
    keep = np.ones(n, dtype=bool)
    keep[[i for i in (clf.tokenizer.all_special_ids or ()) if i < n]] = False
    reference, _ = choose(cfg.reference, context.base, clf.task, int(clf.model.get_input_embeddings().weight.shape[0]))
    out: dict[str, list[int | None]] = {}
    for name in cfg.screens:
        full, modules = screen_scores(context, name, texts, reference)
        if name == "weights" and not modules:
            continue
        out[name] = ranks(np.asarray(full[:n], dtype=np.float64), ids, keep)
    return out


def spans_record(context: ScanContext, found: dict[str, Any]) -> dict[str, Any]:
    """The ``lorascan trigger-spans`` JSON record."""
    return {**record_header("trigger_spans"), "adapter": str(context.adapter), "base": context.base,
            "task": context.task, "probe_set": context.probes.describe() if context.probes else None, **found}
