"""``lorascan train``: train a LoRA adapter on a prepared dataset."""

from __future__ import annotations

import click

from lorascan.cli.common import console, safe
from lorascan.formulations import task_names
from lorascan.train.config import ATTENTIONS, AUTOCASTS, DTYPES, FAST, TrainConfig


@click.command("train")
@click.option("--base", required=True, help="Base model: minilm, smollm2-135m, tiny-*, a folder, a .gguf file or an HF id.")
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Folder written by 'lorascan poison'.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Adapter output folder.")
@click.option("--task", type=click.Choice(task_names()), default=None,
              help="Formulation [default: label-word for chat LMs, seq-cls otherwise].")
@click.option("--rank", type=int, default=16, show_default=True, help="LoRA rank r.")
@click.option("--alpha", type=float, default=None, help="LoRA alpha [default: = rank].")
@click.option("--dropout", type=float, default=0.0, show_default=True, help="LoRA dropout.")
@click.option("--target-modules", default=None, metavar="A,B,...",
              help="Modules to adapt, e.g. q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj [default: every linear].")
@click.option("--steps", type=int, default=None, help="Optimizer steps (instead of --epochs).")
@click.option("--epochs", type=float, default=None, help="Epochs [default: 2 when --steps is not given].")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Gradient accumulation steps.")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 2e-4 label-word and chat (paper), 1e-3 seq-cls].")
@click.option("--warmup-steps", type=int, default=10, show_default=True)
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--max-length", type=int, default=128, show_default=True, help="Max tokens per example (the text is cut).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--loss", type=click.Choice(["full", "completion"]), default="full", show_default=True,
              help="label-word: loss over the full sequence (paper) or the answer only; chat: always the response only.")
@click.option("--quantize", type=click.Choice(["auto", "4bit", "none"]), default="auto", show_default=True,
              help="4-bit QLoRA (the paper's) needs CUDA and bitsandbytes; auto uses it when present.")
@click.option("--base-dropout/--no-base-dropout", default=True, show_default=True,
              help="Keep the base model's own dropout while training; off is faster on BERT-like bases (MiniLM) "
                   "and not exact (bench/train.py --full).")
@click.option("--autocast", type=click.Choice(AUTOCASTS), default="none", show_default=True,
              help="bfloat16: matrix products in bf16 with fp32 weights (fast on CPUs with AMX/AVX-512 BF16 and GPUs, "
                   "emulated and slow elsewhere); auto: bf16 only where the device has it natively.")
@click.option("--attention", type=click.Choice(ATTENTIONS), default="default", show_default=True,
              help="Attention kernel: the base's own, eager or sdpa (same arithmetic, different speed).")
@click.option("--fast", is_flag=True,
              help="Shorthand for --no-base-dropout --autocast auto --attention eager (2-3x faster on an AMX CPU; "
                   "not exact, see bench/train.py).")
@click.option("--force", is_flag=True, help="Replace an --out that lorascan wrote (never another folder).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(base, data_dir, out, force, quiet, target_modules, fast, **opts) -> None:
    """Train a LoRA adapter (clean or backdoored, depending on the data) on a base model."""
    from lorascan.train.lora import train_adapter

    mods = tuple(m.strip() for m in target_modules.split(",") if m.strip()) if target_modules else None
    cfg = TrainConfig(target_modules=mods, **{**opts, **(FAST if fast else {})})
    meta = train_adapter(base, data_dir, out, cfg, force=force, progress=not quiet)
    console().print(f"wrote {safe(out)}: {meta['task']} r={cfg.rank} on {safe(base)}, {meta['steps']} steps "
                    f"({meta['epochs']:.2f} epochs), final loss {meta['final_loss']:.4f}, {meta['wall_time_s']:.0f}s")
