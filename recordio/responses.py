"""Inference responses: one Record per input row, named outputs in the `label` map.

SageMaker's built-in algorithms answer `Accept: application/x-recordio-protobuf` with one Record
per input record whose `label` map holds each output as a Float32Tensor (`score`,
`predicted_label`, `closest_cluster`, `distance_to_cluster`, `projection`, ...) and whose
`features` map is empty (spec/sagemaker-contract.md section 3.4).
"""

from __future__ import annotations

import io

import numpy as np

from .errors import RecordIOError
from .framing import describe_source, frame, iter_record_spans
from .record_pb2 import Record
from .reference import parse_record


def encode_response(outputs: dict[str, np.ndarray]) -> bytes:
    """Encode named outputs (each with one entry per row: a scalar, or a vector when the array
    is 2-D) as RecordIO: one Record per row, each output a Float32Tensor in `label`."""
    if not outputs:
        raise ValueError("encode_response needs at least one named output")
    arrays = {name: np.asarray(a, dtype=np.float32) for name, a in outputs.items()}
    n_rows = {a.shape[0] for a in arrays.values()}
    if len(n_rows) != 1 or any(a.ndim not in (1, 2) for a in arrays.values()):
        shapes = {name: a.shape for name, a in arrays.items()}
        raise ValueError(f"outputs must be 1-D or 2-D with the same number of rows, got {shapes}")
    out = io.BytesIO()
    columns = {name: a.tolist() for name, a in arrays.items()}
    for i in range(n_rows.pop()):
        record = Record()
        for name, column in columns.items():
            value = column[i]
            record.label[name].float32_tensor.values.extend(value if isinstance(value, list) else [value])
        out.write(frame(record.SerializeToString()))
    return out.getvalue()


def decode_response(source, vector_keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Decode a RecordIO response into {name: array}: 1-D for outputs with one value per record,
    2-D for vectors (always 2-D for names in `vector_keys`, e.g. ("projection",))."""
    name = describe_source(source)
    columns: dict[str, list] = {}
    n = 0
    for span in iter_record_spans(source):
        for i in range(len(span)):
            index, offset = span.first_index + i, int(span.offsets[i])
            record = parse_record(span.payload(i), index, offset, name)
            keys = set(record.label)
            if n and keys != set(columns):
                raise RecordIOError(f"outputs {sorted(keys)} differ from earlier records' {sorted(columns)}",
                                    index, offset, name)
            for key in record.label:
                value = record.label[key]
                kind = value.WhichOneof("value")
                if kind not in ("float32_tensor", "float64_tensor", "int32_tensor"):
                    raise RecordIOError(f"output {key!r} holds no numeric tensor", index, offset, name)
                columns.setdefault(key, []).append(np.asarray(getattr(value, kind).values, np.float32))
            n += 1
    result = {}
    for key, rows in columns.items():
        widths = {r.shape[0] for r in rows}
        if len(widths) != 1:
            raise RecordIOError(f"output {key!r} has different lengths across records: {sorted(widths)}",
                                source=name)
        stacked = np.stack(rows)
        result[key] = stacked[:, 0] if widths == {1} and key not in vector_keys else stacked
    return result
