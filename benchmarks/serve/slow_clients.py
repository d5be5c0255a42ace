"""/ping latency while slow or large requests occupy the server (SageMaker's health check must
answer within 2 s, or the endpoint is taken out of service).

Two loads, each for a few seconds while /ping is asked every PING_INTERVAL seconds on a fresh
connection (as SageMaker's health checker does):
  * trickle: 50 connections, each sending a 1,000-byte CSV request one byte a second;
  * large:   six connections, each sending 6 MB CSV requests back to back at full speed.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

PING_INTERVAL = 0.05
# A ping not answered within this counts at this (the health check has long failed by then).
PING_TIMEOUT = 5.0
TRICKLING_CLIENTS = 50
LARGE_CLIENTS = 6


def request_bytes(body: bytes) -> bytes:
    head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def read_answer(client: socket.socket) -> bytes:
    """The status line of one answer with a Content-Length (its body read and dropped)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return head.split(b"\r\n")[0]


def ping_seconds(port: int) -> float:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PING_TIMEOUT) as client:
            client.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            if read_answer(client) != b"HTTP/1.1 200 OK":
                return PING_TIMEOUT
    except OSError:
        return PING_TIMEOUT
    return time.monotonic() - started


def _trickle(port: int, request: bytes, stop: threading.Event) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            for byte in range(len(request)):
                if stop.wait(1.0):
                    return
                client.sendall(request[byte : byte + 1])
    except OSError:
        pass


def _send_large(port: int, request: bytes, stop: threading.Event, answered: list) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
            while not stop.is_set():
                client.sendall(request)
                answered.append(read_answer(client))
    except OSError:
        pass


def ping_latencies(port: int, load: str, row: bytes, seconds: float) -> dict:
    """Ping latencies (ms: p50, p99, max) under `load` ("trickle" or "large"); `row`: one CSV
    record the model accepts."""
    stop = threading.Event()
    answered: list = []
    if load == "trickle":
        request = request_bytes((row * (1000 // len(row) + 1))[:1000])
        clients = [threading.Thread(target=_trickle, args=(port, request, stop)) for _ in range(TRICKLING_CLIENTS)]
    else:
        request = request_bytes(row * (6_000_000 // len(row)))
        clients = [
            threading.Thread(target=_send_large, args=(port, request, stop, answered)) for _ in range(LARGE_CLIENTS)
        ]
    for client in clients:
        client.daemon = True
        client.start()
    time.sleep(1.0)  # every load client connected and under way
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        latencies.append(ping_seconds(port))
        time.sleep(PING_INTERVAL)
    stop.set()
    for client in clients:
        client.join(timeout=PING_TIMEOUT)
    latencies.sort()
    return {
        "pings": len(latencies),
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3,
        "max_ms": latencies[-1] * 1e3,
        "large_answered": sum(status == b"HTTP/1.1 200 OK" for status in answered),
    }
