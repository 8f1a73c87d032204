"""Plots of a sweep summary (:mod:`lorascan.experiments.summary`): ASR and clean accuracy
against poison count, mean ± std over seeds (the paper's multi-seed figure), one panel per
rank (rows) and trigger (columns) of each base model. matplotlib is imported on use; figures
are drawn and saved inside :func:`lorascan.report.figures.plotting`. Triggers are attacker-controlled text: titles show them cut, with control
characters escaped and mathtext parsing off, next to their hash tag.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from lorascan.errors import DataError
from lorascan.report.figures import matplotlib_figure, plot_label, plotting, save_figure

ASR_COLOR, CLEAN_COLOR = "#c0392b", "#2471a3"


def _short(text: str, limit: int = 36) -> str:
    return plot_label(text, limit)


def _layout(panels: Sequence[dict[str, Any]]) -> tuple[list[tuple], list[str], dict[tuple, dict]]:
    rows = sorted({(p["base"], p["task"], p["placement"], p["rank"]) for p in panels},
                  key=lambda r: (str(r[0]), str(r[1]), str(r[2]), r[3]))
    cols = sorted({p["trigger"] for p in panels})
    cells = {((p["base"], p["task"], p["placement"], p["rank"]), p["trigger"]): p for p in panels}
    return rows, cols, cells


def _draw_metric(ax, points: Sequence[dict[str, Any]], short: str, color: str, label: str) -> None:
    import numpy as np

    pts = [p for p in points if p[f"{short}_mean"] is not None]
    if not pts:
        return
    k = np.array([p["count"] for p in pts], dtype=float)
    mean = np.array([p[f"{short}_mean"] for p in pts])
    std = np.array([p[f"{short}_std"] for p in pts])
    ax.fill_between(k, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=color, alpha=0.15, lw=0)
    ax.errorbar(k, mean, yerr=std, color=color, marker="o", ms=4, lw=1.5, capsize=3, label=label)
    for p in pts:  # each seed, faint
        vals = [v for v in p[f"{short}_values"] if v is not None]
        ax.scatter([p["count"]] * len(vals), vals, color=color, s=8, alpha=0.35, lw=0)


def _draw_panel(ax, panel: dict[str, Any]) -> None:
    t = panel["transition"]
    if t["k_low"] is not None and t["k_high"] is not None and t["k_high"] > t["k_low"]:
        ax.axvspan(t["k_low"], t["k_high"], color="grey", alpha=0.12, lw=0, label="transition band")
    if t["k_high"] is not None:
        ax.axvline(t["k_high"], color="black", lw=0.8, ls="--", label=f"smallest k with mean ASR >= {t['high']:g}")
        ratio = f" ({100 * t['k_high_ratio']:.2f}%)" if t["k_high_ratio"] is not None else ""
        ax.text(0.98, 0.5, f"k = {t['k_high']}{ratio}", transform=ax.transAxes, ha="right", va="center",
                fontsize=8, parse_math=False, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.axhline(t["high"], color="grey", lw=0.6, ls=":")
    _draw_metric(ax, panel["points"], "clean_accuracy", CLEAN_COLOR, "clean accuracy")
    _draw_metric(ax, panel["points"], "asr", ASR_COLOR, "attack success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("poisoned training rows k")
    ax.grid(True, alpha=0.25)
    n = panel.get("n_clean_train")
    if n:
        top = ax.secondary_xaxis("top", functions=(lambda k: 100.0 * k / (n + k), lambda r: r * n / (100.0 - r)))
        top.set_xlabel("poison ratio k / (n + k), %", fontsize=7)
        top.tick_params(labelsize=7)
    seeds = max(p["n_runs"] for p in panel["points"])
    ax.set_title(f"{_short(panel['base'], 28)} r={panel['rank']}, {seeds} seed(s)\n"
                 f"trigger t{panel['trigger_tag']} '{_short(panel['trigger'])}'", fontsize=8, parse_math=False)


def figure(summary: dict[str, Any]):
    """The matplotlib Figure of a summary's panels (save it inside
    :func:`lorascan.report.figures.plotting`, or with :func:`save_figure`)."""
    panels = summary["panels"]
    if not panels:
        raise DataError("the sweep has no finished runs to plot")
    with plotting():
        return _figure(panels)


def _figure(panels: Sequence[dict[str, Any]]):
    rows, cols, cells = _layout(panels)
    fig = matplotlib_figure(figsize=(4.6 * len(cols), 3.9 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharey=True)
    for i, row in enumerate(rows):
        for j, trig in enumerate(cols):
            ax = axes[i][j]
            if (row, trig) not in cells:
                ax.set_visible(False)
                continue
            _draw_panel(ax, cells[(row, trig)])
            if j == 0:
                ax.set_ylabel("rate (mean ± std over seeds)")
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=min(4, len(legend)), fontsize=8)
    return fig


def write_sweep_plots(summary: dict[str, Any], stem: str | os.PathLike, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write the summary's figure as ``{stem}.png`` and ``{stem}.svg`` (atomically; the same
    summary gives the same SVG bytes)."""
    stem = Path(stem)
    with plotting():
        fig = figure(summary)
        return [save_figure(fig, stem.with_name(f"{stem.name}.{fmt}")) for fmt in formats]


def write_sweep_report(sweep_dir: str | os.PathLike, dest: str | os.PathLike | None = None,
                       run_ids: Sequence[str] | None = None, stem: str = "sweep",
                       low: float | None = None, high: float | None = None,
                       family_of: Callable[[str], str | None] | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Summarise the finished runs under ``sweep_dir`` (all, or ``run_ids``) and write, into
    ``dest`` (default: ``sweep_dir``): ``{stem}-summary.json``, ``{stem}-asr.png`` and
    ``.svg``, and ``{stem}-cohort.json`` (a labels file for the calibration commands, with each
    trigger's family from ``family_of``).
    Returns the summary and the paths written."""
    from lorascan.experiments import summary as sm
    from lorascan.records import write_json_atomic

    records, census = sm.collect(sweep_dir, run_ids)
    if not records:
        states = ", ".join(f"{n} {s}" for s, n in census["states"].items()) or "no runs"
        raise DataError(f"{sweep_dir}: no finished runs to report ({states})")
    summary = sm.summarize(records, sm.LOW if low is None else low, sm.HIGH if high is None else high, census)
    dest = Path(sweep_dir if dest is None else dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot write to {dest}: {err.strerror or err}") from None
    labels = dest / f"{stem}-cohort.json"
    rows = sm.cohort_labels(records, family_of)
    if dest.resolve() != Path(sweep_dir).resolve():  # the labels' paths are relative to their file
        rows = [{**r, "path": os.path.relpath(Path(sweep_dir) / r["path"], dest)} for r in rows]
    try:  # the records first: a plot that cannot be drawn must not cost the summary
        write_json_atomic(dest / f"{stem}-summary.json", summary)
        write_json_atomic(labels, rows)
    except OSError as err:
        raise DataError(f"cannot write to {dest}: {err.strerror or err}") from None
    paths = write_sweep_plots(summary, dest / f"{stem}-asr")
    return summary, [dest / f"{stem}-summary.json", *paths, labels]
