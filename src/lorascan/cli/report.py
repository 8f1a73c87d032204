"""``lorascan report RECORD.json --html OUT | --sarif OUT``: rebuild a scan's reports from its
JSON record alone (the record is validated against the shipped schema first)."""

from __future__ import annotations

import click

from lorascan.errors import UsageError


@click.command("report")
@click.argument("record")
@click.option("--html", "html_out", default=None, metavar="OUT", help="Write the self-contained HTML report.")
@click.option("--sarif", "sarif_out", default=None, metavar="OUT", help="Write SARIF 2.1.0.")
def command(record: str, html_out: str | None, sarif_out: str | None) -> None:
    """Rebuild the HTML and/or SARIF report of a scan from RECORD (a 'lorascan scan --json' file
    or a batch's records/*.json)."""
    from lorascan.detect.jsonfile import read_json_untrusted
    from lorascan.report.scan import validate, write_reports

    if not (html_out or sarif_out):
        raise UsageError("nothing to write: pass --html OUT and/or --sarif OUT")
    rec = read_json_untrusted(record, "scan record")
    validate(rec, record)
    for path in write_reports(rec, {"html": html_out, "sarif": sarif_out}):
        click.echo(f"wrote {path}")
