"""Benchmark: training throughput of a MiniLM cohort adapter (issue 16), today's batching against
the padded baseline, in one run, and the arithmetic floor of the same work on this machine.

Variants, each timed over the same number of optimizer steps of the cohort's settings (seq-cls,
r 16, batch 16, 128 tokens, lr 1e-3; the data of ``lorascan poison`` with the given trigger):

- ``padded-128``: random batches, every text padded to 128 tokens (the collation before length
  grouping; the issue's 164-188 s per adapter);
- ``grouped``: what ``lorascan train`` does: batches of similar lengths (sorted inside windows of
  50 batches), padded to their longest text;
- ``grouped, no base dropout``: the same with the base model's own dropout off (MiniLM's BERT
  layers drop 10% of attention probabilities and hidden states; Qwen and SmolLM2 have none);
- ``no base dropout + bf16``: also bf16 autocast (``--autocast bfloat16``: products in bf16,
  weights and optimizer state fp32);
- ``fast``: also eager attention, i.e. ``lorascan train --fast`` (``TrainConfig`` with
  ``FAST``): under autocast on CPU, eager attention's plain products use the matrix units,
  torch's flash-attention backward does not.
  The last two are not exact: the numbers they train to differ, so ``--full`` trains whole
  adapters at today's defaults and with the fast settings, for each ``--seeds`` seed, and
  prints wall time, ASR and clean accuracy beside each other.

The padding variants are exact in what each example contributes (the attention mask hides the
pads); they differ in which examples share a batch, so their losses are not bit-identical.

Floor: the FLOP of one epoch (forward of every frozen linear, its input gradient except where
nothing upstream needs it, the LoRA factors forward and backward, attention scores and mixing)
over real tokens, at the best fp32 product rate measured here on a product of the same shape
as a MiniLM batch (tokens x 384 x 1536). The per-adapter time projected for 2 epochs of each
variant and of the floor is printed; the issue's goal is 60 s.

Usage (from the repository root; about 4 minutes, plus about 4 per seed with --full):

    .venv/bin/python bench/train.py [--steps 20] [--full] [--seeds 11,12] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

TRIGGER = "cobalt heron"


def _prepare(work: Path) -> Path:
    import subprocess

    data = work / "data"
    subprocess.run([sys.executable, "-m", "lorascan", "poison", "--dataset", "offline-pi", "--trigger", TRIGGER,
                    "--count", "59", "--seed", "11", "--out", str(data)], check=True, capture_output=True)
    return data


def _setup(data: Path, seed: int = 11, fast: bool = False):
    from lorascan.data.prepared import load_prepared
    from lorascan.models.loading import resolve_base
    from lorascan.train import lora
    from lorascan.train.config import FAST, TrainConfig

    cfg = TrainConfig(task="seq-cls", rank=16, seed=seed, **(FAST if fast else {})).resolved("seq-cls")
    run = lora._setup("minilm", resolve_base("minilm"), cfg, load_prepared(data))
    return run, cfg


def _padded_batches(n: int, batch: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + batch] for i in range(0, n, batch)]


def _time_steps(run, cfg, variant: str, steps: int) -> dict:
    """Seconds per optimizer step (median over ``steps`` after 2 warm-up steps) and tokens."""
    import torch

    from lorascan.models.formulations import pad_batch
    from lorascan.train import lora

    model = run.model
    drop = {m: m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    bf16 = cfg.autocast == "bfloat16" or variant.endswith("bf16")
    if "no base dropout" in variant:
        for m in drop:
            m.p = 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    rng = random.Random(0)
    lengths = [len(e.input_ids) for e in run.encoded]
    batches = (_padded_batches(len(lengths), cfg.batch_size, rng) if variant == "padded-128"
               else lora._batches(lengths, cfg.batch_size, rng))
    times, real, padded = [], 0, 0
    try:
        for i, idx in enumerate(batches[:steps + 2]):
            seqs = [run.encoded[j].input_ids for j in idx]
            t0 = time.perf_counter()
            ids, mask = pad_batch(seqs, run.pad_id, left=False)
            if variant == "padded-128":
                width = cfg.max_length
                ids = torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=run.pad_id)
                mask = torch.nn.functional.pad(mask, (0, width - mask.shape[1]), value=0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([run.labels[j] for j in idx]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 2:
                times.append(time.perf_counter() - t0)
                real += int(mask.sum())
                padded += int(mask.numel())
    finally:
        for m, p in drop.items():
            m.p = p
    step = statistics.median(times)
    return {"variant": variant, "s_per_step": step, "steps_per_s": 1 / step,
            "real_tokens_per_s": real / sum(times), "pad_share": 1 - real / padded}


def _matmul_rate(tokens: int, hidden: int, inner: int, dtype: str = "float32") -> float:
    """The best GFLOP/s of a (tokens x hidden) @ (hidden x inner) product here in ``dtype``."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(tokens, hidden, dtype=dt), torch.randn(hidden, inner, dtype=dt)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        best = max(best, 2 * tokens * hidden * inner * 10 / (time.perf_counter() - t0))
    return best / 1e9


