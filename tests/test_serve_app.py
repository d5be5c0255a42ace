"""The inference app in-process (Flask's test client): every request and response form for a
k-means and a PCA model, content negotiation, every error case followed by a request that still
works, /ping and /execution-parameters, batch mode, and model loading."""

from __future__ import annotations

import io
import json
import logging
from functools import partial

import numpy as np
import pytest
import scipy.sparse as sp
from test_serve_support import DAMAGED_MODELS, FEATURES, damaged_model, expected_outputs, train_sample_models

from smalgo import recordio
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.linear_learner import ALGORITHM as LL
from smalgo.algorithms.registry import ALGORITHMS
from smalgo.algorithms.runtime import device
from smalgo.recordio.parallel import available_cpus
from smalgo.serve import ModelError, ServerSettings, SettingsError, create_app

ROWS = np.array([[1.5, 16.0, 14.0, 23.0], [-3.25, 0.0, 7.5, 1e-3], [10.0, -10.0, 2.0, 4.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve_models")
    return train_sample_models(base)


def make_client(model_dir, **env):
    settings = ServerSettings.from_environment(model_dir, environ={k: str(v) for k, v in env.items()})
    return create_app(settings=settings).test_client()


@pytest.fixture(scope="module")
def clients(model_dirs):
    return {name: make_client(path) for name, path in model_dirs.items()}


@pytest.fixture(params=sorted(ALGORITHMS))
def algorithm(request):
    return request.param


def post(client, body, content_type="text/csv", accept=None, **headers):
    if content_type is not None:
        headers["Content-Type"] = content_type
    if accept is not None:
        headers["Accept"] = accept
    return client.post("/invocations", data=body, headers=headers)


def csv_of(rows) -> bytes:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()


def recordio_dense(rows, labels=None) -> bytes:
    out = io.BytesIO()
    recordio.write_dense(out, rows, labels)
    return out.getvalue()


def recordio_sparse(rows) -> bytes:
    out = io.BytesIO()
    recordio.write_sparse(out, sp.csr_matrix(rows))
    return out.getvalue()


def outputs_of(response, algorithm: str, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The response body as {output name: float32 array}, whatever its form; `names`: the
    outputs the model gives, when a subset of its algorithm's (XGBoost's score alone)."""
    assert response.status_code == 200, response.data
    names = names or ALGORITHMS[algorithm].output_names
    media_type = response.headers["Content-Type"].split(";")[0]
    if media_type == "application/x-recordio-protobuf":
        return recordio.decode_response(response.data, vector_keys=("projection",))
    text = response.get_data(as_text=True)
    if media_type == "application/json":
        document = json.loads(text)
        assert list(document) == [ALGORITHMS[algorithm].json_response_key]
        rows = document[ALGORITHMS[algorithm].json_response_key]
    elif media_type == "application/jsonlines":
        assert text.endswith("\n")
        rows = [json.loads(line) for line in text.split("\n")[:-1]]
    elif media_type == "text/csv":
        assert text.endswith("\n")
        values = [[float(v) for v in line.split(",")] for line in text.split("\n")[:-1]]
        # One line a record: a lone output is a vector (PCA's projection), several are one
        # number each, in order (cluster,distance; score,predicted_label).
        rows = [{names[0]: v} if len(names) == 1 else dict(zip(names, v, strict=True)) for v in values]
    else:
        raise AssertionError(f"unexpected Content-Type {media_type}")
    for row in rows:
        assert tuple(row) == names  # exactly the documented fields, in the documented order
    return {name: np.array([row[name] for row in rows], dtype=np.float32) for name in names}


def assert_answers(response, algorithm, model_dirs, X, sparse=False):
    """The response holds exactly what the model predicts for X (given as CSR when the request
    was sparse: PCA's sparse product rounds differently from its dense one)."""
    X = np.asarray(X, dtype=np.float32)
    expected = expected_outputs(model_dirs[algorithm], sp.csr_matrix(X) if sparse else X)
    got = outputs_of(response, algorithm, tuple(expected))
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name].reshape(expected[name].shape), expected[name], err_msg=name)


# --------------------------------------------------------------------------- /ping and requests


def test_ping_answers_200_with_nothing_to_do(clients):
    for client in clients.values():
        response = client.get("/ping")
        assert response.status_code == 200
        assert response.data == b""


@pytest.mark.parametrize(
    "content_type",
    [
        "text/csv",
        "text/csv;label_size=0",
        "text/CSV; label_size=0",
        "TEXT/CSV; Label_Size=0; charset=UTF-8",
        "text/csv; charset=us-ascii",
    ],
)
def test_csv_requests(clients, model_dirs, algorithm, content_type):
    assert_answers(post(clients[algorithm], csv_of(ROWS), content_type), algorithm, model_dirs, ROWS)


@pytest.mark.parametrize(
    "body",
    [
        b"1.5,16.0,14,23.0",
        b"1.5,16.0,14,23.0\r\n",
        b"\n1.5, 16.0 ,14,23.0\n\n",
        b"+1.5,1.6e1,14.,2.3E+1\n",
    ],
)
def test_csv_spellings_of_one_record(clients, model_dirs, algorithm, body):
    assert_answers(post(clients[algorithm], body), algorithm, model_dirs, ROWS[:1])


def test_csv_body_larger_than_the_fast_path(clients, model_dirs, algorithm):
    rows = np.random.default_rng(3).normal(0, 5, (500, FEATURES)).astype(np.float32)
    body = csv_of(rows)
    assert len(body) > 256
    assert_answers(post(clients[algorithm], body), algorithm, model_dirs, rows)


def test_csv_special_values(clients, model_dirs, monkeypatch):
    # k-means declares finite_values_only: nan is refused, naming the line and column.
    assert_error(
        post(clients["kmeans"], b"1,2,3,4\n\nnan,1,2,3\n", accept="application/json"),
        400,
        "text/csv body, line 3, column 1: nan is not a finite number; this model takes finite numbers only",
    )
    # An algorithm that takes NaN (finite_values_only = False) gets it through unchanged; the
    # outputs stay well-formed JSON for Python.
    monkeypatch.setattr(clients["kmeans"].application.extensions["smalgo.model"].algorithm, "finite_values_only", False)
    response = post(clients["kmeans"], b"nan,1,2,3\n", accept="application/json")
    assert response.status_code == 200
    prediction = json.loads(response.data)["predictions"][0]
    assert np.isnan(prediction["distance_to_cluster"])


def _sparse_recordio_with(value) -> bytes:
    X = sp.csr_matrix(np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 4.0]], np.float32))
    X.data[3] = value  # record 1, feature 3
    return recordio_sparse(X)


