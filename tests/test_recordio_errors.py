"""Bad input: every problem is a RecordIOError naming the record, its byte offset and the reason."""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pytest
from recordio_helpers import MAGIC, TESTDATA, frame, record_bytes

from smalgo import recordio
from smalgo.recordio import RecordIOError

GOOD = frame(record_bytes([1.0, 2.0, 3.0], label=1.0))
GOOD_LEN = len(GOOD)


def _fails(data, match, index=None, offset=None, **kwargs):
    """Both paths and both source kinds (in memory, streamed in chunks) give the same error."""
    messages = set()
    for source in (data, io.BytesIO(data)):
        for fast in (True, False):
            with pytest.raises(RecordIOError, match=match) as info:
                recordio.read(
                    source if isinstance(source, bytes) else io.BytesIO(data), fast=fast, chunk_size=64, **kwargs
                )
            err = info.value
            assert isinstance(err, ValueError)
            if index is not None:
                assert err.record_index == index and f"record {index}" in str(err)
            if offset is not None:
                assert err.byte_offset == offset and f"byte offset {offset}" in str(err)
            messages.add(str(err))
    assert len(messages) == 1, messages


def test_wrong_magic():
    _fails(GOOD + b"\x00\x01\x02\x03" + GOOD[4:], "bad magic number 00 01 02 03", index=1, offset=GOOD_LEN)


def test_truncated_record():
    _fails(GOOD + GOOD[:-6], "truncated: the frame header announces", index=1, offset=GOOD_LEN)


def test_truncated_header():
    _fails(GOOD + MAGIC + b"\x05", "not a whole frame header", index=1, offset=GOOD_LEN)


def test_length_past_the_end_costs_no_allocation():
    lying = MAGIC + struct.pack("<I", (1 << 29) - 1) + b"\x00" * 64
    _fails(GOOD + lying, "announces a 536870911-byte payload", index=1, offset=GOOD_LEN)
    tracemalloc.start()
    try:
        with pytest.raises(RecordIOError):
            recordio.read(io.BytesIO(GOOD + lying))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the chunk buffer, not the 512 MiB the header asked for


def test_invalid_continuation_flags():
    _fails(GOOD + MAGIC + struct.pack("<I", (5 << 29) | 4) + b"\0" * 4, "invalid continuation flag 5", index=1)
    _fails(GOOD + frame(b"abcd", cflag=3), "never started", index=1, offset=GOOD_LEN)
    _fails(frame(b"abcd", cflag=1) + GOOD, "inside an unfinished multi-part record", index=0)
    _fails(GOOD + frame(b"abcd", cflag=1), "ends inside a multi-part record", index=1, offset=GOOD_LEN)


def test_payload_that_is_not_a_record():
    _fails(GOOD + frame(b"\x00\x00\x00\x00"), "not a valid aialgs.data.Record", index=1, offset=GOOD_LEN)
    _fails(GOOD + frame(b"\xff\xff\xff"), "not a valid aialgs.data.Record", index=1)


def test_sdk_first_10_rows_file_is_rejected():
    path = TESTDATA / "sagemaker-python-sdk" / "first_10_rows_recordio"
    with pytest.raises(
        RecordIOError, match="record 0 at byte offset 0: payload is not a valid aialgs.data.Record"
    ) as info:
        recordio.read(path)
    assert str(path) in str(info.value)
    with pytest.raises(RecordIOError):
        next(recordio.iter_batches(path, 5))


def test_record_without_values_feature():
    from smalgo.recordio.record_pb2 import Record

    r = Record()
    r.features["pixels"].float32_tensor.values.append(1.0)
    _fails(GOOD + frame(r.SerializeToString()), r"no 'values' feature \(feature keys: 'pixels'\)", index=1)
    r = Record()
    r.features["values"].bytes.value.append(b"jpeg")
    _fails(frame(r.SerializeToString()), "holds Bytes", index=0)


def test_keys_outside_the_shape():
    _fails(
        GOOD + frame(record_bytes([1.0], keys=[3], shape=[3])),
        r"key 3 is outside the record's shape \[3\]",
        index=1,
        offset=GOOD_LEN,
    )