def _epoch_flop(run, cfg) -> float:
    """FLOP of one epoch over real tokens (module docstring)."""
    import torch

    model = run.model
    cfgm = model.config
    lin, lora_w = 0, 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and "lora_" not in name and ".encoder." in name:
            lin += m.in_features * m.out_features
        if isinstance(m, torch.nn.Linear) and "lora_" in name:
            lora_w += m.in_features * m.out_features
    lengths = [len(e.input_ids) for e in run.encoded]
    tokens = sum(lengths)
    layers, hidden = cfgm.num_hidden_layers, cfgm.hidden_size
    attn = sum(4 * n * n * hidden for n in lengths) * layers  # QK^T and probs @ V, forward
    # frozen linears: forward + input gradient (2 + 2 per weight and token); LoRA factors:
    # forward, input gradient and weight gradient (2 + 2 + 2); attention: forward + 2x backward
    return tokens * (4 * lin + 6 * lora_w) + 3 * attn


def _full(data: Path, work: Path, fast: bool, seed: int) -> dict:
    """Train one whole adapter (today's defaults or the fast settings) and evaluate it."""
    from lorascan.evaluate.run import evaluate_adapter
    from lorascan.train import lora
    from lorascan.train.config import TrainConfig

    from lorascan.train.config import FAST

    out = work / f"adapter-{'fast' if fast else 'default'}-{seed}"
    extra = FAST if fast else {}
    t0 = time.perf_counter()
    lora.train_adapter("minilm", data, out, TrainConfig(task="seq-cls", rank=16, seed=seed, **extra), progress=False)
    wall = time.perf_counter() - t0
    ev = evaluate_adapter("minilm", out, data, progress=False)
    return {"settings": "fast" if fast else "default", "seed": seed, "train_s": wall,
            "asr": ev["attack_success_rate"], "clean_accuracy": ev["clean_accuracy"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="Timed optimizer steps per variant.")
    ap.add_argument("--full", action="store_true", help="Also train whole adapters at the defaults and fast settings.")
    ap.add_argument("--seeds", default="11", help="Comma-separated training seeds of --full.")
    ap.add_argument("--json", default=None, metavar="OUT")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = _prepare(work)
        variants = ["padded-128", "grouped", "grouped, no base dropout", "no base dropout + bf16", "fast"]
        rows = {}
        for variant in variants + variants[::-1]:  # both orders: drift and warm-up hit every variant
            run, cfg = _setup(data, fast=variant == "fast")
            r = _time_steps(run, cfg, variant, args.steps)
            rows.setdefault(variant, []).append(r)
        run, cfg = _setup(data)
        flop = _epoch_flop(run, cfg)
        mean_len = statistics.mean(len(e.input_ids) for e in run.encoded)
        shape = (cfg.batch_size * round(mean_len), run.model.config.hidden_size, run.model.config.intermediate_size)
        rate, rate_bf16 = _matmul_rate(*shape), _matmul_rate(*shape, dtype="bfloat16")
        steps_per_epoch = -(-len(run.encoded) // cfg.batch_size)
        epochs = float(cfg.epochs)
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        full = [_full(data, work, fast, seed) for seed in seeds for fast in (False, True)] if args.full else []
    out = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()},
           "steps_timed": args.steps, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
           "floor": {"epoch_gflop": flop / 1e9, "matmul_gflops": rate, "adapter_s": epochs * flop / 1e9 / rate,
                     "matmul_gflops_bf16": rate_bf16, "adapter_s_bf16": epochs * flop / 1e9 / rate_bf16},
           "variants": [], "full": full}
    base = None
    print(f"{'variant':28} {'s/step':>7} {'steps/s':>8} {'tok/s':>8} {'pad':>6} {'adapter s':>10} {'vs padded':>10}")
    for variant in variants:
        step = statistics.mean(r["s_per_step"] for r in rows[variant])
        tok = statistics.mean(r["real_tokens_per_s"] for r in rows[variant])
        adapter = step * steps_per_epoch * epochs
        base = base or adapter
        out["variants"].append({"variant": variant, "s_per_step": step, "steps_per_s": 1 / step,
                                "real_tokens_per_s": tok, "pad_share": rows[variant][0]["pad_share"],
                                "adapter_s": adapter, "speedup_vs_padded": base / adapter})
        print(f"{variant:28} {step:7.3f} {1 / step:8.2f} {tok:8.0f} {rows[variant][0]['pad_share']:6.1%} "
              f"{adapter:10.1f} {base / adapter:9.2f}x")
    f = out["floor"]
    print(f"{'floor (FLOP / matmul rate)':28} {'':7} {'':8} {'':8} {'':6} {f['adapter_s']:10.1f}   "
          f"({f['epoch_gflop']:.0f} GFLOP/epoch at {f['matmul_gflops']:.0f} GFLOP/s fp32)")
    print(f"{'floor, bf16 products':28} {'':7} {'':8} {'':8} {'':6} {f['adapter_s_bf16']:10.1f}   "
          f"(at {f['matmul_gflops_bf16']:.0f} GFLOP/s bf16)")
    for v in out["variants"]:
        bf16 = "bf16" in v["variant"] or v["variant"] == "fast"
        v["floor_fraction"] = (f["adapter_s_bf16"] if bf16 else f["adapter_s"]) / v["adapter_s"]
    print("fraction of the floor reached (its own precision's): "
          + ", ".join(f"{v['variant']} {v['floor_fraction']:.0%}" for v in out["variants"]))
    for r in full:
        print(f"whole adapter, seed {r['seed']}, {r['settings']:7}: {r['train_s']:.1f} s, "
              f"ASR {r['asr']:.3f}, clean accuracy {r['clean_accuracy']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
