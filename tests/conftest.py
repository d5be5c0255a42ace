"""Shared fixtures: SageMaker-style training jobs laid out in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.runtime import device
from smalgo.containers.local_job import loopback_hosts_setting
from smalgo.containers.paths import JobPaths


def clustered_rows(n_rows: int = 600, n_features: int = 5, n_clusters: int = 3, seed: int = 0) -> np.ndarray:
    """Gaussian clusters, float32: data k-means and PCA can both learn something from."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 10.0, (n_clusters, n_features))
    labels = rng.integers(0, n_clusters, n_rows)
    return (centers[labels] + rng.normal(0.0, 1.0, (n_rows, n_features))).astype(np.float32)


def csv_text(X: np.ndarray, labels: np.ndarray | None = None) -> str:
    """X (with an optional label column first) as CSV, values written exactly (float32 repr)."""
    columns = X if labels is None else np.column_stack([labels, X])
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in columns.astype(np.float32))


class CountingData(InMemoryData):
    """InMemoryData that counts the passes started over each channel."""

    def __init__(self, channels) -> None:
        super().__init__(channels)
        self.passes = {name: 0 for name in channels}

    def batches(self, channel, batch_size, *, feature_dim=None):
        batches = super().batches(channel, batch_size, feature_dim=feature_dim)
        self.passes[channel] += 1
        return batches


class SageMakerJob:
    """Writes /opt/ml-style configuration and data under a base directory."""

    def __init__(self, base: Path):
        self.paths = JobPaths(base)
        self.paths.config_dir.mkdir(parents=True)
        self.paths.data_dir.mkdir(parents=True)
        self.paths.model_dir.mkdir()
        self.paths.output_dir.mkdir()
        self.channels: dict[str, dict] = {}

    def hyperparameters(self, **values) -> SageMakerJob:
        """As SageMaker writes them: every value a string."""
        self.write_config("hyperparameters.json", {k: str(v) for k, v in values.items()})
        return self

    def channel(
        self,
        name: str,
        content_type: str | None = "text/csv;label_size=0",
        mode: str = "File",
        files: dict[str, str | bytes] | None = None,
        **settings,
    ) -> SageMakerJob:
        """Declare a channel in inputdataconfig.json; in File mode write `files` (relative
        path -> content) under input/data/<name>/."""
        entry = {"TrainingInputMode": mode, "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        if content_type is not None:
            entry["ContentType"] = content_type
        entry.update(settings)
        self.channels[name] = entry
        self.write_config("inputdataconfig.json", self.channels)
        if mode != "Pipe":
            directory = self.paths.channel_dir(name)
            directory.mkdir(parents=True, exist_ok=True)
            for relative, content in (files or {}).items():
                path = directory / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, str):
                    path.write_text(content)
                else:
                    path.write_bytes(content)
        return self

    def write_config(self, name: str, value) -> None:
        (self.paths.config_dir / name).write_text(json.dumps(value))

    # What a finished job left behind.

    def model_files(self) -> list[str]:
        return sorted(p.name for p in self.paths.model_dir.iterdir())

    def failure(self) -> str:
        return self.paths.failure_file.read_text()

    def succeeded(self) -> bool:
        return self.paths.success_file.exists()


@pytest.fixture
def job(tmp_path) -> SageMakerJob:
    return SageMakerJob(tmp_path / "opt_ml")


@pytest.fixture
def make_job(tmp_path):
    """Factory for several jobs in one test."""
    counter = iter(range(1000))

    def make() -> SageMakerJob:
        return SageMakerJob(tmp_path / f"opt_ml_{next(counter)}")

    return make


def assert_user_failure(job, exit_code: int, expected: str) -> str:
    """The job failed as a user error should: exit 1, the failure file starts with the message
    (no traceback), no model file, no success file."""
    assert exit_code == 1
    failure = job.failure()
    assert failure.startswith(expected), failure
    assert "Traceback" not in failure
    assert job.model_files() == []
    assert not job.succeeded()
    return failure


@pytest.fixture
def fresh_device_state(monkeypatch):
    """No SMALGO_DEVICE and no remembered GPU probe, before and after the test."""
    monkeypatch.delenv("SMALGO_DEVICE", raising=False)
    device.forget_gpu_probe()
    yield
    device.forget_gpu_probe()


def fake_probe(monkeypatch, available: bool, detail: str) -> list[int]:
    """Replace the GPU probe; returns a list that grows by one per probe."""
    probes: list[int] = []

    def look_for_gpu():
        probes.append(1)
        return available, detail

    monkeypatch.setattr(device, "_look_for_gpu", look_for_gpu)
    return probes


class TwoFileModel:
    """A model that saves two files, a.npy and b.npy: enough to stop a commit between them."""

    def save(self, directory):
        (Path(directory) / "a.npy").write_bytes(b"a")
        (Path(directory) / "b.npy").write_bytes(b"b")


def stop_on_the_second_move(monkeypatch) -> None:
    """Make the job's second shutil.move raise TrainingStopped (SIGTERM mid-commit); the first
    one moves as usual."""
    from smalgo.containers import job as job_module

    real_move = job_module.shutil.move
    calls = []

    def move_then_stop(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise job_module.TrainingStopped()
        return real_move(source, target)

    monkeypatch.setattr(job_module.shutil, "move", move_then_stop)


def run_in_cuda_simulator(script: str, out: Path) -> str:
    """Run `script` (python -c, with `out` as argv[1]) in a fresh process under numba's CUDA
    simulator (NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, hence a
    process of its own) and no SMALGO_DEVICE; fails the test unless it exits 0; its stderr."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    env.pop("SMALGO_DEVICE", None)
    result = subprocess.run(
        [sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def real_cuda_gpu() -> bool:
    """Whether numba.cuda finds a real GPU (the real-GPU tests skip with "no CUDA GPU" where not)."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False  # this process runs the simulator, far too slow for the large comparison
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


def start_host(
    job: Path, port: int, hosts: int, algorithm: str, *, command: list[str] | None = None, **env
) -> subprocess.Popen:
    """One host of a job of `hosts` on loopback (algo-K on 127.0.0.K, the tracker on `port`): its
    `smalgo train --algorithm ALGORITHM` (or `command`) on its job directory, as SageMaker runs
    each host's container; its output goes to job/log."""
    addresses = loopback_hosts_setting(hosts)
    environment = dict(
        os.environ,
        SAGEMAKER_BASE_DIR=str(job),
        SMALGO_HOST_ADDRESSES=addresses,
        SMALGO_TRACKER_PORT=str(port),
        **env,
    )
    command = command or [sys.executable, "-m", "smalgo.containers", "train", "--algorithm", algorithm]
    with open(job / "log", "wb") as log:
        return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
