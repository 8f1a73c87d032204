"""Benchmark: would one matrix product for q, k and v (and one for gate and up) speed up the
readout? Issue 16's readout lever, measured before it is built: the products of one SmolLM2-135M
decoder layer at the readout's batch shape, as separate products and as one product over the
concatenated weights, in one run, with the ratio printed and the fused columns checked against
the separate products.

Usage (from the repository root):

    .venv/bin/python bench/fused_products.py [--rows 1120] [--threads 2] [--repeats 3]

Rows default to 32 prompts x 35 tokens (the batched readout's average batch after the shared
prefix); the weight shapes are SmolLM2-135M's (hidden 576, 9 query heads and 3 key/value heads
of 64, intermediate 1,536). Each timing is the best of 5 x 30 products.
"""

from __future__ import annotations

import argparse
import time

import torch

HIDDEN, KV, INTERMEDIATE = 576, 192, 1536


def best_ms(fn, n: int = 30, rounds: int = 5) -> float:
    """Best mean milliseconds per call of ``fn`` over ``rounds`` rounds of ``n`` calls."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n)
    return 1e3 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1120)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    linear = torch.nn.functional.linear
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, HIDDEN, generator=gen)
    q, k, v, g, u = (torch.randn(r, HIDDEN, generator=gen) for r in (HIDDEN, KV, KV, INTERMEDIATE, INTERMEDIATE))
    qkv, gu = torch.cat([q, k, v]), torch.cat([g, u])
    exact = (torch.equal(linear(x, qkv), torch.cat([linear(x, q), linear(x, k), linear(x, v)], -1))
             and torch.equal(linear(x, gu), torch.cat([linear(x, g), linear(x, u)], -1)))
    print(f"rows {args.rows}, threads {args.threads}; fused columns equal the separate products: {exact}")
    for i in range(args.repeats):
        a, b = best_ms(lambda: (linear(x, q), linear(x, k), linear(x, v))), best_ms(lambda: linear(x, qkv))
        c, d = best_ms(lambda: (linear(x, g), linear(x, u))), best_ms(lambda: linear(x, gu))
        print(f"repeat {i + 1}: q,k,v {a:.2f} ms separate, {b:.2f} ms fused ({a / b:.2f}x); "
              f"gate,up {c:.2f} ms separate, {d:.2f} ms fused ({c / d:.2f}x)")


if __name__ == "__main__":
    main()
