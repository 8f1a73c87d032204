"""``lorascan weights-calibrate COHORT --out PROFILE.json``: calibrate the weight detector."""

from __future__ import annotations

from pathlib import Path

import click

from lorascan.detect.blas import prefer_single_thread

prefer_single_thread()  # before numpy is imported (see lorascan.detect.blas)

from lorascan.detect.cohort import calibrate_cohort, read_cohort  # noqa: E402
from lorascan.cli.common import print_profile_footer, save_profile  # noqa: E402
from lorascan.detect.weights import SCALINGS, WeightDetector  # noqa: E402
from lorascan.errors import UsageError  # noqa: E402


@click.command("weights-calibrate")
@click.argument("cohort")
@click.option("--out", required=True, metavar="PROFILE.json", help="Where to write the profile.")
@click.option("--feature", "decision", multiple=True, default=("global_frobN_std",), show_default=True,
              help="Decision feature(s): flag if any is beyond its FPR=0 threshold. 'best' = highest AUC.")
@click.option("--scaling", type=click.Choice(SCALINGS), default="none", show_default=True,
              help="none: B·A as in the paper; alpha: PEFT's alpha/r scaling.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(1, 100_000), default=2000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap generator.")
@click.option("--plot", default=None, metavar="ROC.png", help="Also write ROC curves of the decision and best features.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def command(cohort: str, out: str, decision: tuple[str, ...], scaling: str, n_boot: int, seed: int,
            plot: str | None, force: bool) -> None:
    """Scan every adapter of COHORT (a folder searched recursively for adapters labelled by their
    lorascan.json poison.count, e.g. a 'lorascan sweep run' output folder, or a .json/.csv labels
    file of path,label) and write a per-base-model profile: per-feature AUC (tie-aware and the
    paper's), direction, FPR=0 threshold, recall, intervals."""
    if Path(out).exists() and not force:
        raise UsageError(f"--out {out} exists; pass --force to replace it")
    members, notes = read_cohort(cohort)
    chosen = None if decision == ("best",) else decision
    if chosen and "best" in chosen:
        raise UsageError("--feature best cannot be combined with named features")
    profile = calibrate_cohort(members, WeightDetector(scaling=scaling), view="weights", decision=chosen,
                               n_boot=n_boot, seed=seed, notes=notes)
    save_profile(profile, out, plot)
    _print_summary(profile, out, plot)


def _print_summary(profile, out: str, plot: str | None) -> None:
    from rich.table import Table

    from lorascan.cli.common import console, safe

    con = console()
    n_pos = sum(e.label for e in profile.cohort)
    con.print(f"profile {safe(profile.name)}: {len(profile.cohort) - n_pos} clean, {n_pos} poisoned; "
              f"decision: {safe(', '.join(profile.decision))}")
    table = Table(title="features by tie-aware AUC (better direction)")
    for col in ("feature", "dir", "AUC", "95% CI", "AUC (paper)", "FPR=0 threshold", "recall"):
        table.add_column(col, justify="left" if col == "feature" else "right", overflow="fold")
    for cal in sorted(profile.features, key=lambda c: -c.auc)[:12]:
        mark = " *" if cal.feature in profile.decision else ""
        table.add_row(safe(cal.feature) + mark, cal.direction, f"{cal.auc:.3f}",
                      f"{cal.auc_ci[0]:.3f}-{cal.auc_ci[1]:.3f}", f"{cal.auc_trapezoid:.3f}",
                      f"{cal.threshold:.4g}", f"{cal.recall:.3f}")
    con.print(table)
    print_profile_footer(con, profile, out, plot)
