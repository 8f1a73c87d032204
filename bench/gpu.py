"""Benchmark: the 21 x 60 probe battery on a random-weight model of a real shape, every readout
against the paper's loop and against the arithmetic limit of the device, in one run.

Nothing is downloaded and no data folder is needed (issue 16, build item 3): the model is built
from a transformers ``Qwen2Config`` of the named shape (:data:`SHAPES`) with random weights,
directly on the device; a random rank-16 LoRA is attached with peft over the seven projections
the paper trains (paper.md §4: r = 16, alpha = r, q, k, v, o, gate, up, down); the prompts are
token ids (:func:`battery_ids`). So the script runs wherever torch, transformers and peft are
installed and the working tree is (``lorascan`` is imported from ``src/`` when not installed).

Methods, on the same 21 x 60 = 1,260 prompts (paper.md §7, the 21-prefix battery, 60 test
injections per probe):

- ``paper-loop``: the reference notebooks' readout (paper.md §2), adapter unmerged, one greedy
  ``generate`` per prompt, 5 new tokens. Random weights would stop at an end-of-turn token
  anywhere, so exactly 5 are generated (``min_new_tokens``): the paper's budget; a trained
  adapter stops after the label word and end-of-turn (3 to 4 tokens with the Qwen2.5
  tokenizer). Slow (the issue: 309 s on an H200, 1.5B), so timed on ``--loop-sample`` prompts
  spread over the battery and scaled to 1,260;
- ``batched-unmerged``: lorascan's logits readout (:class:`lorascan.evaluate.readout.Classifier`:
  sorted batches, two-row label head), adapter unmerged, every prompt in full;
- ``batched-merged``: the same, adapter merged (peft's ``merge_and_unload``, as lorascan does);
- ``batched-merged-shared``: merged, and the common prefix (the system turn) run once, its
  key/value cache reused by every batch: what ``lorascan probe`` does.

The batched methods are lorascan's own code path, handed an id-level formulation
(:class:`IdsFormulation`) in place of a tokenizer. Every timed call is synchronised with the
device, so a time is the wall time of the whole readout, launches included. Batched methods
get one warm-up pass (new shapes pay for kernel selection) and the median of ``--repeats``;
the loop is warmed up on two prompts and timed once. The limit is the battery's forward FLOPs
(:func:`battery_flops`) at the dense product rate measured in the same run (:func:`gemm_rate`),
every prompt in full for the loop and the unshared methods, the prefix once for
``batched-merged-shared``; a method reaches limit / time of it. Checks, since a fast wrong readout is no result: margins
and labels of every method against the unmerged readout (the loop's first-step logits on its
sample), and the labels the adapter changes against the same model with it disabled.

Usage (from the repository root):

    .venv/bin/python bench/gpu.py [--shape qwen2.5-1.5b|qwen2.5-7b|tiny] [--device cuda|cpu]
        [--dtype bfloat16|float16|float32] [--loop-sample 42] [--batch-size 32] [--repeats 3]
        [--injections 60] [--json OUT]

``tiny`` (lorascan's tiny-qwen2 sizes) runs on a CPU: the full battery in a minute or two, the
test of this script (``--injections 2``) in seconds. It says nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import lorascan  # noqa: F401 - the installed (editable) package
except ImportError:  # a bare working tree (a GPU machine without the project installed)
    sys.path.insert(0, str(ROOT / "src"))

from lorascan.evaluate.readout import Classifier, common_prefix_length  # noqa: E402
from lorascan.models.formulations import Encoded, LabelWord  # noqa: E402 - also the pre-issue-13 path

_QWEN_VOCAB = dict(vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0, hidden_act="silu",
                   use_sliding_window=False, max_position_embeddings=32768)
# Sizes from the public config.json files of Qwen/Qwen2.5-1.5B and Qwen/Qwen2.5-7B on the Hugging
# Face hub (max_position_embeddings lowered from 131072: it only sizes rotary tables, and no prompt
# here is longer than 200 tokens). tiny is lorascan's tiny-qwen2 decoder (models/tiny.py: 2
# layers, 64 wide) with the 1.5B vocabulary, so token ids and label rows are the real shape's.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b": dict(_QWEN_VOCAB, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, tie_word_embeddings=True,
                         source="huggingface.co/Qwen/Qwen2.5-1.5B config.json"),
    "qwen2.5-7b": dict(_QWEN_VOCAB, vocab_size=152064, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, intermediate_size=18944, tie_word_embeddings=False,
                       source="huggingface.co/Qwen/Qwen2.5-7B config.json"),
    "tiny": dict(_QWEN_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, tie_word_embeddings=True, source="the sizes of lorascan's tiny-qwen2"),
}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
METHODS = ("paper-loop", "batched-unmerged", "batched-merged", "batched-merged-shared")

# Qwen2.5 tokenizer facts (lorascan's packaged tokenizer, models/tiny.py, with the label-word
# formulation and lorascan's SYSTEM_PROMPT): pad <|endoftext|> 151643; first sub-tokens of
# BENIGN and INJECTION 33 and 687; the prompt prefix common to the whole battery is 54 tokens
# (system turn + "<|im_start|>user\n"); the template tail after the text is 5 tokens
# ("<|im_end|>\n<|im_start|>assistant\n"); the 21 probe prefixes of paper-21 with their ". "
# separator are these token counts, in battery order.
PAD_ID, LABEL_IDS = 151643, (33, 687)
PREFIX_TOKENS, TAIL_TOKENS = 54, 5
PROBE_TOKENS = (14, 17, 12, 11, 14, 13, 13, 14, 9, 13, 8, 8, 7, 11, 8, 6, 6, 6, 6, 7, 14)
INJECTIONS_PER_PROBE = 60
# Injection text lengths are drawn uniformly from this range (tokens). An assumption: the
# paper's deepset test injections are not bundled; offline-pi's, cut by lorascan's default
# max length of 128, average 39 suffix tokens, which this range (mean 36 + probe + tail)
# slightly exceeds, as the uncut paper texts would.
TEXT_TOKENS = (8, 64)


class IdsFormulation(LabelWord):
    """lorascan's label-word formulation at the token level: the "text" of a prompt already is
    its id tuple, and the label rows are the Qwen2.5 tokenizer's. Everything else (padding side,
    margins of a padded batch) is the real formulation's, so :class:`Classifier` runs its own
    readout without a tokenizer. ``LabelWord.__init__`` is not called: it derives the label ids
    and the template overhead from a tokenizer, which is what this class replaces."""

    def __init__(self, label_ids: tuple[int, int] = LABEL_IDS):  # noqa: D107 - see the class
        self.label_ids = label_ids
        self.max_length = None  # ids are never cut here

    def encode(self, ids: tuple[int, ...]) -> Encoded:
        return Encoded(list(ids))


@dataclass(frozen=True)
class _PadOnly:
    """All the readout asks of a tokenizer once the formulation encodes: the pad id."""

    pad_token_id: int = PAD_ID


def battery_ids(seed: int = 0, per_probe: int = INJECTIONS_PER_PROBE, vocab: int = PAD_ID) -> list[tuple[int, ...]]:
    """21 x ``per_probe`` prompts in battery order (probe-major): a fixed 54-token prefix, the probe's own
    prefix tokens, the injection's text tokens (the same texts under every probe, as the
    battery places each probe before the same test injections) and a fixed 5-token tail. Ids
    are random below the special tokens; the first probe token differs between probes, so the
    common prefix is exactly the 54 shared tokens."""
    rng = np.random.default_rng(seed)
    draw = lambda n: tuple(int(t) for t in rng.integers(0, vocab, n))  # noqa: E731
    prefix, tail = draw(PREFIX_TOKENS), draw(TAIL_TOKENS)
    firsts = rng.choice(vocab, len(PROBE_TOKENS), replace=False)
    probes = [(int(f),) + draw(n - 1) for f, n in zip(firsts, PROBE_TOKENS)]
    texts = [draw(int(n)) for n in rng.integers(TEXT_TOKENS[0], TEXT_TOKENS[1] + 1, per_probe)]
    return [prefix + p + t + tail for p in probes for t in texts]


def build_model(shape: str, device: str, dtype: str, seed: int):
    """A random-weight causal LM of ``shape``, created on ``device`` (no host copy, no download)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    sizes = {k: v for k, v in SHAPES[shape].items() if k != "source"}
    config = Qwen2Config(**sizes, pad_token_id=PAD_ID)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    return model.eval()


