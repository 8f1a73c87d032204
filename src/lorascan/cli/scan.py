"""``lorascan scan ADAPTER...``: the main job, from an adapter you were handed to a verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lorascan.cli.executor_options import executor_options
from lorascan.errors import DataError, LorascanError, UsageError
from lorascan.formulations import task_names
from lorascan.scan.localise import MIN_ASR
from lorascan.scan.pipeline import DEFAULT_DETECTORS

FAIL_ON = ("none", "review", "block")
EXIT_FAIL_ON = 3
LEVELS = ("allow", "review", "block")


@click.command("scan", context_settings={"max_content_width": 100})
@click.argument("adapters", nargs=-1, required=True)
@click.option("--base", default=None, metavar="B",
              help="Base model (alias, local folder, .gguf, hub id). Default: the adapter config's base, matched "
                   "to a packaged base as data; never a path the adapter names.")
@click.option("--task", type=click.Choice(task_names()), default=None,
              help="Formulation [default: detected: a saved classification head -> seq-cls; a chat LM that answers "
                   "in label words -> label-word; another chat LM adapter -> chat (the generative detector); "
                   "an encoder without a head: behavioural detectors do not apply].")
@click.option("--detectors", default=",".join(DEFAULT_DETECTORS), metavar="A,B", show_default=True,
              help="Registered detectors to run (see 'lorascan list'); each runs on the formulations it reads.")
@click.option("--probe-data", default="offline-pi-v1", metavar="FILE", show_default=True,
              help="Probe inputs: a shipped set or a JSONL file of {text, label} rows.")
@click.option("--profiles", default=None, metavar="FILE",
              help="A profile set from 'lorascan scan-calibrate' [default: the one shipped for the base].")
@click.option("--token-reference", default="auto", metavar="auto|none|REF.json", show_default=True,
              help="The token scan's clean reference: the shipped one for the base, none, or a file from "
                   "'lorascan token-reference'.")
@click.option("--clean-reference", default="auto", metavar="auto|none|DIR[,DIR]", show_default=True,
              help="The phrase search's clean reference adapters (--detectors ...,phrases): the ones shipped "
                   "for the base, none, or clean adapter folders trained as the scanned one is thought to be.")
@click.option("--localise/--no-localise", default=True, show_default=True,
              help=f"For a flagged adapter (review/block) whose token scan found a candidate trigger with ASR >= {MIN_ASR:g}: "
                   "patch each layer window against the base and report the modules that carry the backdoor.")
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the JSON record (one adapter).")
@click.option("--html", "html_out", default=None, metavar="OUT", help="Write a self-contained HTML report.")
@click.option("--sarif", "sarif_out", default=None, metavar="OUT", help="Write SARIF 2.1.0.")
@click.option("--out", default=None, metavar="DIR",
              help="Batch: one record per adapter under DIR/records, DIR/summary.json (resumable).")
@click.option("--workers", default=1, show_default=True, help="Batch: adapters scanned in parallel processes.")
@executor_options
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="none", show_default=True,
              help=f"Exit {EXIT_FAIL_ON} when a verdict reaches this level (CI gate).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def command(ctx: click.Context, adapters: tuple[str, ...], base: str | None, task: str | None, detectors: str,
            probe_data: str, profiles: str | None, token_reference: str, clean_reference: str, localise: bool,
            json_out: str | None, html_out: str | None,
            sarif_out: str | None, out: str | None, workers: int, executor: str, ray_address: str | None,
            ray_cpus: float, ray_gpus: float, fail_on: str, device: str, quiet: bool) -> None:
    """Scan ADAPTER (a PEFT folder, a hub id ORG/NAME[@REVISION], a folder of adapters or a list
    file) for a trigger-activated backdoor and print allow, review or block with the reasons.

    Exit codes: 0 scanned, every verdict below --fail-on; 3 a verdict reached --fail-on;
    1 an adapter could not be scanned (missing or malformed files, wrong base, hub unreachable;
    never a pass); 2 usage error.
    """
    from lorascan.detect.clean_reference import check as check_clean_reference
    from lorascan.scan.inputs import expand
    from lorascan.scan.pipeline import ScanConfig

    config = ScanConfig(base=base, task=task, detectors=tuple(d.strip() for d in detectors.split(",") if d.strip()),
                        probe_data=probe_data, profiles=profiles, device=device, progress=not quiet,
                        token_reference=token_reference, localise=localise, clean_reference=clean_reference)
    if token_reference not in ("auto", "none") and not Path(token_reference).is_file():
        raise DataError(f"token reference not found: {token_reference} (give auto, none or a file)")
    check_clean_reference(clean_reference)
    entries, batch = expand(adapters)
    if batch or out:  # --out: records in a batch folder, even for one adapter
        if json_out or html_out or sarif_out:
            raise UsageError("--json/--html/--sarif are for one adapter; a batch writes its records under --out "
                             "(rebuild reports with 'lorascan report')")
        if not out:
            raise UsageError("a batch scan writes one record per adapter: pass --out DIR")
        ctx.exit(_batch(entries, config, out, fail_on, (executor, workers, ray_address, ray_cpus, ray_gpus)))
    if executor != "local" or ray_address is not None:
        raise UsageError("--executor ray is for a batch scan: give a folder or list of adapters, or --out DIR")
    ctx.exit(_single(entries[0], config, json_out, html_out, sarif_out, fail_on))


def _code(labels: list[str], fail_on: str) -> int:
    if "error" in labels:
        return 1
    if fail_on != "none" and any(lb in LEVELS and LEVELS.index(lb) >= LEVELS.index(fail_on) for lb in labels):
        return EXIT_FAIL_ON
    return 0


def _single(spec: str, config: Any, json_out: str | None, html_out: str | None, sarif_out: str | None,
            fail_on: str) -> int:
    from lorascan.report.scan import write_reports
    from lorascan.scan.batch import scan_one

    rec = scan_one(spec, config)
    if rec["status"] != "ok":
        if json_out:  # the error record, so CI sees why; never an HTML/SARIF "pass"
            write_reports(rec, {"json": json_out})
        raise _error_from(rec)
    written = write_reports(rec, {"json": json_out, "html": html_out, "sarif": sarif_out})
    _print(rec)
    for path in written:
        _echo(f"wrote {path}")
    return _code([rec["verdict"]["label"]], fail_on)


def _error_from(rec: dict[str, Any]) -> LorascanError:
    err = LorascanError(rec["error"])
    err.exit_code = int(rec.get("exit_code") or 1)
    return err


def _batch(entries: list[str], config: Any, out: str, fail_on: str, executor_args: tuple) -> int:
    from lorascan.experiments.executors import close_executor, make_executor
    from lorascan.scan.batch import run_batch

    kind, workers = executor_args[:2]
    ex = make_executor(*executor_args)  # checks the options; local: run_batch's own workers scan
    try:
        summary = run_batch(entries, config, out, workers, on_record=_print, executor=ex if kind == "ray" else None)
    finally:
        close_executor(ex)
    c = summary["counts"]
    _echo(f"{summary['n']} adapters: {c['allow']} allow, {c['review']} review, {c['block']} block, "
          f"{c['error']} not scanned; records in {out}/records, summary {out}/summary.json")
    return _code([r["verdict"] or "error" for r in summary["adapters"]], fail_on)


def _print(rec: dict[str, Any]) -> None:
    from lorascan.report.scan import summary_lines

    for line in summary_lines(rec):
        _echo(line)


def _echo(line: str) -> None:
    from lorascan.cli.common import console, safe

    console().print(safe(line, 400), markup=False, highlight=False)
