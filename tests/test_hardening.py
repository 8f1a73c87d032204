"""Hardening of the low layers: escaped error text, slugs, JSON reading and writing, --force and
--out rules, config limits, data files and manifests, the model cache. No model is loaded."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from lorascan.errors import DataError, UsageError
from lorascan.records import atomic_dir, check_output_dir, read_json, write_json_atomic, write_text_atomic
from lorascan.text import printable, slug

ESC = "\x1b[2J\x1b[31mred\x1b[0m"


# A11: attacker-controlled text is escaped in every error message and terminal cell -----------

def test_printable_escapes_controls_and_cuts():
    assert printable(f"a{ESC}b") == "a\\x1b[2J\\x1b[31mred\\x1b[0mb"
    assert printable("bidi \u202eevil\u200b é ü") == "bidi \\u202eevil\\u200b é ü"
    assert printable("x" * 10, limit=5) == "xxxx…" and printable("short", limit=5) == "short"


def test_error_messages_escape_control_characters():
    err = DataError(f"column '{ESC}' missing\nsecond line\x00")
    text = str(err)
    assert "\x1b" not in text and "\x00" not in text and "\n" not in text
    assert text == "column '\\x1b[2J\\x1b[31mred\\x1b[0m' missing second line\\x00"
    assert str(UsageError(str(err))) == text                # escaping twice changes nothing


def test_cli_safe_uses_the_same_escaping():
    from lorascan.cli.common import safe

    assert safe(f"[bold]{ESC}") == "\\[bold]" + printable(ESC)
    assert safe("y" * 200, limit=10) == "y" * 9 + "…"


# A9: names from --base never leave their folder -----------------------------------------------

def test_slug_is_a_single_safe_path_component():
    from lorascan.experiments.grid import base_slug

    for name in ("x/../../..", "..", "/etc/passwd", "a\\b", "Qwen/Qwen2.5-1.5B-Instruct", "~/.ssh", "\x00\x1b"):
        s = slug(name)
        assert s and "/" not in s and "\\" not in s and not s.startswith(".") and s not in (".", "..")
        assert base_slug(name) == s                        # experiments keep their old helper name
    assert slug("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen_Qwen2.5-1.5B-Instruct" and slug("tiny-bert") == "tiny-bert"


def test_demo_adapter_folder_stays_inside_out(tmp_path, monkeypatch):
    from lorascan.data import mixes
    from lorascan.experiments import demo
    from lorascan.train import lora

    seen = {}

    class Stop(Exception):
        pass

    def fake_train(base, data_dir, out, *a, **k):
        seen["out"] = Path(out)
        raise Stop

    monkeypatch.setattr(mixes, "resolve", lambda *a, **k: None)
    monkeypatch.setattr(demo, "dataset_summary", lambda ds: {})
    monkeypatch.setattr(demo, "write_poisoned", lambda *a, **k: {})
    monkeypatch.setattr(lora, "train_adapter", fake_train)
    with pytest.raises(Stop):
        demo.run_demo(tmp_path / "demo", demo.DemoConfig(base="x/../../../escape"))
    assert seen["out"].parent == tmp_path / "demo" and seen["out"].resolve().parent == (tmp_path / "demo").resolve()


# A2d, A3: JSON reading and writing fail as one-line DataErrors --------------------------------

def test_read_json_refuses_deep_nesting_folders_and_big_files(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 200_000)
    with pytest.raises(DataError, match="nested too deeply"):
        read_json(tmp_path / "deep.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DataError, match="cannot read record"):
        read_json(tmp_path / "dir.json")
    (tmp_path / "big.json").write_text(json.dumps({"a": "x" * 5000}))
    with pytest.raises(DataError, match="larger than 1000 bytes"):
        read_json(tmp_path / "big.json", max_bytes=1000)
    assert read_json(tmp_path / "big.json", max_bytes=10_000)["a"] == "x" * 5000


def test_write_text_atomic_turns_os_errors_into_data_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot write"):
        write_text_atomic(tmp_path / "file" / "sub" / "r.json", "{}")     # mkdir under a file
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(DataError, match="cannot write"):
        write_json_atomic(tmp_path / "folder.json", {"a": 1})             # rename onto a folder
    assert os.listdir(tmp_path / "folder.json") == [] and sorted(os.listdir(tmp_path)) == ["file", "folder.json"]


# A8: --force replaces only what lorascan wrote; --out never overlaps an input -----------------

def test_force_replaces_only_empty_or_lorascan_folders(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="lorascan did not write"):
        with atomic_dir(user, force=True):
            pass
    assert os.listdir(user) == ["thesis.tex"]
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty", force=True) as tmp:
        (tmp / "a").write_text("1")
    assert sorted(os.listdir(tmp_path / "empty")) == [".lorascan", "a"]
    with atomic_dir(tmp_path / "empty", force=True) as tmp:            # its own output: replaced
        (tmp / "b").write_text("2")
    assert sorted(os.listdir(tmp_path / "empty")) == [".lorascan", "b"]
    for name in ("adapter_config.json", "run.json", "status.json", "eval.json", "lorascan.json"):
        old = tmp_path / f"old-{name}"                   # issue 15: a look-alike is not lorascan's
        old.mkdir()
        (old / name).write_text("{}")
        (old / "other").write_text("x")
        with pytest.raises(UsageError, match="lorascan did not write"):
            check_output_dir(old, force=True)


def test_out_may_not_be_hold_or_lie_inside_an_input(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    for out in (data, data / "adapter", tmp_path, Path(os.path.relpath(data))):
        with pytest.raises(UsageError, match="input"):
            check_output_dir(out, force=True, inputs=(data,))
    assert check_output_dir(tmp_path / "sibling", force=False, inputs=(data,)) == tmp_path / "sibling"


def test_write_poisoned_refuses_its_own_dataset_folder(tmp_path):
    from lorascan.data import mixes
    from lorascan.data.poison import PoisonConfig, write_poisoned
    from tests.train.conftest import toy_splits

    first = tmp_path / "first"
    write_poisoned(toy_splits(20, 10), PoisonConfig(trigger="T", count=0), first)
    ds = mixes.resolve(str(first))                                      # a split folder as the dataset
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    for out in (first, first / "again"):
        with pytest.raises(UsageError, match="input"):
            write_poisoned(ds, PoisonConfig(trigger="T", count=2), out, force=True)
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before


# A6: training settings must be finite ---------------------------------------------------------

@pytest.mark.parametrize("field", ["alpha", "dropout", "epochs", "lr", "weight_decay", "max_grad_norm"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_train_config_refuses_non_finite_numbers(field, value):
    from lorascan.train.config import TrainConfig

    with pytest.raises(UsageError, match="finite number|must be"):
        TrainConfig(**{field: value})


def test_train_config_limits():
    from lorascan.models.formulations import DEFAULT_MAX_LENGTH
    from lorascan.train.config import TrainConfig

    with pytest.raises(UsageError, match="max grad norm must be > 0"):
        TrainConfig(max_grad_norm=0.0)
    assert TrainConfig().max_length == DEFAULT_MAX_LENGTH == 128


# A17: data files and poison manifests -----------------------------------------------------------

def test_read_jsonl_bad_bytes_and_unreadable_paths(tmp_path):
    from lorascan.data.samples import read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "ok", "label": 0}\n{"text": "\xff\xfe", "label": 1}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_jsonl(path)
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DataError, match="cannot read data file"):
        read_jsonl(tmp_path / "dir.jsonl")
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "\n")
    with pytest.raises(DataError, match="rows|nested"):
        read_jsonl(tmp_path / "deep.jsonl")


@pytest.mark.parametrize("field,value", [("seed", "7"), ("seed", True), ("seed", 1.5), ("trigger", 5),
                                         ("placement", "middle"), ("dataset", ["x"]), ("count", -1),
                                         ("ratio", "0.1")])
def test_load_prepared_validates_the_manifest(toy_data, tmp_path, field, value):
    import shutil

    from lorascan.data.prepared import load_prepared
    from tests.hardening_helpers import edit_json

    folder = tmp_path / "data"
    shutil.copytree(toy_data["poisoned"], folder)
    edit_json(folder / "manifest.json", **{field: value})
    with pytest.raises(DataError, match=f"field '{field}'"):
        load_prepared(folder)


def test_prepared_properties_default_when_absent(toy_data, tmp_path):
    import shutil

    from lorascan.data.prepared import load_prepared

    folder = tmp_path / "data"
    shutil.copytree(toy_data["clean"], folder)
    m = json.loads((folder / "manifest.json").read_text())
    for key in ("seed", "placement", "dataset"):
        m.pop(key)
    (folder / "manifest.json").write_text(json.dumps(m))
    p = load_prepared(folder)
    assert (p.seed, p.placement, p.dataset) == (0, "prefix", {})


# A10: the model cache -------------------------------------------------------------------------

def test_gguf_cache_folder_is_keyed_by_the_file_not_the_name(tmp_path):
    from lorascan.models.loading import BaseSpec

    a, b = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(b"GGUF" + b"\0" * 16)
    spec_a = BaseSpec("m.gguf", "gguf", str(a))
    first = spec_a.cache_folder()
    assert first.name.startswith("m.gguf-") and first == spec_a.cache_folder()
    assert BaseSpec("m.gguf", "gguf", str(b)).cache_folder() != first          # same name typed, other file
    os.utime(a, ns=(1, 1))
    assert spec_a.cache_folder() != first                                     # the file changed
    assert BaseSpec("../x/../../y", "hub", "../x/../../y").cache_folder().parent.name == "models"


class _Saver:
    def __init__(self, content: str):
        self.content = content

    def save_pretrained(self, out: str) -> None:
        Path(out, "config.json").write_text(self.content)


def test_save_atomically_keeps_a_folder_another_process_finished(tmp_path):
    from lorascan.models.tiny import _save_atomically

    target = tmp_path / "cache" / "model"
    _save_atomically(_Saver("first"), target)
    _save_atomically(_Saver("second"), target, lambda f: (f / "config.json").is_file())
    assert (target / "config.json").read_text() == "first"                    # kept, not deleted under a reader
    assert os.listdir(tmp_path / "cache") == ["model"]                         # our copy discarded
    broken = tmp_path / "cache" / "broken"
    broken.mkdir()
    (broken / "junk").write_text("x")
    _save_atomically(_Saver("fresh"), broken, lambda f: (f / "config.json").is_file())
    assert os.listdir(broken) == ["config.json"] and sorted(os.listdir(tmp_path / "cache")) == ["broken", "model"]
