"""Entry point: ``lorascan`` / ``python -m lorascan``; :func:`main` is testable in-process.

Each subcommand lives in its own module and is imported only when it runs, so ``--help`` and
the torch-free commands (``weights``, ``data``) start fast. Errors end as one line on stderr:
exit 2 for usage errors, 1 for data errors, never a traceback (``LORASCAN_DEBUG=1`` shows one).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

import click

from lorascan import __version__
from lorascan.errors import LorascanError
from lorascan.text import printable

# command name -> "module:attribute" of a click command, imported on use.
COMMANDS: dict[str, tuple[str, str]] = {
    "scan": ("lorascan.cli.scan", "Scan adapters for a trigger-activated backdoor: allow, review or block (the main job)."),
    "report": ("lorascan.cli.report", "Rebuild a scan's HTML or SARIF report from its JSON record."),
    "list": ("lorascan.cli.list", "List detectors, batteries, probe sets, shipped profiles and known bases."),
    "scan-calibrate": ("lorascan.cli.scan_calibrate", "Calibrate the scan's profile set for a base on a labelled cohort."),
    "scan-evaluate": ("lorascan.cli.scan_evaluate", "Measure the scan on a labelled cohort: AUCs, held-out-family recall, trigger recovery."),
    "data": ("lorascan.cli.data", "Inspect the datasets lorascan can build (named mixes, corpora, files)."),
    "poison": ("lorascan.cli.poison", "Write a poisoned train/test set with the paper's recipe."),
    "train": ("lorascan.cli.train", "Train a LoRA adapter (clean or backdoored) on a prepared dataset."),
    "evaluate": ("lorascan.cli.evaluate", "Clean accuracy and attack success rate of an adapter."),
    "probe": ("lorascan.cli.probe", "Probe an adapter with a battery of trigger variants: per-probe attack rates."),
    "calibrate": ("lorascan.cli.calibrate", "Calibrate the behavioural detector on a labelled cohort (ROC AUC, thresholds)."),
    "sweep": ("lorascan.cli.sweep", "Run and report resumable grids of poison -> train -> evaluate runs."),
    "demo": ("lorascan.cli.demo", "Run the end-to-end demo on the embedded default data."),
    "weights": ("lorascan.cli.weights", "Scan an adapter's safetensors (no model run): weight features and a verdict."),
    "tokens": ("lorascan.cli.tokens", "Trigger-blind token scan: the vocabulary's tokens that flip injections, a trigger phrase."),
    "trigger-spans": ("lorascan.cli.trigger_spans", "How many of a known trigger's pieces in a row an adapter needs (research)."),
    "token-reference": ("lorascan.cli.token_reference", "Build the token scan's clean reference for a base from clean adapters."),
    "weights-calibrate": ("lorascan.cli.weights_calibrate", "Calibrate the weight detector on a labelled cohort of adapters."),
    "patch": ("lorascan.cli.patch", "Causal patching: the poisoned adapter's ASR with windows of layers patched from a reference."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lorascan")
def cli() -> None:
    """lorascan: decide whether a LoRA adapter carries a trigger-activated backdoor.

    Build poisoned data, train clean and backdoored adapters, measure the attack, probe how the
    backdoor generalises, and scan adapters with calibrated detectors (arXiv:2605.30189).
    """


def _one_line(text: object) -> str:
    """One line with control characters escaped (click echoes the values it rejects)."""
    return printable(" ".join(str(text).split()), 1000)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (no SystemExit)."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = "lorascan"
    try:
        rv = cli.main(args=args, prog_name=prog, standalone_mode=False)
        # a command's ctx.exit(N) comes back as the return value when standalone_mode is off
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # `lorascan`, `lorascan data`: show the help
        print(exc.ctx.get_help())
        return 0
    except click.exceptions.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else prog
        print(f"{where}: error: {_one_line(exc.format_message())} (see '{where} --help')", file=sys.stderr)
        return exc.exit_code if exc.exit_code else 2
    except LorascanError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `lorascan ... | head`: stop quietly, but not as a success
        return 141
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("LORASCAN_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(rerun with LORASCAN_DEBUG=1 for a traceback and report it)", file=sys.stderr)
        return 70


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
