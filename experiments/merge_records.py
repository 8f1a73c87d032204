"""Join the detector rows of scan records made at different times for the same adapters, so that
``lorascan scan-evaluate --fused ...`` can judge a verdict over detectors that were not run in one
scan (issue 12: the phrase search on cohort v2's subset, beside the cohort's own records).

For every row of LABELS (``runs/<run id>/adapter``), the record of that run in BASE (a batch
folder: ``BASE/records/*.json``, found by the last two parts of the adapter path it records) gets
the detector rows of the same run's record in each EXTRA folder whose detector it does not
have; the result goes to ``OUT/records/`` under BASE's file name. The joined record keeps BASE's
verdict (stale for the added rows; scan-evaluate judges from the scores). A run without an ok
record in every folder is an error.

    .venv/bin/python experiments/merge_records.py LABELS.json BASE EXTRA [EXTRA ...] --out OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def by_run(folder: Path) -> dict[tuple[str, ...], Path]:
    out = {}
    for f in sorted((folder / "records").glob("*.json")):
        rec = json.loads(f.read_text("utf-8"))
        path = (rec.get("adapter") or {}).get("path") if isinstance(rec, dict) else None
        if isinstance(path, str) and rec.get("status") == "ok":
            out[Path(path).parts[-2:]] = f
    return out


def main(argv: list[str]) -> int:
    if "--out" not in argv or len(argv) < 5:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    i = argv.index("--out")
    out, args = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    labels, base, extras = Path(args[0]), Path(args[1]), [Path(a) for a in args[2:]]
    rows = json.loads(labels.read_text("utf-8"))
    base_runs, extra_runs = by_run(base), [by_run(e) for e in extras]
    (out / "records").mkdir(parents=True, exist_ok=True)
    for row in rows:
        run = Path(row["path"]).parts[-2:]
        missing = [str(f) for f, runs in zip([base, *extras], [base_runs, *extra_runs]) if run not in runs]
        if missing:
            print(f"error: no ok record for {'/'.join(run)} in {', '.join(missing)}", file=sys.stderr)
            return 1
        rec = json.loads(base_runs[run].read_text("utf-8"))
        have = {d["detector"] for d in rec["detectors"]}
        for runs in extra_runs:
            extra = json.loads(runs[run].read_text("utf-8"))
            rec["detectors"] += [d for d in extra["detectors"] if d["detector"] not in have]
            have |= {d["detector"] for d in extra["detectors"]}
        dst = out / "records" / base_runs[run].name
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n", "utf-8")
        tmp.replace(dst)
    print(f"{len(rows)} records joined into {out / 'records'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
