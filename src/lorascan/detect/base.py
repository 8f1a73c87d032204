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
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from lorascan.detect.verdict import Verdict
from lorascan.probe.inputs import ProbeInputs
from lorascan.registry import Registry

if TYPE_CHECKING:
    from lorascan.detect.verdict import Profile

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
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "detector_args": dict(self.detector_args),
                "scores": dict(self.scores), "verdict": self.verdict.to_dict(), "details": dict(self.details),
                "wall_time_s": self.wall_time_s}


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

    #: relative cost, the scan runs detectors cheapest first (weights 0: no model run)
    cost: ClassVar[int] = 100
    #: one line for ``lorascan list``
    summary: ClassVar[str] = ""
    #: the scores a calibrated profile decides on (None: the best-AUC score of the cohort) and
    #: their direction ("+" flag above, "-" below, None: each score's better one)
    decision: ClassVar[tuple[str, ...] | None] = None
    direction: ClassVar[str | None] = None
    #: the formulations whose adapters the detector reads (None: any adapter, e.g. weights); the
    #: scan passes over a detector whose formulations exclude the adapter's, without a say in the
    #: verdict (a classifier battery means nothing to a chat adapter, and the reverse)
    tasks: ClassVar[tuple[str, ...] | None] = None

    @abc.abstractmethod
    def scan(self, context: "ScanContext", profile: "Profile | None" = None) -> DetectorResult:
        """Score the adapter of ``context``; with a profile, also decide. Bad input raises a
        LorascanError; an adapter outside the detector's reach raises :class:`NotApplicable`."""


class NotApplicable(Exception):
    """Raised by a detector's :meth:`Detector.scan` when the adapter is outside what it can
    judge (no base model, no behavioural formulation); the scan reports the reason, it is not
    an error and not a pass."""


@dataclass
class ScanContext:
    """Everything a detector may use on one adapter (design.md "The scan"), built once per
    adapter by :mod:`lorascan.scan.pipeline` (or :meth:`build` in tests and single-detector
    commands). No detector resolves a base, a data folder or a trigger by itself.

    - ``adapter``: the validated folder (adapter_config.json checked, safetensors header
      validated); ``adapter_config`` its config as plain data.
    - ``base``: a name :func:`lorascan.models.loading.resolve_base` takes, or None when no
      base could be resolved (then only model-free detectors run); ``base_source`` says where
      it came from (``--base``, a known alias matched as data, ...), never from a path the
      adapter names.
    - ``task``: the formulation (``seq-cls`` / ``label-word``) or None when neither fits;
      ``task_source`` why.
    - ``probes``: the probe inputs; ``pool``: one model pool, so a model is loaded once per
      scan whatever the number of detectors.
    """

    adapter: Path
    adapter_config: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    base_source: str = ""
    task: str | None = None
    task_source: str = ""
    device: str = "auto"
    probes: ProbeInputs | None = None
    progress: bool = False
    batch_size: int = 32
    pool: Any = None  # lorascan.probe.generalization.ClassifierPool, created on first use
    decoys: tuple[str, ...] = ()  # LoRA modules the base does not have (the scan's fit check)
    _classifier: Any = field(default=None, init=False, repr=False)
    _base_classifier: Any = field(default=None, init=False, repr=False)

    @classmethod
    def build(cls, adapter: str | Path, base: str | None = None, task: str | None = None,
              probes: ProbeInputs | None = None, **kwargs: Any) -> "ScanContext":
        """A context for one adapter with a base given by the caller (tests, single-detector
        commands); the scan pipeline resolves base and task itself."""
        from lorascan.models.adapter_files import check_adapter_folder

        cfg = check_adapter_folder(adapter)
        return cls(Path(adapter), cfg, base, "--base" if base else "", task, "given" if task else "",
                   probes=probes, **kwargs)

    def require_model(self, detector: str) -> None:
        """NotApplicable unless a base and a behavioural formulation are known."""
        if self.base is None:
            raise NotApplicable(f"{detector}: no base model resolved for this adapter (pass --base)")
        if self.task is None:
            raise NotApplicable(f"{detector}: behavioural detectors not applicable ({self.task_source or 'no task'})")

    def model_conditions(self) -> dict[str, Any]:
        """What a profile of a model-running detector must match: base, formulation, probe set."""
        return {"base_model": self.base, "task": self.task,
                "probe_set": self.probes.sha256 if self.probes is not None else None}

    def require_probes(self, detector: str) -> ProbeInputs:
        if self.probes is None or not self.probes.injections:
            raise NotApplicable(f"{detector}: no probe injections in this scan")
        return self.probes

    def _pool(self) -> Any:
        if self.pool is None:
            from lorascan.probe.generalization import ClassifierPool

            self.pool = ClassifierPool(device=self.device)
        return self.pool

    def classifier(self) -> Any:
        """The adapter merged into the base (a :class:`lorascan.evaluate.readout.Classifier`),
        loaded once per context."""
        if self._classifier is None:
            self.require_model("model")
            self._classifier = self._pool().get(self.base, self.adapter, self.task)
        return self._classifier

    def unmerged_classifier(self) -> Any:
        """The adapter on its own copy of the base, not merged (its LoRA modules kept, for
        causal patching); a new one per call, never cached: the caller drops it when done."""
        self.require_model("model")
        return self._pool().get(self.base, self.adapter, self.task, merge=False)

    @property
    def loaded_classifier(self) -> Any:
        """The adapter's classifier if a detector loaded it, else None (nothing is loaded)."""
        return self._classifier

    def set_task(self, task: str | None, why: str) -> None:
        """Change the formulation (the scan's label-word check); drops a classifier built for
        the old one."""
        if task != self.task:
            self._classifier = self._base_classifier = None
        self.task, self.task_source = task, why

    def reference_classifier(self, adapter: str | Path) -> Any:
        """Another adapter (a clean reference the package ships, or one the user names) merged
        into the same base with the same formulation; a new one per call."""
        self.require_model("model")
        return self._pool().get(self.base, adapter, self.task)

    def base_classifier(self) -> Any:
        """The base model alone with the same formulation (a differential reference: the
        label-word base reads label words without the adapter; a seq-cls base has a random
        head, so its outputs mean little, but its embeddings and hidden states do)."""
        if self._base_classifier is None:
            self.require_model("model")
            self._base_classifier = self._pool().base(self.base, self.task, self.adapter)
        return self._base_classifier


DETECTORS: Registry[Detector] = Registry("detector")


def check_int_ranges(obj: Any, detector: str, ranges: Sequence[tuple[str, int, int]]) -> None:
    """UsageError unless each named field of ``obj`` is an integer (not a bool) in its range."""
    from lorascan.errors import UsageError

    for name, low, high in ranges:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UsageError(f"{detector} {name} must be an integer in {low}..{high}, got {value!r}")
