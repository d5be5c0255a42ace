"""The request-gathering worker (serve/worker.py): the framing it reads to know when a request is
whole, and, with the real server, /ping under slow clients, a trickled request answered right, an
unfinished one answered 408, Expect: 100-continue."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
from test_serve_support import Answers, ServerProcess, expected_outputs, train_kmeans

from smalgo.serve.worker import PendingRequest

LIMIT = 1 << 20
ROW = b"1.5,2,3,4,5,6,7,8\n"
CHUNKED = "Transfer-Encoding: chunked\r\n"


def gathered(*pieces: bytes, limit: int = LIMIT) -> PendingRequest:
    pending = PendingRequest()
    for piece in pieces:
        pending.add(piece, limit)
    return pending


def post(head: str, body: bytes = b"") -> bytes:
    return f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n{head}\r\n".encode() + body


@pytest.mark.parametrize(
    "pieces, verdict",
    [
        ([b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"], PendingRequest.COMPLETE),
        ([b"GET /ping HTTP/1.1\r\nHo", b"st: x\r", b"\n\r", b"\n"], PendingRequest.COMPLETE),
        ([b"GET /ping HTTP/1.1\r\nHost: x\r\n"], PendingRequest.INCOMPLETE),
        ([post("Content-Length: 18\r\n", ROW)], PendingRequest.COMPLETE),
        ([post("content-length:18\r\n", ROW[:10]), ROW[10:]], PendingRequest.COMPLETE),
        ([post("Content-Length: 18\r\n", ROW[:17])], PendingRequest.INCOMPLETE),
        ([post(CHUNKED, b"12\r\n" + ROW + b"\r\n0\r\n\r\n")], PendingRequest.COMPLETE),
        (
            [post(CHUNKED, b"12;x=y\r\n" + ROW + b"\r\n0\r\nA: b\r\n\r\n")],
            PendingRequest.COMPLETE,
        ),
        (
            [post(CHUNKED, b"12\r\n" + ROW[:5]), ROW[5:] + b"\r\n0\r", b"\n\r\n"],
            PendingRequest.COMPLETE,
        ),
        ([post(CHUNKED, b"12\r\n" + ROW + b"\r\n")], PendingRequest.INCOMPLETE),
        ([post(CHUNKED, b"12\r\n" + ROW + b"\r\n0\r\n")], PendingRequest.INCOMPLETE),
        # What the loop cannot frame goes to the parser, which answers it (400, 413).
        ([post(CHUNKED, b"zz\r\n")], PendingRequest.HAND_OVER),
        ([post(CHUNKED, b"12\r\n" + ROW + b"XX")], PendingRequest.HAND_OVER),
        ([post("Content-Length: ten\r\n")], PendingRequest.HAND_OVER),
        ([post("Content-Length: 18\r\nTransfer-Encoding: chunked\r\n", ROW)], PendingRequest.HAND_OVER),
        ([post(f"Content-Length: {2 * LIMIT + 1}\r\n", b"x" * (LIMIT + 1))], PendingRequest.HAND_OVER),
        # Within twice the limit, a body is read whole, for the app to refuse (413) and the
        # connection to carry the next request.
        ([post(f"Content-Length: {LIMIT + 1}\r\n", b"x" * (LIMIT + 1))], PendingRequest.COMPLETE),
        ([b"GET /" + b"a" * (70 * 1024)], PendingRequest.HAND_OVER),
    ],
    ids=[
        "get",
        "get-in-pieces",
        "head-unfinished",
        "content-length",
        "content-length-in-pieces",
        "body-unfinished",
        "chunked",
        "chunked-extension-and-trailer",
        "chunked-in-pieces",
        "no-last-chunk",
        "last-chunk-without-blank-line",
        "bad-chunk-size",
        "bad-chunk-end",
        "bad-content-length",
        "length-and-chunked",
        "past-twice-the-limit",
        "past-the-limit",
        "endless-head",
    ],
)
def test_the_loop_knows_when_a_request_is_whole(pieces, verdict):
    assert gathered(*pieces).verdict == verdict


def test_expect_continue_and_the_next_request():
    pending = gathered(post("Expect: 100-continue\r\nContent-Length: 18\r\n"))
    assert pending.expects_continue and pending.verdict == PendingRequest.INCOMPLETE
    pending.add(ROW, LIMIT)
    assert pending.verdict == PendingRequest.COMPLETE
    data, head_end, spill = pending.take()
    assert data[head_end:] == ROW and spill is None
    assert (pending.verdict, pending.data, pending.expects_continue) == (PendingRequest.INCOMPLETE, b"", False)


# --- bodies spilled to a file (SPILL_BYTES; small here) --------------------------------------------

SPILL = 64
BIG_BODY = ROW * 20  # 360 bytes: spilled


def chunked(body: bytes, size: int, trailer: bytes = b"") -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n" + trailer + b"\r\n"


def spilled(request: bytes, piece: int, limit: int = LIMIT) -> tuple[PendingRequest, bytes]:
    """`request` given to a PendingRequest `piece` bytes at a time until it has a verdict, as
    the worker's loop does; with the bytes left unread."""
    pending = PendingRequest(spill_bytes=SPILL)
    start = 0
    while start < len(request) and pending.verdict == PendingRequest.INCOMPLETE:
        pending.add(request[start : start + piece], limit)
        start += piece
    return pending, request[start:]


