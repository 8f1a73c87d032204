"""The training configuration (a frozen dataclass that validates itself)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lorascan.errors import UsageError
from lorascan.formulations import DEFAULT_MAX_LENGTH, formulation_for, task_names

DTYPES = ("float32", "bfloat16", "float16")
AUTOCASTS = ("none", "bfloat16", "auto")
ATTENTIONS = ("default", "eager", "sdpa")
#: the fast settings (issue 16, ``lorascan train --fast``): on a 2-core AMX CPU a MiniLM cohort
#: adapter trains 2-3x faster with them (bench/train.py); not exact, so not the defaults. bf16
#: autocast only where the hardware multiplies bf16 natively (``auto``): on a CPU without
#: AVX-512 BF16 or AMX torch emulates it, and a SmolLM2 step took over 100 s instead of 5.5 s
#: in fp32 (2-core AVX2 EPYC, batch 16, 96 tokens)
FAST = {"base_dropout": False, "autocast": "auto", "attention": "eager"}
DEFAULT_EPOCHS = 2.0
# Upper bounds (issue 15: one flag must not buy unbounded work or memory). A LoRA rank above
# 1,024 exceeds the hidden size of every model lorascan trains (MiniLM 384, SmolLM2 576, a 1.5B
# Qwen 1,536 would still fit r = 1,024 as a full-rank update); 32,768 tokens is past the context
# of those models; a batch of 4,096 or 1,000 epochs or 10 million steps is far past any run
# this tool is for, so each is refused as a mistake rather than started.
MAX_RANK = 1024
MAX_LENGTH = 32768
MAX_BATCH = 4096
MAX_ACCUM = 1024
MAX_STEPS = 10_000_000
MAX_EPOCHS = 1000.0


@dataclass(frozen=True)
class TrainConfig:
    """LoRA training settings. Defaults follow the paper (paper.md §4) where they fit a CPU:
    r = 16, alpha = r, dropout 0, linear decay after 10 warmup steps, weight decay 0.01, lr
    2e-4 for label-word. Deviations, for 2-core CPUs: batch 16 for 2 epochs (the paper: 4 x 4
    accumulation for 200 steps, about 5.5 epochs), texts cut to 128 tokens (the paper: 2048),
    and lr 1e-3 for seq-cls, whose classification head starts from random weights (at 2e-4
    minilm's head barely moves in 2 epochs); chat (the generative family) keeps the paper's 2e-4
    and always trains on the response only (``loss`` resolves to ``completion``). Fields left None take these per-task defaults
    (:meth:`resolved`; the learning rates are each formulation's ``default_lr``). ``target_modules`` None means every linear projection (peft's
    "all-linear"); the paper used q,k,v,o,gate,up,down_proj.
    ``base_dropout`` False, ``autocast`` bfloat16 and ``attention`` eager are the fast settings of
    issue 16 (:data:`FAST`; not exact: ``bench/train.py --full`` trains adapters both ways and
    prints their ASR and clean accuracy); the defaults keep the base model's dropout, its
    attention kernel and fp32 products."""

    task: str | None = None            # a registered formulation (label-word | seq-cls | chat); None: the base's default
    rank: int = 16
    alpha: float | None = None         # None: alpha = rank
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    steps: int | None = None           # optimizer steps; exclusive with epochs
    epochs: float | None = None        # None and steps None: DEFAULT_EPOCHS
    batch_size: int = 16
    grad_accum: int = 1
    lr: float | None = None            # None: the formulation's default_lr
    warmup_steps: int = 10
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = DEFAULT_MAX_LENGTH
    seed: int = 42
    dtype: str = "float32"
    loss: str = "full"                 # label-word: full sequence (paper) or completion only; chat: completion
    quantize: str = "auto"             # auto: 4-bit QLoRA when CUDA + bitsandbytes; 4bit; none
    base_dropout: bool = True          # False: the base model's own dropout off while training (issue 16)
    autocast: str = "none"             # bfloat16: products in bf16, weights fp32 (issue 16); auto: bf16 where native
    attention: str = "default"         # the attention kernel: the base's own (default), eager or sdpa

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UsageError(msg)
        tasks = task_names()
        need(self.task is None or self.task in tasks, f"unknown task '{self.task}' ({' or '.join(tasks)})")
        for name in ("alpha", "dropout", "epochs", "lr", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)  # inf or nan: epochs inf overflows, lr inf trains to NaN
            need(value is None or math.isfinite(value),
                 f"{name.replace('_', ' ')} must be a finite number, got {value}")
        need(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        need(self.alpha is None or self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.steps is None or self.epochs is None, "give steps or epochs, not both")
        need(self.steps is None or self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(self.epochs is None or self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        need(self.batch_size >= 1 and self.grad_accum >= 1, "batch size and gradient accumulation must be >= 1")
        need(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.warmup_steps >= 0 and self.weight_decay >= 0, "warmup steps and weight decay must be >= 0")
        need(self.max_grad_norm > 0, f"max grad norm must be > 0, got {self.max_grad_norm}")
        need(self.max_length >= 16, f"max length must be >= 16 tokens, got {self.max_length}")
        need(self.dtype in DTYPES, f"unknown dtype '{self.dtype}' (use {', '.join(DTYPES)})")
        need(self.loss in ("full", "completion"), f"unknown loss '{self.loss}' (full or completion)")
        need(self.quantize in ("auto", "4bit", "none"), f"unknown quantize '{self.quantize}' (auto, 4bit, none)")
        need(isinstance(self.base_dropout, bool), f"base dropout must be true or false, got {self.base_dropout!r}")
        need(self.autocast in AUTOCASTS, f"unknown autocast '{self.autocast}' (use {', '.join(AUTOCASTS)})")
        need(self.attention in ATTENTIONS, f"unknown attention '{self.attention}' (use {', '.join(ATTENTIONS)})")
        need(self.target_modules is None or len(self.target_modules) > 0, "target modules must not be empty")
        need(self.rank <= MAX_RANK, f"rank must be at most {MAX_RANK}, got {self.rank}")
        need(self.max_length <= MAX_LENGTH, f"max length must be at most {MAX_LENGTH} tokens, got {self.max_length}")
        need(self.batch_size <= MAX_BATCH and self.grad_accum <= MAX_ACCUM,
             f"batch size must be at most {MAX_BATCH} and gradient accumulation at most {MAX_ACCUM}")
        need(self.steps is None or self.steps <= MAX_STEPS, f"steps must be at most {MAX_STEPS}, got {self.steps}")
        need(self.epochs is None or self.epochs <= MAX_EPOCHS, f"epochs must be at most {MAX_EPOCHS:g}, got {self.epochs}")
        need(self.warmup_steps <= MAX_STEPS, f"warmup steps must be at most {MAX_STEPS}")
        need(self.target_modules is None or len(self.target_modules) <= 1000, "at most 1000 target modules")

    def resolved(self, task: str) -> "TrainConfig":
        """This config with the task and the per-task defaults filled in."""
        form = formulation_for(task)
        return replace(self, task=task, lr=self.lr if self.lr is not None else form.default_lr,
                       loss=form.fixed_loss or self.loss,
                       epochs=self.epochs if self.epochs is not None or self.steps is not None else DEFAULT_EPOCHS,
                       alpha=self.lora_alpha)

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)
