"""The training job, run in-process on jobs laid out as SageMaker lays them out."""

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import TwoFileModel, assert_user_failure, clustered_rows, csv_text, stop_on_the_second_move

from smalgo.algorithms import kmeans, pca
from smalgo.algorithms.data import TrainingData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.registry import ALGORITHMS, get_algorithm
from smalgo.algorithms.runtime import device
from smalgo.containers import job as job_module
from smalgo.containers.channels import ChannelData, check_channels
from smalgo.containers.job import commit_model, run_training
from smalgo.containers.pipe_feeder import PipeFeeder
from smalgo.recordio import write_dense, write_sparse

SDK_HYPERPARAMETERS = Path(__file__).resolve().parent / "data" / "sdk_v2_hyperparameters"
KMEANS_HP = {"k": 3, "feature_dim": 5, "mini_batch_size": 100}
PCA_HP = {"num_components": 2, "feature_dim": 5, "mini_batch_size": 100}


def recordio_bytes(X, labels=None) -> bytes:
    buffer = io.BytesIO()
    write_dense(buffer, X, labels)
    return buffer.getvalue()


# --------------------------------------------------------------------------- success


def test_kmeans_from_csv(job, caplog):
    X = clustered_rows()
    job.hyperparameters(**KMEANS_HP).channel("train", files={"part-0.csv": csv_text(X)})
    with caplog.at_level(logging.INFO, logger="smalgo"):
        assert run_training(job.paths, "kmeans") == 0
    assert job.succeeded() and not job.paths.failure_file.exists()
    assert job.model_files() == ["centers.npy", "model.json"]
    model = kmeans.ALGORITHM.load(job.paths.model_dir)
    assert model.centers.shape == (3, 5)
    log = caplog.text
    assert "Docker entrypoint called with argument(s): train" in log
    assert '"k": 3' in log  # the parsed hyperparameters
    assert "#quality_metric: host=algo-1, epoch=0, train msd <loss>=" in log
    # Nothing of the staging directory is left beside model/.
    assert sorted(p.name for p in job.paths.base.iterdir()) == ["input", "model", "output"]


def test_pca_from_recordio_with_a_test_channel(job, caplog):
    X = clustered_rows(n_features=5)
    job.hyperparameters(**PCA_HP)
    job.channel("train", "application/x-recordio-protobuf", files={"train.pbr": recordio_bytes(X)})
    job.channel("test", "recordio-protobuf", files={"test.pbr": recordio_bytes(X[:50])})
    assert run_training(job.paths, "pca") == 0
    model = pca.ALGORITHM.load(job.paths.model_dir)
    assert model.components.shape == (5, 2)


def test_csv_label_column_is_the_default(make_job):
    # Plain text/csv means label_size=1: the first column is the label, not a feature, so the
    # model is the one trained on the features alone.
    X = clustered_rows()
    labels = np.arange(len(X)) % 3
    labelled = (
        make_job().hyperparameters(**KMEANS_HP).channel("train", "text/csv", files={"train.csv": csv_text(X, labels)})
    )
    features_only = (
        make_job()
        .hyperparameters(**KMEANS_HP)
        .channel("train", "text/csv;label_size=0", files={"train.csv": csv_text(X)})
    )
    assert run_training(labelled.paths, "kmeans") == 0
    assert run_training(features_only.paths, "kmeans") == 0
    np.testing.assert_array_equal(
        np.load(labelled.paths.model_dir / "centers.npy"), np.load(features_only.paths.model_dir / "centers.npy")
    )


def test_a_channel_without_content_type_is_read_as_the_algorithms_default(job):
    # k-means defaults to RecordIO-protobuf, as the built-in does; a CSV file then reads as garbage.
    job.hyperparameters(**KMEANS_HP).channel("train", None, files={"train.csv": csv_text(clustered_rows())})
    failure = assert_user_failure(job, run_training(job.paths, "kmeans"), "Channel train: ")
    assert "train.csv: record 0 at byte offset 0: bad magic number" in failure


def test_algorithm_from_the_environment(job, monkeypatch):
    monkeypatch.setenv("SMALGO_ALGORITHM", "pca")
    job.hyperparameters(**PCA_HP).channel("train", files={"train.csv": csv_text(clustered_rows())})
    assert run_training(job.paths) == 0
    assert "components.npy" in job.model_files()


