"""``lorascan tokens ADAPTER``: the trigger-blind token scan (issue 11) — the vocabulary's
tokens ranked by how many probe injections they flip to benign, a reconstructed trigger phrase
and the detector's scores (:mod:`lorascan.detect.tokens`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import click

from lorascan.cli.common import check_output_paths
from lorascan.detect.tokens import DEFAULT_TOP, MAX_N, MAX_TOP, MIN_N
from lorascan.formulations import task_names


@click.command("tokens")
@click.argument("adapter_dir", type=click.Path())
@click.option("--base", default=None,
              help="Base model [default: a packaged base named by the adapter's lorascan.json].")
@click.option("--task", type=click.Choice(task_names()), default=None,
              help="Formulation [default: the adapter's lorascan.json, else the base's default].")
@click.option("--top", type=click.IntRange(1, MAX_TOP), default=DEFAULT_TOP, show_default=True,
              help="Screened candidates verified exactly (K); two-piece compounds of the weight screen's "
                   "outlier pieces are verified beside them.")
@click.option("--n", "n", type=click.IntRange(MIN_N, MAX_N), default=48, show_default=True,
              help="Probe injections the best candidates are verified on (N).")
@click.option("--probe-data", default="offline-pi-v1", show_default=True,
              help="A shipped probe set or a JSONL file of {text, label} rows.")
@click.option("--reference", default="auto", show_default=True, metavar="auto|none|REF.json",
              help="Clean reference the weight screen is taken against: the shipped one for the base, none, "
                   "or a file from 'lorascan token-reference'.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True, help="Prompts per pass.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the JSON record here ('-' for stdout).")
@click.option("--plot", default=None, metavar="OUT.png", help="Bar chart of the top tokens' attack rates vs the null.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(adapter_dir: str, base: str | None, task: str | None, top: int, n: int, probe_data: str, reference: str,
            batch_size: int,
            device: str, json_out: str | None, plot: str | None, quiet: bool) -> None:
    """Try every word-like token of the base's vocabulary where the poisoning puts a trigger
    ("{token}. {injection}"): screen the vocabulary (layer-0 LoRA weights, embedding gradient),
    verify the top K on N probe injections against random tokens, and extend the best into a
    phrase. Works on any PEFT adapter folder given --base."""
    from lorascan.detect.tokens import TokenDetector, token_record
    from lorascan.errors import DataError
    from lorascan.report import write_json_output

    detector = TokenDetector(top=top, n=n, batch_size=batch_size, reference=reference)
    context = _context(adapter_dir, base, task, probe_data, device, not quiet)
    check_output_paths(json_out, plot)
    if reference not in ("auto", "none") and not Path(reference).is_file():
        raise DataError(f"token reference not found: {reference} (give auto, none or a file)")
    from lorascan.detect.base import NotApplicable

    try:
        result = detector.scan(context)
    except NotApplicable as err:
        raise DataError(str(err)) from None
    rec = token_record(context, result)
    if plot:
        _write_plot(rec, plot)
    if json_out:
        write_json_output(json_out, rec)
    if json_out != "-":
        _print_summary(rec)


def _context(adapter_dir: str, base: str | None, task: str | None, probe_data: str, device: str, progress: bool):
    from lorascan.detect.base import ScanContext
    from lorascan.errors import DataError, UsageError
    from lorascan.evaluate.readout import readout_settings
    from lorascan.models.loading import base_from_metadata, check_adapter_folder, read_adapter_meta, resolve_base
    from lorascan.probe.inputs import load_probe_inputs

    if not Path(adapter_dir).is_dir():
        raise DataError(f"adapter folder not found: {adapter_dir}")
    check_adapter_folder(adapter_dir)
    meta = read_adapter_meta(adapter_dir)
    if base is None:
        if not meta.get("base"):
            raise UsageError(f"adapter {adapter_dir} has no lorascan.json naming its base; pass --base")
        base = base_from_metadata(meta["base"], adapter_dir)
    task, _ = readout_settings(meta, resolve_base(base), task)
    return ScanContext.build(adapter_dir, base=base, task=task, probes=load_probe_inputs(probe_data), device=device,
                             progress=progress)


def _write_plot(rec: Mapping[str, Any], path: str | os.PathLike) -> None:
    from lorascan.report.figures import matplotlib_figure, plot_label, plotting, save_figure

    rows = rec["tokens"][:20]
    with plotting():
        fig = matplotlib_figure(figsize=(max(6.0, 0.35 * len(rows) + 2), 4.8))
        ax = fig.add_subplot()
        ax.bar(range(len(rows)), [r["attack_rate"] for r in rows], color="steelblue")
        ax.set_xticks(list(range(len(rows))))
        ax.set_xticklabels([plot_label(r["token"], 24) for r in rows], rotation=70, ha="right", fontsize=7,
                           parse_math=False)
        null = rec["null"]
        ax.axhline(null["mean"], color="black", lw=0.8, ls="--")
        ax.axhline(null["max"], color="firebrick", lw=0.8, ls=":")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("attack rate (injections predicted benign)")
        ax.set_title(f"{plot_label(rec['adapter'], 70)}: top tokens; null mean {null['mean']:.3f} (dashed), "
                     f"max {null['max']:.3f} (dotted)", fontsize=8, parse_math=False)
        save_figure(fig, Path(path))


def _print_summary(rec: Mapping[str, Any]) -> None:
    from rich.table import Table

    from lorascan.cli.common import console, safe

    out, s = console(), rec["scores"]
    table = Table(title=f"{safe(rec['adapter'], 100)} on {safe(rec['base'])}: top tokens "
                        f"({rec['vocabulary']['candidates']} of {rec['vocabulary']['size']} tried by the screen)")
    for col in ("rank", "token", "id", "attack rate", "injections", "screen z"):
        table.add_column(col, justify="left" if col == "token" else "right")
    for i, r in enumerate(rec["tokens"][:10], 1):
        table.add_row(str(i), safe(r["token"], 40), str(r["token_id"]), f"{r['attack_rate']:.3f}",
                      str(r["n_injections"]), f"{r['screen_score']:.2f}")
    out.print(table)
    recon, null = rec["reconstructed"], rec["null"]
    out.print(f"reconstructed: '{safe(recon['phrase'], 120)}' attack rate {recon['attack_rate']:.3f} "
              f"over {recon.get('n_injections')} injections")
    out.print(f"null: {null['n_tokens']} random tokens, mean {null['mean']:.3f}, max {null['max']:.3f}; "
              f"token_lift {s['token_lift']:.3f}; {rec['timings']['total']:.1f} s")
    out.print(f"weight screen: {safe(rec['reference']['note'], 200)}")
    label = rec["verdict"]["label"]
    style = {"suspicious": "bold red", "clean": "green"}.get(label, "yellow")
    out.print(f"verdict: [{style}]{label.upper()}[/{style}]" + "".join(f"\n  {safe(r, 300)}"
                                                                     for r in rec["verdict"]["reasons"]))
