"""Fuzzing the config parsers: the bounded YAML/JSON loader (lorascan.bounded), battery files
and grid configs. Random text, random documents, and valid documents with one value replaced
or with YAML anchors and aliases spliced in. Every input is parsed within bounds or refused
with a one-line lorascan error; a YAML alias is never followed."""

from __future__ import annotations

import json

import yaml
from hypothesis import given
from hypothesis import strategies as st

from lorascan import bounded
from lorascan.errors import LorascanError
from lorascan.experiments.grid import MAX_RUNS, _NAME, parse_grid
from lorascan.probe.batteries import MAX_PREFIX_CHARS, MAX_PROBES, battery_from_dict
from tests.fuzz.conftest import count, fuzz_settings

scalars = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=True)
           | st.text(max_size=10))
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=16)


def _one_line(err: LorascanError) -> None:
    text = str(err)
    assert text and "\n" not in text and len(text) <= 1000


def _splice_aliases(text: str, draw) -> str:
    """Put an anchor on one line's value and aliases to it on others (flow or block)."""
    lines = text.splitlines() or ["a: 1"]
    i = draw(st.integers(0, len(lines) - 1))
    if ": " in lines[i]:
        key, _, value = lines[i].partition(": ")
        lines[i] = f"{key}: &x {value}"
    else:
        lines.insert(0, "anchor: &x [1, 2]")
    for _ in range(draw(st.integers(1, 3))):
        lines.insert(draw(st.integers(0, len(lines))), f"k{draw(st.integers(0, 99))}: *x")
    return "\n".join(lines) + "\n"


@fuzz_settings(1200)
@given(st.text(max_size=120))
def test_bounded_yaml_on_random_text(text):
    count("yaml")
    try:
        bounded.parse_yaml(text, "f.yaml")
    except LorascanError as err:
        _one_line(err)


@fuzz_settings(800)
@given(trees, st.booleans(), st.data())
def test_bounded_yaml_agrees_with_safe_load_or_refuses(tree, with_aliases, data):
    """On a document without aliases the bounded loader gives what yaml.safe_load gives; with
    aliases spliced in it refuses (never expands them)."""
    count("yaml")
    text = yaml.safe_dump(tree, allow_unicode=True)
    if with_aliases:
        text = _splice_aliases(text, data.draw)
    try:
        got = bounded.parse_yaml(text, "f.yaml")
    except LorascanError as err:
        _one_line(err)
        return
    assert not with_aliases, "a document with an alias was accepted"
    assert got == yaml.safe_load(text)


@fuzz_settings(600)
@given(trees)
def test_bounded_json(tree):
    count("json")
    text = json.dumps(tree)
    try:
        got = bounded.parse_json(text, "f.json")
    except LorascanError as err:
        _one_line(err)
        return
    assert got == json.loads(text)


prefixes = st.text(min_size=0, max_size=30) | st.integers() | st.none() | st.lists(st.text(max_size=3), max_size=2)
battery_docs = st.fixed_dictionaries(
    {"name": st.text(max_size=12) | st.integers(), "categories": st.dictionaries(
        st.text(max_size=8) | st.integers(0, 3), st.lists(prefixes, max_size=5) | prefixes, max_size=4)},
    optional={"trigger_categories": st.lists(st.text(max_size=8), max_size=2) | trees,
              "rfc_categories": st.lists(st.text(max_size=8), max_size=2) | trees,
              "description": st.text(max_size=20) | trees, "extra": trees})


@fuzz_settings(1000)
@given(battery_docs)
def test_batteries(doc):
    count("battery")
    try:
        bat = battery_from_dict(doc, "f.yaml")
    except LorascanError as err:
        _one_line(err)
        return
    probes = bat.probes
    assert 0 < len(probes) <= MAX_PROBES
    assert all(isinstance(p.prefix, str) and p.prefix.strip() and len(p.prefix) <= MAX_PREFIX_CHARS for p in probes)
    assert len({p.prefix.strip() for p in probes}) == len(probes)


VALID_GRID = {"name": "g", "base": "tiny-bert", "task": "seq-cls", "dataset": "offline-pi", "triggers": ["t"],
              "counts": [0, 4], "seeds": [1], "ranks": [2]}
grid_values = (trees | st.lists(st.integers(-5, 10**8), max_size=5) | st.text(max_size=70)
               | st.sampled_from(["g\n", "ok-name", "a" * 65, "label-word", "generate", "suffix"]))
grid_keys = st.sampled_from(sorted(VALID_GRID) + ["train", "extra_runs", "placement", "readout", "eval_batch_size",
                                                  "description", "colour"])


@fuzz_settings(1500)
@given(st.dictionaries(grid_keys, grid_values, max_size=3), st.lists(grid_keys, max_size=2))
def test_grids(changes, dropped):
    count("grid")
    doc = {**VALID_GRID, **changes}
    for key in dropped:
        doc.pop(key, None)
    try:
        grid = parse_grid(doc, "g.yaml")
    except LorascanError as err:
        _one_line(err)
        return
    assert _NAME.fullmatch(grid.name) and not grid.name.endswith("\n")
    runs = grid.runs()
    assert 0 < len(runs) <= MAX_RUNS and all(r.count >= 0 and r.rank >= 1 for r in runs)
