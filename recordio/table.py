"""From decoded records to arrays: the rules both decoding paths share.

Decoding a chunk of records yields a `RecordTable`: per record, where its float32 values and its
varint-encoded keys sit in a byte buffer, its declared shape, its largest key and its label. The
numba fast path points into the RecordIO bytes themselves; the protobuf-runtime reference path
builds an equivalent buffer. Everything after that (what makes a record dense or sparse, which
widths agree, which keys are out of range, how rows become a matrix) is this one module, so the
two paths cannot drift apart.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import codec, parallel
from .errors import RecordIOError
from .framing import RecordSpan

# The widest feature vector we build: CSR column indices are int32, and a wider dense row would
# be an allocation no real data set pays for.
MAX_FEATURE_DIM = 2**31 - 1

_LITTLE_ENDIAN = sys.byteorder == "little"
# RecordTable.tensor_type's codes, by the protobuf message name.
TENSOR_TYPES = ("Float32Tensor", "Float64Tensor", "Int32Tensor")


@dataclass
class RecordTable:
    """Per-record facts for `n` consecutive records (see the module docstring)."""

    buf: np.ndarray  # uint8
    val_off: np.ndarray  # int64: byte offset of the packed float32 values
    n_vals: np.ndarray  # int64
    key_off: np.ndarray  # int64: byte offset of the packed varint keys
    n_keys: np.ndarray  # int64
    max_key: np.ndarray  # uint64 (0 without keys)
    keys_increasing: np.ndarray  # bool: each key larger than the one before (True without keys)
    shape_width: np.ndarray  # uint64: product of the shape's dimensions (saturating)
    has_shape: np.ndarray  # bool
    labels: np.ndarray  # float32
    has_label: np.ndarray  # bool
    offsets: np.ndarray  # int64: stream byte offset of each record
    first_index: int
    stable: bool = False  # buf outlives the next chunk (see RecordSpan.stable)
    # A record that could not be decoded at all ends the table; its error is raised once the
    # records before it have been checked, so the first problem in stream order is reported.
    error: RecordIOError | None = None
    # Which tensor types each record's features and label came in: the larger of their two
    # TENSOR_TYPES indices (0 only when both are Float32); None when every record is Float32
    # (the fast path reads nothing else).
    tensor_type: np.ndarray | None = None

    def __len__(self) -> int:
        return self.val_off.shape[0]

    def select(self, lo: int, hi: int) -> RecordTable:
        """Records lo..hi-1 (views, not copies)."""
        cut = {
            name: getattr(self, name)[lo:hi]
            for name in (
                "val_off",
                "n_vals",
                "key_off",
                "n_keys",
                "max_key",
                "keys_increasing",
                "shape_width",
                "has_shape",
                "labels",
                "has_label",
                "offsets",
            )
        }
        tensor_type = None if self.tensor_type is None else self.tensor_type[lo:hi]
        return RecordTable(
            buf=self.buf,
            first_index=self.first_index + lo,
            stable=self.stable,
            error=self.error,
            tensor_type=tensor_type,
            **cut,
        )

    @classmethod
    def empty_for(cls, n: int, buf: np.ndarray, *, offsets: np.ndarray, first_index: int) -> RecordTable:
        return cls(
            buf,
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
            np.zeros(n, np.uint64),
            np.ones(n, bool),
            np.zeros(n, np.uint64),
            np.zeros(n, bool),
            np.zeros(n, np.float32),
            np.zeros(n, bool),
            offsets,
            first_index,
        )


def scan_fast(span: RecordSpan) -> RecordTable | None:
    """The fast path's table for `span`, or None when some record needs the reference path."""
    if not _LITTLE_ENDIAN:
        return None
    n = len(span)
    t = RecordTable.empty_for(n, span.buf, offsets=span.offsets, first_index=span.first_index)
    t.stable = span.stable
    n_shape = np.zeros(n, np.int64)
    label_bits = t.labels.view(np.uint32)

    def scan(lo: int, hi: int) -> int:
        r = slice(lo, hi)
        return codec.scan_payloads(
            span.buf,
            span.starts[r],
            span.lengths[r],
            t.val_off[r],
            t.n_vals[r],
            t.key_off[r],
            t.n_keys[r],
            t.max_key[r],
            t.keys_increasing[r],
            n_shape[r],
            t.shape_width[r],
            label_bits[r],
            t.has_label[r],
        )

    if any(bad >= 0 for bad in parallel.over_rows(n, scan)):
        return None
    t.has_shape = n_shape == 1
    return t


