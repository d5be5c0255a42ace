"""Property-based fuzzing of the reader: random and mutated inputs never crash, hang, allocate
what the input did not pay for, or give numbers the protobuf runtime would not give.

For every input, `read` must either return arrays or raise RecordIOError, and the numba fast
path and the protobuf-runtime reference path must agree exactly (same arrays, or the same
error message). Bounded: a fixed number of examples, each under an alarm.
"""

from __future__ import annotations

import io
import signal

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recordio_helpers import dmlc_frames, frame, record_bytes

from smalgo import recordio
from smalgo.recordio import uniform

# No per-example deadline (a loaded CI machine makes timings meaningless); hangs are caught by
# the alarm in _check instead.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
HANG_SECONDS = 30


@pytest.fixture(autouse=True, scope="module")
def compiled_kernels():
    """Compile (or load from numba's cache) every kernel before the deadlines start counting."""
    data = frame(record_bytes([1.0, 2.0], label=1.0)) + dmlc_frames(record_bytes([3.0, 4.0], label=0.0))
    for fast in (True, False):
        recordio.read(data, fast=fast)
        recordio.read(io.BytesIO(data), fast=fast, chunk_size=64)
    recordio.read(frame(record_bytes([1.0], keys=[2], shape=[3])) + frame(record_bytes([1.0, 2.0, 3.0])))
    recordio.read(frame(record_bytes([1.0, 2.0], label=1.0)) * 2)  # the uniform-layout path


def _outcome(source_factory, fast: bool):
    try:
        X, y = recordio.read(source_factory(), fast=fast, chunk_size=64)
    except recordio.RecordIOError as e:
        return ("error", str(e))
    if sp.issparse(X):
        assert X.dtype == np.float32 and X.indices.max(initial=-1) < X.shape[1]
        key = ("csr", X.shape, X.indptr.tobytes(), X.indices.tobytes(), X.data.tobytes())
    else:
        assert isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2
        key = ("dense", X.shape, X.tobytes())
    if y is not None:
        assert y.dtype == np.float32 and y.shape == (X.shape[0],)
    return key + (None if y is None else y.tobytes(),)


def _hang(signum, frame):
    raise AssertionError(f"reading took longer than {HANG_SECONDS} s: a hang")


def _check(data: bytes) -> None:
    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(HANG_SECONDS)
    try:
        outcomes = {
            _outcome(lambda: data, fast=True),
            _outcome(lambda: data, fast=False),
            _outcome(lambda: io.BytesIO(data), fast=True),
        }
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(outcomes) == 1, outcomes


floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
records = st.one_of(
    st.builds(
        lambda v, label: record_bytes(v, label=label), st.lists(floats, max_size=6), st.one_of(st.none(), floats)
    ),
    st.builds(
        lambda kv, w: record_bytes([v for _, v in kv], keys=[k for k, _ in kv], shape=[w]),
        st.lists(st.tuples(st.integers(0, 12), floats), max_size=4),
        st.integers(0, 14),
    ),
    st.builds(lambda v: record_bytes(v, dtype="float64"), st.lists(st.floats(width=64), max_size=4)),
    st.builds(
        lambda v, label: record_bytes(v, dtype="int32", label=label, label_dtype="int32"),
        st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4),
        st.integers(-(2**31), 2**31 - 1),
    ),
)


@st.composite
def streams(draw):
    payloads = draw(st.lists(records, min_size=1, max_size=5))
    return b"".join(dmlc_frames(p) if draw(st.booleans()) else frame(p) for p in payloads)


@st.composite
def uniform_streams(draw):
    """What dense writers produce, the input of read's uniform-layout path: float32 records of one
    width, all labelled or none, any bit patterns (widths past 32 give 2-byte lengths and padding)."""
    n = draw(st.integers(1, 6))
    width = draw(st.integers(1, 40))
    values = np.frombuffer(draw(st.binary(min_size=4 * n * width, max_size=4 * n * width)), np.float32)
    # Writable copies: the writer's kernels are compiled (and cached) for those.
    X = values.reshape(n, width).copy()
    labels = (
        np.frombuffer(draw(st.binary(min_size=4 * n, max_size=4 * n)), np.float32).copy()
        if draw(st.booleans())
        else None
    )
    if draw(st.booleans()):  # as the protobuf runtime (and so the SDK) writes them
        return b"".join(
            frame(record_bytes(row.tolist(), label=None if labels is None else float(labels[i])))
            for i, row in enumerate(X)
        )
    out = io.BytesIO()
    recordio.write_dense(out, X, labels)
    return out.getvalue()


def _mutate(draw, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@st.composite
def mutated_streams(draw):
    return _mutate(draw, draw(streams()))


@st.composite
def mutated_uniform_streams(draw):
    return _mutate(draw, draw(uniform_streams()))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data):
    _check(data)


@FUZZ
@given(st.binary(max_size=120))
def test_random_payloads_inside_valid_frames(payload):
    _check(frame(payload) + frame(record_bytes([1.0])))


@FUZZ
@given(streams())
def test_valid_streams_read_identically_on_both_paths(data):
    _check(data)


@FUZZ
@given(mutated_streams())
def test_mutated_streams(data):
    _check(data)


@FUZZ
@given(uniform_streams())
def test_uniform_streams(data):
    before = uniform.applied
    _check(data)
    assert uniform.applied > before  # the in-memory read took the uniform path


@FUZZ
@given(mutated_uniform_streams())
def test_mutated_uniform_streams(data):
    _check(data)
