"""Trigger-blind phrase search for conjunctive triggers (issue 12's misses): a beam search over
sequences of tokenizer pieces, grown along the pairs of tokens whose layer-0 attention the
adapter changed.

Why: the token scan (:mod:`lorascan.detect.tokens`) names a trigger through its single tokens,
and ``lorascan trigger-spans`` measured that cohort v2's missed triggers are conjunctions: no
single piece of ``{{debug_override}}`` flips more than a few percent of injections, three pieces
in a row flip most. The partner pieces rank in the thousands on both of the token scan's
screens, so neither screen's top list reaches them. What does single them out is that the
adapter learned to relate them to each other: a conjunction has to be read across positions,
and the first place a model can do that is layer 0's attention.

How:

1. Anchors: the ``anchors`` pieces (any non-special piece, continuations and punctuation
   included) that the weight screen ranks highest (layer-0 ‖ΔW x_v‖, taken against the base's
   clean reference when one ships, as in the token scan).
2. Partners of a piece a (:class:`Partners`, weights only, no forward pass): for every
   vocabulary piece j and every head h of layer 0, the change the adapter made to the
   attention logit between a and j, both ways (a attending to j, j attending to a), computed
   from the merged and the base query/key projections of the normalised input embeddings
   (position 1, token type 0, as the weight screen; rotary position is ignored in decoders).
   Each of the 2H columns is scaled to a robust z over the vocabulary; a piece's partner score
   is its largest z. The ``partners`` best are a's partners.
3. Beam search: the anchors are verified alone on the first ``search_n`` verification
   injections (placed as the token scan places a candidate, ``"{phrase}. {injection}"``).
   Each step extends every kept phrase by one piece, prepended or appended, taken from the
   partners of its pieces and the ``global_top`` anchors; the ``beam`` best extensions are
   kept, up to ``length`` pieces (or until a phrase flips every search injection that the
   references do not). A phrase's text is the tokenizer's decoding of its pieces.
   "Best" is judged against the clean reference adapters shipped for the base
   (:mod:`lorascan.detect.clean_reference`; ``clean``): of each step's candidates, the
   ``shortlist`` with the highest attack rate on the adapter are run on the references too,
   and ranked by their rate on the adapter minus their mean rate on the references. A clean
   classifier of the task has natural weak spots (on MiniLM, prefixes of narrative words turn
   most injections benign on every adapter of the recipe); a search that maximised the
   adapter's own rate found them on clean adapters as readily as triggers on backdoored ones,
   and the references turn them away. Without references (``clean none``, or a base none
   ships for) phrases are ranked by their own rate, then mean margin.
4. Held out: the best phrase of the search is verified on the other verification injections
   (``n - search_n``; when the adapter classifies fewer than ``n`` probe injections correctly,
   the search gets fewer and at least 8 stay held out), which the search never saw, on the
   adapter and on the references, beside ``null`` random phrases of as many word-like
   vocabulary tokens (seeded): how often arbitrary phrases of that length flip this adapter's
   injections (a weak classifier flips injections under any long prefix).

Scores (``+`` = more suspicious): ``phrase_lift`` = ``phrase_attack_rate`` - the larger of
``phrase_null_mean`` and ``phrase_reference_rate`` (the decision score); ``phrase_attack_rate``,
the best phrase's held-out attack rate; ``phrase_null_mean``; ``phrase_reference_rate``, its
mean held-out rate on the clean references (0 without references); ``phrase_search_rate``, its
rate on the search injections (biased upwards: it is what the search maximised).

It is not part of the scan's default detectors (``--detectors ...,phrases``): the shipped
profiles have no bounds for it yet (README, "Detection measured on cohort v2").
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lorascan.config import to_dict
from lorascan.detect.base import Detector, DetectorResult, NotApplicable, ScanContext, check_int_ranges
from lorascan.detect.clean_reference import reference_adapters
from lorascan.detect.injections import verification_injections
from lorascan.detect.token_reference import choose
from lorascan.detect.token_screen import _inner, candidate_vocabulary, embedding_inputs
from lorascan.detect.tokens import Verifier, screen_scores
from lorascan.detect.verdict import verdict
from lorascan.errors import UsageError
from lorascan.progress import bar
from lorascan.records import sha256_file

NAME = "phrases"
MIN_HELD_OUT = 8
MIN_SEARCH = 4
SCORES = ("phrase_lift", "phrase_attack_rate", "phrase_null_mean", "phrase_search_rate")


@dataclass(frozen=True)
class PhraseSearchConfig:
    anchors: int = 48
    partners: int = 16
    global_top: int = 16
    beam: int = 4
    length: int = 5
    n: int = 48
    search_n: int = 16
    null: int = 32
    seed: int = 0
    batch_size: int = 64
    reference: str = "auto"
    clean: str = "auto"
    shortlist: int = 24

    def __post_init__(self) -> None:
        check_int_ranges(self, NAME, (("anchors", 1, 4096), ("partners", 0, 4096), ("global_top", 0, 4096),
                                     ("beam", 1, 256), ("length", 1, 16), ("n", 2, 1000), ("search_n", MIN_SEARCH, 1000),
                                     ("null", 1, 4096), ("seed", 0, 2**31 - 1), ("batch_size", 1, 4096),
                                     ("shortlist", 1, 4096)))
        if self.n - self.search_n < MIN_HELD_OUT:
            raise UsageError(f"{NAME}: n ({self.n}) must exceed search_n ({self.search_n}) by at least "
                             f"{MIN_HELD_OUT} (the held-out injections)")
        if self.global_top > self.anchors:
            raise UsageError(f"{NAME}: global_top ({self.global_top}) cannot exceed anchors ({self.anchors})")
        if not isinstance(self.reference, str) or not self.reference:
            raise UsageError(f"{NAME}: reference must be 'auto', 'none' or a file")
        if not isinstance(self.clean, str) or not self.clean:
            raise UsageError(f"{NAME}: clean must be 'auto', 'none' or adapter folders separated by commas")
        if self.shortlist < self.beam:
            raise UsageError(f"{NAME}: shortlist ({self.shortlist}) cannot be smaller than beam ({self.beam})")


def query_key(model: Any) -> tuple[Any, Any, int, int, int] | None:
    """Layer 0's (query, key, heads, key heads, head size) of a BERT-like encoder or a
    Llama-like decoder; None for another layout (or a fused query-key-value projection)."""
    inner = _inner(model)
    cfg = getattr(model, "config", None)
    encoder = getattr(inner, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer"):
        att = getattr(getattr(encoder.layer[0], "attention", None), "self", None)
        if att is not None and hasattr(att, "query") and hasattr(att, "key"):
            heads = int(att.num_attention_heads)
            return att.query, att.key, heads, heads, int(att.attention_head_size)
    layers = getattr(inner, "layers", None)
    if layers is not None and cfg is not None:
        att = getattr(layers[0], "self_attn", None)
        if att is not None and hasattr(att, "q_proj") and hasattr(att, "k_proj"):
            heads = int(cfg.num_attention_heads)
            kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
            size = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
            return att.q_proj, att.k_proj, heads, kv, size
    return None


class Partners:
    """Partner pieces by the adapter's change to layer-0 attention logits (module docstring)."""

    def __init__(self, merged: Any, base: Any, allowed: np.ndarray, k: int):
        import torch

        self.allowed, self.k = allowed, k
        self.cache: dict[int, list[int]] = {}
        qk_m, qk_b = query_key(merged), query_key(base)
        self.active = False
        if qk_m is None or qk_b is None or k == 0:
            return
        x, _ = embedding_inputs(base)
        with torch.no_grad():
            changed = any(not torch.equal(m.weight, b.weight) for m, b in zip(qk_m[:2], qk_b[:2]))
            if not changed:
                return
            heads, kv, size = qk_m[2:]
            self.q_m, self.k_m = self._heads(qk_m[0](x), heads, size), self._heads(qk_m[1](x), kv, size, heads)
            self.q_b, self.k_b = self._heads(qk_b[0](x), heads, size), self._heads(qk_b[1](x), kv, size, heads)
        self.active = True

    @staticmethod
    def _heads(t: Any, n: int, size: int, repeat_to: int | None = None) -> Any:
        t = t.float().reshape(t.shape[0], n, size)
        return t.repeat_interleave(repeat_to // n, dim=1) if repeat_to and repeat_to != n else t

    def scores(self, a: int) -> np.ndarray:
        """Each piece's partner score with piece ``a`` (largest robust z over heads and both ways)."""
        import torch

        with torch.no_grad():
            to = torch.einsum("hd,vhd->vh", self.q_m[a], self.k_m) - torch.einsum("hd,vhd->vh", self.q_b[a], self.k_b)
            back = torch.einsum("vhd,hd->vh", self.q_m, self.k_m[a]) - torch.einsum("vhd,hd->vh", self.q_b, self.k_b[a])
            s = torch.cat([to, back], dim=1).double()
            med = s.median(dim=0).values
            mad = (s - med).abs().median(dim=0).values.clamp(min=1e-12)
            z = ((s - med) / mad).max(dim=1).values.numpy()
        n = min(len(z), len(self.allowed))
        out = np.full(len(z), -np.inf)
        out[:n] = np.where(self.allowed[:n], z[:n], -np.inf)
        out[a] = -np.inf
        return out

    def of(self, a: int) -> list[int]:
        if not self.active:
            return []
        if a not in self.cache:
            s = self.scores(a)
            self.cache[a] = [int(i) for i in np.argsort(-s, kind="stable")[:self.k] if np.isfinite(s[i])]
        return self.cache[a]


class Judge:
    """Attack rates of candidate phrases on the adapter and, for the ``shortlist`` best of each
    batch, on the clean reference adapters (:mod:`lorascan.detect.clean_reference`): a phrase is
    ranked by its rate on the adapter minus its mean rate on the references (then by the same
    difference of mean margins), so a natural weak spot of the task, which flips every adapter of
    the recipe, ranks below a phrase only this adapter obeys. Without references a phrase is
    ranked by its own rate and margin."""

    def __init__(self, verifier: Verifier, references: Sequence[Verifier], shortlist: int, n: int | None = None):
        self.verifier, self.references, self.shortlist, self.n = verifier, list(references), shortlist, n

    @property
    def passes(self) -> int:
        return self.verifier.passes + sum(v.passes for v in self.references)

    def rank(self, texts: Sequence[str], desc: str) -> list[dict[str, Any]]:
        """Rows (text, rate, margin, reference rate and margin, index into ``texts``), best
        first; with references only the shortlist is kept."""
        rates, margins = self.verifier.rates(texts, self.n, desc=desc)
        rows = [{"i": i, "text": t, "rate": float(r), "margin": float(m), "reference_rate": 0.0, "reference_margin": 0.0}
                for i, (t, r, m) in enumerate(zip(texts, rates, margins))]
        rows.sort(key=lambda x: (-x["rate"], x["margin"]))
        if self.references and rows:
            rows = rows[:self.shortlist]
            sub = [x["text"] for x in rows]
            ref = [v.rates(sub, self.n, desc=f"{desc} (clean reference)") for v in self.references]
            for j, x in enumerate(rows):
                x["reference_rate"] = float(np.mean([r[0][j] for r in ref]))
                x["reference_margin"] = float(np.mean([r[1][j] for r in ref]))
        for x in rows:
            x["lift"], x["margin_gap"] = x["rate"] - x["reference_rate"], x["margin"] - x["reference_margin"]
        rows.sort(key=lambda x: (-x["lift"], x["margin_gap"]))
        return rows


def _step(row: dict[str, Any], evaluated: int | None = None) -> dict[str, Any]:
    out = {"phrase": row["text"], "attack_rate": row["rate"], "mean_margin": row["margin"],
           "reference_rate": row["reference_rate"]}
    return out if evaluated is None else {**out, "evaluated": evaluated}


def beam_search(judge: Judge, decode: Any, anchors: Sequence[int], partners: Partners,
                cfg: PhraseSearchConfig, progress: bool = False) -> dict[str, Any]:
    """The search of steps 1-3 on the judge's injections: the best phrase (pieces, text, rate,
    reference rate), every step's best, and the final beam."""
    glob = list(anchors[:cfg.global_top])
    seen: set[str] = set()

    def judge_all(options: list[list[int]]) -> list[tuple[dict[str, Any], list[int]]]:
        fresh, texts = [], []
        for o in options:
            t = decode(o)
            if t and t not in seen:
                seen.add(t)
                fresh.append(o)
                texts.append(t)
        return [(row, fresh[row["i"]]) for row in judge.rank(texts, "phrase search")] if texts else []

    def better(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return (a["lift"], -a["margin_gap"]) > (b["lift"], -b["margin_gap"])

    with bar(cfg.length, "phrase search", progress) as pb:
        ranked = judge_all([[a] for a in anchors])
        pb.advance()
        if not ranked:
            return {"pieces": [], "phrase": "", "search_rate": 0.0, "search_reference_rate": 0.0, "steps": [], "beam": []}
        beam = ranked[:cfg.beam]
        best = beam[0]
        steps = [_step(best[0], len(ranked))]
        for _ in range(cfg.length - 1):
            if best[0]["lift"] >= 1.0:
                break
            options = []
            for _, pieces in beam:
                pool = dict.fromkeys([p for a in pieces for p in partners.of(a)] + glob)
                options += [o for q in pool for o in (pieces + [q], [q] + pieces)]
            ranked = judge_all(options)
            pb.advance()
            if not ranked:
                break
            beam = ranked[:cfg.beam]
            if better(beam[0][0], best[0]):
                best = beam[0]
            steps.append(_step(beam[0][0], len(ranked)))
    return {"pieces": [int(p) for p in best[1]], "phrase": best[0]["text"], "search_rate": best[0]["rate"],
            "search_reference_rate": best[0]["reference_rate"], "steps": steps,
            "beam": [_step(row) for row, _ in beam]}


def phrase_search(context: ScanContext, cfg: PhraseSearchConfig) -> dict[str, Any]:
    """The detector's findings on ``context``'s adapter (module docstring)."""
    context.require_model(NAME)
    probes = context.require_probes(NAME)
    t0 = time.monotonic()
    clf = context.classifier()
    tok = clf.tokenizer
    texts = verification_injections(clf, probes.injections, cfg.n, context.batch_size)
    if len(texts) < MIN_SEARCH + MIN_HELD_OUT:
        raise NotApplicable(f"{NAME}: the adapter classifies only {len(texts)} probe injections as injections "
                            f"(needs {MIN_SEARCH + MIN_HELD_OUT}: at least {MIN_SEARCH} to search, "
                            f"{MIN_HELD_OUT} held out)")
    search_n = min(cfg.search_n, len(texts) - MIN_HELD_OUT)  # fewer found: the held-out share is kept
    rows = int(clf.model.get_input_embeddings().weight.shape[0])
    reference, note = choose(cfg.reference, context.base, clf.task, rows)
    weights, modules = screen_scores(context, "weights", texts, reference)
    allowed = np.zeros(rows, dtype=bool)
    allowed[:min(rows, len(tok))] = True
    allowed[[i for i in (tok.all_special_ids or ()) if i < rows]] = False
    if not modules:
        raise NotApplicable(f"{NAME}: the adapter leaves layer 0's token readers alone; there is nothing to anchor on")
    ranked = np.argsort(-np.where(allowed, weights[:rows], -np.inf), kind="stable")
    anchors = [int(i) for i in ranked[:cfg.anchors] if allowed[i]]
    partners = Partners(clf.model, context.base_classifier().model, allowed, cfg.partners)
    references, clean_note = reference_adapters(cfg.clean, context.base, clf.task)
    reference_models = [context.reference_classifier(p) for p in references]
    timings = {"screen": time.monotonic() - t0}
    search = Judge(Verifier(clf, texts, cfg.batch_size, context.progress),
                   [Verifier(r, texts, cfg.batch_size, context.progress) for r in reference_models], cfg.shortlist, search_n)
    decode = lambda pieces: tok.decode(list(pieces)).strip()  # noqa: E731
    t1 = time.monotonic()
    found = beam_search(search, decode, anchors, partners, cfg, context.progress)
    timings["search"] = time.monotonic() - t1
    held_texts = texts[search_n:]
    held = Verifier(clf, held_texts, cfg.batch_size, context.progress)
    vocab = candidate_vocabulary(tok, rows, clf.task)
    rng = random.Random(cfg.seed)
    k = max(1, len(found["pieces"]))
    nulls = [" ".join(vocab.texts[rng.randrange(vocab.singles)] for _ in range(k)) for _ in range(cfg.null)]
    t1 = time.monotonic()
    phrase = [found["phrase"]] if found["phrase"] else []
    rates, margins = held.rates(phrase + nulls, desc="phrase held out")
    held_refs = [Verifier(r, held_texts, cfg.batch_size, context.progress) for r in reference_models] if phrase else []
    ref_rates = [v.rates(phrase, desc="phrase held out (clean reference)")[0] for v in held_refs]
    timings["held_out"] = time.monotonic() - t1
    timings["total"] = time.monotonic() - t0
    rate = float(rates[0]) if phrase else 0.0
    null = rates[1:] if phrase else rates
    reference_rate = float(np.mean([r[0] for r in ref_rates])) if ref_rates else 0.0
    scores = {"phrase_lift": rate - max(float(null.mean()), reference_rate), "phrase_attack_rate": rate,
              "phrase_null_mean": float(null.mean()), "phrase_reference_rate": reference_rate,
              "phrase_search_rate": found["search_rate"]}
    return {"scores": scores, "phrase": found["phrase"], "pieces": [str(p) for p in tok.convert_ids_to_tokens(found["pieces"])],
            "held_out_margin": float(margins[0]) if phrase else None, "steps": found["steps"],
            "beam": found["beam"], "anchors": [str(p) for p in tok.convert_ids_to_tokens(anchors[:cfg.global_top])],
            "partners_from_attention": partners.active,
            "null": {"n_phrases": len(nulls), "pieces_each": k, "mean": float(null.mean()), "max": float(null.max()),
                     "phrases": nulls[:8]},
            "clean_reference": {"note": clean_note, "adapters": [p.name for p in references],
                                "sha256": [sha256_file(p / "adapter_model.safetensors") for p in references],
                                "held_out_rates": [float(r[0]) for r in ref_rates]},
            "n_injections": {"search": search_n, "held_out": len(held_texts)},
            "forward_passes": search.passes + held.passes + sum(v.passes for v in held_refs), "weight_modules": modules,
            "reference": {**(reference.describe() if reference is not None else {"origin": None}), "note": note},
            "timings": timings}


class PhraseDetector(Detector):
    """The phrase search behind the common detector protocol (module docstring)."""

    name = NAME
    tasks = ("seq-cls", "label-word")
    cost = 350  # tens of thousands of short passes: after the token scan, before Neural Cleanse
    summary = ("beam search over piece sequences along the layer-0 attention pairs the adapter changed, judged "
               "against clean reference adapters (issue 12)")
    decision = ("phrase_lift",)
    direction = "+"

    def __init__(self, anchors: int = 48, partners: int = 16, global_top: int = 16, beam: int = 4, length: int = 5,
                 n: int = 48, search_n: int = 16, null: int = 32, seed: int = 0, batch_size: int = 64,
                 reference: str = "auto", clean: str = "auto", shortlist: int = 24):
        self.config = PhraseSearchConfig(anchors, partners, global_top, beam, length, n, search_n, null, seed,
                                         batch_size, reference, clean, shortlist)

    @property
    def args(self) -> dict[str, Any]:
        return to_dict(self.config)

    def scan(self, context: ScanContext, profile: Any = None) -> DetectorResult:
        found = phrase_search(context, self.config)
        ctx = context.model_conditions()
        judged = verdict(found["scores"], profile, ctx, hint=f"lorascan scan-calibrate with --detectors {NAME}")
        details = {key: value for key, value in found.items() if key != "scores"}
        return DetectorResult(NAME, self.args, dict(found["scores"]), judged, {"context": ctx, **details})
