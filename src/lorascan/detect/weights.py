"""Weight-level detector (paper §8): exact LoRA update statistics from the safetensors alone.

Per module, ΔW = B·A (unscaled, as the paper; ``scaling="alpha"`` applies PEFT's alpha/r or
alpha/sqrt(r) with rsLoRA). B·A is never formed: with the r x r Gram cores G_A = A·Aᵀ and
G_B = Bᵀ·B (float64),

- ‖BA‖_F² = Σ (G_A ∘ G_B), so ``frobN = ‖BA‖_F / sqrt(in·out)`` (paper §8);
- the singular values of BA are the square roots of the eigenvalues of Sᵀ·G_B·S with
  S = V·Λ^½ from G_A = V·Λ·Vᵀ (a symmetric square root, so rank-deficient A needs no special
  case). The paper's nb15/27 get the same values through qr(B).

Features per module: frobN, the r singular values, spectral entropy of sv/Σsv in nats (nb15+;
nb10 divides by ln r, we do not), participation ratio (Σsv)²/Σsv², A/B asymmetry
log10(‖B‖_F/‖A‖_F) (nb15+; nb10 used the natural log), sv max/mean and max/sum. Adapter level:
``global_frobN_std`` (population std of frobN over modules), frobN mean/max/min, entropy and
participation-ratio mean/min, asymmetry mean/std, attention vs MLP means and their ratio,
per-projection frobN means (``proj.<name>.frobN_mean``), and per layer the frobN and spectral
entropy means (``layer.<i>.frobN_mean``, ``layer.<i>.spectral_entropy_mean``). A score that is undefined (e.g. the
entropy of an all-zero update, PEFT's initial state) is None, never a made-up number.

Modules are read one at a time from the memory map, their pages released afterwards, so
memory is bounded by the largest module, not the file. No torch import on this path.

Fail closed: a module whose update overflows float64 (or whose eigen-decomposition fails) is
reported as unanalysed, never dropped from the statistics, so the verdict cannot be "clean";
an adapter-level feature that is not finite makes the scan a DataError. Besides the
safetensors and ``adapter_config.json``, the scan reads the base fingerprint from
``lorascan.json`` when the folder has one, so a profile of another base shape does not apply.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lorascan.detect.adapter import (AdapterFiles, LoraConfig, ModulePair, Unanalysed, inventory, locate,
                                    read_base_fingerprint, read_config)
from lorascan.detect.base import Detector, DetectorResult, ScanContext
from lorascan.detect.verdict import Verdict
from lorascan.detect.safetensors_reader import SafetensorsFile, UnsupportedTensor
from lorascan.errors import DataError, UsageError
from lorascan.records import record_header

SCALINGS = ("none", "alpha")
#: per-layer features only up to this many layers (the largest packaged base has 30; a 7B model
#: 28-32, a 70B 80): an adapter claiming thousands of layers must not grow a record by thousands
#: of scores
MAX_LAYER_FEATURES = 128
CALIBRATE_HINT = "lorascan weights-calibrate COHORT --out PROFILE.json"


@dataclass(frozen=True)
class WeightScanConfig:
    """How to scan. ``scaling``: "none" = B·A as in the paper (§8), "alpha" = PEFT's effective
    update (alpha/r, or alpha/sqrt(r) with rsLoRA)."""

    scaling: str = "none"

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise UsageError(f"scaling must be one of {', '.join(SCALINGS)}, got {self.scaling!r}")


@dataclass(frozen=True)
class ModuleFeatures:
    name: str
    layer: int | None
    projection: str
    kind: str
    rank: int
    in_features: int
    out_features: int
    dtype: str
    scale: float
    frobN: float
    singular_values: tuple[float, ...]
    spectral_entropy: float | None
    participation_ratio: float | None
    ab_asymmetry: float | None
    sv_max_mean: float | None
    sv_max_sum: float | None
    norm_a: float
    norm_b: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def lowrank_spectrum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Singular values of B·A (descending, r of them), ‖BA‖_F², ‖A‖_F² and ‖B‖_F².

    ``a`` is (r, in), ``b`` is (out, r), both float64. Cost O((in + out)·r²), memory O(r²)
    beyond the inputs. Raises FloatingPointError unless every intermediate is finite: values
    that overflow float64 (e.g. F64 tensors of ~1e77, whose ‖BA‖_F² is inf) must not turn into
    NaN singular values that later statistics would drop (fail closed)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked explicitly below
        g_a = a @ a.T
        g_b = b.T @ b
        if not (np.isfinite(g_a).all() and np.isfinite(g_b).all()):
            raise FloatingPointError("non-finite values (NaN/inf, or overflow of the Gram matrices)")
        fro2 = float(np.sum(g_a * g_b))
        sq_a, sq_b = float(np.trace(g_a)), float(np.trace(g_b))
        if not (math.isfinite(fro2) and math.isfinite(sq_a) and math.isfinite(sq_b)):
            raise FloatingPointError("‖B·A‖ overflows float64")
        lam, vecs = np.linalg.eigh(g_a)
        half = vecs * np.sqrt(np.clip(lam, 0.0, None))
        core = half.T @ g_b @ half
        if not (np.isfinite(lam).all() and np.isfinite(core).all()):
            raise FloatingPointError("the spectrum of B·A overflows float64")
        ev = np.linalg.eigvalsh((core + core.T) * 0.5)
        if not np.isfinite(ev).all():
            raise FloatingPointError("the spectrum of B·A is not finite")
    return np.sqrt(np.clip(ev, 0.0, None))[::-1], max(fro2, 0.0), sq_a, sq_b


def spectrum_features(sv: np.ndarray) -> dict[str, float | None]:
    """Entropy (nats), participation ratio, max/mean and max/sum of a spectrum (paper §8)."""
    with np.errstate(over="ignore", invalid="ignore"):  # checked by module_features
        total = float(np.sum(sv))
        if not total > 0.0:
            return {"spectral_entropy": None, "participation_ratio": None, "sv_max_mean": None, "sv_max_sum": None}
        p = sv / total
        nz = p[p > 0]
        scaled = sv / sv[0]  # (Σsv)²/Σsv² computed on sv/max, so squares cannot overflow
        return {"spectral_entropy": float(-np.sum(nz * np.log(nz))),
                "participation_ratio": float(np.sum(scaled)) ** 2 / float(np.sum(scaled * scaled)),
                "sv_max_mean": float(sv[0] / np.mean(sv)), "sv_max_sum": float(sv[0] / total)}


def module_features(pair: ModulePair, a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> ModuleFeatures:
    """All per-module features of ΔW = scale·B·A from A (r, in) and B (out, r)."""
    sv, fro2, sq_a, sq_b = lowrank_spectrum(a, b)
    with np.errstate(over="ignore", invalid="ignore"):
        sv = sv * abs(scale)
    norm_a, norm_b = math.sqrt(sq_a), math.sqrt(sq_b)
    asym = math.log10(norm_b / norm_a) if norm_a > 0 and norm_b > 0 else None
    feats = ModuleFeatures(
        name=pair.name, layer=pair.layer, projection=pair.projection, kind=pair.kind, rank=pair.rank,
        in_features=a.shape[1], out_features=b.shape[0], dtype=pair.a.dtype, scale=scale,
        frobN=abs(scale) * math.sqrt(fro2) / math.sqrt(a.shape[1] * b.shape[0]) if a.size and b.size else 0.0,
        singular_values=tuple(float(s) for s in sv), ab_asymmetry=asym, norm_a=norm_a, norm_b=norm_b,
        **spectrum_features(sv))
    bad = [k for k, v in feats.__dict__.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad or not all(math.isfinite(s) for s in feats.singular_values):
        raise FloatingPointError(f"feature {(bad or ['singular_values'])[0]} is not finite (float64 overflow)")
    return feats


def _stat(values: Sequence[float | None], fn: str) -> float | None:
    """``np.<fn>`` of the defined values (None = undefined score, left out). A non-finite value,
    or a result that overflows, is a FloatingPointError: dropping it would let a module vanish
    from ``global_frobN_std`` (fail open)."""
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return None
    if not np.isfinite(arr).all():
        raise FloatingPointError(f"non-finite module value in the {fn} of a feature")
    with np.errstate(over="ignore", invalid="ignore"):
        out = float(getattr(np, fn)(arr))
    if not math.isfinite(out):
        raise FloatingPointError(f"the {fn} of a feature overflows float64")
    return out


def adapter_features(modules: Sequence[ModuleFeatures]) -> dict[str, float | None]:
    """Adapter-level features (paper §8); ``global_frobN_std`` is numpy's population std. Only
    scores a profile may calibrate on: counts (the number of modules) are in
    :meth:`WeightScan.adapter_info`, not here. FloatingPointError when a value is not finite."""
    frob = [m.frobN for m in modules]
    out: dict[str, float | None] = {
        "global_frobN_std": _stat(frob, "std"), "frobN_mean": _stat(frob, "mean"),
        "frobN_max": _stat(frob, "max"), "frobN_min": _stat(frob, "min"),
    }
    for feat in ("spectral_entropy", "participation_ratio"):
        vals = [getattr(m, feat) for m in modules]
        out[f"{feat}_mean"], out[f"{feat}_min"] = _stat(vals, "mean"), _stat(vals, "min")
    asym = [m.ab_asymmetry for m in modules]
    out["ab_asymmetry_mean"], out["ab_asymmetry_std"] = _stat(asym, "mean"), _stat(asym, "std")
    out["sv_max_mean_mean"] = _stat([m.sv_max_mean for m in modules], "mean")
    for kind, key in (("attention", "attn"), ("mlp", "mlp")):
        group = [m for m in modules if m.kind == kind]
        out[f"{key}_frobN_mean"] = _stat([m.frobN for m in group], "mean")
        out[f"{key}_spectral_entropy_mean"] = _stat([m.spectral_entropy for m in group], "mean")
    attn, mlp = out["attn_frobN_mean"], out["mlp_frobN_mean"]
    ratio = attn / mlp if attn is not None and mlp else None
    if ratio is not None and not math.isfinite(ratio):
        raise FloatingPointError("attn_mlp_frobN_ratio overflows float64")
    out["attn_mlp_frobN_ratio"] = ratio
    for proj in sorted({m.projection for m in modules}):
        if proj.isascii() and proj.replace("_", "").isalnum() and len(proj) <= 64:
            out[f"proj.{proj}.frobN_mean"] = _stat([m.frobN for m in modules if m.projection == proj], "mean")
    layers = sorted({m.layer for m in modules if m.layer is not None})
    if len(layers) <= MAX_LAYER_FEATURES:  # per-layer spectra (issue 12's weight detector v2)
        for layer in layers:
            group = [m for m in modules if m.layer == layer]
            out[f"layer.{layer}.frobN_mean"] = _stat([m.frobN for m in group], "mean")
            out[f"layer.{layer}.spectral_entropy_mean"] = _stat([m.spectral_entropy for m in group], "mean")
    return out


@dataclass(frozen=True)
class WeightScan:
    """Everything one scan found; :meth:`context` is what a profile must match."""

    files: AdapterFiles
    lora: LoraConfig
    config: WeightScanConfig
    file_size: int
    header_sha256: str
    n_tensors: int
    modules: tuple[ModuleFeatures, ...]
    unanalysed: tuple[Unanalysed, ...]
    features: dict[str, float | None]
    base_fingerprint: dict[str, Any] | None = None  # from lorascan.json beside the adapter
    extra: tuple[dict[str, Any], ...] = ()  # non-LoRA tensors the adapter loads (modules_to_save)

    def context(self) -> dict[str, str]:
        """The conditions a profile records (rank, scaling)."""
        ranks = sorted({m.rank for m in self.modules})
        return {"rank": ",".join(map(str, ranks)), "scaling": self.config.scaling}

    def full_context(self) -> dict[str, Any]:
        """What a profile is matched against: base model, its fingerprint when lorascan.json
        records one, and :meth:`context`."""
        fp = {"base_fingerprint": self.base_fingerprint} if self.base_fingerprint is not None else {}
        return {"base_model": self.lora.base_model, **fp, **self.context()}

    def adapter_info(self) -> dict[str, Any]:
        return {"path": str(self.files.folder), "weights": str(self.files.weights), "file_size": self.file_size,
                "header_sha256": self.header_sha256, "base_model": self.lora.base_model, "r": self.lora.r,
                "lora_alpha": self.lora.lora_alpha, "use_rslora": self.lora.use_rslora,
                "dtypes": sorted({m.dtype for m in self.modules}), "n_tensors": self.n_tensors,
                "n_modules": len(self.modules), "base_fingerprint": self.base_fingerprint}


def _analyse(st: SafetensorsFile, pair: ModulePair, lora: LoraConfig,
             cfg: WeightScanConfig) -> ModuleFeatures | list[Unanalysed]:
    try:
        a = st.read_float64(pair.a.name).reshape(pair.rank, -1)
        b = st.read_float64(pair.b.name).reshape(pair.out_features, pair.rank)
        scale = lora.scale_for(pair.name, pair.rank) if cfg.scaling == "alpha" else 1.0
        return module_features(pair, a, b, scale)
    except (UnsupportedTensor, FloatingPointError, np.linalg.LinAlgError) as err:
        # reported, so the verdict cannot be "clean" (weight_verdict fails closed on LoRA gaps)
        return [Unanalysed(t.name, f"module {pair.name}: {err}", lora=True) for t in (pair.a, pair.b)]
    finally:
        st.release(pair.a.name)
        st.release(pair.b.name)


def scan_weights(adapter: str | Path, config: WeightScanConfig | None = None,
                 decoys: Sequence[str] = ()) -> WeightScan:
    """Validate, inventory and featurise an adapter folder, one module at a time. ``decoys``:
    modules the base does not have (found by the scan's fit check); loaders ignore their LoRA
    pairs, so they are listed as unanalysed and kept out of the statistics (an attacker could
    otherwise dilute a backdoor's signature with inert pairs)."""
    config = config or WeightScanConfig()
    files = locate(adapter)
    lora = read_config(files.config)
    modules: list[ModuleFeatures] = []
    with SafetensorsFile(files.weights) as st:
        pairs, skipped = inventory(st.tensors, lora)
        decoy = set(decoys)
        skipped += [Unanalysed(t.name, f"decoy LoRA pair: the base has no module {p.name.split('[', 1)[0][:120]}",
                               lora=False) for p in pairs if p.name.split("[", 1)[0] in decoy for t in (p.a, p.b)]
        pairs = [p for p in pairs if p.name.split("[", 1)[0] not in decoy]
        if not pairs:
            raise DataError(f"{files.weights}: no LoRA A/B tensor pairs found ({len(st.tensors)} tensors)")
        for pair in pairs:
            got = _analyse(st, pair, lora, config)
            if isinstance(got, list):
                skipped.extend(got)
            else:
                modules.append(got)
        extra = tuple(_full_tensor(st, u.tensor) for u in skipped if not u.lora and not u.reason.startswith("decoy"))
        size, digest, n = st.size, st.header_sha256, len(st.tensors)
    if not modules:
        raise DataError(f"{files.weights}: no LoRA module could be analysed (first problem: {skipped[0].reason})")
    try:
        features = adapter_features(modules)
    except FloatingPointError as err:
        raise DataError(f"{files.weights}: adapter-level features are not finite ({err})") from None
    return WeightScan(files, lora, config, size, digest, n, tuple(modules), tuple(skipped), features,
                      read_base_fingerprint(files.folder), extra)


def _full_tensor(st: SafetensorsFile, name: str) -> dict[str, Any]:
    """Norms of a full tensor an adapter loads besides its LoRA pairs (``modules_to_save``,
    e.g. a classification head): it changes the model as much as any LoRA pair, so it is
    measured, not skipped (issue 15). One tensor in memory at a time."""
    info = st.tensors[name]
    row: dict[str, Any] = {"tensor": name, "dtype": info.dtype, "shape": list(info.shape)}
    try:
        x = st.read_float64(name)
        row.update(rms=float(np.sqrt(np.mean(x * x))) if x.size else 0.0,
                   max_abs=float(np.max(np.abs(x))) if x.size else 0.0, finite=bool(np.isfinite(x).all()))
    except UnsupportedTensor as err:
        row["error"] = str(err)[:200]
    finally:
        st.release(name)
    return row


def weight_verdict(scan: WeightScan, profile: Any) -> Verdict:
    """The profile's verdict, failing closed: a scan that left LoRA tensors unanalysed is never
    "clean" (a backdoor could hide in them); other unanalysed tensors are named in the reasons."""
    from lorascan.detect.verdict import verdict

    v = verdict(scan.features, profile, scan.full_context(), hint=CALIBRATE_HINT)
    lora_gaps = [u for u in scan.unanalysed if u.lora]
    other = len(scan.unanalysed) - len(lora_gaps)
    reasons = list(v.reasons)
    if other:
        reasons.append(f"{other} non-LoRA tensor(s) (e.g. modules_to_save) were not analysed")
    if lora_gaps and v.label == "clean":
        return Verdict("suspicious", (*reasons, f"incomplete scan: {len(lora_gaps)} LoRA tensor(s) could not be "
                                      "analysed, so the adapter cannot be called clean"), v.flagged, v.profile)
    return Verdict(v.label, tuple(reasons), v.flagged, v.profile)


class WeightDetector(Detector):
    """The paper's weight-level detector (§8) behind the common protocol: reads the adapter's
    safetensors only, never runs a model (``cost`` 0: the scan runs it first)."""

    name = "weights"
    cost = 0
    summary = "spectra and norms of B·A from the safetensors, no model run (paper §8)"
    # The scan decides on the paper's feature in the paper's direction (poisoned higher at 1.5B),
    # fixed in advance: picking the best of 20 features on a small cohort finds one that
    # separates it by chance.
    decision = ("global_frobN_std",)
    direction = "+"

    def __init__(self, scaling: str = "none", include_modules: bool = True):
        self.config = WeightScanConfig(scaling=scaling)
        self.include_modules = include_modules

    @property
    def args(self) -> dict[str, Any]:
        return {"scaling": self.config.scaling, "include_modules": self.include_modules}

    def scan(self, context: ScanContext, profile: Any = None) -> DetectorResult:
        start = time.perf_counter()
        scan = scan_weights(context.adapter, self.config, context.decoys)
        details = {"adapter": scan.adapter_info(), "context": scan.full_context(),
                   "unanalysed": [u.to_dict() for u in scan.unanalysed], "extra_tensors": list(scan.extra)}
        if self.include_modules:
            details["modules"] = [m.to_dict() for m in scan.modules]
        return DetectorResult(detector=self.name, detector_args=self.args, scores=dict(scan.features),
                              verdict=weight_verdict(scan, profile), details=details,
                              wall_time_s=time.perf_counter() - start)


RECORD_KIND = "weight_scan"


def scan_record(adapter: str | Path, config: WeightScanConfig, profile: Any = None,
                profile_path: str | None = None, include_modules: bool = False) -> dict[str, Any]:
    """The ``lorascan weights`` JSON record, built from :meth:`WeightDetector.scan` (one
    path): ``features`` (adapter level), ``modules`` (with ``include_modules``),
    ``unanalysed``, ``verdict``; raises a LorascanError on bad input."""
    result = WeightDetector(config.scaling, include_modules).scan(ScanContext(Path(adapter)), profile)
    d = result.details
    rec = {**record_header(RECORD_KIND), "status": "ok", "error": None, "detector": result.detector,
           "detector_args": {"scaling": config.scaling}, "adapter": d["adapter"],
           "profile": {"path": profile_path, "name": profile.name} if profile is not None else None,
           "features": dict(result.scores), "unanalysed": d["unanalysed"],
           "verdict": result.verdict.to_dict(), "elapsed_s": result.wall_time_s}
    if include_modules:
        rec["modules"] = d["modules"]
    return rec


def error_record(adapter: str | Path, config: WeightScanConfig | None, error: Exception) -> dict[str, Any]:
    """The record written instead when a scan fails: the error, no features, no verdict."""
    return {**record_header(RECORD_KIND), "status": "error", "error": str(error),
            "error_type": type(error).__name__, "exit_code": getattr(error, "exit_code", 1),
            "detector": WeightDetector.name, "detector_args": {"scaling": config.scaling} if config else None,
            "adapter": {"path": str(adapter)}, "features": {}, "unanalysed": [], "verdict": None}


def load_weight_profile(path: str | Path) -> Any:
    """A profile file calibrated for this detector (UsageError for another detector's)."""
    from lorascan.detect.verdict import Profile

    profile = Profile.load(path)
    if profile.detector != WeightDetector.name:
        raise UsageError(f"profile {path} is for the {profile.detector!r} detector, not {WeightDetector.name!r}")
    return profile


def config_for(scaling: str | None, profile: Any = None) -> WeightScanConfig:
    """The scan config: an explicit ``scaling``, else the profile's, else the paper's "none"."""
    if scaling is None and profile is not None:
        scaling = dict(profile.detector_args).get("scaling")
    return WeightScanConfig(scaling=scaling or "none")
