"""The causal-patching heatmap (:mod:`lorascan.evaluate.patching`): ASR of the poisoned
adapter per projection type (rows) and window start (columns), each type's minimum outlined,
with the unpatched and the reference's ASR in the title (paper.md §10). Drawn from the JSON
record alone; paths and triggers in the title are attacker-controlled and shown through
:func:`lorascan.report.figures.plot_label` (escaped, cut, no mathtext)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from lorascan.errors import DataError
from lorascan.report.figures import matplotlib_figure, plot_label, plotting, save_figure


def figure(rec: Mapping[str, Any]):
    """The heatmap Figure of a patching record (save it inside :func:`plotting`)."""
    import numpy as np

    heat = rec["heatmap"]
    asr = np.array(heat["asr"], dtype=float)
    if asr.ndim != 2 or asr.size == 0:
        raise DataError("the patching record has no heatmap cells to plot")
    labels = {t["type"]: t["label"] for t in rec["types"]}
    rows, starts, w = heat["rows"], heat["columns"], rec["window"]
    fig = matplotlib_figure(figsize=(max(5.0, 0.42 * len(starts) + 3.2), 0.5 * len(rows) + 2.4))
    ax = fig.add_subplot()
    img = ax.imshow(asr, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    fig.colorbar(img, ax=ax, fraction=0.04, pad=0.02).set_label("ASR (triggered injections read benign)")
    small = len(starts) <= 16
    for i, typ in enumerate(rows):
        for j in range(len(starts)):
            if small:
                ax.text(j, i, f"{asr[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if asr[i, j] < 0.55 else "black")
        best = rec["minimum"].get(typ)
        if best is not None:
            j = starts.index(best["start"])
            ax.add_patch(_outline(j, i))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([plot_label(labels.get(t, t), 28) for t in rows], fontsize=8)
    ax.set_xticks(range(len(starts)))
    ax.set_xticklabels([f"{s}-{s + w - 1}" for s in starts], rotation=90 if len(starts) > 8 else 0, fontsize=7)
    ax.set_xlabel(f"patched layers (window of {w})")
    cfg = rec["config"]
    ref = "base" if cfg["reference"] == "base" else _tail(cfg["reference"])
    ax.set_title(f"{_tail(cfg['poisoned'])} ({plot_label(cfg['base'], 24)}, {cfg['task']})\n"
                 f"patched from {ref}; trigger '{plot_label(cfg['trigger'], 40)}'\n"
                 f"unpatched ASR {rec['unpatched']['asr']:.3f}, reference ASR {rec['reference']['asr']:.3f}, "
                 f"n = {rec['unpatched']['asr_n']}; outlined: each type's minimum", fontsize=8, parse_math=False)
    return fig


def _tail(path: str, limit: int = 64) -> str:
    """A path shown by its end (run folders differ in their last parts), escaped and cut."""
    shown = plot_label(path, 4 * limit)
    return shown if len(shown) <= limit else "…" + shown[-(limit - 1):]


def _outline(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.8)


def write_patching_plot(rec: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Draw the heatmap of ``rec`` and save it to ``path`` (format by suffix, atomically)."""
    with plotting():
        return save_figure(figure(rec), Path(path))
