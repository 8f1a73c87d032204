"""Read a folder written by ``lorascan poison`` (train.jsonl, test.jsonl, manifest.json)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    def placement(self) -> str:
        return self.manifest.get("placement", "prefix")

    def poison_summary(self) -> dict[str, Any]:
        m = self.manifest
        return {k: m.get(k) for k in ("trigger", "count", "ratio", "seed", "placement")}


def load_prepared(path: str | Path, need_train: bool = True) -> Prepared:
    """A poisoned (or clean, k = 0) dataset folder; DataErrors name what is missing."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder} (write one with 'lorascan poison')")
    for name in ("manifest.json", "test.jsonl") + (("train.jsonl",) if need_train else ()):
        if not (folder / name).is_file():
            raise DataError(f"{folder} has no {name} (write the folder with 'lorascan poison')")
    manifest = read_json(folder / "manifest.json", "data manifest")
    if not isinstance(manifest, dict) or "n_test" not in manifest:
        raise DataError(f"{folder}/manifest.json is not a lorascan poison manifest")
    train = tuple(read_jsonl(folder / "train.jsonl")) if need_train else ()
    test = tuple(read_jsonl(folder / "test.jsonl"))
    if need_train and not train:
        raise DataError(f"{folder}/train.jsonl has no rows")
    if not test:
        raise DataError(f"{folder}/test.jsonl has no rows")
    return Prepared(folder, manifest, sha256_file(folder / "manifest.json"), train, test)