def test_host_name_comes_from_resourceconfig(job, caplog):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": csv_text(clustered_rows())})
    job.write_config("resourceconfig.json", {"current_host": "algo-7", "hosts": ["algo-7"]})
    with caplog.at_level(logging.INFO, logger="smalgo"):
        assert run_training(job.paths, "kmeans") == 0
    assert "#quality_metric: host=algo-7, epoch=0, train msd" in caplog.text


def test_model_dir_that_already_exists_as_a_mount_point(job):
    # SageMaker mounts model/; the job moves its files into it rather than replacing the folder.
    inode = job.paths.model_dir.stat().st_ino
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": csv_text(clustered_rows())})
    assert run_training(job.paths, "kmeans") == 0
    assert job.paths.model_dir.stat().st_ino == inode
    assert job.model_files() == ["centers.npy", "model.json"]


LINEAR_LEARNER_TEST_METRIC = {
    "binary_classifier": "binary_classification_accuracy <score>=",
    "regressor": "mse <loss>=",
    "multiclass_classifier": "multiclass_accuracy <score>=",
}


def linear_learner_rows(predictor_type: str, n_rows: int = 1200, n_features: int = 50, seed: int = 0):
    """Float32 features and labels from a linear rule, as a Linear Learner of that predictor type
    expects them: 0/1 for binary_classifier, reals for regressor, 0..2 for multiclass_classifier."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (n_rows, n_features)).astype(np.float32)
    scores = X @ rng.normal(0.0, 1.0, (n_features, 3))
    labels = {
        "binary_classifier": scores[:, 0] > 0,
        "regressor": scores[:, 0] + rng.normal(0.0, 0.1, n_rows),
        "multiclass_classifier": scores.argmax(axis=1),
    }[predictor_type]
    return X, labels.astype(np.float32)


def test_sdk_v2_hyperparameters_train_unchanged(make_job, caplog):
    """The exact maps the SageMaker Python SDK v2 KMeans(...), PCA(...) and LinearLearner(...)
    estimators send, with a test channel, so that k-means' eval_metrics '["msd", "ssd"]' and
    Linear Learner's test metrics are put to use too."""
    # Factorization machines' maps train in tests/test_factorization_machines.py, on their own data.
    fixtures = sorted(p for p in SDK_HYPERPARAMETERS.glob("*.json") if not p.stem.startswith("factorization_machines"))
    linear_learner_stems = {f"linear_learner_{kind}" for kind in ("binary", "regressor", "multiclass", "explicit")}
    assert {p.stem for p in fixtures} >= {"kmeans", "pca"} | linear_learner_stems
    for fixture in fixtures:
        hyperparameters = json.loads(fixture.read_text())
        assert all(isinstance(v, str) for v in hyperparameters.values())
        algorithm = next(a for a in ("linear-learner", "pca", "kmeans") if fixture.stem.startswith(a.replace("-", "_")))
        n_features = int(hyperparameters["feature_dim"])
        if algorithm == "linear-learner":
            X, labels = linear_learner_rows(hyperparameters["predictor_type"], n_features=n_features)
            test_labels = labels[:200]
        else:
            X, labels, test_labels = clustered_rows(n_rows=1200, n_features=n_features, n_clusters=10), None, None
        job = make_job()
        job.write_config("hyperparameters.json", hyperparameters)
        # RecordIO-protobuf, as the SDK's record_set() uploads it.
        job.channel("train", "application/x-recordio-protobuf", files={"matrix_0.pbr": recordio_bytes(X, labels)})
        job.channel(
            "test", "application/x-recordio-protobuf", files={"matrix_0.pbr": recordio_bytes(X[:200], test_labels)}
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="smalgo"):
            assert run_training(job.paths, algorithm) == 0, f"{fixture.name}: {job.failure()}"
        assert job.succeeded()
        if algorithm == "kmeans":
            assert kmeans.ALGORITHM.load(job.paths.model_dir).centers.shape == (10, 50)
            for line in ("epoch=0, train msd <loss>=", "test msd <loss>=", "test ssd <loss>="):
                assert f"#quality_metric: host=algo-1, {line}" in caplog.text, (fixture.name, line)
        elif algorithm == "pca":
            assert pca.ALGORITHM.load(job.paths.model_dir).components.shape == (50, 5)
            assert "#quality_metric: host=algo-1, test reconstruction_error <loss>=" in caplog.text
        else:
            get_algorithm(algorithm).load(job.paths.model_dir)
            metric = LINEAR_LEARNER_TEST_METRIC[hyperparameters["predictor_type"]]
            assert f"#quality_metric: host=algo-1, test {metric}" in caplog.text, (fixture.name, metric)


