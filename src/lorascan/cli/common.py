"""Options and output helpers shared by the commands (no logic of their own)."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape

from lorascan.data.labels import parse_label_map
from lorascan.data.sources import SourceOptions
from lorascan.text import printable


def console(stderr: bool = False, width: int | None = None) -> Console:
    """A rich console; on a pipe it prints plain text. Emoji codes are off: ``:warning:`` in a
    dataset row or trigger must print as written, and :func:`safe` only escapes markup.
    ``width``: at least this many columns (wide tables on a pipe, whose default is 80)."""
    con = Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)
    if width is not None and con.width < width:
        con = Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False, width=width)
    return con


def safe(text: Any, limit: int = 120) -> str:
    """Attacker-controlled text (triggers, dataset rows) made safe for a terminal table:
    control characters shown escaped and long strings cut (:func:`lorascan.text.printable`,
    as in error messages), rich markup escaped."""
    return escape(printable(text, limit))


def source_options(fn: Callable) -> Callable:
    """--text-col/--label-col/--label-map/... for datasets given as files or hf: ids."""
    opts = [
        click.option("--text-col", default="text", show_default=True, help="Text column of a file or HF dataset."),
        click.option("--label-col", default="label", show_default=True, help="Label column of a file or HF dataset."),
        click.option("--label-map", default=None, metavar="RAW=0,RAW=1",
                     help="Map raw labels to 0 (benign) / 1 (injection), e.g. 'benign=0,injection=1'."),
        click.option("--test-fraction", type=float, default=0.2, show_default=True,
                     help="Test share when a file has no split (stratified per source and label)."),
        click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of that split."),
        click.option("--hf-splits", default="train,test", show_default=True, metavar="TRAIN,TEST",
                     help="Split names of an hf: dataset."),
        click.option("--revision", default=None, help="Revision (branch, tag, commit) of an hf: dataset."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)

    @functools.wraps(fn)
    def wrapper(*args, text_col, label_col, label_map, hf_splits, revision, **kwargs):
        splits = [s.strip() for s in hf_splits.split(",")]
        if len(splits) != 2 or not all(splits):
            raise click.BadParameter("expected TRAIN,TEST", param_hint="--hf-splits")
        mapping = parse_label_map(label_map)
        kwargs["source_opts"] = SourceOptions(
            text_col=text_col, label_col=label_col,
            label_map=tuple(sorted(mapping.items())) if mapping else None,
            train_split=splits[0], test_split=splits[1], revision=revision)
        return fn(*args, **kwargs)

    return wrapper


battery_option = click.option(
    "--battery", default="paper-21", show_default=True,
    help="Built-in battery (paper-21, paper-41-v1, paper-41-canonical) or a .yaml/.json battery file.")


def save_profile(profile: Any, out: str, plot: str | None) -> None:
    """Write a calibration profile, then its ROC plot (a plot that cannot be drawn must not
    cost the profile)."""
    profile.save(out)
    if plot:
        from lorascan.report.plots import write_roc_plot

        write_roc_plot(profile, plot)


def print_profile_footer(con: Console, profile: Any, out: str, plot: str | None) -> None:
    """The profile's notes and what was written."""
    for note in profile.notes:
        con.print(f"note: {safe(note, 200)}")
    con.print(f"wrote {safe(out)}" + (f" and {safe(plot)}" if plot else ""))


def check_output_paths(*paths: str | None) -> None:
    """Fail before long work (not after minutes) when an output's folder does not exist."""
    from pathlib import Path

    from lorascan.errors import UsageError

    for p in paths:
        if p and p != "-" and not Path(p).resolve().parent.is_dir():
            raise UsageError(f"cannot write {p}: folder {Path(p).resolve().parent} does not exist")
