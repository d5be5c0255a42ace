"""A model's named outputs -> a response body in the type the client accepts.

Outputs are what `Model.predict` returns: {name: array}, one entry per input row, 1-D (a scalar
per row: closest_cluster, distance_to_cluster) or 2-D (a vector per row: projection). Forms, as
the SageMaker docs give them (spec sections 3.4, 4.2, 4.3):

    application/json         {"predictions": [{"closest_cluster": 1.0, "distance_to_cluster": 3.0}, ...]}
                             PCA: {"projections": [{"projection": [...]}, ...]}
    application/jsonlines    one {"closest_cluster": 1.0, "distance_to_cluster": 3.0} per line
    text/csv                 one line per record: its outputs in order, vectors flattened (1.0,3.0)
    x-recordio-protobuf      one Record per record, each output a Float32Tensor in its label map

Numbers are the float32 outputs written as the shortest decimal that reads back as the same
double (Python's repr), as the SageMaker docs' examples show them (23.40593910217285). Text
forms end in a newline, so that batch transform's AssembleWith=Line output stays one line per
record. In batch mode (SAGEMAKER_BATCH=true) JSON is written as JSON Lines for the same reason.
"""

from __future__ import annotations

import json
import math
import struct
from itertools import chain
from functools import lru_cache

import numpy as np

from smalgo.recordio import MAGIC

from .media import CSV, JSON, JSONLINES, RECORDIO_PROTOBUF

# RecordIO frame header: magic, then the payload length (cflag 0: a whole record).
HEADER_SIZE = 8

# Outputs of at most this many numbers (a single record's) are formatted number by number.
_SMALL_OUTPUT = 64

def encode_response(outputs: dict[str, np.ndarray], media_type: str, *, json_key: str,
                    batch_mode: bool) -> tuple[bytes, str]:
    """(body, Content-Type) for `outputs` in `media_type` (a canonical type from media.py);
    `json_key` is the algorithm's key of the list in an application/json answer."""
    # float32 is what every form carries (RecordIO has nothing else); a no-op for the algorithms.
    outputs = {name: array if array.dtype == np.float32 else array.astype(np.float32)
               for name, array in outputs.items()}
    if media_type == RECORDIO_PROTOBUF:
        return encode_recordio(outputs), RECORDIO_PROTOBUF
    if media_type == CSV:
        return _csv(outputs), CSV
    rows = _json_rows(outputs)
    if media_type == JSONLINES or batch_mode:
        return ("\n".join(rows) + "\n").encode(), JSONLINES
    if media_type == JSON:
        return f'{{"{json_key}": [{", ".join(rows)}]}}'.encode(), JSON
    raise AssertionError(f"no encoder for {media_type}")  # media.py lets no other type through


def _json_rows(outputs: dict[str, np.ndarray]) -> list[str]:
    """One JSON object per row, in the outputs' order, assembled from preformatted columns:
    json.dumps spends more on walking a list of dicts than on the numbers."""
    template = _row_template(tuple(outputs))
    columns = [_column_strings(array, ", ") for array in outputs.values()]
    return [template % values for values in zip(*columns)]


@lru_cache(maxsize=64)
def _row_template(names: tuple[str, ...]) -> str:
    return "{" + ", ".join(f"{json.dumps(name)}: %s" for name in names) + "}"


def _column_strings(array: np.ndarray, separator: str) -> list[str]:
    """Each row's value as JSON text: a number, or for a vector its numbers joined by
    `separator` (in brackets when the separator is JSON's). Numbers are written as json.dumps
    writes them, NaN and infinities included (Python's json, and so the SageMaker SDK, reads
    those back)."""
    values = array.tolist()
    if array.size <= _SMALL_OUTPUT and all(map(math.isfinite, values if array.ndim == 1 else chain(*values))):
        # A single record's few numbers: repr directly, without json.dumps's call overhead.
        if array.ndim == 1:
            return list(map(float.__repr__, values))
        rows = [separator.join(map(float.__repr__, row)) for row in values]
    else:
        # One json.dumps call formats a whole column at C speed.
        if array.ndim == 1:
            return json.dumps(values)[1:-1].split(", ")
        rows = json.dumps(values, separators=(",", ":"))[2:-2].split("],[")  # [[1.0,2.0],[3.0,4.0]]
        if separator != ",":
            rows = [row.replace(",", separator) for row in rows]
    return rows if separator == "," else ["[" + row + "]" for row in rows]


def _csv(outputs: dict[str, np.ndarray]) -> bytes:
    columns = [_column_strings(array, ",") for array in outputs.values()]
    return "".join(",".join(values) + "\n" for values in zip(*columns)).encode()


def encode_recordio(outputs: dict[str, np.ndarray]) -> bytes:
    """One RecordIO-framed aialgs.data.Record per row, each output a Float32Tensor under its
    name in the label map; the bytes smalgo.recordio.encode_response writes, built with array
    operations instead of one protobuf message per row (100x faster for a batch).

    Every output has the same width in every row, so every record has the same layout and
    only the float bytes differ: one row template, repeated, with the columns copied in."""
    n_rows = next(iter(outputs.values())).shape[0]
    pieces = []  # (bytes before the values, the values as little-endian float32 rows)
    for name, array in outputs.items():
        values = np.ascontiguousarray(array.reshape(n_rows, -1), dtype="<f4")
        tensor_size = 4 * values.shape[1]
        tensor = b"\x0a" + _varint(tensor_size)  # Float32Tensor.values (1), packed
        value = b"\x12" + _varint(len(tensor) + tensor_size) + tensor  # Value.float32_tensor (2)
        key = name.encode()
        entry_body = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value) + tensor_size) + value
        entry = b"\x12" + _varint(len(entry_body) + tensor_size) + entry_body  # Record.label (2) map entry
        pieces.append((entry, values.view(np.uint8)))
    payload_size = sum(len(prefix) + values.shape[1] for prefix, values in pieces)
    frame = np.zeros((n_rows, HEADER_SIZE + (payload_size + 3) // 4 * 4), dtype=np.uint8)
    frame[:, :HEADER_SIZE] = np.frombuffer(struct.pack("<II", MAGIC, payload_size), dtype=np.uint8)
    offset = HEADER_SIZE
    for prefix, values in pieces:
        frame[:, offset:offset + len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        offset += len(prefix)
        frame[:, offset:offset + values.shape[1]] = values
        offset += values.shape[1]
    return frame.tobytes()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
