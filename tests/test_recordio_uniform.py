"""The uniform-layout fast path of `read` (smalgo.recordio.uniform).

It must be taken for what dense writers produce, return exactly what the general path returns
(bit for bit, NaN payloads included), and step aside (the general path then gives its result or
its error, unchanged) whenever a single byte outside the values says the file is not uniform.
"""

from __future__ import annotations

import io
import struct
import time

import numpy as np
import pytest
from recordio_helpers import MAGIC, TESTDATA, dmlc_frames, frame, magic_as_float32, record_bytes

from smalgo import recordio
from smalgo.recordio import reference, uniform

RNG = np.random.default_rng(11)

# Bit patterns that float arithmetic would change or that look like framing: quiet NaN with a
# payload, signalling NaN, negative NaN, infinities, -0.0, the smallest subnormal, the magic word.
SPECIAL_BITS = np.array(
    [0x7FC12345, 0x7F800001, 0xFFC00000, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0xCED7230A], np.uint32
)


def _special_floats(n, d):
    X = RNG.standard_normal((n, d)).astype(np.float32)
    flat = X.reshape(-1).view(np.uint32)
    flat[: min(flat.size, SPECIAL_BITS.size)] = SPECIAL_BITS[: flat.size]
    flat[-min(flat.size, SPECIAL_BITS.size) :] = SPECIAL_BITS[::-1][: min(flat.size, SPECIAL_BITS.size)]
    return X


def _written(X, labels=None) -> bytes:
    out = io.BytesIO()
    recordio.write_dense(out, X, labels)
    return out.getvalue()


def _sdk_style(X, labels=None) -> bytes:
    """What the SDK's write_numpy_to_dense_tensor writes: one Record per row, serialised by the
    protobuf runtime, in cflag-0 frames."""
    return b"".join(
        frame(record_bytes(row.tolist(), label=None if labels is None else float(labels[i]))) for i, row in enumerate(X)
    )


def _outcome(source_factory, **kwargs):
    try:
        X, y = recordio.read(source_factory(), **kwargs)
    except recordio.RecordIOError as e:
        return ("error", str(e))
    kind = "dense" if isinstance(X, np.ndarray) else "csr"
    body = X.tobytes() if kind == "dense" else (X.indptr.tobytes(), X.indices.tobytes(), X.data.tobytes())
    return (kind, X.shape, str(X.dtype), body, None if y is None else (str(y.dtype), y.tobytes()))


def _uniform_taken(source_factory, **kwargs):
    """read()'s outcome, and whether the uniform path produced it."""
    before = uniform.applied
    outcome = _outcome(source_factory, **kwargs)
    return outcome, uniform.applied - before == 1