def spilled_bytes(pending: PendingRequest) -> bytes:
    assert pending.spill is not None
    pending.spill.rewind()
    return pending.spill.file.read()


@pytest.mark.parametrize("piece", [1, 7, 100, 10_000])
@pytest.mark.parametrize(
    "head, body",
    [
        (f"Content-Length: {len(BIG_BODY)}\r\n", BIG_BODY),
        (CHUNKED, chunked(BIG_BODY, 50)),
        (CHUNKED, chunked(BIG_BODY, 1000, trailer=b"A: b\r\nC: d\r\n")),
    ],
    ids=["content-length", "chunked", "one-chunk-and-a-trailer"],
)
def test_a_large_body_goes_to_a_file_as_it_comes_and_the_next_request_stays(piece, head, body):
    pipelined = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    pending, unread = spilled(post(head) + body + pipelined, piece)
    assert pending.verdict == PendingRequest.COMPLETE
    assert spilled_bytes(pending) == BIG_BODY
    data, head_end, spill = pending.take()
    assert spill is not None and spill.complete and spill.size == len(BIG_BODY) and spill.framing_error is None
    assert data[:head_end] == post(head) and data[head_end:] + unread == pipelined  # the body is not held
    assert spill.read() == BIG_BODY and spill.read() == b""
    spill.close()
    assert spill.read() == b""  # what gthread's drain before keep-alive finds
    assert (pending.spill, pending.data) == (None, b"")


def test_a_body_up_to_the_threshold_stays_in_memory():
    pending, _ = spilled(post(f"Content-Length: {SPILL}\r\n") + b"x" * SPILL, 10)
    assert pending.verdict == PendingRequest.COMPLETE and pending.spill is None
    pending, _ = spilled(post(CHUNKED) + chunked(b"x" * (SPILL - 15), SPILL), 10)  # framing included
    assert pending.verdict == PendingRequest.COMPLETE and pending.spill is None


