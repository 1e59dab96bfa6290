"""TensorRT's INT8 calibration cache: the text format, read, validated and written atomically.

Format (one tensor per line after the header)::

    TRT-101601-EntropyCalibration2
    input_tensor: 3c010a14
    conv1_out: 3d7ae148

- Header ``TRT-<ver>-<Algo>``. ``<ver>`` is ``NV_TENSORRT_VERSION``: for TensorRT >= 10 it is
  ``major*10000 + minor*100 + patch`` (10.16.1 -> ``101601``); for 8.x and 9.x it was
  ``major*1000 + minor*100 + patch`` (8.6.1 -> ``8601``). TensorRT ignores a cache whose header
  does not match its own version and algorithm, and recalibrates.
- Each entry is ``name: hhhhhhhh``: the 8 hex digits are the big-endian IEEE-754 bit pattern of
  the float32 **scale**, where ``scale = amax / 127`` (so ``3c010a14`` is 0.0078759, amax 1.0002).
  The name is split from the value at the *last* colon, so names may contain colons.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trtq._core.atomic import atomic_write_bytes
from trtq._core.errors import InputError

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
DEFAULT_TRT_VERSION = "10.16.1"
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{8}$")


def encode_trt_version(version: str) -> str:
    """``"10.16.1"`` -> ``"101601"``; ``"8.6.1"`` -> ``"8601"`` (the ``NV_TENSORRT_VERSION`` rule)."""
    parts = version.strip().split(".")
    try:
        nums = [int(p) for p in parts[:3]] + [0] * (3 - min(3, len(parts)))
    except ValueError as exc:
        raise InputError(f"TensorRT version '{version}' is not of the form MAJOR.MINOR[.PATCH]") from exc
    major, minor, patch = nums[:3]
    if major >= 10:
        return str(major * 10000 + minor * 100 + patch)
    return str(major * 1000 + minor * 100 + patch)


def decode_trt_version(code: str) -> str:
    """Inverse of :func:`encode_trt_version`: ``"101601"`` -> ``"10.16.1"``."""
    n = int(code)
    if n >= 100000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def scale_to_hex(scale: float) -> str:
    """Big-endian float32 bit pattern of ``scale`` as 8 lowercase hex digits."""
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    """Inverse of :func:`scale_to_hex` (exact: the value is a float32)."""
    return struct.unpack(">f", bytes.fromhex(text))[0]


@dataclass
class CalibrationCache:
    """A parsed cache. ``scales`` maps tensor name -> float32 scale (amax / 127), in file order."""

    trt_version: str = DEFAULT_TRT_VERSION
    algorithm: str = "EntropyCalibration2"
    scales: dict[str, float] = field(default_factory=dict)
    # The raw 8-hex strings as read, so that a read-write round trip is bit-exact.
    _hex: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_amax(
        cls,
        amax: Mapping[str, float],
        *,
        trt_version: str = DEFAULT_TRT_VERSION,
        algorithm: str = "EntropyCalibration2",
    ) -> CalibrationCache:
        """Build a cache from thresholds; ``scale = amax / 127`` rounded to float32."""
        if algorithm not in ALGORITHMS:
            raise InputError(f"unknown cache algorithm '{algorithm}'; choose one of {', '.join(ALGORITHMS)}")
        encode_trt_version(trt_version)
        scales = {name: hex_to_scale(scale_to_hex(float(a) / 127.0)) for name, a in amax.items()}
        return cls(trt_version=trt_version, algorithm=algorithm, scales=scales)

    def amax(self) -> dict[str, float]:
        """Per-tensor amax = scale * 127."""
        return {name: s * 127.0 for name, s in self.scales.items()}

    @property
    def header(self) -> str:
        return f"TRT-{encode_trt_version(self.trt_version)}-{self.algorithm}"

    def to_bytes(self) -> bytes:
        lines = [self.header]
        for name, scale in self.scales.items():
            lines.append(f"{name}: {self._hex.get(name) or scale_to_hex(scale)}")
        return ("\n".join(lines) + "\n").encode("utf-8")


def parse_cache(data: bytes | str, source: str = "<cache>") -> CalibrationCache:
    """Parse cache text; malformed input raises :class:`InputError` naming ``source`` and the line."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{source}: not a TensorRT calibration cache (not UTF-8 text)") from exc
    else:
        text = data
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError(f"{source}:1: empty file, expected a header like TRT-101601-EntropyCalibration2")
    m = _HEADER.match(lines[0].strip())
    if not m:
        raise InputError(
            f"{source}:1: bad header {lines[0].strip()[:60]!r}, expected TRT-<version>-<Algorithm>"
        )
    if m.group(2) not in ALGORITHMS:
        raise InputError(
            f"{source}:1: unknown algorithm {m.group(2)!r}; expected one of {', '.join(ALGORITHMS)}"
        )
    cache = CalibrationCache(trt_version=decode_trt_version(m.group(1)), algorithm=m.group(2))
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not name.strip():
            raise InputError(f"{source}:{lineno}: expected 'tensor_name: hhhhhhhh', got {line[:60]!r}")
        if not _HEX.match(value):
            raise InputError(
                f"{source}:{lineno}: scale {value[:20]!r} for {name.strip()!r} is not 8 hex digits"
            )
        name = name.strip()
        if name in cache.scales:
            raise InputError(f"{source}:{lineno}: tensor {name!r} appears twice")
        cache.scales[name] = hex_to_scale(value)
        cache._hex[name] = value
    return cache


def read_cache(path: str | os.PathLike) -> CalibrationCache:
    """Read and validate a cache file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such calibration cache")
    return parse_cache(p.read_bytes(), str(p))


def write_cache(path: str | os.PathLike, cache: CalibrationCache) -> None:
    """Write ``cache`` atomically (temporary file + rename)."""
    atomic_write_bytes(path, cache.to_bytes())
