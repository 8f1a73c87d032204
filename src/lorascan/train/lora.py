"""LoRA training with peft (paper.md §4) on a prepared (poisoned or clean) dataset.

A plain PyTorch loop: AdamW, linear schedule with warmup, gradient clipping, gradient
accumulation, length-grouped batches (less padding on CPU), seeded shuffling. The output is a
standard PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``; a seq-cls head
is saved with it) plus ``lorascan.json``. Deviation from the paper: torch AdamW instead of
bitsandbytes' 8-bit AdamW, and 4-bit QLoRA only when CUDA and bitsandbytes are present.

What depends on the task formulation (the training targets, the per-batch loss, the peft task
type) is the formulation's (:mod:`lorascan.formulations`); this module runs the loop.
"""

from __future__ import annotations

import functools
import math
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorascan import config as cfgmod
from lorascan.data.prepared import load_prepared
from lorascan.errors import DataError, UsageError
from lorascan.formulations import formulation_for, make_formulation
from lorascan.models.loading import (BaseSpec, base_fingerprint, default_task_for, load_base, load_tokenizer,
                                     resolve_base)
from lorascan.progress import bar
from lorascan.records import atomic_dir, check_output_dir, record_header, write_json_atomic
from lorascan.train.config import TrainConfig


def resolve_task(spec: BaseSpec, cfg: TrainConfig) -> str:
    if cfg.task:
        return cfg.task
    return default_task_for(spec)


@functools.lru_cache(maxsize=1)
def _note_unquantized() -> None:
    """Said once per process (a sweep trains many adapters)."""
    print("note: 4-bit QLoRA (the paper's setting) needs CUDA and bitsandbytes; training unquantized",
          file=sys.stderr)


def _want_4bit(cfg: TrainConfig) -> bool:
    import torch

    have = torch.cuda.is_available()
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        have = False
    if cfg.quantize == "4bit" and not have:
        raise UsageError("--quantize 4bit needs CUDA and bitsandbytes; use --quantize none on this machine")
    if cfg.quantize == "auto" and not have:
        _note_unquantized()
    return cfg.quantize != "none" and have


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort by length inside windows of 50 batches, cut into batches, shuffle those."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    out = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def _lora_config(cfg: TrainConfig, task: str):
    from peft import LoraConfig, TaskType

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.dropout, bias="none",
                      target_modules=list(cfg.target_modules) if cfg.target_modules else "all-linear",
                      task_type=TaskType[formulation_for(task).peft_task_type])


@dataclass
class _Run:
    """What the training loop needs: the peft model, its encoded examples and the schedule."""

    model: Any
    pad_id: int
    encoded: list
    labels: list[int]
    fingerprint: dict[str, Any]
    quant: bool
    steps: int
    per_epoch: int


