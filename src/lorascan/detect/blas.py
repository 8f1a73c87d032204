"""BLAS threading for the weight scan.

A scan is thousands of small products (r x n Gram matrices, r x r eigenproblems). On the
project's 2-core machines OpenBLAS's thread pool costs more than it gives for them, and much
more when the cores are shared: measured on a Llama-70B-shaped r=64 adapter, 7.8 s
single-threaded against 34 s threaded under load (Qwen2.5-1.5B-shaped r=16: 0.39 s vs 0.44 s).
OpenBLAS reads its thread count once, when numpy is first imported, so the commands call
:func:`prefer_single_thread` before importing numpy. A user's own setting always wins.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def prefer_single_thread() -> bool:
    """Ask BLAS for one thread unless the user chose a count or numpy is already loaded.
    Returns whether the setting was made."""
    if "numpy" in sys.modules or any(v in os.environ for v in THREAD_VARS):
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    return True


@contextlib.contextmanager
def torch_one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the count. Small decompositions and tiny models
    are fastest so on 2 busy cores, where idle workers spin: measured a 384x384 eigh at 5 s on
    two threads and 0.02 s on one, and a tiny-bert readout at 3.2 s against 0.22 s."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
