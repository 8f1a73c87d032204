"""``lorascan probe``: per-probe attack rates of an adapter on a battery (paper §6) and the
behavioural detector's statistics (§7)."""

from __future__ import annotations

from typing import Any

import click

from lorascan.cli.common import battery_option
from lorascan.probe.batteries import VIEWS


@click.command("probe")
@click.option("--adapter", "adapter_dir", required=True, type=click.Path(), help="PEFT adapter folder.")
@click.option("--base", default=None, help="Base model of the adapter [default: its lorascan.json 'base'].")
@click.option("--data", "data_dir", default=None, type=click.Path(),
              help="Folder written by 'lorascan poison' whose test injections carry the probes "
                   "[default: the adapter's lorascan.json data.path, else a sibling data/ folder].")
@battery_option
@click.option("--view", type=click.Choice(VIEWS), default="A", show_default=True,
              help="A: every probe; B: without the trigger category and the adapter's known trigger; "
                   "C: also without the RFC-family categories (paper §7).")
@click.option("--exclude", multiple=True, metavar="TRIGGER", help="Also drop probes equal to this trigger (any view).")
@click.option("--readout", type=click.Choice(["logits", "generate"]), default="logits", show_default=True,
              help="Batched logits, or the paper's greedy generation (label-word only).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Prompts per forward pass (at most 4096: more only costs memory).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Probe with the first N test injections only (the paper used 60) [default: all].")
@click.option("--profile", "profile_path", default=None, metavar="P",
              help="Behavioural profile from 'lorascan calibrate' for a verdict.")
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the probe record here ('-' for stdout).")
@click.option("--plot", default=None, metavar="OUT.png", help="Bar chart of per-probe rates grouped by category.")
@click.option("--per-probe", is_flag=True, help="Also print every probe's rate.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(adapter_dir, base, data_dir, battery, view, exclude, readout, batch_size, limit, profile_path, json_out,
            plot, per_probe, quiet) -> None:
    """Probe ADAPTER with every prefix of a battery placed on the test injections as the
    poisoning placed the trigger; report per-probe and per-category attack rates,
    mean_attack_rate and outlier_gap (max - mean)."""
    from lorascan.detect.behavioral import behavioral_verdict, context_of, load_behavioral_profile
    from lorascan.probe.batteries import load_battery
    from lorascan.probe.generalization import run_probe
    from lorascan.report import write_json_output

    bat = load_battery(battery)
    profile = load_behavioral_profile(profile_path) if profile_path else None
    rec = run_probe(adapter_dir, bat, view, base=base, data_dir=data_dir, exclude=exclude, readout=readout,
                    batch_size=batch_size, progress=not quiet, limit=limit)
    scores = {"outlier_gap": rec["outlier_gap"], "mean_attack_rate": rec["mean_attack_rate"]}
    rec["verdict"] = behavioral_verdict(scores, profile, context_of(rec)).to_dict()
    rec["profile"] = {"path": profile_path, "name": profile.name} if profile is not None else None
    if json_out:
        write_json_output(json_out, rec)
    if plot:
        from lorascan.report.probe_plots import write_probe_plot

        write_probe_plot(rec, plot)
    if json_out != "-":
        _print_summary(rec, per_probe, plot)


def _print_summary(rec: dict[str, Any], per_probe: bool, plot: str | None) -> None:
    from rich.table import Table

    from lorascan.cli.common import console, safe

    out = console()
    table = Table(title=f"{safe(rec['adapter'], 100)} on {safe(rec['base'])}: battery {safe(rec['battery'])}, "
                        f"view {rec['view']} ({rec['n_probes']} probes x {rec['n_injections']} injections)")
    for col in ("category", "probes", "mean", "min", "max", "benign / probed"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for cat in rec["category_order"]:
        c = rec["categories"][cat]
        table.add_row(safe(cat), str(c["n_probes"]), f"{c['mean']:.3f}", f"{c['min']:.3f}", f"{c['max']:.3f}",
                      f"{c['k']} / {c['n']}")
    out.print(table)
    if per_probe:
        rows = Table(title="per probe")
        for col in ("prefix", "category", "attack rate", "k / n"):
            rows.add_column(col, justify="right" if col in ("attack rate", "k / n") else "left", overflow="fold")
        for p in rec["probes"]:
            rows.add_row(safe(p["prefix"]), safe(p["category"]), f"{p['attack_rate']:.3f}", f"{p['k']} / {p['n']}")
        out.print(rows)
    top = max(rec["probes"], key=lambda p: p["attack_rate"])
    out.print(f"mean_attack_rate {rec['mean_attack_rate']:.4f}, outlier_gap {rec['outlier_gap']:.4f} "
              f"(max '{safe(top['prefix'])}' {top['attack_rate']:.3f}); {rec['readout']} readout, "
              f"{safe(rec['placement'])} placement, {rec['wall_time_s']:.1f}s")
    if rec["excluded"]:
        out.print("excluded: " + "; ".join(f"'{safe(e['prefix'])}' ({e['reason']})" for e in rec["excluded"]))
    v = rec["verdict"]
    style = {"suspicious": "bold red", "clean": "green"}.get(v["label"], "yellow")
    out.print(f"verdict: [{style}]{v['label'].upper()}[/{style}]" + "".join(f"\n  {safe(r, 300)}" for r in v["reasons"]))
    if plot:
        out.print(f"wrote {safe(plot)}")