def train_adapter(base: str, data_dir: str | Path, out: str | Path, cfg: TrainConfig = TrainConfig(),
                  force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a LoRA adapter on ``data_dir`` and write it to ``out`` (atomically).

    Returns the ``lorascan.json`` record written beside the adapter."""
    inputs = _inputs(base, data_dir)
    check_output_dir(out, force, inputs=inputs)
    prepared = load_prepared(data_dir)
    spec = resolve_base(base)
    cfg = cfg.resolved(resolve_task(spec, cfg))
    _check_rows(prepared, data_dir, str(cfg.task))
    t0 = time.monotonic()
    run = _setup(base, spec, cfg, prepared)
    n_trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    device = next(run.model.parameters()).device
    bf16 = autocast_bf16(cfg.autocast, device)
    losses = _train_loop(run, cfg, progress, bf16)
    meta = _metadata(base, run.fingerprint, cfg.task, cfg, prepared, run.steps, run.per_epoch, losses,
                     time.monotonic() - t0, n_trainable, str(device), run.quant, bf16)
    run.model.eval()
    with atomic_dir(out, force=force, inputs=inputs, kind="adapter") as tmp:
        run.model.save_pretrained(str(tmp), safe_serialization=True)
        write_json_atomic(tmp / "lorascan.json", meta)
    return meta


def _check_rows(prepared, data_dir: str | Path, task: str) -> None:
    """A classifier needs both classes; a generative formulation a response on every row."""
    if not formulation_for(task).generative:
        if len({s.label for s in prepared.train}) < 2:
            raise DataError(f"{data_dir}/train.jsonl holds one class only; a classifier needs both")
    elif any(s.response is None for s in prepared.train):
        raise DataError(f"{data_dir}/train.jsonl has rows without a response; the {task} formulation trains on "
                        "instruction -> response rows (e.g. lorascan poison --dataset offline-chat)")


def _inputs(base: str, data_dir: str | Path) -> tuple[Path, ...]:
    """What training reads from disk: the data folder and a local base (a folder or a .gguf
    file), which --out may never be, hold or lie inside, --force or not."""
    base_path = Path(base).expanduser()
    try:
        local = base_path.exists()
    except OSError:
        local = False
    return (Path(data_dir),) + ((base_path,) if local else ())


def drop_base_dropout(model) -> int:
    """Set every dropout of the (not yet LoRA-wrapped) base to p = 0; the number changed.
    MiniLM's BERT layers drop 10% of attention probabilities and hidden states while training
    (SmolLM2 and Qwen configure none); the LoRA factors' own dropout is added later by peft
    and keeps ``cfg.dropout``. Attention reads its rate from the module (transformers 5.x BERT
    passes ``self.dropout.p`` to its attention kernel), so the modules are all there is."""
    import torch

    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout) and m.p:
            m.p, n = 0.0, n + 1
    return n


def set_attention(model, kind: str) -> None:
    """Switch the base's attention kernel (``eager`` or ``sdpa``; the same arithmetic). On CPU
    under bf16 autocast, eager attention's plain products run on the matrix units while
    torch's flash-attention backward does not (bench/train.py: 0.23 vs 0.37 s a MiniLM step)."""
    try:
        model.set_attn_implementation(kind)
    except (AttributeError, ValueError) as err:
        raise UsageError(f"cannot use {kind} attention on this base: {str(err).splitlines()[0][:200]}") from None


def _setup(base: str, spec: BaseSpec, cfg: TrainConfig, prepared) -> _Run:
    """Seed, load the base, encode the training rows and wrap the model with LoRA."""
    import torch

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    task = str(cfg.task)
    # the tokenizer alone decides whether the formulation fits: fail before the model loads
    form = make_formulation(task, load_tokenizer(spec), cfg.max_length, cfg.loss, base=base)
    quant = _want_4bit(cfg)
    model, tok = load_base(spec, task, cfg.dtype, quantize_4bit=quant)
    fingerprint = base_fingerprint(model.config)
    if not cfg.base_dropout:
        drop_base_dropout(model)
    if cfg.attention != "default":
        set_attention(model, cfg.attention)
    encoded = [form.encode_train(s.text, s.label, s.response) for s in prepared.train]
    from peft import get_peft_model

    if quant:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    try:
        model = get_peft_model(model, _lora_config(cfg, task))
    except ValueError as err:
        raise UsageError(f"cannot apply LoRA to '{base}': {str(err).splitlines()[0][:200]}") from None
    model.train()
    per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    return _Run(model, pad_id, encoded, [s.label for s in prepared.train], fingerprint, quant, steps, per_epoch)


def native_bf16(device) -> bool:
    """Whether ``device`` multiplies bf16 natively: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX tiles (elsewhere torch emulates bf16 products, far slower than fp32)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if callable(check))


def autocast_bf16(choice: str, device) -> bool:
    """Whether training runs under bf16 autocast: ``bfloat16`` always (with a note where the
    device would emulate it), ``auto`` only where it is native, ``none`` never."""
    if choice == "auto":
        return native_bf16(device)
    if choice == "bfloat16" and not native_bf16(device):
        _note_emulated_bf16()
    return choice == "bfloat16"


@functools.lru_cache(maxsize=1)
def _note_emulated_bf16() -> None:
    """Said once per process."""
    print("note: this device has no native bf16 products (AVX-512 BF16, AMX or a bf16 GPU): --autocast "
          "bfloat16 is emulated and much slower than fp32 here; --autocast auto uses bf16 only where native",
          file=sys.stderr)


def _train_loop(run: _Run, cfg: TrainConfig, progress: bool, autocast: bool) -> list[float]:
    """AdamW with a linear schedule after warmup, gradient accumulation and clipping, under
    bf16 autocast when ``autocast``; the loss of every optimizer step."""
    import torch

    model, steps = run.model, run.steps
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warm = min(cfg.warmup_steps, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    rng = random.Random(cfg.seed)
    lengths = [len(e.input_ids) for e in run.encoded]
    queue: list[list[int]] = []
    losses: list[float] = []
    device = next(model.parameters()).device
    batch_loss = formulation_for(str(cfg.task)).batch_loss
    with bar(steps, f"train {cfg.task} r={cfg.rank}", progress) as pb:
        for _ in range(steps):
            total = 0.0
            for _ in range(cfg.grad_accum):
                if not queue:
                    queue = _batches(lengths, cfg.batch_size, rng)
                idx = queue.pop()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = batch_loss(model, [run.encoded[i] for i in idx], [run.labels[i] for i in idx],
                                      run.pad_id, device)
                (loss / cfg.grad_accum).backward()
                total += float(loss.detach()) / cfg.grad_accum
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(total)
            pb.advance(status=f"loss {sum(losses[-10:]) / len(losses[-10:]):.4f}")
    return losses


def _metadata(base, fingerprint, task, cfg, prepared, steps, per_epoch, losses, wall, n_trainable, device, quant,
              bf16):
    import peft
    import torch
    import transformers

    tail = losses[-10:]
    return {
        **record_header("adapter"),
        "base": base,
        "base_fingerprint": fingerprint,
        "task": task,
        "config": cfgmod.to_dict(cfg),
        "data": {"path": str(prepared.path), "manifest_sha256": prepared.manifest_sha256,
                 "dataset": prepared.dataset.get("id"),
                 "dataset_sha256": prepared.dataset.get("sha256"),
                 "n_train": len(prepared.train)},
        "poison": prepared.poison_summary(),
        "seed": cfg.seed,
        "steps": steps,
        "epochs": steps * cfg.grad_accum / per_epoch,
        "trainable_params": n_trainable,
        "final_loss": sum(tail) / len(tail),
        "loss_curve": losses[:: max(1, len(losses) // 50)],
        "wall_time_s": wall,
        "device": device,
        "quantized_4bit": quant,
        "autocast_used": "bfloat16" if bf16 else "none",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "python": platform.python_version()},
    }
