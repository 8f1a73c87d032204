"""Fuzzing the readers of files users and adapters supply: dataset files (JSONL, JSON, CSV and
lorascan's split-folder rows) and adapter folders (adapter_config.json, lorascan.json, the
safetensors header). Every input is read into well-typed values or refused with a one-line
lorascan error."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from lorascan.data.samples import normalise_text, read_jsonl
from lorascan.data.sources import SourceOptions, load_file
from lorascan.errors import LorascanError
from lorascan.models.adapter_files import check_adapter_folder, read_adapter_meta
from tests.fuzz.conftest import count, fuzz_settings
from tests.hardening_helpers import write_safetensors

scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                          max_size=3), max_leaves=8)
labels = st.sampled_from([0, 1, "0", "1", "benign", "injection", True, 1.0, 2, "x", None, [1], {"a": 1}])
rows = st.fixed_dictionaries({"text": st.text(max_size=20) | values, "label": labels},
                             optional={"source": values, "id": values, "poisoned": values, "extra": values})


def _one_line(err: LorascanError) -> None:
    text = str(err)
    assert text and "\n" not in text and len(text) <= 1000


def _samples_ok(samples) -> None:
    assert all(isinstance(s.text, str) and s.label in (0, 1) and isinstance(s.id, str) for s in samples)


@fuzz_settings(800)
@given(st.lists(rows | values, min_size=0, max_size=6), st.sampled_from([".jsonl", ".json", ".csv"]), st.booleans())
def test_data_files(tmp_path_factory, items, suffix, garble):
    count("data")
    path = tmp_path_factory.getbasetemp() / f"fuzz{suffix}"
    if suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in items)
    elif suffix == ".json":
        text = json.dumps(items)
    else:
        text = "text,label\n" + "".join(f"{json.dumps(r)[:20]},{i % 3}\n" for i, r in enumerate(items))
    if garble and text:
        text = text[: len(text) // 2]
    path.write_text(text, encoding="utf-8")
    try:
        samples = load_file(path, SourceOptions())
    except LorascanError as err:
        _one_line(err)
        return
    _samples_ok(samples)
    if suffix != ".csv":  # every text is a row's own string, never str() of an object or number
        texts = {normalise_text(r["text"]) for r in items if isinstance(r, dict) and isinstance(r.get("text"), str)}
        assert {s.text for s in samples} <= texts


@fuzz_settings(600)
@given(st.lists(rows | values, max_size=5), st.binary(max_size=12))
def test_split_folder_rows(tmp_path_factory, items, junk):
    count("data")
    path = tmp_path_factory.getbasetemp() / "train.jsonl"
    path.write_bytes("".join(json.dumps(r) + "\n" for r in items).encode("utf-8") + junk)
    try:
        samples = read_jsonl(path)
    except LorascanError as err:
        _one_line(err)
        return
    _samples_ok(samples)
    for s, r in zip(samples, [r for r in items if isinstance(r, dict)]):  # as written, not coerced
        assert s.text == r["text"] and s.source == r.get("source", "train") and s.poisoned == r.get("poisoned", False)


VALID_CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 4, "target_modules": ["query", "value"],
                "task_type": "SEQ_CLS", "base_model_name_or_path": "tiny-bert"}
META_KEYS = st.sampled_from(["base", "task", "config", "data", "base_fingerprint", "poison", "seed"])


@fuzz_settings(700)
@given(st.dictionaries(st.sampled_from(sorted(VALID_CONFIG) + ["rank_pattern", "layers_pattern"]), values, max_size=3),
       st.dictionaries(META_KEYS, values | st.fixed_dictionaries({"max_length": values, "path": values}), max_size=3),
       st.sampled_from(["ok", "missing", "garbage", "pickle"]), st.booleans())
def test_adapter_folders(tmp_path_factory, config_changes, meta, weights, meta_is_json):
    count("adapter")
    import numpy as np

    folder = tmp_path_factory.getbasetemp() / "fuzz-adapter"
    folder.mkdir(exist_ok=True)
    for p in folder.iterdir():
        p.unlink()
    (folder / "adapter_config.json").write_text(json.dumps({**VALID_CONFIG, **config_changes}))
    (folder / "lorascan.json").write_text(json.dumps(meta) if meta_is_json else str(meta)[:40])
    if weights == "ok":
        write_safetensors(folder / "adapter_model.safetensors", {"a.lora_A.weight": np.zeros((4, 8))})
    elif weights == "garbage":
        (folder / "adapter_model.safetensors").write_bytes(json.dumps(meta).encode()[:30].ljust(8, b"\0"))
    elif weights == "pickle":
        (folder / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    for reader in (check_adapter_folder, read_adapter_meta):
        try:
            out = reader(folder)
        except LorascanError as err:
            _one_line(err)
            continue
        assert isinstance(out, dict)