@pytest.fixture
def general(monkeypatch):
    """read() with the uniform path switched off, i.e. as it was before the path existed."""

    def read_general(source_factory, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(uniform, "read_uniform", lambda *args: None)
            return _outcome(source_factory, **kwargs)

    return read_general


def _same_as_general(general, data, taken_expected, **kwargs):
    outcome, taken = _uniform_taken(lambda: data, **kwargs)
    assert taken == taken_expected
    assert outcome == general(lambda: data, **kwargs)
    assert outcome == _outcome(lambda: data, fast=False, **kwargs)
    # A stream is never read in place, so it always goes the general way.
    streamed, streamed_taken = _uniform_taken(lambda: io.BytesIO(data), chunk_size=4096, **kwargs)
    assert not streamed_taken and streamed == outcome
    return outcome


# ---------------------------------------------------------------------------------------------
# Taken, with the general path's results.


@pytest.mark.parametrize("n", [1, 2, 37, 6000])  # 6,000 rows of 100 values: split over threads
@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("writer", [_written, _sdk_style])
def test_dense_writers_take_the_uniform_path_bit_identically(general, n, labelled, writer):
    if writer is _sdk_style and n > 100:
        n = 100  # the protobuf runtime is slow; the layout does not depend on the row count
    d = 100 if n > 100 else 7
    X = _special_floats(n, d)
    y = _special_floats(n, 1).reshape(-1) if labelled else None
    data = writer(X, y)
    outcome = _same_as_general(general, data, True)
    X_read, y_read = recordio.read(data)
    if writer is _sdk_style:
        # Through Python floats a signalling NaN comes out quiet: the file holds what the
        # protobuf runtime made of the values, as the SDK's files do.
        with np.errstate(invalid="ignore"):
            X = X.astype(np.float64).astype(np.float32)
            y = None if y is None else y.astype(np.float64).astype(np.float32)
    assert X_read.tobytes() == X.tobytes() and X_read.shape == X.shape and X_read.flags.c_contiguous
    assert (y_read is None) if y is None else y_read.tobytes() == y.tobytes()
    assert outcome[0] == "dense"


@pytest.mark.parametrize("d", [1, 2, 3, 31, 32, 33, 64, 4096])  # every value offset mod 4, varint sizes
def test_widths_and_alignments(general, d):
    X = _special_floats(9, d)
    y = RNG.standard_normal(9).astype(np.float32)
    for data in (_written(X, y), _written(X)):
        _same_as_general(general, data, True)


def test_sources_read_in_place_take_it(tmp_path, general):
    X = _special_floats(300, 13)
    y = RNG.standard_normal(300).astype(np.float32)
    path = tmp_path / "train.pbr"
    recordio.write_dense(path, X, y)
    data = path.read_bytes()
    expected = general(lambda: data)
    for make in (
        lambda: path,
        lambda: str(path),
        lambda: data,
        lambda: bytearray(data),
        lambda: memoryview(data),
        lambda: np.frombuffer(data, np.uint8),
    ):
        assert _uniform_taken(make) == (expected, True)
    assert _uniform_taken(lambda: io.BytesIO(data)) == (expected, False)  # streams: the general path
    with open(path, "rb") as f:
        assert _uniform_taken(lambda: f) == (expected, False)


def test_sdk_written_file_takes_it(general):
    path = TESTDATA / "sagemaker-python-sdk" / "matrix_0.pbr"
    outcome, taken = _uniform_taken(lambda: path)
    assert taken and outcome == general(lambda: path) == _outcome(lambda: path, fast=False)
    assert outcome[1] == (100, 784)


def test_feature_dim(general):
    data = _written(_special_floats(20, 6), np.arange(20, dtype=np.float32))
    _same_as_general(general, data, True, feature_dim=6)
    # A disagreeing feature_dim is the general path's error, with record and offset.
    outcome = _same_as_general(general, data, False, feature_dim=5)
    assert outcome[0] == "error" and "record 0 at byte offset 0" in outcome[1]
    _same_as_general(general, data, False, feature_dim=0)


def test_fast_false_never_takes_it():
    data = _written(_special_floats(5, 3))
    assert not _uniform_taken(lambda: data, fast=False)[1]


def test_iter_batches_unchanged():
    X = _special_floats(1000, 5)
    y = RNG.standard_normal(1000).astype(np.float32)
    data = _written(X, y)
    batches = list(recordio.iter_batches(data, 300))
    assert np.concatenate([b for b, _ in batches]).tobytes() == X.tobytes()
    assert np.concatenate([b for _, b in batches]).tobytes() == y.tobytes()


# ---------------------------------------------------------------------------------------------
# Steps aside: the general path's result or error, unchanged.

ROWS = 8


@pytest.fixture
def base():
    """A uniform labelled file of ROWS records, and its frame size (29 values: 3 padding bytes)."""
    X = _special_floats(ROWS, 29)
    y = np.arange(ROWS, dtype=np.float32)
    data = _written(X, y)
    return data, len(data) // ROWS


def _replace_record(data: bytes, frame_size: int, i: int, new_frame: bytes) -> bytes:
    return data[: i * frame_size] + new_frame + data[(i + 1) * frame_size :]


@pytest.mark.parametrize("i", [1, 4, ROWS - 1])
def test_one_structural_byte_differs(general, base, i):
    data, frame_size = base
    payload_end = 8 + int.from_bytes(data[4:8], "little")
    assert payload_end < frame_size
    values_key = data.index(b"values")
    changes = [
        (0, 0x0B),
        (3, 0xCF),
        (4, 0x00),
        (5, 0x01),
        (values_key, ord("w")),
        (values_key - 1, 7),
        (values_key - 2, 0x0B),
        (payload_end - 6, 0x0D),  # the label tensor's values tag
        (payload_end, 0xAA),
    ]  # a padding byte: the general path ignores it, this path does not
    for offset, byte in changes:
        mutated = bytearray(data)
        assert mutated[i * frame_size + offset] != byte
        mutated[i * frame_size + offset] = byte
        _same_as_general(general, bytes(mutated), False)
    # Value bytes (a feature, the label) are not structural: still uniform.
    for offset in (values_key + 12, payload_end - 1):
        mutated = bytearray(data)
        mutated[i * frame_size + offset] ^= 0x5A
        _same_as_general(general, bytes(mutated), True)


def test_one_record_of_another_length(general, base):
    data, frame_size = base
    shorter = frame(record_bytes([1.0, 2.0, 3.0, 4.0], label=1.0))
    longer = frame(record_bytes([1.0] * 6, label=1.0))
    for i in (0, 3, ROWS - 1):
        for other in (shorter, longer):
            outcome = _same_as_general(general, _replace_record(data, frame_size, i, other), False)
            assert outcome[0] == "error" and "dense values, but the width is" in outcome[1]


def test_trailing_garbage_and_truncation(general, base):
    data, frame_size = base
    for mutated in (
        data + b"\0",
        data + b"\0\0\0\0",
        data + MAGIC + b"\x04\0\0\0",
        data + data[:frame_size],  # one whole extra uniform record: still uniform
        data[:-1],
        data[:-4],
        data[: -frame_size + 3],
        data[: frame_size - 1],
    ):
        taken = len(mutated) % frame_size == 0 and mutated.startswith(data[:frame_size])
        _same_as_general(general, mutated, taken)


def test_extra_record_of_another_size_at_the_end(general, base):
    data, _ = base
    outcome = _same_as_general(general, data + frame(record_bytes([1.0] * 9, label=1.0)), False)
    assert outcome[0] == "error"


def test_multi_part_records(general):
    magic = magic_as_float32()
    rows = [[1.0, magic, 2.0, 3.0], [magic, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, magic]]
    payloads = [record_bytes(r, label=1.0) for r in rows]
    assert all(dmlc_frames(p) != frame(p) for p in payloads)  # the magic word sits 4-aligned
    for split in range(3):  # one record written as dmlc-core does (split at the magic word)
        data = b"".join(dmlc_frames(p) if i == split else frame(p) for i, p in enumerate(payloads))
        _same_as_general(general, data, False)
    # Written whole (cflag 0), the magic word among the values is just a value.
    _same_as_general(general, b"".join(frame(p) for p in payloads), True)


def test_records_with_uid_or_other_fields(general):
    distinct = b"".join(frame(record_bytes([1.0, 2.0], label=0.0, uid=f"row-{i}")) for i in range(5))
    same = b"".join(frame(record_bytes([1.0, float(i)], uid="same")) for i in range(5))
    _same_as_general(general, distinct, False)
    _same_as_general(general, same, False)  # only the plainest layout is vouched for
    plain = frame(record_bytes([1.0, 2.0], label=0.0))
    _same_as_general(general, plain * 3 + frame(record_bytes([1.0, 2.0], label=0.0, uid="x")), False)


def test_sparse_record_among_dense_ones(general):
    dense = frame(record_bytes([1.0, 2.0, 3.0]))
    sparse = frame(record_bytes([5.0], keys=[1], shape=[3]))
    for data in (dense * 3 + sparse + dense, sparse + dense * 3):
        outcome = _same_as_general(general, data, False)
        assert outcome[0] == "csr"
    # A record with the same values but a shape (dense in the general path): not the plain layout.
    _same_as_general(general, frame(record_bytes([1.0, 2.0, 3.0], shape=[3])) * 4, False)


def test_different_widths(general):
    data = frame(record_bytes([1.0, 2.0])) * 3 + frame(record_bytes([1.0, 2.0, 3.0]))
    outcome = _same_as_general(general, data, False)
    assert outcome[0] == "error" and "record 3" in outcome[1]


def test_label_on_some_records_only(general):
    labelled = frame(record_bytes([1.0, 2.0], label=1.0))
    bare = frame(record_bytes([1.0, 2.0]))
    for data in (labelled * 3 + bare, bare * 3 + labelled, labelled + bare * 3):
        outcome = _same_as_general(general, data, False)
        assert outcome[0] == "error" and "label" in outcome[1]


def test_other_dtypes_and_empty_records(general):
    X = RNG.standard_normal((6, 4))
    for data in (
        _written(X),
        _written(X.astype(np.int32)),
        _written(X.astype(np.float32), np.arange(6)),
        _written(X.astype(np.float32), np.arange(6, dtype=np.float64)),
        _written(np.zeros((4, 0), np.float32)),  # no values to stride over
        _written(np.zeros((4, 0), np.float32), np.ones(4, np.float32)),
        frame(record_bytes([1.0], label=2.0, label_dtype="float64")) * 3,
        frame(record_bytes([1.0, 2.0], dtype="float64")) * 3,
    ):
        _same_as_general(general, data, False)


def test_label_with_several_values(general):
    from smalgo.recordio.record_pb2 import Record

    record = Record()
    record.features["values"].float32_tensor.values.extend([1.0, 2.0])
    record.label["values"].float32_tensor.values.extend([1.0, 2.0])
    _same_as_general(general, frame(record.SerializeToString()) * 3, False)


def test_empty_and_tiny_inputs(general, tmp_path):
    for data in (b"", MAGIC, MAGIC + b"\0\0\0\0", MAGIC + struct.pack("<I", 1 << 29), frame(b"")):
        _same_as_general(general, data, False)
    empty = tmp_path / "empty.pbr"
    empty.write_bytes(b"")
    assert _uniform_taken(lambda: empty) == (general(lambda: empty), False)
    missing = tmp_path / "missing.pbr"
    assert _uniform_taken(lambda: missing) == (general(lambda: missing), False)


def test_reference_writer_files_are_uniform_too(general):
    X = _special_floats(50, 12)
    y = RNG.standard_normal(50).astype(np.float32)
    out = io.BytesIO()
    reference.write_dense(out, X, y)
    _same_as_general(general, out.getvalue(), True)


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("labelled", [False, True])
def test_every_structural_byte_of_the_first_record(general, rows, labelled):
    """Record 0's layout is parsed in Python: any change to one of its bytes outside the values
    must give what the general path gives (most often by stepping aside)."""
    X = _special_floats(rows, 33)  # 132 value bytes: two-byte lengths, and padding
    data = _written(X, np.arange(rows, dtype=np.float32) if labelled else None)
    frame_size = len(data) // rows
    value_at = data.index(X[0].tobytes())
    label_at = frame_size - 4 - (-int.from_bytes(data[4:8], "little") % 4) if labelled else frame_size
    for pos in [
        *range(value_at),
        *range(value_at + X.shape[1] * 4, label_at),
        *range(label_at + 4 if labelled else frame_size, frame_size),
    ]:
        for change in (lambda b: b ^ 0x01, lambda b: b ^ 0x80, lambda b: 0x00, lambda b: 0xFF):
            mutated = bytearray(data)
            mutated[pos] = change(mutated[pos])
            mutated = bytes(mutated)
            # Each source is read before the loop moves on; the defaults only pin this mutation.
            outcome, _ = _uniform_taken(lambda mutated=mutated: mutated)
            assert (
                outcome
                == general(lambda mutated=mutated: mutated)
                == _outcome(lambda mutated=mutated: mutated, fast=False)
            ), (pos, outcome)


def test_a_difference_seen_by_either_thread(general):
    X = _special_floats(6000, 100)  # 2.7 MB: on 2+ cores two threads, records 0-2999 and 3000-5999
    data = _written(X, np.ones(6000, np.float32))
    frame_size = len(data) // 6000
    for i in (1, 2999, 3000, 5999):
        mutated = bytearray(data)
        mutated[i * frame_size + 9] ^= 0x01  # the features entry's length
        outcome = _same_as_general(general, bytes(mutated), False)
        assert outcome[0] == "error" and f"record {i} " in outcome[1]


def test_row_pieces_cover_every_row_once_in_order_and_stop_early(monkeypatch):
    from smalgo.recordio import parallel

    monkeypatch.setattr(parallel, "_THREADS", 2)  # two threads even on a one-core machine
    ranges = []

    def work(lo, hi):
        ranges.append((lo, hi))
        return lo

    def contiguous_from_zero(spans):
        spans = sorted(spans)
        return spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)) and spans[-1][1]

    # 1,000 rows, 100 per thread: 2 threads, pieces of 1000 // (100 // 4) = 40.
    results = parallel.over_row_pieces(1000, work, 100, stop=lambda lo: False)
    assert contiguous_from_zero(ranges) == 1000 and len(ranges) == 40
    assert results == sorted(lo for lo, _ in ranges)
    ranges.clear()

    def slow_work(lo, hi):
        time.sleep(0.005)  # lets the other thread see the stop before it takes another piece
        return work(lo, hi)

    results = parallel.over_row_pieces(1000, slow_work, 100, stop=lambda lo: True)
    assert len(ranges) <= 4 and contiguous_from_zero(ranges) and results == sorted(lo for lo, _ in ranges)
    ranges.clear()
    assert parallel.over_row_pieces(150, work, 100, stop=lambda lo: False) == [0]  # one thread's worth
    assert ranges == [(0, 150)]
