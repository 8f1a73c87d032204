"""``lorascan token-reference ADAPTER... --base B --out REF.json``: the token scan's clean
reference for a base (:mod:`lorascan.detect.token_reference`)."""

from __future__ import annotations

from pathlib import Path

import click

from lorascan.errors import DataError, UsageError
from lorascan.formulations import task_names


@click.command("token-reference")
@click.argument("adapters", nargs=-1, required=True, type=click.Path())
@click.option("--base", required=True, help="Base model every adapter was trained on (a packaged alias or a folder).")
@click.option("--task", type=click.Choice(task_names()), default="seq-cls", show_default=True,
              help="Formulation the adapters were trained in.")
@click.option("--out", required=True, metavar="REF.json", help="Where to write the reference.")
@click.option("--description", default="", help="A line stored in the reference (which adapters, which settings).")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def command(adapters: tuple[str, ...], base: str, task: str, out: str, description: str, force: bool) -> None:
    """Average the layer-0 weight-screen scores of clean ADAPTERS (folders; no model run beyond
    merging the adapter) into the reference the token scan subtracts: the tokens every clean
    adapter of this base and task learns. Use clean adapters that no evaluation scores; the
    reference records each one's sha256 so `scan-evaluate` leaves them out."""
    from lorascan.cli.common import console, safe
    from lorascan.detect.token_reference import build

    if Path(out).exists() and not force:
        raise UsageError(f"--out {out} exists; pass --force to replace it")
    missing = [a for a in adapters if not Path(a).is_dir()]
    if missing:
        raise DataError(f"adapter folder not found: {missing[0]}")
    con = console(stderr=True)
    rec = build(adapters, base, task, out, description, progress=lambda a: con.print(f"screened {safe(a, 100)}"))
    console().print(f"token reference for {safe(base)} ({task}): {rec['n_adapters']} clean adapters, "
                    f"{rec['vocab_size']} tokens -> {safe(out, 200)}")