@pytest.mark.parametrize(
    "body, problem",
    [
        (chunked(BIG_BODY, 50)[: 4 * 56] + b"zz\r\n", "Invalid chunk size: b'zz'"),  # after 4 chunks
        (b"168\r\n" + BIG_BODY + b"XX0\r\n\r\n", "Invalid chunk terminator"),
        (b"168\r\n" + BIG_BODY + b"\r\n" + b"1" * 2000, "Invalid chunk size: a line longer than 1024 bytes"),
    ],
    ids=["bad-size", "bad-terminator", "endless-size-line"],
)
def test_a_spilled_body_with_broken_framing_is_handed_over_saying_so(body, problem):
    pending, _ = spilled(post(CHUNKED) + body, 100)
    assert pending.verdict == PendingRequest.HAND_OVER
    assert pending.spill is not None and pending.spill.framing_error == problem and not pending.spill.complete


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_spilled_body_past_the_limit_is_counted_not_kept(framing):
    body = BIG_BODY * 2  # 720 bytes, past a limit of 500 but within twice it
    head = CHUNKED if framing == "chunked" else f"Content-Length: {len(body)}\r\n"
    pending, _ = spilled(post(head) + (chunked(body, 100) if framing == "chunked" else body), 50, limit=500)
    assert pending.verdict == PendingRequest.COMPLETE  # the app answers 413; the connection goes on
    assert pending.spill is not None and pending.spill.size == len(body) and pending.spill.complete
    kept = len(spilled_bytes(pending))
    assert kept == 0 if framing == "content-length" else kept <= 500


def test_a_spilled_chunked_body_past_twice_the_limit_is_handed_over_unfinished():
    pending, _ = spilled(post(CHUNKED) + chunked(BIG_BODY * 3, 100), 50, limit=500)
    assert pending.verdict == PendingRequest.HAND_OVER
    assert pending.spill is not None and 1000 < pending.spill.size <= 1100 and not pending.spill.complete


def test_a_content_length_past_twice_the_limit_is_handed_over_with_the_head():
    pending, _ = spilled(post(f"Content-Length: {2 * LIMIT + 1}\r\n"), 1000)
    assert pending.verdict == PendingRequest.HAND_OVER and pending.spill is None


def test_a_connection_dropped_while_spilling_closes_the_file():
    pending, _ = spilled(post(f"Content-Length: {len(BIG_BODY)}\r\n") + BIG_BODY[:100], 1000)
    spill = pending.spill
    assert spill is not None and pending.verdict == PendingRequest.INCOMPLETE and spill.size == 100
    pending.discard()
    assert spill.file.closed and pending.spill is None


# --- the real server -----------------------------------------------------------------------------

WORKERS = 2
TIMEOUT_SECONDS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = train_kmeans(tmp_path_factory.mktemp("model"))
    process = ServerProcess(
        model_dir,
        tmp_path_factory.mktemp("logs") / "server.log",
        SAGEMAKER_MODEL_SERVER_WORKERS=str(WORKERS),
        SAGEMAKER_MODEL_SERVER_TIMEOUT=str(TIMEOUT_SECONDS),
        SAGEMAKER_MAX_PAYLOAD_IN_MB="6",
    )
    try:
        yield process.wait_until_ready(), model_dir
    finally:
        process.kill()


def csv_rows(n: int, seed: int = 0) -> tuple[np.ndarray, bytes]:
    from test_serve_support import FEATURES

    rows = np.random.default_rng(seed).normal(0, 8, (n, FEATURES)).astype(np.float32)
    return rows, "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()


def read_answer(client: socket.socket) -> tuple[bytes, bytes]:
    """The one answer expected on `client`."""
    return Answers(client).next()


def ping_seconds(port: int) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = read_answer(client)
    assert status == b"HTTP/1.1 200 OK"
    return time.monotonic() - started


class Trickler(threading.Thread):
    """A client sending one request a few bytes at a time."""

    def __init__(self, port: int, request: bytes, *, piece: int, pause: float):
        super().__init__(daemon=True)
        self.client = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.request, self.piece, self.pause = request, piece, pause
        self.stop = threading.Event()

    def run(self) -> None:
        for start in range(0, len(self.request), self.piece):
            if self.stop.wait(self.pause):
                return
            try:
                self.client.sendall(self.request[start : start + self.piece])
            except OSError:
                return


