"""Plots of calibration results. matplotlib is imported on use, with the Agg backend, so
nothing else pays for it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Sequence

from lorascan.detect.profile import Profile
from lorascan.errors import DataError


def write_roc_plot(profile: Profile, path: str | os.PathLike, features: Sequence[str] | None = None,
                   top: int = 6) -> Path:
    """ROC curves of ``features`` (default: the decision features, then the best by AUC, up to
    ``top``) from a profile's stored ROC points, written atomically as PNG/SVG/PDF by suffix."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    if features:
        chosen = [profile.feature(f) for f in features]
    else:
        ranked = sorted(profile.features, key=lambda c: (c.feature not in profile.decision, -c.auc))
        chosen = ranked[:top]
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for cal in chosen:
        fpr, tpr = zip(*cal.roc)
        ax.plot(fpr, tpr, marker=".", label=f"{cal.feature} ({cal.direction}) AUC {cal.auc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    n_pos = sum(e.label for e in profile.cohort)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title=f"{profile.name}\n{len(profile.cohort) - n_pos} clean, {n_pos} poisoned")
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right", fontsize=7)
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".png", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise DataError(f"cannot write plot {path}: {err.strerror}") from None
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    except (OSError, ValueError) as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DataError(f"cannot write plot {path}: {err}") from None
    return path
