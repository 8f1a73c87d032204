"""Sources that are not shipped with lorascan: local files and Hugging Face datasets.

Local CSV / JSONL / JSON / parquet files take ``text_col`` / ``label_col`` and a label map; a
folder with ``train.jsonl`` + ``test.jsonl`` (e.g. a ``lorascan poison`` output) keeps its
splits. ``hf:ID`` loads through :mod:`datasets` (the paper's ``deepset/prompt-injections``);
``ID`` may also be a local folder of parquet files, which is how the tests run that code path.
"""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lorascan.data.labels import map_labels
from lorascan.data.samples import Sample, normalise_text, read_jsonl
from lorascan.errors import DataError, LorascanError, UsageError
from lorascan.text import short_repr

FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
# Bounds on a local data file (issue 15). The paper's dataset has 662 rows and the largest
# corpus lorascan ships ~2,000; a LoRA run on a CPU reads a few thousand. A million rows or
# 256 MiB (~100x the largest public prompt-injection sets) is far past any training set this
# tool can use, and keeps the parsed rows (Python objects, ~10x the bytes) within a few GB.
MAX_FILE_BYTES = 256 << 20
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class SourceOptions:
    """How to read a user-supplied source."""

    text_col: str = "text"
    label_col: str = "label"
    label_map: tuple[tuple[str, int], ...] | None = None
    train_split: str = "train"
    test_split: str = "test"
    revision: str | None = None

    def mapping(self) -> dict[str, int] | None:
        return dict(self.label_map) if self.label_map is not None else None


def _rows_to_samples(rows: list[dict[str, Any]], opts: SourceOptions, source: str, where: str) -> list[Sample]:
    if not rows:
        raise DataError(f"{where} has no rows")
    missing = [c for c in (opts.text_col, opts.label_col) if c not in rows[0]]
    if missing:
        names = sorted(map(str, rows[0]))
        have = ", ".join(short_repr(n, 40)[1:-1] for n in names[:20]) + (" ..." if len(names) > 20 else "")
        raise DataError(f"{where} has no column {short_repr(missing[0], 40)} (columns: {have}); use --text-col/--label-col")
    labels = map_labels((r.get(opts.label_col) for r in rows), opts.mapping(), where)
    out = []
    for i, (row, label) in enumerate(zip(rows, labels)):
        raw = row.get(opts.text_col)
        if raw is not None and not isinstance(raw, str):  # checked, not coerced: str({...}) is no text
            raise DataError(f"{where}: row {i + 1}: column {short_repr(opts.text_col, 40)} is "
                            f"{type(raw).__name__} {short_repr(raw, 40)}, not a string")
        text = normalise_text(raw or "")
        if text:
            out.append(Sample(text=text, label=label, source=source, id=f"{source}:{i:05d}"))
    if not out:
        raise DataError(f"{where} has no non-empty texts in column {short_repr(opts.text_col, 40)}")
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise UsageError(f"{path}: unsupported file type (use one of {', '.join(FILE_SUFFIXES)})")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB; refusing to read it")
        rows = _parse_rows(path, suffix)
    except LorascanError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} cannot be parsed: {err}") from None
    except RecursionError:
        raise DataError(f"{path} cannot be parsed: nested too deeply") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    except Exception as err:  # pyarrow raises its own types for bad parquet; int() its ValueError
        raise DataError(f"{path} cannot be parsed: {type(err).__name__}: {str(err)[:200]}") from None
    if len(rows) > MAX_ROWS:
        raise DataError(f"{path} has more than {MAX_ROWS} rows")
    return rows


def _parse_rows(path: Path, suffix: str) -> list[Any]:
    """The rows of a file whose size is already checked (at most ``MAX_ROWS + 1`` kept)."""
    if suffix == ".csv":
        # utf-8-sig: spreadsheet exports start with a BOM that would glue onto the first column name
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return _first(csv.DictReader(fh))
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return _first(json.loads(line) for line in fh if line.strip())
    if suffix == ".json":
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects")
        return data
    import pyarrow.parquet as pq

    if pq.ParquetFile(path).metadata.num_rows > MAX_ROWS:
        raise DataError(f"{path} has more than {MAX_ROWS} rows")
    return pq.read_table(path).to_pylist()


def _first(rows: Iterator[Any]) -> list[Any]:
    """At most ``MAX_ROWS + 1`` rows (one more than allowed, so the caller can refuse)."""
    out = []
    for row in rows:
        out.append(row)
        if len(out) > MAX_ROWS:
            break
    return out


def load_file(path: Path, opts: SourceOptions) -> list[Sample]:
    """One local file, no predefined split."""
    rows = _read_rows(path)
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad + 1} is not an object with columns")
    return _rows_to_samples(rows, opts, source=path.stem, where=str(path))


def load_split_folder(path: Path) -> tuple[list[Sample], list[Sample]]:
    """A folder holding ``train.jsonl`` and ``test.jsonl`` in lorascan's row format."""
    return read_jsonl(path / "train.jsonl"), read_jsonl(path / "test.jsonl")


@contextlib.contextmanager
def _quiet_progress(datasets: Any) -> Iterator[None]:
    """No "Generating train split" bars on stderr while loading (a failing command must print
    one error line there). Restores the previous setting; an explicit
    ``HF_DATASETS_DISABLE_PROGRESS_BARS=0`` is respected."""
    bars = datasets.utils  # the switches (datasets.utils.tqdm is the class, not the module)
    if bars.are_progress_bars_disabled() or datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is False:
        yield
        return
    bars.disable_progress_bars()
    try:
        yield
    finally:
        bars.enable_progress_bars()


def load_hf(dataset_id: str, opts: SourceOptions) -> tuple[list[Sample], list[Sample]]:
    """A Hugging Face dataset (hub id or local folder) with train and test splits."""
    import datasets

    try:
        with _quiet_progress(datasets):
            ds = datasets.load_dataset(dataset_id, revision=opts.revision)
    except Exception as err:  # datasets raises many types (hub, network, file, builder errors)
        raise DataError(f"cannot load HF dataset '{dataset_id}': {type(err).__name__}: {str(err)[:200]}") from None
    out = []
    source = dataset_id.rstrip("/").split("/")[-1]
    for split in (opts.train_split, opts.test_split):
        if split not in ds:
            raise DataError(f"HF dataset '{dataset_id}' has no split '{split}' (splits: {', '.join(ds)})")
        rows = ds[split].to_list()
        samples = _rows_to_samples(rows, opts, source=source, where=f"{dataset_id}[{split}]")
        out.append([Sample(s.text, s.label, s.source, f"{source}:{split}:{s.id.split(':')[-1]}") for s in samples])
    return out[0], out[1]
