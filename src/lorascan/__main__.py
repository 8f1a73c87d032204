"""``python -m lorascan`` runs the command line."""

from lorascan.cli.main import run

run()