def attach_random_lora(model, rank: int, seed: int, delta_ratio: float):
    """peft LoRA (alpha = rank as the paper's, dropout 0) with random A (peft's init) and random
    B scaled so that every module's update B·A has ``delta_ratio`` times the standard deviation
    of the base weight. peft starts B at zero, which would make the adapter a no-op and the
    merged/unmerged comparison empty; 0.1 moves labels without swamping the base."""
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", target_modules=list(LORA_TARGETS))
    peft_model = get_peft_model(model, cfg)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for module in peft_model.modules():
            if not hasattr(module, "lora_B") or "default" not in module.lora_B:
                continue
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            # std(B·A) = std(B) * std(A) * sqrt(rank) for independent zero-mean entries
            std = delta_ratio * module.base_layer.weight.float().std() / (a.float().std() * rank ** 0.5)
            b.copy_(torch.randn(b.shape, generator=gen).to(b) * std.to(b))
    return peft_model.eval()


def balance_labels(model, seqs: list[tuple[int, ...]]) -> None:
    """Turn the INJECTION row of the output layer so that the label margin is centred on the
    prompts ``seqs`` (a sample of the battery). A random-weight model gives every prompt nearly
    the same last hidden state (the same template tail), so one label would win everywhere and
    the agreement checks would pass for any readout. The row difference (INJECTION - BENIGN) is
    projected off the mean last hidden state m: the margin becomes (h - m)·d, about half the
    prompts on each side. Tied embeddings change token 687's input embedding with it, the same
    for every method."""
    import torch

    decoder, head = model.get_decoder(), model.get_output_embeddings().weight
    device = head.device
    with torch.no_grad():
        hidden = [decoder(input_ids=torch.tensor([s], device=device)).last_hidden_state[0, -1].float() for s in seqs]
        m = torch.stack(hidden).mean(0)
        benign, inj = LABEL_IDS
        d = head[inj].float() - head[benign].float()
        d = d - (d @ m) / (m @ m) * m
        head[inj] = (head[benign].float() + d).to(head.dtype)


