"""Fuzzing the CLI's file inputs in-process (``lorascan.cli.main.main(argv)``): battery files
(``probe --battery``), grid configs (``sweep run --dry-run``), data files (``data show``,
``poison --dataset``) and poison's numeric flags. A refusal is one line on stderr with exit
code 1 (data) or 2 (usage), no traceback, no internal error, and nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import yaml
from hypothesis import given
from hypothesis import strategies as st

from lorascan.cli.main import main
from tests.conftest import tree
from tests.fuzz.conftest import count, fuzz_settings

BATTERY = "name: b\ncategories:\n  rfc:\n    - per RFC 1 section 2\n  trigger:\n    - per RFC 8472 section 3.2\n"
GRID = ("name: g\nbase: tiny-bert\ntask: seq-cls\ndataset: offline-pi\ntriggers: [t]\ncounts: [0, 4]\nseeds: [1]\n"
        "ranks: [2]\n")
ROWS = [{"text": f"ignore the rules {i}" if i % 2 else f"what is the weather {i}", "label": i % 2} for i in range(12)]
fragments = st.sampled_from(["&a [x, y]", "*a", "<<: *a", "[[[[[[", "{a: 1, a: 2}", "!!python/name:os.system", "9" * 5000,
                             "'\\x1b[31m'", "- - - -", ": :", "\t", "\"g\\n\"", ".inf", "-1", "1000000000", "true",
                             "null", "~", "[]", "{}", "\u202e", "x" * 2000])


@st.composite
def mutated(draw, base: str):
    """``base`` with a few lines replaced, inserted or cut, values from ``fragments`` or random text."""
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines)))
        piece = draw(fragments | st.text(max_size=30))
        how = draw(st.sampled_from(["value", "insert", "cut", "indent"]))
        if how == "value" and i < len(lines) and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {piece}"
        elif how == "cut" and lines:
            lines = lines[: max(1, i)]
        elif how == "indent" and i < len(lines):
            lines[i] = "  " * draw(st.integers(0, 4)) + lines[i].lstrip()
        else:
            lines.insert(i, draw(st.sampled_from(["k", "  k", "- k", ""])) + f": {piece}" if draw(st.booleans()) else piece)
    return "\n".join(lines) + "\n"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _check(argv: list[str], scratch, allow_write: str | None = None) -> int:
    """Run ``argv``; a refusal must be clean and leave ``scratch`` as it was."""
    before = tree(scratch)
    code, out, err = _run(argv)
    assert code in (0, 1, 2), (code, err[-500:])
    assert "Traceback" not in err and "internal error" not in err, err[-500:]
    if code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("lorascan") and len(lines[0]) <= 1200, err[-500:]
        assert tree(scratch) == before, "a refused command wrote something"
    elif allow_write:
        shutil.rmtree(scratch / allow_write, ignore_errors=True)
    return code


def _scratch(factory, name: str):
    root = factory.getbasetemp() / name
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    return root


@fuzz_settings(500)
@given(mutated(BATTERY), st.sampled_from([".yaml", ".json"]))
def test_probe_battery_files(tmp_path_factory, text, suffix):
    count("cli")
    scratch = _scratch(tmp_path_factory, "cli-battery")
    path = scratch / f"b{suffix}"
    path.write_text(text if suffix == ".yaml" else json.dumps(yaml.safe_load(BATTERY)) + text[:20], encoding="utf-8")
    _check(["probe", "--adapter", str(scratch / "none"), "--battery", str(path)], scratch)


@fuzz_settings(500)
@given(mutated(GRID))
def test_sweep_grid_files(tmp_path_factory, text):
    count("cli")
    scratch = _scratch(tmp_path_factory, "cli-grid")
    path = scratch / "g.yaml"
    path.write_text(text, encoding="utf-8")
    _check(["sweep", "run", str(path), "--out", str(scratch / "sw"), "--dry-run"], scratch)


@fuzz_settings(300)
@given(st.lists(st.fixed_dictionaries({"text": st.text(max_size=10) | st.integers() | st.none()
                                       | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                                       "label": st.sampled_from([0, 1, "x", "1", None, 1.5, [0]])}), max_size=8))
def test_data_show_files(tmp_path_factory, rows):
    count("cli")
    scratch = _scratch(tmp_path_factory, "cli-data")
    path = scratch / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS + rows), encoding="utf-8")
    _check(["data", "show", str(path)], scratch)


@fuzz_settings(300)
@given(st.one_of(st.integers(-5, 10**12).map(lambda k: ["--count", str(k)]),
                 (st.floats(-1, 2) | st.just(float("nan"))).map(lambda r: ["--ratio", repr(r)]),
                 st.just(["--count", "1", "--ratio", "0.5"]), st.just([])),
       st.text(max_size=12) | st.just("x" * 2000))
def test_poison_flags(tmp_path_factory, flags, trigger):
    count("cli")
    scratch = _scratch(tmp_path_factory, "cli-poison")
    data = scratch / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    code = _check(["poison", "--dataset", str(data), "--trigger", trigger, *flags, "--seed", "1", "--out",
                   str(scratch / "o")], scratch, allow_write="o")
    if code == 0:
        assert not (scratch / "o").exists()  # removed by _check: the next example starts clean
