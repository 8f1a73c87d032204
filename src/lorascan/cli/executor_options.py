"""``--executor local|ray`` and the Ray options, shared by ``sweep run`` and batch ``scan``
(issue 14). Options only: the executor is built by
:func:`lorascan.experiments.executors.make_executor`."""

from __future__ import annotations

from typing import Callable

import click


def executor_options(fn: Callable) -> Callable:
    """--executor, --ray-address, --ray-cpus, --ray-gpus (passed to ``fn`` by those names)."""
    opts = [
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Where jobs run: this machine (--workers processes), or Ray tasks "
                          "(pip install 'lorascan[ray]'; shared storage, see the README)."),
        click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="Ray cluster to use (HEAD:6379, ray://HEAD:10001, auto) [default: start a local Ray "
                          "on this machine's cores]."),
        click.option("--ray-cpus", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                     help="CPUs each Ray task asks for (its torch threads)."),
        click.option("--ray-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="GPUs each Ray task asks for (at least 1 for jobs that need CUDA)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn
