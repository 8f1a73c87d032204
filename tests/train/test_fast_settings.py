"""The fast training settings of issue 16: the base model's dropout off and bf16 autocast."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lorascan.errors import UsageError
from lorascan.models.loading import load_base, resolve_base
from lorascan.train.config import FAST, TrainConfig
from lorascan.train.lora import drop_base_dropout, set_attention, train_adapter
from tests.train.conftest import TINY_TRAIN


def test_drop_base_dropout_zeroes_every_base_dropout():
    model, _ = load_base(resolve_base("tiny-bert"), "seq-cls", "float32")
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops
    for m in drops:  # tiny-bert is configured without dropout; give it MiniLM's 10%
        m.p = 0.1
    assert drop_base_dropout(model) == len(drops)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    model.train()  # training mode now computes what eval mode does
    ids = torch.tensor([[2, 5, 7, 9, 3]])
    with torch.no_grad():
        a = model(input_ids=ids).logits
        model.eval()
        b = model(input_ids=ids).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("extra", [{"base_dropout": False}, {"base_dropout": False, "autocast": "bfloat16"}, FAST])
def test_fast_settings_train_and_are_recorded(toy_data, tmp_path, extra):
    opts = {**TINY_TRAIN[("tiny-bert", "seq-cls")], "steps": 4, "dropout": 0.1}
    out = tmp_path / "adapter"
    meta = train_adapter("tiny-bert", toy_data["poisoned"], out, TrainConfig(task="seq-cls", seed=3, **opts, **extra),
                         progress=False)
    assert all(math.isfinite(x) for x in meta["loss_curve"])
    recorded = meta["config"]
    assert recorded["base_dropout"] is False
    assert recorded["autocast"] == extra.get("autocast", "none")
    assert recorded["attention"] == extra.get("attention", "default")
    used = {"auto": meta["autocast_used"], "bfloat16": "bfloat16"}.get(recorded["autocast"], "none")
    assert meta["autocast_used"] == used
    assert json.loads((out / "adapter_config.json").read_text())["lora_dropout"] == 0.1  # LoRA's own kept


def test_auto_autocast_uses_bf16_only_where_the_device_has_it(monkeypatch, capsys):
    import torch

    import lorascan.train.lora as lora

    cpu = torch.device("cpu")
    lora._note_emulated_bf16.cache_clear()
    for native in (True, False):
        monkeypatch.setattr(lora, "native_bf16", lambda device, native=native: native)
        assert lora.autocast_bf16("auto", cpu) is native
        assert lora.autocast_bf16("bfloat16", cpu) is True and lora.autocast_bf16("none", cpu) is False
    assert capsys.readouterr().err.count("emulated") == 1  # said once, only when it is not native
    monkeypatch.undo()
    expected = any(getattr(torch.cpu, n)() for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
                   if hasattr(torch.cpu, n))
    assert lora.native_bf16(cpu) is expected
    assert lora.native_bf16(torch.device("meta")) is False


def test_fast_settings_are_validated():
    with pytest.raises(UsageError, match="autocast"):
        TrainConfig(autocast="fp8")
    with pytest.raises(UsageError, match="attention"):
        TrainConfig(attention="flash")
    with pytest.raises(UsageError, match="base dropout"):
        TrainConfig(base_dropout="no")
    assert TrainConfig().base_dropout is True and TrainConfig().autocast == "none"


def test_fast_settings_train_a_label_word_lm(toy_data, tmp_path):
    opts = {**TINY_TRAIN[("tiny-qwen2", "label-word")], "steps": 3}
    meta = train_adapter("tiny-qwen2", toy_data["poisoned"], tmp_path / "a",
                         TrainConfig(task="label-word", seed=3, **opts, **FAST), progress=False)
    assert all(math.isfinite(x) for x in meta["loss_curve"]) and meta["config"]["attention"] == "eager"


def test_set_attention_switches_the_kernel_and_refuses_a_model_without_one():
    model, _ = load_base(resolve_base("tiny-bert"), "seq-cls", "float32")
    set_attention(model, "eager")
    assert model.config._attn_implementation == "eager"
    with pytest.raises(UsageError, match="cannot use eager attention"):
        set_attention(torch.nn.Linear(2, 2), "eager")
