"""The `smalgo` command: the real entry points in subprocesses, argument handling in-process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import clustered_rows, csv_text

from smalgo.containers import cli

SMALGO = Path(sys.executable).with_name("smalgo")


def run_module(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "smalgo.containers", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def data_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(csv_text(clustered_rows()))
    return path


def local_kmeans_args(data_csv, out, *, k: str) -> list[str]:
    """`smalgo train` arguments for k-means on a local CSV file (no label column), feature_dim=5."""
    return [
        "train",
        "--algorithm",
        "kmeans",
        "--train",
        str(data_csv),
        "--content-type",
        "text/csv;label_size=0",
        "--hyperparameters",
        f"k={k}",
        "feature_dim=5",
        "--output",
        str(out),
    ]


def test_local_training_lays_out_a_sagemaker_job(tmp_path, data_csv):
    out = tmp_path / "job"
    result = run_module(*local_kmeans_args(data_csv, out, k="3"))
    assert result.returncode == 0, result.stderr
    assert f"Model written to {out / 'model'}: centers.npy, model.json" in result.stdout
    config = out / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {"k": "3", "feature_dim": "5"}
    assert json.loads((config / "inputdataconfig.json").read_text())["train"] == {
        "ContentType": "text/csv;label_size=0",
        "TrainingInputMode": "File",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
    }
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-1"
    assert (out / "input" / "data" / "train" / "data.csv").resolve() == data_csv.resolve()
    assert (out / "output" / "success").exists()
    assert "#quality_metric: host=algo-1, epoch=0, train msd <loss>=" in result.stderr


def test_console_script_inside_an_image(tmp_path, data_csv):
    """What `docker run IMAGE train` does: the job under $SAGEMAKER_BASE_DIR, the algorithm from
    $SMALGO_ALGORITHM."""
    base = tmp_path / "opt_ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data" / "train").mkdir(parents=True)
    (base / "input" / "data" / "train" / "part-0.csv").write_text(data_csv.read_text())
    (base / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({"num_components": "2", "feature_dim": "5", "mini_batch_size": "100"})
    )
    (base / "input" / "config" / "inputdataconfig.json").write_text(
        json.dumps({"train": {"ContentType": "text/csv;label_size=0", "TrainingInputMode": "File"}})
    )
    command = [str(SMALGO)] if SMALGO.exists() else [sys.executable, "-m", "smalgo.containers"]
    result = subprocess.run(
        [*command, "train"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SMALGO_ALGORITHM": "pca"},
    )
    assert result.returncode == 0, result.stderr
    assert "Docker entrypoint called with argument(s): train" in result.stderr
    assert {"components.npy", "model.json"} <= {p.name for p in (base / "model").iterdir()}
    assert (base / "output" / "success").exists()


def test_failed_local_run_prints_the_reason(tmp_path, data_csv):
    out = tmp_path / "job"
    result = run_module(*local_kmeans_args(data_csv, out, k="abc"))
    assert result.returncode == 1
    assert "Hyperparameter k: invalid value 'abc'; expected an integer >= 1." in result.stderr
    assert (out / "output" / "failure").read_text().startswith("Hyperparameter k: invalid value 'abc'")
    assert list((out / "model").iterdir()) == []


def test_serve_command_serves_the_trained_model_and_stops_on_sigterm(tmp_path):
    from test_serve_support import FEATURES, ServerProcess, expected_outputs, train_kmeans

    model_dir = train_kmeans(tmp_path / "model")
    server = ServerProcess(model_dir, tmp_path / "serve.log", via_cli=True)
    try:
        server.wait_until_ready()
        rows = np.array([[0.5] * FEATURES, [-3.0] * FEATURES], np.float32)
        body = "\n".join(",".join(f"{v:g}" for v in row) for row in rows).encode()
        status, _, answer = server.request(
            "POST", "/invocations", body, {"Content-Type": "text/csv", "Accept": "application/json"}
        )
        assert status == 200
        expected = expected_outputs(model_dir, rows)
        predictions = json.loads(answer)["predictions"]
        assert [p["closest_cluster"] for p in predictions] == expected["closest_cluster"].tolist()
        code, seconds = server.terminate()
        assert code == 0 and seconds < 30
    finally:
        server.kill()


def test_serve_command_without_a_model_fails_in_one_line(tmp_path):
    result = run_module("serve", "--model-dir", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert result.stderr.startswith("smalgo serve:") and str(tmp_path / "missing") in result.stderr


def test_serve_command_with_a_damaged_model_fails_in_one_line_naming_the_file(tmp_path):
    from test_serve_support import damaged_model, train_kmeans

    model_dirs = {"kmeans": train_kmeans(tmp_path / "kmeans")}
    model_dir, named_file, fragment = damaged_model(model_dirs, "NaN centers", tmp_path / "damaged")
    result = run_module("serve", "--model-dir", str(model_dir))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"smalgo serve: {named_file} {fragment}; a smalgo model's arrays hold finite numbers only."
    ]


def test_sigterm_stops_training_without_a_partial_model(tmp_path):
    """`docker stop` in the middle of a pass: the job is reading its train channel (Pipe mode,
    data still arriving) when SIGTERM comes."""
    base = tmp_path / "opt_ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data").mkdir(parents=True)
    (base / "model").mkdir()
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps({"k": "3", "feature_dim": "5"}))
    (base / "input" / "config" / "inputdataconfig.json").write_text(
        json.dumps({"train": {"ContentType": "text/csv;label_size=0", "TrainingInputMode": "Pipe"}})
    )
    fifo = base / "input" / "data" / "train_0"
    os.mkfifo(fifo)
    log = tmp_path / "log.txt"
    with open(log, "w") as log_stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "smalgo.containers", "train"],
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SMALGO_ALGORITHM": "kmeans"},
        )
    try:
        writer = _open_when_read(fifo, process, deadline=time.monotonic() + 60)
        rows = csv_text(clustered_rows(n_rows=20_000)).encode()
        writer.write(rows)  # returns once the job has read all but a pipe buffer of it
        writer.flush()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    finally:
        process.kill()
    try:
        writer.close()
    except BrokenPipeError:
        pass
    output = log.read_text()
    assert exit_code == 143, output
    assert (
        (base / "output" / "failure")
        .read_text()
        .startswith(
            "Training stopped: the job received SIGTERM (StopTrainingJob or docker stop) before it finished; "
            "no model was saved."
        )
    )
    assert list((base / "model").iterdir()) == []
    assert not (base / "output" / "success").exists()
    assert sorted(p.name for p in base.iterdir()) == ["input", "model", "output"]  # no staging left


def _open_when_read(fifo: Path, process: subprocess.Popen, deadline: float):
    """Open the FIFO for writing once the job has opened it for reading."""
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody reads yet
            if process.poll() is not None:
                raise AssertionError(f"the job ended (exit {process.returncode}) before reading its pipe") from None
            time.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        return os.fdopen(fd, "wb")
    raise AssertionError("the job did not open its pipe in time")


# In-process: argument handling.


def test_a_second_run_replaces_the_first(tmp_path, data_csv, capsys):
    out = tmp_path / "job"
    assert cli.main(local_kmeans_args(data_csv, out, k="3")) == 0
    assert cli.main(local_kmeans_args(data_csv, out, k="4")) == 0
    assert np.load(out / "model" / "centers.npy").shape == (4, 5)
    assert json.loads((out / "input" / "config" / "hyperparameters.json").read_text())["k"] == "4"


def test_output_directory_of_something_else_is_left_alone(tmp_path, data_csv, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code = cli.main(
        [
            "train",
            "--algorithm",
            "kmeans",
            "--train",
            str(data_csv),
            "--hyperparameters",
            "k=3",
            "feature_dim=5",
            "--output",
            str(out),
        ]
    )
    assert code == 2
    assert "is not empty and was not made by smalgo train" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_missing_train_file(tmp_path, capsys):
    code = cli.main(
        ["train", "--algorithm", "kmeans", "--train", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "job")]
    )
    assert code == 2
    assert f"--train {tmp_path / 'nope.csv'}: no such file or directory." in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--train", "x.csv"], "a local run needs --train PATH and --output DIR"),
        (
            ["train", "--algorithm", "kmeans", "--train", "x.csv", "--output", "o", "--hyperparameters", "k"],
            "--hyperparameters takes NAME=VALUE pairs, got 'k'",
        ),
        ([], "the following arguments are required"),
    ],
)
def test_usage_errors(args, message, capsys, monkeypatch):
    monkeypatch.delenv("SMALGO_ALGORITHM", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_demo_trains_both_algorithms_and_shows_the_results(capsys):
    from smalgo.containers import demo

    assert demo.main([]) == 0
    shown = capsys.readouterr().out
    assert "$ smalgo train --algorithm kmeans" in shown and "$ smalgo train --algorithm pca" in shown
    assert "#quality_metric: host=algo-1, epoch=0, train msd <loss>=" in shown
    assert "closest_cluster = " in shown and "projection = [" in shown


def test_a_directory_as_the_train_channel(tmp_path, capsys):
    data = tmp_path / "parts"
    (data / "2024").mkdir(parents=True)
    X = clustered_rows()
    (data / "part-0.csv").write_text(csv_text(X[:300]))
    (data / "2024" / "part-1.csv").write_text(csv_text(X[300:]))
    (data / "_SUCCESS").write_text("")
    out = tmp_path / "job"
    assert (
        cli.main(
            [
                "train",
                "--algorithm",
                "pca",
                "--train",
                str(data),
                "--content-type",
                "text/csv;label_size=0",
                "--hyperparameters",
                "num_components=2",
                "feature_dim=5",
                "mini_batch_size=128",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert "File mode, 2 file(s) under" in capsys.readouterr().err
    assert (out / "model" / "components.npy").exists()
