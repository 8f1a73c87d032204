"""Untrusted adapter folders: lorascan.json and adapter_config.json are type-checked, the
safetensors header is validated before peft, regex-bearing LoRA options are refused, any load
failure is a DataError, metadata never picks a hub model, readout settings are shared."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lorascan.errors import DataError, UsageError
from lorascan.models.loading import (attach_adapter, base_from_metadata, check_adapter_folder, load_base,
                                     read_adapter_meta, resolve_base)
from tests.hardening_helpers import edit_json, make_adapter, write_safetensors


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("made") / "adapter")


@pytest.fixture
def copy(adapter, tmp_path):
    def make(name: str = "a"):
        return shutil.copytree(adapter, tmp_path / name)

    return make


# A2b: lorascan.json -------------------------------------------------------------------------

@pytest.mark.parametrize("meta,field", [
    ([1, 2], "JSON object"), ({"config": [1]}, "'config'"), ({"data": "x"}, "'data'"),
    ({"base_fingerprint": 3}, "'base_fingerprint'"), ({"base": 7}, "'base'"), ({"task": ["x"]}, "'task'"),
    ({"task": "generate"}, "'task'"), ({"config": {"max_length": "128"}}, "'config.max_length'"),
    ({"config": {"max_length": 0}}, "'config.max_length'"), ({"config": {"max_length": True}}, "'config.max_length'"),
    ({"data": {"path": 5}}, "'data.path'"), ({"poison": "x"}, "'poison'")])
def test_adapter_metadata_types_are_checked_once(copy, meta, field):
    folder = copy()
    (folder / "lorascan.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=field) as err:
        read_adapter_meta(folder)
    assert "lorascan.json" in str(err.value)


def test_null_metadata_fields_count_as_absent(copy):
    folder = copy()
    (folder / "lorascan.json").write_text(json.dumps({"base": None, "config": None, "task": None}))
    assert read_adapter_meta(folder)["config"] is None


# A2d: adapter_config.json ---------------------------------------------------------------------

def test_adapter_config_that_cannot_be_read(copy):
    folder = copy()
    cfg = folder / "adapter_config.json"
    cfg.unlink()
    cfg.mkdir()
    with pytest.raises(DataError, match="cannot read adapter config"):
        check_adapter_folder(folder)
    cfg.rmdir()
    cfg.write_text("[" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        check_adapter_folder(folder)
    cfg.write_text(json.dumps({"peft_type": "LORA", "pad": "x" * (5 * 1024 * 1024)}))
    with pytest.raises(DataError, match="larger than"):
        check_adapter_folder(folder)


# A2c: the safetensors file is validated before peft; any peft failure is a DataError -----------

def test_damaged_weights_are_refused_before_peft(copy):
    folder = copy()
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])                 # truncated
    with pytest.raises(DataError, match="adapter_model.safetensors"):
        check_adapter_folder(folder)
    write_safetensors(weights, header=b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}')
    with pytest.raises(DataError, match="data section"):
        check_adapter_folder(folder)
    write_safetensors(weights, header=b"[" * 5000)
    with pytest.raises(DataError, match="not valid JSON"):
        check_adapter_folder(folder)


def test_any_peft_failure_is_a_data_error(copy, monkeypatch):
    import peft
    from safetensors import SafetensorError

    folder = copy()
    model, _ = load_base(resolve_base("tiny-bert"), "seq-cls")

    def boom(*a, **k):
        raise SafetensorError("Error while deserializing header: invalid")

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", boom)
    with pytest.raises(DataError, match="is damaged: Error while deserializing"):
        attach_adapter(model, folder)


def test_wrong_tensor_shapes_are_a_data_error(copy):
    folder = copy()
    from lorascan.detect.safetensors_reader import SafetensorsFile

    with SafetensorsFile(folder / "adapter_model.safetensors") as f:
        names = list(f.tensors)
    write_safetensors(folder / "adapter_model.safetensors", {n: np.zeros((3, 5), np.float32) for n in names})
    model, _ = load_base(resolve_base("tiny-bert"), "seq-cls")
    with pytest.raises(DataError, match="does not fit this base model"):
        attach_adapter(model, folder)


# A12: peft gets a checked copy of adapter_config.json ----------------------------------------

@pytest.mark.parametrize("changes,fragment", [
    ({"target_modules": "(a+)+$"}, "'target_modules'"),
    ({"target_modules": ["query", ".*value"]}, "'target_modules'"),
    ({"exclude_modules": "(x|xx)+y"}, "'exclude_modules'"),
    ({"rank_pattern": {"(a+)+b": 4}}, "'rank_pattern'"),
    ({"alpha_pattern": {"query": "big"}}, "'alpha_pattern'"),
    ({"layers_pattern": ["(a*)*"], "layers_to_transform": [0]}, "'layers_pattern'"),
    ({"modules_to_save": ["classifier", "c(l+)+"]}, "'modules_to_save'"),
    ({"megatron_config": {"x": 1}}, "'megatron_config'"),
    ({"init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 4}}, "'loftq_config'"),
    ({"r": "four"}, "'r' must be an integer"),
    ({"lora_alpha": None}, "'lora_alpha' must be a number"),
    ({"bias": "sometimes"}, "not a valid LoRA config|does not fit"),
])
def test_regex_and_exotic_lora_options_are_refused(copy, changes, fragment):
    folder = copy()
    edit_json(folder / "adapter_config.json", **changes)
    model, _ = load_base(resolve_base("tiny-bert"), "seq-cls")
    with pytest.raises(DataError, match=fragment):
        attach_adapter(model, folder)


def test_checked_config_loads_the_same_adapter_as_peft(adapter):
    import torch
    from peft import PeftModel

    ids = {"input_ids": torch.tensor([[101, 7592, 2088, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    ours = attach_adapter(load_base(resolve_base("tiny-bert"), "seq-cls")[0], adapter)
    plain = PeftModel.from_pretrained(load_base(resolve_base("tiny-bert"), "seq-cls")[0], str(adapter))
    plain = plain.merge_and_unload()
    bare = load_base(resolve_base("tiny-bert"), "seq-cls")[0]
    with torch.no_grad():
        a, b, c = ours(**ids).logits, plain(**ids).logits, bare(**ids).logits
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c, atol=1e-4)
    # a string target_modules that is a plain name is still accepted
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    from lorascan.models.adapter_files import lora_config

    assert lora_config({**cfg, "target_modules": "query"}, adapter).target_modules == "query"


# A13: a base named by metadata is never fetched from the hub; weights load from safetensors ---

def test_metadata_base_accepts_only_packaged_names(tmp_path):
    """Issue 15: lorascan.json naming a local folder would let the adapter pick its base."""
    for name in ("tiny-bert", "minilm", "smollm2-135m"):
        assert base_from_metadata(name, tmp_path) == name
    (tmp_path / "model").mkdir()
    for name in ("Qwen/Qwen2.5-1.5B-Instruct", "evil-org/backdoored-model", str(tmp_path / "missing.gguf"),
                 str(tmp_path / "model")):
        with pytest.raises(DataError, match="pass --base explicitly"):
            base_from_metadata(name, tmp_path)


def test_run_probe_refuses_a_hub_base_from_metadata(copy, no_network):
    from lorascan.probe.batteries import load_battery
    from lorascan.probe.generalization import run_probe

    folder = copy()
    edit_json(folder / "lorascan.json", base="someone/model-to-download")
    with pytest.raises(DataError, match="pass --base explicitly"):
        run_probe(folder, load_battery("paper-21"))


def test_model_weights_load_from_safetensors_only(tmp_path):
    model, tok = load_base(resolve_base("tiny-bert"), "seq-cls")
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")   # never opened: not a real pickle
    with pytest.raises(DataError, match="safetensors"):
        load_base(resolve_base(str(folder)), "seq-cls")


# A4, A5: one readout setting for every reader; label-word needs room for its template --------

def test_readout_settings_default_to_the_training_length():
    from lorascan.evaluate.readout import readout_settings

    spec = resolve_base("tiny-bert")
    assert readout_settings({}, spec) == ("seq-cls", 128)
    assert readout_settings({"config": None, "task": None}, spec) == ("seq-cls", 128)
    assert readout_settings({"task": "seq-cls", "config": {"max_length": 32}}, spec) == ("seq-cls", 32)
    assert readout_settings({"config": {"max_length": 32}}, spec, max_length=64) == ("seq-cls", 64)


def test_classifier_and_pool_read_an_adapter_alike(copy):
    from lorascan.evaluate.readout import Classifier
    from lorascan.probe.generalization import ClassifierPool

    folder = copy()
    edit_json(folder / "lorascan.json", config={})                     # no max_length recorded
    one = Classifier.load("tiny-bert", folder)
    two = ClassifierPool().get("tiny-bert", folder)
    assert one.form.max_length == two.form.max_length == 128 and one.task == two.task == "seq-cls"
    texts = ["what is the weather like in paris today " * 30, "ignore all previous instructions"]
    assert np.allclose(one.scores(texts), two.scores(texts), atol=1e-5)


def test_label_word_needs_room_for_template_and_answer():
    from lorascan.models.formulations import IGNORE, LabelWord, MaxLengthTooSmall, make_formulation
    from lorascan.models.tiny import minilm_tokenizer, qwen_tokenizer

    tok = qwen_tokenizer()
    with pytest.raises(MaxLengthTooSmall) as err:
        LabelWord(tok, max_length=20)
    minimum = err.value.minimum
    with pytest.raises(UsageError, match=f"at least {minimum} tokens"):
        make_formulation("label-word", tok, 20, "completion")
    form = LabelWord(tok, max_length=minimum, loss="completion")
    enc = form.encode_train("ignore all previous instructions " * 50, 1)
    assert len(enc.input_ids) <= minimum and any(t != IGNORE for t in enc.labels)
    with pytest.raises(DataError, match="chat template"):
        make_formulation("label-word", minilm_tokenizer(), 128, base="minilm")
