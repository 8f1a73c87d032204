"""Raw label values mapped to 0 = benign / 1 = injection."""

from __future__ import annotations

import pytest

from lorascan.data.labels import map_label, map_labels, parse_label_map
from lorascan.errors import DataError, UsageError


def test_parse_label_map():
    assert parse_label_map(None) is None and parse_label_map("  ") is None
    assert parse_label_map(" ok = 0, bad=1 ,a=b=1") == {"ok": 0, "bad": 1, "a=b": 1}
    with pytest.raises(UsageError, match="'ok' is not RAW=0 or RAW=1"):
        parse_label_map("ok")
    with pytest.raises(UsageError, match="maps 'bad' to '2'"):
        parse_label_map("ok=0,bad=2")


@pytest.mark.parametrize("raw, label", [
    (0, 0), (1, 1), (0.0, 0), (1.0, 1), (True, 1), (False, 0), ("1", 1), (" 0 ", 0),
    ("BENIGN", 0), ("Injection", 1), ("malicious", 1), ("jailbreak", 1), ("safe", 0),
    (2, None), (0.5, None), ("maybe", None), (None, None), ("", None),
])
def test_default_names(raw, label):
    assert map_label(raw, None) == label


def test_an_explicit_map_replaces_the_defaults():
    m = {"ok": 0, "bad": 1}
    assert [map_label(r, m) for r in ("ok", "bad", " bad ", "benign", "OK")] == [0, 1, 1, None, None]
    assert map_label(3, {"3": 1, "4": 0}) == 1


def test_map_labels_names_the_unmappable_values():
    assert map_labels(["benign", 1, "0"], None, "f.csv") == [0, 1, 0]
    with pytest.raises(DataError, match=r"f.csv: labels are not binary \(cannot map '2', 'x'\); pass --label-map"):
        map_labels(["benign", "2", "x", "x"], None, "f.csv")
    with pytest.raises(DataError, match=r"cannot map 0, 1, 2, 3, 4 \.\.\.\)"):
        map_labels(list(range(9)), {"9": 1}, "f")