def _dense_with(value) -> np.ndarray:
    rows = ROWS.copy()
    rows[2, 1] = value
    return rows


NON_FINITE_CASES = {
    # name: (body, content type, where the message says the value is, the value as shown)
    "csv nan": (b"1,2,3,4\n1,2,3,NaN\n", "text/csv", "text/csv body, line 2, column 4", "nan"),
    "csv inf": (b"1,2,3,4\r\n\r\n-inf,2,3,4\n", "text/csv", "text/csv body, line 3, column 1", "-inf"),
    "csv beyond float32": (b"1,2,1e39,4\n", "text/csv", "text/csv body, line 1, column 3", "inf"),
    "json NaN": (
        b'{"instances": [[1, 2, 3, 4], {"features": [1, NaN, 3, 4]}]}',
        "application/json",
        "application/json body, instance 1, feature 1",
        "nan",
    ),
    "json Infinity": (
        b"[1, 2, 3, -Infinity]",
        "application/json",
        "application/json body, instance 0, feature 3",
        "-inf",
    ),
    "json beyond float32": (b"[[1, 2, 3, 4], [1, 2, 1e39, 4]]", "application/json", "instance 1, feature 2", "inf"),
    "json integer beyond double": (
        b"[[1, 2, 3, 4], [1, 2, 1" + b"0" * 400 + b", 4]]",
        "application/json",
        "instance 1, feature 2",
        "inf",
    ),
    "json sparse": (
        json.dumps({"data": {"features": {"keys": [0, 3], "shape": [4], "values": [1.0, float("nan")]}}}).encode(),
        "application/json",
        "application/json body, instance 0, feature 3",
        "nan",
    ),
    "jsonlines": (
        b"[1, 2, 3, 4]\n\n[1, 2, 3, 4]\n[Infinity, 2, 3, 4]\n",
        "application/jsonlines",
        "application/jsonlines body, line 4, feature 0",
        "inf",
    ),
    "recordio dense": (
        recordio_dense(_dense_with(np.nan)),
        "application/x-recordio-protobuf",
        "application/x-recordio-protobuf body: record 2, feature 1",
        "nan",
    ),
    "recordio sparse": (
        _sparse_recordio_with(np.inf),
        "application/x-recordio-protobuf",
        "application/x-recordio-protobuf body: record 1, feature 3",
        "inf",
    ),
}


@pytest.mark.parametrize("case", list(NON_FINITE_CASES))
def test_non_finite_values_are_refused_when_the_algorithm_says_so(clients, model_dirs, monkeypatch, case):
    body, content_type, where, shown = NON_FINITE_CASES[case]
    for name in ("kmeans", "pca"):
        response = post(clients[name], body, content_type)
        assert_error(response, 400, f"{where}: {shown} is not a finite number", "this model takes finite numbers only")
        assert ("float32 range" in json.loads(response.data)["error"]) == ("inf" in shown)
    # finite_values_only = False: the same bodies are scored, the values passed on unchanged.
    model = clients["kmeans"].application.extensions["smalgo.model"]
    monkeypatch.setattr(model.algorithm, "finite_values_only", False)
    seen = []
    original = model.model.predict
    monkeypatch.setattr(model.model, "predict", lambda batch: seen.append(batch.X) or original(batch))
    assert post(clients["kmeans"], body, content_type).status_code == 200
    X = seen[0].toarray() if sp.issparse(seen[0]) else seen[0]
    assert not np.isfinite(X).all()
    assert np.isnan(X).any() if shown == "nan" else np.isinf(X).any()


def test_finite_values_pass_the_check(clients, model_dirs):
    for body, content_type in (
        (csv_of(ROWS), "text/csv"),
        (json.dumps({"instances": ROWS.tolist()}).encode(), "application/json"),
        (recordio_dense(ROWS), "application/x-recordio-protobuf"),
        (b"[1e-45, -0.0, 0, 3]", "application/json"),
    ):
        assert post(clients["kmeans"], body, content_type).status_code == 200


