"""One adapter in, one scan record out (design.md "The scan").

validate files as data -> resolve the base (:mod:`lorascan.scan.inputs`) -> check the adapter
fits it and detect the formulation (:mod:`lorascan.scan.fit`) -> one :class:`ScanContext` ->
every requested detector from the registry, cheapest first -> a judgement per detector against
the base's shipped profile -> the combined verdict (:func:`lorascan.detect.verdict.combine`) ->
for a flagged adapter, the modules that carry the backdoor (:mod:`lorascan.scan.localise`).

A detector that does not apply (no behavioural formulation) or fails on this adapter is
reported with its reason and makes the verdict at least ``review``; a scan that cannot start
(missing or malformed files, wrong base) raises a one-line LorascanError and the caller writes
an error record: it is never a pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorascan.detect import DETECTORS, register_builtin_detectors
from lorascan.detect.base import NotApplicable, ScanContext
from lorascan.detect.verdict import Judgement, combine, judge
from lorascan.errors import LorascanError, UsageError
from lorascan.records import record_header, sha256_file
from lorascan.scan import fit
from lorascan.scan.inputs import CONFIG, WEIGHTS, AdapterInput
from lorascan.scan.localise import LocaliseConfig, scan_localisation

RECORD_KIND = "scan"
DEFAULT_DETECTORS = ("weights", "behavioral", "tokens", "generative", "chat-tokens")
# Arguments the scan builds each detector with: behavioural over every probe of the paper's 21-prefix
# battery (view A: a scan does not know the trigger, so none is left out for being it).
SCAN_ARGS: dict[str, dict[str, Any]] = {"weights": {"include_modules": False},
                                        "behavioral": {"battery": "paper-21", "view": "A"}}
CONFIG_FIELDS = ("peft_type", "task_type", "r", "lora_alpha", "target_modules", "modules_to_save",
                 "base_model_name_or_path", "revision", "use_rslora", "use_dora")


@dataclass(frozen=True)
class ScanConfig:
    """How to scan. ``base``/``task`` override what the adapter's config says; ``detectors``
    by registry name; ``probe_data`` a shipped probe set or a JSONL file; ``profiles`` a
    profile-set file instead of the shipped one for the base; ``token_reference`` the token
    scan's clean reference (``auto``: the shipped one for the base; ``none``; a file);
    ``clean_reference`` the phrase search's clean reference adapters (``auto``: the ones shipped
    for the base; ``none``; folders separated by commas); ``localise``: localise the backdoor of a flagged adapter (:mod:`lorascan.scan.localise`)."""

    base: str | None = None
    task: str | None = None
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    probe_data: str = "offline-pi-v1"
    profiles: str | None = None
    device: str = "auto"
    batch_size: int = 32
    progress: bool = False
    token_reference: str = "auto"
    localise: bool = True
    clean_reference: str = "auto"

    def __post_init__(self) -> None:
        registry = register_builtin_detectors(DETECTORS.copy())
        unknown = [d for d in self.detectors if d not in registry]
        if not self.detectors or unknown:
            raise UsageError(f"unknown detector '{unknown[0] if unknown else ''}' (known: {', '.join(registry.names())})")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {self.batch_size}")
        if not isinstance(self.localise, bool):
            raise UsageError(f"localise must be true or false, got {self.localise!r}")


def _adapter_info(inp: AdapterInput, cfg: dict[str, Any]) -> dict[str, Any]:
    folder = inp.folder
    return {**inp.describe(), "files": {n: sha256_file(folder / n) for n in (CONFIG, WEIGHTS)},
            "config": {k: cfg.get(k) for k in CONFIG_FIELDS if k in cfg},
            "has_lorascan_json": (folder / "lorascan.json").is_file()}


def build_context(inp: AdapterInput, config: ScanConfig, pool: Any = None) -> tuple[ScanContext, list[dict[str, Any]]]:
    """Validate, resolve, fit-check: the context for one adapter and the structural findings."""
    from lorascan.models.adapter_files import check_adapter_folder
    from lorascan.probe.inputs import load_probe_inputs
    from lorascan.scan.inputs import resolve_scan_base

    cfg = check_adapter_folder(inp.folder)  # files validated as data before anything else
    base, base_source = resolve_scan_base(cfg, config.base)
    pairs, unanalysed = fit.adapter_layout(inp.folder)
    task, task_source = fit.detect_task(cfg, unanalysed, base, config.task)
    findings = fit.check_fit(pairs, fit.base_shapes(base, task or "seq-cls"), base)
    others = [u.tensor for u in unanalysed if not u.lora]
    if others:
        findings.append({"kind": "extra_tensors", "level": "allow", "count": len(others), "tensors": others[:20],
                         "message": f"{len(others)} non-LoRA tensor(s) (e.g. {others[0][:80]}) load with the adapter "
                                    "and are read by the behavioural detectors through the model, not by the weight "
                                    "statistics"})
    decoys = tuple(m for f in findings if f["kind"] == "decoy_modules" for m in f.pop("all"))
    ctx = ScanContext(inp.folder, cfg, base, base_source, task, task_source, device=config.device,
                      probes=load_probe_inputs(config.probe_data), progress=config.progress,
                      batch_size=config.batch_size, pool=pool, decoys=decoys)
    return ctx, findings


def _confirm_task(ctx: ScanContext) -> None:
    """label-word only when the adapter answers the paper's prompt with label words."""
    if ctx.task != "label-word" or ctx.task_source == "--task":
        return
    share = fit.answers_in_label_words(ctx.classifier(), ctx.probes.injections[:8] + ctx.probes.benign[:8])
    if share < fit.MIN_LABEL_WORD_ANSWERS:
        ctx.set_task("chat", f"the adapter answers only {share:.0%} of the paper's classifier prompts with "
                             "INJECTION/BENIGN: not a label-word classifier, read as a chat adapter (generative "
                             "detectors; the classifier ones do not apply)")
    else:
        ctx.set_task(ctx.task, f"causal LM with a chat template; answers {share:.0%} of probe prompts with a label word")


