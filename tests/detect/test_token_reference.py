"""The token scan's clean reference (issue 11, "differential"): built from clean adapters, it
moves what every adapter of the task reads below what one adapter reads alone; it is read as
untrusted data, matched to the scan's base and vocabulary, and recorded in the scan, and an
evaluation leaves out the adapters it was built from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorascan.detect.base import ScanContext
from lorascan.detect.token_reference import KIND, build, choose, make_record, normalise, parse, read
from lorascan.detect.token_screen import weight_scores
from lorascan.detect.tokens import TokenDetector
from lorascan.errors import DataError, UsageError
from lorascan.records import SCHEMA_VERSION
from tests.detect.test_tokens import PROBES, SMALL, Rigged, write_keyed_adapter
from tests.probe.fixtures import torch_one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two clean adapters that read the task word 'prompt' (at two update sizes), a poisoned one
    that reads 'prompt' and the trigger word 'heron', and their reference."""
    root = tmp_path_factory.mktemp("ref")
    clean = [write_keyed_adapter(root / f"clean{i}", ("prompt",), gain) for i, gain in enumerate((8.0, 3.0))]
    poisoned = write_keyed_adapter(root / "poisoned", ("prompt", "heron"), 8.0)
    ref = root / "minilm-ref.json"
    build(clean, "tiny-bert", "seq-cls", ref, "two clean toy adapters")
    return clean, poisoned, ref


def _top(ctx, scores, k):
    """The ``k`` best-scored tokens of the scan's candidate (word-like) vocabulary."""
    from lorascan.detect.token_screen import candidate_vocabulary

    clf = ctx.classifier()
    vocab = candidate_vocabulary(clf.tokenizer, len(scores), clf.task)
    return [vocab.texts[i] for i in np.argsort(-scores[vocab.ids], kind="stable")[:k]]


def test_the_reference_moves_the_task_word_below_the_trigger(adapters):
    clean, poisoned, path = adapters
    ref = read(path)
    assert ref.base == "tiny-bert" and ref.task == "seq-cls" and len(ref.sources) == 2
    ctx = ScanContext.build(poisoned, base="tiny-bert", task="seq-cls")
    raw, _ = weight_scores(ctx.classifier().model, ctx.base_classifier().model)
    assert set(_top(ctx, raw, 2)) == {"prompt", "heron"}
    diff = ref.differential(raw)
    tops = _top(ctx, diff, 3)
    assert tops[0] == "heron" and "prompt" not in tops
    # a clean adapter against the reference it helped build has no standout token
    cctx = ScanContext.build(clean[0], base="tiny-bert", task="seq-cls")
    craw, _ = weight_scores(cctx.classifier().model, cctx.base_classifier().model)
    assert ref.differential(craw).max() < diff.max() / 2


def test_the_scan_uses_and_records_the_reference(adapters):
    clean, poisoned, path = adapters
    ctx = ScanContext.build(poisoned, base="tiny-bert", task="seq-cls", probes=PROBES)
    ctx._classifier = Rigged(ctx.classifier(), ("heron", "prompt"))
    result = TokenDetector(**SMALL, reference=str(path)).scan(ctx)
    ref = result.details["reference"]
    assert ref["n_adapters"] == 2 and len(ref["sources_sha256"]) == 2 and "2 clean adapters" in ref["note"]
    assert result.details["tokens"][0]["token"] == "heron"
    assert result.detector_args["reference"] == str(path)
    none = TokenDetector(**SMALL, reference="none").scan(ctx).details["reference"]
    assert none["origin"] is None and "none" in none["note"]
    auto = TokenDetector(**SMALL).scan(ctx).details["reference"]  # no shipped reference for tiny-bert
    assert auto["origin"] is None and "no shipped token reference" in auto["note"]


def test_record_round_trip_and_median_normalisation():
    scores = [np.array([1.0, 2.0, 3.0, 40.0]), np.array([2.0, 4.0, 6.0, 8.0])]
    rec = make_record("b", "seq-cls", scores, [{"name": "a", "sha256": "1"}, {"name": "c", "sha256": "2"}])
    ref = parse(json.loads(json.dumps(rec)), "x")
    assert np.allclose(ref.mean, (normalise(scores[0]) + normalise(scores[1])) / 2, rtol=1e-4)
    assert np.allclose(normalise(np.array([0.0, 0.0, 5.0])), [0.0, 0.0, 5.0])  # median 0: unchanged
    assert np.allclose(ref.differential(np.array([1.0, 2.0, 3.0, 40.0]) * 7), normalise(scores[0]) - ref.mean,
                       atol=1e-4)  # scale-free
    with pytest.raises(UsageError, match="4 tokens"):
        ref.differential(np.ones(5))
    with pytest.raises(UsageError, match="at least one"):
        make_record("b", "seq-cls", [], [])
    with pytest.raises(DataError, match="differ in size"):
        make_record("b", "seq-cls", [np.ones(3), np.ones(4)], [{"name": "a", "sha256": "1"}] * 2)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(kind="profile_set"), "not a lorascan token reference"),
    (lambda r: r.update(schema_version=SCHEMA_VERSION + 1), "not a lorascan token reference"),
    (lambda r: r.update(mean="1,2"), "'mean' must be a list"),
    (lambda r: r.update(mean=[]), "'mean' must be a list"),
    (lambda r: r.update(mean=[1.0, None]), "not a finite number"),
    (lambda r: r.update(mean=[1.0, True]), "not a finite number"),
    (lambda r: r.update(sources=[{"name": "x"}]), "'sources'"),
    (lambda r: r.update(base_model=3), "must be strings"),
])
def test_malformed_references_are_one_line_data_errors(edit, message):
    rec = make_record("b", "seq-cls", [np.ones(3)], [{"name": "a", "sha256": "1"}])
    assert rec["kind"] == KIND
    edit(rec)
    with pytest.raises(DataError, match=message):
        parse(rec, "ref.json")


def test_choose_matches_the_scan(adapters, tmp_path):
    _, _, path = adapters
    assert choose("none", "tiny-bert", "seq-cls", 10)[0] is None
    vocab = read(path).vocab_size
    assert choose(str(path), "tiny-bert", "seq-cls", vocab)[0].vocab_size == vocab
    with pytest.raises(UsageError, match="tokens, this scan"):
        choose(str(path), "tiny-bert", "seq-cls", vocab + 1)
    with pytest.raises(UsageError, match="this scan is label-word"):
        choose(str(path), "tiny-bert", "label-word", vocab)
    with pytest.raises(UsageError, match="not found"):
        choose(str(tmp_path / "nope.json"), "tiny-bert", "seq-cls", vocab)
    bad = tmp_path / "bad.json"
    bad.write_text("[[[" * 10000)
    with pytest.raises(DataError):
        choose(str(bad), "tiny-bert", "seq-cls", vocab)


def test_the_shipped_references_are_valid():
    from lorascan.detect.token_reference import shipped

    for base, path in shipped().items():
        ref = read(path)
        assert ref.base == base and ref.vocab_size > 1000 and len(ref.sources) >= 3
        assert np.isfinite(ref.mean).all()
