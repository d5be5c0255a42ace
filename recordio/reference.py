"""The protobuf-runtime path: slow, general, and the reference the fast path is tested against.

It parses each payload with the generated `aialgs.data.Record` class, so it takes every dtype
(Float32, Float64 and Int32 tensors), unknown fields, unpacked or split repeated fields and
multi-dimensional shapes, and it is what rejects payloads that are not Records. Its writers build
Record objects and serialise them, exactly as the SageMaker Python SDK does.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from google.protobuf.message import DecodeError

from .errors import RecordIOError
from .framing import RecordSpan, Sink, frame
from .record_pb2 import Record
from .table import TENSOR_TYPES, RecordTable

_TENSOR_KINDS = ("float32_tensor", "float64_tensor", "int32_tensor")


def parse_record(payload: bytes, index: int, offset: int, *, source: str | None) -> Record:
    record = Record()
    try:
        record.ParseFromString(payload)
    except DecodeError as e:
        raise RecordIOError(
            f"payload is not a valid aialgs.data.Record protobuf message ({e})",
            index,
            byte_offset=offset,
            source=source,
        ) from None
    return record


def _tensor(value, what: str, fail):
    kind = value.WhichOneof("value")
    if kind is None:
        fail(f"{what} holds no tensor")
    if kind == "bytes":
        fail(f"{what} holds Bytes, which cannot be read as numbers")
    return getattr(value, kind)


def _shape_width(shape) -> int:
    width = 1
    for dim in shape:
        width = min(width * int(dim), 2**64 - 1)
    return width


def scan_reference(span: RecordSpan, source: str | None) -> RecordTable:
    """The same RecordTable as the fast path, built with the protobuf runtime. A record that
    cannot be decoded ends the table and is kept as its `error`."""
    n = len(span)
    pieces: list[bytes] = []
    t = RecordTable.empty_for(n, np.empty(0, np.uint8), offsets=span.offsets, first_index=span.first_index)
    t.stable = True  # its buffer is built here, for this table alone
    t.tensor_type = np.zeros(n, np.int8)
    pos = 0
    for i in range(n):
        try:
            pos = _scan_one(span, i, t, pieces=pieces, pos=pos, source=source)
        except RecordIOError as e:
            t = t.select(0, i)
            t.error = e
            break
    t.buf = np.frombuffer(b"".join(pieces), np.uint8) if pieces else np.zeros(0, np.uint8)
    return t


def _scan_one(span: RecordSpan, i: int, t: RecordTable, *, pieces: list, pos: int, source: str | None) -> int:
    """Decode record i of the span into row i of the table; returns the new buffer length."""
    index, offset = span.first_index + i, int(span.offsets[i])

    def fail(reason: str) -> None:
        raise RecordIOError(reason, index, byte_offset=offset, source=source)

    record = parse_record(span.payload(i), index, offset, source=source)
    if "values" not in record.features:
        found = ", ".join(repr(k) for k in sorted(record.features)) or "none"
        fail(f"record has no 'values' feature (feature keys: {found})")
    tensor = _tensor(record.features["values"], "features['values']", fail)
    tensor_types = t.tensor_type
    assert tensor_types is not None  # scan_reference's tables have one
    tensor_types[i] = TENSOR_TYPES.index(tensor.DESCRIPTOR.name)
    values = _float32_bytes(tensor)
    keys = np.asarray(tensor.keys, dtype=np.uint64)
    t.val_off[i] = pos
    t.n_vals[i] = len(values) // 4
    t.key_off[i] = pos + len(values)
    t.n_keys[i] = keys.shape[0]
    t.max_key[i] = keys.max() if keys.shape[0] else 0
    t.keys_increasing[i] = bool((keys[1:] > keys[:-1]).all())
    t.has_shape[i] = len(tensor.shape) > 0
    t.shape_width[i] = _shape_width(tensor.shape) if t.has_shape[i] else 0
    encoded_keys = _varints(keys)
    pieces += (values, encoded_keys)
    if len(record.label):
        if "values" not in record.label:
            found = ", ".join(repr(k) for k in sorted(record.label))
            fail(f"record's label has no 'values' entry (label keys: {found})")
        label = _tensor(record.label["values"], "label['values']", fail)
        if len(label.values) != 1 or len(label.keys):
            fail(
                f"label must be a single value, found {len(label.values)} values"
                + (f" and {len(label.keys)} keys" if len(label.keys) else "")
            )
        t.labels[i : i + 1].view(np.uint8)[:] = np.frombuffer(_float32_bytes(label), np.uint8)
        tensor_types[i] = max(tensor_types[i], TENSOR_TYPES.index(label.DESCRIPTOR.name))
        t.has_label[i] = True
    return pos + len(values) + len(encoded_keys)


def _float32_bytes(tensor) -> bytes:
    """A tensor's values as little-endian float32 bytes. Float32 values are taken bit for bit
    from the runtime's own serialisation of the tensor: reading them through Python floats
    (doubles) would quiet signalling NaNs. Float64 and Int32 values convert as numpy does."""
    if tensor.DESCRIPTOR.name == "Float32Tensor":
        wire = tensor.SerializeToString()  # fields in number order: packed `values` (1) first
        if not wire or wire[0] != 0x0A:
            return b""
        length, shift, pos = 0, 0, 1
        while True:
            byte = wire[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        return wire[pos : pos + length]
    dtype = np.int64 if tensor.DESCRIPTOR.name == "Int32Tensor" else np.float64
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range becomes inf
        return np.asarray(tensor.values, dtype=dtype).astype("<f4").tobytes()


def _varints(keys: np.ndarray) -> bytes:
    out = bytearray()
    for key in keys.tolist():
        while key >= 0x80:
            out.append((key & 0x7F) | 0x80)
            key >>= 7
        out.append(key)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Writing, the SDK's way: one Record object per row.


def tensor_field(array: np.ndarray) -> str:
    """The Value field a numpy dtype maps to (the SageMaker SDK's mapping)."""
    if array.dtype == np.float32:
        return "float32_tensor"
    if array.dtype == np.float64:
        return "float64_tensor"
    if np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        if array.size:
            info = np.iinfo(np.int32)
            lo, hi = int(array.min()), int(array.max())
            if lo < info.min or hi > info.max:
                bad = lo if lo < info.min else hi
                raise RecordIOError(
                    f"integer value {bad} does not fit in int32 (Int32Tensor); "
                    "convert the array to float32 or float64 first"
                )
        return "int32_tensor"
    raise RecordIOError(f"unsupported dtype {array.dtype}: RecordIO-protobuf holds float32, float64 and int32 values")


def write_dense(dest, X, labels=None) -> None:
    X, labels = check_dense_args(X, labels)
    field = tensor_field(X)
    label_field = tensor_field(labels) if labels is not None else None
    with Sink(dest) as sink:
        for i in range(X.shape[0]):
            record = Record()
            getattr(record.features["values"], field).values.extend(X[i].tolist())
            if label_field:
                getattr(record.label["values"], label_field).values.append(labels[i].item())
            sink.write(frame(record.SerializeToString()))


def write_sparse(dest, X, labels=None) -> None:
    X, labels = check_sparse_args(X, labels)
    field = tensor_field(X.data)
    label_field = tensor_field(labels) if labels is not None else None
    with Sink(dest) as sink:
        for i in range(X.shape[0]):
            lo, hi = X.indptr[i], X.indptr[i + 1]
            record = Record()
            tensor = getattr(record.features["values"], field)
            tensor.values.extend(X.data[lo:hi].tolist())
            tensor.keys.extend(X.indices[lo:hi].astype(np.uint64).tolist())
            tensor.shape.append(X.shape[1])
            if label_field:
                getattr(record.label["values"], label_field).values.append(labels[i].item())
            sink.write(frame(record.SerializeToString()))


def encode_response(outputs: dict[str, np.ndarray]) -> bytes:
    """`smalgo.recordio.encode_response` the runtime's way, one Record object per row: the
    bytes the fast encoder must write (up to the order of the label map's entries)."""
    arrays = check_response_args(outputs)
    columns = {name: a.tolist() for name, a in arrays.items()}
    pieces = []
    for i in range(next(iter(arrays.values())).shape[0]):
        record = Record()
        for name, column in columns.items():
            value = column[i]
            record.label[name].float32_tensor.values.extend(value if isinstance(value, list) else [value])
        pieces.append(frame(record.SerializeToString()))
    return b"".join(pieces)


def read(source, feature_dim: int | None = None):
    """`smalgo.recordio.read` forced onto the protobuf-runtime path (for tests and benchmarks)."""
    from .arrays import read as _read

    return _read(source, feature_dim=feature_dim, fast=False)


def check_dense_args(X, labels):
    X = np.asarray(X)
    if X.ndim != 2:
        raise RecordIOError(f"write_dense needs a 2-D array, got shape {X.shape}")
    return X, _check_labels(labels, X.shape[0])


def check_sparse_args(X, labels):
    if not sp.issparse(X) or X.ndim != 2:
        raise RecordIOError(f"write_sparse needs a 2-D scipy sparse matrix, got {type(X).__name__}")
    X = sp.csr_matrix(X)
    X.sort_indices()
    return X, _check_labels(labels, X.shape[0])


def check_response_args(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An inference response's named outputs as float32 arrays, after checking that there is at
    least one and that all are 1-D or 2-D with the same number of rows (ValueError otherwise)."""
    if not outputs:
        raise ValueError("encode_response needs at least one named output")
    arrays = {name: np.asarray(a, dtype=np.float32) for name, a in outputs.items()}
    n_rows = {a.shape[0] for a in arrays.values()}
    if len(n_rows) != 1 or any(a.ndim not in (1, 2) for a in arrays.values()):
        shapes = {name: a.shape for name, a in arrays.items()}
        raise ValueError(f"outputs must be 1-D or 2-D with the same number of rows, got {shapes}")
    return arrays


def _check_labels(labels, n_rows: int):
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise RecordIOError(f"labels must be 1-D with one label per row ({n_rows}), got shape {labels.shape}")
    return labels
