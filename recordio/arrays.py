"""The public API: numpy and scipy arrays to and from RecordIO-protobuf."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import codec, parallel, reference, uniform
from .errors import RecordIOError
from .framing import DEFAULT_CHUNK_SIZE, Sink, iter_record_spans
from .sources import describe_source
from .table import StreamRules, combine, scan_fast

# Writers encode this many output bytes at a time, so memory stays bounded for any input size.
_WRITE_BLOCK_BYTES = 4 << 20


def _tables(source, fast: bool, chunk_size: int):
    name = describe_source(source)
    for span in iter_record_spans(source, chunk_size):
        table = scan_fast(span) if fast else None
        yield table if table is not None else reference.scan_reference(span, name)


def _check_feature_dim(feature_dim):
    if feature_dim is not None and (not isinstance(feature_dim, (int, np.integer)) or feature_dim < 0):
        raise ValueError(f"feature_dim must be a non-negative integer or None, got {feature_dim!r}")
    return None if feature_dim is None else int(feature_dim)


def read(source, feature_dim: int | None = None, *, fast: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Read every record of `source` (a path, a binary file object or pipe, or bytes).

    Returns (X, y): X a float32 ndarray when every record is dense, else a float32 CSR matrix;
    y a float32 1-D array, or None when no record has a label. The width comes from
    `feature_dim` when given (and every record must agree with it), else from the records'
    shapes or values, else from the largest key + 1. Raises RecordIOError naming the record.
    """
    rules = StreamRules(_check_feature_dim(feature_dim), describe_source(source))
    if fast:
        # Dense files from the SDK's or our writer: every record has one layout, checked and
        # copied in one pass. Anything it does not vouch for (None) takes the path below.
        result = uniform.read_uniform(source, rules.feature_dim)
        if result is not None:
            return result
    # Tables whose buffers stay valid are decoded only at the end, straight into one output
    # array; the others (chunks of a pipe or file object) become parts as they come.
    deferred: list = []
    parts: list = []
    for table in _tables(source, fast, chunk_size):
        is_sparse = rules.check(table)
        if table.error:
            raise table.error
        if not len(table):
            continue
        if table.stable and not parts:
            deferred.append((table, is_sparse))
            continue
        parts += [rules.rows(t, s, lo=0, hi=len(t)) for t, s in deferred]
        deferred = []
        parts.append(rules.rows(table, is_sparse, lo=0, hi=len(table)))
    if deferred and rules.all_dense:
        n = sum(len(t) for t, _ in deferred)
        X = np.empty((n, rules.output_width), np.float32)
        y = np.empty(n, np.float32) if rules.labelled else None
        row = 0
        for t, _ in deferred:
            rules.fill_dense_rows(t, X[row : row + len(t)], None if y is None else y[row : row + len(t)])
            row += len(t)
        return X, y
    parts += [rules.rows(t, s, lo=0, hi=len(t)) for t, s in deferred]
    if not parts:
        return np.empty((0, rules.output_width), np.float32), None
    return combine(parts, rules.output_width)


def iter_batches(
    source,
    batch_size: int,
    feature_dim: int | None = None,
    *,
    fast: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    float32_only: bool = False,
) -> Iterator[tuple]:
    """Like `read`, lazily: (X, y) batches of at most `batch_size` records, in order. Each batch
    is dense when its records are. Without `feature_dim`, a sparse batch is as wide as the widest
    record seen so far (records with a shape fix the width for the whole stream). With
    `float32_only`, a record whose features or label are not a Float32Tensor is an error."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    rules = StreamRules(_check_feature_dim(feature_dim), describe_source(source), float32_only=float32_only)
    pending: list = []
    pending_rows = 0
    for table in _tables(source, fast, chunk_size):
        is_sparse = rules.check(table)
        if table.error:
            raise table.error
        lo = 0
        while lo < len(table):
            hi = min(len(table), lo + batch_size - pending_rows)
            pending.append(rules.rows(table, is_sparse, lo=lo, hi=hi))
            pending_rows += hi - lo
            lo = hi
            if pending_rows == batch_size:
                yield combine(pending, rules.output_width)
                pending, pending_rows = [], 0
    if pending:
        yield combine(pending, rules.output_width)


def _label_columns(labels):
    """(kind, raw little-endian bytes of float labels, int32 labels) for the kernels, in the
    SDK's dtype mapping."""
    no_bytes, no_ints = np.zeros(0, np.uint8), np.zeros(0, np.int32)
    if labels is None:
        return codec.LABEL_NONE, no_bytes, no_ints
    field = reference.tensor_field(labels)
    if field == "int32_tensor":
        return codec.LABEL_I32, no_bytes, np.ascontiguousarray(labels, dtype=np.int32)
    dtype = np.dtype("<f4") if field == "float32_tensor" else np.dtype("<f8")
    kind = codec.LABEL_F32 if field == "float32_tensor" else codec.LABEL_F64
    return kind, np.ascontiguousarray(labels, dtype=dtype).view(np.uint8), no_ints


def _label_slices(kind: int, label_bytes: np.ndarray, i32: np.ndarray, *, first: int, last: int):
    """The label columns of rows first..last-1."""
    if kind == codec.LABEL_I32:
        return label_bytes, i32[first:last]
    width = 4 if kind == codec.LABEL_F32 else 8
    return (label_bytes[first * width : last * width] if kind != codec.LABEL_NONE else label_bytes), i32


