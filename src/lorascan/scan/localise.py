"""Trigger-free localisation in the scan (issue 13, build item 5): which LoRA modules carry the
backdoor, with no trigger given and no clean adapter at hand.

The token scan (:mod:`lorascan.detect.tokens`) hands over its best candidate: the reconstructed
phrase when its attack rate over all verification injections beats the best promoted single token's,
else that token. Causal patching (:mod:`lorascan.evaluate.patching`, paper.md §10) then reads the
same verification injections the token scan used, the candidate placed as the paper's poisoning
places a trigger (``f"{candidate}. {text}"``), with the bare base as the reference: for each
projection type and each window of ``W`` consecutive layers, that window's LoRA outputs are
replaced by the base's (the LoRA update removed there) and the attack success rate (ASR:
triggered injections predicted benign / triggered injections) is counted again. A window whose
removal drops the candidate's ASR most carries the backdoor; the ``top`` such windows across types
are the record's ``carriers``.

When it runs (:func:`skip_reason`): only for an adapter the scan flagged (verdict review or
block) whose token scan produced a candidate with ASR >= ``min_asr`` (default 0.5: below that the
candidate flips fewer than half of the injections, a "drop" would be measured on a handful of
flips, and a candidate that weak is as likely the adapter's own noise as its trigger). Otherwise
the record says it was skipped and why. Localisation explains a verdict; it never changes one,
and a failure is recorded as ``status: error`` beside an intact verdict.

Deviations from ``lorascan patch``: the injections are the token scan's verification injections
(the shortest probe injections the adapter classifies as injections, so the unpatched ASR is the
token scan's rate up to merged-vs-unmerged rounding), not a seeded draw; the reference is always
the base; the default window is ``ceil(L / 7)`` layers (the paper's 4 of Qwen2.5-1.5B's 28; 1 on
a 6-layer MiniLM), since one fixed width cannot suit both.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lorascan.data.poison import apply_trigger
from lorascan.errors import LorascanError, UsageError
from lorascan.evaluate.patching import Patcher, minima, patch_scan

FLAGGED = ("review", "block")
MIN_ASR = 0.5  # module docstring: a candidate that flips fewer than half the injections is not localised
TOP = 3
LAYERS_PER_WINDOW = 7  # default window: ceil(layers / 7) (the paper's 4-layer windows on 28 layers)


@dataclass(frozen=True)
class LocaliseConfig:
    """``enabled``: localise flagged adapters (``--localise/--no-localise``); ``min_asr``: the
    candidate's token-scan ASR needed (module docstring); ``window``: layers per window (None:
    ``ceil(L / 7)``); ``top``: carriers listed; ``batch_size`` of the patched reads."""

    enabled: bool = True
    min_asr: float = MIN_ASR
    window: int | None = None
    top: int = TOP
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise UsageError(f"localise enabled must be true or false, got {self.enabled!r}")
        if isinstance(self.min_asr, bool) or not isinstance(self.min_asr, (int, float)) or not 0 < self.min_asr <= 1:
            raise UsageError(f"localisation min_asr must be in (0, 1], got {self.min_asr!r}")
        for name, value in (("window", self.window), ("top", self.top), ("batch_size", self.batch_size)):
            if value is None and name == "window":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
                raise UsageError(f"localisation {name} must be an integer in 1..4096, got {value!r}")


def best_candidate(token_row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The token scan's best candidate from its record row: ``{trigger, source, attack_rate,
    n_injections}`` (source ``reconstructed`` or ``token``), or None when it has none."""
    details = token_row.get("details") or {}
    promoted = [r for r in details.get("tokens") or () if r.get("promoted")]
    best = max(promoted, key=lambda r: r["attack_rate"], default=None)
    rec = details.get("reconstructed") or {}
    if rec.get("phrase") and (best is None or rec["attack_rate"] > best["attack_rate"]):
        return {"trigger": rec["phrase"], "source": "reconstructed", "attack_rate": float(rec["attack_rate"]),
                "n_injections": rec.get("n_injections")}
    if best is None:
        return None
    return {"trigger": best["token"], "source": "token", "attack_rate": float(best["attack_rate"]),
            "n_injections": best.get("n_injections")}


def skip_reason(verdict: str, token_row: Mapping[str, Any] | None, cfg: LocaliseConfig) -> str | None:
    """Why localisation does not run on this scan, or None when it does (module docstring)."""
    if not cfg.enabled:
        return "turned off (--no-localise)"
    if verdict not in FLAGGED:
        return f"the adapter is not flagged (verdict {verdict})"
    if token_row is None:
        return "no token scan in this scan (localisation needs its candidate trigger)"
    if token_row.get("status") != "ok":
        return f"the token scan did not run to the end ({token_row.get('status')})"
    cand = best_candidate(token_row)
    if cand is None:
        return "the token scan produced no candidate"
    if cand["attack_rate"] < cfg.min_asr:
        return (f"the token scan's best candidate has ASR {cand['attack_rate']:.3f} < {cfg.min_asr:g}: "
                "too weak to localise")
    return None


