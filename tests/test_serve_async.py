"""Asynchronous inference's payloads (spec section 2.3: up to 1 GB, invocations up to 15 minutes;
batch transform's up to an hour): the limits raised, and large bodies spilled to disk by the
worker (serve/worker.py) and decoded from there in pieces, with the real server (gunicorn, one
worker): a 300 MB CSV request answered with the worker's resident memory below 3x the body,
bodies over the limit refused 413 while the server goes on, spilled bodies of every framing and
format answered as in-memory ones are."""

from __future__ import annotations

import http.client
import io
import json
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import clustered_rows
from test_serve_support import Answers, ServerProcess, _children, expected_outputs

from smalgo import recordio
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.registry import get_algorithm
from smalgo.serve import ServerSettings, encoding, worker
from smalgo.serve.decoding import decode_request
from smalgo.serve.errors import RequestError
from smalgo.serve.server import gunicorn_options
from smalgo.serve.worker import SPILL_BYTES

# Wide records, as asynchronous requests carry: the answer (two numbers a record) stays small
# beside the body, so that what is measured is the body's handling.
FEATURES = 32
BODY_BYTES = 300 * 10**6
MEMORY_FACTOR = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A k-means model of FEATURES features, trained on small clustered rows."""
    kmeans = get_algorithm("kmeans")
    hp = kmeans.hyperparameters.parse(kmeans.sample_job.hyperparameters_for(kmeans, FEATURES))
    directory = tmp_path_factory.mktemp("async_model")
    kmeans.train(hp, InMemoryData({"train": (clustered_rows(600, FEATURES, 3, seed=11), None)})).save(directory)
    return directory


# Bodies repeat a block of this many distinct rows: formatting every row in Python would take
# longer than the server takes to answer.
BLOCK_ROWS = 2000


def rows_and_csv(n_rows: int, seed: int) -> tuple[np.ndarray, bytes]:
    """Rows as CSV of 7 significant digits, and the float32 values the server reads from it."""
    block_rows = min(n_rows, BLOCK_ROWS)
    assert n_rows % block_rows == 0
    values = np.random.default_rng(seed).normal(0.0, 10.0, (block_rows, FEATURES))
    text = "".join(",".join(f"{v:.7g}" for v in row) + "\n" for row in values)
    block = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32, ndmin=2)
    return np.tile(block, (n_rows // block_rows, 1)), text.encode() * (n_rows // block_rows)


def worker_pid(server: ServerProcess) -> int:
    [pid] = _children(server.process.pid)
    return pid


def status_kib(pid: int, field: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def post_file(port: int, path: Path, headers: dict[str, str], timeout: float = 600) -> tuple[int, bytes]:
    """POST the file's bytes as one body with its Content-Length, streamed from the file."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, blocksize=1 << 20)
    try:
        with open(path, "rb") as body:
            connection.request("POST", "/invocations", body, {**headers, "Content-Length": str(path.stat().st_size)})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --- one worker, SAGEMAKER_MAX_PAYLOAD_IN_MB=1024 ------------------------------------------------


@pytest.fixture(scope="module")
def large_server(model_dir, tmp_path_factory):
    server = ServerProcess(
        model_dir,
        tmp_path_factory.mktemp("async_logs") / "server.log",
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="1024",
        SAGEMAKER_MODEL_SERVER_TIMEOUT="3600",
    )
    try:
        yield server.wait_until_ready()
    finally:
        server.kill()


