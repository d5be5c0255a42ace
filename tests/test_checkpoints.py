"""Checkpoints of the mini-batch algorithms' training state (algorithms/checkpoints.py, the shared
driver's end-of-pass writes and resume, containers/job.py's SIGTERM): a job interrupted after a
pass and run again ends with the model of an uninterrupted job, bit for bit; a checkpoint that is
truncated, of another algorithm or of other hyperparameters is refused naming its file; SIGTERM
leaves the last pass's state and no model; a write that a kill interrupted leaves the previous
checkpoint usable."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SageMakerJob, clustered_rows, csv_text, run_in_cuda_simulator, start_host

from smalgo.algorithms import checkpoints as checkpoints_module
from smalgo.algorithms.checkpoints import STATE_FILE, StateCheckpoints
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.runtime.collective import SingleHost
from smalgo.containers import job as job_module
from smalgo.containers.job import run_training
from smalgo.containers.local_job import free_port, lay_out_hosts_job
from smalgo.recordio import write_dense

HYPERPARAMETERS = {
    "kmeans": {"k": 3, "feature_dim": 5, "mini_batch_size": 50, "epochs": 4},
    "pca": {"num_components": 2, "feature_dim": 5, "mini_batch_size": 50},
    "factorization-machines": {
        "feature_dim": 5,
        "num_factors": 2,
        "predictor_type": "regressor",
        "mini_batch_size": 50,
        "epochs": 4,
    },
    # The jobs of two hosts (hosts_job); its one-host jobs are linear_learner_job's.
    "linear-learner": {
        "feature_dim": 4,
        "predictor_type": "binary_classifier",
        "mini_batch_size": 50,
        "num_models": 4,
        "early_stopping_patience": 10,
    },
}
CSV_NO_LABEL = "text/csv;label_size=0"
EPOCHS = {"kmeans": 4, "pca": 1, "factorization-machines": 4}


class Crash(Exception):
    """What a kill -9 leaves: the job ends at once, after the checkpoint was written."""


def make_job(base: Path, algorithm: str, checkpoints: Path | None, **overrides) -> SageMakerJob:
    job = SageMakerJob(base)
    job.hyperparameters(**{**HYPERPARAMETERS[algorithm], **overrides})
    if algorithm == "factorization-machines":  # RecordIO-protobuf only, labelled
        for channel, n_rows, seed in (("train", 600, 0), ("test", 100, 1)):
            X = clustered_rows(n_rows=n_rows, seed=seed)
            job.channel(channel, "application/x-recordio-protobuf", files={f"{channel}.pbr": recordio(X, X[:, 0])})
    else:
        job.channel("train", files={"train.csv": csv_text(clustered_rows(n_rows=600))})
        job.channel("test", files={"test.csv": csv_text(clustered_rows(n_rows=100, seed=1))})
    if checkpoints is not None:
        job.write_config("checkpointconfig.json", {"LocalPath": str(checkpoints)})
    return job


def recordio(X: np.ndarray, labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    write_dense(buffer, X, labels.copy())
    return buffer.getvalue()


def model_bytes(job: SageMakerJob) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(job.paths.model_dir.iterdir())}


def saved_states(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def interrupt_after(monkeypatch, epochs_done: int, what=None) -> None:
    """Make the job end right after the checkpoint of `epochs_done` passes is written."""
    write = StateCheckpoints.write

    def write_then_end(self, done, arrays, metadata, **options):
        path = write(self, done, arrays, metadata, **options)
        if done == epochs_done:
            if what is None:
                raise Crash(f"killed after {path}")
            what()
        return path

    monkeypatch.setattr(StateCheckpoints, "write", write_then_end)


@pytest.fixture
def uninterrupted(tmp_path):
    def run(algorithm: str, **overrides) -> dict[str, bytes]:
        job = make_job(tmp_path / f"plain-{algorithm}", algorithm, None, **overrides)
        assert run_training(job.paths, algorithm) == 0
        return model_bytes(job)

    return run


@pytest.mark.parametrize(
    ("algorithm", "after"),
    [("kmeans", 2), ("kmeans", 4), ("pca", 1), ("factorization-machines", 1), ("factorization-machines", 3)],
)
def test_a_job_interrupted_after_a_pass_resumes_to_the_same_model(
    algorithm, after, tmp_path, monkeypatch, caplog, uninterrupted
):
    expected = uninterrupted(algorithm)
    checkpoints = tmp_path / "checkpoints"
    job = make_job(tmp_path / "job", algorithm, checkpoints)
    with monkeypatch.context() as patch:
        interrupt_after(patch, after)
        assert run_training(job.paths, algorithm) == 1
    assert "Crash: killed after" in job.failure() and job.model_files() == []
    assert f"smalgo-state.{after}" in saved_states(checkpoints)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_training(job.paths, algorithm) == 0
    assert f"Resuming from the checkpoint {checkpoints / f'smalgo-state.{after}'}" in caplog.text
    assert model_bytes(job) == expected  # bit-identical: the same sums, centers and random draws
    # The newest checkpoint and one older are kept.
    last = EPOCHS[algorithm]
    assert saved_states(checkpoints) == sorted(f"smalgo-state.{n}" for n in range(max(1, last - 1), last + 1))


def test_kmeans_resumes_from_a_pass_whose_write_a_kill_interrupted(tmp_path, monkeypatch, uninterrupted):
    """A leftover temporary directory (a kill while writing the state of pass 3) is no checkpoint:
    the job resumes from pass 2, removes it, and ends with the same model."""
    expected = uninterrupted("kmeans")
    checkpoints = tmp_path / "checkpoints"
    job = make_job(tmp_path / "job", "kmeans", checkpoints)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        assert run_training(job.paths, "kmeans") == 1
    leftover = checkpoints / ".smalgo-state.3.abc123.tmp"
    leftover.mkdir()
    (leftover / "centers.npy").write_bytes(b"\x93NUMPY half of it")
    assert run_training(job.paths, "kmeans") == 0
    assert model_bytes(job) == expected
    assert not leftover.exists()


def test_sigterm_after_a_pass_leaves_its_checkpoint_and_no_model(tmp_path, monkeypatch, uninterrupted):
    expected = uninterrupted("kmeans")
    checkpoints = tmp_path / "checkpoints"
    job = make_job(tmp_path / "job", "kmeans", checkpoints)
    with monkeypatch.context() as patch:
        # A real SIGTERM to this process: the job's handler raises TrainingStopped in the next pass.
        interrupt_after(patch, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert run_training(job.paths, "kmeans") == 143
    failure = job.failure()
    assert failure.startswith("Training stopped: the job received SIGTERM"), failure
    assert f"The training state is checkpointed in {checkpoints / 'smalgo-state.2'}" in failure
    assert job.model_files() == [] and not job.succeeded()
    assert saved_states(checkpoints) == ["smalgo-state.1", "smalgo-state.2"]
    assert run_training(job.paths, "kmeans") == 0
    assert model_bytes(job) == expected


def test_sigterm_during_the_write_of_a_checkpoint_still_leaves_that_pass(tmp_path, monkeypatch, uninterrupted):
    """SIGTERM while the state of pass 2 is being renamed into place: the write is undone, then
    done again before the job fails, so the state of pass 2 is kept whole."""
    expected = uninterrupted("kmeans")
    checkpoints = tmp_path / "checkpoints"
    job = make_job(tmp_path / "job", "kmeans", checkpoints)
    rename = os.rename
    stopped = []

    def rename_or_stop(source, target):
        if Path(target).name == "smalgo-state.2" and not stopped:
            stopped.append(target)
            raise job_module.TrainingStopped()  # what the SIGTERM handler raises
        rename(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints_module.os, "rename", rename_or_stop)
        assert run_training(job.paths, "kmeans") == 143
    assert stopped
    assert f"checkpointed in {checkpoints / 'smalgo-state.2'}" in job.failure()
    assert saved_states(checkpoints) == ["smalgo-state.1", "smalgo-state.2"]  # no temporary left
    assert job.model_files() == []
    assert run_training(job.paths, "kmeans") == 0
    assert model_bytes(job) == expected


# (hyperparameters, content type, train data) of the jobs killed for real below.
def killed_job_data(algorithm: str) -> tuple[dict, str, bytes]:
    X = clustered_rows(n_rows=600)
    if algorithm == "kmeans":
        return HYPERPARAMETERS["kmeans"], CSV_NO_LABEL, csv_text(X).encode()
    if algorithm == "factorization-machines":
        return HYPERPARAMETERS["factorization-machines"], "application/x-recordio-protobuf", recordio(X, X[:, 0])
    hp = {"feature_dim": 5, "predictor_type": "regressor", "mini_batch_size": 50, "epochs": 4, "num_models": 4}
    return hp, "text/csv", csv_text(X, X[:, 0] + X[:, 1]).encode()


@pytest.mark.parametrize("algorithm", ["kmeans", "linear-learner", "factorization-machines"])
def test_a_job_killed_with_sigkill_after_its_second_pass_resumes_to_the_model_of_an_uninterrupted_job(
    tmp_path, algorithm, caplog
):
    """A real kill -9 of `smalgo train`. In Pipe mode the test decides when a pass's data comes
    (containers/pipe_feeder.py): two passes, then the job waits for the third and is killed once
    it has logged the checkpoint of the second. Run again (SageMaker's Pipe mode starts over at
    train_0), it resumes and ends with the model an uninterrupted job gives, bit for bit."""
    from smalgo.containers.pipe_feeder import PipeFeeder

    hp, content_type, payload = killed_job_data(algorithm)
    plain = SageMakerJob(tmp_path / "plain").hyperparameters(**hp)
    plain.channel("train", content_type, files={"train": payload})
    assert run_training(plain.paths, algorithm) == 0, plain.failure()
    checkpoints = tmp_path / "checkpoints"
    job = SageMakerJob(tmp_path / "job").hyperparameters(**hp).channel("train", content_type, mode="Pipe")
    job.write_config("checkpointconfig.json", {"LocalPath": str(checkpoints)})
    log = tmp_path / "log"
    with PipeFeeder(job.paths.data_dir, "train", payload, max_passes=2), log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "smalgo.containers", "train", "--algorithm", algorithm],
            env=dict(os.environ, SAGEMAKER_BASE_DIR=str(job.paths.base)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while "Checkpoint of the training state after epoch 1:" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert job.model_files() == [] and "smalgo-state.2" in saved_states(checkpoints)
    for fifo in job.paths.data_dir.glob("train_*"):  # what SageMaker's next job starts without
        fifo.unlink()
    caplog.clear()
    with PipeFeeder(job.paths.data_dir, "train", payload, max_passes=2), caplog.at_level(logging.INFO):
        assert run_training(job.paths, algorithm) == 0, job.failure()
    assert f"Resuming from the checkpoint {checkpoints / 'smalgo-state.2'}" in caplog.text
    assert model_bytes(job) == model_bytes(plain)


@pytest.fixture
def kmeans_checkpoints(tmp_path, monkeypatch) -> Path:
    """The checkpoints of a k-means job interrupted after 2 passes."""
    checkpoints = tmp_path / "checkpoints"
    job = make_job(tmp_path / "first", "kmeans", checkpoints)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        assert run_training(job.paths, "kmeans") == 1
    return checkpoints


def test_a_truncated_checkpoint_is_refused_naming_the_file(kmeans_checkpoints, tmp_path, caplog):
    """Every file of the newest checkpoint cut at random offsets: it is passed over (a warning
    naming the file) for the older one; with no older one the job fails naming the file."""
    newest, older = kmeans_checkpoints / "smalgo-state.2", kmeans_checkpoints / "smalgo-state.1"
    hp = json.loads((newest / STATE_FILE).read_text())["hyperparameters"]
    store = StateCheckpoints(kmeans_checkpoints, "kmeans", hp)
    rng = np.random.default_rng(0)
    hidden = kmeans_checkpoints.parent / "older"
    for name in sorted(p.name for p in newest.iterdir()):
        original = (newest / name).read_bytes()
        for offset in sorted({0, 1, len(original) - 1, *rng.integers(0, len(original), 8).tolist()}):
            (newest / name).write_bytes(original[:offset])
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                used = store.latest()
            assert used is not None and used.path == older and used.epochs_done == 1
            assert f"Not resuming from the checkpoint {newest}: {newest / name}" in caplog.text, (name, offset)
            older.rename(hidden)  # the newest alone: refused, nothing loaded
            with pytest.raises(UserError) as refused:
                store.latest()
            assert str(refused.value).startswith(f"Cannot resume from the checkpoint {newest / name}: "), refused.value
            hidden.rename(older)
        (newest / name).write_bytes(original)
    assert store.latest().path == newest  # type: ignore[union-attr]
    # Through a job: the failure names the file, no model, no traceback.
    (newest / "centers.npy").write_bytes((newest / "centers.npy").read_bytes()[:100])
    older.rename(hidden)
    job = make_job(tmp_path / "second", "kmeans", kmeans_checkpoints)
    assert run_training(job.paths, "kmeans") == 1
    failure = job.failure()
    assert failure.startswith(f"Cannot resume from the checkpoint {newest / 'centers.npy'}: it is truncated"), failure
    assert job.model_files() == [] and "Traceback" not in failure


def test_a_truncated_newest_checkpoint_resumes_from_the_older_one(kmeans_checkpoints, tmp_path, uninterrupted):
    """What a spot interruption during the upload of the newest checkpoint leaves."""
    expected = uninterrupted("kmeans")
    newest = kmeans_checkpoints / "smalgo-state.2"
    (newest / "counts.npy").write_bytes((newest / "counts.npy").read_bytes()[:-3])
    job = make_job(tmp_path / "second", "kmeans", kmeans_checkpoints)
    assert run_training(job.paths, "kmeans") == 0
    assert model_bytes(job) == expected
    assert saved_states(kmeans_checkpoints) == ["smalgo-state.3", "smalgo-state.4"]


def test_a_checkpoint_of_other_hyperparameters_is_refused(kmeans_checkpoints, tmp_path):
    job = make_job(tmp_path / "second", "kmeans", kmeans_checkpoints, k=4)
    assert run_training(job.paths, "kmeans") == 1
    failure = job.failure()
    state_file = kmeans_checkpoints / "smalgo-state.2" / STATE_FILE
    assert failure.startswith(
        f"Cannot resume from the checkpoint {state_file}: it was written with other hyperparameters"
    )
    assert "k=3 there, 4 here" in failure and job.model_files() == []


def test_more_epochs_continue_from_the_checkpoint(kmeans_checkpoints, tmp_path, caplog):
    job = make_job(tmp_path / "second", "kmeans", kmeans_checkpoints, epochs=5)
    with caplog.at_level(logging.INFO):
        assert run_training(job.paths, "kmeans") == 0
    assert "training continues at epoch 2 of 5" in caplog.text
    assert saved_states(kmeans_checkpoints) == ["smalgo-state.4", "smalgo-state.5"]


def test_a_checkpoint_of_another_algorithm_is_refused(kmeans_checkpoints, tmp_path):
    job = make_job(tmp_path / "second", "pca", kmeans_checkpoints)
    assert run_training(job.paths, "pca") == 1
    state_file = kmeans_checkpoints / "smalgo-state.2" / STATE_FILE
    assert job.failure().startswith(
        f"Cannot resume from the checkpoint {state_file}: it is a 'kmeans' state, and this job trains 'pca'"
    )


def test_an_array_of_the_wrong_shape_is_refused_before_anything_is_restored(tmp_path):
    from smalgo.algorithms.registry import get_algorithm

    algorithm = get_algorithm("kmeans")
    hp = algorithm.hyperparameters.parse({k: str(v) for k, v in HYPERPARAMETERS["kmeans"].items()})
    state = algorithm.start(hp)
    arrays, metadata = state.checkpoint_arrays()  # type: ignore[attr-defined]
    before = {name: np.array(a, copy=True) for name, a in arrays.items()}
    wrong = {**arrays, "counts": np.zeros(7), "shift": np.zeros(5, dtype=np.float32)}
    with pytest.raises(checkpoints_module.CheckpointMismatch, match="'counts' is float64\\[7\\]"):
        state.restore_checkpoint(wrong, {**metadata, "rows_seen": 10})  # type: ignore[attr-defined]
    after, _ = state.checkpoint_arrays()  # type: ignore[attr-defined]
    assert after.keys() == before.keys() and all(np.array_equal(after[n], before[n]) for n in before)


# Linear learner: each variant takes other parts of its state through a checkpoint (the early
# stopping callback's best pass, the best pass of each model, positive weights, the train sample
# dense and sparse, class weights).
LINEAR_LEARNER_JOBS = {
    "binary, validation, early stopping": {
        "predictor_type": "binary_classifier",
        "positive_example_weight_mult": "balanced",
        # Stops after epoch 3 (4 of 5 passes): the resumed job must remember epoch 0's best.
        "early_stopping_patience": 3,
        "early_stopping_tolerance": 0.05,
    },
    "regressor, sparse, no validation": {"predictor_type": "regressor", "loss": "huber_loss"},
    "multiclass, no validation": {
        "predictor_type": "multiclass_classifier",
        "num_classes": 3,
        "balance_multiclass_weights": "true",
    },
}


def linear_learner_job(base: Path, variant: str, checkpoints: Path | None) -> SageMakerJob:
    job = SageMakerJob(base)
    hp = LINEAR_LEARNER_JOBS[variant]
    job.hyperparameters(feature_dim=5, mini_batch_size=50, epochs=5, num_models=4, **hp)
    channels = [("train", 600, 0), ("validation", 200, 1)] if "validation," in variant else [("train", 600, 0)]
    for channel, n_rows, seed in channels:
        X = clustered_rows(n_rows=n_rows, seed=seed)
        score = X[:, 0] - X[:, 1] + np.random.default_rng(seed).normal(0, 3, n_rows)
        if hp["predictor_type"] == "regressor":
            X[X < 0] = 0  # sparse rows
            job.channel(channel, "application/x-recordio-protobuf", files={f"{channel}.pbr": sparse_recordio(X, score)})
        else:
            y = (score > 0) if hp["predictor_type"] == "binary_classifier" else np.digitize(score, [-5, 5])
            job.channel(channel, "text/csv", files={f"{channel}.csv": csv_text(X, y.astype(np.float32))})
    if checkpoints is not None:
        job.write_config("checkpointconfig.json", {"LocalPath": str(checkpoints)})
    return job


def sparse_recordio(X: np.ndarray, labels: np.ndarray) -> bytes:
    import scipy.sparse as sp

    from smalgo.recordio import write_sparse

    buffer = io.BytesIO()
    write_sparse(buffer, sp.csr_matrix(X), labels.astype(np.float32))
    return buffer.getvalue()


@pytest.mark.parametrize("variant", list(LINEAR_LEARNER_JOBS))
def test_linear_learner_interrupted_after_its_second_pass_resumes_to_the_same_model(
    variant, tmp_path, monkeypatch, caplog
):
    plain = linear_learner_job(tmp_path / "plain", variant, None)
    with caplog.at_level(logging.INFO):
        assert run_training(plain.paths, "linear-learner") == 0, plain.failure()
    stopped_early = "Training stops after epoch" in caplog.text
    checkpoints = tmp_path / "checkpoints"
    job = linear_learner_job(tmp_path / "job", variant, checkpoints)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        assert run_training(job.paths, "linear-learner") == 1
    assert job.model_files() == [] and saved_states(checkpoints) == ["smalgo-state.1", "smalgo-state.2"]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_training(job.paths, "linear-learner") == 0, job.failure()
    assert f"Resuming from the checkpoint {checkpoints / 'smalgo-state.2'}" in caplog.text
    assert ("Training stops after epoch" in caplog.text) == stopped_early
    assert model_bytes(job) == model_bytes(plain)  # bit-identical
    if variant.startswith("binary"):
        assert stopped_early, "the early stopping callback's state is what this variant checks"


def test_linear_learner_sigterm_leaves_its_checkpoint_and_no_model(tmp_path, monkeypatch):
    variant = "binary, validation, early stopping"
    plain = linear_learner_job(tmp_path / "plain", variant, None)
    assert run_training(plain.paths, "linear-learner") == 0
    checkpoints = tmp_path / "checkpoints"
    job = linear_learner_job(tmp_path / "job", variant, checkpoints)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert run_training(job.paths, "linear-learner") == 143
    assert f"The training state is checkpointed in {checkpoints / 'smalgo-state.1'}" in job.failure()
    assert job.model_files() == [] and not job.succeeded()
    assert run_training(job.paths, "linear-learner") == 0
    assert model_bytes(job) == model_bytes(plain)


def test_a_truncated_linear_learner_checkpoint_resumes_from_the_older_one(tmp_path, monkeypatch, caplog):
    variant = "regressor, sparse, no validation"
    plain = linear_learner_job(tmp_path / "plain", variant, None)
    assert run_training(plain.paths, "linear-learner") == 0
    checkpoints = tmp_path / "checkpoints"
    job = linear_learner_job(tmp_path / "job", variant, checkpoints)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)
        assert run_training(job.paths, "linear-learner") == 1
    damaged = checkpoints / "smalgo-state.3" / "sample_data.npy"
    damaged.write_bytes(damaged.read_bytes()[:-7])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_training(job.paths, "linear-learner") == 0, job.failure()
    assert (
        f"Not resuming from the checkpoint {checkpoints / 'smalgo-state.3'}: {damaged}: it is truncated" in caplog.text
    )
    assert f"Resuming from the checkpoint {checkpoints / 'smalgo-state.2'}" in caplog.text
    assert model_bytes(job) == model_bytes(plain)


def test_a_linear_learner_checkpoint_of_other_models_is_refused_before_anything_is_restored(tmp_path):
    from smalgo.algorithms.batch import Batch
    from smalgo.algorithms.checkpoints import CheckpointMismatch
    from smalgo.algorithms.registry import get_algorithm

    algorithm = get_algorithm("linear-learner")
    hp = algorithm.hyperparameters.parse(
        {"feature_dim": "5", "predictor_type": "regressor", "mini_batch_size": "50", "num_models": "4"}
    )
    state = algorithm.start(hp)
    X = clustered_rows(n_rows=100)
    state.update(Batch(X, X[:, 0].copy()))
    state.end_epoch()
    arrays, metadata = state.checkpoint_arrays()  # type: ignore[attr-defined]
    for name, wrong in [
        ("weights", np.zeros((5, 3), np.float32)),
        ("second_moment", np.zeros((4, 4), np.float32)),
        ("sample_X", np.zeros((7, 5), np.float32)),
        ("positive_weights", np.ones(2)),
    ]:
        fresh = algorithm.start(hp)
        with pytest.raises(CheckpointMismatch, match=name):
            fresh.restore_checkpoint({**arrays, name: wrong}, metadata)  # type: ignore[attr-defined]
        assert fresh.scaler is None and fresh.weights.size == 0  # type: ignore[attr-defined]
    fresh = algorithm.start(hp)
    with pytest.raises(CheckpointMismatch, match="epoch"):
        fresh.restore_checkpoint(arrays, {**metadata, "epoch": 0})  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- several hosts


def run_hosts(jobs: list[Path], algorithm: str) -> list[str]:
    """Every host's `smalgo train` as a process on its loopback address; their logs."""
    port = free_port()
    processes = [start_host(job, port, len(jobs), algorithm) for job in jobs]
    for process in processes:
        process.wait(timeout=300)
    logs = [(job / "log").read_text() for job in jobs]
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log[-3000:]
    return logs


