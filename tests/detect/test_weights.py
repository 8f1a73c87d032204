"""Weight-level detector: exact features against the naive B·A + full SVD reference, module
inventory across PEFT naming variants, bad adapters, bounded memory, torch-free imports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from lorascan.detect.base import ScanContext
from lorascan.detect.adapter import inventory, locate_module, parse_key
from lorascan.detect.safetensors_reader import SafetensorsFile
from lorascan.detect.synthetic import to_storage
from lorascan.detect.weights import WeightDetector, WeightScanConfig, adapter_features, scan_weights
from lorascan.errors import DataError, UsageError
from tests.detect.adapters import make_adapter, naive_module

RTOL = 1e-5
SPECTRAL = ("spectral_entropy", "participation_ratio", "sv_max_mean", "sv_max_sum", "ab_asymmetry")


def _check_modules(scan, truth, scale_of=lambda name: 1.0):
    assert len(scan.modules) == len(truth)
    for m in scan.modules:
        a, b = truth[m.name]
        ref = naive_module(a, b, scale_of(m.name))
        assert m.frobN == pytest.approx(ref["frobN"], rel=RTOL)
        np.testing.assert_allclose(m.singular_values, ref["singular_values"], rtol=RTOL,
                                   atol=RTOL * ref["singular_values"][0])
        for feat in SPECTRAL:
            assert getattr(m, feat) == pytest.approx(ref[feat], rel=RTOL), feat
        assert (m.out_features, m.in_features, m.rank) == (b.shape[0], a.shape[1], a.shape[0])


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16", "F64"])
@pytest.mark.parametrize("shapes,rank", [
    ({"q_proj": (24, 32), "v_proj": (8, 32), "down_proj": (32, 48)}, 4),
    ({"q_proj": (96, 64), "gate_proj": (160, 64), "up_proj": (160, 64), "down_proj": (64, 160)}, 16),
    ({"k_proj": (5, 40), "o_proj": (40, 3)}, 8),  # out < r and in < r: rank-deficient B·A
])
def test_features_match_naive_reference(tmp_path, dtype, shapes, rank):
    truth = make_adapter(tmp_path / "ad", shapes=shapes, rank=rank, dtype=dtype, seed=rank)
    scan = scan_weights(tmp_path / "ad")
    _check_modules(scan, truth)
    frob = [naive_module(a, b)["frobN"] for a, b in truth.values()]
    assert scan.features["global_frobN_std"] == pytest.approx(float(np.std(frob)), rel=RTOL)
    assert scan.features["frobN_mean"] == pytest.approx(float(np.mean(frob)), rel=RTOL)
    assert scan.features["frobN_max"] == pytest.approx(max(frob), rel=RTOL)
    assert scan.unanalysed == ()


@pytest.mark.parametrize("rslora", [False, True])
def test_alpha_scaling_option(tmp_path, rslora):
    truth = make_adapter(tmp_path / "ad", rank=8, alpha=32, config={"use_rslora": rslora,
                                                                  "alpha_pattern": {"v_proj": 4}})
    scan = scan_weights(tmp_path / "ad", WeightScanConfig(scaling="alpha"))

    def scale(name):
        alpha = 4 if name.endswith("v_proj") else 32
        return alpha / (math.sqrt(8) if rslora else 8)

    _check_modules(scan, truth, scale)
    unscaled = scan_weights(tmp_path / "ad")
    q = [m for m in unscaled.modules if m.projection == "q_proj"][0]
    q_scaled = [m for m in scan.modules if m.name == q.name][0]
    assert q_scaled.frobN == pytest.approx(q.frobN * scale(q.name), rel=1e-12)
    with pytest.raises(UsageError):
        WeightScanConfig(scaling="beta")


def test_adapter_level_features(tmp_path):
    shapes = {"q_proj": (24, 32), "k_proj": (8, 32), "gate_proj": (48, 32), "down_proj": (32, 48)}
    truth = make_adapter(tmp_path / "ad", layers=3, shapes=shapes, spike=(1, "down_proj"))
    f = scan_weights(tmp_path / "ad").features
    ref = {name: naive_module(a, b) for name, (a, b) in truth.items()}
    attn = [r["frobN"] for n, r in ref.items() if "self_attn" in n]
    mlp = [r["frobN"] for n, r in ref.items() if ".mlp." in n]
    assert "n_modules" not in f  # a count, not a score a profile may calibrate on
    assert f["attn_frobN_mean"] == pytest.approx(np.mean(attn), rel=RTOL)
    assert f["mlp_frobN_mean"] == pytest.approx(np.mean(mlp), rel=RTOL)
    assert f["attn_mlp_frobN_ratio"] == pytest.approx(np.mean(attn) / np.mean(mlp), rel=RTOL)
    downs = [r["frobN"] for n, r in ref.items() if n.endswith("down_proj")]
    assert f["proj.down_proj.frobN_mean"] == pytest.approx(np.mean(downs), rel=RTOL)
    assert f["spectral_entropy_min"] == pytest.approx(min(r["spectral_entropy"] for r in ref.values()), rel=RTOL)
    assert f["ab_asymmetry_std"] == pytest.approx(np.std([r["ab_asymmetry"] for r in ref.values()]), rel=RTOL)


def test_zero_update_gives_undefined_spectrum_not_numbers(tmp_path):
    make_adapter(tmp_path / "ad", scale_b=0.0)  # PEFT's initial state: B = 0
    scan = scan_weights(tmp_path / "ad")
    assert all(m.frobN == 0.0 and m.spectral_entropy is None and m.ab_asymmetry is None for m in scan.modules)
    assert scan.features["global_frobN_std"] == 0.0 and scan.features["spectral_entropy_mean"] is None


@pytest.mark.parametrize("key,expected", [
    ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", ("model.layers.3.self_attn.q_proj", None, "A")),
    ("base_model.model.model.layers.3.mlp.up_proj.lora_B.default.weight", ("model.layers.3.mlp.up_proj", "default", "B")),
    ("model.layers.0.mlp.down_proj.lora_A.weight", ("model.layers.0.mlp.down_proj", None, "A")),
    ("transformer.h.2.attn.c_attn.lora_down.weight", ("transformer.h.2.attn.c_attn", None, "A")),
    ("unet.blocks.1.to_q.lora.up.weight", ("unet.blocks.1.to_q", None, "B")),
    ("base_model.model.model.embed_tokens.lora_embedding_A", ("model.embed_tokens", None, "A")),
    ("base_model.model.score.modules_to_save.default.weight", None),
    ("model.layers.0.mlp.up_proj.lora_B.bias", None),
    ("lora_A.weight", None),
])
def test_parse_key_variants(key, expected):
    assert parse_key(key) == expected


@pytest.mark.parametrize("base,expected", [
    ("model.layers.12.self_attn.v_proj", (12, "v_proj", "attention")),
    ("model.layers.7.mlp.gate_proj", (7, "gate_proj", "mlp")),
    ("bert.encoder.layer.4.attention.output.dense", (4, "dense", "attention")),
    ("bert.encoder.layer.4.output.dense", (4, "dense", "mlp")),
    ("transformer.h.0.mlp.c_proj", (0, "c_proj", "mlp")),
    ("model.embed_tokens", (None, "embed_tokens", "embedding")),
    ("model.layers.99999999999.x", (None, "x", "other")),
])
def test_locate_module(base, expected):
    assert locate_module(base) == expected


def test_naming_variants_pair_into_the_same_modules(tmp_path):
    plain = make_adapter(tmp_path / "a", seed=3)
    make_adapter(tmp_path / "b", seed=3, key="model.layers.{l}.{blk}.{p}.{role}.default.weight")
    make_adapter(tmp_path / "c", seed=3, roles=("lora_down", "lora_up"))
    ref = scan_weights(tmp_path / "a")
    assert {m.name for m in ref.modules} == set(plain)
    expected = {(layer, p) for layer in (0, 1) for p in ("q_proj", "v_proj", "down_proj")}
    assert {(m.layer, m.projection) for m in ref.modules} == expected
    for variant in ("b", "c"):
        other = scan_weights(tmp_path / variant)
        assert sorted(m.name.replace("[default]", "") for m in other.modules) == sorted(plain)
        assert other.features == ref.features


def test_everything_not_analysed_is_reported(tmp_path):
    extra = {
        "base_model.model.score.modules_to_save.default.weight": ("F32", np.ones((2, 32), "<f4")),
        "base_model.model.model.layers.0.mlp.extra_proj.lora_A.weight": ("F32", np.ones((4, 32), "<f4")),
        "base_model.model.model.layers.1.mlp.fp8_proj.lora_A.weight": ("F8_E4M3", np.ones((4, 8), "u1")),
        "base_model.model.model.layers.1.mlp.fp8_proj.lora_B.weight": ("F8_E4M3", np.ones((8, 4), "u1")),
        "base_model.model.model.layers.1.mlp.nan_proj.lora_A.weight": ("F32", np.full((4, 8), np.nan, "<f4")),
        "base_model.model.model.layers.1.mlp.nan_proj.lora_B.weight": ("F32", np.ones((8, 4), "<f4")),
    }
    make_adapter(tmp_path / "ad", extra=extra)
    scan = scan_weights(tmp_path / "ad")
    reasons = {u.tensor: (u.reason, u.lora) for u in scan.unanalysed}
    assert set(reasons) == set(extra)
    assert reasons["base_model.model.score.modules_to_save.default.weight"][1] is False
    assert "without its lora_B" in reasons["base_model.model.model.layers.0.mlp.extra_proj.lora_A.weight"][0]
    assert "F8_E4M3" in reasons["base_model.model.model.layers.1.mlp.fp8_proj.lora_B.weight"][0]
    assert "non-finite" in reasons["base_model.model.model.layers.1.mlp.nan_proj.lora_A.weight"][0]
    assert len(scan.modules) == 6 and scan.adapter_info()["n_modules"] == 6


@pytest.mark.parametrize("case,fragment", [
    ("shape mismatch", "A/B shape mismatch"),
    ("empty module", "empty lora_A"),
    ("rank differs", "differs from the config (r = 8)"),
    ("no config", "adapter_config.json is missing"),
    ("only bin", "only adapter_model.bin present"),
    ("no pairs", "no LoRA A/B tensor pairs"),
    ("not lora", "is not LORA"),
    ("bad alpha", "'lora_alpha' must be a number"),
])
def test_bad_adapters_are_data_errors(tmp_path, case, fragment):
    ad = tmp_path / "ad"
    if case == "shape mismatch":
        make_adapter(ad, extra={"m.layers.0.mlp.x_proj.lora_A.weight": ("F32", np.ones((4, 8), "<f4")),
                                "m.layers.0.mlp.x_proj.lora_B.weight": ("F32", np.ones((8, 3), "<f4"))})
    elif case == "empty module":
        make_adapter(ad, extra={"m.layers.0.mlp.x_proj.lora_A.weight": ("F32", np.ones((4, 0), "<f4")),
                                "m.layers.0.mlp.x_proj.lora_B.weight": ("F32", np.ones((8, 4), "<f4"))})
    elif case == "rank differs":
        make_adapter(ad, config={"r": 8})
    elif case == "no config":
        make_adapter(ad)
        (ad / "adapter_config.json").unlink()
    elif case == "only bin":
        ad.mkdir()
        (ad / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
        (ad / "adapter_config.json").write_text(json.dumps({"r": 4}))
    elif case == "no pairs":
        make_adapter(ad, shapes={}, extra={"w": ("F32", np.ones(2, "<f4"))})
    elif case == "not lora":
        make_adapter(ad, config={"peft_type": "IA3"})
    else:
        make_adapter(ad, config={"lora_alpha": "16"})
    with pytest.raises(DataError) as info:
        scan_weights(ad)
    assert fragment in str(info.value), str(info.value)


def test_rank_pattern_is_matched_literally(tmp_path):
    make_adapter(tmp_path / "ad", rank=4, config={"r": 8, "rank_pattern": {"q_proj": 4, "v_proj": 4, "down_proj": 4}})
    assert {m.rank for m in scan_weights(tmp_path / "ad").modules} == {4}
    make_adapter(tmp_path / "rx", rank=4, config={"r": 8, "rank_pattern": {"^.*proj$": 4}})
    assert len(scan_weights(tmp_path / "rx").modules) == 6  # non-literal pattern: any declared rank


def test_memory_is_bounded_by_one_module(tmp_path):
    shapes = {f"p{i}_proj": (6000, 16) for i in range(6)}  # B is 6000 x r: 768 KB as float64
    make_adapter(tmp_path / "ad", layers=4, shapes=shapes, rank=16, dtype="BF16")
    per_module = 6000 * 16 * 8 + 16 * 16 * 8
    tracemalloc.start()
    try:
        scan = scan_weights(tmp_path / "ad")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(scan.modules) == 24
    assert peak < 4 * per_module, (peak, per_module)  # the float64 copy of all modules would be 24x


def test_detector_result_and_protocol(tmp_path):
    make_adapter(tmp_path / "ad")
    det = WeightDetector(scaling="none")
    result = det.scan(ScanContext(tmp_path / "ad"))
    assert result.detector == "weights" and result.detector_args == {"scaling": "none", "include_modules": True}
    assert result.verdict.label == "uncalibrated"
    assert result.scores["global_frobN_std"] == scan_weights(tmp_path / "ad").features["global_frobN_std"]
    assert result.details["context"] == {"base_model": "tiny/base", "rank": "4", "scaling": "none"}
    json.dumps(result.to_dict())


def test_inventory_refuses_two_tensors_for_one_role(tmp_path):
    arr = to_storage(np.ones((4, 8)), "F32")
    from lorascan.detect.synthetic import write_safetensors
    path = write_safetensors(tmp_path / "d.safetensors", [
        ("m.layers.0.q_proj.lora_A.weight", "F32", (4, 8), lambda: arr),
        ("m.layers.0.q_proj.lora_down.weight", "F32", (4, 8), lambda: arr)])
    from lorascan.detect.adapter import LoraConfig
    with SafetensorsFile(path) as st, pytest.raises(DataError, match="two lora_A"):
        inventory(st.tensors, LoraConfig(r=4, lora_alpha=4, use_rslora=False, base_model=None))


def test_adapter_features_of_no_modules_are_undefined():
    f = adapter_features([])
    assert "n_modules" not in f and f["global_frobN_std"] is None and f["attn_mlp_frobN_ratio"] is None


def test_weights_path_imports_no_heavy_library(tmp_path):
    make_adapter(tmp_path / "ad")
    code = ("import sys; from lorascan.cli.main import main; "
            f"rc = main(['weights', {str(tmp_path / 'ad')!r}, '--json', {str(tmp_path / 'o.json')!r}]); "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets', 'matplotlib', 'scipy', 'pandas') "
            "if m in sys.modules]; print(rc, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr


def test_verdict_fails_closed_on_unanalysed_lora_tensors(tmp_path):
    from lorascan.detect.calibrate import CohortScores, calibrate
    from lorascan.detect.weights import weight_verdict

    cohort = CohortScores(("c0", "c1", "p0", "p1"), (0, 0, 1, 1),
                          tuple({"global_frobN_std": v} for v in (1.0, 2.0, 10.0, 11.0)))
    profile = calibrate(cohort, detector="weights", view="weights", base_model="tiny/base", n_boot=10)
    fp8 = {"base_model.model.model.layers.1.mlp.fp8_proj.lora_A.weight": ("F8_E4M3", np.ones((4, 8), "u1")),
           "base_model.model.model.layers.1.mlp.fp8_proj.lora_B.weight": ("F8_E4M3", np.ones((8, 4), "u1"))}
    make_adapter(tmp_path / "ok")
    make_adapter(tmp_path / "gap", extra=fp8)
    make_adapter(tmp_path / "head", extra={"base_model.model.score.weight": ("F32", np.ones((2, 32), "<f4"))})
    assert weight_verdict(scan_weights(tmp_path / "ok"), profile).label == "clean"
    v = weight_verdict(scan_weights(tmp_path / "gap"), profile)
    assert v.label == "suspicious" and "incomplete scan: 2 LoRA tensor(s)" in v.reasons[-1]
    v = weight_verdict(scan_weights(tmp_path / "head"), profile)
    assert v.label == "clean" and "1 non-LoRA tensor(s)" in v.reasons[-1]


def test_modules_to_save_tensors_are_measured_not_skipped(tmp_path):
    """Issue 15: a full tensor the adapter loads (a classification head) is measured."""
    head = np.full((2, 8), 0.5, dtype=np.float32)
    make_adapter(tmp_path / "ad", extra={"base_model.model.classifier.modules_to_save.default.weight": ("F32", head)})
    scan = scan_weights(tmp_path / "ad")
    (row,) = scan.extra
    assert row["tensor"].endswith("classifier.modules_to_save.default.weight") and row["shape"] == [2, 8]
    assert row["rms"] == pytest.approx(0.5) and row["max_abs"] == pytest.approx(0.5) and row["finite"]