def _detector_args(name: str, config: ScanConfig) -> dict[str, Any]:
    args = dict(SCAN_ARGS.get(name, {}))
    if name in ("tokens", "phrases") and config.token_reference != "auto":
        args["reference"] = config.token_reference
    if name == "phrases" and config.clean_reference != "auto":
        args["clean"] = config.clean_reference
    return args


def _unscored_row(det: Any, status: str, reason: str, judgement: Judgement, t0: float) -> dict[str, Any]:
    """The record row of a detector that gave no scores (not applicable, or failed)."""
    return {"detector": det.name, "detector_args": det.args, "status": status, "reason": reason, "scores": {},
            "judgement": judgement.to_dict(), "wall_time_s": time.perf_counter() - t0}


def run_detectors(ctx: ScanContext, config: ScanConfig, profiles: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Judgement]]:
    registry = register_builtin_detectors(DETECTORS.copy())
    detectors = [registry.create(n, **_detector_args(n, config)) for n in config.detectors]
    detectors.sort(key=lambda d: d.cost)
    rows, judgements = [], {}
    confirmed = False
    for det in detectors:
        t0 = time.perf_counter()
        profile = profiles.get(det.name)
        try:
            if det.cost > 0 and not confirmed:
                confirmed = True
                _confirm_task(ctx)
            if det.tasks is not None and ctx.task is not None and ctx.task not in det.tasks:
                why = f"reads {' and '.join(det.tasks)} adapters; this one is read as {ctx.task}"
                # no say in the verdict (not in judgements): the formulation, not the adapter, rules it out
                aside = Judgement("allow", False, (f"not applicable: {why}",))
                rows.append(_unscored_row(det, "not_applicable", why, aside, t0))
                continue
            result = det.scan(ctx, None)
        except NotApplicable as why:
            judgements[det.name] = Judgement("review", True, (f"not applicable: {why}",))
            rows.append(_unscored_row(det, "not_applicable", str(why), judgements[det.name], t0))
            continue
        except LorascanError as err:
            judgements[det.name] = Judgement("review", True, (f"failed: {err}",))
            rows.append(_unscored_row(det, "error", str(err), judgements[det.name], t0))
            continue
        context = dict(result.details.get("context") or {})
        context["base_model"] = ctx.base
        j = judge(result.scores, profile, context)
        row = result.to_dict()
        if profile is not None and profile.model is not None:  # the learned score beside the measured ones
            row["scores"] = profile.with_model(row["scores"])
        row.update(status="ok", judgement=j.to_dict(), profile=profile.name if profile is not None else None,
                   wall_time_s=time.perf_counter() - t0)
        rows.append(row)
        judgements[det.name] = j
    return rows, judgements


def scan_settings(config: ScanConfig) -> dict[str, Any]:
    """Everything besides the adapter's files that a scan's verdict depends on: the lorascan
    version, base and task overrides, each detector with its arguments, the probe set, and the
    profiles and token reference files by content (the shipped ones included). A batch reuses
    a record only when these are the same (:mod:`lorascan.scan.batch`). ``localise`` is not
    among them: localisation explains a verdict and never changes it, so a resumed batch keeps
    records made with another ``localise`` setting."""
    from lorascan import __version__
    from lorascan.detect import clean_reference, token_reference
    from lorascan.detect import profiles as shipped_profiles

    def content(path: str | None) -> str | None:
        return sha256_file(path) if path and Path(path).is_file() else path

    registry = register_builtin_detectors(DETECTORS.copy())
    profiles = ({"file": content(config.profiles)} if config.profiles else
                {k: sha256_file(v) for k, v in shipped_profiles.shipped().items()})
    reference = (config.token_reference if config.token_reference == "none" else
                 {"file": content(config.token_reference)} if config.token_reference != "auto" else
                 {k: sha256_file(v) for k, v in token_reference.shipped().items()})
    out = {"lorascan_version": __version__, "base": config.base, "task": config.task,
           "detectors": {n: registry.create(n, **_detector_args(n, config)).args for n in config.detectors},
           "probe_data": {"name": config.probe_data, "content": content(config.probe_data)},
           "profiles": profiles, "token_reference": reference}
    if "phrases" in config.detectors:  # the only reader of the clean reference adapters
        out["clean_reference"] = (
            {k: sha256_file(v / "adapter_model.safetensors") for k, v in clean_reference.shipped().items()}
            if config.clean_reference == "auto" else config.clean_reference)
    return out


def settings_digest(config: ScanConfig) -> str:
    """SHA-256 of :func:`scan_settings` as canonical JSON."""
    import hashlib
    import json

    text = json.dumps(scan_settings(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def scan_adapter(inp: AdapterInput, config: ScanConfig, pool: Any = None) -> dict[str, Any]:
    """The scan record of one adapter; raises a LorascanError when the scan cannot start."""
    from lorascan.detect.profiles import profiles_for

    t0 = time.perf_counter()
    ctx, findings = build_context(inp, config, pool)
    profiles, profile_source = profiles_for(ctx.base, config.profiles)
    rows, judgements = run_detectors(ctx, config, profiles)
    verdict = combine(judgements, [f for f in findings if f.get("level") != "allow"])
    localisation = scan_localisation(ctx, rows, verdict["label"],
                                     LocaliseConfig(enabled=config.localise, batch_size=config.batch_size))
    fp = None
    if ctx.loaded_classifier is not None:
        from lorascan.models.loading import base_fingerprint

        fp = base_fingerprint(ctx.loaded_classifier.model.config)
    return {**record_header(RECORD_KIND), "status": "ok", "error": None,
            "adapter": _adapter_info(inp, ctx.adapter_config),
            "base": {"name": ctx.base, "source": ctx.base_source, "fingerprint": fp},
            "task": {"name": ctx.task, "source": ctx.task_source},
            "probe_inputs": ctx.probes.describe() if ctx.probes else None,
            "profiles": profile_source, "findings": findings, "detectors": rows, "verdict": verdict,
            "localisation": localisation,
            "settings_sha256": settings_digest(config), "wall_time_s": time.perf_counter() - t0}


def error_record(spec: str, error: Exception) -> dict[str, Any]:
    """The record of an adapter that could not be scanned (never a pass)."""
    return {**record_header(RECORD_KIND), "status": "error", "error": str(error),
            "exit_code": getattr(error, "exit_code", 1), "adapter": {"spec": spec, "path": str(Path(spec))},
            "findings": [], "detectors": [],
            "verdict": {"label": "error", "reasons": [f"not scanned: {error}"], "rule": ""}}
