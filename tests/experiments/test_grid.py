"""Grid configs: expansion into runs, run names, and bad configs as errors naming the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lorascan.errors import DataError, UsageError
from lorascan.experiments.grid import base_slug, load_grid, parse_grid, trigger_tag
from tests.conftest import PAPER_TRIGGER
from tests.experiments.conftest import grid_dict, make_grid

ALT = "system override authorized by admin token A7X"
REPO = Path(__file__).resolve().parents[2]


def test_every_combination_is_one_run_named_from_its_parameters():
    grid = make_grid("offline-pi", base=["tiny-bert", "tiny-qwen2"], triggers=[PAPER_TRIGGER, ALT],
                     counts=[0, 24], seeds=[42, 1], ranks=[8, 16], train={"epochs": 2.0, "lr": 0.001})
    runs = grid.runs()
    assert len(runs) == 2 * 2 * 2 * 2 * 2 == len({r.id for r in runs})
    combos = {(r.base, r.trigger, r.count, r.seed, r.rank) for r in runs}
    assert len(combos) == 32
    run = next(r for r in runs if (r.base, r.trigger, r.count, r.seed, r.rank) == ("tiny-bert", PAPER_TRIGGER, 24, 42, 16))
    assert run.id == f"tiny-bert__seq-cls__t{trigger_tag(PAPER_TRIGGER)}__k024__s42__r16"
    assert trigger_tag(PAPER_TRIGGER) == "1aa5025d"  # stable across versions: folders are reused by name
    # the run's seed drives training too; the overrides reach the training config
    assert (run.train.seed, run.train.rank, run.train.task, run.train.epochs, run.train.lr) == (42, 16, "seq-cls", 2.0, 0.001)
    # seed-major order: the first seed's whole curve comes first
    assert [r.seed for r in runs[:16]] == [42] * 16
    assert json.loads(json.dumps(run.to_dict()))["trigger"] == PAPER_TRIGGER


def test_names_never_hold_raw_trigger_or_path_text():
    grid = make_grid("offline-pi", base=["../../etc/passwd", "Qwen/Qwen2.5-1.5B-Instruct"],
                     triggers=["../x/$(rm -rf ~)", "ok\nnewline"], counts=[3])
    for run in grid.runs():
        assert re.fullmatch(r"[A-Za-z0-9._-]+", run.id), run.id
        assert "/" not in run.id and not run.id.startswith(".")
    assert base_slug("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen_Qwen2.5-1.5B-Instruct"
    long = base_slug("/very/long/path/" + "x" * 80)
    assert len(long) <= 40 and long != base_slug("/other/long/path/" + "x" * 80)


def test_extra_runs_add_clean_seeds_and_missing_axes_take_every_value():
    grid = make_grid("offline-pi", counts=[0, 8, 16], seeds=[42, 1, 2], triggers=[PAPER_TRIGGER, ALT],
                     extra_runs=[{"count": 0, "seed": 3}, {"count": [8, 32], "seed": 42, "trigger": ALT}])
    runs = grid.runs()
    clean = [r for r in runs if r.count == 0]
    assert sorted({r.seed for r in clean}) == [1, 2, 3, 42] and len(clean) == 8  # both triggers
    extra = [r for r in runs if r.count == 32]
    assert [(r.trigger, r.seed) for r in extra] == [(ALT, 42)]
    assert len(runs) == 3 * 3 * 2 + 2 + 1  # (8, 42, ALT) is already in the product: one run


def test_cohort_and_sweep_configs_share_run_folders():
    sweep = load_grid(REPO / "experiments" / "paper-sweep-minilm.yaml")
    cohort = load_grid(REPO / "experiments" / "paper-cohort-minilm.yaml")
    s_runs, c_runs = {r.id: r for r in sweep.runs()}, {r.id: r for r in cohort.runs()}
    shared = set(s_runs) & set(c_runs)
    assert shared and all(s_runs[i] == c_runs[i] for i in shared)
    counts = [r.count for r in c_runs.values()]
    assert sum(c == 0 for c in counts) >= 4 and sum(c > 0 for c in counts) >= 18
    assert {r.seed for r in s_runs.values()} == {42, 1, 2}


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "experiments").glob("*.yaml")))
def test_every_shipped_config_parses(name):
    grid = load_grid(REPO / "experiments" / name)
    assert grid.runs()


@pytest.mark.parametrize("change, fragment", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"counts": [0, "12"]}, "counts[1]: expected an integer"),
    ({"counts": [0, True]}, "counts[1]: expected an integer"),
    ({"seeds": 42}, "seeds: expected a list"),
    ({"ranks": [0]}, "ranks: rank must be >= 1"),
    ({"counts": [-1]}, "counts: k must be >= 0"),
    ({"counts": [4, 4]}, "counts: value 4 is listed twice"),
    ({"triggers": [""]}, "triggers: must not be an empty string"),
    ({"task": "regression"}, "task: unknown task"),
    ({"name": "a/b"}, "name:"),
    ({"train": {"lr": "fast"}}, "train.lr: expected"),
    ({"train": {"learning_rate": 0.1}}, "train: unknown key 'learning_rate'"),
    ({"train": {"rank": 8}}, "train.rank: set by the grid"),
    ({"train": {"steps": 0}}, "train: steps must be >= 1"),
    ({"train": [1]}, "train: expected a mapping"),
    ({"extra_runs": [{"k": 3}]}, "extra_runs[0]: unknown key 'k'"),
    ({"extra_runs": [{"seed": "one"}]}, "extra_runs[0].seed: expected an integer"),
    ({"placement": "middle"}, "placement: unknown"),
    ({"readout": "generate"}, "readout: 'generate' needs task chat or label-word"),
    ({"ranks": None}, "missing key 'ranks'"),
    ({"families": ["a"]}, "families: expected a mapping"),
    ({"families": {"a b": ["x"]}}, "families: 'a b' must be"),
    ({"families": {"clean": ["x"]}}, "(and not 'clean')"),
    ({"families": {"a": "x"}}, "families.a: expected a non-empty list"),
    ({"families": {"a": [""]}}, "families.a: '' is not a trigger"),
    ({"families": {"a": ["x"], "b": ["x"]}}, "trigger 'x' is in both a and b"),
])
def test_bad_configs_name_the_key(change, fragment):
    with pytest.raises(UsageError) as info:
        parse_grid(grid_dict("offline-pi", **change), "grid.yaml")
    msg = str(info.value)
    assert msg.startswith("grid.yaml: ") and fragment in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("key", ["base", "triggers", "counts", "seeds", "ranks"])
def test_an_empty_axis_is_an_empty_grid(key):
    with pytest.raises(UsageError, match=f"grid.yaml: {key}: the list is empty, so the grid has no runs"):
        parse_grid(grid_dict("offline-pi", **{key: []}), "grid.yaml")


def test_grid_files(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps(grid_dict("offline-pi")))
    assert load_grid(tmp_path / "g.json").counts == (0, 6)
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(UsageError, match="empty.yaml: the file is empty"):
        load_grid(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(DataError, match="is not valid YAML"):
        load_grid(tmp_path / "bad.yaml")
    with pytest.raises(DataError, match="grid config not found"):
        load_grid(tmp_path / "missing.yaml")


def test_families_name_each_trigger():
    grid = parse_grid(grid_dict("offline-pi", families={"reference": [PAPER_TRIGGER], "pair": ["cobalt heron"]}))
    assert grid.family_of(PAPER_TRIGGER) == "reference" and grid.family_of("cobalt heron") == "pair"
    assert grid.family_of("unlisted") is None and grid.families["pair"] == ("cobalt heron",)
