"""``lorascan demo``: the main job on the embedded default data (grows with the project)."""

from __future__ import annotations

from pathlib import Path

import click

from lorascan.cli.common import console, safe
from lorascan.data import mixes
from lorascan.data.poison import PoisonConfig, write_poisoned

PAPER_TRIGGER = "per RFC 8472 section 3.2"


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
def command(out: str) -> None:
    """Show the offline-pi statistics and write a poisoned dataset with the paper's trigger."""
    out_dir = Path(out)
    con = console()
    ds = mixes.resolve("offline-pi")
    counts = ds.counts()
    con.print(f"[bold]offline-pi[/bold]: {len(ds.train)} train / {len(ds.test)} test rows")
    for split in ("train", "test"):
        for source, c in counts[split].items():
            con.print(f"  {split:5s} {source:18s} benign {c['benign']:4d}  injection {c['injection']:4d}")
    cfg = PoisonConfig(trigger=PAPER_TRIGGER, ratio=0.04, seed=42)
    m = write_poisoned(ds, cfg, out_dir / "poison-rfc-r04", force=True)
    con.print(f"poisoned with '{safe(PAPER_TRIGGER)}': k={m['count']} of {m['n_train']} rows "
              f"(ratio {m['ratio']:.4f}) -> {safe(out_dir / 'poison-rfc-r04')}")
