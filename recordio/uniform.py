"""The fast path for the commonest input: dense records that all have one byte layout.

The SageMaker SDK's `write_numpy_to_dense_tensor` and our `write_dense` write one record per
row, and for float32 features with float32 (or no) labels every record has the same bytes apart
from its values: same frame header, same field tags and lengths, same padding. For such a file
the general path (frame scan, a wire-format parse of every record, per-record checks, a copy)
spends most of its time rediscovering one layout 100,000 times. Here record 0 is parsed once,
and one kernel pass over the file checks that every other record has exactly record 0's bytes
outside its values while copying the values out: the feature values are a strided view of the
file, the labels another.

Whether this path applies is decided by bytes alone: if any byte outside the value regions
differs from record 0's, if the input is not exactly n whole frames of record 0's size, or if
record 0 is anything but the plainest dense Float32 record, `read_uniform` returns None and the
caller runs the general path unchanged. So every error (with its record index, offset and
reason) and every result still comes from the general path; this path only ever returns what
the general path would have returned for the same bytes, and it does so because a record whose
non-value bytes equal record 0's is parsed by the general path exactly as record 0 is (the
wire-format parser never looks inside the packed values or the 4 label bytes, only at the tags
and lengths around them).
"""

from __future__ import annotations

import os
import stat
import struct
import sys

import numba
import numpy as np

from . import parallel
from .framing import HEADER_SIZE, MAGIC, open_source, read_u32

# How often `read_uniform` returned arrays: lets tests see that the path was taken (it has no
# other observable effect, by design).
applied = 0

# A thread hand-off costs tens of microseconds, so the rows are split over threads only when
# each thread gets at least this many bytes of input to check and copy.
_MIN_BYTES_PER_THREAD = 1 << 20


def read_uniform(source, feature_dim: int | None):
    """(X, y) as `read(source, feature_dim)` returns them, when `source` is an in-memory or
    memory-mapped input of uniform dense Float32 records; None otherwise (then nothing has been
    decided, and the caller must read `source` the general way)."""
    global applied
    # The values are copied as bytes: on a big-endian host the wire's little-endian floats would
    # need swapping, which the general path does.
    if sys.byteorder != "little":
        return None
    held, mapped = _stable_buffer(source)
    if not held:
        return None
    try:
        result = _read_in_place(held[0], feature_dim)
    finally:
        if mapped:
            # Unmapping a file costs ~2.5 ms per 45 MB here (every page's entry is torn down);
            # the pages are no longer needed, so the last reference goes on the I/O thread and
            # read() returns without waiting for it.
            parallel.submit_io(held.clear)
        del held
    if result is not None:
        applied += 1
    return result


