"""Helpers for the RecordIO tests: hand-built frames and Records, independent of smalgo's writers."""

from __future__ import annotations

import struct

import numpy as np

from smalgo.recordio.record_pb2 import Record

MAGIC = struct.pack("<I", 0xCED7230A)


def frame(payload: bytes, cflag: int = 0) -> bytes:
    return MAGIC + struct.pack("<I", (cflag << 29) | len(payload)) + payload + b"\0" * (-len(payload) % 4)


def dmlc_frames(payload: bytes) -> bytes:
    """Frame a payload the way dmlc-core's writer does: split wherever the magic word sits at a
    4-aligned offset, drop it, and write the pieces with continuation flags 1, 2, ..., 3."""
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == MAGIC]
    if not cuts:
        return frame(payload)
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(payload[start:cut])
        start = cut + 4
    pieces.append(payload[start:])
    flags = [1] + [2] * (len(pieces) - 2) + [3]
    return b"".join(frame(p, f) for p, f in zip(pieces, flags, strict=True))


def record_bytes(
    values=None, keys=None, shape=None, label=None, dtype="float32", label_dtype="float32", uid=None
) -> bytes:
    """One serialized Record built with the protobuf runtime."""
    record = Record()
    field = {"float32": "float32_tensor", "float64": "float64_tensor", "int32": "int32_tensor"}
    tensor = getattr(record.features["values"], field[dtype])
    if values is not None:
        tensor.values.extend(values)
    if keys is not None:
        tensor.keys.extend(keys)
    if shape is not None:
        tensor.shape.extend(shape)
    if label is not None:
        getattr(record.label["values"], field[label_dtype]).values.append(label)
    if uid is not None:
        record.uid = uid
    return record.SerializeToString()


def magic_as_float32() -> np.float32:
    """The float32 whose little-endian bytes are the RecordIO magic word."""
    return np.frombuffer(MAGIC, dtype=np.float32)[0]


# ../shared/testdata beside the project root (CI has the same layout).
from pathlib import Path  # noqa: E402

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
