"""Crash safety (issue 15): ``sweep run`` and ``train --out --force`` killed with SIGKILL at
seeded points (the N-th file-system write of the process, see tests/crash_child.py), then
looked at and resumed. Afterwards no run is recorded done that is not, none is lost or done
twice, no half-written record is read as valid, and nothing partial is left behind.

Each kill costs a fresh process (torch import, model build), so the tests are marked slow:
``make test`` runs them, ``make test-fast`` does not."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lorascan.data.prepared import load_prepared
from lorascan.errors import DataError
from lorascan.experiments import rundir
from lorascan.experiments.executors import SerialExecutor
from lorascan.experiments.sweep import run_sweep
from lorascan.models.adapter_files import check_adapter_folder
from lorascan.records import check_output_dir, foreign_entries, read_json
from tests.conftest import tree
from tests.experiments.conftest import make_grid, toy_folder, write_grid  # noqa: F401 - toy_folder is a fixture

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SEED = 15  # the issue number: the kill points are random but the same on every run
N_KILLS = 3
TRAIN_ARGS = ["--base", "tiny-bert", "--steps", "2", "--max-length", "32", "--batch-size", "8", "--quiet"]


def _count_events(argv: list[str], tmp: Path) -> int:
    """File-system writes of ``lorascan ARGV`` run to the end in a child (no kill)."""
    count = tmp / "events"
    proc = _child(0, count, argv)
    assert proc.returncode == 0, proc.stdout[-2000:]
    return int(count.read_text())


def _child(kill_at: int, count: Path, argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + str(REPO)}
    return subprocess.run([sys.executable, "-m", "tests.crash_child", str(kill_at), str(count), *argv],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300, cwd=REPO)


def _kill_points(n_events: int, salt: str) -> list[int]:
    rng = random.Random(f"{SEED}:{salt}")
    return sorted(rng.sample(range(1, n_events), min(N_KILLS, n_events - 1)))


def _leftovers(root: Path) -> list[str]:
    """Temporary files and folders of atomic writes anywhere under ``root``."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*")
                  if p.name.endswith((".partial", ".old", ".tmp")) or p.name.startswith(".write-test."))


def _visible_records_parse(root: Path) -> None:
    """No half-written record: every JSON file outside a hidden temporary folder parses."""
    for path in root.rglob("*.json"):
        if not any(part.startswith(".") for part in path.relative_to(root).parts):
            read_json(path)


def _complete_runs(out: Path, run_ids: list[str]) -> dict[str, str]:
    """Run id -> sha256 of eval.json for every run complete in ``out``; checks that a run
    recorded complete (status or record) is whole: its data and adapter load."""
    done = {}
    for rid in run_ids:
        folder = rundir.run_dir(out, rid)
        if not folder.is_dir():
            continue
        result = rundir.load_result(folder)
        if rundir.read_status(folder).get("state") == "complete":
            assert result is not None, f"{rid}: status says complete, the record does not"
        if result is not None:
            load_prepared(folder / "data")
            check_adapter_folder(folder / "adapter")
            assert foreign_entries(folder / "adapter") == [] and foreign_entries(folder / "data") == []
            done[rid] = hashlib.sha256((folder / rundir.EVAL_FILE).read_bytes()).hexdigest()
    return done


@pytest.fixture
def trained(monkeypatch):
    """Counts train_adapter calls by run id (the runs a resumed sweep does)."""
    import lorascan.train.lora as lora

    seen: Counter = Counter()
    real = lora.train_adapter

    def train(base, data_dir, out, cfg, force=False, progress=True):
        seen[Path(out).parent.name] += 1
        return real(base, data_dir, out, cfg, force=force, progress=progress)

    monkeypatch.setattr(lora, "train_adapter", train)
    return seen


def test_sweep_killed_at_seeded_points_resumes_exactly(tmp_path, toy_folder, trained):
    config = write_grid(tmp_path / "grid.yaml", toy_folder, counts=[0, 6], seeds=[1])
    grid = make_grid(toy_folder, counts=[0, 6], seeds=[1])
    run_ids = [r.id for r in grid.runs()]
    argv = ["sweep", "run", str(config), "--quiet"]
    n_events = _count_events(argv + ["--out", str(tmp_path / "reference")], tmp_path)
    for kill_at in _kill_points(n_events, "sweep"):
        out = tmp_path / f"out-{kill_at}"
        proc = _child(kill_at, tmp_path / "unused", argv + ["--out", str(out)])
        assert proc.returncode == -9, (kill_at, proc.returncode, proc.stdout[-1000:])
        _visible_records_parse(out)
        before = _complete_runs(out, run_ids)
        trained.clear()
        outcome = run_sweep(grid, out, SerialExecutor(), progress=False)
        assert not outcome.failed
        after = _complete_runs(out, run_ids)
        assert sorted(after) == sorted(run_ids), f"kill at {kill_at}: a run was lost"
        assert all(after[r] == before[r] for r in before), f"kill at {kill_at}: a finished run was redone"
        assert sorted(trained) == sorted(set(run_ids) - set(before)) and set(trained.values()) <= {1}
        assert _leftovers(out) == [], f"kill at {kill_at}: left {_leftovers(out)}"


