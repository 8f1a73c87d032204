"""Resolving --base values and loading adapters safely (errors are one-line DataErrors)."""

from __future__ import annotations

import json
import shutil

import pytest

from lorascan.errors import DataError, UsageError
from lorascan.models import loading
from lorascan.models.loading import attach_adapter, check_adapter_folder, load_base, resolve_base


def test_resolve_kinds(tmp_path):
    assert resolve_base("tiny-qwen2").kind == "tiny"
    assert resolve_base("minilm").kind == "folder"
    gguf = resolve_base("smollm2-135m")
    assert gguf.kind == "gguf" and gguf.location.endswith(".gguf")
    assert resolve_base("Qwen/Qwen2.5-1.5B-Instruct").kind == "hub"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_base(str(tmp_path / "m")).kind == "folder"


def test_resolve_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown base model 'no-such-model'"):
        resolve_base("no-such-model")
    with pytest.raises(DataError, match="GGUF file not found"):
        resolve_base(str(tmp_path / "x.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no config.json"):
        resolve_base(str(tmp_path / "empty"))


def test_local_folder_round_trip(tmp_path):
    """A model saved to a folder loads back through the real folder code path."""
    import torch

    model, tok = load_base(resolve_base("tiny-bert"), "seq-cls")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again, tok2 = load_base(resolve_base(str(tmp_path / "m")), "seq-cls")
    ids = tok(["hello world"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, again(**ids).logits, atol=1e-6)


def test_tiny_models_are_deterministic():
    import torch

    a, _ = load_base(resolve_base("tiny-llama"), "label-word")
    b, _ = load_base(resolve_base("tiny-llama"), "label-word")
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)


def test_adapter_folder_checks(tmp_path):
    with pytest.raises(DataError, match="adapter folder not found"):
        check_adapter_folder(tmp_path / "missing")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(DataError, match="never unpickles"):
        check_adapter_folder(pickled)
    noconf = tmp_path / "noconf"
    noconf.mkdir()
    (noconf / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match="no adapter_config.json"):
        check_adapter_folder(noconf)
    (noconf / "adapter_config.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        check_adapter_folder(noconf)


def test_adapter_for_another_base(tiny_adapters, tmp_path):
    bert_adapter = tiny_adapters[("tiny-bert", "seq-cls", "poisoned")]
    llama, _ = load_base(resolve_base("tiny-llama"), "seq-cls")
    with pytest.raises(DataError, match="was trained for base 'tiny-bert'"):
        attach_adapter(llama, bert_adapter)
    # without lorascan.json (an adapter from elsewhere) the shape check comes from peft
    foreign = tmp_path / "foreign"
    shutil.copytree(bert_adapter, foreign)
    (foreign / "lorascan.json").unlink()
    minilm, _ = load_base(resolve_base("minilm"), "seq-cls")
    with pytest.raises(DataError, match="does not fit this base model"):
        attach_adapter(minilm, foreign)


def test_known_bases_listed_in_error():
    with pytest.raises(UsageError) as err:
        resolve_base("nope")
    for name in loading.known_bases():
        assert name in str(err.value)