class StreamRules:
    """Checks that every record of one stream can be a row of one matrix, and turns record
    ranges into arrays. Holds what earlier records established: the width and whether records
    carry labels."""

    def __init__(self, feature_dim: int | None, source: str | None, *, float32_only: bool = False):
        self.source = source
        # Refuse records whose features or label are Float64 or Int32 tensors (AWS's linear
        # learner and factorization machines read Float32 tensors only).
        self.float32_only = float32_only
        self.feature_dim = feature_dim
        # The width some record declared (dense values, or a sparse shape); feature_dim if given.
        self.width: int | None = feature_dim
        self.width_from: str = f"feature_dim={feature_dim}" if feature_dim is not None else ""
        # Largest key+1 among sparse records without a shape (used when nothing declared a width).
        self.key_width = 0
        self.labelled: bool | None = None
        self.all_dense = True

    def check(self, t: RecordTable) -> np.ndarray:
        """Validate a table against the stream so far; returns which records are sparse.
        Reports the first bad record in stream order, whatever the chunking."""
        n = len(t)
        if n == 0:
            return np.zeros(0, bool)
        is_sparse = (t.n_keys > 0) | ((t.n_vals == 0) & t.has_shape)

        # Widths: every record that declares one (dense values, sparse shape) must agree.
        declared = np.where(is_sparse, t.shape_width.astype(np.int64), t.n_vals)
        declares = ~is_sparse | t.has_shape
        width, width_from = self.width, self.width_from
        if width is None and declares.any():
            first = int(np.flatnonzero(declares)[0])
            width, width_from = int(declared[first]), f"record {t.first_index + first}"
        labelled = bool(t.has_label[0]) if self.labelled is None else self.labelled

        # (problem mask, message for record i), in the order they are reported for one record.
        problems = [
            (
                is_sparse & (t.n_keys > 0) & (t.n_keys != t.n_vals),
                lambda i: f"sparse tensor has {t.n_keys[i]} keys but {t.n_vals[i]} values",
            ),
            (
                _repeated_key_mask(t),
                lambda i: f"duplicate key {repeated_key(t, i)} in features; each feature index may appear once "
                "in a sparse record",
            ),
            (
                ~is_sparse & t.has_shape & (t.shape_width != t.n_vals.astype(np.uint64)),
                lambda i: f"dense tensor has {t.n_vals[i]} values but its shape says {t.shape_width[i]}",
            ),
            (
                t.has_shape & (t.shape_width > np.uint64(MAX_FEATURE_DIM)),
                lambda i: f"shape of {t.shape_width[i]} features exceeds the largest supported "
                f"feature dimension ({MAX_FEATURE_DIM})",
            ),
            (
                t.has_shape & (t.n_keys > 0) & (t.max_key >= t.shape_width),
                lambda i: f"key {t.max_key[i]} is outside the record's shape [{t.shape_width[i]}]",
            ),
            (
                ~t.has_shape & (t.max_key >= np.uint64(MAX_FEATURE_DIM)),
                lambda i: f"key {t.max_key[i]} exceeds the largest supported feature dimension ({MAX_FEATURE_DIM})",
            ),
        ]
        if width is not None:
            problems += [
                (
                    declares & (declared != width),
                    lambda i: (
                        f"has {t.n_vals[i]} dense values"
                        if not is_sparse[i]
                        else f"declares shape [{t.shape_width[i]}]"
                    )
                    + f", but the width is {width} (set by {width_from}); "
                    "all records of one input must have the same number of features",
                ),
                (
                    ~t.has_shape & (t.n_keys > 0) & (t.max_key >= np.uint64(width)),
                    lambda i: f"key {t.max_key[i]} is outside the width {width} (set by {width_from})",
                ),
            ]
        if self.float32_only and t.tensor_type is not None:
            tensor_type = t.tensor_type
            problems.append(
                (
                    tensor_type != 0,
                    lambda i: f"its features or label are {TENSOR_TYPES[tensor_type[i]]} values; this algorithm reads "
                    "Float32Tensor features and labels only: write the data from float32 arrays (the SageMaker SDK's "
                    "write_numpy_to_dense_tensor and write_spmatrix_to_sparse_tensor write Float32Tensor for "
                    "float32 input)",
                )
            )
        problems.append(
            (
                t.has_label != labelled,
                lambda i: "has no label but earlier records do"
                if labelled
                else "has a label but earlier records do not",
            )
        )
        bad = np.zeros(n, bool)
        for mask, _ in problems:
            bad |= mask
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            reason = next(message(i) for mask, message in problems if mask[i])
            raise RecordIOError(reason, t.first_index + i, byte_offset=int(t.offsets[i]), source=self.source)

        self.width, self.width_from, self.labelled = width, width_from, labelled
        keyed = ~t.has_shape & (t.n_keys > 0)
        if keyed.any():
            self.key_width = max(self.key_width, int(t.max_key[keyed].max()) + 1)
        if is_sparse.any():
            self.all_dense = False
        return is_sparse

    @property
    def output_width(self) -> int:
        return self.width if self.width is not None else self.key_width

    def fill_dense_rows(self, t: RecordTable, X: np.ndarray, y: np.ndarray | None) -> None:
        """Copy all records of a checked, all-dense table into preallocated X (and y)."""
        n, width = X.shape
        if n and width:
            out = X.reshape(-1).view(np.uint8).reshape(n, 4 * width)
            steps = np.diff(t.val_off)
            if n == 1 or (steps == steps[0]).all():
                # Records of one size (any writer's dense output): the values form a strided
                # view of the input, and numpy copies it at memory speed.
                stride = int(steps[0]) if n > 1 else 4 * width
                start = int(t.val_off[0])
                out[:] = np.lib.stride_tricks.as_strided(t.buf[start:], shape=(n, 4 * width), strides=(stride, 1))
            else:
                parallel.over_rows(
                    n, lambda lo, hi: codec.fill_dense(t.buf, t.val_off[lo:hi], width, out[lo:hi].reshape(-1))
                )
        if y is not None:
            y[:] = t.labels

    def rows(self, t: RecordTable, is_sparse: np.ndarray, *, lo: int, hi: int):
        """Records lo..hi-1 of a checked table as (X, y)."""
        y = t.labels[lo:hi].copy() if self.labelled else None
        n = hi - lo
        if not is_sparse[lo:hi].any():
            width = self.output_width
            X = np.empty((n, width), np.float32)
            if n and width:
                self.fill_dense_rows(t.select(lo, hi), X, None)
            return X, y
        counts = t.n_vals[lo:hi]
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        nnz = int(indptr[-1])
        indices = np.empty(nnz, np.int32)
        data = np.empty(nnz, np.float32)
        codec.fill_csr(
            t.buf, t.val_off[lo:hi], counts, t.key_off[lo:hi], is_sparse[lo:hi], indptr, indices, data.view(np.uint8)
        )
        X = sp.csr_matrix((data, indices, indptr), shape=(n, self.output_width))
        return X, y