def hosts_job(directory: Path, algorithm: str, data: Path, *, epochs: int, checkpoints: bool) -> list[Path]:
    """A 2-host job of `algorithm` on `data` (ShardedByS3Key); with `checkpoints`, each host has
    its own checkpoint directory, host/checkpoints."""
    hp = {k: str(v) for k, v in {**HYPERPARAMETERS[algorithm], "epochs": epochs}.items()}
    content_type = {"factorization-machines": "application/x-recordio-protobuf", "linear-learner": "text/csv"}.get(
        algorithm, CSV_NO_LABEL
    )
    paths = lay_out_hosts_job(
        directory,
        hosts=2,
        hyperparameters=hp,
        channels={"train": data},
        content_type=content_type,
        distributions={"train": "ShardedByS3Key"},
    )
    if checkpoints:
        for host in paths:
            (host.checkpointconfig_file).write_text(json.dumps({"LocalPath": str(host.base / "checkpoints")}))
    return [host.base for host in paths]


@pytest.mark.parametrize("algorithm", ["factorization-machines", "linear-learner"])
def test_averaging_algorithms_on_two_hosts_resume_to_the_model_of_an_uninterrupted_job(tmp_path, algorithm):
    """The first host alone writes the state (every host holds the same after the pass's
    combine: the averaged models, and linear learner's gathered train sample and selection);
    every host resumes from it (SageMaker gives each the job's checkpoints) and the job ends with
    the model of an uninterrupted job, bit for bit."""
    data = tmp_path / "data"
    data.mkdir()
    for part in range(2):
        X = clustered_rows(n_rows=300, seed=part)
        if algorithm == "factorization-machines":
            (data / f"part{part}.pbr").write_bytes(recordio(X, X[:, 0]))
        else:
            (data / f"part{part}.csv").write_text(csv_text(X[:, 1:], (X[:, 0] > X[:, 1]).astype(np.float32)))
    first = hosts_job(tmp_path / "first", algorithm, data, epochs=2, checkpoints=True)
    run_hosts(first, algorithm)
    assert saved_states(first[0] / "checkpoints") == ["smalgo-state.1", "smalgo-state.2"]
    assert not (first[1] / "checkpoints").exists()
    shutil.copytree(first[0] / "checkpoints", first[1] / "checkpoints")  # what SageMaker's sync gives each host
    for host in first:
        config = host / "input" / "config" / "hyperparameters.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": "4"}))
    logs = run_hosts(first, algorithm)
    for log in logs:
        assert "training continues at epoch 2 of 4" in log
    plain = hosts_job(tmp_path / "plain", algorithm, data, epochs=4, checkpoints=False)
    run_hosts(plain, algorithm)
    resumed = {p.name: p.read_bytes() for p in sorted((first[0] / "model").iterdir())}
    assert resumed == {p.name: p.read_bytes() for p in sorted((plain[0] / "model").iterdir())}


