"""Load: mixed good and bad requests at concurrency 16 against the real server (gunicorn on
loopback) for SMALGO_SERVE_LOAD_SECONDS (default 60): every good request answered correctly,
every bad one a 4xx with a JSON message, no 5xx, and resident memory (master + workers) growing
less than 10% from after the warm-up to the end."""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp
from test_serve_support import FEATURES, ServerProcess, train_kmeans

from smalgo import recordio
from smalgo.serve import ServerSettings, create_app

DURATION_SECONDS = float(os.environ.get("SMALGO_SERVE_LOAD_SECONDS", "60"))
CONCURRENCY = 16
WARM_UP_FRACTION = 0.2
MAX_MEMORY_GROWTH = 0.10
PAYLOAD_LIMIT_MB = 1


def csv_of(rows) -> bytes:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()


def recordio_of(rows, sparse=False) -> bytes:
    out = io.BytesIO()
    (recordio.write_sparse(out, sp.csr_matrix(rows)) if sparse else recordio.write_dense(out, rows))
    return out.getvalue()


def request_mix():
    """(name, method, path, body, headers, expected status); good requests first."""
    rng = np.random.default_rng(21)
    rows = rng.normal(0, 8, (200, FEATURES)).astype(np.float32)
    csv_headers = {"Content-Type": "text/csv"}
    good = [
        ("csv one record", "POST", "/invocations", csv_of(rows[:1]), csv_headers),
        ("csv 200 records to csv", "POST", "/invocations", csv_of(rows), {**csv_headers, "Accept": "text/csv"}),
        (
            "json instances",
            "POST",
            "/invocations",
            json.dumps({"instances": [{"features": r} for r in rows[:20].tolist()]}).encode(),
            {"Content-Type": "application/json"},
        ),
        (
            "jsonlines to jsonlines",
            "POST",
            "/invocations",
            "".join(json.dumps({"data": {"features": {"values": r}}}) + "\n" for r in rows[:20].tolist()).encode(),
            {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
        ),
        (
            "recordio to recordio",
            "POST",
            "/invocations",
            recordio_of(rows[:50]),
            {"Content-Type": "application/x-recordio-protobuf", "Accept": "application/x-recordio-protobuf"},
        ),
        (
            "sparse recordio to json",
            "POST",
            "/invocations",
            recordio_of(rows[:50], sparse=True),
            {"Content-Type": "application/x-recordio-protobuf"},
        ),
        ("ping", "GET", "/ping", None, {}),
        ("execution parameters", "GET", "/execution-parameters", None, {}),
    ]
    bad = [
        ("empty", "POST", "/invocations", b"", csv_headers, 400),
        ("csv wrong count", "POST", "/invocations", csv_of(rows[:3]) + b"1,2,3\n", csv_headers, 400),
        ("csv not numbers", "POST", "/invocations", b"a,b,c,d\n", csv_headers, 400),
        ("json broken", "POST", "/invocations", b'{"instances": [', {"Content-Type": "application/json"}, 400),
        ("json strings", "POST", "/invocations", b'[["1", "2", "3", "4"]]', {"Content-Type": "application/json"}, 400),
        (
            "recordio garbage",
            "POST",
            "/invocations",
            b"\x0a\x23\xd7\xce\xff\xff\xff\x00garbage",
            {"Content-Type": "application/x-recordio-protobuf"},
            400,
        ),
        ("unsupported content type", "POST", "/invocations", b"1,2,3,4", {"Content-Type": "text/plain"}, 415),
        ("unsupported accept", "POST", "/invocations", b"1,2,3,4", {**csv_headers, "Accept": "image/png"}, 406),
        ("too large", "POST", "/invocations", csv_of(rows[:1]) * ((PAYLOAD_LIMIT_MB << 20) // 40), csv_headers, 413),
        ("unknown path", "GET", "/models", None, {}, 404),
    ]
    return good, bad


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return train_kmeans(tmp_path_factory.mktemp("load_model") / "kmeans")


def test_mixed_load_keeps_answering_correctly_without_leaking(model_dir, tmp_path):
    good, bad = request_mix()
    # The answers a good request must get, from the same app in-process.
    reference = create_app(
        settings=ServerSettings.from_environment(
            model_dir, environ={"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(PAYLOAD_LIMIT_MB)}
        )
    ).test_client()
    expected = {}
    for name, method, path, body, headers in good:
        response = reference.open(path, method=method, data=body, headers=headers)
        assert response.status_code == 200, (name, response.data)
        expected[name] = response.data
    cases = [(*case, 200) for case in good] + bad

    server = ServerProcess(model_dir, tmp_path / "server.log", SAGEMAKER_MAX_PAYLOAD_IN_MB=str(PAYLOAD_LIMIT_MB))
    failures: list[str] = []
    counts = {name: 0 for name, *_ in cases}
    lock = threading.Lock()
    deadline = time.monotonic() + DURATION_SECONDS

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        position = index
        while time.monotonic() < deadline:
            name, method, path, body, headers, status = cases[position % len(cases)]
            position += 1
            try:
                connection.request(method, path, body, headers)
                response = connection.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()  # and reconnect on the next request
                problem = f"{name}: {type(exc).__name__}: {exc}"
            else:
                problem = check(name, status, response.status, data, expected.get(name))
            with lock:
                counts[name] += 1
                if problem and len(failures) < 20:
                    failures.append(problem)
        connection.close()

    try:
        server.wait_until_ready()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        time.sleep(DURATION_SECONDS * WARM_UP_FRACTION)
        memory_after_warm_up = server.resident_bytes()
        for thread in threads:
            thread.join()
        memory_at_end = server.resident_bytes()
        assert server.request("GET", "/ping")[0] == 200
    finally:
        server.kill()

    print(
        f"\n{sum(counts.values())} requests in {DURATION_SECONDS:.0f} s at concurrency {CONCURRENCY}; resident "
        f"memory {memory_after_warm_up >> 20} MiB after warm-up, {memory_at_end >> 20} MiB at the end"
    )
    assert not failures, "\n".join(failures)
    assert all(counts.values()), counts  # every kind of request was sent
    growth = memory_at_end / memory_after_warm_up - 1
    assert growth < MAX_MEMORY_GROWTH, (
        f"resident memory grew {growth:.1%}: {memory_after_warm_up >> 20} MiB -> {memory_at_end >> 20} MiB"
    )
    assert "Traceback" not in server.log()


def check(name: str, expected_status: int, status: int, data: bytes, expected_body: bytes | None) -> str | None:
    if status != expected_status:
        return f"{name}: status {status} (expected {expected_status}): {data[:200]!r}"
    if expected_status == 200:
        return None if data == expected_body else f"{name}: wrong answer {data[:200]!r}"
    try:
        message = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return f"{name}: {status} without a JSON error message: {data[:200]!r}"
    return None if message else f"{name}: empty error message"