# --------------------------------------------------------------------------- File and Pipe mode


def test_file_mode_reads_nested_files_in_order_and_skips_hidden_ones(job):
    X = clustered_rows(n_rows=90)
    job.hyperparameters(k=3, feature_dim=5, mini_batch_size=40)
    job.channel(
        "train",
        files={
            "b/part-1.csv": csv_text(X[30:60]),
            "a.csv": csv_text(X[:30]),
            "b/c/part-2.csv": csv_text(X[60:]),
            ".hidden.csv": "not,numbers\n",
            "_SUCCESS": "",
            "_tmp/part-9.csv": "garbage\n",
            "b/.cache/x.csv": "garbage\n",
        },
    )
    channels = check_channels(kmeans.ALGORITHM, _channel_configs(job), job.paths)
    assert [p.relative_to(job.paths.channel_dir("train")).as_posix() for p in channels["train"].files] == [
        "a.csv",
        "b/c/part-2.csv",
        "b/part-1.csv",
    ]
    batches = list(ChannelData(channels).batches("train", 40, feature_dim=5))
    # One stream across the files: batches of exactly 40 rows, whatever the file boundaries.
    assert [b.n_rows for b in batches] == [40, 40, 10]
    expected = np.concatenate([X[:30], X[60:], X[30:60]])
    np.testing.assert_array_equal(np.concatenate([b.X for b in batches]), expected)


def _channel_configs(job):
    from smalgo.containers.config import load_channels

    return load_channels(job.paths.inputdataconfig_file)


def test_channel_data_is_training_data(job):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"a.csv": "1,2\n"})
    data = ChannelData(check_channels(kmeans.ALGORITHM, _channel_configs(job), job.paths))
    assert isinstance(data, TrainingData)
    assert data.has_channel("train") and not data.has_channel("test")


def test_several_files_give_the_model_of_one_file(make_job):
    X = clustered_rows(n_rows=700)
    hp = dict(KMEANS_HP, mini_batch_size=64)
    one = make_job().hyperparameters(**hp).channel("train", files={"all.csv": csv_text(X)})
    many = (
        make_job()
        .hyperparameters(**hp)
        .channel("train", files={f"part-{i}.csv": csv_text(X[i * 100 : (i + 1) * 100]) for i in range(7)})
    )
    assert run_training(one.paths, "kmeans") == 0
    assert run_training(many.paths, "kmeans") == 0
    np.testing.assert_array_equal(
        np.load(one.paths.model_dir / "centers.npy"), np.load(many.paths.model_dir / "centers.npy")
    )


@pytest.mark.parametrize("content_type", ["text/csv;label_size=0", "application/x-recordio-protobuf"])
def test_pipe_mode_gives_the_model_of_file_mode(make_job, content_type):
    X = clustered_rows(n_rows=500)
    payload = csv_text(X).encode() if content_type.startswith("text/csv") else recordio_bytes(X)
    hp = dict(KMEANS_HP, epochs=2, mini_batch_size=64)

    file_job = make_job().hyperparameters(**hp).channel("train", content_type, files={"train": payload})
    assert run_training(file_job.paths, "kmeans") == 0

    pipe_job = make_job().hyperparameters(**hp).channel("train", content_type, mode="Pipe")
    with PipeFeeder(pipe_job.paths.data_dir, "train", payload) as feeder:
        assert run_training(pipe_job.paths, "kmeans") == 0, pipe_job.failure()
    assert feeder.passes_written == 2  # train_0 and train_1: one FIFO per epoch
    np.testing.assert_array_equal(
        np.load(file_job.paths.model_dir / "centers.npy"), np.load(pipe_job.paths.model_dir / "centers.npy")
    )


