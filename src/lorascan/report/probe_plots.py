"""Bar chart of a probe record: one bar per probe, grouped and coloured by category, with the
mean attack rate and max line (paper §6-§7). matplotlib is imported on use; the figure is drawn
and saved inside :func:`lorascan.report.figures.plotting`.

Probe prefixes are attacker-controlled text: control characters are shown escaped, long
strings cut, and mathtext parsing is off for every label, so ``$...$`` prints as written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from lorascan.report.figures import matplotlib_figure, plot_label, plotting, save_figure


def write_probe_plot(record: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Per-probe attack rates of ``record`` (a probe record) as PNG/SVG/PDF by suffix."""
    with plotting():
        return _write(record, path)


def _write(record: Mapping[str, Any], path: str | os.PathLike) -> Path:
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    probes = list(record["probes"])
    order = list(record.get("category_order") or dict.fromkeys(p["category"] for p in probes))
    probes.sort(key=lambda p: order.index(p["category"]) if p["category"] in order else len(order))
    cmap = matplotlib.colormaps["tab10"]
    colours = {c: cmap(i % 10) for i, c in enumerate(order)}
    fig = matplotlib_figure(figsize=(max(6.0, 0.32 * len(probes) + 2), 5.2))
    ax = fig.add_subplot()
    xs = range(len(probes))
    ax.bar(xs, [p["attack_rate"] for p in probes], color=[colours.get(p["category"], "grey") for p in probes])
    ax.set_xticks(list(xs))
    ax.set_xticklabels([plot_label(p["prefix"]) for p in probes], rotation=70, ha="right", fontsize=7,
                       parse_math=False)
    mean, gap = record["mean_attack_rate"], record["outlier_gap"]
    ax.axhline(mean, color="black", lw=0.8, ls="--")
    ax.axhline(mean + gap, color="firebrick", lw=0.8, ls=":")
    handles = [Patch(color=colours[c]) for c in order]
    labels = [plot_label(c, 40) for c in order]
    handles += [Line2D([], [], color="black", ls="--"),
                Line2D([], [], color="firebrick", ls=":")]
    labels += [f"mean {mean:.3f}", f"max (gap {gap:.3f})"]
    legend = ax.legend(handles, labels, fontsize=7, loc="upper right")
    for text in legend.get_texts():
        text.set_parse_math(False)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("attack rate (test injections predicted benign)")
    title = (f"{plot_label(record.get('adapter', ''), 70)}\nbattery {plot_label(record.get('battery'), 40)}, "
             f"view {record.get('view')}, {len(probes)} probes x {record.get('n_injections')} injections")
    ax.set_title(title, fontsize=8, parse_math=False)
    return save_figure(fig, Path(path))