def _repeated_key_mask(t: RecordTable) -> np.ndarray:
    """Marks the first record whose keys repeat one (`repeated_key` finds the key again, for
    the message); records after it need not be looked at, as only the first problem is
    reported. Only records whose keys do not increase (none, from any writer) are decoded."""
    mask = np.zeros(len(t), bool)
    unordered = ~t.keys_increasing
    if unordered.any():
        first, _ = codec.first_repeated_key(t.buf, t.key_off, np.where(unordered, t.n_keys, 0))
        if first >= 0:
            mask[first] = True
    return mask


def repeated_key(t: RecordTable, i: int) -> int:
    return int(codec.first_repeated_key(t.buf, t.key_off[i : i + 1], t.n_keys[i : i + 1])[1])


def combine(parts: list, width: int):
    """Stack (X, y) parts into one (X, y); X is dense only when every part is."""
    ys = [y for _, y in parts]
    y = None if ys[0] is None else (ys[0] if len(ys) == 1 else np.concatenate(ys))
    if all(isinstance(X, np.ndarray) for X, _ in parts):
        X = parts[0][0] if len(parts) == 1 else np.concatenate([X for X, _ in parts])
        return X, y
    csr = [as_csr_keep_all(X, width) for X, _ in parts]
    if len(csr) == 1:
        return csr[0], y
    indptr = [np.zeros(1, np.int64)]
    total = 0
    for m in csr:
        indptr.append(m.indptr[1:].astype(np.int64) + total)
        total += m.nnz
    X = sp.csr_matrix(
        (np.concatenate([m.data for m in csr]), np.concatenate([m.indices for m in csr]), np.concatenate(indptr)),
        shape=(sum(m.shape[0] for m in csr), width),
    )
    return X, y


def as_csr_keep_all(X, width: int) -> sp.csr_matrix:
    """X as CSR of the given width. Dense rows keep every value (zeros too), exactly as dense
    records inside a sparse read do, so the result does not depend on how records were chunked."""
    if sp.issparse(X):
        if X.shape[1] != width:
            X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], width))
        return X
    n, w = X.shape
    indptr = np.arange(0, (n + 1) * w, w, dtype=np.int64) if w else np.zeros(n + 1, np.int64)
    indices = np.tile(np.arange(w, dtype=np.int32), n)
    return sp.csr_matrix((X.reshape(-1), indices, indptr), shape=(n, width))