def _adapter_state(folder: Path) -> str:
    """'old', 'new' or 'missing'; anything else (a half-written adapter) fails the test."""
    if not folder.exists():
        return "missing"
    check_adapter_folder(folder)
    assert foreign_entries(folder) == []
    return "new" if json.loads((folder / "lorascan.json").read_text())["seed"] == 7 else "old"


def test_train_out_force_killed_at_seeded_points(tmp_path, toy_data, cli):
    data = toy_data["poisoned"]
    old = tmp_path / "old-adapter"
    assert cli("train", *TRAIN_ARGS, "--data", str(data), "--out", str(old), "--seed", "3").code == 0
    old_tree = tree(old)
    argv = ["train", *TRAIN_ARGS, "--data", str(data), "--seed", "7", "--force"]
    probe = tmp_path / "probe"
    probe.mkdir()
    shutil.copytree(old, probe / "a")  # a copy keeps the marker valid (same listing)
    n_events = _count_events(argv + ["--out", str(probe / "a")], tmp_path)
    for kill_at in _kill_points(n_events, "train"):
        parent = tmp_path / f"k{kill_at}"
        parent.mkdir()
        target = parent / "adapter"
        shutil.copytree(old, target)
        proc = _child(kill_at, tmp_path / "unused", argv + ["--out", str(target)])
        assert proc.returncode == -9, (kill_at, proc.returncode, proc.stdout[-1000:])
        state = _adapter_state(target)
        if state == "old":
            assert tree(target) == old_tree
        if state == "missing":  # killed between moving the old adapter aside and renaming the new one in
            assert any(p.name.endswith(".old") for p in parent.iterdir())
        check_output_dir(target, force=True)  # what the next command does first: repair
        assert _adapter_state(target) in ("old", "new")
        assert [p.name for p in parent.iterdir()] == ["adapter"], f"kill at {kill_at}: left {_leftovers(parent)}"
        assert cli(*argv, "--out", str(target)).code == 0
        assert _adapter_state(target) == "new" and [p.name for p in parent.iterdir()] == ["adapter"]


def test_a_truncated_record_is_never_valid(tmp_path, toy_folder):
    """Every prefix of a finished run's eval.json, run.json and the adapter's marker reads as
    not complete / not lorascan's, never as a valid record."""
    from tests.experiments.conftest import write_fake_run
    from lorascan.records import read_marker, write_marker

    run = make_grid(toy_folder).runs()[0]
    folder = write_fake_run(tmp_path / "out", run, asr=0.5)
    write_marker(folder, "test")
    for name in (rundir.EVAL_FILE, rundir.RUN_FILE, ".lorascan"):
        full = (folder / name).read_bytes()
        assert rundir.load_result(folder) is not None and read_marker(folder) is not None
        end = len(full.rstrip())  # cutting only the final newline leaves the same record
        for cut in sorted({0, 1, end // 3, end // 2, end - 2, end - 1}):
            (folder / name).write_bytes(full[:cut])
            if name == ".lorascan":
                assert read_marker(folder) is None
            else:
                assert rundir.load_result(folder) is None, (name, cut)
        (folder / name).write_bytes(full)
    with pytest.raises(DataError):
        read_json(_truncate(folder / rundir.EVAL_FILE))


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-3])
    return path


def test_batch_scan_killed_at_seeded_points_resumes_exactly(tmp_path, tiny_adapters):
    """A batch scan killed anywhere leaves only whole records; the rerun scans exactly the
    adapters without one and leaves the others' records untouched."""
    src = tiny_adapters[("tiny-bert", "seq-cls", "clean")]
    batch = tmp_path / "adapters"
    for i in range(3):
        (batch / f"a{i}").mkdir(parents=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(src / name, batch / f"a{i}" / name)
    argv = ["scan", str(batch), "--base", "tiny-bert", "--detectors", "weights", "--quiet"]
    n_events = _count_events(argv + ["--out", str(tmp_path / "reference")], tmp_path)
    for kill_at in _kill_points(n_events, "scan"):
        out = tmp_path / f"out-{kill_at}"
        proc = _child(kill_at, tmp_path / "unused", argv + ["--out", str(out)])
        assert proc.returncode == -9, (kill_at, proc.returncode, proc.stdout[-1000:])
        _visible_records_parse(out)
        records = out / "records"
        before = {p.name: p.read_bytes() for p in records.glob("*.json")} if records.is_dir() else {}
        for body in before.values():
            assert json.loads(body)["status"] == "ok"
        proc = _child(0, tmp_path / "unused", argv + ["--out", str(out)])
        assert proc.returncode == 0, proc.stdout[-1000:]
        after = {p.name: p.read_bytes() for p in records.glob("*.json")}
        assert len(after) == 3 and all(after[n] == b for n, b in before.items()), f"kill at {kill_at}"
        summary = json.loads((out / "summary.json").read_text())
        assert [a["status"] for a in summary["adapters"]] == ["ok"] * 3
        assert _leftovers(out) == [], f"kill at {kill_at}: left {_leftovers(out)}"
