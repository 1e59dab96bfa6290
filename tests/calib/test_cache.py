"""The TensorRT calibration cache format: encoding, parsing, validation, atomic bit-exact writes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.calib.cache import (
    CalibrationCache,
    decode_trt_version,
    encode_trt_version,
    hex_to_scale,
    parse_cache,
    read_cache,
    scale_to_hex,
    write_cache,
)


@pytest.mark.parametrize(
    ("version", "code"),
    [("10.16.1", "101601"), ("10.0.0", "100000"), ("11.4.0", "110400"), ("8.6.1", "8601"), ("8.5.3", "8503")],
)
def test_version_encoding_follows_nv_tensorrt_version(version, code):
    assert encode_trt_version(version) == code
    assert decode_trt_version(code) == version


def test_scale_hex_is_big_endian_float32_of_amax_over_127():
    # The documented example: 3c010a14 is 0.0078759, i.e. amax 1.0002.
    assert scale_to_hex(hex_to_scale("3c010a14")) == "3c010a14"
    assert hex_to_scale("3c010a14") == pytest.approx(0.0078759, rel=1e-4)
    assert hex_to_scale("3c010a14") * 127 == pytest.approx(1.0002, rel=1e-4)
    assert scale_to_hex(1.0) == struct.pack(">f", 1.0).hex() == "3f800000"


def test_from_amax_writes_header_and_entries():
    cache = CalibrationCache.from_amax({"input": 127.0, "conv:0": 2.54}, trt_version="10.16.1")
    text = cache.to_bytes().decode()
    lines = text.splitlines()
    assert lines[0] == "TRT-101601-EntropyCalibration2"
    assert lines[1] == "input: 3f800000"
    name, _, hexval = lines[2].rpartition(":")
    assert name == "conv" + ":0" and hex_to_scale(hexval.strip()) == np.float32(2.54 / 127)


def test_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    scales = rng.uniform(1e-6, 10, size=200).astype(np.float32)
    original = "TRT-8601-MinMaxCalibration\n" + "".join(
        f"t{i}/with:colon: {struct.pack('>f', s).hex()}\n" for i, s in enumerate(scales)
    )
    src = tmp_path / "in.cache"
    src.write_text(original)
    cache = read_cache(src)
    assert cache.trt_version == "8.6.1" and cache.algorithm == "MinMaxCalibration"
    assert len(cache.scales) == 200 and "t5/with:colon" in cache.scales
    out = tmp_path / "out.cache"
    write_cache(out, cache)
    assert out.read_bytes() == original.encode()
    # uppercase hex as some tools write it is preserved verbatim
    up = "TRT-101601-EntropyCalibration2\nx: 3C010A14\n"
    assert parse_cache(up).to_bytes().decode() == up


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", ":1:"),
        ("TRT-1016-Bogus\nx: 3c010a14\n", ":1:"),
        ("hello\n", ":1:"),
        ("TRT-101601-EntropyCalibration2\nx 3c010a14\n", ":2:"),
        ("TRT-101601-EntropyCalibration2\nx: 3c01\n", ":2:"),
        ("TRT-101601-EntropyCalibration2\nx: 3c010a14\ny: zzzzzzzz\n", ":3:"),
        ("TRT-101601-EntropyCalibration2\nx: 3c010a14\nx: 3c010a14\n", ":3:"),
    ],
)
def test_malformed_cache_names_file_and_line(tmp_path, text, where):
    p = tmp_path / "bad.cache"
    p.write_text(text)
    with pytest.raises(InputError) as err:
        read_cache(p)
    assert f"bad.cache{where}" in str(err.value)


def test_binary_garbage_and_missing_file(tmp_path):
    p = tmp_path / "garbage.cache"
    p.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InputError, match="garbage.cache"):
        read_cache(p)
    with pytest.raises(InputError, match="no such"):
        read_cache(tmp_path / "missing.cache")


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "c.cache"
    write_cache(p, CalibrationCache.from_amax({"a": 1.0}))
    before = p.read_bytes()

    class Boom(CalibrationCache):
        def to_bytes(self) -> bytes:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_cache(p, Boom())
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["c.cache"]  # no temp file left behind