def classifier(model, shape: str, share_prefix: bool) -> Classifier:
    """lorascan's readout over ``model`` with the id-level formulation."""
    return Classifier(model, _PadOnly(), IdsFormulation(), "label-word", f"random {shape}", "random-lora",
                      share_prefix=share_prefix)


def reference_loop(model, seqs: list[tuple[int, ...]], new_tokens: int = 5) -> np.ndarray:
    """The paper's loop: one greedy generate per prompt (batch 1, no padding). Returns the
    label margin of the first generated position (the logits the paper's parse depends on)."""
    import torch

    device = next(model.parameters()).device
    out = np.empty(len(seqs))
    with torch.inference_mode():
        for i, seq in enumerate(seqs):
            ids = torch.tensor([seq], device=device)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=PAD_ID,
                                 return_dict_in_generate=True, output_logits=True)
            first = gen.logits[0][0].float()
            out[i] = float(first[LABEL_IDS[1]] - first[LABEL_IDS[0]])
    return out


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run: Callable[[], Any], device: str, repeats: int, warmup: bool = True) -> tuple[float, Any]:
    """(median seconds of ``repeats`` synchronised calls, the last result), after one warm-up call."""
    if warmup:
        run()
    times, result = [], None
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        result = run()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


def gemm_rate(device: str, dtype: str, n: int, reps: int = 10) -> float:
    """Best achieved FLOP/s of an n x n x n product in ``dtype`` (``reps`` products per timing,
    so one launch and one synchronisation do not dominate). fp32 products on a GPU may use TF32
    (torch's setting is left as it is, as the readout runs with it)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype), generator=gen)
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype), generator=gen)
    best = float("inf")
    for trial in range(4):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        if trial:  # the first is a warm-up
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 * reps / best


def battery_flops(sizes: dict[str, Any], lengths: list[int], prefix: int, rank: int) -> dict[str, float]:
    """Forward FLOPs of reading out prompts of ``lengths`` tokens, all sharing ``prefix`` tokens.

    Per layer and token: 2 FLOP per weight of the seven projections (P = h·q + 2·h·kv + q·h +
    3·h·I, with q = heads x head size, kv = KV heads x head size), and 4·q·t for the scores and
    the weighted values of a token at position t (1-based, causal: it attends to t keys). Per
    prompt: 2·2·h for the two label rows. A prompt of T tokens: layers·(2·P·T + 2·q·T·(T+1)) + 4·h.
    Shared: the prefix of n tokens once, layers·(2·P·n + 2·q·n·(n+1)), and per prompt its
    s = T - n suffix tokens, layers·(2·P·s + 4·q·(s·n + s·(s+1)/2)) + 4·h. Not counted:
    embeddings (a lookup), norms, rotary, softmax and activations (element-wise, a few FLOPs per
    activation against thousands per weight row), and padding, which a batched readout runs
    but the battery does not need. ``lora`` is the extra work of an unmerged adapter,
    2·r·(in + out) per module and token on every token."""
    h, layers, inter = sizes["hidden_size"], sizes["num_hidden_layers"], sizes["intermediate_size"]
    head = h // sizes["num_attention_heads"]
    q, kv = sizes["num_attention_heads"] * head, sizes["num_key_value_heads"] * head
    weights = h * q + 2 * h * kv + q * h + 3 * h * inter
    t = np.asarray(lengths, dtype=np.float64)
    s, n = t - prefix, float(prefix)
    full = layers * (2 * weights * t + 2 * q * t * (t + 1)) + 4 * h
    shared = layers * (2 * weights * s + 4 * q * (s * n + s * (s + 1) / 2)) + 4 * h
    lora_per_token = layers * 2 * rank * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h))
    return {"full": float(full.sum()), "shared": float(shared.sum() + layers * (2 * weights * n + 2 * q * n * (n + 1))),
            "lora": float(lora_per_token * t.sum()), "linear_weights": float(layers * weights),
            "tokens": float(t.sum()), "suffix_tokens": float(s.sum())}


def _agreement(margins: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Label agreement, the largest margin difference and the largest reference margin among
    the prompts whose label differs, both relative to the spread of the reference margins: in
    bf16 merging rounds W + B·A, so near-ties may flip; a flip far from zero would be a bug."""
    spread = float(np.std(reference)) or 1.0
    flips = (margins > 0) != (reference > 0)
    return {"label_agreement": float(np.mean(~flips)), "label_flips": int(flips.sum()),
            "max_margin_diff_rel": float(np.max(np.abs(margins - reference))) / spread,
            "max_flipped_margin_rel": float(np.max(np.abs(reference[flips]), initial=0.0)) / spread}


