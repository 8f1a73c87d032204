"""bench/gpu.py on its CPU shape: every method timed, the limit computed, and the readouts
agreeing with each other on labels the adapter actually moves (issue 16, build item 3).

The bench is a script, not a package module, so it is loaded from its file. The run is the
smallest that still exercises every path: 21 probes x 2 injections, batches of 8 (several
batches, so sorting and padding happen), two prompts of the paper loop, one CPU thread (on
a machine other jobs share, torch's parallel regions wait for busy cores: 80x slower).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("lorascan_bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_tiny_cpu_run_times_every_method_and_the_readouts_agree(gpu_bench, tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--shape", "tiny", "--device", "cpu", "--loop-sample", "2", "--injections", "2",
                           "--batch-size", "8", "--repeats", "1", "--gemm-size", "256", "--threads", "1",
                           "--json", str(out)]) == 0
    info = json.loads(out.read_text(encoding="utf-8"))
    assert info["n_prompts"] == 42 and info["device"] == "cpu" and info["versions"]["torch"]
    assert sorted(info["rows"]) == sorted(gpu_bench.METHODS)
    for name, row in info["rows"].items():
        assert row["seconds"] > 0, name
        assert 0 < row["limit_fraction"] <= 1, name  # no readout beats the arithmetic it needs
    assert info["rows"]["paper-loop"]["timed_prompts"] == 2
    assert info["shared_prefix_tokens"] == gpu_bench.PREFIX_TOKENS
    assert 0 < info["flops"]["shared"] < info["flops"]["full"]
    checks = info["checks"]
    effect = checks["adapter_effect"]
    assert effect["labels_changed"] > 0            # the adapter matters, so agreement is not trivial
    assert 0.1 < effect["injection_fraction"] < 0.9  # both labels occur
    for name in ("paper-loop", "batched-merged", "batched-merged-shared"):
        assert checks[name]["label_agreement"] == 1.0, name
        assert checks[name]["max_margin_diff_rel"] < 1e-3, name  # float32: rounding only


def test_flop_count_shares_exactly_the_prefix(gpu_bench):
    """Sharing saves the prefix's cost once per prompt but one; a 1-token prompt costs the
    stated formula."""
    sizes = {k: v for k, v in gpu_bench.SHAPES["qwen2.5-1.5b"].items() if k != "source"}
    lengths, n = [70, 90, 120], 54
    f = gpu_bench.battery_flops(sizes, lengths, n, rank=16)
    layers, h, q = 28, 1536, 1536
    weights = f["linear_weights"] / layers
    assert weights == 1536 * 1536 * 2 + 2 * 1536 * 256 + 3 * 1536 * 8960
    prefix_cost = layers * (2 * weights * n + 2 * q * n * (n + 1))
    assert f["full"] - f["shared"] == pytest.approx((len(lengths) - 1) * prefix_cost, rel=1e-12)
    one = gpu_bench.battery_flops(sizes, [1], 0, rank=16)
    assert one["full"] == layers * (2 * weights + 4 * q) + 4 * h
    assert f["lora"] > 0 and f["tokens"] == sum(lengths)