BOOLEAN_CASES = {
    "dense among numbers": (
        b'{"instances": [[1, 2, 3, 4], {"features": [1.5, 2.0, true, 4.0]}]}',
        "application/json",
        "application/json body, instance 1: features[2] is true, a boolean, not a number",
    ),
    "dense single instance": (b"[0, false, 1, 1]", "application/json", "application/json body: features[1] is false"),
    "sparse values": (
        b'{"instances": [{"data": {"features": {"keys": [0, 2], "shape": [4], "values": [1.0, true]}}}]}',
        "application/json",
        "application/json body, instance 0: values[1] is true, a boolean, not a number",
    ),
    "dense among sparse": (
        b'{"instances": [{"data": {"features": {"keys": [0], "values": [1.0]}}}, [1.0, 2.0, 3.0, false]]}',
        "application/json",
        "application/json body, instance 1: features[3] is false, a boolean",
    ),
    "jsonlines": (
        b'[1, 2, 3, 4]\n\n{"features": [1, 2, 3, true]}\n',
        "application/jsonlines",
        "application/jsonlines body, line 3: features[3] is true, a boolean, not a number",
    ),
}


@pytest.mark.parametrize("case", list(BOOLEAN_CASES))
def test_json_booleans_are_not_numbers(clients, case):
    body, content_type, message = BOOLEAN_CASES[case]
    assert_error(post(clients["kmeans"], body, content_type), 400, message, "send 1 or 0 instead")


def test_json_strings_holding_true_do_not_slow_or_break_numbers(clients, model_dirs):
    # "true" inside a string makes the decoder look at every value: the numbers still pass.
    body = json.dumps({"instances": [{"features": ROWS[0].tolist(), "configuration": {"k": "true"}}]}).encode()
    assert_answers(post(clients["kmeans"], body, "application/json"), "kmeans", model_dirs, ROWS[:1])


def test_json_integers_beyond_64_bits_are_the_floats_they_are(clients, model_dirs, monkeypatch):
    model = clients["kmeans"].application.extensions["smalgo.model"]
    seen = []
    original = model.model.predict
    monkeypatch.setattr(model.model, "predict", lambda batch: seen.append(batch.X) or original(batch))
    big = 2**70 + 1
    for body in (
        json.dumps({"instances": [[1, big, 3, 4]]}).encode(),
        json.dumps({"instances": [{"data": {"features": {"keys": [1], "shape": [4], "values": [big]}}}]}).encode(),
    ):
        response = post(clients["kmeans"], body, "application/json")
        assert response.status_code == 200, response.data
    dense = seen[0]
    assert dense[0, 1] == np.float32(float(big))
    assert seen[1].toarray()[0, 1] == np.float32(float(big))


def test_csv_request_errors_do_not_speak_of_training(clients):
    response = post(clients["kmeans"], b"a,b,c,d\n1,2,3,4\n")
    assert_error(response, 400, "text/csv body, line 1, column 1: 'a' is not a number", "CSV data has no header row")
    assert "training" not in json.loads(response.data)["error"]
    response = post(clients["kmeans"], b"1,2,,4\n")
    assert_error(response, 400, "text/csv body, line 1, column 3: empty cell; every cell must hold a number.")
    assert "nan" not in json.loads(response.data)["error"]


def test_recordio_duplicate_keys_are_refused(clients):
    from recordio_helpers import frame, record_bytes

    body = frame(record_bytes([1.0], keys=[0], shape=[4])) + frame(record_bytes([1.0, 2.0], keys=[3, 3], shape=[4]))
    assert_error(
        post(clients["kmeans"], body, "application/x-recordio-protobuf"),
        400,
        "application/x-recordio-protobuf body: record 1 at byte offset",
        "duplicate key 3 in features",
    )


def json_instance_forms(row):
    values = [float(v) for v in row]
    keys = [i for i, v in enumerate(values) if v != 0]
    return {
        "features": {"features": values},
        "data.features.values": {"data": {"features": {"values": values}}},
        "data.features bare array": {"data": {"features": values}},
        "sparse": {"data": {"features": {"keys": keys, "shape": [len(values)], "values": [values[k] for k in keys]}}},
        "sparse without shape": {"data": {"features": {"keys": keys, "values": [values[k] for k in keys]}}},
        "bare array": values,
        "with configuration": {"configuration": {}, "features": values},
    }


@pytest.mark.parametrize("form", list(json_instance_forms(ROWS[0])))
def test_json_instance_forms(clients, model_dirs, algorithm, form):
    instances = [json_instance_forms(row)[form] for row in ROWS]
    body = json.dumps({"instances": instances}).encode()
    assert_answers(
        post(clients[algorithm], body, "application/json"),
        algorithm,
        model_dirs,
        ROWS,
        sparse=form.startswith("sparse"),
    )


def test_json_mixed_dense_and_sparse_instances(clients, model_dirs, algorithm):
    forms = list(json_instance_forms(ROWS[0]))
    instances = [json_instance_forms(row)[forms[i % len(forms)]] for i, row in enumerate(np.tile(ROWS, (3, 1)))]
    body = json.dumps({"instances": instances}).encode()
    assert_answers(
        post(clients[algorithm], body, "application/json"), algorithm, model_dirs, np.tile(ROWS, (3, 1)), sparse=True
    )


@pytest.mark.parametrize(
    "document",
    [
        {"features": ROWS[0].tolist()},
        {"data": {"features": {"values": ROWS[0].tolist()}}},
        ROWS[0].tolist(),  # the SDK's JSONSerializer on a 1-D array
    ],
)
def test_json_single_instance_bodies(clients, model_dirs, algorithm, document):
    response = post(clients[algorithm], json.dumps(document).encode(), "application/json; charset=utf-8")
    assert_answers(response, algorithm, model_dirs, ROWS[:1])


