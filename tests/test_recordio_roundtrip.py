"""Round trips: smalgo's fast path against the protobuf runtime, for every dtype and shape."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
import scipy.sparse as sp
from recordio_helpers import dmlc_frames, frame, magic_as_float32, record_bytes

from smalgo import recordio
from smalgo.recordio import reference
from smalgo.recordio.record_pb2 import Record, Value

RNG = np.random.default_rng(7)


def _bytes(writer, X, labels=None) -> bytes:
    out = io.BytesIO()
    writer(out, X, labels)
    return out.getvalue()


def _records(data: bytes) -> list[Record]:
    """Every payload parsed by the protobuf runtime, framing read independently of smalgo."""
    records, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"\x0a\x23\xd7\xce"
        length = int.from_bytes(data[pos + 4 : pos + 8], "little") & ((1 << 29) - 1)
        record = Record()
        record.ParseFromString(data[pos + 8 : pos + 8 + length])
        records.append(record)
        pos += 8 + length + (-length % 4)
    return records


def _assert_same(a, b):
    """Bit-identical arrays (NaN payloads included), both dense or both CSR."""
    Xa, ya = a
    Xb, yb = b
    assert type(Xa) is type(Xb)
    if sp.issparse(Xa):
        assert Xa.shape == Xb.shape
        assert np.array_equal(Xa.indptr, Xb.indptr) and np.array_equal(Xa.indices, Xb.indices)
        assert Xa.data.tobytes() == Xb.data.tobytes()
    else:
        assert Xa.shape == Xb.shape and Xa.dtype == Xb.dtype == np.float32
        assert Xa.tobytes() == Xb.tobytes()
    assert (ya is None) == (yb is None)
    if ya is not None:
        assert ya.dtype == np.float32 and ya.tobytes() == yb.tobytes()


DTYPES = [np.float32, np.float64, np.int32, np.int64]
LABEL_DTYPES = [None, np.float32, np.float64, np.int64]


def _dense(dtype, n=23, d=9):
    if np.issubdtype(dtype, np.integer):
        X = RNG.integers(-(2**31), 2**31 - 1, size=(n, d)).astype(dtype)
    else:
        X = (RNG.standard_normal((n, d)) * 1e3).astype(dtype)
        X[0, 0] = np.nan
        X[1, 1] = -np.inf
        X[2, 2] = -0.0
    return X


def _labels(dtype, n):
    if dtype is None:
        return None
    if np.issubdtype(dtype, np.integer):
        return RNG.integers(-5, 5, size=n).astype(dtype)
    return RNG.standard_normal(n).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
def test_dense_round_trip_matches_protobuf_runtime(dtype, label_dtype):
    X = _dense(dtype)
    labels = _labels(label_dtype, X.shape[0])
    fast = _bytes(recordio.write_dense, X, labels)
    slow = _bytes(reference.write_dense, X, labels)
    assert fast == slow  # byte for byte what the protobuf runtime serialises
    records = _records(fast)
    assert len(records) == X.shape[0]
    expected_field = {np.float32: "float32_tensor", np.float64: "float64_tensor"}.get(dtype, "int32_tensor")
    assert records[0].features["values"].WhichOneof("value") == expected_field
    expected = X.astype(np.float32)
    for read_fast in (True, False):
        got = recordio.read(fast, fast=read_fast)
        assert got[0].tobytes() == expected.tobytes()
        if labels is None:
            assert got[1] is None
        else:
            assert got[1].tobytes() == labels.astype(np.float64).astype(np.float32).tobytes()
    _assert_same(recordio.read(fast), recordio.read(fast, fast=False))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
def test_sparse_round_trip_matches_protobuf_runtime(dtype, label_dtype):
    X = sp.random(40, 300, density=0.05, format="csr", random_state=3, dtype=np.float64)
    X.data = (X.data * 100).astype(dtype)
    X = sp.csr_matrix(X, dtype=dtype)
    X = sp.csr_matrix(X.toarray())  # rows 0..k may be empty; make sure some are
    X = sp.vstack([sp.csr_matrix((2, 300), dtype=dtype), X, sp.csr_matrix((1, 300), dtype=dtype)]).tocsr()
    labels = _labels(label_dtype, X.shape[0])
    fast = _bytes(recordio.write_sparse, X, labels)
    assert fast == _bytes(reference.write_sparse, X, labels)
    records = _records(fast)
    assert len(records) == X.shape[0]  # empty rows still get a record
    assert list(
        records[0].features["values"].WhichOneof("value")
        and getattr(records[0].features["values"], records[0].features["values"].WhichOneof("value")).shape
    ) == [300]
    for read_fast in (True, False):
        Xr, yr = recordio.read(fast, fast=read_fast)
        assert sp.issparse(Xr) and Xr.shape == X.shape and Xr.dtype == np.float32
        assert np.array_equal(Xr.toarray(), X.toarray().astype(np.float32))
        assert (yr is None) == (labels is None)
    _assert_same(recordio.read(fast), recordio.read(fast, fast=False))


def test_reads_what_the_protobuf_runtime_wrote_and_the_reverse():
    X = _dense(np.float32, n=50, d=13)
    y = _labels(np.float32, 50)
    written_by_runtime = _bytes(reference.write_dense, X, y)
    Xr, yr = recordio.read(written_by_runtime)
    assert Xr.tobytes() == X.tobytes() and yr.tobytes() == y.tobytes()
    for record, row, label in zip(_records(_bytes(recordio.write_dense, X, y)), X, y, strict=True):
        values = np.array(record.features["values"].float32_tensor.values, np.float32)
        assert values.tobytes() == row.tobytes()
        assert np.float32(record.label["values"].float32_tensor.values[0]).tobytes() == label.tobytes()


def test_empty_inputs():
    assert recordio.read(b"")[0].shape == (0, 0)
    assert recordio.read(b"", feature_dim=7)[0].shape == (0, 7)
    assert list(recordio.iter_batches(b"", 10)) == []
    data = _bytes(recordio.write_dense, np.zeros((3, 0), np.float32))
    X, y = recordio.read(data)
    assert X.shape == (3, 0) and y is None


def test_empty_sparse_rows_only():
    data = _bytes(recordio.write_sparse, sp.csr_matrix((4, 6), dtype=np.float32))
    X, _ = recordio.read(data)
    assert sp.issparse(X) and X.shape == (4, 6) and X.nnz == 0


def test_sparse_width_without_shape_is_largest_key_plus_one():
    data = frame(record_bytes([1.0, 2.0], keys=[0, 4])) + frame(record_bytes([3.0], keys=[2]))
    X, _ = recordio.read(data)
    assert X.shape == (2, 5)
    assert X.toarray().tolist() == [[1, 0, 0, 0, 2], [0, 0, 3, 0, 0]]
    X, _ = recordio.read(data, feature_dim=8)
    assert X.shape == (2, 8)


def test_value_with_more_than_one_field_reads_as_the_protobuf_runtime_reads_it():
    """The runtime merges a repeated float32_tensor (values concatenated) and lets another oneof
    member replace it; the fast path must hand such a Value to the reference, not read the first
    field and ignore the rest."""
    first, second = Value(), Value()
    first.float32_tensor.values.extend([1.0, 2.0])
    second.float32_tensor.values.extend([3.0])
    other = Value()
    other.float64_tensor.values.extend([4.0])
    for value in (
        first.SerializeToString() + second.SerializeToString(),
        first.SerializeToString() + other.SerializeToString(),
        first.SerializeToString() + b"\x01",
    ):  # field 0: not a valid message
        entry = b"\x0a\x06values\x12" + bytes([len(value)]) + value
        data = frame(b"\x0a" + bytes([len(entry)]) + entry)
        outcomes = []
        for read_fast in (True, False):
            try:
                X, _ = recordio.read(data, fast=read_fast)
                outcomes.append(X.tobytes())
            except recordio.RecordIOError as e:
                outcomes.append(str(e))
        assert outcomes[0] == outcomes[1]


def test_mixed_dense_and_sparse_records_give_csr_keeping_dense_values():
    data = frame(record_bytes([1.0, 0.0, 2.0])) + frame(record_bytes([5.0], keys=[1], shape=[3]))
    X, _ = recordio.read(data)
    assert sp.issparse(X)
    assert X.toarray().tolist() == [[1, 0, 2], [0, 5, 0]]
    _assert_same(recordio.read(data), recordio.read(data, fast=False))


@pytest.mark.parametrize("chunk_size", [64, 1000, 1 << 20])
@pytest.mark.parametrize("batch_size", [1, 7, 100, 1000])
def test_iter_batches_equals_read(chunk_size, batch_size):
    X = _dense(np.float32, n=230, d=5)
    y = _labels(np.float32, 230)
    data = _bytes(recordio.write_dense, X, y)
    batches = list(recordio.iter_batches(io.BytesIO(data), batch_size, chunk_size=chunk_size))
    assert all(b[0].shape[0] == batch_size for b in batches[:-1])
    assert 0 < batches[-1][0].shape[0] <= batch_size
    assert np.concatenate([b[0] for b in batches]).tobytes() == X.tobytes()
    assert np.concatenate([b[1] for b in batches]).tobytes() == y.tobytes()


def test_iter_batches_sparse_keeps_the_declared_width():
    X = sp.random(100, 50, density=0.02, format="csr", random_state=1, dtype=np.float32)
    data = _bytes(recordio.write_sparse, X)
    batches = list(recordio.iter_batches(io.BytesIO(data), 16, chunk_size=128))
    assert all(sp.issparse(b) and b.shape[1] == 50 for b, _ in batches)
    assert np.array_equal(sp.vstack([b for b, _ in batches]).toarray(), X.toarray())


def test_sources_path_file_object_bytes_and_fifo(tmp_path):
    X = _dense(np.float32, n=2000, d=17)
    path = tmp_path / "data.pbr"
    recordio.write_dense(path, X)
    data = path.read_bytes()
    for source in (path, str(path), data, bytearray(data), memoryview(data), io.BytesIO(data)):
        assert recordio.read(source)[0].tobytes() == X.tobytes()
    with open(path, "rb") as f:
        assert recordio.read(f)[0].tobytes() == X.tobytes()
    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as w:
            for i in range(0, len(data), 1000):  # dribble it in small writes
                w.write(data[i : i + 1000])

    writer = threading.Thread(target=feed)
    writer.start()
    got = np.concatenate([b for b, _ in recordio.iter_batches(fifo, 300, chunk_size=4096)])
    writer.join()
    assert got.tobytes() == X.tobytes()


def test_multipart_records_are_reassembled_as_dmlc_core_does():
    magic = magic_as_float32()
    values = [1.0, magic, 2.0, magic, magic, 3.0] * 5
    for shift in range(4):  # put the magic word at every alignment inside the payload
        payload = record_bytes([0.5] * shift + values, label=1.0)
        data = dmlc_frames(payload) + frame(record_bytes([0.0] * (shift + len(values)), label=2.0))
        assert data.count(b"\x0a\x23\xd7\xce") >= 2
        X, y = recordio.read(data)
        expected = np.array([0.5] * shift + values, np.float32)
        assert X[0].tobytes() == expected.tobytes()
        assert y.tolist() == [1.0, 2.0]
        _assert_same((X, y), recordio.read(data, fast=False))
        _assert_same((X, y), recordio.read(io.BytesIO(data), chunk_size=32))


def test_int32_writer_rejects_values_that_do_not_fit():
    with pytest.raises(recordio.RecordIOError, match="does not fit in int32"):
        recordio.write_dense(io.BytesIO(), np.array([[2**31]], np.int64))
    with pytest.raises(recordio.RecordIOError, match="unsupported dtype bool"):
        recordio.write_dense(io.BytesIO(), np.ones((2, 2), bool))
    with pytest.raises(recordio.RecordIOError, match="2-D"):
        recordio.write_dense(io.BytesIO(), np.ones(3, np.float32))
    with pytest.raises(recordio.RecordIOError, match="one label per row"):
        recordio.write_dense(io.BytesIO(), np.ones((3, 2), np.float32), labels=np.ones(2))


def test_responses_round_trip():
    outputs = {
        "closest_cluster": np.array([1, 0, 2], np.float32),
        "distance_to_cluster": np.array([0.5, 1.25, 3.0], np.float32),
    }
    decoded = recordio.decode_response(recordio.encode_response(outputs))
    assert set(decoded) == set(outputs)
    for key in outputs:
        assert decoded[key].tobytes() == outputs[key].tobytes()
    projection = {"projection": np.arange(6, dtype=np.float32).reshape(3, 2)}
    assert recordio.decode_response(recordio.encode_response(projection))["projection"].shape == (3, 2)
    single = {"projection": np.arange(3, dtype=np.float32).reshape(3, 1)}
    assert recordio.decode_response(recordio.encode_response(single), vector_keys=("projection",))[
        "projection"
    ].shape == (3, 1)
    record = _records(recordio.encode_response(outputs))[1]
    assert len(record.features) == 0
    assert list(record.label["closest_cluster"].float32_tensor.values) == [0.0]


def test_response_encoder_checks_shapes_and_matches_the_runtime_at_the_edges():
    with pytest.raises(ValueError, match="at least one named output"):
        recordio.encode_response({})
    with pytest.raises(ValueError, match="same number of rows"):
        recordio.encode_response({"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match="1-D or 2-D"):
        recordio.encode_response({"a": np.ones((2, 2, 2), np.float32)})
    for outputs in (
        {"a": np.ones(0, np.float32)},
        {"a": np.ones((3, 0), np.float32)},
        {"a": np.array([1, 2], np.int64)},
        {"a": np.ones((2, 40), np.float64)},
    ):
        assert recordio.encode_response(outputs) == reference.encode_response(outputs)


def test_dense_records_of_varying_sizes_use_the_general_copy():
    # uids of different lengths put the values at irregular offsets (no strided shortcut)
    rows = RNG.standard_normal((40, 6)).astype(np.float32)
    data = b"".join(frame(record_bytes(row.tolist(), label=float(i), uid="x" * (i % 7))) for i, row in enumerate(rows))
    X, y = recordio.read(data)
    assert X.tobytes() == rows.tobytes() and y.tolist() == list(range(40))
    _assert_same((X, y), recordio.read(data, fast=False))


def test_concurrent_reads_and_writes_from_threads_agree():
    """Large inputs split their rows over threads; callers on several threads at once (a
    threaded server, say) must still each get their own exact result."""
    from concurrent.futures import ThreadPoolExecutor

    X = RNG.standard_normal((60_000, 8)).astype(np.float32)
    y = RNG.standard_normal(60_000).astype(np.float32)
    data = _bytes(recordio.write_dense, X, y)

    def round_trip(_):
        written = _bytes(recordio.write_dense, X, y)
        Xr, yr = recordio.read(written)
        return written == data and Xr.tobytes() == X.tobytes() and yr.tobytes() == y.tobytes()

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(round_trip, range(8)))


def test_signalling_nans_keep_every_bit_on_both_paths():
    bits = np.array([0x7F800001, 0xFFC00123, 0x7FC00000, 0x3F800000], np.uint32)
    values = bits.view(np.float32)
    X = values.reshape(1, 4)
    data = _bytes(recordio.write_dense, X, values[:1])
    for fast in (True, False):
        Xr, yr = recordio.read(data, fast=fast)
        assert Xr.view(np.uint32).tolist() == [bits.tolist()]
        assert yr.view(np.uint32).tolist() == [0x7F800001]


def test_large_reads_work_in_a_forked_child():
    """A gunicorn worker is a fork of a process that may already have used the thread pool."""
    X = RNG.standard_normal((40_000, 4)).astype(np.float32)
    data = _bytes(recordio.write_dense, X)
    assert recordio.read(data)[0].tobytes() == X.tobytes()  # the parent's pool now exists
    pid = os.fork()
    if pid == 0:  # child: must not wait for the parent's threads
        ok = recordio.read(data)[0].tobytes() == X.tobytes()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
