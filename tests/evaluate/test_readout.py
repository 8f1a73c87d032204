"""Readouts: batched logits vs the paper's generate, merged vs unmerged, save/reload."""

from __future__ import annotations

import numpy as np

from lorascan.data.prepared import load_prepared
from lorascan.evaluate.readout import Classifier
from lorascan.evaluate.run import triggered_texts


def _texts(folder):
    p = load_prepared(folder, need_train=False)
    return [s.text for s in p.test[:24]] + triggered_texts(p.test[:24], p.trigger, p.placement, 1)


def test_logits_and_generate_agree(tiny_adapters, toy_data):
    clf = Classifier.load("tiny-qwen2", tiny_adapters[("tiny-qwen2", "label-word", "poisoned")])
    texts = _texts(toy_data["poisoned"])
    logits = clf.predict(texts, "logits", batch_size=8)
    gen = clf.predict(texts, "generate", batch_size=4)
    parsed = gen != -1
    assert parsed.mean() >= 0.9                         # a trained adapter answers with a label word
    assert np.array_equal(logits[parsed], gen[parsed])  # identical wherever generate parses
    assert set(np.unique(logits)) == {0, 1}


def test_batching_does_not_change_scores(tiny_adapters, toy_data):
    clf = Classifier.load("tiny-qwen2", tiny_adapters[("tiny-qwen2", "label-word", "poisoned")])
    texts = _texts(toy_data["poisoned"])
    one = clf.scores(texts, batch_size=1)
    many = clf.scores(texts, batch_size=16)
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-4)


def test_round_trip_and_merge(tiny_adapters, toy_data):
    """Reloading the saved adapter, merged or not, gives the same predictions."""
    folder = tiny_adapters[("tiny-bert", "seq-cls", "poisoned")]
    texts = _texts(toy_data["poisoned"])
    merged = Classifier.load("tiny-bert", folder).scores(texts)
    unmerged = Classifier.load("tiny-bert", folder, merge=False).scores(texts)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-4)
    again = Classifier.load("tiny-bert", folder).scores(texts)
    np.testing.assert_array_equal(merged, again)
    bare = Classifier.load("tiny-bert").scores(texts)
    assert not np.allclose(bare, merged)  # the adapter (and its trained head) matter


def test_label_head_matches_the_full_head(tiny_adapters, toy_data):
    """The two-row label head gives the full head's margins, and is used for tiny-qwen2."""
    folder = tiny_adapters[("tiny-qwen2", "label-word", "poisoned")]
    texts = _texts(toy_data["poisoned"])
    for share in (True, False):
        fast = Classifier.load("tiny-qwen2", folder)
        fast.share_prefix = share
        full = Classifier.load("tiny-qwen2", folder)
        full.share_prefix, full.label_head = share, False
        a, b = fast.scores(texts, batch_size=8), full.scores(texts, batch_size=8)
        assert fast._head and full._head is False
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_label_head_falls_back_when_the_head_is_not_plain(tiny_adapters, toy_data):
    """A model whose logits are not decoder state x output rows (here: scaled by a hook, as
    soft-capping or logit scaling would) keeps the full head."""
    folder = tiny_adapters[("tiny-qwen2", "label-word", "poisoned")]
    texts = _texts(toy_data["poisoned"])
    clf = Classifier.load("tiny-qwen2", folder)
    clf.model.get_output_embeddings().register_forward_hook(lambda mod, args, out: out * 2.0 + 1.0)
    scaled = clf.scores(texts, batch_size=8)
    assert clf._head is False
    ref = Classifier.load("tiny-qwen2", folder)
    ref.label_head = False
    np.testing.assert_allclose(scaled, 2.0 * ref.scores(texts, batch_size=8), rtol=1e-4, atol=1e-4)
