"""Shared by the smalgo.serve tests (no tests here): small trained models, and the real server
(gunicorn, `python -m smalgo.serve`) in a subprocess on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
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
    for algorithm in ALGORITHMS.values():
        if algorithm.holds_native_model(model_dir):  # XGBoost's own model files
            return algorithm.load_native_model(model_dir).predict(Batch(X))
    files = ModelFiles.read(model_dir)
    return get_algorithm(files.algorithm).load_model(files).predict(Batch(X))


def _set_field(key, value):
    def damage(model_dir: Path, metadata: dict) -> None:
        metadata[key] = value

    return damage


def _save_array(file_name: str, array: np.ndarray, allow_pickle: bool = False):
    def damage(model_dir: Path, metadata: dict) -> None:
        np.save(model_dir / file_name, array, allow_pickle=allow_pickle)

    return damage


def _cut_short(file_name: str, drop_bytes: int):
    def damage(model_dir: Path, metadata: dict) -> None:
        path = model_dir / file_name
        path.write_bytes(path.read_bytes()[:-drop_bytes])

    return damage


def _overwrite(file_name: str, content: bytes):
    def damage(model_dir: Path, metadata: dict) -> None:
        (model_dir / file_name).write_bytes(content)

    return damage


# name: (the algorithm of the sample model to damage, the damage, the file the message names, and
# what else it must say: the field, or the problem with the array). The sample models have
# FEATURES features; k-means has k=10 centers, PCA 3 components.
DAMAGED_MODELS = {
    "hyperparameters a list": (
        "kmeans",
        _set_field("hyperparameters", [1, 2]),
        "model.json",
        '"hyperparameters" must be a JSON object, not a list',
    ),
    "details a string": ("pca", _set_field("details", "exact"), "model.json", '"details" must be a JSON object'),
    "null k": ("kmeans", _set_field("k", None), "model.json", '"k" must be a positive integer, not null'),
    "null n_rows": ("pca", _set_field("n_rows", None), "model.json", '"n_rows" must be a positive integer, not null'),
    "feature_dim a string": (
        "pca",
        _set_field("feature_dim", "4"),
        "model.json",
        '"feature_dim" must be a positive integer, not "4"',
    ),
    "arrays a list": ("pca", _set_field("arrays", ["components.npy"]), "model.json", '"arrays" must be a JSON object'),
    "array file outside the directory": (
        "kmeans",
        _set_field("arrays", {"centers": "../centers.npy"}),
        "model.json",
        '"arrays"."centers" must be the name of a .npy file',
    ),
    "null format_version": ("kmeans", _set_field("format_version", None), "model.json", '"format_version" is null'),
    "model.json a list": ("kmeans", _overwrite("model.json", b"[1, 2]"), "model.json", "not a JSON object"),
    "pickled centers": (
        "kmeans",
        _save_array("centers.npy", np.full((10, FEATURES), None, dtype=object), allow_pickle=True),
        "centers.npy",
        "is not a plain numeric .npy array (it would need pickle, which smalgo never loads)",
    ),
    "centers not a .npy file": ("kmeans", _overwrite("centers.npy", b"1,2,3\n"), "centers.npy", "is not a .npy file"),
    "truncated centers": ("kmeans", _cut_short("centers.npy", 9), "centers.npy", "is truncated or damaged"),
    "truncated header": ("pca", _cut_short("mean.npy", 130), "mean.npy", "is truncated or damaged"),
    "mean of the wrong shape": (
        "pca",
        _save_array("mean.npy", np.zeros(FEATURES + 1, dtype=np.float32)),
        "mean.npy",
        f"has shape ({FEATURES + 1},); model.json implies ({FEATURES},)",
    ),
    "NaN centers": (
        "kmeans",
        _save_array("centers.npy", np.where(np.eye(10, FEATURES) > 0, np.nan, 1.0).astype(np.float32)),
        "centers.npy",
        "holds NaN or infinite values (4 of 40, the first at index (0, 0))",
    ),
    "NaN singular values": (
        "pca",
        _save_array("singular_values.npy", np.array([3.0, np.nan, 1.0], dtype=np.float32)),
        "singular_values.npy",
        "holds NaN or infinite values (1 of 3, the first at index (1,))",
    ),
    "infinite components": (
        "pca",
        _save_array("components.npy", np.full((FEATURES, 3), -np.inf, dtype=np.float32)),
        "components.npy",
        "holds NaN or infinite values",
    ),
    "NaN mean": (
        "pca",
        _save_array("mean.npy", np.array([0.0, 1.0, np.nan, 2.0])),
        "mean.npy",
        "holds NaN or infinite values (1 of 4, the first at index (2,))",
    ),
    "complex components": (
        "pca",
        _save_array("components.npy", np.ones((FEATURES, 3), dtype=np.complex64)),
        "components.npy",
        "holds complex numbers",
    ),
    "string centers": (
        "kmeans",
        _save_array("centers.npy", np.full((10, FEATURES), "1.5")),
        "centers.npy",
        "holds strings",
    ),
}


def damaged_model(model_dirs: dict[str, Path], case: str, base: Path) -> tuple[Path, str, str]:
    """A copy of a sample model in base/<case> damaged as DAMAGED_MODELS[case] says; with the path
    of the file the refusal must name and what else it must say."""
    algorithm, damage, file_name, fragment = DAMAGED_MODELS[case]
    model_dir = base / case.replace(" ", "_")
    shutil.copytree(model_dirs[algorithm], model_dir)
    metadata_path = model_dir / "model.json"
    metadata = json.loads(metadata_path.read_text())
    damage(model_dir, metadata)
    if metadata_path.read_text().lstrip().startswith("{"):  # unless the damage replaced model.json
        metadata_path.write_text(json.dumps(metadata))
    return model_dir, str(model_dir / file_name), fragment


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


class Answers:
    """The answers arriving on a connection, in order (one recv may hold several)."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.data = b""

    def _more(self) -> None:
        chunk = self.client.recv(1 << 20)
        assert chunk, f"connection closed after {self.data[:300]!r}"
        self.data += chunk

    def next(self) -> tuple[bytes, bytes]:
        """(status line, body) of the next answer with a Content-Length, skipping 100 Continue."""
        while True:
            while b"\r\n\r\n" not in self.data:
                self._more()
            head, _, self.data = self.data.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 100"):
                break
        fields = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"content-length"])
        while len(self.data) < length:
            self._more()
        body, self.data = self.data[:length], self.data[length:]
        return head.split(b"\r\n")[0], body

    def closed(self) -> bool:
        """Whether the server closed the connection after the last answer."""
        self.client.settimeout(10)
        return not self.data and self.client.recv(1) == b""

    def next_status(self) -> tuple[int, bytes]:
        """(status code, body) of the next answer, as next()."""
        status_line, body = self.next()
        return int(status_line.split()[1]), body