def _read_in_place(buf: np.ndarray, feature_dim: int | None):
    """read_uniform's work on the input's bytes; keeps no reference to `buf` once it returns."""
    layout = _first_record_layout(buf)
    if layout is None or buf.shape[0] % layout[0]:
        return None
    frame_size, value_at, value_bytes, label_at = layout
    width = value_bytes // 4
    if feature_dim is not None and feature_dim != width:
        return None  # the general path reports the mismatch, with its record and offset
    n = buf.shape[0] // frame_size

    # The 32-bit words of a frame that hold any byte other than feature or label values, with
    # masks of those bytes: ~11 words per record instead of a wire-format parse.
    structural = np.ones(frame_size, bool)
    structural[value_at : value_at + value_bytes] = False
    if label_at >= 0:
        structural[label_at : label_at + 4] = False
    word_masks = np.where(structural, np.uint8(0xFF), np.uint8(0)).view(np.uint32)
    check_at = np.flatnonzero(word_masks).astype(np.int64)
    check_mask = word_masks[check_at]
    check_ref = buf[:frame_size].copy().view(np.uint32)[check_at]
    check_at *= 4

    X = np.empty((n, width), np.float32)
    y = np.empty(n, np.float32) if label_at >= 0 else None
    out = X.reshape(-1).view(np.uint8)
    label_out = y.view(np.uint8) if y is not None else np.empty(0, np.uint8)

    def copy(lo: int, hi: int) -> int:
        return _check_and_copy_rows(
            buf, lo, hi, frame_size, check_at, check_ref, check_mask, value_at, value_bytes, label_at, out, label_out
        )

    min_rows = max(1, _MIN_BYTES_PER_THREAD // frame_size)
    if any(bad >= 0 for bad in parallel.over_row_pieces(n, copy, min_rows, stop=lambda bad: bad >= 0)):
        return None
    return X, y


def _stable_buffer(source) -> tuple[list, bool]:
    """([the whole input as a read-only uint8 array], whether it is a file mapping) for sources
    read in place (bytes, arrays, regular files, which are memory-mapped); ([], False) for the
    rest (pipes, file objects)."""
    if isinstance(source, (str, os.PathLike)):
        # Only stat here: opening a FIFO would block, or take data meant for the general path.
        try:
            info = os.stat(source)
        except (OSError, ValueError):
            return [], False
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return [], False
    elif not isinstance(source, (bytes, bytearray, memoryview, np.ndarray)):
        return [], False
    try:
        src = open_source(source)
    except (OSError, ValueError, TypeError):
        return [], False  # the general path raises the same error, with its own message
    src.close()  # a mapping outlives its file descriptor
    if src.memory is None:
        return [], False
    buf = src.memory[:]
    # Read-only, as framing gives every kernel its buffers, so numba compiles one specialisation.
    buf.flags.writeable = False
    return [buf], isinstance(source, (str, os.PathLike))


def _first_record_layout(buf: np.ndarray) -> tuple[int, int, int, int] | None:
    """(frame size, feature values offset, feature values byte count, label value offset or -1)
    of record 0, offsets from the start of the frame; None unless record 0 is a whole (cflag 0)
    frame holding exactly what dense writers write for float32 rows: the features entry
    "values" -> Float32Tensor with packed values and nothing else, then optionally the label
    entry "values" -> Float32Tensor with one value and nothing else.

    Plain Python on purpose: it runs once per read, and the same parse as a numba kernel (built
    from codec's inlined field parsers) took 14 s to compile. Accepting only this one field
    order, never an unknown or repeated field, keeps it a strict subset of what codec's
    `_scan_one` and the protobuf runtime read as a dense row with an optional label."""
    data = buf.data  # memoryview(buf); numpy's stubs declare ndarray a Buffer only from Python 3.12
    if len(data) < HEADER_SIZE:
        return None
    magic, lrecord = struct.unpack_from("<II", data, 0)
    if magic != MAGIC or lrecord >> 29:  # not RecordIO, or part of a multi-part record
        return None
    end = HEADER_SIZE + lrecord
    frame_size = HEADER_SIZE + ((lrecord + 3) & ~3)
    if frame_size > len(data):
        return None
    features = _float32_values_entry(data, HEADER_SIZE, end, tag=_FEATURES_TAG)
    # No values at all (an empty tensor) leaves no value bytes to stride over: the general path.
    if features is None or features[1] == 0:
        return None
    value_at, value_bytes, pos = features
    label_at = -1
    if pos < end:
        label = _float32_values_entry(data, pos, end, tag=_LABEL_TAG)
        if label is None or label[1] != 4:
            return None
        label_at, _, pos = label
    if pos != end:
        return None
    return frame_size, value_at, value_bytes, label_at


# Record.features and Record.label (fields 1 and 2, length-delimited); inside each map entry:
# key (field 1) "values", value (field 2) a Value whose float32_tensor (field 2) holds packed
# values (field 1).
_FEATURES_TAG = 0x0A
_LABEL_TAG = 0x12
_VALUES_KEY = b"\x0a\x06values"


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at pos; next position -1 when it is cut off or
    longer than 10 bytes."""
    value = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return 0, -1


def _length_delimited(data: memoryview, pos: int, end: int, *, tag: int) -> tuple[int, int]:
    """(start, stop) of the contents of the length-delimited field with one-byte tag `tag` at
    pos, which must fit before `end`; (-1, -1) for anything else."""
    if pos >= end or data[pos] != tag:
        return -1, -1
    length, pos = _varint(data, pos + 1, end)
    if pos < 0 or length > end - pos:
        return -1, -1
    return pos, pos + length


def _float32_values_entry(data: memoryview, pos: int, end: int, *, tag: int) -> tuple[int, int, int] | None:
    """(values offset, values byte count, end of the entry) of a map entry "values" -> Value ->
    Float32Tensor with only packed values, at pos and tagged `tag`; None for any other bytes."""
    start, stop = _length_delimited(data, pos, end, tag=tag)
    if start < 0 or bytes(data[start : start + len(_VALUES_KEY)]) != _VALUES_KEY:
        return None
    value_start, value_stop = _length_delimited(data, start + len(_VALUES_KEY), stop, tag=0x12)
    tensor_start, tensor_stop = _length_delimited(data, value_start, value_stop, tag=0x12)
    values_start, values_stop = _length_delimited(data, tensor_start, tensor_stop, tag=0x0A)
    # Each field must be the only thing in its message (nothing after it), and the values whole
    # float32s.
    if (
        value_start < 0
        or value_stop != stop
        or tensor_start < 0
        or tensor_stop != value_stop
        or values_start < 0
        or values_stop != tensor_stop
        or (values_stop - values_start) % 4
    ):
        return None
    return values_start, values_stop - values_start, stop


@numba.njit(cache=True, nogil=True)
def _check_and_copy_rows(  # noqa: PLR0917 (numba kernel: positional arguments only)
    buf, lo, hi, frame_size, check_at, check_ref, check_mask, value_at, value_bytes, label_at, out, label_out
):
    """For records lo..hi-1 at stride frame_size: check the masked words at check_at against
    record 0's (check_ref), then copy the feature value bytes to row i of `out` and the label's
    4 bytes to `label_out` (when label_at >= 0). Returns the first record whose checked bytes
    differ (the caller discards everything), or -1.

    Checking and copying in one pass reads the input once. Indices are unsigned so numba emits
    no negative-index wraparound, which lets LLVM vectorise the byte-copy loop."""
    stride = np.uint64(frame_size)
    value_at = np.uint64(value_at)
    value_bytes = np.uint64(value_bytes)
    labelled = label_at >= 0
    label = np.uint64(max(label_at, 0))
    k = check_at.shape[0]
    for i in range(np.uint64(lo), np.uint64(hi)):
        base = i * stride
        diff = np.uint32(0)
        for r in range(k):
            diff |= (read_u32(buf, base + np.uint64(check_at[r])) ^ check_ref[r]) & check_mask[r]
        if diff:
            return np.int64(i)
        src = base + value_at
        dst = i * value_bytes
        for j in range(value_bytes):
            out[dst + j] = buf[src + j]
        if labelled:
            src = base + label
            dst = i * np.uint64(4)
            for j in range(np.uint64(4)):
                label_out[dst + j] = buf[src + j]
    return -1
