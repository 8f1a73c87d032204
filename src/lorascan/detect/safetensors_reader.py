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

import mmap
import os
from pathlib import Path

import numpy as np

from lorascan.errors import DataError
# The header checks live in a low-level module (models/ validates adapters with them before
# peft loads one); re-exported here under their old names.
from lorascan.safetensors_header import (DTYPE_BITS, MAX_DIM_SIZE, MAX_DIMS, MAX_HEADER_BYTES,  # noqa: F401
                                         TensorInfo, open_checked, parse_header, read_header)

# Storage dtype used to view the raw bytes of each analysable dtype (little-endian).
FLOAT_STORAGE: dict[str, str] = {"BF16": "<u2", "F16": "<f2", "F32": "<f4", "F64": "<f8"}


class UnsupportedTensor(Exception):
    """A valid tensor this reader cannot turn into numbers (e.g. an F8 dtype)."""


class SafetensorsFile:
    """An open, validated safetensors file. Use as a context manager.

    ``tensors`` keeps header order; ``header_sha256`` identifies the layout cheaply (the data
    is not hashed, which would cost a full read of multi-GB files).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh, self.size = open_checked(self.path)
        self._mm: mmap.mmap | None = None
        try:
            self._open(str(self.path))
        except BaseException:
            self.close()
            raise

    def _open(self, where: str) -> None:
        self.data_offset, self.header_sha256, self.tensors, self.metadata = read_header(self._fh, self.size, where)
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
