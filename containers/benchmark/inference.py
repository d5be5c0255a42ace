"""Inference throughput through the real server: `smalgo serve` (gunicorn with the server's
default workers, or $SAGEMAKER_MODEL_SERVER_WORKERS) on a free loopback port, serving the model
the RecordIO training job wrote, under a load generator for a fixed time per load:

    1 record and 1,000 records per request, in CSV (text/csv, answered in application/json, the
    default Accept) and in RecordIO-protobuf (answered in RecordIO-protobuf, as the SageMaker
    SDK's RecordSerializer / RecordDeserializer ask).

Before a load is timed, one request of it is checked: HTTP 200 and one answer per record.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from smalgo.algorithms.contract import Algorithm
from smalgo.algorithms.formats.content_types import CSV, RECORDIO_PROTOBUF
from smalgo.recordio import decode_response

from . import data
from .load import Load, run_load

BATCH_RECORDS = 1000
REQUEST_SIZES = (1, BATCH_RECORDS)
ACCEPT = {data.CSV_FORM: "application/json", data.RECORDIO: RECORDIO_PROTOBUF}
REQUEST_TYPE = {data.CSV_FORM: CSV, data.RECORDIO: RECORDIO_PROTOBUF}
START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m smalgo.containers serve --model-dir DIR` on a free port, its output in `log`."""

    def __init__(self, model_dir: Path, environ: dict[str, str], log: Path):
        self.model_dir, self.environ, self.log = model_dir, dict(environ), log
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> Server:
        port = free_port()
        self.environ["SAGEMAKER_BIND_TO_PORT"] = str(port)
        self.base_url = f"http://127.0.0.1:{port}"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "smalgo.containers", "serve", "--model-dir", str(self.model_dir)],
                env=self.environ,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/ping", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer /ping within {START_TIMEOUT_SECONDS} s:\n{self.log_tail()}")

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def check_answer(algorithm: Algorithm, load: Load, records: int) -> None:
    """One request of `load`: 200, and one answer per record (RuntimeError saying what came back)."""
    request = urllib.request.Request(
        load.url, data=load.body, method="POST", headers={"Content-Type": load.content_type, "Accept": load.accept}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(
            f"{algorithm.name}: a {records}-record {load.content_type} request got HTTP {exc.code}: "
            f"{exc.read()[:300]!r}"
        ) from None
    if load.accept == RECORDIO_PROTOBUF:
        outputs = decode_response(answer)
        answered = len(next(iter(outputs.values())))
    else:
        answered = len(json.loads(answer)[algorithm.json_response_key])
    if answered != records:
        raise RuntimeError(f"{algorithm.name}: {records} records sent in {load.content_type}, {answered} answers")


def measure(
    algorithm: Algorithm,
    dataset: data.DataSet,
    server: Server,
    *,
    generator: str,
    seconds: float,
    warmup_seconds: float,
    connections: int,
    load_cpus: set[int] | None,
) -> list[dict]:
    """Every load against the running server; one result each."""
    results = []
    for form in data.FORMS:
        for records in REQUEST_SIZES:
            load = Load(
                url=server.base_url + "/invocations",
                body=data.request_body(dataset.head(records), form),
                content_type=REQUEST_TYPE[form],
                accept=ACCEPT[form],
            )
            check_answer(algorithm, load, records)
            if warmup_seconds > 0:
                run_load(generator, load, seconds=warmup_seconds, connections=connections, cpus=load_cpus)
            result = run_load(generator, load, seconds=seconds, connections=connections, cpus=load_cpus)
            results.append(
                {
                    "form": form,
                    "content_type": load.content_type,
                    "accept": load.accept,
                    "records_per_request": records,
                    "request_bytes": len(load.body),
                    **result.as_dict(),
                    "records_per_s": result.requests_per_s * records,
                }
            )
    return results