def test_json_list_of_lists(clients, model_dirs, algorithm):
    # What the SageMaker SDK's JSONSerializer makes of a 2-D numpy array.
    assert_answers(
        post(clients[algorithm], json.dumps(ROWS.tolist()).encode(), "application/json"), algorithm, model_dirs, ROWS
    )


@pytest.mark.parametrize("content_type", ["application/jsonlines", "application/x-jsonlines", "Application/JSONLines"])
def test_jsonlines_requests(clients, model_dirs, algorithm, content_type):
    forms = list(json_instance_forms(ROWS[0]))
    lines = [json.dumps(json_instance_forms(row)[forms[i]]) for i, row in enumerate(ROWS)]
    body = ("\n".join(lines[:2]) + "\n\n" + lines[2] + "\r\n").encode()  # a blank line, a CRLF
    assert_answers(post(clients[algorithm], body, content_type), algorithm, model_dirs, ROWS)
    sparse_lines = [json.dumps(json_instance_forms(row)["sparse"]) for row in ROWS]
    assert_answers(
        post(clients[algorithm], "\n".join(sparse_lines).encode(), content_type),
        algorithm,
        model_dirs,
        ROWS,
        sparse=True,
    )


@pytest.mark.parametrize("encoding", ["dense float32", "dense float64", "dense with labels", "sparse"])
def test_recordio_requests(clients, model_dirs, algorithm, encoding):
    body = {
        "dense float32": lambda: recordio_dense(ROWS),
        "dense float64": lambda: recordio_dense(ROWS.astype(np.float64)),
        "dense with labels": lambda: recordio_dense(ROWS, np.arange(len(ROWS), dtype=np.float32)),
        "sparse": lambda: recordio_sparse(ROWS),
    }[encoding]()
    assert_answers(
        post(clients[algorithm], body, "application/x-recordio-protobuf"),
        algorithm,
        model_dirs,
        ROWS,
        sparse=encoding == "sparse",
    )


# --------------------------------------------------------------------------- responses


@pytest.mark.parametrize(
    "accept,media_type",
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/jsonlines", "application/jsonlines"),
        ("application/x-recordio-protobuf", "application/x-recordio-protobuf"),
        ("text/csv", "text/csv"),
        ("TEXT/CSV; charset=utf-8", "text/csv"),
        ("text/csv;q=0.5, application/jsonlines", "application/jsonlines"),
        ("image/png, text/*", "text/csv"),
        ("application/*", "application/json"),
        ("application/json;q=0, text/csv", "text/csv"),
    ],
)
def test_accept_negotiation(clients, model_dirs, algorithm, accept, media_type):
    response = post(clients[algorithm], csv_of(ROWS), accept=accept)
    assert response.headers["Content-Type"].split(";")[0] == media_type
    assert_answers(response, algorithm, model_dirs, ROWS)


def test_documented_response_shapes(clients):
    """The exact forms of the SageMaker docs (spec sections 4.2, 4.3)."""
    km = json.loads(post(clients["kmeans"], csv_of(ROWS[:2])).data)
    assert list(km) == ["predictions"] and len(km["predictions"]) == 2
    assert all(isinstance(v, float) for p in km["predictions"] for v in p.values())
    pca = json.loads(post(clients["pca"], csv_of(ROWS[:2])).data)
    assert list(pca) == ["projections"] and len(pca["projections"]) == 2
    assert all(len(p["projection"]) == 3 for p in pca["projections"])  # the sample job's num_components
    csv_lines = post(clients["kmeans"], csv_of(ROWS), accept="text/csv").get_data(as_text=True).splitlines()
    assert len(csv_lines) == 3 and all(len(line.split(",")) == 2 for line in csv_lines)
    assert float(csv_lines[0].split(",")[0]).is_integer()  # cluster,distance


def test_default_accept_from_the_environment(model_dirs):
    client = make_client(model_dirs["kmeans"], SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT="text/csv")
    assert post(client, csv_of(ROWS)).headers["Content-Type"].startswith("text/csv")
    assert post(client, csv_of(ROWS), accept="*/*").headers["Content-Type"].startswith("text/csv")
    assert post(client, csv_of(ROWS), accept="application/json").headers["Content-Type"].startswith("application/json")


# --------------------------------------------------------------------------- errors


def assert_error(response, status: int, *fragments: str):
    assert response.status_code == status, response.data
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(response.data)
    assert body["status"] == status
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


