"""The training job in its environment: reruns in the same /opt/ml, faults of the machine (a
read-only or full model directory, a pipe that is a folder), settings from environment
variables, and channel folders with symbolic links."""

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TwoFileModel, clustered_rows, csv_text, stop_on_the_second_move

from smalgo.algorithms import kmeans, pca
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.csv import csv_threads_setting
from smalgo.algorithms.hyperparameters import Hyperparameter
from smalgo.algorithms.kmeans._kmeans import KMeansModel
from smalgo.containers import cli
from smalgo.containers import job as job_module
from smalgo.containers.channels import list_data_files, pipe_wait_setting
from smalgo.containers.job import commit_model, run_training
from smalgo.containers.paths import JobPaths
from smalgo.containers.pipe_feeder import PipeFeeder
from smalgo.serve.settings import ServerSettings, SettingsError

KMEANS_HP = {"k": 3, "feature_dim": 5, "mini_batch_size": 100}
PCA_HP = {"num_components": 2, "feature_dim": 5, "mini_batch_size": 100}


def assert_plain_failure(job, exit_code: int, expected: str) -> str:
    """Exit 1, output/failure starting with `expected` (a user's or the environment's fault, not
    an internal error, no traceback), no model, no success file."""
    assert exit_code == 1
    failure = job.failure()
    assert failure.startswith(expected), failure
    assert "Internal error" not in failure and "Traceback" not in failure
    assert job.model_files() == []
    assert not job.succeeded()
    return failure


# --------------------------------------------------------------------------- 6. reruns start clean


def test_a_failing_rerun_leaves_neither_the_old_model_nor_the_old_success(job):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": csv_text(clustered_rows())})
    assert run_training(job.paths, "kmeans") == 0
    assert job.succeeded() and job.model_files() == ["centers.npy", "model.json"]
    job.hyperparameters(k=0, feature_dim=5)
    assert_plain_failure(job, run_training(job.paths, "kmeans"), "Hyperparameter k: invalid value '0'")
    assert sorted(p.name for p in job.paths.output_dir.iterdir()) == ["failure"]


def test_a_successful_rerun_leaves_no_old_failure(job):
    job.hyperparameters(k=0, feature_dim=5).channel("train", files={"train.csv": csv_text(clustered_rows())})
    assert run_training(job.paths, "kmeans") == 1
    assert job.paths.failure_file.exists()
    job.hyperparameters(**KMEANS_HP)
    assert run_training(job.paths, "kmeans") == 0
    assert sorted(p.name for p in job.paths.output_dir.iterdir()) == ["success"]


def test_a_kmeans_model_does_not_survive_into_a_pca_run(job, caplog):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": csv_text(clustered_rows())})
    assert run_training(job.paths, "kmeans") == 0
    job.hyperparameters(**PCA_HP)
    with caplog.at_level(logging.INFO, logger="smalgo"):
        assert run_training(job.paths, "pca") == 0
    assert job.model_files() == sorted(pca.ALGORITHM.model_files)
    assert f"Removed an earlier run's model from {job.paths.model_dir}: centers.npy, model.json" in caplog.text
    assert pca.ALGORITHM.load(job.paths.model_dir).components.shape == (5, 2)


def _old_model(model_dir: Path) -> None:
    model_dir.mkdir()
    (model_dir / "a.npy").write_bytes(b"old a")
    (model_dir / "centers.npy").write_bytes(b"old centers")
    (model_dir / "extra").mkdir()
    (model_dir / "extra" / "x.npy").write_bytes(b"old x")


def _tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_commit_model_replaces_the_whole_contents(tmp_path):
    model_dir = tmp_path / "model"
    _old_model(model_dir)
    inode = model_dir.stat().st_ino
    assert commit_model(TwoFileModel(), model_dir) == ["a.npy", "b.npy"]
    # Stale entries the new model does not have are gone; no trash or staging folder is left.
    assert sorted(p.name for p in model_dir.iterdir()) == ["a.npy", "b.npy"]
    assert _tree(model_dir) == {"a.npy": b"a", "b.npy": b"b"}
    assert model_dir.stat().st_ino == inode  # the folder itself (a mount point) stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_commit_puts_the_old_model_back(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    _old_model(model_dir)
    before = _tree(model_dir)
    stop_on_the_second_move(monkeypatch)
    with pytest.raises(job_module.TrainingStopped):
        commit_model(TwoFileModel(), model_dir)
    assert _tree(model_dir) == before
    assert sorted(p.name for p in model_dir.iterdir()) == ["a.npy", "centers.npy", "extra"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --------------------------------------------------------------------------- 7. faults of the environment


def _failing_move(error_number: int):
    def move(source, target):
        raise OSError(error_number, os.strerror(error_number), target)

    return move


def test_a_read_only_model_directory_is_named(job, monkeypatch):
    monkeypatch.setattr(job_module.shutil, "move", _failing_move(errno.EROFS))
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": csv_text(clustered_rows())})
    model_dir = job.paths.model_dir
    assert_plain_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"The model directory {model_dir} is read-only; cannot save the model in it: "
        f"[Errno 30] Read-only file system ({model_dir / 'centers.npy'}).",
    )


