"""Calibration profiles that ship with the package: one profile set per packaged base
(``minilm.json``, ...), each holding one :class:`~lorascan.detect.verdict.Profile` per detector
of ``lorascan scan``, built from a labelled cohort by ``lorascan scan-calibrate`` (the set
records which cohort). A base without a shipped set is uncalibrated: its verdict is never
``allow``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from lorascan.detect.jsonfile import MAX_PROFILE_BYTES, read_json_untrusted
from lorascan.detect.verdict import Profile
from lorascan.errors import DataError
from lorascan.records import SCHEMA_VERSION, record_header, write_json_atomic

KIND = "profile_set"
HERE = Path(__file__).parent


def shipped() -> dict[str, Path]:
    """``{base alias: profile-set file}`` of the sets in the package."""
    return {p.stem: p for p in sorted(HERE.glob("*.json"))}


def make_set(base: str, profiles: Mapping[str, Profile], cohort: Mapping[str, Any]) -> dict[str, Any]:
    return {**record_header(KIND), "base_model": base, "cohort": dict(cohort),
            "profiles": {name: p.to_record() for name, p in sorted(profiles.items())}}


def save_set(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    try:
        return write_json_atomic(path, dict(record))
    except OSError as err:
        raise DataError(f"cannot write profile set {path}: {err.strerror or err}") from None


def load_set(path: str | os.PathLike) -> tuple[str | None, dict[str, Profile], dict[str, Any]]:
    """(base, {detector: profile}, cohort description) of a profile-set file, validated."""
    rec = read_json_untrusted(path, "profile set", 4 * MAX_PROFILE_BYTES)
    if not isinstance(rec, dict) or rec.get("kind") != KIND or rec.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path}: not a lorascan profile set (kind '{KIND}', schema {SCHEMA_VERSION})")
    profiles = rec.get("profiles")
    if not isinstance(profiles, dict):
        raise DataError(f"{path}: 'profiles' must be an object")
    out = {str(k): Profile.from_record(v, f"{path}:{k}") for k, v in profiles.items()}
    cohort = rec.get("cohort") if isinstance(rec.get("cohort"), dict) else {}
    base = rec.get("base_model") if isinstance(rec.get("base_model"), str) else None
    return base, out, cohort


def profiles_for(base: str | None, path: str | None = None) -> tuple[dict[str, Profile], dict[str, Any]]:
    """The profiles a scan of an adapter on ``base`` is judged by: ``path`` when given, else the
    shipped set for the base, else none (uncalibrated)."""
    if path is None:
        found = shipped().get(base or "")
        if found is None:
            return {}, {"source": None, "note": f"no shipped profiles for base '{base}': uncalibrated, never allow"}
        path, source = str(found), "shipped"
    else:
        source = "--profiles"
    set_base, profiles, cohort = load_set(path)
    return profiles, {"source": source, "path": Path(path).name if source == "shipped" else str(path),
                      "base_model": set_base, "cohort": cohort}