def test_duplicate_keys_in_a_sparse_record():
    # Summed silently by scipy before: refused by both paths, naming the record and the key.
    first = frame(record_bytes([1.0, 2.0], keys=[0, 2], shape=[6]))
    for keys in ([1, 3, 3], [3, 1, 3], [5, 3, 0, 3]):
        values = [1.0] * len(keys)
        _fails(
            first + frame(record_bytes(values, keys=keys, shape=[6])),
            r"duplicate key 3 in features; each feature index may appear once",
            index=1,
            offset=len(first),
        )
    # Out of order but distinct keys are fine (and keep their values).
    X, _ = recordio.read(frame(record_bytes([1.0, 2.0, 3.0], keys=[4, 0, 2], shape=[6])))
    assert X.toarray().tolist() == [[2.0, 0.0, 3.0, 0.0, 1.0, 0.0]]


def test_the_first_problem_in_stream_order_wins_over_a_later_duplicate_key():
    data = frame(record_bytes([1.0], keys=[7], shape=[3])) + frame(record_bytes([1.0, 2.0], keys=[1, 1], shape=[3]))
    _fails(data, r"key 7 is outside", index=0)
    data = frame(record_bytes([1.0, 2.0], keys=[1, 1], shape=[3])) + frame(record_bytes([1.0], keys=[7], shape=[3]))
    _fails(data, r"duplicate key 1", index=0)


def test_training_refuses_duplicate_keys(job):
    from smalgo.containers.job import run_training

    good = b"".join(frame(record_bytes([float(i), 1.0], keys=[0, 3], shape=[5])) for i in range(30))
    bad = frame(record_bytes([1.0, 2.0], keys=[4, 4], shape=[5]))
    job.hyperparameters(k=2, feature_dim=5, mini_batch_size=10)
    job.channel("train", "application/x-recordio-protobuf", files={"a.pbr": good + bad + good})
    assert run_training(job.paths, "kmeans") == 1
    failure = job.failure()
    path = job.paths.channel_dir("train") / "a.pbr"
    assert failure.startswith(f"Channel train: {path}: record 30 at byte offset {len(good)}: duplicate key 4"), failure
    assert job.model_files() == []


def test_keys_and_values_counts_differ():
    _fails(frame(record_bytes([1.0, 2.0], keys=[0], shape=[3])), "1 keys but 2 values", index=0)


def test_absurd_shape():
    _fails(frame(record_bytes([1.0], keys=[0], shape=[2**40])), "shape of 1099511627776 features exceeds", index=0)
    _fails(frame(record_bytes([1.0], keys=[2**40])), "key 1099511627776 exceeds", index=0)


def test_dense_records_of_different_widths():
    data = GOOD * 3 + frame(record_bytes([1.0, 2.0], label=0.0))
    _fails(data, "has 2 dense values, but the width is 3 .set by record 0.", index=3, offset=3 * GOOD_LEN)


def test_dense_value_count_disagrees_with_its_shape():
    _fails(frame(record_bytes([1.0, 2.0], shape=[3])), "2 values but its shape says 3", index=0)


def test_feature_dim_disagrees():
    _fails(GOOD * 2, r"has 3 dense values, but the width is 4 \(set by feature_dim=4\)", index=0, feature_dim=4)


def test_labels_on_some_records_only():
    _fails(GOOD + frame(record_bytes([1.0, 2.0, 3.0])), "has no label but earlier records do", index=1)


def test_label_with_several_values():
    from smalgo.recordio.record_pb2 import Record

    r = Record()
    r.features["values"].float32_tensor.values.extend([1.0])
    r.label["values"].float32_tensor.values.extend([1.0, 2.0])
    _fails(frame(r.SerializeToString()), "label must be a single value, found 2 values", index=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        next(recordio.iter_batches(GOOD, 0))
    with pytest.raises(ValueError, match="feature_dim"):
        recordio.read(GOOD, feature_dim=-1)
    with pytest.raises(TypeError):
        recordio.read(12345)
    with pytest.raises(RecordIOError, match="cannot open"):
        recordio.read("/nonexistent/file.pbr")


def test_errors_carry_the_source_path(tmp_path):
    path = tmp_path / "bad.pbr"
    path.write_bytes(GOOD + b"garbage!")
    with pytest.raises(RecordIOError) as info:
        recordio.read(path)
    assert str(info.value).startswith(f"{path}: record 1 at byte offset {GOOD_LEN}: bad magic")


def test_uid_and_metadata_are_ignored():
    data = frame(record_bytes([1.0, 2.0], uid="row-1"))
    assert recordio.read(data)[0].tolist() == [[1.0, 2.0]]
    assert np.array_equal(recordio.read(data)[0], recordio.read(data, fast=False)[0])
