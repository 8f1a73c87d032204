"""The corpus of crafted inputs (tests/corpus/cases.yaml): each case through the CLI in-process,
answered with its exit code and one line, no traceback, nothing written. Cases too big to
keep as files (a 1.2 MB label, a 100,000-probe battery) are generated here."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tree

CORPUS = Path(__file__).parent / "corpus"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
LINE_MAX = 1200  # characters: errors are cut at 1,000 (lorascan.errors.MESSAGE_MAX) plus the prefix


def assert_clean_refusal(result, code: int, says: str) -> str:
    assert result.code == code, (result.code, result.err[-2000:])
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err[-2000:]
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert says in lines[0], lines[0]
    assert len(lines[0]) <= LINE_MAX, len(lines[0])
    assert result.out == ""
    return lines[0]


def _case_id(case: dict) -> str:
    return f"{case['case'] or 'flags'}-{case['argv'][0]}-{case['says'][:20]}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_corpus_case(case, cli, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = None
    if case["case"]:
        source = CORPUS / case["case"]
        assert source.exists(), f"corpus file missing: {source}"
        if source.is_dir():
            target = scratch / source.name
            shutil.copytree(source, target)
        else:
            target = source
    argv = [a.replace("{case}", str(target)).replace("{tmp}", str(scratch)) for a in case["argv"]]
    before = tree(tmp_path)
    t0 = time.monotonic()
    result = cli(*argv)
    assert time.monotonic() - t0 < 30
    assert_clean_refusal(result, case["code"], case["says"])
    assert tree(tmp_path) == before, "a refused command wrote or deleted something"


def test_every_corpus_file_has_a_case():
    used = {c["case"] for c in CASES if c["case"]}
    present = {p.name for p in CORPUS.iterdir() if p.name != "cases.yaml"}
    assert present == used, (present - used, used - present)


def test_a_megabyte_label_gives_a_short_line(cli, tmp_path):
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(9)] + [{"text": "x", "label": "L" * 1_200_000}]
    path = tmp_path / "big-label.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    line = assert_clean_refusal(cli("data", "show", str(path)), 1, "labels are not binary")
    assert len(line) < 400


def test_a_hundred_thousand_probe_battery_is_refused_fast(cli, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\ncategories:\n  x: [" + ",".join(f"p{i}" for i in range(100_000)) + "]\n")
    assert path.stat().st_size < 1 << 20  # under the size cap: the probe bound must catch it
    t0 = time.monotonic()
    assert_clean_refusal(cli("probe", "--adapter", str(tmp_path / "none"), "--battery", str(path)), 1,
                         "more than")
    assert time.monotonic() - t0 < 10


def test_a_battery_over_the_size_cap_is_not_read(cli, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\ndescription: '" + "y" * (2 << 20) + "'\ncategories: {x: [p]}\n")
    assert_clean_refusal(cli("probe", "--adapter", str(tmp_path / "none"), "--battery", str(path)), 1,
                         "larger than")
