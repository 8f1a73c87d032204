"""Plots of calibration results. matplotlib is imported on use, so nothing else pays for it;
figures are drawn and saved inside :func:`lorascan.report.figures.plotting`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from lorascan.detect.verdict import Profile
from lorascan.report.figures import matplotlib_figure, plot_label, plotting, save_figure


def write_roc_plot(profile: Profile, path: str | os.PathLike, features: Sequence[str] | None = None,
                   top: int = 6) -> Path:
    """ROC curves of ``features`` (default: the decision features, then the best by AUC, up to
    ``top``) from a profile's stored ROC points, written atomically as PNG/SVG/PDF by suffix."""
    if features:
        chosen = [profile.feature(f) for f in features]
    else:
        ranked = sorted(profile.features, key=lambda c: (c.feature not in profile.decision, -c.auc))
        chosen = ranked[:top]
    with plotting():
        fig = matplotlib_figure(figsize=(5.5, 5))
        ax = fig.add_subplot()
        for cal in chosen:
            fpr, tpr = zip(*cal.roc)
            ax.plot(fpr, tpr, marker=".", label=plot_label(f"{cal.feature} ({cal.direction}) AUC {cal.auc:.3f}", 80))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        n_pos = sum(e.label for e in profile.cohort)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
               title=f"{plot_label(profile.name, 80)}\n{len(profile.cohort) - n_pos} clean, {n_pos} poisoned")
        ax.title.set_fontsize(9)
        ax.legend(loc="lower right", fontsize=7)
        return save_figure(fig, path)
