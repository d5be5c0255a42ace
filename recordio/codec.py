"""Numba kernels for the protobuf wire format of `aialgs.data.Record`.

Reading: `scan_payloads` walks each payload and, for the common shape (features["values"] a
Float32Tensor, dense or sparse, with an optional scalar Float32 label under label["values"]),
records where the packed values and keys sit. Anything else (other dtypes, unknown fields,
repeated or unpacked fields, multi-dimensional shapes, malformed bytes) is marked for the
protobuf-runtime reference path, which decides: the fast path only ever answers what the
reference would answer. `fill_dense` and `fill_csr` then copy values bit for bit.

Writing: `encode_dense` and `encode_sparse` emit exactly the bytes that the protobuf runtime
serialises for the same Record, inside cflag-0 RecordIO frames.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np
from numba.core.errors import NumbaPerformanceWarning

# The writers' size kernels (dense_frame_sizes, sparse_frame_sizes) are compiled with
# parallel=True although their loops are plain `range` loops: numba's extra passes under that
# flag can make such code faster (in the former parallel=True build of scan_payloads they removed
# the reference counting of the arrays its inlined helpers were given). Without a prange loop
# numba launches no threads, so the kernels stay safe to call from several threads at once; rows
# are split over threads by `parallel.over_rows`. (The reading kernel is built another way: see
# READER below.)
OPTIMISED = dict(cache=True, nogil=True, parallel=True)
# Only kernels without slice assignments or array constructors get the flag: under it those
# become threaded parfors of their own, and the byte-copying kernels are fastest as plain njit.
warnings.filterwarnings(
    "ignore", message=r"(?s).*no transformation for parallel execution was possible", category=NumbaPerformanceWarning
)

# The reading kernel and its wire-format helpers. Each helper is compiled once, on its own, and
# LLVM inlines it into its callers (forceinline): numba's own inlining (inline="always") copied
# the nested helpers into scan_payloads about twenty times over, at the IR level, and compiling
# scan_payloads took 20-50 s on 2 cores (a job's first read of RecordIO), against about 2 s now.
# They run without numba's reference counting (_nrt=False: they allocate nothing, and the caller
# holds every array they touch): with it, each helper call increfs and decrefs the arrays it is
# given, atomic operations LLVM cannot remove, and the scan ran 4x slower; the same code without
# them runs as fast as the old parallel=True build did (about 2 ms per 65,536 dense records).
READER = dict(cache=True, nogil=True, _nrt=False)
READER_HELPER = dict(READER, forceinline=True)

# Label dtype codes shared with the writers.
LABEL_NONE, LABEL_F32, LABEL_F64, LABEL_I32 = 0, 1, 2, 3


@numba.njit(**READER_HELPER)
def _varint(buf, pos, end):
    """(value, next position); next position is -1 for a truncated or over-long varint."""
    result = np.uint64(0)
    shift = np.uint64(0)
    while pos < end:
        b = np.uint64(buf[pos])
        pos += 1
        if shift == np.uint64(63) and b > np.uint64(1):
            return np.uint64(0), -1
        result |= (b & np.uint64(0x7F)) << shift
        if b < np.uint64(0x80):
            return result, pos
        shift += np.uint64(7)
        if shift > np.uint64(63):
            return np.uint64(0), -1
    return np.uint64(0), -1


@numba.njit(**READER_HELPER)
def _field(buf, pos, end):
    """(field number, start, stop, next position) of a length-delimited field at pos; next
    position is -1 when the field is not length-delimited or does not fit."""
    tag, pos = _varint(buf, pos, end)
    if pos < 0 or (tag & np.uint64(7)) != np.uint64(2):
        return 0, 0, 0, -1
    length, pos = _varint(buf, pos, end)
    if pos < 0 or length > np.uint64(end - pos):
        return 0, 0, 0, -1
    stop = pos + np.int64(length)
    return np.int64(tag >> np.uint64(3)), pos, stop, stop


@numba.njit(cache=True, nogil=True, inline="always")
def _copy(dst, dst_pos, src, src_pos, n):
    """dst[dst_pos:dst_pos + n] = src[src_pos:src_pos + n], as a loop: a slice assignment also
    compiles numba's shape-mismatch error message (about 2 s on first use, for an error these
    callers cannot hit), and copied slower. Indices are unsigned so numba emits no negative-index
    wraparound (as in uniform.py's copy loop)."""
    d = np.uint64(dst_pos)
    s = np.uint64(src_pos)
    for j in range(np.uint64(n)):
        dst[d + j] = src[s + j]


@numba.njit(**READER_HELPER)
def _tensor(buf, pos, end):
    """Parse a Float32Tensor body. Returns (ok, values offset, values bytes, keys offset,
    key count, largest key, whether the keys strictly increase, shape dimension count, first
    shape dimension); ok is False when the
    reference path must decide. Kept in registers (a tuple, not an array): this is the hot loop."""
    val_off = 0
    val_bytes = 0
    key_off = 0
    n_keys = 0
    max_key = np.uint64(0)
    keys_increasing = True
    n_shape = 0
    shape0 = np.uint64(0)
    seen = 0
    while pos < end:
        number, start, stop, pos = _field(buf, pos, end)
        if pos < 0 or number < 1 or number > 3 or (seen >> number) & 1:
            return False, val_off, val_bytes, key_off, n_keys, max_key, keys_increasing, n_shape, shape0
        seen |= 1 << number
        if number == 1:
            if (stop - start) & 3:
                return False, val_off, val_bytes, key_off, n_keys, max_key, keys_increasing, n_shape, shape0
            val_off = start
            val_bytes = stop - start
        else:
            count = 0
            largest = np.uint64(0)
            first = np.uint64(0)
            previous = np.uint64(0)
            increasing = True
            p = start
            while p < stop:
                value, p = _varint(buf, p, stop)
                if p < 0:
                    return False, val_off, val_bytes, key_off, n_keys, max_key, keys_increasing, n_shape, shape0
                if count == 0:
                    first = value
                elif value <= previous:
                    increasing = False
                previous = value
                if value > largest:
                    largest = value
                count += 1
            if number == 2:
                key_off = start
                n_keys = count
                max_key = largest
                keys_increasing = increasing
            else:
                n_shape = count
                shape0 = first
    return True, val_off, val_bytes, key_off, n_keys, max_key, keys_increasing, n_shape, shape0


@numba.njit(**READER_HELPER)
def _values_entry(buf, pos, end):
    """Parse a map entry laid out as every serializer writes it: key "values", then a Value
    holding exactly one Float32Tensor. Returns _tensor's tuple; any other layout is not ok and
    is left to the reference path."""
    number, start, stop, pos = _field(buf, pos, end)
    if (
        pos < 0
        or number != 1
        or stop - start != 6
        or buf[start] != 118
        or buf[start + 1] != 97
        or buf[start + 2] != 108
        or buf[start + 3] != 117
        or buf[start + 4] != 101
        or buf[start + 5] != 115
    ):  # "values"
        return False, 0, 0, 0, 0, np.uint64(0), True, 0, np.uint64(0)
    number, start, value_end, pos = _field(buf, pos, end)
    if pos != end or number != 2:
        return False, 0, 0, 0, 0, np.uint64(0), True, 0, np.uint64(0)
    # The Value message: its one field must be float32_tensor (field 2), ending the Value (the
    # protobuf runtime merges a second float32_tensor into the first, or lets another member
    # of the oneof replace it).
    number, start, stop, pos = _field(buf, start, value_end)
    if pos != value_end or number != 2:
        return False, 0, 0, 0, 0, np.uint64(0), True, 0, np.uint64(0)
    return _tensor(buf, start, stop)


# The per-record arrays travel together through these two kernels; written a few to a line, not
# one per line, so that the signature and the call read as what they are.
# fmt: off
@numba.njit(**READER)
def scan_payloads(buf, starts, lengths,
                  val_off, n_vals, key_off, n_keys, max_key, keys_increasing, n_shape, shape0, label_bits,
                  has_label):
    """Fill the per-record arrays for the fast path (label_bits: the float32 labels' uint32 view).
    Returns the index of the first record the fast path cannot take (the caller then uses the
    reference path), or -1."""
    for i in range(starts.shape[0]):
        if _scan_one(buf, starts[i], lengths[i], i,
                     val_off, n_vals, key_off, n_keys, max_key, keys_increasing, n_shape, shape0, label_bits,
                     has_label):
            return i
    return -1
# fmt: on


@numba.njit(**READER_HELPER)
def _scan_one(buf, pos, length, i,
              val_off, n_vals, key_off, n_keys, max_key, keys_increasing, n_shape, shape0, label_bits,
              has_label):  # fmt: skip
    """Record i into row i of the arrays; 1 when the reference path must decide, else 0."""
    end = pos + length
    features_seen = False
    label_seen = False
    while pos < end:
        number, start, stop, pos = _field(buf, pos, end)
        if pos < 0:
            return 1
        if number == 1 and not features_seen:
            features_seen = True
            ok, v_off, v_bytes, k_off, k_count, k_max, k_increasing, s_count, s_first = _values_entry(buf, start, stop)
            if not ok or s_count > 1:
                return 1
            val_off[i] = v_off
            n_vals[i] = v_bytes >> 2
            key_off[i] = k_off
            n_keys[i] = k_count
            max_key[i] = k_max
            keys_increasing[i] = k_increasing
            n_shape[i] = s_count
            shape0[i] = s_first
        elif number == 2 and not label_seen:
            label_seen = True
            ok, v_off, v_bytes, k_off, k_count, k_max, k_increasing, s_count, s_first = _values_entry(buf, start, stop)
            if not ok or v_bytes != 4 or k_count != 0 or s_count != 0:
                return 1
            label_bits[i] = (
                np.uint32(buf[v_off])
                | (np.uint32(buf[v_off + 1]) << np.uint32(8))
                | (np.uint32(buf[v_off + 2]) << np.uint32(16))
                | (np.uint32(buf[v_off + 3]) << np.uint32(24))
            )
        elif number < 3 or number > 5:
            return 1
        # fields 3-5 (uid, metadata, configuration) carry nothing the arrays need
    if not features_seen:
        return 1
    has_label[i] = label_seen
    return 0


@numba.njit(cache=True, nogil=True)
def fill_dense(buf, val_off, width, out_bytes):
    """Copy each record's packed float32 values into row i of a C-contiguous float32 matrix,
    given as its uint8 view (little-endian wire bytes are the in-memory bytes)."""
    row_bytes = width * 4
    for i in range(val_off.shape[0]):
        src = val_off[i]
        dst = i * row_bytes
        _copy(out_bytes, dst, buf, src, row_bytes)


@numba.njit(cache=True, nogil=True)
def first_repeated_key(buf, key_off, n_keys):
    """(index of the first record whose keys hold one key twice, the smallest such key), or
    (-1, 0). Records with fewer than 2 keys (dense ones) are skipped; callers pass 0 keys for
    records whose keys are known to increase (every writer's), so only the others are sorted."""
    for i in range(key_off.shape[0]):
        n = n_keys[i]
        if n < 2:
            continue
        p = key_off[i]
        previous, p = _varint(buf, p, buf.shape[0])
        increasing = True
        for _ in range(1, n):
            key, p = _varint(buf, p, buf.shape[0])
            if key <= previous:
                increasing = False
                break
            previous = key
        if increasing:
            continue
        keys = np.empty(n, np.uint64)
        p = key_off[i]
        for j in range(n):
            keys[j], p = _varint(buf, p, buf.shape[0])
        keys.sort()
        for j in range(1, n):
            if keys[j] == keys[j - 1]:
                return i, keys[j]
    return -1, np.uint64(0)


@numba.njit(cache=True, nogil=True)
def fill_csr(buf, val_off, n_vals, key_off, is_sparse, indptr, indices, data_bytes):
    """Fill CSR arrays: sparse records decode their keys, dense records get columns 0..n-1."""
    for i in range(val_off.shape[0]):
        first = indptr[i]
        count = n_vals[i]
        if is_sparse[i]:
            p = key_off[i]
            for j in range(count):
                key, p = _varint(buf, p, buf.shape[0])
                indices[first + j] = key
        else:
            for j in range(count):
                indices[first + j] = j
        src = val_off[i]
        _copy(data_bytes, first * 4, buf, src, count * 4)


# ---------------------------------------------------------------------------------------------
# Writing


@numba.njit(cache=True, nogil=True)
def _varint_len(value):
    n = 1
    v = np.uint64(value)
    while v >= np.uint64(0x80):
        v >>= np.uint64(7)
        n += 1
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _put_varint(out, pos, value):
    v = np.uint64(value)
    while v >= np.uint64(0x80):
        out[pos] = np.uint8((v & np.uint64(0x7F)) | np.uint64(0x80))
        v >>= np.uint64(7)
        pos += 1
    out[pos] = np.uint8(v)
    return pos + 1


@numba.njit(cache=True, nogil=True)
def _label_entry_len(kind, label_i32):
    """Length of the serialized label map entry (key "values" + Value) for one label."""
    if kind == LABEL_NONE:
        return 0
    if kind == LABEL_F32:
        tensor = 2 + 4
    elif kind == LABEL_F64:
        tensor = 2 + 8
    else:
        # int32 values are varints of their 64-bit two's complement (10 bytes when negative)
        n = _varint_len(np.uint64(np.int64(label_i32)))
        tensor = 1 + _varint_len(n) + n
    value = 1 + _varint_len(tensor) + tensor
    return 8 + 1 + _varint_len(value) + value


@numba.njit(cache=True, nogil=True, inline="always")
def _put_label(out, pos, kind, label_bytes, i, i32):
    entry = _label_entry_len(kind, i32)
    out[pos] = 0x12  # Record.label (field 2)
    pos = _put_varint(out, pos + 1, entry)
    pos = _put_values_key(out, pos)
    if kind == LABEL_F32:
        tensor = 6
        tag = 0x12
    elif kind == LABEL_F64:
        tensor = 10
        tag = 0x1A
    else:
        n = _varint_len(np.uint64(np.int64(i32)))
        tensor = 1 + _varint_len(n) + n
        tag = 0x3A
    value = 1 + _varint_len(tensor) + tensor
    out[pos] = 0x12  # entry.value
    pos = _put_varint(out, pos + 1, value)
    out[pos] = tag  # Value.float32_tensor / float64_tensor / int32_tensor
    pos = _put_varint(out, pos + 1, tensor)
    out[pos] = 0x0A  # tensor.values
    if kind == LABEL_F32 or kind == LABEL_F64:
        width = 4 if kind == LABEL_F32 else 8
        out[pos + 1] = width
        _copy(out, pos + 2, label_bytes, i * width, width)
        return pos + 2 + width
    n = _varint_len(np.uint64(np.int64(i32)))
    pos = _put_varint(out, pos + 1, n)
    return _put_varint(out, pos, np.uint64(np.int64(i32)))


@numba.njit(cache=True, nogil=True, inline="always")
def _put_values_key(out, pos):
    out[pos] = 0x0A  # entry.key
    out[pos + 1] = 6
    out[pos + 2] = 118  # v
    out[pos + 3] = 97  # a
    out[pos + 4] = 108  # l
    out[pos + 5] = 117  # u
    out[pos + 6] = 101  # e
    out[pos + 7] = 115  # s
    return pos + 8


@numba.njit(cache=True, nogil=True)
def _feature_lengths(value_bytes, key_bytes, n_keys, shape_dim):
    """(tensor body, Value body, features entry) lengths of one record's features."""
    tensor = 0
    if value_bytes:
        tensor += 1 + _varint_len(value_bytes) + value_bytes
    if n_keys:
        tensor += 1 + _varint_len(key_bytes) + key_bytes
    if shape_dim >= 0:
        s = _varint_len(shape_dim)
        tensor += 1 + _varint_len(s) + s
    value = 1 + _varint_len(tensor) + tensor
    entry = 8 + 1 + _varint_len(value) + value
    return tensor, value, entry


@numba.njit(cache=True, nogil=True, inline="always")
def _frame_header(out, pos, payload_len):
    out[pos] = 0x0A
    out[pos + 1] = 0x23
    out[pos + 2] = 0xD7
    out[pos + 3] = 0xCE
    out[pos + 4] = payload_len & 0xFF
    out[pos + 5] = (payload_len >> 8) & 0xFF
    out[pos + 6] = (payload_len >> 16) & 0xFF
    out[pos + 7] = (payload_len >> 24) & 0xFF
    return pos + 8


@numba.njit(cache=True, nogil=True, inline="always")
def _finish_frame(out, pos, payload_start):
    pad = (-(pos - payload_start)) % 4
    for j in range(pad):
        out[pos + j] = 0
    return pos + pad


@numba.njit(cache=True, nogil=True)
def _record_len(entry, label_kind, label_i32):
    record = 1 + _varint_len(entry) + entry
    label_entry = _label_entry_len(label_kind, label_i32)
    if label_kind != LABEL_NONE:
        record += 1 + _varint_len(label_entry) + label_entry
    return record


@numba.njit(cache=True, nogil=True, inline="always")
def _put_features_head(out, pos, value_tag, tensor, value, entry):
    out[pos] = 0x0A  # Record.features (field 1)
    pos = _put_varint(out, pos + 1, entry)
    pos = _put_values_key(out, pos)
    out[pos] = 0x12  # entry.value
    pos = _put_varint(out, pos + 1, value)
    out[pos] = value_tag
    return _put_varint(out, pos + 1, tensor)


@numba.njit(**OPTIMISED)
def dense_frame_sizes(n_rows, row_bytes, label_kind, label_i32):
    """Frame size (header, payload, padding) of each row of a dense write."""
    tensor, value, entry = _feature_lengths(row_bytes, 0, 0, -1)
    sizes = np.empty(n_rows, np.int64)
    for i in range(n_rows):
        i32 = label_i32[i] if label_kind == LABEL_I32 else 0
        payload = _record_len(entry, label_kind, i32)
        sizes[i] = 8 + ((payload + 3) & ~3)
    return sizes


@numba.njit(cache=True, nogil=True)
def encode_dense(rows, value_tag, label_kind, label_bytes, label_i32, offsets, out):
    """Write one frame per row of `rows` (uint8 view, one row of packed little-endian values per
    line) at out[offsets[i]:]. value_tag is 0x12 for Float32Tensor, 0x1A for Float64Tensor."""
    row_bytes = rows.shape[1]
    tensor, value, entry = _feature_lengths(row_bytes, 0, 0, -1)
    for i in range(rows.shape[0]):
        i32 = label_i32[i] if label_kind == LABEL_I32 else 0
        payload = _record_len(entry, label_kind, i32)
        pos = _frame_header(out, offsets[i], payload)
        start = pos
        pos = _put_features_head(out, pos, value_tag, tensor, value, entry)
        if row_bytes:
            out[pos] = 0x0A  # tensor.values
            pos = _put_varint(out, pos + 1, row_bytes)
            _copy(out, pos, rows[i], 0, row_bytes)
            pos += row_bytes
        if label_kind != LABEL_NONE:
            pos = _put_label(out, pos, label_kind, label_bytes, i, i32)
        _finish_frame(out, pos, start)


@numba.njit(**OPTIMISED)
def sparse_frame_sizes(indptr, indices, value_size, n_cols, label_kind, label_i32):
    sizes = np.empty(indptr.shape[0] - 1, np.int64)
    for i in range(sizes.shape[0]):
        payload = _sparse_row_layout(indptr, indices, i, value_size, n_cols, label_kind, label_i32)[4]
        sizes[i] = 8 + ((payload + 3) & ~3)
    return sizes


@numba.njit(cache=True, nogil=True, inline="always")
def _sparse_row_layout(indptr, indices, i, value_size, n_cols, label_kind, label_i32):
    """(key bytes, tensor, Value and entry lengths, payload length) of CSR row i's record."""
    key_bytes = 0
    for j in range(indptr[i], indptr[i + 1]):
        key_bytes += _varint_len(np.uint64(indices[j]))
    nnz = indptr[i + 1] - indptr[i]
    tensor, value, entry = _feature_lengths(nnz * value_size, key_bytes, nnz, n_cols)
    payload = _record_len(entry, label_kind, label_i32[i] if label_kind == LABEL_I32 else 0)
    return key_bytes, tensor, value, entry, payload


@numba.njit(cache=True, nogil=True)
def encode_sparse(
    indptr, indices, data_bytes, value_size, value_tag, n_cols, label_kind, label_bytes, label_i32, offsets, out
):
    """One frame per CSR row: values, keys (the column indices) and shape [n_cols]."""
    for i in range(indptr.shape[0] - 1):
        lo = indptr[i]
        hi = indptr[i + 1]
        nnz = hi - lo
        key_bytes, tensor, value, entry, payload = _sparse_row_layout(
            indptr, indices, i, value_size, n_cols, label_kind, label_i32
        )
        i32 = label_i32[i] if label_kind == LABEL_I32 else 0
        pos = _frame_header(out, offsets[i], payload)
        start = pos
        pos = _put_features_head(out, pos, value_tag, tensor, value, entry)
        if nnz:
            out[pos] = 0x0A  # tensor.values
            pos = _put_varint(out, pos + 1, nnz * value_size)
            _copy(out, pos, data_bytes, lo * value_size, nnz * value_size)
            pos += nnz * value_size
            out[pos] = 0x12  # tensor.keys
            pos = _put_varint(out, pos + 1, key_bytes)
            for j in range(lo, hi):
                pos = _put_varint(out, pos, np.uint64(indices[j]))
        out[pos] = 0x1A  # tensor.shape
        pos = _put_varint(out, pos + 1, _varint_len(n_cols))
        pos = _put_varint(out, pos, n_cols)
        if label_kind != LABEL_NONE:
            pos = _put_label(out, pos, label_kind, label_bytes, i, i32)
        _finish_frame(out, pos, start)