class OneOfTwoHosts(SingleHost):
    """A collective that says there are two hosts, and exchanges nothing (the driver's checks)."""

    hosts = 2


def test_an_algorithm_whose_hosts_differ_is_not_checkpointed_on_several_hosts_and_says_so(
    tmp_path, caplog, monkeypatch
):
    # Every algorithm today checkpoints on several hosts: one that says it cannot stands for the next.
    from smalgo.algorithms.data import InMemoryData
    from smalgo.algorithms.registry import get_algorithm

    algorithm = get_algorithm("pca")
    monkeypatch.setattr(type(algorithm), "state_checkpoints_on_several_hosts", False)
    hp = algorithm.hyperparameters.parse({k: str(v) for k, v in HYPERPARAMETERS["pca"].items()})
    data = InMemoryData({"train": (clustered_rows(n_rows=200), None)})
    with caplog.at_level(logging.WARNING):
        algorithm.train(hp, data, collective=OneOfTwoHosts(), checkpoint_dir=tmp_path / "checkpoints")  # type: ignore[call-arg]
    assert "PCA's hosts do not hold the same state after a pass, so it is not checkpointed" in caplog.text
    assert not (tmp_path / "checkpoints").exists()


def test_kmeans_on_two_hosts_resume_every_host_s_own_centers_to_the_model_of_an_uninterrupted_job(tmp_path):
    """Each host streams its own centers: the first host's checkpoint holds every host's, by
    rank, and each host resumes its own part; the job ends with the model of an uninterrupted
    job, bit for bit."""
    data = tmp_path / "data"
    data.mkdir()
    X = clustered_rows(n_rows=400)
    for part in range(2):
        (data / f"part{part}.csv").write_text(csv_text(X[part * 200 : (part + 1) * 200]))
    first = hosts_job(tmp_path / "first", "kmeans", data, epochs=2, checkpoints=True)
    run_hosts(first, "kmeans")
    checkpoints = first[0] / "checkpoints"
    assert saved_states(checkpoints) == ["smalgo-state.1", "smalgo-state.2"]
    assert not (first[1] / "checkpoints").exists()
    newest = checkpoints / "smalgo-state.2"
    metadata = json.loads((newest / STATE_FILE).read_text())["metadata"]
    assert metadata["hosts"] == 2 and metadata["rows_seen"] == [400, 400] and len(metadata["rng"]) == 2
    assert not np.array_equal(np.load(newest / "centers_0.npy"), np.load(newest / "centers_1.npy"))
    shutil.copytree(checkpoints, first[1] / "checkpoints")  # what SageMaker's sync gives each host
    for host in first:
        config = host / "input" / "config" / "hyperparameters.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": "4"}))
    logs = run_hosts(first, "kmeans")
    for log in logs:
        assert "training continues at epoch 2 of 4" in log
    plain = hosts_job(tmp_path / "plain", "kmeans", data, epochs=4, checkpoints=False)
    run_hosts(plain, "kmeans")
    resumed = {p.name: p.read_bytes() for p in sorted((first[0] / "model").iterdir())}
    assert resumed == {p.name: p.read_bytes() for p in sorted((plain[0] / "model").iterdir())}