def _value_tag(values: np.ndarray):
    """Value field tag and value size of the fast writers' dtypes, or None for the reference."""
    field = reference.tensor_field(values)
    if field == "float32_tensor":
        return 0x12, 4
    if field == "float64_tensor":
        return 0x1A, 8
    return None  # int32 features: varint-packed, left to the protobuf runtime


def write_dense(dest, X, labels=None) -> None:
    """Write one record per row of the 2-D array X (and its label), as the SageMaker SDK's
    `write_numpy_to_dense_tensor` does: float32 -> Float32Tensor, float64 -> Float64Tensor,
    integers -> Int32Tensor (RecordIOError when a value does not fit in int32)."""
    X, labels = reference.check_dense_args(X, labels)
    tag = _value_tag(X)
    kind, label_bytes, i32 = _label_columns(labels)
    if tag is None or X.dtype.byteorder == ">":
        reference.write_dense(dest, X, labels)
        return
    value_tag, value_size = tag
    rows = np.ascontiguousarray(X).view(np.uint8).reshape(X.shape[0], X.shape[1] * value_size)
    if X.shape[1] * value_size > (1 << 29) - 64:
        raise RecordIOError(f"a row of {X.shape[1]} values is too large for one RecordIO record")
    sizes = codec.dense_frame_sizes(X.shape[0], rows.shape[1], kind, i32)

    def encode(first: int, last: int, offsets: np.ndarray, out: np.ndarray) -> None:  # noqa: PLR0917 (_write_frames' callback)
        codec.encode_dense(
            rows[first:last],
            value_tag,
            kind,
            *_label_slices(kind, label_bytes, i32, first=first, last=last),
            offsets,
            out,
        )

    _write_frames(dest, sizes, encode)


def write_sparse(dest, X, labels=None) -> None:
    """Write one record per row of the scipy sparse matrix X, as the SageMaker SDK's
    `write_spmatrix_to_sparse_tensor` does: values, keys (column indices, uint64) and
    shape = [n_columns]; rows without non-zeros still get a record."""
    X, labels = reference.check_sparse_args(X, labels)
    tag = _value_tag(X.data)
    kind, label_bytes, i32 = _label_columns(labels)
    if tag is None or X.data.dtype.byteorder == ">":
        reference.write_sparse(dest, X, labels)
        return
    value_tag, value_size = tag
    indptr = X.indptr.astype(np.int64)
    indices = X.indices.astype(np.int64)
    data = np.ascontiguousarray(X.data).view(np.uint8)
    sizes = codec.sparse_frame_sizes(indptr, indices, value_size, X.shape[1], kind, i32)
    if sizes.size and sizes.max() > (1 << 29):
        raise RecordIOError("a row is too large for one RecordIO record (2**29 bytes at most)")

    def encode(first: int, last: int, offsets: np.ndarray, out: np.ndarray) -> None:  # noqa: PLR0917 (_write_frames' callback)
        codec.encode_sparse(
            indptr[first : last + 1],
            indices,
            data,
            value_size,
            value_tag,
            X.shape[1],
            kind,
            *_label_slices(kind, label_bytes, i32, first=first, last=last),
            offsets,
            out,
        )

    _write_frames(dest, sizes, encode)


def _write_frames(dest, sizes: np.ndarray, encode) -> None:
    """Encode rows into frames of the given sizes, block by block, and write them to `dest`.
    encode(first, last, offsets, out) writes the frames of rows first..last-1 at `offsets` in
    `out`. Each block's rows are split over threads, and the write of one block (the kernel
    copying into the page cache, GIL released) overlaps the encoding of the next: two buffers
    take turns, so memory stays at two blocks whatever the input size."""
    with Sink(dest) as sink:
        buffers = [np.empty(0, np.uint8), np.empty(0, np.uint8)]
        pending = None  # the write in flight, and which buffer it reads
        for turn, (lo, hi, offsets) in enumerate(_blocks(sizes)):
            size = int(offsets[-1] + sizes[hi - 1])
            which = turn % 2
            if pending is not None and pending[1] == which:
                pending[0].result()
                pending = None
            if buffers[which].shape[0] < size:
                buffers[which] = np.empty(size, np.uint8)
            out = buffers[which][:size]

            # over_rows returns once every range is done: the defaults only pin this turn's values.
            def encode_rows(
                a: int, b: int, *, lo: int = lo, offsets: np.ndarray = offsets, out: np.ndarray = out
            ) -> None:
                encode(lo + a, lo + b, offsets[a:b], out)

            parallel.over_rows(hi - lo, encode_rows)
            if pending is not None:
                pending[0].result()
            pending = (parallel.submit_io(sink.write, out), which)
        if pending is not None:
            pending[0].result()


def _blocks(sizes: np.ndarray):
    """(lo, hi, frame offsets within the block) for row ranges whose frames add up to about
    _WRITE_BLOCK_BYTES."""
    n = sizes.shape[0]
    if n == 0:
        return
    ends = np.cumsum(sizes)
    lo = 0
    while lo < n:
        before = int(ends[lo - 1]) if lo else 0
        hi = min(n, max(lo + 1, int(np.searchsorted(ends, before + _WRITE_BLOCK_BYTES, side="right"))))
        offsets = np.zeros(hi - lo, np.int64)
        np.cumsum(sizes[lo : hi - 1], out=offsets[1:])
        yield lo, hi, offsets
        lo = hi


__all__ = ["read", "iter_batches", "write_dense", "write_sparse"]
