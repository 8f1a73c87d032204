"""Batch scans on a local Ray (the session's, 2 CPUs): the same records and summary as a local
batch, one task per adapter; an adapter whose worker is lost for good is recorded as not
scanned (never a verdict) and scanned again by the next batch, which keeps the other records."""

from __future__ import annotations

import json

import pytest

from lorascan.errors import UsageError
from lorascan.experiments.ray_executor import RayExecutor
from lorascan.scan.batch import record_name, run_batch
from lorascan.scan.pipeline import ScanConfig
from tests.experiments.ray_cluster import KillOnce, Wrapped, attempts, local_ray

CONFIG = ScanConfig(base="tiny-bert", detectors=("weights", "behavioral"))


@pytest.fixture(scope="module")
def ray_up():
    return local_ray()


def _scores(rec: dict) -> list[tuple[str, str, float | None]]:
    return [(d["detector"], d["status"], d.get("score")) for d in rec["detectors"]]


def test_batch_on_ray_matches_local_and_a_lost_worker_is_scanned_again(ray_up, tiny_adapters, tmp_path):
    clean, poisoned = (str(tiny_adapters[("tiny-bert", "seq-cls", k)]) for k in ("clean", "poisoned"))
    entries = [clean, str(tmp_path / "gone"), poisoned]
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "ray"
    ex = Wrapped(RayExecutor(max_retries=0), lambda fn: KillOnce(fn, poisoned, str(marks), "lorascan.scan.batch:scan_adapter"))
    first = run_batch(entries, CONFIG, out, executor=ex)
    assert [a["status"] for a in first["adapters"]] == ["ok", "error", "error"] and (marks / "killed").exists()
    assert first["adapters"][2]["verdict"] == "error"  # never a verdict
    assert f"cannot scan {poisoned}: worker lost after 1 attempt: WorkerCrashedError" in first["adapters"][2]["error"]
    assert sorted(j.spec for j in ex.jobs) == sorted(entries) and {j.threads for j in ex.jobs} == {1}
    kept = (out / "records" / record_name(clean)).stat().st_mtime_ns

    again = run_batch(entries, CONFIG, out, executor=RayExecutor())
    assert [a["status"] for a in again["adapters"]] == ["ok", "error", "ok"]
    assert (out / "records" / record_name(clean)).stat().st_mtime_ns == kept  # resumed, not rescanned
    assert sorted(attempts(marks)) == sorted(entries)  # the second batch ran without the wrapper

    local = run_batch(entries, CONFIG, tmp_path / "local")
    for row_ray, row_local in zip(again["adapters"], local["adapters"]):
        assert (row_ray["status"], row_ray["verdict"]) == (row_local["status"], row_local["verdict"])
        if row_ray["status"] == "ok":
            on_ray, here = (json.loads((root / row["record"]).read_text())
                            for root, row in ((out, row_ray), (tmp_path / "local", row_local)))
            assert [s[:2] for s in _scores(on_ray)] == [s[:2] for s in _scores(here)]
            for (*_, a), (*_, b) in zip(_scores(on_ray), _scores(here)):  # other thread counts: float noise
                assert a == b if a is None or b is None else a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_a_scan_on_cuda_needs_a_gpu_on_the_cluster(ray_up, tiny_adapters, tmp_path):
    cuda = ScanConfig(base="tiny-bert", detectors=("weights",), device="cuda")
    with pytest.raises(UsageError, match=r"CUDA \(a GPU\)"):
        run_batch([str(tiny_adapters[("tiny-bert", "seq-cls", "clean")])], cuda, tmp_path / "o", executor=RayExecutor())
    assert list((tmp_path / "o" / "records").iterdir()) == []
