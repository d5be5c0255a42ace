"""/ping latency while the server is busy with clients that hold connections: SageMaker's health
check must answer within 2 s whatever the traffic (issue: slow clients must not block /ping).

    ping_latencies(port, slow_connections=50, seconds=10)      # 50 clients, one byte a second each
    ping_latencies(port, large_requests=6, seconds=10)          # six 6 MB requests in flight

Used by benchmarks/serve/run.py (the "ping under load" rows) and by tests/test_serve_server.py.
Loopback only; every loop ends by itself after `seconds`.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time

PING_EVERY_SECONDS = 0.2
PING_TIMEOUT_SECONDS = 5.0
LARGE_REQUEST_BYTES = 6_000_000


def ping_latencies(
    port: int,
    *,
    slow_connections: int = 0,
    large_requests: int = 0,
    large_body: bytes = b"",
    seconds: float = 10.0,
    host: str = "127.0.0.1",
) -> list[float]:
    """Seconds each GET /ping took (inf when it got no answer within PING_TIMEOUT_SECONDS), while
    `slow_connections` clients each send a request's head and then one body byte a second, and
    `large_requests` clients each POST `large_body` (text/csv) again and again."""
    stop = threading.Event()
    threads = [threading.Thread(target=_trickle, args=(host, port, stop), daemon=True) for _ in range(slow_connections)]
    threads += [
        threading.Thread(target=_post_again_and_again, args=(host, port, large_body, stop), daemon=True)
        for _ in range(large_requests)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every client has connected and sent something
    latencies = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            latencies.append(_ping(host, port))
            time.sleep(PING_EVERY_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=PING_TIMEOUT_SECONDS + 5)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _ping(host: str, port: int) -> float:
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection(host, port, timeout=PING_TIMEOUT_SECONDS)
        connection.request("GET", "/ping")
        connection.getresponse().read()
        connection.close()
    except OSError:
        return float("inf")
    return time.perf_counter() - started


def _trickle(host: str, port: int, stop: threading.Event) -> None:
    try:
        with socket.create_connection((host, port), timeout=30) as client:
            client.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\n"
            )
            while not stop.is_set():
                client.sendall(b"1")
                stop.wait(1.0)
    except OSError:
        pass  # the server may close a connection it has waited on long enough


def _post_again_and_again(host: str, port: int, body: bytes, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            connection = http.client.HTTPConnection(host, port, timeout=60)
            connection.request("POST", "/invocations", body, {"Content-Type": "text/csv"})
            connection.getresponse().read()
            connection.close()
        except OSError:
            stop.wait(0.1)
