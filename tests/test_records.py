"""Records: versioned JSON written atomically; output folders that appear whole or not at all."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from lorascan import __version__
from lorascan.errors import DataError, UsageError
from lorascan.records import (atomic_dir, check_output_dir, write_marker, dumps, read_json, record_header,
                              write_json_atomic)


def test_header_and_sorted_json_with_nan_as_null(tmp_path):
    rec = {**record_header("eval"), "b": math.nan, "a": [1.5, math.inf], 3: "x"}
    path = write_json_atomic(tmp_path / "sub" / "r.json", rec)
    text = path.read_text()
    assert text == dumps(rec) and text.endswith("\n")
    data = json.loads(text)
    assert data == {"3": "x", "a": [1.5, None], "b": None, "kind": "eval",
                    "lorascan_version": __version__, "schema_version": 1}
    assert list(data) == sorted(data)
    assert os.listdir(tmp_path / "sub") == ["r.json"]       # no temp file left


def test_read_json_errors_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="record not found"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        read_json(tmp_path / "bad.json", "manifest")


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_written_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_check_output_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        check_output_dir(tmp_path / "file", force=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="--force"):
        check_output_dir(tmp_path / "full", force=False)
    # --force replaces only a folder lorascan wrote (changed rule: a user's folder is refused)
    with pytest.raises(UsageError, match="lorascan did not write"):
        check_output_dir(tmp_path / "full", force=True)
    (tmp_path / "full" / "manifest.json").write_text("{}")  # looking like lorascan's output is not enough
    with pytest.raises(UsageError, match="lorascan did not write"):
        check_output_dir(tmp_path / "full", force=True)
    (tmp_path / "full" / "x").unlink()
    write_marker(tmp_path / "full", "poison")           # marked, and holding only what it lists
    assert check_output_dir(tmp_path / "full", force=True) == tmp_path / "full"
    assert check_output_dir(tmp_path / "new", force=False) == tmp_path / "new"


def test_force_never_replaces_the_working_folder_or_its_parents(tmp_path, monkeypatch):
    work = tmp_path / "proj"
    work.mkdir()
    (work / "precious.txt").write_text("x")
    monkeypatch.chdir(work)
    for out in (".", str(work), str(tmp_path)):
        with pytest.raises(UsageError, match="refusing to replace"):
            with atomic_dir(out, force=True):
                pass
    assert (work / "precious.txt").read_text() == "x" and sorted(os.listdir(tmp_path)) == ["proj"]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.")
        (tmp / "a").write_text("1")
        assert not out.exists()                         # invisible until complete
    assert sorted(os.listdir(out)) == [".lorascan", "a"]  # the marker a later --force looks for
    with pytest.raises(KeyError):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "b").write_text("2")
            raise KeyError("stop")
    assert sorted(os.listdir(out)) == [".lorascan", "a"] and os.listdir(tmp_path) == ["out"]
    with atomic_dir(out, force=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(os.listdir(out)) == [".lorascan", "b"] and os.listdir(tmp_path) == ["out"]


def test_a_failed_final_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("keep")
    write_marker(out, "test")                           # a folder lorascan wrote: --force may replace it
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(".partial"):
            raise OSError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(DataError, match="Permission denied"):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "new").write_text("x")
    assert sorted(os.listdir(out)) == [".lorascan", "old"] and os.listdir(tmp_path) == ["out"]


def test_recover_removes_only_dead_writers_folders_and_puts_a_moved_out_back(tmp_path):
    from lorascan.records import _writer_tag, recover

    out = tmp_path / "out"
    host = _writer_tag().split("-")[0]
    dead = tmp_path / f".out.{host}-999999999-abcd1234.partial"     # no such pid
    live = tmp_path / f".out.{_writer_tag()}abcd1234.partial"          # this process
    other = tmp_path / ".out.ffffffff-1-abcd1234.partial"             # another host
    for d in (dead, live, other):
        d.mkdir()
    (tmp_path / ".out.x.old" / "d").mkdir(parents=True)                # killed mid-swap
    (tmp_path / ".out.x.old" / "d" / "f").write_text("old")
    recover(out)
    assert (out / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name, other.name])
