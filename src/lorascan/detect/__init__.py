"""Detectors behind one protocol (:mod:`lorascan.detect.base`) and their calibration.

Importing this package registers nothing and imports no detector: call
:func:`register_builtin_detectors` on ``DETECTORS`` (or on a registry a test owns) to add the
built-in ones; their modules are imported only when a detector is created.
"""

from __future__ import annotations

from typing import Any

from lorascan.detect.base import DETECTORS, Detector, DetectorResult, NotApplicable, ScanContext
from lorascan.detect.verdict import Verdict
from lorascan.registry import Registry

__all__ = ["DETECTORS", "Detector", "DetectorResult", "Verdict", "register_builtin_detectors"]


def _weights(**kwargs: Any) -> Detector:
    from lorascan.detect.weights import WeightDetector

    return WeightDetector(**kwargs)


def _behavioral(**kwargs: Any) -> Detector:
    from lorascan.detect.behavioral import BehavioralDetector

    return BehavioralDetector(**kwargs)


def _tokens(**kwargs: Any) -> Detector:
    from lorascan.detect.tokens import TokenDetector

    return TokenDetector(**kwargs)


def _strip(**kwargs: Any) -> Detector:
    from lorascan.detect.strip import StripDetector

    return StripDetector(**kwargs)


def _neural_cleanse(**kwargs: Any) -> Detector:
    from lorascan.detect.neural_cleanse import CleanseDetector

    return CleanseDetector(**kwargs)


def _phrases(**kwargs: Any) -> Detector:
    from lorascan.detect.phrases import PhraseDetector

    return PhraseDetector(**kwargs)


def _generative(**kwargs: Any) -> Detector:
    from lorascan.detect.generative import GenerativeDetector

    return GenerativeDetector(**kwargs)


def _chat_tokens(**kwargs: Any) -> Detector:
    from lorascan.detect.chat_tokens import ChatTokenDetector

    return ChatTokenDetector(**kwargs)


# the scan's detectors (generative, chat-tokens: chat adapters only), the phrase search (not yet
# calibrated), then the paper's two baselines (issue 12; run with --detectors)
BUILTIN = {"weights": _weights, "behavioral": _behavioral, "tokens": _tokens, "generative": _generative,
           "chat-tokens": _chat_tokens, "phrases": _phrases, "strip": _strip, "neural-cleanse": _neural_cleanse}


def register_builtin_detectors(registry: Registry[Detector] = DETECTORS) -> Registry[Detector]:
    """Add the built-in detectors that ``registry`` lacks; returns the registry."""
    for name, factory in BUILTIN.items():
        if name not in registry:
            registry.register(name, factory)
    return registry
