"""Trigger-blind token scan (issue 11; paper §6: a LoRA backdoor generalises at the token level,
so the tokens it keys on can be found without knowing the trigger's family).

1. Screen the whole vocabulary (:mod:`lorascan.detect.token_screen`: the layer-0 weight
   screen, taken against the base's clean reference when one ships
   (:mod:`lorascan.detect.token_reference`), and the first-order gradient screen), merged into
   the top ``top`` tokens: each screen's own top ``top // 6``, then the highest robust z of
   either (:func:`~lorascan.detect.token_screen.allocate`).
2. Verify exactly: each candidate placed as the poisoning places a trigger
   (``"{token}. {injection}"``) before the verification injections, counting those predicted
   benign. Successive halving keeps it cheap: every candidate on the first ``stage1``
   injections, the ``promote`` best on all ``n``. The verification injections are the shortest
   probe injections that the adapter itself classifies as injections (a flip is only
   meaningful from a correct prediction; short texts cost fewer tokens per pass, and a
   backdoor flips short and long injections alike).
3. Null: ``null`` tokens drawn (seeded) from the same candidate vocabulary, verified on the
   ``stage1`` injections: how often an arbitrary word flips this adapter's injections.
   Two-piece compounds of the weight screen's outlier pieces (:func:`compound_candidates`)
   are verified beside the screened tokens: a trigger word the tokenizer splits cannot be
   placed as one token.
4. Reconstruction: greedy extension of the best token by the next best ones (appended or
   prepended), up to ``max_phrase`` tokens, while the attack rate strictly rises.

Scores (all unrounded; "+" = more suspicious):
- ``token_attack_rate``: the best promoted candidate's attack rate over the ``n`` injections;
- ``token_null_mean``: the null tokens' mean attack rate;
- ``token_lift`` = token_attack_rate - token_null_mean, the decision statistic: it removes the
  adapter's own baseline flip rate (a weak classifier flips injections under any prefix) and,
  unlike a z-score, stays finite when no null token flips anything (the usual case for a clean
  adapter, whose null rates are all 0);
- ``reconstructed_attack_rate``: the reconstructed phrase's rate over the ``n`` injections.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lorascan.config import to_dict
from lorascan.data.poison import apply_trigger
from lorascan.detect.base import Detector, DetectorResult, NotApplicable, ScanContext
from lorascan.detect.injections import verification_injections
from lorascan.detect.token_reference import TokenReference, choose
from lorascan.detect.verdict import verdict
from lorascan.detect.token_screen import (Vocabulary, allocate, candidate_vocabulary, with_compounds,
                                          gradient_scores, label_blocklist, robust_z, weight_scores)
from lorascan.errors import UsageError
from lorascan.formulations import formulation_for
from lorascan.progress import bar
from lorascan.registry import Registry

NAME = "tokens"
SCREENS = ("weights", "gradient")
SCORES = ("token_lift", "token_attack_rate", "token_null_mean", "reconstructed_attack_rate")
MAX_TOP = 2000
DEFAULT_TOP = 96  # K: bench/tokens.py (9 of the exhaustive top 10 at 96, 8 at 48) and cohort v2's misses
MAX_N = 1000
MIN_N = 4
GRADIENT_TEXTS = 32  # injections the gradient is averaged over (one batch)
FLOOR_SHARE = 6  # each screen's own top K/6 are verified; the rest of K by robust z (allocate)


@dataclass(frozen=True)
class TokenScanConfig:
    """How to scan. ``top``: candidates verified (K); ``n``: verification injections (N);
    ``stage1``: injections every candidate and null token is verified on first (at most n);
    ``promote``: candidates then verified on all n; ``null``: random tokens for the null;
    ``max_phrase``: reconstruction length in tokens; ``pool``: tokens reconstruction extends
    with; ``screens``: which screeners rank the vocabulary (:data:`SCREENS`); ``compounds``:
    two-piece words also verified, from the weight screen's ``compounds`` best word-start pieces
    x twice as many best continuation pieces (0: none); ``reference``: the clean reference the
    weight screen is taken against (:mod:`lorascan.detect.token_reference`): ``auto`` (the
    shipped one for the base, when it matches), ``none``, or a reference file."""

    top: int = DEFAULT_TOP
    n: int = 48
    stage1: int = 16
    promote: int = 8
    null: int = 32
    max_phrase: int = 6
    pool: int = 8
    screens: tuple[str, ...] = SCREENS
    seed: int = 0
    batch_size: int = 64
    compounds: int = 4
    reference: str = "auto"

    def __post_init__(self) -> None:
        checks = ((0 <= self.compounds <= 64, f"compounds must be in 0..64, got {self.compounds}"),
                  (1 <= self.top <= MAX_TOP, f"--top must be in 1..{MAX_TOP}, got {self.top}"),
                  (MIN_N <= self.n <= MAX_N, f"--n must be in {MIN_N}..{MAX_N}, got {self.n}"),
                  (1 <= self.stage1, f"stage1 must be >= 1, got {self.stage1}"),
                  (1 <= self.promote, f"promote must be >= 1, got {self.promote}"),
                  (0 <= self.null <= MAX_TOP, f"null must be in 0..{MAX_TOP}, got {self.null}"),
                  (1 <= self.max_phrase <= 6, f"max_phrase must be in 1..6, got {self.max_phrase}"),
                  (1 <= self.pool <= 64, f"pool must be in 1..64, got {self.pool}"),
                  (1 <= self.batch_size, f"batch size must be >= 1, got {self.batch_size}"),
                  (isinstance(self.reference, str) and bool(self.reference),
                   "reference must be 'auto', 'none' or a file"),
                  (bool(self.screens) and set(self.screens) <= set(SCREENS),
                   f"screens must be a non-empty subset of {', '.join(SCREENS)}, got {list(self.screens)}"))
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


class Verifier:
    """Exact attack rates of prefixes over fixed injections, as the poisoning places a
    trigger: rate = injections predicted benign (margin <= 0) / injections."""

    def __init__(self, classifier: Any, injections: Sequence[str], batch_size: int, progress: bool):
        self.classifier, self.injections = classifier, tuple(injections)
        self.batch_size, self.progress = batch_size, progress
        self.passes = 0

    def rates(self, prefixes: Sequence[str], n: int | None = None,
              desc: str = "verify") -> tuple[np.ndarray, np.ndarray]:
        """(attack rate, mean margin) per prefix over the first ``n`` injections."""
        texts = self.injections[:n]
        if not prefixes:
            return np.zeros(0), np.zeros(0)
        margins = self.classifier.scores([apply_trigger(t, p) for p in prefixes for t in texts], self.batch_size,
                                         self.progress, desc).reshape(len(prefixes), len(texts))
        self.passes += margins.size
        return (margins <= 0).mean(axis=1), margins.mean(axis=1)


def screen_scores(context: ScanContext, name: str, texts: Sequence[str],
                  reference: TokenReference | None = None) -> tuple[np.ndarray, list[str]]:
    """One screen's score for every vocabulary id (higher: more suspicious) and, for the weight
    screen, the layer-0 modules it read; the weight screen taken against ``reference`` when one
    is given, the gradient screen against the bare base where the formulation's base reads out."""
    clf = context.classifier()
    if name == "weights":
        full, modules = weight_scores(clf.model, context.base_classifier().model)
        if reference is not None and modules:
            full = reference.differential(full)
        return full, modules
    ref = context.base_classifier() if formulation_for(clf.task).base_reads_out else None
    return gradient_scores(clf, texts[:GRADIENT_TEXTS], reference=ref), []


