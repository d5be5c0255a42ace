"""Load generators: POST one body to a URL over keep-alive connections for a fixed time, and
count requests and their latencies.

    wrk       (https://github.com/wg/wrk) when it is on PATH: `wrk --latency` with a Lua script
              that posts the body; its p50 and p99;
    builtin   otherwise (the images carry no wrk, and build offline): a closed loop per
              connection, each connection in a process of its own so that the generator shares
              no GIL with itself (nor with the server, which runs in processes of its own). Each
              sends the request, reads the whole answer (Content-Length or chunked) and records
              its latency; every request that completed inside the window counts.

The result says which generator ran: the built-in one, in Python, spends more CPU per request
than wrk, so on a small machine it leaves the server less.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRK = "wrk"
BUILTIN = "builtin"
GENERATORS = ("auto", WRK, BUILTIN)
# The built-in generator's processes start together this long after the last one is ready.
START_DELAY_SECONDS = 0.05
# How long the built-in generator's processes may take to start and connect.
READY_TIMEOUT_SECONDS = 60
RECEIVE_BYTES = 1 << 16

WRK_SCRIPT = """
local f = assert(io.open(os.getenv("SMALGO_BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("SMALGO_BENCH_CONTENT_TYPE")
wrk.headers["Accept"] = os.getenv("SMALGO_BENCH_ACCEPT")
"""


@dataclass(frozen=True)
class LoadResult:
    generator: str
    connections: int
    seconds: float
    requests: int
    errors: int  # non-2xx answers and socket errors
    requests_per_s: float
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def choose_generator(choice: str) -> str:
    """`auto`: wrk when on PATH, else the built-in one. `wrk` without wrk is an error naming it."""
    if choice == BUILTIN:
        return BUILTIN
    if shutil.which(WRK):
        return WRK
    if choice == WRK:
        raise FileNotFoundError(
            "--load-generator wrk: wrk is not on PATH (make bench-setup installs it; or use --load-generator builtin)"
        )
    return BUILTIN


@dataclass(frozen=True)
class Load:
    url: str
    body: bytes
    content_type: str
    accept: str


def run_load(
    generator: str, load: Load, *, seconds: float, connections: int, cpus: set[int] | None = None
) -> LoadResult:
    """`connections` connections post `load` for `seconds`; the generator's processes run on
    `cpus` (None: wherever this process may)."""
    if generator == WRK:
        return _run_wrk(load, seconds=seconds, connections=connections, cpus=cpus)
    return _run_builtin(load, seconds=seconds, connections=connections, cpus=cpus)


def _run_wrk(load: Load, *, seconds: float, connections: int, cpus: set[int] | None) -> LoadResult:
    wrk = shutil.which(WRK)
    if wrk is None:
        raise FileNotFoundError("wrk is not on PATH")
    threads = max(1, min(connections, len(cpus) if cpus else len(os.sched_getaffinity(0))))
    duration = max(1, math.ceil(seconds))  # wrk takes whole seconds
    with tempfile.TemporaryDirectory(prefix="smalgo-wrk-") as tmp:
        body, script = Path(tmp) / "body", Path(tmp) / "post.lua"
        body.write_bytes(load.body)
        script.write_text(WRK_SCRIPT)
        env = dict(
            os.environ,
            SMALGO_BENCH_BODY=str(body),
            SMALGO_BENCH_CONTENT_TYPE=load.content_type,
            SMALGO_BENCH_ACCEPT=load.accept,
        )
        command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), load.url]
        output = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,  # noqa: PLW1509
        ).stdout
    return parse_wrk(output, connections=connections, seconds=duration)


def parse_wrk(output: str, *, connections: int, seconds: float) -> LoadResult:
    """wrk's report (with --latency) as a LoadResult; ValueError quoting it when it is not one."""

    def latency_ms(percentile: str) -> float:
        match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if not match:
            raise ValueError(f"wrk's report has no {percentile}% latency:\n{output}")
        return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if not rate or not total:
        raise ValueError(f"cannot read wrk's report:\n{output}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return LoadResult(
        generator=WRK,
        connections=connections,
        seconds=seconds,
        requests=int(total.group(1)),
        errors=errors,
        requests_per_s=float(rate.group(1)),
        p50_ms=latency_ms("50"),
        p99_ms=latency_ms("99"),
    )


def _run_builtin(load: Load, *, seconds: float, connections: int, cpus: set[int] | None) -> LoadResult:
    """One client process per connection (`python -m smalgo.containers.benchmark.load SPEC`: a
    fresh interpreter that imports nothing of this process). Each connects and says so on its
    stdout; once all have, they are sent one start time on their stdin, so that a slow start on
    a busy machine costs no measuring time."""
    with tempfile.TemporaryDirectory(prefix="smalgo-load-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(load.body)
        spec = {
            "url": load.url,
            "body": str(body),
            "content_type": load.content_type,
            "accept": load.accept,
            "seconds": seconds,
            "cpus": sorted(cpus) if cpus else None,
        }
        clients = [
            subprocess.Popen(
                [sys.executable, "-m", __name__, json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(connections)
        ]
        try:
            for client in clients:
                _wait_ready(client)
        except RuntimeError:
            for client in clients:
                client.kill()
                client.wait()
            raise
        start = f"{time.monotonic() + START_DELAY_SECONDS!r}\n".encode()
        answers = []
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(start)
            client.stdin.flush()
        for client in clients:
            out, err = client.communicate(timeout=seconds + 120)
            if client.returncode != 0:
                raise RuntimeError(
                    f"a load generator process failed (exit {client.returncode}):\n{err.decode()[-2000:]}"
                )
            answers.append(json.loads(out))
    latencies = sorted(latency for answer in answers for latency in answer["latencies"])
    errors = sum(answer["errors"] for answer in answers)
    if not latencies:
        raise RuntimeError(f"no request to {load.url} was answered in {seconds} s ({errors} errors)")
    return LoadResult(
        generator=BUILTIN,
        connections=connections,
        seconds=seconds,
        requests=len(latencies),
        errors=errors,
        requests_per_s=len(latencies) / seconds,
        p50_ms=statistics.median(latencies) * 1e3,
        p99_ms=_percentile(latencies, 0.99) * 1e3,
    )


def _wait_ready(client: subprocess.Popen) -> None:
    """Until the client process says `ready` (it is connected), or RuntimeError with its stderr."""
    assert client.stdout is not None and client.stderr is not None
    ready, _, _ = select.select([client.stdout], [], [], READY_TIMEOUT_SECONDS)
    line = client.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        client.kill()
        error = client.stderr.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"a load generator process did not start within {READY_TIMEOUT_SECONDS} s:\n{error}")


def _percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ordered list (what wrk reports)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def _client(load: Load, seconds: float, start_at: Callable[[], float]) -> tuple[list[float], int]:
    """One connection's closed loop: connect, learn the start time from `start_at()`, then
    return the latencies (s) of the requests answered with a 2xx inside [start, start + seconds),
    and the count of the others and of connection errors."""
    parts = urlsplit(load.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {load.content_type}\r\n"
        f"Accept: {load.accept}\r\nContent-Length: {len(load.body)}\r\n\r\n"
    ).encode() + load.body
    latencies: list[float] = []
    errors = 0
    connection: _Connection | None = _Connection(host, port)
    begin = start_at()
    time.sleep(max(0.0, begin - time.monotonic()))
    stop_at = begin + seconds
    while True:
        started = time.monotonic()
        if started >= stop_at:
            break
        try:
            if connection is None:
                connection = _Connection(host, port)
            status, keep_alive = connection.exchange(request)
        except OSError:
            errors += 1
            if connection is not None:
                connection.close()
            connection = None
            continue
        finished = time.monotonic()
        if finished > stop_at:
            break
        if 200 <= status < 300:
            latencies.append(finished - started)
        else:
            errors += 1
        if not keep_alive:
            connection.close()
            connection = None
    if connection is not None:
        connection.close()
    return latencies, errors


class _Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read its whole answer."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        chunk = self.sock.recv(RECEIVE_BYTES)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def _take_line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._more()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def _take(self, size: int) -> None:
        while len(self.buffer) < size:
            self._more()
        self.buffer = self.buffer[size:]

    def exchange(self, request: bytes) -> tuple[int, bool]:
        """(status, whether the connection stays open)."""
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._more()
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get("transfer-encoding") == "chunked":
            while (size := int(self._take_line().split(b";")[0], 16)) > 0:
                self._take(size + 2)
            while self._take_line():  # trailers, up to the empty line
                pass
        else:
            self._take(int(headers.get("content-length", "0")))
        return status, headers.get("connection") != "close"


def main(argv: list[str] | None = None) -> int:
    """A built-in generator's client process: SPEC (JSON) in argv, the latencies out on stdout."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m smalgo.containers.benchmark.load SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(args[0])
    if spec["cpus"]:
        os.sched_setaffinity(0, spec["cpus"])
    load = Load(spec["url"], Path(spec["body"]).read_bytes(), spec["content_type"], spec["accept"])

    def start_at() -> float:  # connected: say so, and wait for the common start time
        print("ready", flush=True)
        return float(sys.stdin.readline())

    latencies, errors = _client(load, spec["seconds"], start_at)
    json.dump({"latencies": latencies, "errors": errors}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
