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
from functools import lru_cache
from itertools import chain

import numpy as np

from smalgo import recordio

from .media import CSV, JSON, JSONLINES, RECORDIO_PROTOBUF

# Outputs of at most this many numbers (a single record's) are formatted number by number.
_SMALL_OUTPUT = 64
# Answers of more rows are written this many rows at a time, then joined: the text forms hold
# a Python float and a str per number while they are formatted (~100 bytes each), which for the
# millions of rows of an asynchronous request (up to 1 GB) would take several times the memory
# of the answer itself.
ENCODE_ROWS = 1 << 16


def encode_response(
    outputs: dict[str, np.ndarray],
    media_type: str,
    *,
    json_key: str,
    batch_mode: bool,
    csv_vectors_quoted: bool = False,
) -> tuple[bytes, str]:
    """(body, Content-Type) for `outputs` in `media_type` (a canonical type from media.py);
    `json_key` is the algorithm's key of the list in an application/json answer;
    `csv_vectors_quoted`: a vector is one quoted CSV cell, "[0.1, 0.9]" (the algorithm's
    declaration, XGBoost's), else one cell per number."""
    # float32 is what every form carries (RecordIO has nothing else); a no-op for the algorithms.
    outputs = {
        name: array if array.dtype == np.float32 else array.astype(np.float32) for name, array in outputs.items()
    }
    if next(iter(outputs.values())).shape[0] > ENCODE_ROWS:
        return _encode_in_slices(
            outputs, media_type, json_key=json_key, batch_mode=batch_mode, csv_vectors_quoted=csv_vectors_quoted
        )
    if media_type == RECORDIO_PROTOBUF:
        return recordio.encode_response(outputs), RECORDIO_PROTOBUF
    if media_type == CSV:
        return _csv(outputs, quoted_vectors=csv_vectors_quoted), CSV
    rows = _json_rows(outputs)
    if media_type == JSONLINES or batch_mode:
        return ("\n".join(rows) + "\n").encode(), JSONLINES
    if media_type == JSON:
        return f'{{"{json_key}": [{", ".join(rows)}]}}'.encode(), JSON
    raise AssertionError(f"no encoder for {media_type}")  # media.py lets no other type through


def _encode_in_slices(outputs: dict[str, np.ndarray], media_type: str, **options) -> tuple[bytes, str]:
    """encode_response's bytes, written ENCODE_ROWS rows at a time: every form but JSON is the
    concatenation of its slices' answers; JSON's list is the concatenation of their lists."""
    n_rows = next(iter(outputs.values())).shape[0]
    pieces, content_type = [], media_type
    for start in range(0, n_rows, ENCODE_ROWS):
        piece, content_type = encode_response(
            {name: array[start : start + ENCODE_ROWS] for name, array in outputs.items()}, media_type, **options
        )
        pieces.append(piece)
    if content_type != JSON:
        return b"".join(pieces), content_type
    # Each piece is {"key": [rows]}: its rows, between the first '[' and the closing ']}'.
    opening = pieces[0].index(b"[") + 1
    parts: list = [pieces[0][:opening]]
    for piece in pieces:
        parts += [memoryview(piece)[opening:-2], b", "]
    parts[-1] = b"]}"
    return b"".join(parts), content_type


def _json_rows(outputs: dict[str, np.ndarray]) -> list[str]:
    """One JSON object per row, in the outputs' order, assembled from preformatted columns:
    json.dumps spends more on walking a list of dicts than on the numbers."""
    template = _row_template(tuple(outputs))
    columns = [_column_strings(array, ", ") for array in outputs.values()]
    return [template % values for values in zip(*columns, strict=True)]


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


def _csv(outputs: dict[str, np.ndarray], *, quoted_vectors: bool = False) -> bytes:
    columns = [
        [f'"{cell}"' for cell in _column_strings(array, ", ")]
        if quoted_vectors and array.ndim == 2
        else _column_strings(array, ",")
        for array in outputs.values()
    ]
    return "".join(",".join(values) + "\n" for values in zip(*columns, strict=True)).encode()
