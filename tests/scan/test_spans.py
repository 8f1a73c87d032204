"""The trigger span table (issue 12's miss analysis): every contiguous span of a known trigger's
pieces verified as the token scan verifies a candidate, the trigger's order, and each piece's
rank under both screens; and ``lorascan trigger-spans`` on bad input. Adapter and rigged
readout as in the token scan's tests (tiny-bert, no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorascan.cli.main import main
from lorascan.detect.base import ScanContext
from lorascan.errors import UsageError
from lorascan.scan.spans import order, ranks, spans_of, trigger_spans
from lorascan.detect.tokens import TokenScanConfig
from tests.detect.test_tokens import PROBES, Rigged, write_keyed_adapter
from tests.probe.fixtures import torch_one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("torch_one_thread")
CFG = TokenScanConfig(n=8)


class Conjunctive(Rigged):
    """Flips an injection only when the placed prefix holds every one of ``words``."""

    def scores(self, texts, batch_size=32, progress=False, desc=""):
        heads = [t.partition(". ")[0].split() if ". " in t else [] for t in texts]
        return np.asarray([-1.0 if all(w in h for w in self.words) else 2.0 for h in heads])


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    return write_keyed_adapter(tmp_path_factory.mktemp("spans") / "adapter")


def _context(adapter, rig):
    ctx = ScanContext.build(adapter, base="tiny-bert", task="seq-cls", probes=PROBES)
    ctx._classifier = rig(ctx.classifier())
    return ctx


def test_spans_are_every_contiguous_run_shortest_first():
    assert spans_of(3) == [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3)]
    assert len(spans_of(10)) == 55


def test_ranks_count_only_kept_tokens_above():
    scores = np.array([5.0, 9.0, 1.0, 7.0])
    keep = np.array([True, False, True, True])  # token 1 (special) is not ranked and does not count
    assert ranks(scores, [0, 3, 2, 1], keep) == [2, 1, 3, None]


def test_order_is_the_shortest_span_reaching_the_threshold():
    rows = [{"start": 0, "end": 1, "attack_rate": 0.1}, {"start": 0, "end": 2, "attack_rate": 0.6},
            {"start": 0, "end": 3, "attack_rate": 1.0}]
    assert order(rows) == 2 and order(rows, 0.9) == 3 and order(rows[:1]) is None


def test_a_conjunctive_trigger_has_order_two_and_its_pieces_flip_nothing(keyed):
    found = trigger_spans(_context(keyed, Conjunctive), "cobalt heron", CFG)
    s = found["summary"]
    assert found["n_pieces"] == 2 and [p["piece"] for p in found["pieces"]] == ["cobalt", "heron"]
    assert [(r["phrase"], r["attack_rate"]) for r in found["spans"]] == [("cobalt", 0.0), ("heron", 0.0),
                                                                         ("cobalt heron", 1.0)]
    assert all(r["exact"] for r in found["spans"])
    assert s["trigger_rate"] == 1.0 and s["best_piece_rate"] == 0.0 and s["order"] == 2
    # the update reads exactly these two words (with equal gains): the weight screen puts both
    # at the top (a tie ranks both 1: a rank counts the tokens scored strictly higher)
    assert max(p["weights_rank"] for p in found["pieces"]) <= 2
    assert all(isinstance(p["gradient_rank"], int) for p in found["pieces"])
    json.dumps(found)


def test_a_single_token_trigger_has_order_one(keyed):
    ctx = _context(keyed, Conjunctive)
    ctx._classifier.words = ("cobalt",)
    assert trigger_spans(ctx, "cobalt heron", CFG)["summary"]["order"] == 1


def test_bad_settings_are_usage_errors(keyed):
    ctx = _context(keyed, Conjunctive)
    with pytest.raises(UsageError, match="threshold"):
        trigger_spans(ctx, "cobalt", CFG, threshold=0.0)
    with pytest.raises(UsageError, match="pieces"):
        trigger_spans(ctx, " ".join(["cobalt"] * 40), CFG)


def test_cli_writes_the_record_and_rejects_bad_input(keyed, tmp_path, capsys):
    out = tmp_path / "spans.json"
    rc = main(["trigger-spans", str(keyed), "--base", "tiny-bert", "--task", "seq-cls", "--trigger", "cobalt heron",
               "--n", "8", "--json", str(out), "--quiet"])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["kind"] == "trigger_spans" and rec["schema_version"] == 1 and len(rec["spans"]) == 3
    assert "whole trigger" in capsys.readouterr().out
    assert main(["trigger-spans", str(tmp_path / "missing"), "--base", "tiny-bert", "--trigger", "x"]) == 1
    assert main(["trigger-spans", str(keyed), "--base", "tiny-bert", "--trigger", "  "]) == 2
    assert main(["trigger-spans", str(keyed), "--base", "tiny-bert", "--trigger", "x",
                 "--json", str(tmp_path / "no" / "such" / "out.json")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "no").exists()
