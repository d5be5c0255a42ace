"""The server for real: `python -m smalgo.serve` (gunicorn, preloaded model, forked workers) in a
subprocess on a free loopback port: /ping, requests, limits, SIGTERM with a request in flight,
start-up failures, and SageMaker Python SDK v2 clients."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_serve_support import (
    FEATURES,
    ServerProcess,
    damaged_model,
    expected_outputs,
    free_port,
    train_sample_models,
)

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.registry import get_algorithm

REPO = Path(__file__).resolve().parents[1]
SDK_PYTHON = REPO / "benchmarks" / ".venv-sdk" / "bin" / "python"
SDK_CLIENT = REPO / "tests" / "sdk_client.py"
ROWS = np.random.default_rng(5).normal(0, 8, (6, FEATURES)).astype(np.float32)


def csv_of(rows) -> bytes:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("served_models")
    return train_sample_models(base)


@pytest.fixture(scope="module")
def servers(model_dirs, tmp_path_factory):
    logs = tmp_path_factory.mktemp("server_logs")
    started = {
        name: ServerProcess(
            path, logs / f"{name}.log", SAGEMAKER_MODEL_SERVER_WORKERS="2", SAGEMAKER_MAX_PAYLOAD_IN_MB="1"
        )
        for name, path in model_dirs.items()
    }
    try:
        yield {name: server.wait_until_ready() for name, server in started.items()}
    finally:
        for server in started.values():
            server.kill()


def test_ping_and_a_request(servers, model_dirs):
    server = servers["kmeans"]
    status, _, body = server.request("GET", "/ping")
    assert (status, body) == (200, b"")
    status, headers, body = server.request("POST", "/invocations", csv_of(ROWS), {"Content-Type": "text/csv"})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    predictions = json.loads(body)["predictions"]
    expected = expected_outputs(model_dirs["kmeans"], ROWS)
    assert [p["closest_cluster"] for p in predictions] == expected["closest_cluster"].tolist()
    assert np.array_equal(
        np.array([p["distance_to_cluster"] for p in predictions], np.float32), expected["distance_to_cluster"]
    )
    status, _, body = server.request("GET", "/execution-parameters")
    assert status == 200
    assert json.loads(body) == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}
    log = server.log()
    assert "Loaded the kmeans model" in log and "warmed it up" in log
    assert log.index("Loaded the kmeans model") < log.index("Booting worker")  # loaded before forking


def test_bad_requests_keep_the_connection_and_the_server(servers):
    connection = http.client.HTTPConnection("127.0.0.1", servers["kmeans"].port, timeout=30)
    try:
        for body, content_type, status in [
            (b"1,2,3\n", "text/csv", 400),
            (b"<x/>", "text/xml", 415),
            (csv_of(ROWS), "text/csv", 200),
            (b"", "text/csv", 400),
        ]:
            connection.request("POST", "/invocations", body, {"Content-Type": content_type})
            response = connection.getresponse()
            answer = json.loads(response.read())
            assert response.status == status, answer
            assert ("error" in answer) == (status != 200)
    finally:
        connection.close()


def test_payload_limit_with_and_without_content_length(servers):
    server = servers["kmeans"]
    too_large = csv_of(np.ones((1, FEATURES))) * 70_000  # over 1 MiB
    status, _, body = server.request("POST", "/invocations", too_large, {"Content-Type": "text/csv"})
    assert status == 413 and "SAGEMAKER_MAX_PAYLOAD_IN_MB" in json.loads(body)["error"]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:  # chunked: no Content-Length, so the limit is found while reading
        chunks = (too_large[i : i + 65536] for i in range(0, len(too_large), 65536))
        connection.request("POST", "/invocations", chunks, {"Content-Type": "text/csv"}, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413 and "over the 1 MB" in json.loads(response.read())["error"]
    finally:
        connection.close()
    status, _, _ = server.request("POST", "/invocations", csv_of(ROWS), {"Content-Type": "text/csv"})
    assert status == 200


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(model_dirs, tmp_path):
    server = ServerProcess(model_dirs["kmeans"], tmp_path / "server.log", SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        server.wait_until_ready()
        body = csv_of(np.tile(ROWS, (50, 1)))
        half = len(body) // 2
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body[:half]
            )
            time.sleep(0.5)  # the worker is now reading the body
            server.process.send_signal(15)
            time.sleep(0.5)
            client.sendall(body[half:])
            response = b""
            while chunk := client.recv(65536):
                response += chunk
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), response[:300]
        assert len(json.loads(payload)["predictions"]) == 50 * len(ROWS)
        returncode = server.process.wait(timeout=20)
        assert returncode == 0, server.log()
        assert "Handling signal: term" in server.log()
    finally:
        server.kill()


def test_sigterm_when_idle_exits_0_within_seconds(model_dirs, tmp_path):
    server = ServerProcess(model_dirs["pca"], tmp_path / "server.log", SAGEMAKER_MODEL_SERVER_WORKERS="2")
    try:
        server.wait_until_ready()
        assert server.request("POST", "/invocations", csv_of(ROWS), {"Content-Type": "text/csv"})[0] == 200
        returncode, seconds = server.terminate()
        assert returncode == 0, server.log()
        assert seconds < 5
    finally:
        server.kill()


@pytest.mark.parametrize(
    "env,model,message",
    [
        ({}, "missing", "smalgo serve: Model directory {model} does not exist"),
        (
            {"SAGEMAKER_MODEL_SERVER_WORKERS": "0"},
            "kmeans",
            "smalgo serve: SAGEMAKER_MODEL_SERVER_WORKERS='0' must be a positive integer.",
        ),
        ({"SMALGO_ALGORITHM": "pca"}, "kmeans", "smalgo serve: This image serves pca models"),
    ],
)
def test_startup_failures_exit_1_with_one_line_before_binding(model_dirs, tmp_path, env, model, message):
    model_dir = model_dirs.get(model, tmp_path / "missing")
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "smalgo.serve", str(model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, SAGEMAKER_BIND_TO_PORT=str(port), **env),
    )
    assert result.returncode == 1
    assert message.format(model=model_dir) in result.stderr
    assert "Traceback" not in result.stderr
    assert "Listening at" not in result.stderr


@pytest.mark.parametrize(
    "case", ["hyperparameters a list", "null k", "pickled centers", "truncated centers", "NaN singular values"]
)
def test_a_damaged_model_exits_1_with_one_line_naming_the_file_and_the_field(model_dirs, tmp_path, case):
    model_dir, named_file, fragment = damaged_model(model_dirs, case, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "smalgo.serve", str(model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, SAGEMAKER_BIND_TO_PORT=str(free_port())),
    )
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"smalgo serve: {named_file}") and fragment in line, line
    assert "allow_pickle" not in line


# --------------------------------------------------------------------------- SageMaker SDK v2


def sdk_answers(url: str, rows: np.ndarray, mode: str | None = None) -> dict:
    if not SDK_PYTHON.exists():
        pytest.fail(
            f"The SageMaker SDK v2 environment {SDK_PYTHON.parent.parent} is missing: create it with "
            f"`bash benchmarks/recordio/setup_sdk_env.sh` (or `make sdk-env`)."
        )
    mode_args = [mode] if mode else []
    result = subprocess.run(
        [str(SDK_PYTHON), str(SDK_CLIENT), *mode_args, url, json.dumps(rows.tolist())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def kmeans_rows(model_dir, X) -> list[dict]:
    expected = expected_outputs(model_dir, X)
    return [
        {"closest_cluster": float(c), "distance_to_cluster": float(d)}
        for c, d in zip(expected["closest_cluster"], expected["distance_to_cluster"], strict=True)
    ]


def test_sdk_v2_serializers_and_deserializers_kmeans(servers, model_dirs):
    answers = sdk_answers(servers["kmeans"].base_url + "/invocations", ROWS)
    rows = kmeans_rows(model_dirs["kmeans"], ROWS)
    one_row = kmeans_rows(model_dirs["kmeans"], ROWS[:1])
    assert answers["csv+json"] == {"predictions": rows}
    assert answers["json+json"] == {"predictions": rows}
    assert answers["json-one-row+json"] == {"predictions": one_row}
    records = [{name: [value] for name, value in row.items()} for row in rows]
    assert answers["recordio+recordio"] == records
    assert answers["recordio-one-row+recordio"] == [{name: [value] for name, value in one_row[0].items()}]
    assert answers["csv+recordio"] == records


def test_sdk_v2_serializers_and_deserializers_pca(servers, model_dirs):
    answers = sdk_answers(servers["pca"].base_url + "/invocations", ROWS)
    projections = expected_outputs(model_dirs["pca"], ROWS)["projection"].tolist()
    # One row alone is its own product (BLAS may round a matrix-vector product differently).
    one_row = expected_outputs(model_dirs["pca"], ROWS[:1])["projection"].tolist()
    assert answers["csv+json"] == {"projections": [{"projection": p} for p in projections]}
    assert answers["json+json"] == answers["csv+json"]
    assert answers["json-one-row+json"] == {"projections": [{"projection": one_row[0]}]}
    assert answers["recordio+recordio"] == [{"projection": p} for p in projections]
    assert answers["recordio-one-row+recordio"] == [{"projection": one_row[0]}]
    assert answers["csv+recordio"] == answers["recordio+recordio"]


def train_linear_learner(model_dir: Path, predictor_type: str, **hyperparameters: str):
    """A small Linear Learner trained in-process, on labels from a linear rule, and saved."""
    rng = np.random.default_rng(3)
    X = rng.normal(0, 1, (400, FEATURES)).astype(np.float32)
    scores = X @ rng.normal(0, 1, (FEATURES, 3))
    labels = scores[:, 0] > 0 if predictor_type == "binary_classifier" else scores.argmax(axis=1)
    algorithm = get_algorithm("linear-learner")
    hp = algorithm.hyperparameters.parse(
        {"predictor_type": predictor_type, "feature_dim": str(FEATURES), "mini_batch_size": "100", **hyperparameters}
    )
    model = algorithm.train(hp, InMemoryData({"train": (X, labels.astype(np.float32))}))
    model.save(model_dir)
    return model


@pytest.mark.parametrize(
    "predictor_type, hyperparameters",
    [("binary_classifier", {}), ("multiclass_classifier", {"num_classes": "3"})],
    ids=["binary", "multiclass"],
)
def test_sdk_v2_linear_learner_predictor_reads_the_answers(tmp_path, predictor_type, hyperparameters):
    """sagemaker.LinearLearnerPredictor(...).predict(rows), with the SDK's default serializer and
    deserializer for it, reads a score and a predicted_label per row: those of model.predict."""
    model = train_linear_learner(tmp_path / "model", predictor_type, **hyperparameters)
    rows = ROWS / np.float32(8)  # on the training data's scale, so that scores are not all 0 or 1
    server = ServerProcess(tmp_path / "model", tmp_path / "server.log", SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        answers = sdk_answers(server.wait_until_ready().base_url + "/invocations", rows, "linear-learner-predictor")
    finally:
        server.kill()
    records = answers.pop("records")
    assert answers == {
        "serializer": "RecordSerializer",
        "deserializer": "RecordDeserializer",
        "content_type": "application/x-recordio-protobuf",
        "accept": ["application/x-recordio-protobuf"],
    }
    expected = model.predict(Batch(rows))
    assert len(records) == len(rows)
    for i, record in enumerate(records):
        assert {"score", "predicted_label"} <= set(record), record
        for key in ("score", "predicted_label"):
            assert record[key]["tensor"] == "float32_tensor", (i, key, record[key])
            np.testing.assert_array_equal(
                np.array(record[key]["values"], np.float32),
                np.atleast_1d(expected[key][i]).astype(np.float32),
                err_msg=f"row {i}, {key}",
            )


@pytest.mark.parametrize("predictor_type", ["binary_classifier", "regressor"])
def test_sdk_v2_factorization_machines_predictor_reads_the_answers(tmp_path, predictor_type):
    """sagemaker.FactorizationMachinesPredictor(...).predict(rows), with the SDK's default
    serializer and deserializer for it, reads a score (and, for binary_classifier, a
    predicted_label) per row: those of model.predict."""
    rng = np.random.default_rng(4)
    X = rng.normal(0, 1, (400, FEATURES)).astype(np.float32)
    signal = X[:, 0] * X[:, 1] + X[:, 2]
    labels = (signal > 0) if predictor_type == "binary_classifier" else signal
    algorithm = get_algorithm("factorization-machines")
    hp = algorithm.hyperparameters.parse(
        {"predictor_type": predictor_type, "feature_dim": str(FEATURES), "num_factors": "2", "mini_batch_size": "50"}
    )
    model = algorithm.train(hp, InMemoryData({"train": (X, labels.astype(np.float32))}))
    model.save(tmp_path / "model")
    rows = ROWS / np.float32(8)
    server = ServerProcess(tmp_path / "model", tmp_path / "server.log", SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        answers = sdk_answers(
            server.wait_until_ready().base_url + "/invocations", rows, "factorization-machines-predictor"
        )
    finally:
        server.kill()
    records = answers.pop("records")
    assert answers["deserializer"] == "RecordDeserializer" and answers["accept"] == ["application/x-recordio-protobuf"]
    expected = model.predict(Batch(rows))
    assert set(expected) == ({"score", "predicted_label"} if predictor_type == "binary_classifier" else {"score"})
    assert len(records) == len(rows)
    for i, record in enumerate(records):
        assert set(record) == set(expected), record
        for key in expected:
            assert record[key]["tensor"] == "float32_tensor", (i, key, record[key])
            assert record[key]["values"] == [float(expected[key][i])], (i, key)


def raw_exchange(server, request: bytes) -> tuple[bytes, dict]:
    """Send `request` as raw bytes, half-close, and read the whole answer: (status line, JSON body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := client.recv(65536):
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(payload)


CHUNKED_HEAD = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
ONE_ROW = b"1,2,3,4\n"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"zz\r\n" + ONE_ROW + b"\r\n0\r\n\r\n", "chunked encoding is malformed: Invalid chunk size"),
        (b"8\r\n" + ONE_ROW + b"XX0\r\n\r\n", "chunked encoding is malformed: Invalid chunk terminator"),
        (b"10\r\n" + ONE_ROW, "body is incomplete: the connection ended inside a chunk"),
        (b"8\r\n" + ONE_ROW + b"\r\n", "body is incomplete: the connection ended inside a chunk or before the last"),
    ],
    ids=["bad-chunk-size", "missing-crlf", "ends-inside-a-chunk", "no-final-chunk"],
)
def test_a_malformed_chunked_body_is_a_400_and_the_server_goes_on(servers, body, message):
    status, answer = raw_exchange(servers["kmeans"], CHUNKED_HEAD + body)
    assert status == b"HTTP/1.1 400 BAD REQUEST" and message in answer["error"], answer
    assert servers["kmeans"].request("GET", "/ping")[0] == 200


def test_a_body_shorter_than_its_content_length_is_never_scored(servers):
    request = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 16\r\n\r\n" + ONE_ROW
    status, answer = raw_exchange(servers["kmeans"], request)
    assert status == b"HTTP/1.1 400 BAD REQUEST"
    assert (
        answer["error"]
        == "The request body is incomplete: Content-Length is 16 bytes, but the connection ended after 8."
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_content_encoding_is_refused_by_name_not_ignored(servers, encoding):
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        + f"Content-Encoding: {encoding}\r\nContent-Length: 8\r\n\r\n".encode()
        + ONE_ROW
    )
    status, answer = raw_exchange(servers["kmeans"], request)
    assert status == b"HTTP/1.1 415 UNSUPPORTED MEDIA TYPE"
    assert answer["error"].startswith(f"Content-Encoding '{encoding}' is not supported; send the body uncompressed")


def test_identity_content_encoding_is_plain(servers):
    status, _, body = servers["kmeans"].request(
        "POST", "/invocations", ONE_ROW, {"Content-Type": "text/csv", "Content-Encoding": "identity"}
    )
    assert status == 200 and len(json.loads(body)["predictions"]) == 1