def test_pipe_that_never_appears(job, monkeypatch):
    monkeypatch.setenv("SMALGO_PIPE_WAIT_SECONDS", "0.2")
    job.hyperparameters(**KMEANS_HP).channel("train", mode="Pipe")
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"Channel train is in Pipe mode, but its pipe {job.paths.data_dir / 'train_0'} "
        f"for pass 1 did not appear within 0.2 s.",
    )


# --------------------------------------------------------------------------- user errors


def good_csv():
    return csv_text(clustered_rows())


@pytest.mark.parametrize(
    "hyperparameters, expected",
    [
        ({"feature_dim": 5}, "Missing required hyperparameter: k (an integer >= 1)."),
        ({"k": "abc", "feature_dim": 5}, "Hyperparameter k: invalid value 'abc'; expected an integer >= 1."),
        ({"k": 0, "feature_dim": 5}, "Hyperparameter k: invalid value '0'; expected an integer >= 1."),
        (
            {"k": 3, "feature_dim": 5, "mini_batch_siz": 10},
            "Unknown hyperparameter mini_batch_siz; this algorithm accepts: ",
        ),
    ],
    ids=["k-missing", "k-abc", "k-zero", "unknown"],
)
def test_bad_hyperparameters(job, hyperparameters, expected):
    job.hyperparameters(**hyperparameters).channel("train", files={"train.csv": good_csv()})
    assert_user_failure(job, run_training(job.paths, "kmeans"), expected)


def test_a_gpu_job_without_a_gpu_fails_before_reading_data(job, monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "gpu")
    monkeypatch.setattr(device, "CUDA_DRIVER_LIBRARY", "libcuda-that-does-not-exist.so.1")
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    device.forget_gpu_probe()
    monkeypatch.setattr(job_module, "ChannelData", None)  # reading data would be a TypeError
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": good_csv()})
    try:
        assert_user_failure(
            job, run_training(job.paths, "kmeans"), "SMALGO_DEVICE=gpu, but no CUDA GPU can be used: no CUDA driver"
        )
    finally:
        device.forget_gpu_probe()


def test_a_bad_device_value_is_a_user_error(job, monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "fast")
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": good_csv()})
    assert_user_failure(job, run_training(job.paths, "kmeans"), "SMALGO_DEVICE='fast' is not a device")


def test_num_components_larger_than_feature_dim(job):
    job.hyperparameters(num_components=10, feature_dim=5, mini_batch_size=100)
    job.channel("train", files={"train.csv": good_csv()})
    assert_user_failure(
        job, run_training(job.paths, "pca"), "Hyperparameter num_components (10) must not exceed feature_dim (5)"
    )


def test_text_plain_channel(job):
    job.hyperparameters(**KMEANS_HP).channel("train", "text/plain", files={"train.txt": good_csv()})
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        "Channel train: ContentType 'text/plain' is not accepted; accepted: "
        "application/x-recordio-protobuf (or recordio-protobuf), text/csv (or csv).",
    )


def test_empty_train_channel(job):
    job.hyperparameters(**KMEANS_HP).channel("train", files={".keep": ""})
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"Channel train has no data: {job.paths.channel_dir('train')} holds no data files "
        f"(names beginning with '.' or '_' are skipped).",
    )


def test_train_channel_whose_files_have_no_rows(job):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"a.csv": "", "b.csv": "\n\n"})
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"Channel train has no data: the 2 file(s) under {job.paths.channel_dir('train')} hold no records.",
    )


def test_csv_with_a_non_numeric_cell(job):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": "1,2,3,4,5\n\n1,abc,3,4,5\n"})
    path = job.paths.channel_dir("train") / "train.csv"
    assert_user_failure(job, run_training(job.paths, "kmeans"), f"{path}, line 3, column 2: 'abc' is not a number.")


def test_csv_rows_of_different_widths(job):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": "1,2,3,4,5\n1,2,3,4\n"})
    path = job.paths.channel_dir("train") / "train.csv"
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"{path}, line 2: 4 columns, expected 5: 5 features (hyperparameter feature_dim=5).",
    )


