"""Merge cohort labels files (``lorascan sweep report --config GRID``'s ``*-cohort.json``) of grids
that share one sweep folder into one labels file for ``lorascan scan-evaluate`` and
``lorascan scan-calibrate --from-records``.

Each row's path is rewritten to ``runs/<run id>/adapter`` (relative to the sweep folder, as the
sweep report's own paths are relative to its --out), so a labels file made in one session and
one made in another, from other --out folders, name the same adapter the same way. A run listed
twice keeps its last row (a later report of the same run). Rows are checked to be a list of
objects with a path; nothing else is interpreted. With ``--records DIR`` (a batch folder of scan
records), only the runs that have an ok record there are kept: the cohort is what was scanned.

    .venv/bin/python experiments/merge_labels.py [--records DIR] OUT.json LABELS.json [LABELS.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def normalise(path: str) -> str:
    parts = Path(path).parts
    if len(parts) < 3 or parts[-1] != "adapter" or parts[-3] != "runs":
        raise SystemExit(f"error: {path!r} is not a sweep run's adapter path (runs/<run id>/adapter)")
    return "/".join(parts[-3:])


def scanned(records: Path) -> set[str]:
    """``runs/<run id>/adapter`` of every ok scan record in a batch folder."""
    out = set()
    for f in sorted((records / "records").glob("*.json")):
        rec = json.loads(f.read_text("utf-8"))
        path = (rec.get("adapter") or {}).get("path") if isinstance(rec, dict) else None
        if rec.get("status") == "ok" and isinstance(path, str):
            out.add("runs/" + "/".join(Path(path).parts[-2:]))
    return out


def main(argv: list[str]) -> int:
    keep = None
    if argv[:1] == ["--records"] and len(argv) > 1:
        keep, argv = scanned(Path(argv[1])), argv[2:]
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out, inputs = Path(argv[0]), argv[1:]
    merged: dict[str, dict] = {}
    for name in inputs:
        rows = json.loads(Path(name).read_text("utf-8"))
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("path"), str) for r in rows):
            print(f"error: {name} is not a labels file (a list of rows with a path)", file=sys.stderr)
            return 1
        for row in rows:
            merged[normalise(row["path"])] = {**row, "path": normalise(row["path"])}
    rows = sorted((r for r in merged.values() if keep is None or r["path"] in keep),
                  key=lambda r: (r["label"], str(r.get("family")), r["path"]))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n", "utf-8")
    tmp.replace(out)
    n_pos = sum(r["label"] == 1 for r in rows)
    print(f"wrote {out}: {len(rows)} adapters ({len(rows) - n_pos} clean, {n_pos} poisoned) from {len(inputs)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