class MirroredHosts(SingleHost):
    """`hosts` hosts, this one of rank `rank`, that all stream what this one streams (every
    exchange gives back its own values as every host's): a job of several hosts in one process."""

    def __init__(self, hosts: int, rank: int = 0) -> None:
        self.hosts, self.rank, self.is_first = hosts, rank, rank == 0

    def all_reduce_sum(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array) * self.hosts

    def all_gather(self, rows: np.ndarray) -> list[np.ndarray]:
        return [np.array(rows, copy=True) for _ in range(self.hosts)]


def test_a_kmeans_checkpoint_of_two_hosts_is_resumed_by_a_job_of_two_hosts_only(tmp_path):
    from smalgo.algorithms.checkpoints import CheckpointMismatch
    from smalgo.algorithms.data import InMemoryData
    from smalgo.algorithms.registry import get_algorithm

    algorithm = get_algorithm("kmeans")
    hp = algorithm.hyperparameters.parse({k: str(v) for k, v in {**HYPERPARAMETERS["kmeans"], "epochs": 2}.items()})
    data = InMemoryData({"train": (clustered_rows(n_rows=200), None)})
    checkpoints = tmp_path / "checkpoints"
    train = algorithm.train
    model = train(hp, data, collective=MirroredHosts(2), checkpoint_dir=checkpoints)  # type: ignore[call-arg]
    assert saved_states(checkpoints) == ["smalgo-state.1", "smalgo-state.2"]
    # A job of two hosts whose passes are all done: the model of every host's centers, at once.
    again = train(hp, data, collective=MirroredHosts(2), checkpoint_dir=checkpoints)  # type: ignore[call-arg]
    assert np.array_equal(again.centers, model.centers)  # type: ignore[attr-defined]
    state_file = checkpoints / "smalgo-state.2" / STATE_FILE
    for collective, hosts in ((MirroredHosts(3), "3 hosts"), (SingleHost(), "1 host")):
        with pytest.raises(UserError) as refused:
            train(hp, data, collective=collective, checkpoint_dir=checkpoints)  # type: ignore[call-arg]
        assert str(refused.value).startswith(
            f"Cannot resume from the checkpoint {state_file}: it was written by a job of 2 hosts, and this job "
            f"has {hosts}: each host streams its own centers"
        ), refused.value

    checkpoint = StateCheckpoints(checkpoints, "kmeans", hp).latest()
    assert checkpoint is not None
    arrays = {**checkpoint.arrays, "centers_1": checkpoint.arrays["centers_1"] + 1.0}
    for rank in (0, 1):  # each host takes its own part
        state = algorithm.start(hp)
        state.join(MirroredHosts(2, rank=rank))  # type: ignore[attr-defined]
        state.restore_checkpoint(arrays, checkpoint.metadata)  # type: ignore[attr-defined]
        assert np.array_equal(state.stream.centers, arrays[f"centers_{rank}"])  # type: ignore[attr-defined]
        assert state.rows_seen == checkpoint.metadata["rows_seen"][rank] == 400  # type: ignore[attr-defined]

    # Every host's part is checked before anything is restored; a one-host checkpoint is refused too.
    one_host = algorithm.start(hp).checkpoint_arrays()  # type: ignore[attr-defined]
    wrong = [
        ({**checkpoint.arrays, "counts_1": np.zeros(7)}, checkpoint.metadata, "'counts_1' is float64\\[7\\]"),
        (checkpoint.arrays, {**checkpoint.metadata, "rows_seen": [200]}, "one value per host \\(2\\)"),
        (*one_host, "written by a job of 1 host, and this job has 2 hosts"),
    ]
    for wrong_arrays, wrong_metadata, message in wrong:
        state = algorithm.start(hp)
        state.join(MirroredHosts(2))  # type: ignore[attr-defined]
        with pytest.raises(CheckpointMismatch, match=message):
            state.restore_checkpoint(wrong_arrays, wrong_metadata)  # type: ignore[attr-defined]
        assert state.rows_seen == 0 and state.stream.shift is None  # type: ignore[attr-defined]
        assert not state.stream.counts.any() and not state.stream.seeded.any()  # type: ignore[attr-defined]


