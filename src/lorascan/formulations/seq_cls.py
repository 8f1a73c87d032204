"""``seq-cls``: a two-class sequence-classification head over the text (design.md).

``AutoModelForSequenceClassification`` on the base: encoders such as MiniLM/BERT/DeBERTa, the
shape of most deployed prompt-injection classifiers (decoders work too: their head reads the
last non-pad token, so the pad id is set on the config). The head starts from random weights
and is trained and saved with the adapter (peft's SEQ_CLS task type keeps it in
``modules_to_save``), which is why the bare base is no differential reference for the token
scan. Texts are cut to ``max_length`` tokens by the tokenizer, with its own special tokens.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from lorascan.formulations.base import DEFAULT_MAX_LENGTH, Encoded, Formulation, pad_batch

N_LABELS = 2  # 0 benign, 1 injection


class SeqCls(Formulation):
    """Text -> [CLS] text [SEP] (or the tokenizer's own special tokens), truncated."""

    name: ClassVar[str] = "seq-cls"
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    causal: ClassVar[bool] = False
    # the head starts from random weights: at label-word's 2e-4 minilm's head barely moves in
    # 2 epochs (TrainConfig)
    default_lr: ClassVar[float] = 1e-3

    def __init__(self, tokenizer, max_length: int = DEFAULT_MAX_LENGTH, loss: str = "full"):
        """``loss`` is label-word's choice (whole sequence or answer only); a head has one
        loss, cross-entropy on the class, so it is accepted and not used."""
        self.tok = tokenizer
        self.max_length = max_length

    @classmethod
    def model_class(cls) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    @classmethod
    def model_kwargs(cls) -> dict[str, Any]:
        return {"num_labels": N_LABELS}

    @classmethod
    def prepare_model(cls, model, tokenizer) -> None:
        """A decoder's head reads the last non-pad token, so the config needs the pad id."""
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id

    @classmethod
    def batch_loss(cls, model, batch: Sequence[Encoded], labels: Sequence[int], pad_id: int, device):
        """Cross-entropy of the head's two logits against the classes (right-padded batch)."""
        import torch

        ids, mask = pad_batch([e.input_ids for e in batch], pad_id, left=False)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        return torch.nn.functional.cross_entropy(logits, torch.tensor(labels, device=device))

    def encode(self, text: str) -> Encoded:
        ids = self.tok(text, truncation=True, max_length=self.max_length)["input_ids"]
        return Encoded(list(ids))

    def encode_train(self, text: str, label: int, response: str | None = None) -> Encoded:
        return self.encode(text)  # the class is the target; there is no response

    def margins(self, model, ids, mask):
        """logit(injection) - logit(benign) of the head."""
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        return logits[:, 1] - logits[:, 0]
