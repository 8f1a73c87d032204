"""``lorascan trigger-spans ADAPTER --trigger T``: how many of a known trigger's pieces in a row an
adapter needs before it obeys (:mod:`lorascan.scan.spans`); a research tool for labelled cohorts."""

from __future__ import annotations

from typing import Any, Mapping

import click

from lorascan.detect.tokens import MAX_N, MIN_N
from lorascan.formulations import task_names


@click.command("trigger-spans")
@click.argument("adapter_dir", type=click.Path())
@click.option("--trigger", required=True, help="The adapter's known trigger (from its cohort's labels).")
@click.option("--base", default=None,
              help="Base model [default: a packaged base named by the adapter's lorascan.json].")
@click.option("--task", type=click.Choice(task_names()), default=None,
              help="Formulation [default: the adapter's lorascan.json, else the base's default].")
@click.option("--n", "n", type=click.IntRange(MIN_N, MAX_N), default=48, show_default=True,
              help="Verification injections, chosen as the token scan chooses them.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5, show_default=True,
              help="Attack rate a span must reach to count for the trigger's order.")
@click.option("--probe-data", default="offline-pi-v1", show_default=True,
              help="A shipped probe set or a JSONL file of {text, label} rows.")
@click.option("--reference", default="auto", show_default=True, metavar="auto|none|REF.json",
              help="Clean reference the weight screen's ranks are taken against (as in 'lorascan tokens').")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the JSON record here ('-' for stdout).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(adapter_dir: str, trigger: str, base: str | None, task: str | None, n: int, threshold: float,
            probe_data: str, reference: str, device: str, json_out: str | None, quiet: bool) -> None:
    """The exact attack rate of every contiguous span of TRIGGER's tokenizer pieces, placed as the
    token scan places a candidate ("{span}. {injection}"), and where the scan's weight and
    gradient screens rank each piece in the whole vocabulary. A trigger whose single pieces flip
    nothing (order > 1) is one the trigger-blind token scan cannot name."""
    from pathlib import Path

    from lorascan.cli.common import check_output_paths
    from lorascan.cli.tokens import _context
    from lorascan.detect.base import NotApplicable
    from lorascan.detect.tokens import TokenScanConfig
    from lorascan.errors import DataError, UsageError
    from lorascan.report import write_json_output
    from lorascan.scan.spans import spans_record, trigger_spans

    if not trigger.strip():
        raise UsageError("--trigger is empty")
    check_output_paths(json_out)
    if reference not in ("auto", "none") and not Path(reference).is_file():
        raise DataError(f"token reference not found: {reference} (give auto, none or a file)")
    context = _context(adapter_dir, base, task, probe_data, device, not quiet)
    try:
        found = trigger_spans(context, trigger, TokenScanConfig(n=n, reference=reference), threshold)
    except NotApplicable as err:
        raise DataError(str(err)) from None
    rec = spans_record(context, found)
    if json_out:
        write_json_output(json_out, rec)
    if json_out != "-":
        _print_summary(rec)


def _print_summary(rec: Mapping[str, Any]) -> None:
    from rich.table import Table

    from lorascan.cli.common import console, safe

    out, s = console(), rec["summary"]
    ranked = [k for k in ("weights", "gradient") if f"{k}_rank" in rec["pieces"][0]]
    table = Table(title=f"{safe(rec['trigger'], 60)}: pieces (ranks of {rec['vocabulary']} tokens)")
    for col in ("piece", "alone", *(f"{k} rank" for k in ranked)):
        table.add_column(col, justify="left" if col == "piece" else "right")
    alone = {r["start"]: r["attack_rate"] for r in rec["spans"] if r["end"] - r["start"] == 1}
    for j, p in enumerate(rec["pieces"]):
        table.add_row(safe(p["piece"], 30), f"{alone[j]:.3f}", *(str(p[f"{k}_rank"]) for k in ranked))
    out.print(table)
    by_len = ", ".join(f"{k}: {v:.3f}" for k, v in s["best_rate_by_length"].items())
    out.print(f"best attack rate by span length: {by_len}")
    order = s["order"]
    out.print(f"whole trigger {s['trigger_rate']:.3f} on {rec['n_injections']} injections; "
              + (f"order {order} (the fewest pieces in a row reaching {s['threshold']:g})" if order
                 else f"no span reaches {s['threshold']:g}"))