def test_csv_files_of_different_widths_without_feature_dim(job):
    # feature_dim is required by both algorithms; the channel layer still checks files agree.
    job.hyperparameters(**KMEANS_HP).channel("train", files={"a.csv": "1,2,3\n", "b.csv": "1,2\n"})
    data = ChannelData(check_channels(kmeans.ALGORITHM, _channel_configs(job), job.paths))
    with pytest.raises(UserError, match=r"b.csv, line 1: 2 columns, expected 3: 3 features \(the width of .*a.csv"):
        list(data.batches("train", 10))


def test_feature_dim_that_disagrees_with_csv_data(job):
    job.hyperparameters(k=3, feature_dim=6).channel("train", files={"train.csv": good_csv()})
    path = job.paths.channel_dir("train") / "train.csv"
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"{path}, line 1: 5 columns, expected 6: 6 features (hyperparameter feature_dim=6).",
    )


def test_feature_dim_that_disagrees_with_recordio_data(job):
    job.hyperparameters(k=3, feature_dim=6)
    job.channel("train", "application/x-recordio-protobuf", files={"train.pbr": recordio_bytes(clustered_rows())})
    path = job.paths.channel_dir("train") / "train.pbr"
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"Channel train: {path}: record 0 at byte offset 0: has 5 dense values, but the width is 6",
    )


def test_recordio_file_of_garbage(job):
    garbage = b"\x93\xab\x27\x35" + np.random.default_rng(5).bytes(4092)
    job.hyperparameters(**KMEANS_HP)
    job.channel("train", "application/x-recordio-protobuf", files={"train.pbr": garbage})
    path = job.paths.channel_dir("train") / "train.pbr"
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"Channel train: {path}: record 0 at byte offset 0: bad magic number 93 ab 27 35 "
        f"(expected 0a 23 d7 ce, RecordIO magic 0xCED7230A): not RecordIO, or misaligned",
    )


def test_nan_in_csv_data(job):
    # numpy.loadtxt (and our decoder) reads `nan`; k-means failed on it with an IndexError.
    rows = good_csv().splitlines(keepends=True)
    rows[6] = "1,2,nan,4,5\n"
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": "".join(rows)})
    path = job.paths.channel_dir("train") / "train.csv"
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"{path}, data row 7 (blank lines not counted), column 3: nan is not a finite number; "
        f"training data must hold finite numbers.",
    )


def test_infinity_in_recordio_data(job):
    X = clustered_rows()
    X[42, 4] = np.inf
    job.hyperparameters(**PCA_HP)
    job.channel(
        "train",
        "application/x-recordio-protobuf",
        files={"a.pbr": recordio_bytes(X[:40]), "b.pbr": recordio_bytes(X[40:])},
    )
    path = job.paths.channel_dir("train") / "b.pbr"
    assert_user_failure(job, run_training(job.paths, "pca"), f"{path}: record 2, feature 4: inf is not a finite number")


def test_infinity_in_sparse_recordio_data(job):
    X = sp.random(50, 5, density=0.3, format="csr", dtype=np.float32, random_state=1)
    X.data[X.indptr[20]] = -np.inf  # the first stored value of row 20
    buffer = io.BytesIO()
    write_sparse(buffer, X)
    job.hyperparameters(**PCA_HP)
    job.channel("train", "application/x-recordio-protobuf", files={"a.pbr": buffer.getvalue()})
    path = job.paths.channel_dir("train") / "a.pbr"
    assert_user_failure(
        job,
        run_training(job.paths, "pca"),
        f"{path}: record 20, feature {X.indices[X.indptr[20]]}: -inf is not a finite number",
    )


def test_files_of_a_channel_that_disagree_about_labels(job):
    X = clustered_rows()
    job.hyperparameters(**KMEANS_HP)
    job.channel(
        "train",
        "application/x-recordio-protobuf",
        files={"a.pbr": recordio_bytes(X[:50], np.ones(50, np.float32)), "b.pbr": recordio_bytes(X[50:])},
    )
    path = job.paths.channel_dir("train") / "b.pbr"
    assert_user_failure(
        job,
        run_training(job.paths, "kmeans"),
        f"Channel train: {path} has records without labels, but the channel's earlier records "
        f"have labels; all files of a channel must agree.",
    )


