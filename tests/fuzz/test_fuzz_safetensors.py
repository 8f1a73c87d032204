"""Fuzzing the safetensors header parser (lorascan.safetensors_header): random bytes, valid
headers, and valid headers with one field broken. Every input is accepted with a layout that
tiles the data section exactly, or refused with a one-line DataError; nothing else escapes."""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from lorascan.errors import DataError
from lorascan.safetensors_header import DTYPE_BITS, MAX_DIMS, parse_header, validate_file
from tests.fuzz.conftest import count, fuzz_settings

DTYPES = sorted(DTYPE_BITS)
names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
shapes = st.lists(st.integers(0, 6), max_size=4)


def _assert_one_line(err: DataError) -> None:
    text = str(err)
    assert text and "\n" not in text and len(text) <= 1000


def _check(header: bytes, data_len: int) -> None:
    """The property: a DataError of one line, or tensors that tile [0, data_len) exactly."""
    try:
        tensors, metadata = parse_header(header, data_len, "f.safetensors")
    except DataError as err:
        _assert_one_line(err)
        return
    at = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        assert info.start == at and len(info.shape) <= MAX_DIMS
        assert info.numel * DTYPE_BITS[info.dtype] == 8 * info.nbytes
        at = info.end
    assert at == data_len and all(isinstance(v, str) for v in metadata.values())


@st.composite
def valid_headers(draw):
    """A valid header (tensors laid out back to back) and its data length."""
    entries, at = {}, 0
    for name in draw(st.lists(names, max_size=5, unique=True)):
        if name == "__metadata__":
            continue
        dtype = draw(st.sampled_from([d for d in DTYPES if DTYPE_BITS[d] % 8 == 0]))
        shape = draw(shapes)
        n = 1
        for d in shape:
            n *= d
        size = n * DTYPE_BITS[dtype] // 8
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + size]}
        at += size
    if draw(st.booleans()):
        entries["__metadata__"] = draw(st.dictionaries(names, st.text(max_size=8), max_size=3))
    return entries, at


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                           | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=12)


@st.composite
def broken_headers(draw):
    """A valid header with one field replaced by an arbitrary JSON value, or its data length
    moved, or its bytes cut or flipped."""
    entries, data_len = draw(valid_headers())
    how = draw(st.sampled_from(["field", "length", "cut", "flip", "entry"]))
    tensors = [k for k in entries if k != "__metadata__"]
    if how == "field" and tensors:
        name = draw(st.sampled_from(tensors))
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entries[name][key] = draw(json_values)
    elif how == "entry":
        entries[draw(names)] = draw(json_values)
    elif how == "length":
        data_len = max(0, data_len + draw(st.integers(-9, 9)))
    raw = json.dumps(entries).encode("utf-8")
    if how == "cut" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif how == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1:]
    return raw, data_len


@fuzz_settings(1500)
@given(st.binary(max_size=200), st.integers(0, 64))
def test_random_bytes(raw, data_len):
    count("safetensors")
    _check(raw, data_len)


@fuzz_settings(1000)
@given(valid_headers())
def test_valid_headers_are_accepted(case):
    count("safetensors")
    entries, data_len = case
    tensors, _ = parse_header(json.dumps(entries).encode("utf-8"), data_len, "f.safetensors")
    assert set(tensors) == set(entries) - {"__metadata__"}


@fuzz_settings(1500)
@given(broken_headers())
def test_broken_headers(case):
    count("safetensors")
    _check(*case)


@fuzz_settings(500)
@given(broken_headers(), st.integers(-20, 20), st.integers(0, 16))
def test_whole_files(tmp_path_factory, case, skew, tail):
    """The file reader: the length prefix skewed, data appended or missing."""
    count("safetensors")
    header, data_len = case
    path = tmp_path_factory.getbasetemp() / "fuzz.safetensors"
    path.write_bytes(struct.pack("<Q", max(0, len(header) + skew)) + header + b"\0" * max(0, data_len + tail - 8))
    try:
        validate_file(path)
    except DataError as err:
        _assert_one_line(err)