def test_a_checkpoint_directory_that_cannot_be_written_fails_the_job_naming_it(tmp_path):
    checkpoints = tmp_path / "not-a-directory"
    checkpoints.write_text("a file")
    job = make_job(tmp_path / "job", "kmeans", checkpoints)
    assert run_training(job.paths, "kmeans") == 1
    failure = job.failure()
    assert failure.startswith(f"Cannot write the checkpoint of the training state in {checkpoints}: "), failure
    assert job.model_files() == [] and "Traceback" not in failure


# Runs with NUMBA_ENABLE_CUDASIM=1 (argv[1]: a directory for out.npz and facts.json): factorization
# machines training on the (simulated) GPU, checkpointed after pass 1 and resumed by a new state.
_GPU_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import scipy.sparse as sp

    out = sys.argv[1]
    from smalgo.algorithms.batch import Batch
    from smalgo.algorithms.factorization_machines import ALGORITHM as fm
    from smalgo.algorithms.factorization_machines import _cuda, _fm

    _fm.MIN_GPU_WORK = 1  # the simulator is far too slow for jobs the real threshold sends
    _cuda._THREADS_PER_BLOCK = 8
    _cuda._MAX_BLOCKS = 3
    os.environ["SMALGO_DEVICE"] = "gpu"
    rng = np.random.default_rng(5)
    n, d = 160, 20
    X = sp.random(n, d, density=0.2, format="csr", dtype=np.float32, random_state=5)
    y = (X @ rng.normal(size=d)).astype(np.float32)
    hp = fm.hyperparameters.parse({"feature_dim": str(d), "mini_batch_size": "80", "num_factors": "2",
                                   "predictor_type": "regressor", "factors_lr": "0.05"})

    def one_pass(state):
        for start in range(0, n, 80):
            state.update(Batch(X[start:start + 80], y[start:start + 80], None))
        state.end_epoch()

    first = fm.start(hp)
    one_pass(first)
    arrays, metadata = first.checkpoint_arrays()
    saved = {name: np.array(a, copy=True) for name, a in arrays.items()}
    one_pass(first)
    second = fm.start(hp)
    second.restore_checkpoint(saved, metadata)
    one_pass(second)
    a, b = first.current_model(), second.current_model()
    facts = {"on_gpu": [first._gpu is not None, second._gpu is not None],
             "accumulated": float(np.abs(saved["hV"]).max())}
    np.savez(os.path.join(out, "out.npz"), a_w=a.w, a_V=a.V, a_w0=a.w0, b_w=b.w, b_V=b.V, b_w0=b.w0)
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(facts, f)
""")


def test_factorization_machines_on_a_simulated_gpu_checkpoint_what_the_gpu_holds(tmp_path):
    """checkpoint_arrays takes the weights and accumulators from the GPU, and a state restored from
    them trains on to the same weights (to float32 rounding: the simulator's threads add in any
    order)."""
    run_in_cuda_simulator(_GPU_SCRIPT, tmp_path)
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["on_gpu"] == [True, True]
    assert facts["accumulated"] > 0  # the AdaGrad accumulators came from the GPU, not the zeros on the host
    r = np.load(tmp_path / "out.npz")
    for name in ("w0", "w", "V"):
        np.testing.assert_allclose(r[f"b_{name}"], r[f"a_{name}"], rtol=1e-5, atol=1e-7, err_msg=name)


# --------------------------------------------------------------------------- XGBoost's checkpoints
# (xgboost-checkpoint.<i>, algorithms/xgboost/_train.py; written and resumed: tests/test_xgboost.py;
# on two hosts as processes: tests/test_several_hosts.py)


def xgboost_rounds(checkpoints: Path | None, num_round: int):
    """train_booster on a small regression, one host; the booster."""
    import xgboost as xgb

    from smalgo.algorithms.metrics import MetricWriter
    from smalgo.algorithms.xgboost._train import train_booster

    X = clustered_rows(n_rows=200)
    return train_booster(
        {"max_depth": 3, "nthread": 1},
        xgb.DMatrix(X[:, 1:], label=X[:, 0]),
        num_round=num_round,
        evals=[],
        writer=MetricWriter(),
        early_stopping=None,
        checkpoint_dir=checkpoints,
        save_on_termination=False,
    )


def test_a_damaged_xgboost_checkpoint_is_passed_over_for_the_older_one(tmp_path, caplog):
    """Cut at any offset (an empty file and some cuts crash XGBoost 3.2's own reader: the file is
    checked whole first), or holding other rounds than its name: passed over with a warning
    naming it; with no older one, training starts from the first round."""
    from smalgo.algorithms.xgboost._model import read_booster
    from smalgo.algorithms.xgboost._train import latest_checkpoint

    checkpoints = tmp_path / "checkpoints"
    xgboost_rounds(checkpoints, 3)
    newest, older = checkpoints / "xgboost-checkpoint.2", checkpoints / "xgboost-checkpoint.1"
    whole = newest.read_bytes()
    rng = np.random.default_rng(0)
    for offset in sorted({0, 1, 2, 12, 62, len(whole) // 2, len(whole) - 1, *rng.integers(0, len(whole), 8).tolist()}):
        newest.write_bytes(whole[:offset])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            found = latest_checkpoint(checkpoints)
        assert found is not None and found.path == older and found.rounds == 2, offset
        assert f"Not resuming from the checkpoint {newest}: it is " in caplog.text, offset
        assert "trying the next older one" in caplog.text
    with pytest.raises(UserError, match=rf"^{newest} is not an XGBoost model .*: it is truncated"):
        read_booster(newest)  # a model file too (serving)
    newest.write_bytes(older.read_bytes())  # 2 rounds where 3 are due
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(checkpoints).path == older  # type: ignore[union-attr]
    assert "it holds 2 rounds, not the 3 of its name" in caplog.text
    for number in range(3):
        (checkpoints / f"xgboost-checkpoint.{number}").write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(checkpoints) is None
    assert f"{checkpoints / 'xgboost-checkpoint.0'}: it is empty; no older one: training starts from round 0" in (
        caplog.text
    )


def test_xgboost_resumes_past_damaged_checkpoints_to_the_uninterrupted_model_and_replaces_them(tmp_path):
    """The damaged ones of later rounds go once this job writes its own (kept, the newest numbers
    would outlive the new checkpoints)."""
    checkpoints = tmp_path / "checkpoints"
    xgboost_rounds(checkpoints, 3)
    (checkpoints / "xgboost-checkpoint.3").write_bytes(b"{L")
    (checkpoints / "xgboost-checkpoint.9").write_bytes(b"")
    resumed = xgboost_rounds(checkpoints, 6)
    assert resumed.get_dump() == xgboost_rounds(None, 6).get_dump()
    assert saved_states(checkpoints) == [f"xgboost-checkpoint.{i}" for i in range(1, 6)]


class TwoXGBoostHosts(SingleHost):
    """Two hosts, algo-1 this one; algo-2's all_gather rows made from this host's by `other`."""

    hosts = 2
    names = ("algo-1", "algo-2")

    def __init__(self, other) -> None:
        self.other = other

    def all_gather(self, rows: np.ndarray) -> list[np.ndarray]:
        return [rows.copy(), self.other(rows.copy())]


def test_xgboost_hosts_resume_only_from_the_same_checkpoint(tmp_path):
    from smalgo.algorithms.xgboost._train import latest_checkpoint, same_checkpoint_on_every_host

    checkpoints = tmp_path / "checkpoints"
    xgboost_rounds(checkpoints, 3)
    found = latest_checkpoint(checkpoints)
    same_checkpoint_on_every_host(TwoXGBoostHosts(lambda rows: rows), checkpoints, found)  # the same: no error
    same_checkpoint_on_every_host(TwoXGBoostHosts(lambda rows: rows), None, None)  # neither has any

    def none_found(rows):
        rows[0, 0], rows[0, 2:] = 0, 0
        return rows

    def no_directory(rows):
        return np.zeros_like(rows)

    def other_bytes(rows):
        rows[0, 2] += 1
        return rows

    start = f"The hosts found different XGBoost checkpoints in their checkpoint directories ({checkpoints} here): "
    for other, message in (
        (
            none_found,
            start + "algo-1: xgboost-checkpoint.2 (3 rounds); algo-2: none, so it would train from the start.",
        ),
        (no_directory, start + "algo-1: xgboost-checkpoint.2 (3 rounds); algo-2: no checkpoint directory."),
        (
            other_bytes,
            f"The hosts found xgboost-checkpoint.2 in their checkpoint directories ({checkpoints} here), but its "
            "contents differ between hosts",
        ),
    ):
        with pytest.raises(UserError) as refused:
            same_checkpoint_on_every_host(TwoXGBoostHosts(other), checkpoints, found)
        assert str(refused.value).startswith(message), refused.value


def test_xgboost_stopped_by_sigterm_names_its_newest_checkpoint_and_saves_the_rounds_when_asked(tmp_path, monkeypatch):
    from smalgo.algorithms.xgboost import _train

    job = SageMakerJob(tmp_path / "job")
    job.hyperparameters(num_round=50, max_depth=3, nthread=1, save_model_on_termination="true")
    job.channel("train", "text/csv", files={"train.csv": csv_text(clustered_rows(n_rows=200))})
    checkpoints = tmp_path / "checkpoints"
    job.write_config("checkpointconfig.json", {"LocalPath": str(checkpoints)})
    write = _train._Checkpoints.after_iteration

    def write_then_stop(self, model, epoch, evals_log):
        write(self, model, epoch, evals_log)
        if epoch == 2:
            raise job_module.TrainingStopped()  # what the SIGTERM handler raises
        return False

    monkeypatch.setattr(_train._Checkpoints, "after_iteration", write_then_stop)
    assert run_training(job.paths, "xgboost") == job_module.EXIT_STOPPED
    failure = job.failure()
    assert "the model trained so far was saved (xgboost-model)" in failure, failure
    assert f"The training state is checkpointed in {checkpoints / 'xgboost-checkpoint.2'}" in failure
    assert saved_states(checkpoints) == [f"xgboost-checkpoint.{i}" for i in range(3)]
    from smalgo.algorithms.registry import get_algorithm

    assert get_algorithm("xgboost").load(job.paths.model_dir).boosters[0].num_boosted_rounds() == 3
