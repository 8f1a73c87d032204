"""``lorascan data list`` / ``lorascan data show NAME``."""

from __future__ import annotations

import click
from rich.table import Table

from lorascan.assets import install_hint
from lorascan.cli.common import console, safe, source_options
from lorascan.data import mixes


@click.group("data")
def command() -> None:
    """Inspect the datasets lorascan can build (named mixes, corpora, files)."""


@command.command("list")
def list_cmd() -> None:
    """Named datasets and whether the packages they need are installed."""
    table = Table(title="named datasets (also: hf:ID, a .csv/.jsonl/.json/.parquet file, a split folder)")
    for col in ("name", "installed", "description"):
        table.add_column(col)
    for name, named in mixes.NAMED.items():
        missing = mixes.missing_packages(name)
        status = "yes" if not missing else "no: " + "; ".join(install_hint(p) for p in missing)
        table.add_row(name, status, named.description)
    console().print(table)


@command.command("show")
@click.argument("name")
@click.option("--examples", type=int, default=2, show_default=True, help="Examples per class to print.")
@source_options
def show_cmd(name: str, examples: int, test_fraction: float, split_seed: int, source_opts) -> None:
    """Counts per split, source and class, length statistics and examples of NAME."""
    ds = mixes.resolve(name, source_opts, test_fraction, split_seed)
    out = console()
    out.print(f"[bold]{safe(ds.name)}[/bold]: {safe(ds.description)}")
    out.print(f"train {len(ds.train)} rows, test {len(ds.test)} rows, sha256 {ds.sha256()[:16]}")
    if ds.details:
        out.print("details: " + safe(", ".join(f"{k}={v}" for k, v in ds.details.items()), 400))
    counts = ds.counts()
    table = Table(title="rows per source and class")
    for col in ("source", "train benign", "train injection", "test benign", "test injection"):
        table.add_column(col, justify="right" if col != "source" else "left")
    totals = [0, 0, 0, 0]
    for source in sorted(set(counts["train"]) | set(counts["test"])):
        tr = counts["train"].get(source, {"benign": 0, "injection": 0})
        te = counts["test"].get(source, {"benign": 0, "injection": 0})
        vals = [tr["benign"], tr["injection"], te["benign"], te["injection"]]
        totals = [a + b for a, b in zip(totals, vals)]
        table.add_row(safe(source), *map(str, vals))
    table.add_row("[bold]total[/bold]", *map(str, totals))
    out.print(table)
    for label, lname in ((0, "benign"), (1, "injection")):
        lengths = sorted(len(s.text) for s in ds.train if s.label == label)
        if lengths:
            q = [lengths[int(f * (len(lengths) - 1))] for f in (0.1, 0.5, 0.9)]
            out.print(f"{lname}: train length p10/median/p90 = {q[0]}/{q[1]}/{q[2]} chars")
        for s in [s for s in ds.train if s.label == label][:max(0, examples)]:
            # "\\[" is a literal bracket: a bare "[id]" is read as a markup tag and vanishes.
            out.print(f"  \\[{safe(s.id, 60)}] {safe(s.text, 110)}")