def test_ping_answers_at_once_while_many_clients_trickle_their_requests(server):
    process, _ = server
    _, body = csv_rows(50)
    request = post(f"Content-Length: {len(body)}\r\n", body)
    clients = [Trickler(process.port, request, piece=1, pause=0.1) for _ in range(25)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        latencies = [ping_seconds(process.port) for _ in range(10)]
    finally:
        for client in clients:
            client.stop.set()
            client.client.close()
    # Before the gathering worker, the first two trickling clients held both workers' only
    # threads and /ping waited until the 4 s request timeout or beyond.
    assert max(latencies) < 0.5, latencies


def test_a_trickled_request_is_answered_like_any_other(server):
    process, model_dir = server
    rows, body = csv_rows(3, seed=1)
    request = post(f"Content-Length: {len(body)}\r\n", body)
    trickler = Trickler(process.port, request, piece=64, pause=0.01)
    trickler.start()
    trickler.join()
    status, answer = read_answer(trickler.client)
    trickler.client.close()
    assert status == b"HTTP/1.1 200 OK"
    expected = expected_outputs(model_dir, rows)["closest_cluster"].tolist()
    assert [p["closest_cluster"] for p in json.loads(answer)["predictions"]] == expected


def test_an_unfinished_request_is_answered_408_after_the_request_timeout(server):
    process, _ = server
    with socket.create_connection(("127.0.0.1", process.port), timeout=3 * TIMEOUT_SECONDS) as client:
        client.sendall(post("Content-Length: 100\r\n", b"1,2,3"))
        started = time.monotonic()
        status, answer = read_answer(client)
        waited = time.monotonic() - started
        assert client.recv(1) == b""  # and the connection is closed
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert json.loads(answer)["error"].startswith(f"The request did not arrive whole within {TIMEOUT_SECONDS} s")
    assert TIMEOUT_SECONDS - 0.5 < waited < TIMEOUT_SECONDS + 2.5
    assert ping_seconds(process.port) < 0.5


def test_expect_100_continue_is_answered_before_the_body_is_sent(server):
    process, _ = server
    _, body = csv_rows(2, seed=2)
    with socket.create_connection(("127.0.0.1", process.port), timeout=10) as client:
        client.sendall(post(f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n"))
        client.settimeout(0.5)  # curl waits 1 s for it before sending the body anyway
        assert client.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.settimeout(10)
        client.sendall(body)
        status, answer = read_answer(client)
    assert status == b"HTTP/1.1 200 OK" and len(json.loads(answer)["predictions"]) == 2


def test_ping_answers_while_large_requests_are_in_flight(server):
    process, _ = server
    _, body = csv_rows(20_000, seed=3)  # about 5 MB
    request = post(f"Content-Length: {len(body)}\r\n", body)
    senders = [Trickler(process.port, request, piece=256 * 1024, pause=0.05) for _ in range(6)]
    for sender in senders:
        sender.start()
    try:
        latencies = [ping_seconds(process.port) for _ in range(10)]
        for sender in senders:
            sender.join()
            status, _ = read_answer(sender.client)
            assert status == b"HTTP/1.1 200 OK"
    finally:
        for sender in senders:
            sender.client.close()
    assert max(latencies) < 2.0, latencies


def test_pipelined_requests_are_each_answered(server):
    process, model_dir = server
    rows, body = csv_rows(2, seed=4)
    single = post(f"Content-Length: {len(body)}\r\n", body)
    expected = expected_outputs(model_dir, rows)["closest_cluster"].tolist()
    with socket.create_connection(("127.0.0.1", process.port), timeout=10) as client:
        client.sendall(single * 3 + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = Answers(client)
        for _ in range(3):
            status, answer = answers.next()
            assert status == b"HTTP/1.1 200 OK"
            assert [p["closest_cluster"] for p in json.loads(answer)["predictions"]] == expected
        assert answers.next() == (b"HTTP/1.1 200 OK", b"")