def test_a_300_mb_csv_request_is_answered_within_3x_its_size_of_resident_memory(large_server, model_dir, tmp_path):
    block_rows, block = rows_and_csv(BLOCK_ROWS, seed=3)
    repeats = -(-BODY_BYTES // len(block))
    n_rows = repeats * len(block_rows)
    body_path = tmp_path / "body.csv"
    try:
        with open(body_path, "wb") as out:
            for _ in range(repeats):
                out.write(block)
        body_bytes = body_path.stat().st_size
        pid = worker_pid(large_server)
        # What is measured is the request's own memory: the worker's peak resident memory is reset
        # to what it holds now (clear_refs 5), and its peak after the request is compared with
        # that. What the worker held before (Python, the libraries, the model, shared with the
        # master) is not the request's doing, and differs between machines (a GPU's driver).
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        before_kib = status_kib(pid, "VmRSS")
        started = time.monotonic()
        status, answer = post_file(large_server.port, body_path, {"Content-Type": "text/csv", "Accept": "text/csv"})
        seconds = time.monotonic() - started
        peak_kib = status_kib(pid, "VmHWM")
    finally:
        body_path.unlink(missing_ok=True)
    assert status == 200, answer[:500]
    lines = answer.splitlines()
    assert len(lines) == n_rows
    expected = expected_outputs(model_dir, block_rows)
    for row in [0, n_rows - 1, *np.random.default_rng(0).integers(0, n_rows, 200).tolist()]:
        cluster, distance = (np.float32(cell) for cell in lines[row].split(b","))
        assert cluster == expected["closest_cluster"][row % len(block_rows)], row
        assert distance == expected["distance_to_cluster"][row % len(block_rows)], row
    growth = (peak_kib - before_kib) * 1024
    print(
        f"\n{body_bytes / 1e6:.0f} MB body, {n_rows:,} rows: decoded rows {n_rows * FEATURES * 4 / 1e6:.0f} MB, "
        f"answer {len(answer) / 1e6:.1f} MB; worker resident {before_kib / 1024:.0f} MiB before, peak "
        f"{peak_kib / 1024:.0f} MiB (+{growth / 1e6:.0f} MB, {growth / body_bytes:.2f}x the body); {seconds:.1f} s"
    )
    assert growth < MEMORY_FACTOR * body_bytes
    assert large_server.request("GET", "/ping")[0] == 200


def test_the_async_limits_reach_the_worker_and_gunicorn(large_server):
    settings = ServerSettings.from_environment(
        "/opt/ml/model", environ={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600"}
    )
    options = gunicorn_options(settings)
    # gthread's event loop beats gunicorn's heartbeat while the worker's thread predicts, so a
    # long prediction is never taken for a hung worker; the request timeout bounds the upload.
    assert options["timeout"] == 3600
    assert options["worker_class"].request_timeout_seconds == 3600
    assert options["worker_class"].body_limit_bytes == 1024 * 2**20
    assert "request timeout 3600 s, payload limit 1024 MB" in large_server.log()


def test_a_request_in_flight_longer_than_the_timeout_is_not_cut_short(model_dir, tmp_path):
    """SAGEMAKER_MODEL_SERVER_TIMEOUT is gunicorn's worker timeout too: a worker whose thread
    is busy with one request for longer (here: writing an answer that its client reads late) is
    not replaced, because its event loop goes on signalling."""
    server = ServerProcess(
        model_dir,
        tmp_path / "server.log",
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        SAGEMAKER_MODEL_SERVER_TIMEOUT="1",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="100",
    )
    try:
        server.wait_until_ready()
        pid = worker_pid(server)
        rows, body = rows_and_csv(200_000, seed=9)  # a JSON answer of ~13 MB: more than the sockets hold
        head = request_head({"Content-Type": "text/csv", "Content-Length": str(len(body))})
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            client.settimeout(60)
            client.connect(("127.0.0.1", server.port))
            client.sendall(head + body)
            time.sleep(3)  # the worker's thread waits to write the rest of the answer meanwhile
            status, answer = Answers(client).next_status()
        assert status == 200 and len(json.loads(answer)["predictions"]) == len(rows)
        assert worker_pid(server) == pid and "WORKER TIMEOUT" not in server.log()
    finally:
        server.kill()


# --- one worker, SAGEMAKER_MAX_PAYLOAD_IN_MB=16: bodies between SPILL_BYTES and the limit, and past it

LIMIT_MB = 16
SPILLED_ROWS = 40_000  # about 12 MB of CSV


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    process = ServerProcess(
        model_dir,
        tmp_path_factory.mktemp("async_logs") / "server.log",
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        SAGEMAKER_MAX_PAYLOAD_IN_MB=str(LIMIT_MB),
    )
    try:
        yield process.wait_until_ready()
    finally:
        process.kill()


@pytest.fixture(scope="module")
def spilled_csv():
    rows, body = rows_and_csv(SPILLED_ROWS, seed=5)
    assert SPILL_BYTES < len(body) < LIMIT_MB << 20
    return rows, body


def request_head(headers: dict[str, str]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST /invocations HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode()


def chunked(body: bytes, size: int = 65536) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def formatted(content_type: str, n_rows: int, seed: int = 7) -> tuple[np.ndarray, bytes]:
    """Rows, and a body of them in `content_type` that reads back as exactly those float32 values."""
    rows, csv_body = rows_and_csv(n_rows, seed)
    if content_type == "text/csv":
        return rows, csv_body
    if content_type == "application/jsonlines":
        block = "".join(json.dumps({"features": row}) + "\n" for row in rows[:BLOCK_ROWS].tolist()).encode()
        return rows, block * (n_rows // BLOCK_ROWS)
    out = io.BytesIO()
    recordio.write_dense(out, rows)
    return rows, out.getvalue()


ONE_ROW_ROWS, ONE_ROW_CSV = rows_and_csv(1, seed=8)
ONE_ROW_REQUEST = request_head({"Content-Type": "text/csv", "Content-Length": str(len(ONE_ROW_CSV))}) + ONE_ROW_CSV


def closest_clusters(answer: bytes) -> list[float]:
    """closest_cluster of each line of a JSON Lines answer."""
    return [json.loads(line)["closest_cluster"] for line in answer.splitlines()]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize(
    "content_type, n_rows",
    [("text/csv", 40_000), ("application/x-recordio-protobuf", 80_000), ("application/jsonlines", 20_000)],
    ids=["csv", "recordio", "jsonlines"],
)
def test_a_spilled_body_is_answered_as_in_memory_and_the_request_behind_it_too(
    server, model_dir, framing, content_type, n_rows
):
    rows, body = formatted(content_type, n_rows)
    assert SPILL_BYTES < len(body) < LIMIT_MB << 20
    headers = {"Content-Type": content_type, "Accept": "application/jsonlines"}
    if framing == "chunked":
        headers["Transfer-Encoding"], payload = "chunked", chunked(body)
    else:
        headers["Content-Length"], payload = str(len(body)), body
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as client:
        client.sendall(request_head(headers) + payload + ONE_ROW_REQUEST)  # the second one pipelined
        answers = Answers(client)
        status, answer = answers.next_status()
        assert status == 200, answer[:300]
        assert closest_clusters(answer) == expected_outputs(model_dir, rows)["closest_cluster"].tolist()
        status, answer = answers.next_status()
        assert status == 200 and json.loads(answer)["predictions"][0]["closest_cluster"] == float(
            expected_outputs(model_dir, ONE_ROW_ROWS)["closest_cluster"][0]
        )


CUT_AT = 10_000_000


@pytest.mark.parametrize(
    "framing, message",
    [
        ("content-length", "Content-Length is {length:,} bytes, but the connection ended after 10,000,000."),
        ("chunked", "the connection ended inside a chunk or before the last (zero-length) chunk."),
    ],
)
def test_a_spilled_body_cut_short_is_a_400_and_never_scored(server, spilled_csv, framing, message):
    _, body = spilled_csv
    if framing == "chunked":
        request = request_head({"Content-Type": "text/csv", "Transfer-Encoding": "chunked"}) + chunked(body)[:CUT_AT]
    else:
        request = request_head({"Content-Type": "text/csv", "Content-Length": str(len(body))}) + body[:CUT_AT]
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        status, answer = Answers(client).next_status()
    assert status == 400
    assert json.loads(answer)["error"] == "The request body is incomplete: " + message.format(length=len(body))


def test_a_malformed_chunk_in_a_spilled_body_is_a_400_and_closes_the_connection(server, spilled_csv):
    _, body = spilled_csv
    whole_chunks = 150 * (len(b"10000\r\n") + 65536 + 2)  # 9.8 MB: past SPILL_BYTES
    request = request_head({"Content-Type": "text/csv", "Transfer-Encoding": "chunked"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as client:
        client.sendall(request + chunked(body)[:whole_chunks] + b"zz\r\n1,2\r\n0\r\n\r\n")
        answers = Answers(client)
        status, answer = answers.next_status()
        assert status == 400
        message = "The request body's chunked encoding is malformed: Invalid chunk size: b'zz'."
        assert json.loads(answer)["error"] == message
        assert answers.closed()  # where a next request would start is unknown
    assert server.request("GET", "/ping")[0] == 200


def test_bodies_over_the_limit_are_413_and_the_server_goes_on(server, model_dir, spilled_csv):
    _, body = spilled_csv
    body = body * 2  # about 24 MB: over the 16 MB limit, within twice it
    limit_message = f"is over the {LIMIT_MB} MB ({LIMIT_MB << 20:,}-byte) limit on request bodies"
    for headers, payload in [
        ({"Content-Length": str(len(body))}, body),
        ({"Transfer-Encoding": "chunked"}, chunked(body)),
    ]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as client:
            client.sendall(request_head({"Content-Type": "text/csv", **headers}) + payload + ONE_ROW_REQUEST)
            answers = Answers(client)
            status, answer = answers.next_status()
            assert status == 413 and limit_message in json.loads(answer)["error"], answer
            # The body was read and dropped: the connection carries the next request.
            status, answer = answers.next_status()
            assert status == 200 and len(json.loads(answer)["predictions"]) == 1
    # Past twice the limit, by its Content-Length: refused before its body is sent (and never read).
    declared = 3 * (LIMIT_MB << 20)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as client:
        client.sendall(request_head({"Content-Type": "text/csv", "Content-Length": str(declared)}))
        status, answer = Answers(client).next_status()
    assert status == 413 and f"({declared:,} bytes) {limit_message}" in json.loads(answer)["error"]
    assert server.request("GET", "/ping")[0] == 200
    status, _, answer = server.request("POST", "/invocations", ONE_ROW_CSV, {"Content-Type": "text/csv"})
    assert status == 200


# --- in-process: what the app does with a spilled body ----------------------------------------------


@pytest.mark.parametrize(
    "media_type, body, where",
    [
        ("text/csv", b"1,2\r\n\r\n3,4\r5,nan\n", "text/csv body, line 4, column 2"),
        ("application/jsonlines", b"[1,2]\r\n \n[3,NaN]\n", "application/jsonlines body, line 3, feature 1"),
        ("text/libsvm", b"1:1 2:2\n\t\n 1:nan\n", "text/libsvm body, line 3, feature 1"),
    ],
    ids=["csv", "jsonlines", "libsvm"],
)
def test_a_non_finite_value_in_a_spilled_body_is_located_as_in_bytes(media_type, body, where):
    feature_dim = 3 if media_type == "text/libsvm" else 2
    messages = []
    with tempfile.TemporaryFile() as file:
        file.write(body)
        for source in (body, file):
            if source is file:
                file.seek(0)
            with pytest.raises(RequestError) as refusal:
                decode_request(source, media_type, feature_dim, finite_values_only=True)
            messages.append(refusal.value.message)
        assert not file.closed  # the worker closes it
    assert messages[0] == messages[1] == f"{where}: nan is not a finite number; this model takes finite numbers only."


@pytest.mark.parametrize(
    "media_type, options",
    [
        ("application/json", {}),
        ("application/json", {"batch_mode": True}),
        ("application/jsonlines", {}),
        ("text/csv", {}),
        ("text/csv", {"csv_vectors_quoted": True}),
        ("application/x-recordio-protobuf", {}),
    ],
)
def test_a_large_answer_written_in_slices_is_the_same_bytes(monkeypatch, media_type, options):
    rng = np.random.default_rng(4)
    outputs = {
        "closest_cluster": rng.integers(0, 9, 23).astype(np.float32),
        "projection": rng.normal(size=(23, 3)).astype(np.float32),
    }
    outputs["projection"][5, 1] = np.nan
    options = {"json_key": "predictions", "batch_mode": False, **options}
    whole = encoding.encode_response(outputs, media_type, **options)
    monkeypatch.setattr(encoding, "ENCODE_ROWS", 5)
    assert encoding.encode_response(outputs, media_type, **options) == whole


def test_bodies_are_spilled_to_tmpdir_or_else_to_a_disk(monkeypatch, tmp_path):
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile's cached choice
    worker.spill_directory.cache_clear()
    monkeypatch.setattr(worker, "_filesystem_type", lambda path: "tmpfs" if path == "/tmp" else "ext4")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: "/tmp")
    try:
        assert worker.spill_directory() == "/var/tmp"  # /tmp is in memory here
        worker.spill_directory.cache_clear()
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
        assert worker.spill_directory() == str(tmp_path)  # the user's choice, whatever it is on
    finally:
        worker.spill_directory.cache_clear()


def test_the_filesystem_of_a_path_is_read_from_the_mounts():
    assert worker._filesystem_type("/proc/self") == "proc"
    assert worker._filesystem_type("/") not in (None, "proc")
