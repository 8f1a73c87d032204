"""The Markdown tables of ``scan-evaluate``: every table present, attacker-style text escaped."""

from __future__ import annotations

from lorascan.report.evaluation import cell, markdown
from lorascan.scan.evaluate import evaluate
from lorascan.scan.recovery import recovery
from tests.scan.test_evaluate import write_cohort


def test_cells_cannot_break_a_table_or_add_markup():
    assert cell("a|b") == "a\\|b" and cell("<img src=x>") == "\\<img src=x\\>"
    assert cell("`code` *bold* [link](x)") == "\\`code\\` \\*bold\\* \\[link\\](x)"
    assert "\n" not in cell("two\nlines")


def test_every_table(tmp_path):
    labels, scans = write_cohort(tmp_path)
    rec = evaluate(labels, scans, n_boot=200)
    rec["recovery"] = recovery(labels, scans, measure=False)
    md = markdown(rec)
    for head in ("| detector | score |", "| weight score, families held out |", "held out by family",
                 "held out by rank", "| family | adapters | top-10 |", "| family | trigger | r |"):
        assert head in md, head
    assert md.count("| pooled |") == 2 and "sudo\\_mode=1" in md
    # the one table: every decision score, the weight model and the fused verdict, in one place
    summary = md.split("\n\n")[1]
    assert "recall eff. at FPR 0 (held out)" in summary and "| tokens | token\\_lift |" in summary
    assert "| weights v2 | logistic regression |" in summary and "fused verdict (block)" in summary
