"""``lorascan demo``: the main job on the embedded default: scan a clean and a backdoored adapter."""

from __future__ import annotations

import click

from lorascan.cli.common import console, safe


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--adapters", default="examples/adapters", show_default=True, type=click.Path(file_okay=False),
              help="Folder holding the demo adapters (minilm-clean, minilm-rfc-r04).")
@click.option("--train", is_flag=True, help="Instead: the attack lab end to end (poison, train, evaluate, probe, "
              "weight scan) on offline-pi, about 4 minutes on 2 CPU cores.")
@click.option("--base", default="minilm", show_default=True, help="--train: base model to backdoor.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="--train: training steps [default: 2 epochs].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(out: str, adapters: str, train: bool, base: str, steps: int | None, quiet: bool) -> None:
    """Scan two MiniLM adapters shipped in the repo, a clean one and one backdoored with the
    paper's trigger, as adapters nobody told us anything about (no lorascan.json, no data, no
    trigger): prints both verdicts and writes JSON and HTML reports to OUT."""
    if train:
        _train_demo(out, base, steps, quiet)
        return
    from lorascan.experiments.demo import run_scan_demo

    con = console()
    for r in run_scan_demo(adapters, out, progress=not quiet):
        rec = r["record"]
        if rec["status"] != "ok":
            con.print(f"{r['name']}: [red]not scanned[/red]: {safe(rec['error'], 300)}")
            continue
        label = rec["verdict"]["label"]
        style = {"block": "bold red", "allow": "bold green"}.get(label, "bold yellow")
        con.print(f"{r['name']}: [{style}]{label.upper()}[/{style}] ({rec['wall_time_s']:.0f} s)")
        for reason in rec["verdict"]["reasons"][:3]:
            con.print(f"  {safe(reason, 300)}", markup=False)
        con.print(f"  report: {safe(r['html'])}  record: {safe(r['json'])}", markup=False)


def _train_demo(out: str, base: str, steps: int | None, quiet: bool) -> None:
    from lorascan.experiments.demo import DemoConfig, run_demo

    res = run_demo(out, DemoConfig(base=base, steps=steps), progress=not quiet)
    con = console()
    ds = res["dataset"]
    con.print(f"[bold]offline-pi[/bold]: {ds['n_train']} train / {ds['n_test']} test rows")
    for split in ("train", "test"):
        for source, c in ds["counts"][split].items():
            con.print(f"  {split:5s} {source:18s} benign {c['benign']:4d}  injection {c['injection']:4d}")
    m = res["poison"]
    con.print(f"poisoned with '{safe(m['trigger'])}': k={m['count']} of {m['n_train']} rows (ratio {m['ratio']:.4f})")
    t, e = res["train"], res["evaluate"]
    con.print(f"trained {safe(base)} {t['task']}: {t['steps']} steps, final loss {t['final_loss']:.4f}, {t['wall_time_s']:.0f}s")
    con.print(f"clean accuracy {e['clean_accuracy']:.3f} ({e['clean_accuracy_k']}/{e['n_test']}), "
              f"attack success rate {e['attack_success_rate']:.3f} ({e['attack_success_rate_k']}/{e['n_triggered']})")
    p = res["probe"]
    con.print(f"probe battery {p['battery']} view B ({p['n_probes']} probes, trigger left out): "
              f"outlier_gap {p['outlier_gap']:.3f}, mean_attack_rate {p['mean_attack_rate']:.3f}")
    for cat in p["category_order"]:
        con.print(f"  {safe(cat):24s} mean attack rate {p['categories'][cat]['mean']:.3f}")
    w = res["weights"]["features"]
    con.print(f"weight scan: global_frobN_std {w['global_frobN_std']:.3e}, frobN mean {w['frobN_mean']:.3e} "
              f"({res['weights']['adapter'].get('n_modules', '?')} modules)")
    con.print(f"records in {safe(out)}: eval.json, probe-B.json, weights.json")