ERROR_CASES = {
    # name: (body, content type, accept, status, fragments of the message)
    "empty body": (b"", "text/csv", None, 400, ["request body is empty"]),
    "csv not a number": (b"1,2,3,4\n1,2,abc,4\n", "text/csv", None, 400, ["line 2, column 3", "'abc' is not a number"]),
    "csv empty cell": (b"1,,3,4", "text/csv", None, 400, ["line 1, column 2", "empty cell"]),
    "csv one feature too few": (b"1,2,3\n", "text/csv", None, 400, ["line 1", "3 columns, expected 4"]),
    "csv one feature too many": (b"1,2,3,4\n1,2,3,4,5\n", "text/csv", None, 400, ["line 2", "5 columns, expected 4"]),
    "csv only blank lines": (b"\n\n", "text/csv", None, 400, ["no records"]),
    "csv header row": (b"a,b,c,d\n1,2,3,4\n" * 20, "text/csv", None, 400, ["line 1, column 1", "no header row"]),
    "json not json": (b'{"instances": [1, 2,', "application/json", None, 400, ["not valid JSON", "line 1, column"]),
    "json wrong count": (
        json.dumps({"instances": [{"features": [1, 2, 3, 4]}, {"features": [1, 2, 3, 4, 5]}]}).encode(),
        "application/json",
        None,
        400,
        ["instance 1: 5 features; the model takes 4"],
    ),
    "json string value": (
        json.dumps({"instances": [{"features": [1, 2, "a", 4]}]}).encode(),
        "application/json",
        None,
        400,
        ['instance 0: features[2] is "a", not a number'],
    ),
    "json null value": (
        b"[[1, 2, 3, 4], [1, null, 3, 4]]",
        "application/json",
        None,
        400,
        ["instance 1: features[1] is null, not a number"],
    ),
    "json boolean instance": (b'{"instances": [true]}', "application/json", None, 400, ["instance 0: a boolean"]),
    "json no features": (
        b'{"instances": [{"feature": [1, 2, 3, 4]}]}',
        "application/json",
        None,
        400,
        ['instance 0: an object with keys ["feature"] and no "features"'],
    ),
    "json no instances": (b'{"instances": []}', "application/json", None, 400, ['"instances" is empty']),
    "json empty list": (b"[]", "application/json", None, 400, ["empty list"]),
    "json unknown object": (
        b'{"rows": [[1, 2, 3, 4]]}',
        "application/json",
        None,
        400,
        ['keys ["rows"]', '"instances"'],
    ),
    "json scalar": (b"42", "application/json", None, 400, ["a number; expected"]),
    "json deeply nested": (b"[" * 100000 + b"]" * 100000, "application/json", None, 400, ["application/json body"]),
    "json sparse key out of range": (
        json.dumps({"instances": [{"data": {"features": {"keys": [0, 9], "values": [1, 2], "shape": [4]}}}]}).encode(),
        "application/json",
        None,
        400,
        ["instance 0: keys[1] is 9", "from 0 to 3"],
    ),
    "json sparse shape": (
        json.dumps({"instances": [{"data": {"features": {"keys": [0], "values": [1], "shape": [5]}}}]}).encode(),
        "application/json",
        None,
        400,
        ['instance 0: "shape" is [5]', "takes 4 features"],
    ),
    "json sparse lengths": (
        json.dumps({"instances": [{"data": {"features": {"keys": [0, 1], "values": [1], "shape": [4]}}}]}).encode(),
        "application/json",
        None,
        400,
        ['"keys" has 2 entries but "values" has 1'],
    ),
    "json sparse repeated key": (
        json.dumps({"instances": [{"data": {"features": {"keys": [1, 1], "values": [1, 2], "shape": [4]}}}]}).encode(),
        "application/json",
        None,
        400,
        ["key 1 appears more than once"],
    ),
    "jsonlines bad line": (
        b'{"features": [1, 2, 3, 4]}\n\n{"features": [1, 2, 3]\n',
        "application/jsonlines",
        None,
        400,
        ["application/jsonlines body, line 3: not valid JSON"],
    ),
    "jsonlines wrong count": (
        b"[1, 2, 3, 4]\n[1, 2, 3]\n",
        "application/jsonlines",
        None,
        400,
        ["line 2: 3 features; the model takes 4"],
    ),
    "recordio garbage": (
        b"this is not recordio",
        "application/x-recordio-protobuf",
        None,
        400,
        ["application/x-recordio-protobuf body", "record 0"],
    ),
    "recordio wrong width": (
        recordio_dense(np.ones((2, 5), np.float32)),
        "application/x-recordio-protobuf",
        None,
        400,
        ["record 0", "has 5 dense values, but the width is 4 (set by feature_dim=4)"],
    ),
    "recordio truncated": (
        recordio_dense(np.ones((3, 4), np.float32))[:-5],
        "application/x-recordio-protobuf",
        None,
        400,
        ["record 2", "truncated"],
    ),
    "unsupported content type": (
        b"<x/>",
        "application/xml",
        None,
        415,
        ["Content-Type 'application/xml' is not supported", "text/csv, application/json"],
    ),
    "no content type": (b"1,2,3,4", None, None, 415, ["no Content-Type header"]),
    "csv with a label column": (b"0,1,2,3,4", "text/csv;label_size=1", None, 415, ["label_size must be 0"]),
    "unsupported charset": (b"1,2,3,4", "text/csv; charset=latin-1", None, 415, ["charset 'latin-1'"]),
    "unsupported accept": (
        b"1,2,3,4",
        "text/csv",
        "image/png",
        406,
        ["Accept 'image/png'", "application/json, application/jsonlines"],
    ),
    "accept refuses everything": (b"1,2,3,4", "text/csv", "text/csv;q=0", 406, ["names no type"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_4xx_naming_the_problem_and_the_server_goes_on(clients, model_dirs, case):
    body, content_type, accept, status, fragments = ERROR_CASES[case]
    client = clients["kmeans"]
    assert_error(post(client, body, content_type, accept), status, *fragments)
    assert_answers(post(client, csv_of(ROWS)), "kmeans", model_dirs, ROWS)


def test_payload_over_the_limit_is_413(model_dirs):
    client = make_client(model_dirs["kmeans"], SAGEMAKER_MAX_PAYLOAD_IN_MB=1)
    line = csv_of(np.ones((1, FEATURES)))
    body = line * ((1 << 20) // len(line) + 1)  # one line over 1 MiB
    assert_error(post(client, body), 413, f"({len(body):,} bytes) is over the 1 MB", "SAGEMAKER_MAX_PAYLOAD_IN_MB")
    assert_answers(post(client, line * 30_000), "kmeans", model_dirs, np.ones((30_000, FEATURES)))


def test_unknown_paths_and_methods_answer_json(clients, model_dirs):
    client = clients["kmeans"]
    assert_error(client.get("/models"), 404, "GET /models")
    assert_error(client.get("/invocations"), 405, "GET /invocations")
    assert_error(client.post("/ping"), 405, "POST /ping")
    assert_answers(post(client, csv_of(ROWS)), "kmeans", model_dirs, ROWS)


def test_a_model_refusing_a_batch_is_400(model_dirs, monkeypatch):
    client = make_client(model_dirs["kmeans"])
    model = client.application.extensions["smalgo.model"].model

    def refuse(batch):
        raise UserError("expected 4 features, got 3")

    monkeypatch.setattr(model, "predict", refuse)
    assert_error(
        post(client, csv_of(ROWS)),
        400,
        "The kmeans model cannot score this text/csv request",
        "expected 4 features, got 3",
    )


def test_a_bug_is_500_with_the_traceback_logged(model_dirs, monkeypatch, caplog):
    client = make_client(model_dirs["kmeans"])
    model = client.application.extensions["smalgo.model"].model
    original = model.predict

    def broken(batch):
        raise RuntimeError("a bug")

    monkeypatch.setattr(model, "predict", broken)
    with caplog.at_level(logging.ERROR, logger="smalgo.serve"):
        assert_error(post(client, csv_of(ROWS)), 500, "Internal server error (RuntimeError)")
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)
    monkeypatch.setattr(model, "predict", original)
    assert_answers(post(client, csv_of(ROWS)), "kmeans", model_dirs, ROWS)


# --------------------------------------------------------------------------- execution parameters


def test_execution_parameters_defaults(clients):
    response = clients["kmeans"].get("/execution-parameters")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.data) == {
        "MaxConcurrentTransforms": available_cpus(),
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


@pytest.mark.parametrize(
    "env,expected",
    [
        (
            {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3"},
            {"MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 20},
        ),
        (
            {"SAGEMAKER_MODEL_SERVER_WORKERS": "5"},
            {"MaxConcurrentTransforms": 5, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6},
        ),
        (
            {"SAGEMAKER_BATCH_STRATEGY": "single_record", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": " 2 "},
            {"MaxConcurrentTransforms": 2, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6},
        ),
    ],
)
def test_execution_parameters_from_the_environment(model_dirs, env, expected):
    client = make_client(model_dirs["kmeans"], **env)
    assert json.loads(client.get("/execution-parameters").data) == expected


def test_create_app_reads_the_process_environment(model_dirs, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "12")
    monkeypatch.setenv("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "7")
    client = create_app(model_dirs["pca"]).test_client()
    assert json.loads(client.get("/execution-parameters").data) == {
        "MaxConcurrentTransforms": 7,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 12,
    }


@pytest.mark.parametrize(
    "env,fragment",
    [
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "six"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB='six' must be a positive integer"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB='0' must be a positive integer"),
        (
            {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1025"},
            "SAGEMAKER_MAX_PAYLOAD_IN_MB='1025' is above SageMaker's limit of 1024; valid values: an integer from 1 to",
        ),
        (
            {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "3601"},
            "SAGEMAKER_MODEL_SERVER_TIMEOUT='3601' is above SageMaker's limit of 3600; valid values: an integer from 1",
        ),
        ({"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "-1"}, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS='-1'"),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "many"}, "SAGEMAKER_MODEL_SERVER_WORKERS='many'"),
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "1.5"}, "SAGEMAKER_MODEL_SERVER_TIMEOUT='1.5'"),
        ({"SAGEMAKER_BIND_TO_PORT": "70000"}, "SAGEMAKER_BIND_TO_PORT='70000' must be a port number"),
        ({"SAGEMAKER_BATCH": "maybe"}, "SAGEMAKER_BATCH='maybe' must be true or false"),
        ({"SAGEMAKER_BATCH_STRATEGY": "ALL"}, "SAGEMAKER_BATCH_STRATEGY='ALL' must be MULTI_RECORD or SINGLE_RECORD"),
        ({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/html"}, "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT='text/html'"),
        ({"SMALGO_DEVICE": "tpu"}, "SMALGO_DEVICE='tpu' is not a device; valid values: auto, cpu, gpu"),
    ],
)
def test_bad_settings_name_the_variable(env, fragment):
    with pytest.raises(SettingsError) as error:
        ServerSettings.from_environment("/opt/ml/model", environ=env)
    assert fragment in str(error.value)


def test_a_gpu_server_without_the_cuda_driver_does_not_start(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(device, "CUDA_DRIVER_LIBRARY", "libcuda-that-does-not-exist.so.1")
    with pytest.raises(SettingsError) as error:
        ServerSettings.from_environment("/opt/ml/model", environ={"SMALGO_DEVICE": "gpu"})
    assert str(error.value).startswith("SMALGO_DEVICE=gpu, but no CUDA driver (libcuda-that-does-not-exist.so.1")
    # auto and cpu start anywhere
    for choice in ("auto", "cpu", "CPU"):
        ServerSettings.from_environment("/opt/ml/model", environ={"SMALGO_DEVICE": choice})


def test_settings_defaults_and_base_dir():
    settings = ServerSettings.from_environment(environ={"SAGEMAKER_BASE_DIR": "/job"})
    assert str(settings.model_dir) == "/job/model"
    assert (settings.port, settings.timeout_seconds, settings.workers) == (8080, 60, available_cpus())
    assert settings.max_payload_bytes == 6 * 1024 * 1024
    assert not settings.batch_mode
    assert str(ServerSettings.from_environment(environ={}).model_dir) == "/opt/ml/model"


# --------------------------------------------------------------------------- batch transform


@pytest.fixture(scope="module")
def batch_clients(model_dirs):
    return {name: make_client(path, SAGEMAKER_BATCH="true") for name, path in model_dirs.items()}


MANY_ROWS = np.random.default_rng(11).normal(0, 5, (57, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("accept", ["application/jsonlines", "application/json", "text/csv"])
@pytest.mark.parametrize("content_type", ["text/csv", "application/jsonlines"])
def test_batch_mode_writes_one_line_per_record(batch_clients, model_dirs, algorithm, accept, content_type):
    if content_type == "text/csv":
        body = csv_of(MANY_ROWS)
    else:
        body = "".join(json.dumps({"features": row}) + "\n" for row in MANY_ROWS.tolist()).encode()
    response = post(batch_clients[algorithm], body, content_type, accept)
    text = response.get_data(as_text=True)
    lines = text.split("\n")
    assert text.endswith("\n") and len(lines) == len(MANY_ROWS) + 1 and lines[-1] == ""
    # JSON in batch mode is JSON Lines: AssembleWith=Line then keeps one record per line.
    expected_type = "text/csv" if accept == "text/csv" else "application/jsonlines"
    assert response.headers["Content-Type"].startswith(expected_type)
    assert_answers(response, algorithm, model_dirs, MANY_ROWS)
    # What AssembleWith=Line makes of two mini-batches: still one line per record, in order.
    second = post(batch_clients[algorithm], body, content_type, accept).get_data(as_text=True)
    assert (text + second).count("\n") == 2 * len(MANY_ROWS)


def test_batch_mode_recordio_one_record_per_record(batch_clients, model_dirs, algorithm):
    response = post(
        batch_clients[algorithm],
        recordio_dense(MANY_ROWS),
        "application/x-recordio-protobuf",
        "application/x-recordio-protobuf",
    )
    assert_answers(response, algorithm, model_dirs, MANY_ROWS)


def test_batch_mode_errors_name_the_record(batch_clients, model_dirs):
    body = csv_of(MANY_ROWS[:5]) + b"1,2,3\n" + csv_of(MANY_ROWS[5:])
    assert_error(post(batch_clients["kmeans"], body), 400, "line 6", "3 columns, expected 4")
    assert_answers(post(batch_clients["kmeans"], csv_of(MANY_ROWS), accept="text/csv"), "kmeans", model_dirs, MANY_ROWS)


# --------------------------------------------------------------------------- loading the model


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        create_app(tmp_path / "nowhere")


def test_model_dir_without_a_model(tmp_path):
    (tmp_path / "model.bin").write_text("?")
    with pytest.raises(ModelError, match=r"model.json is missing \(the directory holds: model.bin\)"):
        create_app(tmp_path)
    # With an xgboost-model file, the directory holds XGBoost's own format: every file is read as
    # such (AWS's image reads them all, as an ensemble), and one that is not is refused by name.
    (tmp_path / "xgboost-model").write_text("?")
    with pytest.raises(ModelError, match=r"model.bin is not an XGBoost model"):
        create_app(tmp_path)


def test_unreadable_model_json(tmp_path):
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot be read as JSON"):
        create_app(tmp_path)


def test_unknown_algorithm(tmp_path):
    # object2vec: a SageMaker built-in that smalgo does not provide.
    (tmp_path / "model.json").write_text(json.dumps({"algorithm": "object2vec"}))
    served = ", ".join(sorted(ALGORITHMS))
    with pytest.raises(ModelError, match=f"names algorithm 'object2vec'; this server serves {served}"):
        create_app(tmp_path)


def test_model_of_another_algorithm_than_the_image(model_dirs):
    settings = ServerSettings.from_environment(model_dirs["kmeans"], environ={"SMALGO_ALGORITHM": "pca"})
    with pytest.raises(ModelError, match="This image serves pca models, but .* holds a kmeans model"):
        create_app(settings=settings)


def test_model_with_missing_arrays(model_dirs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((model_dirs["kmeans"] / "model.json").read_text())
    with pytest.raises(ModelError, match="broken/centers.npy cannot be read as a .npy array: .*No such file"):
        create_app(broken)


@pytest.mark.parametrize("case", sorted(DAMAGED_MODELS))
def test_a_damaged_model_is_refused_naming_the_file_and_the_field(model_dirs, tmp_path, case):
    model_dir, named_file, fragment = damaged_model(model_dirs, case, tmp_path)
    with pytest.raises(ModelError) as refused:
        create_app(model_dir)
    message = str(refused.value)
    assert named_file in message and fragment in message, message
    assert "\n" not in message
    assert "allow_pickle" not in message


def test_a_damaged_model_is_refused_by_the_algorithm_s_own_loader_too(model_dirs, tmp_path):
    model_dir, named_file, _ = damaged_model(model_dirs, "NaN singular values", tmp_path)
    with pytest.raises(UserError, match="singular_values.npy holds NaN"):
        ALGORITHMS["pca"].load(model_dir)


# --------------------------------------------------------------------------- linear learner's predictor types


@pytest.fixture(scope="module")
def linear_learner_clients(tmp_path_factory):
    """A served linear learner of each predictor type, trained on ROWS-like data of 4 features."""
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 5.0, (600, ROWS.shape[1])).astype(np.float32)
    score = X @ np.array([1.0, -0.5, 0.25, 0.1])
    labels = {
        "binary_classifier": (score > 0).astype(np.float32),
        "multiclass_classifier": np.digitize(score, [-2.0, 2.0]).astype(np.float32),
        "regressor": (score * 10 + 3).astype(np.float32),
    }
    served = {}
    for predictor_type, y in labels.items():
        raw = {"predictor_type": predictor_type, "feature_dim": "4", "epochs": "2", "num_models": "2"}
        if predictor_type == "multiclass_classifier":
            raw["num_classes"] = "3"
        hp = LL.hyperparameters.parse(raw)
        model = LL.train(hp, InMemoryData({"train": (X, y)}))
        model_dir = tmp_path_factory.mktemp(predictor_type)
        model.save(model_dir)
        served[predictor_type] = (make_client(model_dir), model)
    return served


@pytest.mark.parametrize("predictor_type", ["binary_classifier", "multiclass_classifier", "regressor"])
def test_linear_learner_answers_in_every_form(linear_learner_clients, predictor_type):
    """spec 4.1's outputs: score and predicted_label for binary, a score per class and
    predicted_label for multiclass, score alone for regression, in every response form."""
    client, model = linear_learner_clients[predictor_type]
    # BLAS may round the last bit differently for another batch shape or thread count.
    assert_same = partial(np.testing.assert_allclose, rtol=1e-6, atol=0)
    expected = model.predict(Batch(ROWS))
    names = list(expected)
    assert names == (["score"] if predictor_type == "regressor" else ["score", "predicted_label"])
    document = json.loads(post(client, csv_of(ROWS), accept="application/json").data)
    rows = document["predictions"]
    assert [list(row) for row in rows] == [names] * len(ROWS)
    for name in names:
        assert_same(np.array([row[name] for row in rows], np.float32), expected[name])
    lines = post(client, csv_of(ROWS), accept="application/jsonlines").get_data(as_text=True).splitlines()
    assert [json.loads(line) for line in lines] == rows
    body = post(
        client, recordio_dense(ROWS), "application/x-recordio-protobuf", accept="application/x-recordio-protobuf"
    )
    vectors = ("score",) if predictor_type == "multiclass_classifier" else ()
    records = recordio.decode_response(body.data, vector_keys=vectors)
    for name in names:
        assert_same(records[name], expected[name])
    csv_lines = post(client, csv_of(ROWS), accept="text/csv").get_data(as_text=True).splitlines()
    flattened = np.column_stack([expected[name].reshape(len(ROWS), -1) for name in names])
    assert_same(np.array([[float(v) for v in line.split(",")] for line in csv_lines]), flattened)
    # A sparse JSON instance (spec 3.4) is the row it stands for.
    sparse = {"instances": [{"data": {"features": {"keys": [0, 2], "shape": [4], "values": [1.5, 14.0]}}}]}
    answer = json.loads(post(client, json.dumps(sparse).encode(), "application/json").data)["predictions"][0]
    dense = model.predict(Batch(np.array([[1.5, 0.0, 14.0, 0.0]], np.float32)))
    for name in names:
        assert_same(np.float32(answer[name]), dense[name][0])


# --------------------------------------------------------------------------- inference pipelines


@pytest.mark.parametrize("media_type", ["application/json", "application/jsonlines", "application/x-recordio-protobuf"])
def test_a_pca_then_kmeans_pipeline_passes_pca_answers_on_as_they_are(model_dirs, tmp_path, media_type):
    # An inference pipeline hands PCA's answer, as it is, to the next container: k-means here,
    # trained on PCA's projections (so its feature_dim is PCA's num_components).
    pca_client = make_client(model_dirs["pca"])
    rows = np.random.default_rng(12).normal(0, 8, (40, FEATURES)).astype(np.float32)
    pca_model = ALGORITHMS["pca"].load(model_dirs["pca"])
    projections = pca_model.predict(Batch(rows))["projection"]
    kmeans = ALGORITHMS["kmeans"]
    hp = kmeans.hyperparameters.parse({"k": "3", "feature_dim": str(projections.shape[1]), "mini_batch_size": "20"})
    kmeans.train(hp, InMemoryData({"train": projections})).save(tmp_path / "kmeans")
    kmeans_client = make_client(tmp_path / "kmeans")

    body = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows[:5]).encode()
    pca_answer = pca_client.post("/invocations", data=body, headers={"Content-Type": "text/csv", "Accept": media_type})
    assert pca_answer.status_code == 200
    answer = kmeans_client.post(
        "/invocations", data=pca_answer.data, headers={"Content-Type": media_type, "Accept": "application/json"}
    )
    assert answer.status_code == 200, answer.data
    expected = kmeans.load(tmp_path / "kmeans").predict(Batch(projections[:5]))["closest_cluster"]
    assert [p["closest_cluster"] for p in json.loads(answer.data)["predictions"]] == expected.tolist()


def test_a_pipeline_answer_of_the_wrong_width_is_refused_naming_it(model_dirs):
    client = make_client(model_dirs["kmeans"])
    answer = recordio.encode_response({"projection": np.ones((2, FEATURES + 1), np.float32)})
    response = client.post("/invocations", data=answer, headers={"Content-Type": "application/x-recordio-protobuf"})
    assert_error(response, 400, f"'projection' vectors have {FEATURES + 1} values; the model takes {FEATURES} features")
    response = client.post(
        "/invocations",
        data=json.dumps({"projections": [{"projection": "x"}]}),
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, '"projection" is a string')
