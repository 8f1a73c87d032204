"""``lorascan scan-calibrate COHORT --base B --out FILE``: the profile set a scan of adapters on
base B is judged by (``src/lorascan/detect/profiles/<alias>.json`` for the packaged bases)."""

from __future__ import annotations

import click


@click.command("scan-calibrate")
@click.argument("cohort")
@click.option("--base", required=True, metavar="B", help="The cohort's base model (alias, folder, hub id).")
@click.option("--out", required=True, metavar="FILE", help="Write the profile set here (JSON).")
@click.option("--detectors", default="weights,behavioral,tokens", show_default=True, metavar="A,B")
@click.option("--probe-data", default="offline-pi-v1", show_default=True, metavar="FILE")
@click.option("--bootstrap", "n_boot", default=2000, show_default=True, help="Bootstrap resamples for the CIs.")
@click.option("--records", required=True, metavar="DIR",
              help="Keep each member's scan record here (a 'lorascan scan --out' batch folder; resumable).")
@click.option("--device", default="auto", show_default=True)
@click.option("--from-records", is_flag=True,
              help="Scan nothing: calibrate from the records already in --records (COHORT must be a labels "
                   "file; the adapters may be gone).")
def command(cohort: str, base: str, out: str, detectors: str, probe_data: str, n_boot: int, records: str,
            device: str, from_records: bool) -> None:
    """Run the scan's detectors on every adapter of COHORT (a labels file from 'lorascan sweep
    report', or a folder of adapters with lorascan.json labels) and calibrate one profile per
    detector: ROC AUC, FPR=0 threshold and the clean scores the scan's review/block bounds use."""
    from pathlib import Path

    from lorascan.detect.cohort import read_cohort
    from lorascan.scan.calibrate import profile_set
    from lorascan.scan.inputs import canonical_base
    from lorascan.scan.pipeline import ScanConfig

    names = tuple(d.strip() for d in detectors.split(",") if d.strip())
    if from_records:
        _from_records(cohort, canonical_base(base), out, names, records, n_boot)
        return
    members, _ = read_cohort(cohort)
    groups = _families(cohort, members)
    config = ScanConfig(detectors=names,
                        probe_data=probe_data, device=device, progress=False)

    def show(rec: dict) -> None:
        rows = rec.get("detectors") or []
        scores = "; ".join(f"{r['detector']}: " + ", ".join(f"{k} {v:.4g}" for k, v in list(r["scores"].items())[:3]
                                                             if isinstance(v, float)) for r in rows)
        name = Path(str((rec.get("adapter") or {}).get("spec", "?"))).parent.name
        click.echo(f"  {name[:70]}: {scores[:300] or rec.get('error')}")

    rec = profile_set(members, canonical_base(base), config, cohort_name=Path(cohort).stem,
                      records=records, n_boot=n_boot, on_record=show, groups=groups)
    _save(out, rec)


def _save(out: str, rec: dict) -> None:
    from lorascan.detect.profiles import save_set

    save_set(out, rec)
    for name, p in rec["profiles"].items():
        feats = ", ".join(f"{d} AUC {p['features'][d]['auc']:.3f}" for d in p["decision"])
        click.echo(f"{name}: {feats}")
    click.echo(f"wrote {out}")


def _from_records(cohort: str, base: str, out: str, detectors: tuple[str, ...], records: str, n_boot: int) -> None:
    from pathlib import Path

    from lorascan.scan.calibrate import profile_set_from_records
    from lorascan.scan.evaluate import read_labelled, read_records, without_reference_sources

    labelled = read_labelled(cohort)
    recs = read_records(labelled, records)
    labelled, dropped = without_reference_sources(labelled, recs)
    if dropped:
        click.echo(f"left out {len(dropped)} adapter(s) that built the token reference")
    groups = {m.name: m.family for m in labelled} if any(m.family for m in labelled if m.label == 1) else None
    rec = profile_set_from_records([m.member for m in labelled], recs, base, detectors,
                                   cohort_name=Path(cohort).stem, n_boot=n_boot, groups=groups)
    _save(out, rec)


def _families(cohort: str, members) -> dict | None:
    """Member name -> trigger family, when COHORT is a labels file that names families (then
    the weights profile learns its logistic regression grouped by them)."""
    from pathlib import Path

    from lorascan.errors import DataError
    from lorascan.scan.evaluate import read_labelled

    if not Path(cohort).is_file() or not cohort.endswith(".json"):
        return None
    try:
        labelled = read_labelled(cohort)
    except DataError:
        return None
    if not any(m.family for m in labelled if m.label == 1):
        return None
    return {m.name: m.family for m in labelled}
