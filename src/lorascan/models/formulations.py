"""Former home of the task formulations, now :mod:`lorascan.formulations` (issue 13: one
registered component per formulation). These names stay importable from here for code written
against the old path (benchmarks, tests); lorascan itself imports the new one.
"""

from __future__ import annotations

from lorascan.formulations import DEFAULT_MAX_LENGTH, IGNORE, Encoded, MaxLengthTooSmall, make_formulation
from lorascan.formulations.base import pad_batch, position_ids
from lorascan.formulations.label_word import LABEL_WORDS, SYSTEM_PROMPT, LabelWord, parse_generation
from lorascan.formulations.seq_cls import SeqCls

__all__ = ["DEFAULT_MAX_LENGTH", "IGNORE", "LABEL_WORDS", "SYSTEM_PROMPT", "Encoded", "LabelWord", "MaxLengthTooSmall",
           "SeqCls", "make_formulation", "pad_batch", "parse_generation", "position_ids"]
