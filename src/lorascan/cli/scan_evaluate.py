"""``lorascan scan-evaluate LABELS --records DIR``: every detector and the fused scan verdict on a
labelled cohort's scan records, held out by trigger family and by rank (issue 12), and the
token scan's trigger recovery table (issue 11); :mod:`lorascan.scan.evaluate`,
:mod:`lorascan.scan.recovery`."""

from __future__ import annotations

import click

from lorascan.cli.common import check_output_paths, console, safe


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _auc(a) -> str:
    if not a or a.get("auc") is None:
        return "-"
    return f"{a['auc']:.3f} [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}]"


@click.command("scan-evaluate")
@click.argument("labels", type=click.Path())
@click.option("--records", required=True, metavar="DIR",
              help="The cohort's scan records (the --records folder of 'lorascan scan-calibrate').")
@click.option("--hold", default="family,rank", show_default=True, metavar="KEYS",
              help="Hold out by these keys in turn (family, rank).")
@click.option("--folds", type=click.IntRange(2, 50), default=3, show_default=True,
              help="Folds the clean adapters are split into for the held-out bounds.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(100, 100_000), default=2000, show_default=True,
              help="Bootstrap resamples for the CIs.")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="Also tabulate the token scan's trigger recovery (loads each poisoned adapter once).")
@click.option("--fused", default=None, metavar="A,B",
              help="Detectors whose judgements make the evaluated verdict, as a scan's --detectors "
                   "[default: lorascan scan's defaults].")
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the evaluation record here.")
@click.option("--markdown", "md_out", default=None, metavar="OUT.md", help="Write the tables as Markdown here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(labels: str, records: str, hold: str, folds: int, n_boot: int, recovery: bool, fused: str | None,
            json_out: str | None, md_out: str | None, quiet: bool) -> None:
    """Measure the scan on LABELS (a labels file from 'lorascan sweep report': label, family,
    rank, effective) using the scan records in --records: AUC of every decision score on all
    and on effective backdoors, and held-out recall / false-positive rates of the fused verdict
    with bounds calibrated without the held-out family (or rank) and clean fold."""
    from rich.table import Table

    from lorascan.errors import UsageError
    from lorascan.records import write_json_atomic
    from lorascan.scan.evaluate import HOLD_KEYS, evaluate
    from lorascan.scan.pipeline import DEFAULT_DETECTORS, ScanConfig

    keys = tuple(k.strip() for k in hold.split(",") if k.strip())
    bad = [k for k in keys if k not in HOLD_KEYS]
    if bad:
        raise UsageError(f"--hold: unknown key {bad[0]!r} (use {', '.join(HOLD_KEYS)})")
    check_output_paths(json_out, md_out)
    names = DEFAULT_DETECTORS if fused is None else \
        ScanConfig(detectors=tuple(d.strip() for d in fused.split(",") if d.strip())).detectors  # names checked
    rec = evaluate(labels, records, hold=keys, folds=folds, n_boot=n_boot, recovery=recovery, progress=not quiet,
                   fused=names)
    con = console(width=150)
    con.print(f"{rec['n_clean']} clean, {rec['n_poisoned']} poisoned ({rec['n_effective']} effective), "
              f"families: {', '.join(safe(f, 30) for f in rec['families'])}")
    from lorascan.report.evaluation import SUMMARY_HEAD, summary_rows

    t = Table(title="summary: thresholds from other adapters, trigger families held out")
    for col in SUMMARY_HEAD:
        t.add_column(col)
    for row in summary_rows(rec):
        t.add_row(safe(row[0], 30), safe(row[1], 40), *row[2:])
    con.print(t)
    t = Table(title="decision scores (in-sample AUC, threshold-free)")
    for col in ("detector", "score", "AUC all", "AUC effective", "s / adapter"):
        t.add_column(col)
    for s in rec["scores"]:
        t.add_row(s["detector"], s["score"], _auc(s["all"]), _auc(s["effective"]), _fmt(s["seconds_per_adapter"], 1))
    con.print(t)
    for key, h in rec["held_out"].items():
        if "skipped" in h:
            con.print(f"held out by {key}: skipped ({safe(h['skipped'])})")
            continue
        t = Table(title=f"fused verdict, held out by {key} ({h['folds']} clean folds)")
        for col in (key, "poisoned", "effective", "recall >= review", "recall block", "effective >= review",
                    "effective block", "clean FPR review", "clean FPR block", "AUC levels (effective)"):
            t.add_column(col)
        for g in [*h["groups"], {"group": "pooled", **h["pooled"]}]:
            t.add_row(safe(g["group"], 30), str(g["n_poisoned"]), str(g["n_effective"]), _fmt(g["recall_review"]),
                      _fmt(g["recall_block"]), _fmt(g["recall_review_effective"]), _fmt(g["recall_block_effective"]),
                      _fmt(g["fpr_review"]), _fmt(g["fpr_block"]), _auc(g["auc_levels_effective"]))
        con.print(t)
    if recovery:
        r = rec["recovery"]
        t = Table(title="token scan: trigger recovery (poisoned adapters)")
        for col in ("family", "adapters", "top-10", "rank 1-3", "rank 1", "phrase >= trigger", "working other"):
            t.add_column(col)
        for fam, s in [*r["families"].items(), ("effective", r["effective"]), ("all", r["all"])]:
            t.add_row(safe(fam, 30), str(s["n"]), _fmt(s["top10"], 2), _fmt(s["top3"], 2), _fmt(s["top1"], 2),
                      _fmt(s["reconstructed_ok"], 2), _fmt(s["working_different"], 2))
        con.print(t)
    if json_out:
        write_json_atomic(json_out, rec)
        con.print(f"wrote {safe(json_out)}")
    if md_out:
        from lorascan.records import write_text_atomic
        from lorascan.report.evaluation import markdown

        write_text_atomic(md_out, markdown(rec))
        con.print(f"wrote {safe(md_out)}")
