"""The server's fast paths against the references they stand in for: the small-CSV parser
against the numba CSV decoder, the RecordIO response encoder the server calls
(smalgo.recordio.encode_response) against the protobuf runtime's (smalgo.recordio.reference),
and the JSON number formatting against json.dumps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smalgo import recordio
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.csv import iter_csv_blocks
from smalgo.recordio import reference as recordio_reference
from smalgo.serve import decoding
from smalgo.serve.encoding import encode_response
from smalgo.serve.media import CSV, JSON, JSONLINES, RECORDIO_PROTOBUF

# Cells in the fast path's alphabet: plain decimals, exponents, and near misses of both.
cell = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.17e}"),
    st.integers(-(10**25), 10**25).map(str),
    st.from_regex(r"[+-]?[0-9]{0,3}\.?[0-9]{0,3}([eE][+-]?[0-9]{0,3})?", fullmatch=True),
    st.sampled_from(
        ["1e39", "-3.5e38", "3.4028235e38", "1e-50", "-0", ".5", "5.", "+.5e-3", "", "-", "1e", "1..2", "1-2"]
    ),
)
line_end = st.sampled_from(["\n", "\r\n", "\r", "\n\n"])


@st.composite
def small_csv(draw):
    width = draw(st.integers(1, 5))
    rows = draw(st.lists(st.lists(cell, min_size=width, max_size=width), min_size=1, max_size=4))
    ends = [draw(line_end) for _ in rows]
    if draw(st.booleans()):
        ends[-1] = ""
    body = "".join(",".join(row) + end for row, end in zip(rows, ends, strict=True)).encode()
    return body, draw(st.sampled_from([width, max(width - 1, 1), width + 1]))


def reference_decode(body: bytes, feature_dim: int):
    try:
        blocks = [X for X, _ in iter_csv_blocks(body, label_size=0, feature_dim=feature_dim)]
    except UserError:
        return None
    return np.concatenate(blocks) if blocks else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_csv())
def test_small_csv_fast_path_reads_what_the_decoder_reads(case):
    body, feature_dim = case
    fast = decoding._decode_small_csv(body, feature_dim)
    if fast is None:
        return  # the decoder decides (and words the error)
    expected = reference_decode(body, feature_dim)
    assert expected is not None, f"the fast path accepted {body!r}, which the decoder refuses"
    assert fast.dtype == np.float32 and fast.flags.c_contiguous
    np.testing.assert_array_equal(fast.view(np.uint32), expected.view(np.uint32))


def test_small_csv_fast_path_leaves_the_unusual_to_the_decoder():
    for body in (b"nan,1\n", b"inf,1\n", b"1_0,1\n", b" 1,2\n", b"1,2\n" * 300, b"1e39,2\n", b"1,,2\n"):
        assert decoding._decode_small_csv(body, 2) is None, body
    assert decoding._decode_small_csv(b"1.5,2\r\n\r\n-3,4e1", 2).tolist() == [[1.5, 2.0], [-3.0, 40.0]]


def test_decoders_answer_float32_rows():
    rows = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    bodies = {
        CSV: "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows).encode(),
        JSON: json.dumps({"instances": [{"features": row} for row in rows.tolist()]}).encode(),
        JSONLINES: "".join(json.dumps(row) + "\n" for row in rows.tolist()).encode(),
    }
    for media_type, body in bodies.items():
        X = decoding.decode_request(body, media_type, 4).X
        assert X.dtype == np.float32 and X.flags.c_contiguous
        np.testing.assert_array_equal(X, rows)


output_arrays = st.integers(1, 20).flatmap(
    lambda n: st.dictionaries(
        st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=150),
        st.one_of(
            st.lists(st.floats(width=32), min_size=n, max_size=n).map(lambda v: np.array(v, np.float32)),
            st.integers(1, 40).flatmap(
                lambda w: st.lists(st.floats(width=32), min_size=n * w, max_size=n * w).map(
                    lambda v: np.array(v, np.float32).reshape(n, w)
                )
            ),
        ),
        min_size=1,
        max_size=3,
    )
)


@settings(max_examples=60, deadline=None)
@given(output_arrays)
def test_recordio_responses_decode_as_the_reference_encoder_writes_them(outputs):
    ours = recordio.encode_response(outputs)
    reference = recordio_reference.encode_response(outputs)
    assert len(ours) == len(reference)  # the same records; only the label map's order may differ
    vector_keys = tuple(name for name, array in outputs.items() if array.ndim == 2)
    decoded = recordio.decode_response(ours, vector_keys=vector_keys)
    expected = recordio.decode_response(reference, vector_keys=vector_keys)
    assert set(decoded) == set(outputs)
    for name in outputs:
        np.testing.assert_array_equal(decoded[name].view(np.uint32), expected[name].view(np.uint32))
    if len(outputs) == 1:
        assert ours == reference


def test_recordio_response_of_one_output_is_byte_identical():
    outputs = {"projection": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert recordio.encode_response(outputs) == recordio_reference.encode_response(outputs)


@pytest.mark.parametrize("media_type", [JSON, JSONLINES, CSV])
def test_text_responses_hold_every_float32_exactly(media_type):
    values = np.array([0.1, 1 / 3, 3e38, -1e-45, 7.0, np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    outputs = {"closest_cluster": values, "projection": np.stack([values, values[::-1]], axis=1)}
    body, content_type = encode_response(outputs, media_type, json_key="predictions", batch_mode=False)
    assert content_type == media_type
    text = body.decode()
    if media_type == CSV:
        rows = [[float(v) for v in line.split(",")] for line in text.splitlines()]
        first, second = [row[0] for row in rows], [row[1:] for row in rows]
    else:
        rows = json.loads(text)["predictions"] if media_type == JSON else [json.loads(x) for x in text.splitlines()]
        first, second = [row["closest_cluster"] for row in rows], [row["projection"] for row in rows]
        # The numbers are written as json.dumps writes them (NaN and Infinity included).
        assert rows == json.loads(json.dumps(rows))
    np.testing.assert_array_equal(np.array(first, np.float32).view(np.uint32), values.view(np.uint32))
    np.testing.assert_array_equal(np.array(second, np.float32), outputs["projection"])


def test_outputs_of_other_dtypes_are_written_as_float32():
    body, _ = encode_response(
        {"closest_cluster": np.array([2], np.int64), "distance_to_cluster": np.array([0.1])},
        JSON,
        json_key="predictions",
        batch_mode=False,
    )
    assert json.loads(body) == {
        "predictions": [{"closest_cluster": 2.0, "distance_to_cluster": float(np.float32(0.1))}]
    }
    body, _ = encode_response(
        {"projection": np.ones((1, 2), np.float64)}, RECORDIO_PROTOBUF, json_key="projections", batch_mode=False
    )
    assert recordio.decode_response(body, vector_keys=("projection",))["projection"].tolist() == [[1.0, 1.0]]
