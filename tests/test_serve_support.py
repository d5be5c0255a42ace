"""Shared by the smalgo.serve tests (no tests here): small trained models, and the real server
(gunicorn, `python -m smalgo.serve`) in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from conftest import clustered_rows

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.model_files import ModelFiles
from smalgo.algorithms.registry import ALGORITHMS, get_algorithm

FEATURES = 4


def training_rows() -> np.ndarray:
    return clustered_rows(600, FEATURES, 3, seed=7)


def train_sample_model(algorithm_name: str, model_dir: Path) -> Path:
    """A model of the algorithm's sample job (contract.SampleJob) on small clustered rows."""
    algorithm = get_algorithm(algorithm_name)
    hp = algorithm.hyperparameters.parse(algorithm.sample_job.hyperparameters_for(algorithm, FEATURES))
    X = training_rows()
    labels = (X[:, 0] > X[:, 0].mean()).astype(np.float32)
    algorithm.train(hp, InMemoryData({"train": (X, labels)})).save(model_dir)
    return model_dir


def train_sample_models(base: Path) -> dict[str, Path]:
    """A sample model of every algorithm in the registry, by name."""
    return {name: train_sample_model(name, base / name) for name in ALGORITHMS}


def train_kmeans(model_dir: Path) -> Path:
    return train_sample_model("kmeans", model_dir)


def expected_outputs(model_dir: Path, X) -> dict[str, np.ndarray]:
    """What the model predicts for X, in-process: the reference for the server's answers."""
    files = ModelFiles.read(model_dir)
    return get_algorithm(files.algorithm).load_model(files).predict(Batch(X))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m smalgo.serve MODEL_DIR` on a free port; with via_cli, the `smalgo serve
    --model-dir MODEL_DIR` command an image's entrypoint runs."""

    def __init__(self, model_dir: Path, log_path: Path, via_cli: bool = False, **env: str):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environment = dict(os.environ, SAGEMAKER_BIND_TO_PORT=str(self.port), **env)
        with open(log_path, "wb") as log:
            command = (
                ["-m", "smalgo.containers", "serve", "--model-dir", str(model_dir)]
                if via_cli
                else ["-m", "smalgo.serve", str(model_dir)]
            )
            self.process = subprocess.Popen(
                [sys.executable, *command], env=environment, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_until_ready(self, timeout: float = 120.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _, _ = self.request("GET", "/ping", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30
    ) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def resident_bytes(self) -> int:
        """Resident memory of the master and its workers, from /proc."""
        pids = [self.process.pid] + _children(self.process.pid)
        total = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue  # a worker that just exited
            kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            total += int(kb) * 1024
        return total

    def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return self.process.returncode, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            # The command name (in parentheses) may hold spaces; the parent pid follows it.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children
