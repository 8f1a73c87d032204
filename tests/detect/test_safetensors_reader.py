"""The validating safetensors reader: exact decoding, and every malformed header refused with
a one-line DataError before any tensor byte is read."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lorascan.detect.safetensors_reader import SafetensorsFile, UnsupportedTensor, parse_header
from lorascan.detect.synthetic import from_storage, to_storage, write_safetensors
from lorascan.errors import DataError
from tests.detect.adapters import raw_file


def _f32_header(**entries):
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": offs} for name, (shape, offs) in entries.items()}


@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16"])
def test_decodes_every_float_dtype_exactly(tmp_path, dtype):
    rng = np.random.default_rng(1)
    values = rng.standard_normal((5, 7)).astype(np.float32)
    stored = to_storage(values, dtype)
    path = write_safetensors(tmp_path / "x.safetensors", [("w", dtype, (5, 7), lambda: stored)])
    with SafetensorsFile(path) as st:
        got = st.read_float64("w")
        assert got.dtype == np.float64 and got.shape == (5, 7)
        np.testing.assert_array_equal(got, from_storage(stored, dtype))
        st.release("w")
        np.testing.assert_array_equal(st.read_float64("w"), got)  # pages come back after release
    tol = {"F64": 0, "F32": 0, "F16": 1e-3, "BF16": 8e-3}[dtype]
    np.testing.assert_allclose(got, values, rtol=tol, atol=1e-6 if tol else 0)


def test_bfloat16_bit_patterns(tmp_path):
    bits = np.array([0x3F80, 0xC000, 0x0000, 0x3E80, 0x7F7F], dtype="<u2")  # 1, -2, 0, .25, max
    path = write_safetensors(tmp_path / "b.safetensors", [("w", "BF16", (5,), lambda: bits)])
    with SafetensorsFile(path) as st:
        got = st.read_float64("w")
    assert got[:4].tolist() == [1.0, -2.0, 0.0, 0.25]
    assert got[4] == pytest.approx(3.3895e38, rel=1e-4)
    assert to_storage(np.array([1.0, -2.0, 1.00390625], np.float32), "BF16").tolist() == [0x3F80, 0xC000, 0x3F80]


def test_written_files_are_valid_for_the_reference_library(tmp_path):
    from safetensors.numpy import load_file

    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_safetensors(tmp_path / "r.safetensors", [("a", "F32", (3, 4), lambda: arr),
                                                          ("b", "F16", (2,), lambda: np.ones(2, "<f2"))],
                             metadata={"format": "pt"})
    loaded = load_file(str(path))
    np.testing.assert_array_equal(loaded["a"], arr)
    with SafetensorsFile(path) as st:
        assert st.metadata == {"format": "pt"}
        assert list(st.tensors) == ["a", "b"] and st.tensors["a"].shape == (3, 4)
        assert len(st.header_sha256) == 64


def test_known_but_unsupported_dtype_is_reported_not_decoded(tmp_path):
    path = write_safetensors(tmp_path / "i.safetensors", [("w", "I32", (2,), lambda: np.ones(2, "<i4"))])
    with SafetensorsFile(path) as st, pytest.raises(UnsupportedTensor, match="I32"):
        st.read_float64("w")


def test_empty_tensor_and_empty_file_are_valid(tmp_path):
    path = raw_file(tmp_path / "e.safetensors", {"w": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}})
    with SafetensorsFile(path) as st:
        assert st.read_float64("w").shape == (0, 3)


def _bad(tmp_path, header, data=b"", length=None):
    return raw_file(tmp_path / "bad.safetensors", header, data, length)


BAD = {
    "header length beyond the file size": (lambda p: _bad(p, {}, length=10_000), "beyond the file size"),
    "shorter than 8 bytes": (lambda p: (p / "bad.safetensors").write_bytes(b"\x01\x00") and p / "bad.safetensors",
                             "shorter than the 8-byte"),
    "zero header length": (lambda p: _bad(p, b"", length=0), "header length 0"),
    "huge header length": (lambda p: _bad(p, b"{}", length=2**40), "outside"),
    "invalid JSON": (lambda p: _bad(p, b"{not json"), "not valid JSON"),
    "not UTF-8": (lambda p: _bad(p, b'{"\xff": 1}'), "not valid JSON"),
    "NaN constant": (lambda p: _bad(p, b'{"__metadata__": {"x": NaN}}'), "not valid JSON"),
    "duplicate key": (lambda p: _bad(p, b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                                        b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4),
                      "duplicate key"),
    "JSON array": (lambda p: _bad(p, b"[1, 2]"), "must be a JSON object"),
    "unknown dtype": (lambda p: _bad(p, {"w": {"dtype": "F12", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
                      "unknown dtype 'F12'"),
    "negative dim": (lambda p: _bad(p, _f32_header(w=([-1], [0, 4])), b"\0" * 4), "non-negative integers"),
    "absurd dim": (lambda p: _bad(p, _f32_header(w=([2**62, 0], [0, 0]))), "exceeds"),
    "bool dim": (lambda p: _bad(p, _f32_header(w=([True], [0, 4])), b"\0" * 4), "non-negative integers"),
    "extra entry key": (lambda p: _bad(p, {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}},
                                       b"\0" * 4), "expected an object"),
    "element count vs bytes": (lambda p: _bad(p, _f32_header(w=([3], [0, 8])), b"\0" * 8), "needs 12 bytes"),
    "offsets reversed": (lambda p: _bad(p, _f32_header(w=([0], [8, 4])), b"\0" * 8), "before start"),
    "offsets out of range": (lambda p: _bad(p, _f32_header(w=([4], [0, 16])), b"\0" * 8), "truncated file or bad offsets"),
    "overlapping tensors": (lambda p: _bad(p, _f32_header(a=([2], [0, 8]), b=([2], [4, 12])), b"\0" * 12), "overlap"),
    "gap between tensors": (lambda p: _bad(p, _f32_header(a=([1], [0, 4]), b=([1], [8, 12])), b"\0" * 12),
                            "unreferenced bytes"),
    "trailing bytes": (lambda p: _bad(p, _f32_header(a=([1], [0, 4])), b"\0" * 9), "trailing bytes"),
    "metadata not strings": (lambda p: _bad(p, {"__metadata__": {"a": 1}}), "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_files_fail_with_one_line(tmp_path, case):
    make, fragment = BAD[case]
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        SafetensorsFile(path)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_truncated_copy_of_a_real_file(tmp_path):
    arr = np.ones((64, 64), np.float32)
    good = write_safetensors(tmp_path / "g.safetensors", [("w", "F32", (64, 64), lambda: arr)])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated"):
        SafetensorsFile(cut)


def test_not_a_regular_file(tmp_path):
    with pytest.raises(DataError, match="not a regular file"):
        SafetensorsFile(tmp_path)
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        SafetensorsFile(fifo)  # would block forever if it were opened
    with pytest.raises(DataError, match="not found"):
        SafetensorsFile(tmp_path / "missing.safetensors")


def test_parse_header_reports_the_offending_tensor_name_escaped_to_one_line():
    header = json.dumps({"evil\nname": {"dtype": "X", "shape": [1], "data_offsets": [0, 4]}}).encode()
    with pytest.raises(DataError) as info:
        parse_header(header, 4, "f")
    assert "\n" not in str(info.value) and "evil\\nname" in str(info.value)
