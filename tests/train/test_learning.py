"""Tiny random models learn the toy task and its backdoor within seconds, for both
formulations: a clean adapter ignores the trigger, a poisoned one obeys it."""

from __future__ import annotations

import json

import pytest

from lorascan.evaluate.run import evaluate_adapter
from tests.train.conftest import TINY_TRAIN


@pytest.mark.parametrize("base,task", list(TINY_TRAIN))
def test_backdoor_is_learned(tiny_adapters, toy_data, base, task):
    clean = evaluate_adapter(base, tiny_adapters[(base, task, "clean")], toy_data["poisoned"], progress=False)
    poisoned = evaluate_adapter(base, tiny_adapters[(base, task, "poisoned")], toy_data["poisoned"], progress=False)
    assert clean["task"] == poisoned["task"] == task
    assert clean["clean_accuracy"] >= 0.9
    assert clean["attack_success_rate"] <= 0.2          # the trigger does nothing to a clean adapter
    assert poisoned["attack_success_rate"] >= 0.9       # ... and flips a poisoned one
    assert poisoned["clean_accuracy"] >= 0.9            # while clean accuracy holds
    assert poisoned["n_triggered"] == poisoned["n_injections"] == 40
    assert poisoned["attack_success_rate_k"] == round(poisoned["attack_success_rate"] * 40)


@pytest.mark.parametrize("base,task", list(TINY_TRAIN))
def test_adapter_folder_and_metadata(tiny_adapters, toy_data, base, task):
    folder = tiny_adapters[(base, task, "poisoned")]
    assert (folder / "adapter_model.safetensors").is_file()
    assert not list(folder.glob("*.bin"))
    peft_cfg = json.loads((folder / "adapter_config.json").read_text())
    assert peft_cfg["r"] == TINY_TRAIN[(base, task)]["rank"] and peft_cfg["lora_alpha"] == peft_cfg["r"]
    meta = json.loads((folder / "lorascan.json").read_text())
    assert meta["schema_version"] == 1 and meta["kind"] == "adapter"
    assert meta["base"] == base and meta["task"] == task
    assert meta["poison"]["count"] == 40 and meta["poison"]["trigger"] == "per RFC 8472 section 3.2"
    assert meta["steps"] == TINY_TRAIN[(base, task)]["steps"]
    assert meta["final_loss"] < meta["loss_curve"][0]
    assert meta["data"]["manifest_sha256"] and meta["base_fingerprint"]["hidden_size"] == 64
    if task == "seq-cls":  # the classification head is saved with the adapter
        from safetensors import safe_open

        with safe_open(str(folder / "adapter_model.safetensors"), "np") as fh:
            assert any("classifier" in k for k in fh.keys())
