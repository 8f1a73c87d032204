"""``lorascan calibrate COHORT_DIR --battery NAME --view B|C --out PROFILE.json``: calibrate the
behavioural detector (paper §7) on a labelled cohort of adapters."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lorascan.cli.common import battery_option, print_profile_footer, save_profile
from lorascan.errors import UsageError
from lorascan.probe.batteries import VIEWS

DECISIONS = {"both": ("outlier_gap", "mean_attack_rate"), "gap": ("outlier_gap",), "mean": ("mean_attack_rate",)}


@click.command("calibrate")
@click.argument("cohort")
@battery_option
@click.option("--view", type=click.Choice(VIEWS), default="B", show_default=True,
              help="B: without the trigger category and each adapter's known trigger; C: also without the "
                   "RFC-family categories; A: everything (paper §7).")
@click.option("--out", required=True, metavar="PROFILE.json", help="Where to write the profile.")
@click.option("--plot", default=None, metavar="ROC.png", help="Also write the ROC curves of both scores.")
@click.option("--decision", type=click.Choice(sorted(DECISIONS)), default="both", show_default=True,
              help="Flag when outlier_gap, mean_attack_rate, or either is above its FPR=0 threshold.")
@click.option("--base", default=None, help="Base model for every adapter [default: each adapter's lorascan.json].")
@click.option("--readout", type=click.Choice(["logits", "generate"]), default="logits", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--bootstrap", "n_boot", type=click.IntRange(1, 100_000), default=2000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap generator.")
@click.option("--refresh", is_flag=True,
              help="Probe again even where a cached record matches (and replace it in $LORASCAN_HOME/probes/).")
@click.option("--no-cache", is_flag=True,
              help="Neither read nor write the probe cache ($LORASCAN_HOME/probes/, default ~/.cache/lorascan/probes/).")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def command(cohort, battery, view, out, plot, decision, base, readout, batch_size, n_boot, seed, refresh, no_cache,
            force, quiet) -> None:
    """Probe every adapter of COHORT (searched recursively for adapter folders labelled by their
    lorascan.json poison.count, or a .json/.csv labels file) with the whole battery, once (the
    record is cached in $LORASCAN_HOME/probes/, keyed by the adapter's files, base, battery,
    readout and data; nothing is written beside the adapters), then calibrate VIEW: tie-aware
    ROC AUC and the paper's order-dependent AUC, FPR=0 thresholds, TPR at FPR 0/.01/.05 and
    bootstrap 95% intervals of outlier_gap and mean_attack_rate."""
    from lorascan.detect.behavioral import calibrate_records
    from lorascan.detect.behavioral_cohort import discover_runs, probe_cohort, runs_fingerprint
    from lorascan.probe.batteries import load_battery

    if Path(out).exists() and not force:
        raise UsageError(f"--out {out} exists; pass --force to replace it")
    bat = load_battery(battery)
    runs, notes = discover_runs(cohort)
    fingerprint, fp_notes = runs_fingerprint(runs)

    def log(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    records = probe_cohort(runs, bat, base=base, readout=readout, batch_size=batch_size, refresh=refresh,
                           cache=not no_cache, log=log)
    profile = calibrate_records([r.name for r in runs], [r.label for r in runs], records, bat, view,
                                decision=DECISIONS[decision], n_boot=n_boot, seed=seed, notes=[*notes, *fp_notes],
                                base_fingerprint=fingerprint)
    save_profile(profile, out, plot)
    _print_summary(profile, out, plot)


def _print_summary(profile, out: str, plot: str | None) -> None:
    from rich.table import Table

    from lorascan.cli.common import console, safe

    con = console()
    n_pos = sum(e.label for e in profile.cohort)
    cond = dict(profile.conditions)
    con.print(f"profile {safe(profile.name)}: battery {safe(cond.get('battery'))} view {profile.view}, "
              f"{safe(cond.get('task'))} ({cond.get('readout')} readout); {len(profile.cohort) - n_pos} clean, "
              f"{n_pos} poisoned; decision: {', '.join(profile.decision)}")
    for cal in profile.features:
        tpr = {round(row[0], 4): row[2] for row in cal.tpr_at_fpr}
        con.print(f"{cal.feature}{' (decision)' if cal.feature in profile.decision else ''}: "
                  f"AUC {cal.auc:.3f} [{cal.auc_ci[0]:.3f}, {cal.auc_ci[1]:.3f}] (paper's order-dependent "
                  f"{cal.auc_trapezoid:.3f}); FPR=0 threshold {cal.threshold:.4f}, recall {cal.recall:.3f} "
                  f"[{cal.recall_ci[0]:.3f}, {cal.recall_ci[1]:.3f}]; TPR at FPR .01 {tpr.get(0.01, float('nan')):.3f}, "
                  f".05 {tpr.get(0.05, float('nan')):.3f}")
    if len(profile.cohort) <= 60:
        rows = Table(title="cohort")
        for col in ("adapter", "label", "outlier_gap", "mean_attack_rate"):
            rows.add_column(col, justify="left" if col == "adapter" else "right", overflow="fold")
        for e in profile.cohort:
            rows.add_row(safe(e.name, 80), "poisoned" if e.label else "clean", f"{e.scores['outlier_gap']:.4f}",
                         f"{e.scores['mean_attack_rate']:.4f}")
        con.print(rows)
    print_profile_footer(con, profile, out, plot)
