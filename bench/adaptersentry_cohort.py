"""Benchmark: adaptersentry 2.0.2 (a peer static scanner) on a labelled lorascan cohort, scored the
way ``lorascan scan-evaluate`` scores lorascan's own detectors (issue 12, Build item 4).

adaptersentry is a peer tool, never a lorascan dependency: install it in its own venv,

    python3 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install adaptersentry==2.0.2

For every member of LABELS (a labels file of ``lorascan sweep report``) whose adapter folder is
present, it runs ``adaptersentry scan FILE --format json`` as a user would, and reads back its
verdict (``verdict.action``: allow / review / block) and its continuous anomaly score
(``anomaly.intra.max_robust_z``, the largest robust z of a module feature inside the adapter,
which is what its intra-adapter verdict rests on when it has no reference profile for the
base, as for MiniLM). Reported: ROC AUC of that score on all and on effective backdoors (the
Mann-Whitney AUC lorascan uses), and the share of clean, poisoned and effective adapters at each
action.

Usage (from the repository root; about 2 s per adapter):

    .venv/bin/python bench/adaptersentry_cohort.py LABELS --root runs/scan-cohort
        [--peer /tmp/peer-venv/bin/adaptersentry] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lorascan.detect.calibrate import auc_mann_whitney
from lorascan.scan.evaluate import read_labelled

ACTIONS = ("allow", "review", "block")


def scan_one(peer: str, adapter: Path) -> dict:
    """adaptersentry's action, anomaly score and wall time on one adapter folder."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        t0 = time.perf_counter()
        proc = subprocess.run([peer, "scan", str(adapter / "adapter_model.safetensors"), "--format", "json",
                               "--output", str(out)], capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        if not out.is_file():
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no report"], "seconds": wall}
        rep = json.loads(out.read_text())
    intra = (rep.get("anomaly") or {}).get("intra") or {}
    return {"action": (rep.get("verdict") or {}).get("action"), "level": (rep.get("verdict") or {}).get("level"),
            "max_robust_z": intra.get("max_robust_z"), "status": rep.get("status"), "seconds": wall}


def _auc(rows: list[dict], effective_only: bool) -> float | None:
    use = [r for r in rows if r["max_robust_z"] is not None and (r["label"] == 0 or not effective_only
                                                                  or r["effective"])]
    labels = [r["label"] for r in use]
    if len(set(labels)) < 2:
        return None
    return auc_mann_whitney([r["max_robust_z"] for r in use], labels, "+")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", help="Labels file (lorascan sweep report's *-cohort.json).")
    ap.add_argument("--root", default=None,
                    help="Sweep folder holding runs/<run id>/adapter [default: the labels' own paths].")
    ap.add_argument("--peer", default="/tmp/peer-venv/bin/adaptersentry")
    ap.add_argument("--json", default=None, metavar="OUT")
    args = ap.parse_args()
    if not Path(args.peer).is_file():
        print(f"error: {args.peer} not found; install adaptersentry==2.0.2 in its own venv (see --help)",
              file=sys.stderr)
        return 2
    version = subprocess.run([args.peer, "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    for m in read_labelled(args.labels):
        path = Path(m.member.path)
        # labels paths resolve against the labels file's folder; --root re-roots runs/<id>/adapter
        folder = Path(args.root).joinpath(*path.parts[-3:]) if args.root else path
        if not (folder / "adapter_model.safetensors").is_file():
            continue
        res = scan_one(args.peer, folder)
        rows.append({"name": "/".join(path.parts[-2:]), "label": m.label, "effective": bool(m.effective),
                     "family": m.family, "rank": m.rank, **res})
        print(f"  {rows[-1]['name'][:60]:60} label {m.label} {res.get('action')} z {res.get('max_robust_z')}",
              file=sys.stderr)
    ok = [r for r in rows if "error" not in r]
    groups = {"clean": [r for r in ok if r["label"] == 0], "poisoned": [r for r in ok if r["label"] == 1],
              "effective": [r for r in ok if r["label"] == 1 and r["effective"]]}
    actions = {g: {a: sum(r["action"] == a for r in rs) / len(rs) if rs else None for a in ACTIONS}
               for g, rs in groups.items()}
    out = {"tool": version, "n": len(rows), "n_errors": len(rows) - len(ok),
           "auc_all": _auc(ok, False), "auc_effective": _auc(ok, True), "actions": actions,
           "seconds_per_adapter": sum(r["seconds"] for r in rows) / len(rows) if rows else None, "rows": rows}
    print(f"{version}: {len(ok)} adapters scanned ({out['n_errors']} errors); max_robust_z AUC all "
          f"{out['auc_all']}, effective {out['auc_effective']}; {out['seconds_per_adapter'] or 0:.1f} s per adapter")
    for g, shares in actions.items():
        print(f"  {g:9} " + "  ".join(f"{a} {'-' if v is None else f'{v:.2f}'}" for a, v in shares.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