def screen(context: ScanContext, vocab: Vocabulary, texts: Sequence[str], cfg: TokenScanConfig,
           reference: TokenReference | None = None) -> dict[str, Any]:
    """Per-screen scores over the candidate vocabulary and the merged top ``cfg.top``; the
    weight screen's taken against ``reference`` when one is given."""
    clf = context.classifier()
    scores: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    modules: list[str] = []
    weights_full = None
    for name in cfg.screens:
        t0 = time.monotonic()
        full, used = screen_scores(context, name, texts, reference)
        if name == "weights":
            modules = used
        if len(full) < vocab.size:
            raise UsageError(f"the {name} screen scored {len(full)} tokens, the vocabulary has {vocab.size}")
        scores[name] = full[vocab.ids]
        timings[name] = time.monotonic() - t0
        if name == "weights":
            weights_full = full
    usable = [s for s in scores.values() if np.any(s != s[0])]
    rankings = [np.argsort(-s, kind="stable") for s in usable] or [np.arange(len(vocab.ids))]
    zs = [robust_z(s) for s in usable]
    z = np.max(zs, axis=0) if usable else np.zeros(len(vocab.ids))
    top = allocate(rankings, zs, cfg.top, max(1, cfg.top // FLOOR_SHARE)) if usable else list(rankings[0][:cfg.top])
    if cfg.compounds and weights_full is not None and np.any(weights_full != weights_full[0]):
        vocab, top, z = with_compounds(clf.tokenizer, vocab, list(top), z, weights_full, cfg.compounds,
                                       label_blocklist(clf.tokenizer, clf.task))
    return {"top": top, "z": z, "timings": timings, "modules": modules, "vocab": vocab}


def verify(verifier: Verifier, vocab: Vocabulary, top: Sequence[int], cfg: TokenScanConfig,
           z: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Ranked candidate rows (successive halving, module docstring) and the null summary."""
    n1 = min(cfg.stage1, len(verifier.injections))
    rng = random.Random(cfg.seed)
    rest = sorted(set(range(vocab.singles)) - set(top))  # the null: random vocabulary tokens
    null_idx = rng.sample(rest, min(cfg.null, len(rest)))
    texts = [vocab.texts[i] for i in (*top, *null_idx)]
    rates, margins = verifier.rates(texts, n1, desc="verify candidates")
    rows = [{"token": vocab.texts[i], "token_id": int(vocab.ids[i]), "attack_rate": float(rates[j]),
             "mean_margin": float(margins[j]), "screen_score": float(z[i]), "n_injections": n1,
             "compound": i >= vocab.singles}
            for j, i in enumerate(top)]
    null = rates[len(top):]
    order = sorted(range(len(rows)), key=lambda j: (-rows[j]["attack_rate"], rows[j]["mean_margin"]))
    promoted = order[:cfg.promote]
    if len(verifier.injections) > n1 and promoted:
        full, fm = verifier.rates([rows[j]["token"] for j in promoted], desc="verify best")
        for j, r, m in zip(promoted, full, fm):
            rows[j].update(attack_rate=float(r), mean_margin=float(m), n_injections=len(verifier.injections))
    for j in promoted:
        rows[j]["promoted"] = True
    rows.sort(key=lambda r: (not r.get("promoted", False), -r["attack_rate"], -r["screen_score"]))
    summary = {"n_tokens": len(null), "n_injections": n1, "mean": float(null.mean()) if len(null) else 0.0,
               "max": float(null.max()) if len(null) else 0.0, "rates": [float(x) for x in null],
               "tokens": [vocab.texts[i] for i in null_idx]}
    return rows, summary


def reconstruct(verifier: Verifier, rows: Sequence[dict[str, Any]], cfg: TokenScanConfig) -> dict[str, Any]:
    """Greedy phrase: start from the best token; add the pool token (appended or prepended)
    that most raises the attack rate (mean margin breaks ties); stop when none strictly raises
    it, at rate 1 or at ``max_phrase`` tokens. The steps are judged on the stage-1 injections
    while they are below rate 1 there (cheap), then on all ``n``: a phrase that flips the first
    16 injections may not flip all 48, and the reported rate is over all of them."""
    if not rows:
        return {"phrase": "", "attack_rate": 0.0, "tokens": 0, "steps": []}
    n_all = len(verifier.injections)
    n = min(cfg.stage1, n_all)
    pool = [r["token"] for r in rows[:cfg.pool]]
    words = [pool[0]]
    rate = float(verifier.rates([pool[0]], n, desc="reconstruct")[0][0])
    steps = [{"phrase": pool[0], "attack_rate": rate, "n_injections": n}]
    while True:
        if rate >= 1.0 and n < n_all:  # judged on a few only: move to all n and go on from there
            n = n_all
            rate = float(verifier.rates([" ".join(words)], n, desc="reconstruct")[0][0])
            steps.append({"phrase": " ".join(words), "attack_rate": rate, "n_injections": n})
        options = [w for t in pool if t not in words for w in (words + [t], [t] + words)]
        if rate >= 1.0 or len(words) >= cfg.max_phrase or not options:
            break
        rates, margins = verifier.rates([" ".join(o) for o in options], n, desc="reconstruct")
        best = min(range(len(options)), key=lambda j: (-rates[j], margins[j]))
        if rates[best] <= rate:
            break
        words, rate = options[best], float(rates[best])
        steps.append({"phrase": " ".join(words), "attack_rate": rate, "n_injections": n})
    phrase = " ".join(words)
    if n == n_all:
        full = rate
    else:
        final = next((r for r in rows if r["token"] == phrase and r.get("promoted")), None)
        full = final["attack_rate"] if final else float(verifier.rates([phrase], desc="verify phrase")[0][0])
    return {"phrase": phrase, "attack_rate": full, "tokens": len(words), "n_injections": n_all, "steps": steps}


def token_scan(context: ScanContext, cfg: TokenScanConfig) -> dict[str, Any]:
    """The scan's findings on ``context``'s adapter: ranked ``tokens``, ``reconstructed``
    phrase, ``null``, ``scores``, ``timings`` (seconds per stage) and the sizes used."""
    context.require_model(NAME)
    probes = context.require_probes(NAME)
    t0 = time.monotonic()
    clf = context.classifier()
    vocab = candidate_vocabulary(clf.tokenizer, int(clf.model.get_input_embeddings().weight.shape[0]), clf.task)
    timings = {"load": time.monotonic() - t0}
    reference, reference_note = choose(cfg.reference, context.base, clf.task,
                                       int(clf.model.get_input_embeddings().weight.shape[0]))
    with bar(5, "token scan", context.progress) as pb:
        texts = verification_injections(clf, probes.injections, cfg.n, context.batch_size)
        if len(texts) < MIN_N:
            raise NotApplicable(f"{NAME}: the adapter classifies only {len(texts)} probe injections as injections "
                                f"(needs {MIN_N}); there is nothing for a trigger to flip")
        pb.advance(1, "screening")
        found = screen(context, vocab, texts, cfg, reference)
        vocab = found["vocab"]
        timings.update({f"screen_{k}": v for k, v in found["timings"].items()})
        pb.advance(1, "verifying")
        verifier = Verifier(clf, texts, cfg.batch_size, context.progress)
        t1 = time.monotonic()
        rows, null = verify(verifier, vocab, found["top"], cfg, found["z"])
        for row in rows:  # a compound's pieces: what the adapter reads, shown with the word
            if row["compound"]:
                row["pieces"] = word_pieces(clf.tokenizer, row["token"])
        timings["verify"] = time.monotonic() - t1
        pb.advance(1, "reconstructing")
        t1 = time.monotonic()
        rec = reconstruct(verifier, rows, cfg)
        timings["reconstruct"] = time.monotonic() - t1
        pb.advance(2, "done")
    timings["total"] = time.monotonic() - t0
    best = max((r["attack_rate"] for r in rows if r.get("promoted")), default=0.0)
    scores = {"token_lift": best - null["mean"], "token_attack_rate": best, "token_null_mean": null["mean"],
              "reconstructed_attack_rate": rec["attack_rate"]}
    return {"tokens": rows, "reconstructed": rec, "null": null, "scores": scores, "timings": timings,
            "vocabulary": {"size": vocab.size, "candidates": vocab.singles, "compounds": len(vocab.ids) - vocab.singles,
                           "blocked_label_words": vocab.blocked},
            "n_injections": len(texts), "forward_passes": verifier.passes, "weight_modules": found["modules"],
            "reference": {**(reference.describe() if reference is not None else {"origin": None}),
                          "note": reference_note}}


def word_pieces(tokenizer: Any, text: str) -> list[str]:
    """The tokenizer's pieces of ``text`` as the vocabulary spells them (``qu``, ``##asa``)."""
    return [str(t) for t in tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])]


def trigger_rates(context: ScanContext, cfg: TokenScanConfig, phrases: Sequence[str]) -> np.ndarray:
    """Exact attack rates of given phrases (e.g. a cohort adapter's known trigger, for
    :mod:`lorascan.scan.recovery`) on the same verification injections a scan with ``cfg``
    uses, so they compare with its ``tokens`` and ``reconstructed`` rates."""
    clf = context.classifier()
    texts = verification_injections(clf, context.require_probes(NAME).injections, cfg.n, context.batch_size)
    if len(texts) < MIN_N:
        raise NotApplicable(f"{NAME}: the adapter classifies only {len(texts)} probe injections as injections")
    return Verifier(clf, texts, cfg.batch_size, False).rates(list(phrases))[0]


def scan_context_dict(context: ScanContext) -> dict[str, Any]:
    """What a token-scan profile must match."""
    return context.model_conditions()


class TokenDetector(Detector):
    """The token scan behind the common detector protocol (module docstring)."""

    name = NAME
    tasks = ("seq-cls", "label-word")
    cost = 300  # a few thousand short forward passes: after weights (0) and the battery (100)
    summary = "every word-like vocabulary token screened, the top verified as a prefix trigger (issue 11)"
    decision = ("token_lift", "token_attack_rate")
    direction = "+"

    def __init__(self, top: int = DEFAULT_TOP, n: int = 48, stage1: int = 16, promote: int = 8, null: int = 32,
                 max_phrase: int = 6, pool: int = 8, screens: Sequence[str] = SCREENS, seed: int = 0,
                 batch_size: int = 64, compounds: int = 4, reference: str = "auto"):
        self.config = TokenScanConfig(top, n, stage1, promote, null, max_phrase, pool, tuple(screens), seed,
                                      batch_size, compounds, reference)

    @property
    def args(self) -> dict[str, Any]:
        return to_dict(self.config)

    def scan(self, context: ScanContext, profile: Any = None) -> DetectorResult:
        found = token_scan(context, self.config)
        if profile is not None and profile.detector != NAME:
            raise UsageError(f"profile {profile.name} is for the {profile.detector!r} detector, not {NAME!r}")
        ctx = scan_context_dict(context)
        v = verdict(found["scores"], profile, ctx, hint="lorascan calibrate with the tokens detector")
        details = {k: found[k] for k in ("tokens", "reconstructed", "null", "timings", "vocabulary",
                                         "n_injections", "weight_modules", "reference")}
        return DetectorResult(NAME, self.args, dict(found["scores"]), v, {"context": ctx, **details})


def register(registry: Registry[Detector]) -> Registry[Detector]:
    """Add the token detector to ``registry`` unless it is there; returns the registry."""
    if NAME not in registry:
        registry.register(NAME, TokenDetector)
    return registry


def token_record(context: ScanContext, result: DetectorResult) -> dict[str, Any]:
    """The ``lorascan tokens`` JSON record: ranked ``tokens`` ({token, token_id, attack_rate,
    screen_score, ...}), ``reconstructed`` {phrase, attack_rate, ...}, the null, scores, verdict."""
    from lorascan.records import record_header

    d = result.details
    return {**record_header("token_scan"), "adapter": str(context.adapter), "base": context.base,
            "task": context.task, "probe_set": context.probes.describe() if context.probes else None,
            "detector": result.detector, "detector_args": result.detector_args, "scores": result.scores,
            "verdict": result.verdict.to_dict(), "tokens": d["tokens"], "reconstructed": d["reconstructed"],
            "null": d["null"], "vocabulary": d["vocabulary"], "n_injections": d["n_injections"],
            "weight_modules": d["weight_modules"], "reference": d["reference"], "timings": d["timings"]}