def test_a_read_only_model_directory_holding_an_old_model(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    _old_model(model_dir)
    before = _tree(model_dir)

    def read_only_rename(source, target):
        raise OSError(errno.EROFS, "Read-only file system", os.fspath(source))

    monkeypatch.setattr(job_module.os, "rename", read_only_rename)
    with pytest.raises(UserError) as raised:
        commit_model(TwoFileModel(), model_dir)
    assert str(raised.value) == (
        f"The model directory {model_dir} is read-only; cannot save the model in it: "
        f"[Errno 30] Read-only file system ({model_dir / 'a.npy'})."
    )
    assert _tree(model_dir) == before


def test_a_full_disk_is_named(job, monkeypatch):
    def save_on_a_full_disk(self, directory):
        raise OSError(errno.ENOSPC, "No space left on device", os.fspath(Path(directory) / "centers.npy"))

    monkeypatch.setattr(KMeansModel, "save", save_on_a_full_disk)
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": csv_text(clustered_rows())})
    failure = assert_plain_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"No space left on the disk to save the model in the model directory {job.paths.model_dir}: "
        f"[Errno 28] No space left on device (",
    )
    assert "centers.npy)." in failure


def test_a_pipe_mode_train_0_that_is_a_directory(job):
    job.hyperparameters(**KMEANS_HP).channel("train", mode="Pipe")
    (job.paths.data_dir / "train_0").mkdir()
    assert_plain_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"Channel train is in Pipe mode, but its pipe {job.paths.data_dir / 'train_0'} for pass 1 cannot be "
        f"opened: [Errno 21] Is a directory.",
    )


def test_a_channel_file_that_cannot_be_read(job, monkeypatch):
    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "x")
        yield  # a generator, like the real decoder

    monkeypatch.setattr("smalgo.containers.channels.iter_csv_blocks", unreadable)
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": csv_text(clustered_rows())})
    assert_plain_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"Channel train: cannot read {job.paths.channel_dir('train') / 'train.csv'}: [Errno 13] Permission denied.",
    )


# --------------------------------------------------------------------------- 8. settings


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf", "1_0", "-inf"])
def test_a_bad_pipe_wait_is_refused_before_reading_data(job, monkeypatch, value):
    monkeypatch.setenv("SMALGO_PIPE_WAIT_SECONDS", value)
    job.hyperparameters(**KMEANS_HP).channel("train", mode="Pipe")
    assert_plain_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"SMALGO_PIPE_WAIT_SECONDS={value!r} is not a waiting time; valid values: a finite number of "
        f"seconds >= 0 (unset means 600).",
    )


def test_pipe_wait_values():
    assert pipe_wait_setting({}) == 600.0
    assert pipe_wait_setting({"SMALGO_PIPE_WAIT_SECONDS": ""}) == 600.0
    assert pipe_wait_setting({"SMALGO_PIPE_WAIT_SECONDS": " 2.5 "}) == 2.5
    assert pipe_wait_setting({"SMALGO_PIPE_WAIT_SECONDS": "0"}) == 0.0


@pytest.mark.parametrize("value", ["0", "-2", "abc", "1.5", "٣"])
def test_a_bad_csv_thread_count_is_refused_before_reading_data(job, monkeypatch, value):
    monkeypatch.setenv("SMALGO_CSV_THREADS", value)
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": "garbage"})
    assert_plain_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"SMALGO_CSV_THREADS={value!r} is not a thread count; valid values: an integer >= 1 "
        f"(unset means the CPUs this process may use).",
    )


def test_csv_thread_count_values(tmp_path):
    assert csv_threads_setting({}) is None
    assert csv_threads_setting({"SMALGO_CSV_THREADS": " 4 "}) == 4
    with pytest.raises(UserError, match=r"^SMALGO_CSV_THREADS='x' is not a thread count"):
        csv_threads_setting({"SMALGO_CSV_THREADS": "x"})
    # The server refuses it at startup, not as a 400 on each CSV request.
    with pytest.raises(SettingsError, match=r"^SMALGO_CSV_THREADS='0' is not a thread count"):
        ServerSettings.from_environment(tmp_path, environ={"SMALGO_CSV_THREADS": "0"})


def test_a_bad_numba_cpu_target_is_refused(job, monkeypatch):
    monkeypatch.setenv("SMALGO_NUMBA_CPU", "fastest")
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": "garbage"})
    assert_plain_failure(
        job,
        run_training(job.paths, "kmeans"),
        "SMALGO_NUMBA_CPU='fastest' is not a numba CPU target; valid values: portable",
    )


