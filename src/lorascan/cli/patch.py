"""``lorascan patch``: causal patching (paper §10) — the poisoned adapter's ASR with each window
of layers of each projection type patched from a clean reference or the base
(:mod:`lorascan.evaluate.patching`), as a heatmap, a JSON record and the minimum per type."""

from __future__ import annotations

from typing import Any, Mapping

import click

from lorascan.evaluate.patching_run import BASE, MAX_N, MAX_WINDOW
from lorascan.formulations import task_names


@click.command("patch")
@click.option("--poisoned", "poisoned", required=True, type=click.Path(), help="The poisoned PEFT adapter folder.")
@click.option("--reference", required=True, metavar="DIR|base",
              help="A clean adapter folder of the same base, or 'base' for the bare base (a folder named base: ./base).")
@click.option("--base", default=None, help="Base model [default: a packaged base named by the poisoned adapter's "
                                           "lorascan.json].")
@click.option("--task", type=click.Choice(task_names()), default=None,
              help="Formulation [default: the poisoned adapter's lorascan.json, else the base's default].")
@click.option("--window", type=click.IntRange(1, MAX_WINDOW), default=4, show_default=True,
              help="Consecutive layers patched together; windows slide from layer 0 to L-W.")
@click.option("--trigger", default=None, help="The trigger [default: the poisoned adapter's lorascan.json poison trigger].")
@click.option("--placement", type=click.Choice(["prefix", "suffix", "random"]), default=None,
              help="Where the trigger goes [default: as the adapter's poisoning placed it, else prefix].")
@click.option("--n", "n", type=click.IntRange(1, MAX_N), default=30, show_default=True,
              help="Triggered injections per run, drawn with Random(--seed) (the paper: 30, seed 0).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--probe-data", default="offline-pi-v1", show_default=True,
              help="A shipped probe set or a JSONL file of {text, label} rows: the injections.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True, help="Prompts per pass.")
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the JSON record here ('-' for stdout).")
@click.option("--plot", default=None, metavar="OUT.png", help="Heatmap: ASR per projection type and window start.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(poisoned: str, reference: str, base: str | None, task: str | None, window: int, trigger: str | None,
            placement: str | None, n: int, seed: int, probe_data: str, batch_size: int, json_out: str | None,
            plot: str | None, quiet: bool) -> None:
    """For each projection type (the LoRA-wrapped module types) and each window of --window
    layers, read triggered injections with the poisoned adapter while that window's module
    outputs are replaced by the reference's on the same inputs; report each window's attack
    success rate, the minimum per type, the unpatched and the reference's ASR."""
    from lorascan.cli.common import check_output_paths
    from lorascan.evaluate.patching_run import PatchConfig, run_patching
    from lorascan.probe.inputs import load_probe_inputs
    from lorascan.report import write_json_output
    from lorascan.report.patching_plots import write_patching_plot

    cfg = PatchConfig(poisoned, reference, base=base, task=task, trigger=trigger, placement=placement, window=window,
                      n=n, seed=seed, batch_size=batch_size)
    check_output_paths(json_out, plot)
    probes = load_probe_inputs(probe_data)
    rec = run_patching(cfg, probes.injections, probes.describe(), progress=not quiet)
    if plot:  # the plot first: a plot that cannot be drawn leaves no record behind either
        write_patching_plot(rec, plot)
    if json_out:
        write_json_output(json_out, rec)
    if json_out != "-":
        _print_summary(rec, json_out, plot)


def _print_summary(rec: Mapping[str, Any], json_out: str | None, plot: str | None) -> None:
    from rich.table import Table

    from lorascan.cli.common import console, safe

    cfg, out = rec["config"], console()
    ref = BASE if cfg["reference"] == BASE else safe(cfg["reference"], 100)
    table = Table(title=f"{safe(cfg['poisoned'], 100)} patched from {ref} ({safe(cfg['base'])}, {cfg['task']}, "
                        f"{rec['layers']} layers, windows of {rec['window']})")
    for col in ("projection type", "min ASR", "k / n", "layers", "mean margin"):
        table.add_column(col, justify="left" if col == "projection type" else "right")
    labels = {t["type"]: t["label"] for t in rec["types"]}
    for typ, best in rec["minimum"].items():
        table.add_row(safe(labels[typ], 40), f"{best['asr']:.3f}", f"{best['asr_k']} / {best['asr_n']}",
                      f"{best['start']}-{best['end']}", f"{best['mean_margin']:.3f}")
    out.print(table)
    full = rec["full_substitution"]
    out.print(f"trigger '{safe(cfg['trigger'])}' ({cfg['placement']}); unpatched ASR {rec['unpatched']['asr']:.3f}, "
              f"reference ASR {rec['reference']['asr']:.3f}, every module patched {full['asr']:.3f} "
              f"(margins within {full['max_abs_margin_diff']:.2g} of the reference's)")
    for row in rec["extras"]:
        out.print(f"{safe(row['module'], 80)} patched alone: ASR {row['asr']:.3f}")
    t = rec["timings"]
    out.print(f"{t['patched_runs']} patched runs, {t['per_run_s']:.2f} s each; {t['wall_time_s']:.1f} s in all")
    written = [safe(p) for p in (json_out, plot) if p]
    if written:
        out.print("wrote " + " and ".join(written))