def _time_methods(args, device: str, seqs: list[tuple[int, ...]]) -> tuple[dict[str, dict], dict[str, Any]]:
    """Build the model, time the four readouts in order (unmerged ones before merging, which
    modifies the model in place) and keep every method's margins for the checks."""
    model = attach_random_lora(build_model(args.shape, device, args.dtype, args.seed), args.rank, args.seed,
                               args.delta_ratio)
    balance_labels(model, seqs[::max(1, len(seqs) // 64)])
    sample = sorted(set(np.linspace(0, len(seqs) - 1, max(1, args.loop_sample)).round().astype(int).tolist()))
    rows: dict[str, dict] = {}
    reference_loop(model, seqs[:2])  # warm-up
    sec, m = timed(lambda: reference_loop(model, [seqs[i] for i in sample]), device, 1, warmup=False)
    rows["paper-loop"] = {"seconds": sec * len(seqs) / len(sample), "timed_prompts": len(sample),
                          "timed_seconds": sec, "margins": m, "index": sample}
    score = lambda clf: (lambda: clf.scores(seqs, batch_size=args.batch_size))  # noqa: E731
    sec, m = timed(score(classifier(model, args.shape, share_prefix=False)), device, args.repeats)
    rows["batched-unmerged"] = {"seconds": sec, "margins": m}
    with model.disable_adapter():
        base = classifier(model, args.shape, share_prefix=False).scores(seqs, batch_size=args.batch_size)
    merged = model.merge_and_unload().eval()
    sec, m = timed(score(classifier(merged, args.shape, share_prefix=False)), device, args.repeats)
    rows["batched-merged"] = {"seconds": sec, "margins": m}
    shared = classifier(merged, args.shape, share_prefix=True)
    import torch

    with torch.inference_mode():
        found = shared._shared_prefix([list(s) for s in seqs])
    if found is None:  # the readout would silently run every prompt in full: the row would lie
        raise SystemExit("the shared-prefix readout does not apply to this model; nothing to time")
    sec, m = timed(score(shared), device, args.repeats)
    rows["batched-merged-shared"] = {"seconds": sec, "margins": m}
    extra = {"shared_prefix_tokens": found[0], "base_margins": base}
    if device.startswith("cuda"):
        extra["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return rows, extra


def _checks(rows: dict[str, dict], base: np.ndarray) -> dict[str, Any]:
    """Agreement of every method with the unmerged batched readout, and the adapter's effect."""
    ref = rows["batched-unmerged"]["margins"]
    out: dict[str, Any] = {}
    for name, row in rows.items():
        idx = row.get("index", slice(None))
        out[name] = _agreement(row["margins"], ref[idx]) if name != "batched-unmerged" else {"label_agreement": 1.0}
    out["adapter_effect"] = {"labels_changed": float(np.mean((base > 0) != (ref > 0))),
                             "mean_abs_margin_change": float(np.mean(np.abs(base - ref))),
                             "injection_fraction": float(np.mean(ref > 0))}
    return out


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    n = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {n} thread{'s' if n != 1 else ''}"


def _git_revision() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-1.5b")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                    help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--loop-sample", type=int, default=42,
                    help="prompts of the paper loop timed (spread over the battery), scaled to 1,260")
    ap.add_argument("--injections", type=int, default=INJECTIONS_PER_PROBE,
                    help="prompts per probe (the paper: 60; fewer only to test this script)")
    ap.add_argument("--batch-size", type=int, default=32, help="lorascan's readout batch (its default: 32)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per batched method (median kept)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--delta-ratio", type=float, default=0.1, help="std of B·A over std of the base weight")
    ap.add_argument("--gemm-size", type=int, default=None, help="side of the timed product (8192 cuda, 1024 cpu)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of torch for this run (default: torch's); 1 on a CPU other jobs share, "
                         "where every parallel region waits for a busy core")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.gemm_size = args.gemm_size or (8192 if args.device.startswith("cuda") else 1024)
    return args


def _print_table(info: dict[str, Any]) -> None:
    print(f"\n{info['n_prompts']} prompts (21 probes x {info['injections']}), {info['shape']} random weights + "
          f"random r {info['rank']} LoRA, {info['device_name']} {info['dtype']}, batch {info['batch_size']}")
    print(f"matmul {info['gemm']['tflops']:.3g} TFLOP/s ({info['gemm']['size']}^3 {info['dtype']}); battery "
          f"{info['flops']['full'] / 1e12:.4g} TFLOP in full, {info['flops']['shared'] / 1e12:.4g} with the "
          f"{info['shared_prefix_tokens']}-token prefix once")
    print(f"{'method':24s} {'seconds':>10s} {'speed-up':>9s} {'limit s':>10s} {'of limit':>9s} {'agreement':>10s}")
    loop = info["rows"]["paper-loop"]["seconds"]
    for name, row in info["rows"].items():
        note = f"  (timed on {row['timed_prompts']} prompts, scaled)" if "timed_prompts" in row else ""
        print(f"{name:24s} {row['seconds']:10.4g} {loop / row['seconds']:8.1f}x {row['limit_seconds']:10.4g} "
              f"{row['limit_fraction']:9.3f} {info['checks'][name]['label_agreement']:10.3f}{note}")
    checks = info["checks"]
    print(f"agreement: labels against batched-unmerged (the loop on its sample, from its first-step logits); "
          f"the adapter changes {checks['adapter_effect']['labels_changed']:.1%} of the labels of the bare model")
    for name in METHODS[1:]:
        if checks[name].get("label_flips"):
            print(f"  {name}: {checks[name]['label_flips']} labels differ, every one a near-tie (|margin| <= "
                  f"{checks[name]['max_flipped_margin_rel']:.3f} x the margins' std)")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, sys.argv[1:] if argv is None else argv)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (the test) keeps its setting


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    import peft
    import torch
    import transformers

    seqs = battery_ids(args.seed, args.injections)
    rate = gemm_rate(args.device, args.dtype, args.gemm_size)
    rows, extra = _time_methods(args, args.device, seqs)
    sizes = {k: v for k, v in SHAPES[args.shape].items() if k != "source"}
    flops = battery_flops(sizes, [len(s) for s in seqs], extra["shared_prefix_tokens"], args.rank)
    checks = _checks(rows, extra.pop("base_margins"))
    for name, row in rows.items():
        row["limit_seconds"] = flops["shared" if name == "batched-merged-shared" else "full"] / rate
        row["limit_fraction"] = row["limit_seconds"] / row["seconds"]
        row["speedup_vs_loop"] = rows["paper-loop"]["seconds"] / row["seconds"]
        row.pop("margins")
        row.pop("index", None)
    lengths = np.array([len(s) for s in seqs])
    info = {"schema_version": 1, "bench": "gpu", "argv": argv,
            "shape": args.shape, "shape_config": SHAPES[args.shape], "rank": args.rank, "delta_ratio": args.delta_ratio,
            "device": args.device, "device_name": _device_name(args.device), "dtype": args.dtype,
            "batch_size": args.batch_size, "injections": args.injections, "repeats": args.repeats, "seed": args.seed,
            "n_prompts": len(seqs), "prompt_tokens": {"mean": float(lengths.mean()), "min": int(lengths.min()),
                                                      "max": int(lengths.max()), "total": int(lengths.sum())},
            "gemm": {"size": args.gemm_size, "tflops": rate / 1e12}, "flops": flops, **extra,
            "rows": rows, "checks": checks, "git_revision": _git_revision(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "peft": peft.__version__,
                         "cuda": torch.version.cuda}}
    if common_prefix_length(seqs) != extra["shared_prefix_tokens"]:
        raise SystemExit("the readout shared a different prefix than the battery has")
    _print_table(info)
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