def test_a_bad_device_is_refused_before_the_configuration_is_read(job, monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "tpu")
    # No configuration files at all: the setting is checked first.
    assert_plain_failure(job, run_training(job.paths, "kmeans"), "SMALGO_DEVICE='tpu' is not a device; valid values:")


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_bad_base_dir_is_refused_naming_the_variable(tmp_path, monkeypatch, capsys, kind):
    base = tmp_path / "opt_ml"
    if kind == "file":
        base.write_text("")
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    assert cli.main(["train", "--algorithm", "kmeans"]) == 1
    why = "does not exist" if kind == "missing" else "is not a directory"
    assert capsys.readouterr().err == (
        f"smalgo train: SAGEMAKER_BASE_DIR={str(base)!r} {why}; it must name the directory that holds the "
        f"job's input/, model/ and output/ (unset means /opt/ml).\n"
    )
    assert JobPaths.from_environment({"SAGEMAKER_BASE_DIR": str(tmp_path)}).base == tmp_path
    assert JobPaths.from_environment({}).base == Path("/opt/ml")


def test_hyperparameter_numbers_with_underscores_are_refused(job):
    job.hyperparameters(k="1_0", feature_dim=5).channel("train", files={"train.csv": csv_text(clustered_rows())})
    assert_plain_failure(
        job, run_training(job.paths, "kmeans"), "Hyperparameter k: invalid value '1_0'; expected an integer >= 1."
    )
    rate = Hyperparameter("rate", "float", minimum=0)
    with pytest.raises(UserError, match=r"^Hyperparameter rate: invalid value '0_5'; expected a number >= 0\.$"):
        rate.parse("0_5")
    sizes = Hyperparameter("sizes", "list", item_kind="int")
    with pytest.raises(UserError, match=r"^Hyperparameter sizes: invalid value '\[1, 2_0\]'"):
        sizes.parse("[1, 2_0]")  # JSON refuses 2_0; the bare-list reading keeps it as "2_0"
    assert Hyperparameter("k", "int").parse("10") == 10
    assert rate.parse("1e-3") == 0.001


# --------------------------------------------------------------------------- 9. nothing skipped silently


def test_a_symlinked_folder_of_a_channel_is_followed(job, tmp_path, caplog):
    X = clustered_rows(n_rows=90)
    outside = tmp_path / "elsewhere"
    (outside / "deeper").mkdir(parents=True)
    (outside / "deeper" / "part-2.csv").write_text(csv_text(X[60:]))
    job.hyperparameters(k=3, feature_dim=5, mini_batch_size=40)
    job.channel("train", files={"a.csv": csv_text(X[:30]), "b/part-1.csv": csv_text(X[30:60])})
    channel_dir = job.paths.channel_dir("train")
    (channel_dir / "linked").symlink_to(outside, target_is_directory=True)
    (channel_dir / "b" / "loop").symlink_to(channel_dir, target_is_directory=True)  # a cycle
    with caplog.at_level(logging.INFO, logger="smalgo"):
        files = list_data_files(channel_dir)
    assert [p.relative_to(channel_dir).as_posix() for p in files] == [
        "a.csv",
        "b/part-1.csv",
        "linked/deeper/part-2.csv",
    ]
    assert f"Skipped {channel_dir / 'b' / 'loop'}: a symbolic link to {channel_dir}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="smalgo"):
        assert run_training(job.paths, "kmeans") == 0, job.failure()
    assert "Channel train, pass 1: 3 file(s), 90 records" in caplog.text


def test_a_dangling_link_in_a_channel_is_an_error(job, tmp_path):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"a.csv": csv_text(clustered_rows())})
    link = job.paths.channel_dir("train") / "gone.csv"
    link.symlink_to(tmp_path / "nowhere.csv")
    assert_plain_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"{link} is a symbolic link to {tmp_path / 'nowhere.csv'}, which does not exist; "
        f"restore its target or remove the link.",
    )


def test_the_log_counts_files_and_records_per_channel_and_pass(job, caplog):
    X = clustered_rows(n_rows=600)
    job.hyperparameters(**KMEANS_HP, epochs=2)
    job.channel("train", files={"a.csv": csv_text(X[:200]), "b.csv": csv_text(X[200:])})
    job.channel("test", files={"t.csv": csv_text(X[:50])})
    with caplog.at_level(logging.INFO, logger="smalgo"):
        assert run_training(job.paths, "kmeans") == 0, job.failure()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Channel ")]
    assert "Channel train, pass 1: 2 file(s), 600 records" in lines
    assert "Channel train, pass 2: 2 file(s), 600 records" in lines
    assert "Channel test, pass 1: 1 file(s), 50 records" in lines


def test_the_log_counts_records_of_a_pipe(job, caplog):
    X = clustered_rows(n_rows=500)
    job.hyperparameters(**KMEANS_HP).channel("train", "text/csv;label_size=0", mode="Pipe")
    with caplog.at_level(logging.INFO, logger="smalgo"), PipeFeeder(job.paths.data_dir, "train", csv_text(X).encode()):
        assert run_training(job.paths, "kmeans") == 0, job.failure()
    assert "Channel train, pass 1: pipe train_0, 500 records" in caplog.text
    np.testing.assert_equal(kmeans.ALGORITHM.load(job.paths.model_dir).centers.shape, (3, 5))