def _windows(result: Mapping[str, Any], patcher: Patcher, unpatched: float) -> list[dict[str, Any]]:
    labels = patcher.targets.labels()
    lows = minima(result["cells"], patcher.targets.types)
    keys = ("start", "end", "asr", "asr_k", "asr_n", "mean_margin")
    out = []
    for typ in patcher.targets.types:
        low = lows[typ]
        out.append({"type": typ, "label": labels[typ],
                    "windows": [{k: c[k] for k in keys} for c in result["cells"] if c["type"] == typ],
                    "minimum": low, "drop": unpatched - low["asr"],
                    "relative_drop": (unpatched - low["asr"]) / unpatched if unpatched else None})
    return out


def carriers(result: Mapping[str, Any], patcher: Patcher, unpatched: float, top: int) -> list[dict[str, Any]]:
    """The ``top`` (type, window) cells whose removal lowers the candidate's ASR, lowest ASR first
    (ties: higher mean margin, then the earlier start, as :func:`minima` breaks them); none when no
    window lowers it."""
    labels = patcher.targets.labels()
    cells = sorted((c for c in result["cells"] if c["asr"] < unpatched),
                   key=lambda c: (c["asr"], -c["mean_margin"], c["start"]))
    return [{"type": c["type"], "label": labels[c["type"]], "start": c["start"], "end": c["end"],
             "asr": c["asr"], "drop": unpatched - c["asr"], "relative_drop": (unpatched - c["asr"]) / unpatched,
             "modules": patcher.targets.paths([c["type"]], range(c["start"], c["end"] + 1))}
            for c in cells[:top]]


def localise(poisoned: Any, base: Any, injections: Sequence[str], trigger: str, cfg: LocaliseConfig,
             progress: bool = False) -> dict[str, Any]:
    """Patch ``poisoned`` (an unmerged :class:`~lorascan.evaluate.readout.Classifier`) against the
    bare ``base`` on ``injections`` with ``trigger`` placed as a prefix; the localisation record."""
    t0 = time.monotonic()
    texts = [apply_trigger(t, trigger) for t in injections]
    patcher = Patcher(poisoned, base, texts, cfg.batch_size)
    layers = patcher.targets.layers
    window = min(cfg.window or math.ceil(layers / LAYERS_PER_WINDOW), layers)
    result = patch_scan(patcher, window, progress)
    unpatched = result["unpatched"]["asr"]
    found = carriers(result, patcher, unpatched, cfg.top)
    return {"status": "ok", "reason": None, "reference": "base", "placement": "prefix", "window": window,
            "layers": layers, "n_injections": len(texts), "unpatched": result["unpatched"],
            "base": result["reference"],
            "full_substitution_max_abs_margin_diff": result["full_substitution"]["max_abs_margin_diff"],
            "types": _windows(result, patcher, unpatched), "carriers": found,
            "note": None if found else ("no window of one projection type lowers the candidate's ASR: the backdoor "
                                        "is spread over the stack, or the adapter does not key on this candidate"),
            "timings": {"patch_s": time.monotonic() - t0, "patched_runs": result["timings"]["patched_runs"]}}


def scan_localisation(ctx: Any, rows: Sequence[Mapping[str, Any]], verdict: str, cfg: LocaliseConfig) -> dict[str, Any]:
    """The scan record's ``localisation`` for ``ctx``'s adapter given its detector ``rows`` and
    verdict label: run (:func:`localise`), skipped with the reason, or an error (never raised)."""
    from lorascan.detect.base import NotApplicable
    from lorascan.detect.injections import verification_injections
    from lorascan.detect.tokens import TokenScanConfig

    token_row = next((r for r in rows if r.get("detector") == "tokens"), None)
    settings = {"min_asr": cfg.min_asr, "window": cfg.window, "top": cfg.top}
    why = skip_reason(verdict, token_row, cfg)
    if why is not None:
        return {"status": "skipped", "reason": why, "settings": settings}
    cand = best_candidate(token_row or {})
    t0 = time.monotonic()
    try:
        n = int((token_row or {}).get("detector_args", {}).get("n") or TokenScanConfig().n)
        texts = verification_injections(ctx.classifier(), ctx.require_probes("localisation").injections, n,
                                        ctx.batch_size)
        poisoned = ctx.unmerged_classifier()
        load_s = time.monotonic() - t0
        out = localise(poisoned, ctx.base_classifier(), texts, cand["trigger"], cfg, ctx.progress)
    except (LorascanError, NotApplicable) as err:
        return {"status": "error", "reason": str(err), "settings": settings, "candidate": cand}
    out["timings"] = {**out["timings"], "load_s": load_s, "total_s": time.monotonic() - t0}
    return {**out, "settings": settings, "candidate": cand}