def test_dense_and_sparse_recordio_files_make_one_stream_of_batches(job):
    X = clustered_rows(n_rows=100)
    sparse = io.BytesIO()
    write_sparse(sparse, sp.csr_matrix(X[60:]))
    job.hyperparameters(**KMEANS_HP)
    job.channel(
        "train", "application/x-recordio-protobuf", files={"a.pbr": recordio_bytes(X[:60]), "b.pbr": sparse.getvalue()}
    )
    batches = list(
        ChannelData(check_channels(kmeans.ALGORITHM, _channel_configs(job), job.paths)).batches(
            "train", 45, feature_dim=5
        )
    )
    assert [b.n_rows for b in batches] == [45, 45, 10]
    assert not batches[0].is_sparse and batches[1].is_sparse  # rows 45..89 span both files
    np.testing.assert_array_equal(np.vstack([b.dense_X() for b in batches]), X)


@pytest.mark.parametrize(
    "configure, expected",
    [
        (
            lambda job: job.channel("validation", files={"v.csv": good_csv()}),
            "Channel validation in inputdataconfig.json is not read by kmeans; its channels are: train (required), "
            "test (optional).",
        ),
        (
            lambda job: job.write_config("inputdataconfig.json", {"test": job.channels["train"]}),
            "Required channel train is missing from inputdataconfig.json; kmeans reads: train (required), "
            "test (optional).",
        ),
        (
            lambda job: job.channel("train", mode="Streaming", files={"a.csv": good_csv()}),
            "Channel train: TrainingInputMode 'Streaming' is not one of File, FastFile, Pipe.",
        ),
        (
            lambda job: job.channel("train", RecordWrapperType="RecordIO", files={"a.csv": good_csv()}),
            "Channel train: RecordWrapperType 'RecordIO' is not supported",
        ),
        (
            lambda job: job.channel("train", CompressionType="Gzip", files={"a.csv": good_csv()}),
            "Channel train: CompressionType 'Gzip' works only in Pipe mode",
        ),
        (
            lambda job: (job.paths.config_dir / "hyperparameters.json").write_text('{"k": "3",'),
            "{config}/hyperparameters.json is not valid JSON: Expecting property name enclosed in double quotes "
            "at line 1, column 11",
        ),
        (
            lambda job: (job.paths.config_dir / "inputdataconfig.json").write_text('["train"]'),
            "{config}/inputdataconfig.json must hold a JSON object of channel names to channel settings, "
            "not a JSON list.",
        ),
        (
            lambda job: (job.paths.config_dir / "inputdataconfig.json").unlink(),
            "{config}/inputdataconfig.json is missing",
        ),
        (
            # (Jobs of several hosts: tests/test_several_hosts.py.)
            lambda job: job.write_config(
                "resourceconfig.json", {"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}
            ),
            "{config}/resourceconfig.json: current_host 'algo-3' is not among hosts ['algo-1', 'algo-2'].",
        ),
    ],
    ids=[
        "unknown-channel",
        "missing-train",
        "input-mode",
        "record-wrapper",
        "gzip-file-mode",
        "bad-json",
        "not-an-object",
        "no-inputdataconfig",
        "host-not-among-hosts",
    ],
)
def test_bad_job_configuration(job, configure, expected):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": good_csv()})
    configure(job)
    assert_user_failure(job, run_training(job.paths, "kmeans"), expected.format(config=job.paths.config_dir))


def test_unknown_algorithm(job):
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": good_csv()})
    assert_user_failure(
        job,
        run_training(job.paths, "xgboostt"),
        f"Unknown algorithm 'xgboostt'; this smalgo provides: {', '.join(sorted(ALGORITHMS))}.",
    )


def test_checks_come_before_any_data_is_read(job, monkeypatch):
    # A bad hyperparameter and a bad content type are reported even though the data is garbage
    # too: neither check reads it.
    reads = []
    monkeypatch.setattr("smalgo.containers.channels.iter_csv_blocks", lambda *a, **k: reads.append(a) or iter(()))
    job.hyperparameters(k=0, feature_dim=5).channel("train", files={"train.csv": "garbage"})
    assert_user_failure(job, run_training(job.paths, "kmeans"), "Hyperparameter k: invalid value '0'")
    job.hyperparameters(**KMEANS_HP).channel("train", "text/plain", files={"train.csv": "garbage"})
    assert_user_failure(job, run_training(job.paths, "kmeans"), "Channel train: ContentType 'text/plain'")
    assert reads == []


# --------------------------------------------------------------------------- internal errors, stops


def test_internal_error_gives_a_summary_then_the_traceback(job, monkeypatch):
    def broken_train(self, hp, data, **options):
        raise RuntimeError("centers went missing")

    monkeypatch.setattr(kmeans.KMeans, "train", broken_train)
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": good_csv()})
    assert run_training(job.paths, "kmeans") == 1
    failure = job.failure()
    first_line, rest = failure.split("\n", 1)
    assert first_line == (
        "Internal error in smalgo (a bug, not a problem with your input): RuntimeError: centers went missing"
    )
    assert "Traceback (most recent call last)" in rest and "broken_train" in rest
    assert job.model_files() == [] and not job.succeeded()


def test_stop_during_training_leaves_no_model(job, monkeypatch):
    def train_then_stop(self, hp, data, **options):
        for _ in data.batches("train", 10, feature_dim=5):
            raise job_module.TrainingStopped()  # what the SIGTERM handler raises

    monkeypatch.setattr(kmeans.KMeans, "train", train_then_stop)
    job.hyperparameters(**KMEANS_HP).channel("train", files={"train.csv": good_csv()})
    assert run_training(job.paths, "kmeans") == 143
    assert job.failure().startswith("Training stopped: the job received SIGTERM")
    assert job.model_files() == [] and not job.succeeded()


def test_a_failure_while_moving_the_model_removes_what_was_moved(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    stop_on_the_second_move(monkeypatch)
    with pytest.raises(job_module.TrainingStopped):
        commit_model(TwoFileModel(), model_dir)
    assert list(model_dir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # staging removed too


def test_commit_model_replaces_files_of_an_earlier_run(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "a.npy").write_bytes(b"old")
    assert commit_model(TwoFileModel(), model_dir) == ["a.npy", "b.npy"]
    assert (model_dir / "a.npy").read_bytes() == b"a"


@pytest.mark.parametrize(
    "config, make_default, expected",
    [
        (None, False, None),  # a job without checkpoints
        (None, True, "default"),  # /opt/ml/checkpoints mounted, no checkpointconfig.json
        ({}, False, "default"),  # CheckpointConfig without LocalPath: SageMaker's default path
        ({"LocalPath": "/somewhere/else"}, True, "/somewhere/else"),
    ],
    ids=["none", "folder-only", "config-without-local-path", "local-path"],
)
def test_the_checkpoint_directory_is_local_path_else_the_default_folder(tmp_path, config, make_default, expected):
    from smalgo.containers.config import load_checkpoint_dir
    from smalgo.containers.paths import JobPaths

    paths = JobPaths(tmp_path)
    assert paths.default_checkpoint_dir == tmp_path / "checkpoints"  # /opt/ml/checkpoints in a job
    if config is not None:
        paths.config_dir.mkdir(parents=True)
        paths.checkpointconfig_file.write_text(json.dumps(config))
    if make_default:
        paths.default_checkpoint_dir.mkdir()
    found = load_checkpoint_dir(paths.checkpointconfig_file, paths.default_checkpoint_dir)
    if expected is None:
        assert found is None
    else:
        assert found == (paths.default_checkpoint_dir if expected == "default" else Path(expected))


def test_a_local_path_that_is_not_a_path_is_a_user_error(tmp_path):
    from smalgo.containers.config import load_checkpoint_dir
    from smalgo.containers.paths import JobPaths

    paths = JobPaths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.checkpointconfig_file.write_text(json.dumps({"LocalPath": 3}))
    with pytest.raises(UserError, match=r"checkpointconfig.json: LocalPath must be a directory path, not 3"):
        load_checkpoint_dir(paths.checkpointconfig_file, paths.default_checkpoint_dir)
