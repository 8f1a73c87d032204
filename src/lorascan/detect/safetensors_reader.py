"""A validating, memory-mapped safetensors reader for untrusted adapter files (numpy only).

A ``.safetensors`` file is ``[u64 little-endian header length N][N bytes of JSON][data]``. The
header maps tensor names to ``{"dtype", "shape", "data_offsets": [start, end]}`` with offsets
relative to the data section, plus an optional ``__metadata__`` object of strings.

Everything is checked before a tensor byte is touched (design.md, security principles): the
length against the file size, UTF-8 JSON without duplicate keys, known dtypes, non-negative
integer shapes, byte counts equal to element count x dtype width, offsets inside the data
section, no overlaps, no gaps and no trailing bytes (the format's own rule, which rules out
polyglot files). Any violation is a one-line :class:`~lorascan.errors.DataError`.

The file is memory-mapped; :meth:`SafetensorsFile.read_float64` decodes one tensor (BF16, F16,
F32, F64; bfloat16 by a 16-bit shift, so numpy needs no extension dtype) and
:meth:`SafetensorsFile.release` drops its pages again, so resident memory stays bounded by the
tensors being worked on, not by the file. Nothing here imports torch or unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorascan.errors import DataError

# The safetensors library refuses headers above 100 MB; so do we.
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
# Storage dtype used to view the raw bytes of each analysable dtype (little-endian).
FLOAT_STORAGE: dict[str, str] = {"BF16": "<u2", "F16": "<f2", "F32": "<f4", "F64": "<f8"}


class UnsupportedTensor(Exception):
    """A valid tensor this reader cannot turn into numbers (e.g. an F8 dtype)."""


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
    if not isinstance(obj, dict):
        raise DataError(f"{where}: header must be a JSON object, got {type(obj).__name__}")
    metadata = obj.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise DataError(f"{where}: __metadata__ must be an object of strings")
    tensors = {name: _entry(name, raw, where) for name, raw in obj.items()}
    _check_layout(list(tensors.values()), data_len, where)
    return tensors, metadata


class SafetensorsFile:
    """An open, validated safetensors file. Use as a context manager.

    ``tensors`` keeps header order; ``header_sha256`` identifies the layout cheaply (the data
    is not hashed, which would cost a full read of multi-GB files).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        where = str(self.path)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise DataError(f"{where}: file not found") from None
        except OSError as err:
            raise DataError(f"{where}: cannot read ({err.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{where}: not a regular file")
        self.size = st.st_size
        if self.size < 8:
            raise DataError(f"{where}: truncated: {self.size} bytes, shorter than the 8-byte header length")
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self._mm: mmap.mmap | None = None
        try:
            self._open(where)
        except BaseException:
            self.close()
            raise

    def _open(self, where: str) -> None:
        (n,) = struct.unpack("<Q", self._fh.read(8))
        if n == 0 or n > MAX_HEADER_BYTES:
            raise DataError(f"{where}: header length {n} is outside 1..{MAX_HEADER_BYTES} bytes")
        if 8 + n > self.size:
            raise DataError(f"{where}: header length {n} goes beyond the file size ({self.size} bytes): "
                            "truncated or not a safetensors file")
        header = self._fh.read(n)
        if len(header) != n:
            raise DataError(f"{where}: truncated while reading the header")
        self.data_offset = 8 + n
        self.header_sha256 = hashlib.sha256(header).hexdigest()
        self.tensors, self.metadata = parse_header(header, self.size - self.data_offset, where)
        if self.size > self.data_offset:
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # an array still views the map; it is freed with that array
                pass
            self._mm = None
        self._fh.close()

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of a float tensor as a read-only numpy view in its storage dtype."""
        info = self.tensors[name]
        if info.dtype not in FLOAT_STORAGE:
            raise UnsupportedTensor(f"dtype {info.dtype} is not analysed (supported: BF16, F16, F32, F64)")
        if info.numel == 0:
            return np.zeros(info.shape, dtype=FLOAT_STORAGE[info.dtype])
        if self._mm is None:
            raise DataError(f"{self.path}: file is closed")
        arr = np.frombuffer(self._mm, dtype=FLOAT_STORAGE[info.dtype], count=info.numel,
                            offset=self.data_offset + info.start)
        return arr.reshape(info.shape)

    def read_float64(self, name: str) -> np.ndarray:
        """Decode a BF16/F16/F32/F64 tensor into a new float64 array of its shape."""
        raw = self.raw(name)
        if self.tensors[name].dtype == "BF16":  # bfloat16 = the high half of a float32
            return np.left_shift(raw, 16, dtype=np.uint32).view(np.float32).astype(np.float64)
        return raw.astype(np.float64)

    def release(self, name: str) -> None:
        """Tell the kernel the pages of ``name`` are no longer needed (bounded resident memory)."""
        info = self.tensors[name]
        if self._mm is None or info.nbytes == 0 or not hasattr(self._mm, "madvise"):
            return
        page = mmap.PAGESIZE
        lo = (self.data_offset + info.start) // page * page
        hi = min(-(-(self.data_offset + info.end) // page) * page, self.size)
        try:
            self._mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError, AttributeError):  # advisory only
            pass
