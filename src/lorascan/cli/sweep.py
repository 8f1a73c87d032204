"""``lorascan sweep run|report``: resumable grids of poison -> train -> evaluate runs."""

from __future__ import annotations

import click

from lorascan.cli.common import console, safe
from lorascan.cli.executor_options import executor_options


@click.group("sweep")
def command() -> None:
    """Run grids of poison -> train -> evaluate runs (attack curves, detector cohorts) and report them.

    A grid config (YAML or JSON) names a base model, task, dataset, triggers, poison counts k
    (0 = clean), seeds and ranks; every combination is a run, one folder per run. Examples
    ship in experiments/.
    """


@command.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep folder (created; reused to resume).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Runs in parallel, one process each, sharing this machine's cores (--executor local).")
@executor_options
@click.option("--dry-run", is_flag=True, help="Show the runs and their state; run nothing.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_cmd(config: str, out: str, workers: int, executor: str, ray_address: str | None, ray_cpus: float,
            ray_gpus: float, dry_run: bool, quiet: bool) -> None:
    """Run every run of CONFIG that is not complete in --out; skip the rest.

    Safe to kill and start again, on either executor: finished runs are kept, half-written ones
    redone. Failed runs are recorded in their status.json; the command goes on and exits 1 at
    the end, as it does when runs were left incomplete (a Ray worker lost for good).
    """
    from lorascan.errors import DataError
    from lorascan.experiments.executors import close_executor, make_executor
    from lorascan.experiments.grid import load_grid
    from lorascan.experiments.sweep import plan_sweep, run_sweep

    if workers < 1:
        raise click.BadParameter("must be >= 1", param_hint="--workers")
    grid = load_grid(config)
    con = console()
    if dry_run:
        _print_plan(con, plan_sweep(grid, out))
        return
    ex = make_executor(executor, workers, ray_address, ray_cpus, ray_gpus)
    try:
        outcome = run_sweep(grid, out, ex, progress=not quiet, on_start=lambda p: _print_start(p, ex, executor))
    finally:
        close_executor(ex)
    plan = outcome.plan
    con.print(f"{safe(grid.name)}: {outcome.n_complete} of {len(plan.runs)} runs complete in {safe(out)} "
              f"({outcome.n_ran} run now, {len(outcome.failed)} failed)")
    for res in outcome.failed + outcome.interrupted:
        con.print(f"  {res.state} {res.run_id}: {safe(res.error, 300)}")
    if outcome.failed:
        raise DataError(f"{len(outcome.failed)} of {len(plan.runs)} runs failed (see their status.json); "
                        "run the sweep again to retry them")
    if outcome.interrupted:
        raise DataError(f"{len(outcome.interrupted)} of {len(plan.runs)} runs were left incomplete; "
                        "run the sweep again to resume them")


def _print_start(plan, ex, kind: str) -> None:
    todo = len(plan.todo)
    msg = f"{plan.grid.name}: {len(plan.runs)} runs, {plan.n_complete} complete, {todo} to run"
    if todo and kind == "ray":
        msg += f" on Ray ({ex.address}, {ex.workers} task slots)"
    elif todo and ex.workers > 1:
        msg += f" on {ex.workers} workers"
    console(stderr=True).print(safe(msg, 300))


def _print_plan(con, plan) -> None:
    from rich.table import Table

    from lorascan.experiments.grid import trigger_tag

    table = Table(title=f"{safe(plan.grid.name)}: {len(plan.runs)} runs, {plan.n_complete} complete")
    table.add_column("run", overflow="fold")
    for col in ("k", "seed", "rank"):
        table.add_column(col, justify="right")
    table.add_column("state", overflow="fold")
    for st in plan.runs:
        r = st.run
        state = st.state + (f": {safe(st.error, 80)}" if st.error else "")
        table.add_row(r.id, str(r.count), str(r.seed), str(r.rank), state)
    con.print(table)
    for trig in dict.fromkeys(st.run.trigger for st in plan.runs):
        con.print(f"t{trigger_tag(trig)} = '{safe(trig)}'")


@command.command("report")
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Only the runs of this grid config (a folder can hold several grids).")
@click.option("--out", "dest", type=click.Path(file_okay=False), default=None,
              help="Where to write the summary, plots and cohort labels [default: SWEEP_DIR].")
@click.option("--low", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Mean ASR where the transition band starts.")
@click.option("--high", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Mean ASR the attack must reach (the smallest such k is reported).")
def report_cmd(sweep_dir: str, config: str | None, dest: str | None, low: float, high: float) -> None:
    """Table, plots (PNG, SVG) and a JSON summary of SWEEP_DIR's finished runs: ASR and clean
    accuracy against poison count, mean ± std over seeds, the smallest k with mean ASR >= --high
    and the transition band, per rank and trigger."""
    from rich.table import Table

    from lorascan.experiments.grid import load_grid
    from lorascan.experiments.summary import describe_transition, table_rows
    from lorascan.report.sweep_plots import write_sweep_report

    if low >= high:
        raise click.BadParameter(f"must be below --high ({high})", param_hint="--low")
    grid = load_grid(config) if config else None
    run_ids = [r.id for r in grid.runs()] if grid else None
    summary, paths = write_sweep_report(sweep_dir, dest, run_ids, grid.name if grid else "sweep", low, high,
                                       grid.family_of if grid else None)
    con = console()
    for panel in summary["panels"]:
        title = (f"{safe(panel['base'])} {panel['task']} r={panel['rank']}, trigger t{panel['trigger_tag']} "
                 f"'{safe(panel['trigger'], 60)}'")
        table = Table(title=title)
        for col in ("k", "ratio", "runs", "ASR mean ± std", "clean acc. mean ± std", "injection recall"):
            table.add_column(col, justify="right")
        for row in table_rows(panel):
            table.add_row(*row)
        con.print(table)
        con.print(describe_transition(panel["transition"]))
    states = ", ".join(f"{n} {s}" for s, n in summary["census"]["states"].items())
    con.print(f"runs: {states}")
    con.print("wrote " + ", ".join(safe(p) for p in paths))
