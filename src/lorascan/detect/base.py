"""The detector protocol every lorascan detector implements (design.md: ``detect``).

A detector is built from a name and keyword arguments through a :class:`~lorascan.registry.Registry`
(``DETECTORS``); it scans one adapter and returns a :class:`DetectorResult` that names the
detector and the arguments it ran with, holds its scores (adapter-level numbers, e.g. the weight
detector's ``global_frobN_std`` or the behavioural detector's ``outlier_gap`` and
``mean_attack_rate``, paper §7-§8), and a :class:`Verdict` from a calibrated profile.

Registration is explicit: :func:`lorascan.detect.register_builtin_detectors` fills a registry
(``DETECTORS`` or a fresh one a test owns); importing a module registers nothing.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lorascan.registry import Registry

if TYPE_CHECKING:
    from lorascan.detect.calibrate import Profile

LABELS = ("suspicious", "clean", "uncalibrated")


@dataclass(frozen=True)
class Verdict:
    """The decision on one adapter.

    ``label`` is "suspicious", "clean" or "uncalibrated" (no profile, or one that does not
    apply to this adapter: another base model, rank or scaling). ``reasons`` are one-line
    explanations; ``flagged`` the features beyond their thresholds; ``profile`` names the
    profile used (None when uncalibrated).
    """

    label: str
    reasons: tuple[str, ...] = ()
    flagged: tuple[str, ...] = ()
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"verdict label must be one of {LABELS}, got {self.label!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "reasons": list(self.reasons), "flagged": list(self.flagged),
                "profile": self.profile}


@dataclass(frozen=True)
class DetectorResult:
    """What a detector found on one adapter. ``scores`` are unrounded floats (None when a
    score is undefined); ``details`` holds detector-specific material (per-module rows,
    unanalysed tensors, the adapter's declared settings)."""

    detector: str
    detector_args: dict[str, Any]
    scores: dict[str, float | None]
    verdict: Verdict
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "detector_args": dict(self.detector_args),
                "scores": dict(self.scores), "verdict": self.verdict.to_dict(), "details": dict(self.details)}


class Detector(abc.ABC):
    """One detection technique. Subclasses set ``name`` and implement :meth:`scan`.

    ``args`` are the keyword arguments the detector was built with, JSON-ready, recorded in
    every result so a reader can rebuild the same detector from the registry.
    """

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def args(self) -> dict[str, Any]:
        """The arguments this detector was built with (JSON-ready)."""

    @abc.abstractmethod
    def scan(self, adapter: str | Path, profile: "Profile | None" = None) -> DetectorResult:
        """Score one adapter; with a profile, also decide. Bad input raises a LorascanError."""


DETECTORS: Registry[Detector] = Registry("detector")
