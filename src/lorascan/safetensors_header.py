"""Validate the header of a ``.safetensors`` file without reading its tensors (stdlib only).

A ``.safetensors`` file is ``[u64 little-endian header length N][N bytes of JSON][data]``. The
header maps tensor names to ``{"dtype", "shape", "data_offsets": [start, end]}`` with offsets
relative to the data section, plus an optional ``__metadata__`` object of strings.

Checked before a tensor byte is touched (design.md, security principles): the length against
the file size, UTF-8 JSON without duplicate keys, known dtypes, non-negative integer shapes,
byte counts equal to element count x dtype width, offsets inside the data section, no overlaps,
no gaps and no trailing bytes (the format's own rule, which rules out polyglot files). Any
violation is a one-line :class:`~lorascan.errors.DataError`.

A low-level module: :mod:`lorascan.detect.safetensors_reader` (the weight scanner's reader)
and :mod:`lorascan.models.loading` (before peft opens an adapter) both use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lorascan.errors import DataError

# The safetensors library refuses headers above 100 MB; so do we.
# Pickle weight files: refused wherever lorascan meets them, never opened.
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "pytorch_model.bin")
MAX_HEADER_BYTES = 100_000_000
MAX_DIMS = 8
MAX_DIM_SIZE = 2**40  # far beyond any real tensor; keeps empty tensors with absurd shapes out

# Bit width of every dtype the format defines (safetensors 0.8). Known but not numerically
# supported dtypes are reported per tensor by the scanner; unknown ones make the file invalid.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
@dataclass(frozen=True)
class TensorInfo:
    """One header entry; ``start``/``end`` are byte offsets into the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:80]!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(name: str, raw: Any, where: str) -> TensorInfo:
    """Validate one header entry (everything except its position among the others)."""
    label = f"{where}: tensor {name[:120]!r}"
    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data_offsets"}:
        raise DataError(f"{label}: expected an object with dtype, shape and data_offsets")
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise DataError(f"{label}: unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_int(d) and d >= 0 for d in shape):
        raise DataError(f"{label}: shape must be a list of at most {MAX_DIMS} non-negative integers")
    if any(d > MAX_DIM_SIZE for d in shape):
        raise DataError(f"{label}: a dimension of shape {shape} exceeds {MAX_DIM_SIZE}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        raise DataError(f"{label}: data_offsets must be two non-negative integers")
    start, end = offsets
    if end < start:
        raise DataError(f"{label}: data_offsets end {end} is before start {start}")
    info = TensorInfo(name, dtype, tuple(shape), start, end)
    bits = info.numel * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != info.nbytes:
        raise DataError(f"{label}: shape {list(shape)} of {dtype} needs {bits / 8:g} bytes "
                        f"but its offsets span {info.nbytes}")
    return info


def _check_layout(tensors: list[TensorInfo], data_len: int, where: str) -> None:
    """Offsets inside the data section, no overlap, no gap, nothing after the last tensor."""
    prev: TensorInfo | None = None
    for info in sorted(tensors, key=lambda t: (t.start, t.end)):
        if info.end > data_len:
            raise DataError(f"{where}: tensor {info.name[:120]!r} spans bytes {info.start}-{info.end} but the "
                            f"data section has {data_len} bytes (truncated file or bad offsets)")
        if prev is not None and info.start < prev.end:
            raise DataError(f"{where}: tensors {prev.name[:80]!r} and {info.name[:80]!r} overlap "
                            f"(bytes {prev.start}-{prev.end} and {info.start}-{info.end})")
        prev_end = prev.end if prev else 0
        if info.start > prev_end:
            raise DataError(f"{where}: {info.start - prev_end} unreferenced bytes before tensor "
                            f"{info.name[:120]!r} (offset {prev_end}); not a valid safetensors file")
        prev = info
    end = prev.end if prev else 0
    if end != data_len:
        raise DataError(f"{where}: {data_len - end} trailing bytes after the last tensor; not a valid safetensors file")


def parse_header(header: bytes, data_len: int, where: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate a header (the JSON bytes) against the data section length."""
    try:
        text = header.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{where}: header is not valid JSON ({str(err)[:120]})") from None
    except RecursionError:
        raise DataError(f"{where}: header is not valid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: header must be a JSON object, got {type(obj).__name__}")
    metadata = obj.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise DataError(f"{where}: __metadata__ must be an object of strings")
    tensors = {name: _entry(name, raw, where) for name, raw in obj.items()}
    _check_layout(list(tensors.values()), data_len, where)
    return tensors, metadata


def read_header(fh: BinaryIO, size: int, where: str) -> tuple[int, str, dict[str, TensorInfo], dict[str, str]]:
    """Read and validate the header of an open file of ``size`` bytes (positioned at 0):
    (data offset, header SHA-256, tensors, metadata)."""
    (n,) = struct.unpack("<Q", fh.read(8))
    if n == 0 or n > MAX_HEADER_BYTES:
        raise DataError(f"{where}: header length {n} is outside 1..{MAX_HEADER_BYTES} bytes")
    if 8 + n > size:
        raise DataError(f"{where}: header length {n} goes beyond the file size ({size} bytes): "
                        "truncated or not a safetensors file")
    header = fh.read(n)
    if len(header) != n:
        raise DataError(f"{where}: truncated while reading the header")
    tensors, metadata = parse_header(header, size - 8 - n, where)
    return 8 + n, hashlib.sha256(header).hexdigest(), tensors, metadata


def open_checked(path: str | os.PathLike) -> tuple[BinaryIO, int]:
    """(open binary file, size) of a regular file at least 8 bytes long; DataErrors otherwise."""
    where = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except OSError as err:
        raise DataError(f"{where}: cannot read ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{where}: not a regular file")
    if st.st_size < 8:
        raise DataError(f"{where}: truncated: {st.st_size} bytes, shorter than the 8-byte header length")
    try:
        return open(path, "rb"), st.st_size  # noqa: SIM115 - the caller closes it
    except OSError as err:
        raise DataError(f"{where}: cannot read ({err.strerror})") from None


def validate_file(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Validate a whole safetensors file's header and layout (no tensor data is read); the
    tensors by name. Cheap: one stat and one read of the header."""
    fh, size = open_checked(path)
    with fh:
        try:
            return read_header(fh, size, str(Path(path)))[2]
        except OSError as err:
            raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
