"""``lorascan sweep run|report`` through ``main(argv)``: a parallel sweep and its report, and
every bad input ending in one stderr line, the right exit code and no traceback."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.cli.helpers import assert_one_line_error
from tests.conftest import PAPER_TRIGGER
from tests.experiments.conftest import grid_dict, write_grid
from tests.train.conftest import toy_splits


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A split folder for the module."""
    from lorascan.data.samples import write_jsonl

    root = tmp_path_factory.mktemp("sweep-cli")
    ds = toy_splits(48, 24)
    write_jsonl(root / "train.jsonl", ds.train)
    write_jsonl(root / "test.jsonl", ds.test)
    return str(root)


def test_parallel_sweep_then_report(cli, tmp_path, toy):
    config = write_grid(tmp_path / "grid.yaml", toy, counts=[0, 12], seeds=[3])
    out = tmp_path / "out"
    result = cli("sweep", "run", config, "--out", out, "--workers", "2", "--quiet")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1] == f"toy: 2 of 2 runs complete in {out} (2 run now, 0 failed)"
    assert "toy: 2 runs, 0 complete, 2 to run on 2 workers" in result.err
    evals = sorted(out.rglob("eval.json"))
    assert len(evals) == 2 and all("attack_success_rate" in p.read_text() for p in evals)

    again = cli("sweep", "run", config, "--out", out, "--quiet")
    assert again.code == 0 and "(0 run now, 0 failed)" in again.out
    dry = cli("sweep", "run", config, "--out", out, "--dry-run")
    assert dry.code == 0 and dry.out.count("complete") == 3 and f"t1aa5025d = '{PAPER_TRIGGER}'" in dry.out

    report = cli("sweep", "report", out, "--config", config)
    assert report.code == 0, report.err
    assert "smallest k with mean ASR >= 0.9" in report.out or "no k reaches mean ASR >= 0.9" in report.out
    for name in ("toy-summary.json", "toy-asr.png", "toy-asr.svg", "toy-cohort.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "toy-summary.json").read_text())
    assert [p["count"] for p in summary["panels"][0]["points"]] == [0, 12]


def test_failed_runs_exit_1_after_the_sweep(cli, tmp_path, toy):
    broken = tmp_path / "broken-model"  # resolves as a model folder, fails to load in the run
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    config = write_grid(tmp_path / "grid.yaml", toy, base=str(broken), counts=[0], seeds=[1])
    out = tmp_path / "out"
    result = cli("sweep", "run", config, "--out", out, "--quiet")
    assert result.code == 1 and "Traceback" not in result.err + result.out
    assert result.err.splitlines()[-1] == ("lorascan: error: 1 of 1 runs failed (see their status.json); "
                                           "run the sweep again to retry them")
    assert re.search(r"^  failed \S*broken-model-[0-9a-f]{8}__seq-cls__t1aa5025d__k000__s1__r2: ", result.out, re.M), result.out
    (status,) = out.glob("runs/*/status.json")
    assert json.loads(status.read_text())["state"] == "failed"


@pytest.mark.parametrize("change, code, fragment", [
    ({"colour": "red"}, 2, "grid.yaml: unknown key 'colour'"),
    ({"counts": []}, 2, "grid.yaml: counts: the list is empty, so the grid has no runs"),
    ({"seeds": ["a"]}, 2, "grid.yaml: seeds[0]: expected an integer"),
    ({"train": {"epochs": "two"}}, 2, "grid.yaml: train.epochs: expected"),
    ({"dataset": "no-such-dataset"}, 2, "unknown dataset 'no-such-dataset'"),
    ({"base": "no-such-model"}, 2, "unknown base model 'no-such-model'"),
])
def test_bad_configs(cli, tmp_path, change, code, fragment):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**grid_dict("offline-pi"), **change}))
    result = cli("sweep", "run", tmp_path / "grid.yaml", "--out", tmp_path / "out")
    assert_one_line_error(result, code, fragment)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_bad_invocations(cli, tmp_path):
    config = write_grid(tmp_path / "grid.yaml", "offline-pi")
    (tmp_path / "bad.yaml").write_text("counts: [0, 1\n")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(cli("sweep", "run", tmp_path / "missing.yaml", "--out", tmp_path / "o"), 1, "grid config not found")
    assert_one_line_error(cli("sweep", "run", tmp_path / "bad.yaml", "--out", tmp_path / "o"), 1, "is not valid YAML")
    assert_one_line_error(cli("sweep", "run", config, "--out", tmp_path / "o", "--workers", "0"), 2, "--workers")
    assert_one_line_error(cli("sweep", "run", config, "--out", tmp_path / "file" / "o"), 1, "cannot write to")
    assert_one_line_error(cli("sweep", "run", config), 2, "--out")
    assert_one_line_error(cli("sweep", "report", tmp_path), 1, "holds no sweep")
    assert_one_line_error(cli("sweep", "report", tmp_path, "--low", "0.9", "--high", "0.5"), 2, "--low")
    assert_one_line_error(cli("sweep", "nope"), 2, "No such command")
