"""XGBoost (issue 13): jobs on AWS's own test data give the models raw xgboost.train gives on the
same float32 matrix; AWS's own models are served; the hyperparameter rules, early stopping,
checkpoints, SIGTERM, k-fold, the selectable outputs and the error messages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import xgboost as xgb
from conftest import SageMakerJob, assert_user_failure
from sklearn.datasets import load_svmlight_file

from smalgo import recordio
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.libsvm import decode_libsvm
from smalgo.algorithms.registry import get_algorithm
from smalgo.algorithms.xgboost import _model
from smalgo.algorithms.xgboost._legacy import legacy_binary_to_json
from smalgo.algorithms.xgboost._train import uses_quantile_matrix
from smalgo.containers.job import run_training
from smalgo.serve.app import create_app
from smalgo.serve.model import ModelError, load_model

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "sagemaker-xgboost-container"
XGB = get_algorithm("xgboost")
pytestmark = pytest.mark.skipif(not TESTDATA.is_dir(), reason=f"the shared test data is not at {TESTDATA}")


# ---------------------------------------------------------------------------------------------
# Reading the test data independently of smalgo's decoders: the reference matrices.


def reference_csv(paths: list[Path], *, weights: bool = False):
    rows = np.concatenate([np.loadtxt(p, delimiter=",", dtype=np.float32, ndmin=2) for p in paths])
    if weights:
        return rows[:, 2:], rows[:, 0], rows[:, 1]
    return rows[:, 1:], rows[:, 0], None


def reference_libsvm(paths: list[Path]):
    parts = [load_svmlight_file(str(p), zero_based=True, dtype=np.float32) for p in paths]
    width = max(X.shape[1] for X, _ in parts)
    X = sp.vstack([sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], width)) for X, _ in parts])
    return sp.csr_matrix(X, dtype=np.float32), np.concatenate([y for _, y in parts]).astype(np.float32), None


def reference_libsvm_weights(path: Path):
    rows, labels, weights = [], [], []
    for line in path.read_text().splitlines():
        head, *pairs = line.split()
        label, weight = head.split(":")
        labels.append(float(label))
        weights.append(float(weight))
        rows.append({int(k): float(v) for k, v in (pair.split(":") for pair in pairs)})
    width = max(max(r) for r in rows) + 1
    X = np.zeros((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        for k, v in row.items():
            X[i, k] = v
    return sp.csr_matrix(X), np.array(labels, np.float32), np.array(weights, np.float32)


def reference_parquet(paths: list[Path]):
    tables = [pq.read_table(p).to_pydict() for p in paths]
    columns = [np.concatenate([np.asarray(t[name], dtype=np.float32) for t in tables]) for name in tables[0]]
    return np.column_stack(columns[1:]), columns[0], None


def reference_recordio(paths: list[Path]):
    parts = [recordio.read(p.read_bytes()) for p in paths]
    X = sp.vstack([sp.csr_matrix(X) for X, _ in parts]) if len(parts) > 1 else parts[0][0]
    return X, np.concatenate([y for _, y in parts]).astype(np.float32), None


def data_files(relative: str) -> list[Path]:
    path = TESTDATA / relative
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))), key=str)


# ---------------------------------------------------------------------------------------------
# Jobs


def lay_out(job: SageMakerJob, channel: str, relative: str, content_type: str | None, mode: str = "File") -> None:
    base = TESTDATA / relative
    files = {
        (p.relative_to(base).as_posix() if base.is_dir() else p.name): p.read_bytes() for p in data_files(relative)
    }
    job.channel(channel, content_type, mode=mode, files=files)


def run_job(job: SageMakerJob) -> int:
    return run_training(job.paths, "xgboost")


def trained_booster(job: SageMakerJob, name: str = "xgboost-model") -> xgb.Booster:
    return load_booster(job.paths.model_dir / name)


def load_booster(path: Path) -> xgb.Booster:
    """What AWS's users do: Booster().load_model(path). (XGBoost warns that a file name without
    .json or .ubj leaves it to guess the format; it guesses right, and AWS's name has none.)"""
    booster = xgb.Booster()
    with pytest.warns(UserWarning, match="Unknown file format"):
        booster.load_model(str(path))
    return booster


CASES = {
    # name: (train data, validation data or None, content type, reference reader, hyperparameters)
    "csv": ("data/csv/train.csv", None, "text/csv", reference_csv, {}),
    "csv-folder": ("data/csv/csv_files", None, "csv", reference_csv, {}),
    "csv-files": ("data/csv/multiple_files", None, "text/csv; label_size=1", reference_csv, {}),
    "csv-weights": (
        "data/csv/train.csv.weights",
        None,
        "text/csv",
        lambda paths: reference_csv(paths, weights=True),
        {"csv_weights": "1"},
    ),
    "csv-weights-folder": (
        "data/csv/weighted_csv_files",
        None,
        "text/csv",
        lambda paths: reference_csv(paths, weights=True),
        {"csv_weights": "1"},
    ),
    "libsvm": ("data/libsvm/train.libsvm", None, "text/libsvm", reference_libsvm, {}),
    "libsvm-default": ("data/libsvm/libsvm_files", None, None, reference_libsvm, {}),
    "libsvm-weights": (
        "data/libsvm/train.libsvm.weights",
        None,
        "libsvm",
        lambda paths: reference_libsvm_weights(paths[0]),
        {},
    ),
    "parquet": ("data/parquet/train.parquet", None, "application/x-parquet", reference_parquet, {}),
    "parquet-folder": ("data/parquet/pq_files", None, "parquet", reference_parquet, {}),
    "parquet-files": ("data/parquet/multiple_files", None, "application/x-parquet", reference_parquet, {}),
    "recordio": ("data/recordio_protobuf/train.pb", None, "application/x-recordio-protobuf", reference_recordio, {}),
    "recordio-folder": ("data/recordio_protobuf/pb_files", None, "recordio-protobuf", reference_recordio, {}),
    "recordio-sparse": (
        "data/recordio_protobuf/sparse",
        None,
        "application/x-recordio-protobuf",
        reference_recordio,
        {},
    ),
    "recordio-sparse-edge-cases": (
        "data/recordio_protobuf/sparse_edge_cases",
        None,
        "application/x-recordio-protobuf",
        reference_recordio,
        {},
    ),
    "recordio-single-feature": (
        "data/recordio_protobuf/single_feature_label.pb",
        None,
        "application/x-recordio-protobuf",
        reference_recordio,
        {},
    ),
    "abalone": (
        "abalone/data/train",
        "abalone/data/validation",
        "text/libsvm",
        reference_libsvm,
        {"eval_metric": "rmse,mae", "max_depth": "5", "eta": "0.2", "subsample": "0.7", "seed": "3"},
    ),
    "abalone-binary": (
        "abalone-binary/data/train",
        "abalone-binary/data/validation",
        "text/libsvm",
        reference_libsvm,
        {"objective": "binary:logistic", "eval_metric": "auc", "tree_method": "exact"},
    ),
    # Its validation file is damaged (test below): the train channel alone.
    "abalone-multiclass": (
        "abalone-multiclass/data/train",
        None,
        "text/x-libsvm",
        reference_libsvm,
        {"objective": "multi:softprob", "num_class": "4", "tree_method": "approx"},
    ),
    "abalone-subdirs": ("abalone-subdirs/train", None, "text/libsvm", reference_libsvm, {"booster": "dart"}),
    "early-stopping-data": ("early_stopping/data/train", None, "text/libsvm", reference_libsvm, {"max_depth": "2"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_test_data_set_trains_the_model_raw_xgboost_trains(case, make_job):
    train, validation, content_type, reference, extra = CASES[case]
    hp = {"num_round": "8", **extra}
    job = make_job().hyperparameters(**hp)
    lay_out(job, "train", train, content_type)
    if validation:
        lay_out(job, "validation", validation, content_type)
    assert run_job(job) == 0, job.failure()
    assert job.model_files() == ["xgboost-model"]
    ours = trained_booster(job)

    X, y, w = reference(data_files(train))
    params = {
        k: (v.split(",") if k == "eval_metric" else v) for k, v in hp.items() if k not in ("num_round", "csv_weights")
    }
    params.setdefault("objective", "reg:squarederror")
    # Like with like: the job trains hist on a QuantileDMatrix, the other methods on a DMatrix.
    quantile = uses_quantile_matrix(params)
    assert quantile == (extra.get("tree_method") not in ("exact", "approx") and extra.get("booster") != "gblinear")
    dtrain = (xgb.QuantileDMatrix if quantile else xgb.DMatrix)(X, y, weight=w)
    evals = [(dtrain, "train")]
    if validation:
        Xv, yv, _ = reference(data_files(validation))
        if sp.issparse(Xv) and Xv.shape[1] < X.shape[1]:
            Xv = sp.csr_matrix((Xv.data, Xv.indices, Xv.indptr), shape=(Xv.shape[0], X.shape[1]))
        evals.append((xgb.DMatrix(Xv, yv), "validation"))
    raw = xgb.train(params, dtrain, num_boost_round=8, evals=evals, verbose_eval=False)
    # The same float32 matrix, the same parameters: the same trees, bit for bit.
    assert ours.get_dump(dump_format="json") == raw.get_dump(dump_format="json")
    np.testing.assert_array_equal(ours.predict(xgb.DMatrix(X)), raw.predict(xgb.DMatrix(X)))
    if quantile:
        # And the trees a DMatrix gives (what the job built before): the same cuts, the same trees.
        dmatrix = xgb.DMatrix(X, y, weight=w)
        evals[0] = (dmatrix, "train")
        from_dmatrix = xgb.train(params, dmatrix, num_boost_round=8, evals=evals, verbose_eval=False)
        assert from_dmatrix.get_dump(dump_format="json") == raw.get_dump(dump_format="json")


def test_train_matrix_is_a_quantile_dmatrix_for_hist_only():
    from smalgo.algorithms.xgboost._train import train_matrix_of

    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    batch = Batch(X, np.arange(10, dtype=np.float32) % 2)
    assert isinstance(train_matrix_of(batch, 4, {"tree_method": "hist", "max_bin": 16}), xgb.QuantileDMatrix)
    assert isinstance(train_matrix_of(batch, 4, {}), xgb.QuantileDMatrix)
    for params in ({"tree_method": "exact"}, {"tree_method": "approx"}, {"booster": "gblinear"}, {"device": "cuda"}):
        matrix = train_matrix_of(batch, 4, params)
        assert type(matrix) is xgb.DMatrix, params
    # A LIBSVM channel narrower than the validation's is widened, as matrix_of widens it.
    narrow = Batch(sp.csr_matrix(X[:, :2]), batch.y)
    assert train_matrix_of(narrow, 4, {"tree_method": "hist"}).num_col() == 4
    # max_bin reaches the matrix: a booster asking for the same bins trains on it.
    xgb.train({"tree_method": "hist", "max_bin": 16}, train_matrix_of(batch, 4, {"max_bin": 16}), 2)


def test_pipe_mode_reads_every_content_type(make_job):
    from smalgo.containers.pipe_feeder import PipeFeeder

    for relative, content_type in (
        ("data/csv/train.csv", "text/csv"),
        ("data/recordio_protobuf/train.pb", "application/x-recordio-protobuf"),
        ("data/parquet/train.parquet", "application/x-parquet"),
        ("data/libsvm/train.libsvm", "text/libsvm"),  # AWS's image never read LIBSVM from a pipe
    ):
        file_job, pipe_job = make_job().hyperparameters(num_round=3), make_job().hyperparameters(num_round=3)
        lay_out(file_job, "train", relative, content_type)
        pipe_job.channel("train", content_type, mode="Pipe")
        assert run_job(file_job) == 0, file_job.failure()
        with PipeFeeder(pipe_job.paths.data_dir, "train", (TESTDATA / relative).read_bytes()):
            assert run_job(pipe_job) == 0, pipe_job.failure()
        assert trained_booster(pipe_job).get_dump() == trained_booster(file_job).get_dump()


def test_evaluation_lines_are_the_containers(make_job, caplog):
    job = make_job().hyperparameters(num_round=3, eval_metric="rmse,mae")
    lay_out(job, "train", "abalone/data/train", "text/libsvm")
    lay_out(job, "validation", "abalone/data/validation", "text/libsvm")
    with caplog.at_level("INFO", logger="smalgo.metrics"):
        assert run_job(job) == 0, job.failure()
    lines = [m for m in caplog.messages if m.startswith("[")]
    assert len(lines) == 3
    import re

    for number, line in enumerate(lines):
        assert re.fullmatch(
            rf"\[{number}\]\ttrain-rmse:\d+\.\d{{5}}\ttrain-mae:\d+\.\d{{5}}\tvalidation-rmse:\d+\.\d{{5}}"
            rf"\tvalidation-mae:\d+\.\d{{5}}",
            line,
        ), line
        # The tuner's regex, on the line as CloudWatch shows it (tabs as #011).
        assert re.match(r".*\[[0-9]+\].*#011validation-mae:(\S+)", line.replace("\t", "#011"))


# ---------------------------------------------------------------------------------------------
# Hyperparameters, refused before any data is read


def refused(job: SageMakerJob, expected: str, **hp) -> None:
    job.hyperparameters(**hp)
    # A train channel whose file would fail to parse: the hyperparameters must fail first.
    job.channel("train", "text/libsvm", files={"bad": "not libsvm at all\n"})
    assert_user_failure(job, run_job(job), expected)


@pytest.mark.parametrize(
    ("hp", "expected"),
    [
        ({"max_depth": "3"}, "Missing required hyperparameter: num_round"),
        (
            {"num_round": "5", "num_class": "3", "objective": "binary:logistic"},
            "Hyperparameter num_class: 3 is only for multi:softmax and multi:softprob, and the objective is "
            "binary:logistic.",
        ),
        (
            {"num_round": "5", "eval_metric": "auc", "objective": "reg:squarederror"},
            "Hyperparameter eval_metric: auc is only for binary: and rank: objectives",
        ),
        ({"num_round": "5", "objective": "multi:softmax"}, "Hyperparameter num_class is required"),
        ({"num_round": "0"}, "Hyperparameter num_round: invalid value '0'"),
        ({"num_round": "5", "eta": "1.5"}, "Hyperparameter eta: invalid value '1.5'"),
        ({"num_round": "5", "learning_rate": "2"}, "Hyperparameter eta: invalid value '2'"),
        ({"num_round": "5", "subsample": "0"}, "Hyperparameter subsample: invalid value '0'"),
        (
            {"num_round": "5", "_tuning_objective_metric": "validation:nope"},
            "Hyperparameter _tuning_objective_metric: 'nope' is not an XGBoost metric",
        ),
        ({"num_round": "5", "eval_metric": "rmse,nope"}, "Hyperparameter eval_metric: 'nope' is not an XGBoost"),
        ({"num_round": "5", "_kfold": "1"}, "Hyperparameter _kfold: invalid value '1'"),
        ({"num_round": "5", "monotone_constraints": "(1,2)"}, "Hyperparameter monotone_constraints: invalid"),
        ({"num_round": "5", "eta": "0.1", "learning_rate": "0.2"}, "Hyperparameter eta is given twice"),
        ({"num_round": "5", "max_dept": "2"}, "Unknown hyperparameter max_dept"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name_before_reading_data(job, hp, expected):
    refused(job, expected, **hp)


@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob", "reg:squarederror"])
def test_awss_own_metrics_are_scikit_learns(objective):
    # AWS's image computes these with scikit-learn on XGBoost's margins; smalgo with numpy.
    from sklearn import metrics as sk

    from smalgo.algorithms.xgboost._metrics import AWS_METRICS, metric_value

    rng = np.random.default_rng(8)
    if objective == "multi:softprob":
        margins = rng.normal(size=(500, 4)).astype(np.float32)
        labels = rng.integers(0, 4, 500).astype(np.float32)
        labels[:5] = 5  # a class never predicted
        predicted = margins.argmax(axis=1)
    else:
        margins = rng.normal(size=500).astype(np.float32)
        labels = (rng.random(500) > 0.6).astype(np.float32) if objective.startswith("binary:") else rng.normal(size=500)
        predicted = (margins > 0).astype(np.int64)
    truth = labels.astype(np.int64)
    reference = {
        "accuracy": lambda: sk.accuracy_score(truth, predicted),
        "balanced_accuracy": lambda: sk.balanced_accuracy_score(truth, predicted),
        "f1": lambda: sk.f1_score(truth, predicted, average="macro", zero_division=0),
        "f1_macro": lambda: sk.f1_score(truth, predicted, average="macro", zero_division=0),
        "f1_binary": lambda: sk.f1_score(truth, predicted, average="binary", zero_division=0),
        "precision": lambda: sk.precision_score(truth, predicted, zero_division=0),
        "precision_macro": lambda: sk.precision_score(truth, predicted, average="macro", zero_division=0),
        "precision_micro": lambda: sk.precision_score(truth, predicted, average="micro", zero_division=0),
        "recall": lambda: sk.recall_score(truth, predicted, zero_division=0),
        "recall_macro": lambda: sk.recall_score(truth, predicted, average="macro", zero_division=0),
        "recall_micro": lambda: sk.recall_score(truth, predicted, average="micro", zero_division=0),
        "mse": lambda: sk.mean_squared_error(labels, margins),
        "r2": lambda: sk.r2_score(labels, margins),
    }
    import warnings

    for name in AWS_METRICS:
        if objective != "binary:logistic" and name in ("precision", "recall", "f1_binary"):
            continue  # binary scores: scikit-learn refuses other labels, as AWS's image then fails
        if objective == "multi:softprob" and name in ("mse", "r2"):
            continue
        if objective == "reg:squarederror" and name not in ("mse", "r2"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = reference[name]()
        assert metric_value(name, margins, labels) == pytest.approx(expected, rel=1e-6, abs=1e-12), (
            name
        )  # scikit-learn: float32 sums


def test_a_tuning_job_on_awss_own_metric_stops_early_on_it(job, caplog):
    job.hyperparameters(
        num_round=100,
        objective="binary:logistic",
        eval_metric="logloss",
        early_stopping_rounds=3,
        eta=0.9,
        max_depth=8,
        _tuning_objective_metric="validation:f1",
    )
    lay_out(job, "train", "abalone-binary/data/train", "text/libsvm")
    lay_out(job, "validation", "abalone-binary/data/validation", "text/libsvm")
    with caplog.at_level("INFO", logger="smalgo.metrics"):
        assert run_job(job) == 0, job.failure()
    lines = [m for m in caplog.messages if m.startswith("[")]
    assert all("\ttrain-logloss:" in line and "\tvalidation-f1:" in line for line in lines)
    f1 = [float(line.split("validation-f1:")[1].split("\t")[0]) for line in lines]
    assert len(lines) < 100 and int(np.argmax(f1)) == len(lines) - 4  # f1 is maximised
    assert trained_booster(job).num_boosted_rounds() == len(lines) - 3


def test_aliases_and_values_xgboost_3_no_longer_knows(caplog):
    hp = XGB.hyperparameters.parse(
        {
            "num_round": "2",
            "learning_rate": "0.1",
            "min_split_loss": "1",
            "reg_lambda": "2",
            "reg_alpha": "3",
            "objective": "reg:linear",
            "tree_method": "gpu_hist",
            "predictor": "gpu_predictor",
            "single_precision_histogram": "true",
        }
    )
    XGB.validate(hp)
    from smalgo.algorithms.xgboost import xgboost_parameters

    with caplog.at_level("INFO"):
        params = xgboost_parameters(hp, use_gpu=False)
    assert params["eta"] == 0.1 and params["gamma"] == 1 and params["lambda"] == 2 and params["alpha"] == 3
    assert params["objective"] == "reg:squarederror" and params["tree_method"] == "hist"
    assert "predictor" not in params and "single_precision_histogram" not in params and "device" not in params
    text = "\n".join(caplog.messages)
    assert "objective reg:linear is reg:squarederror" in text
    assert "tree_method gpu_hist is tree_method hist with device cuda" in text
    assert "no CUDA GPU is usable here" in text
    assert "Hyperparameter predictor=gpu_predictor is not passed" in text
    assert xgboost_parameters(hp, use_gpu=True)["device"] == "cuda"


# ---------------------------------------------------------------------------------------------
# Bad data


def test_a_libsvm_line_that_does_not_parse_names_file_and_line(job):
    job.hyperparameters(num_round=2)
    job.channel("train", "text/libsvm", files={"part/a.libsvm": "1 0:1 1:2\n0 0:2 1:x\n"})
    assert_user_failure(
        job,
        run_job(job),
        f"{job.paths.channel_dir('train') / 'part' / 'a.libsvm'}, line 2, column 9: the feature value is not a "
        "number in '0 0:2 1:x'",
    )


def test_the_damaged_line_in_aws_multiclass_validation_file_is_named(job):
    # Line 481 ends in "8:" with no value. XGBoost's own reader (AWS's image uses it) reads the
    # next line's label as that value, silently; ours refuses the line.
    job.hyperparameters(num_round=2, objective="multi:softmax", num_class=4)
    lay_out(job, "train", "abalone-multiclass/data/train", "text/libsvm")
    lay_out(job, "validation", "abalone-multiclass/data/validation", "text/libsvm")
    failure = assert_user_failure(job, run_job(job), str(job.paths.channel_dir("validation") / "abalone.validation"))
    assert "line 481, column 57: the feature value is not a number" in failure


def test_a_csv_header_line_is_refused_naming_it(job):
    job.hyperparameters(num_round=2)
    job.channel("train", "text/csv", files={"train.csv": "label,a,b\n1,2,3\n0,1,1\n"})
    failure = assert_user_failure(job, run_job(job), str(job.paths.channel_dir("train") / "train.csv"))
    assert "line 1" in failure and "'label'" in failure


def test_an_empty_file_among_the_data_is_no_data(job):
    job.hyperparameters(num_round=2)
    job.channel("train", "text/libsvm", files={"empty": (TESTDATA / "boston/data/empty").read_bytes()})
    assert_user_failure(job, run_job(job), "Channel train has no data")


def test_unlabelled_csv_is_refused(job):
    job.hyperparameters(num_round=2)
    job.channel("train", "text/csv;label_size=0", files={"train.csv": "1,2,3\n0,1,1\n"})
    assert_user_failure(job, run_job(job), "The train channel has no labels")


def test_early_stopping_without_validation_is_refused(job):
    job.hyperparameters(num_round=5, early_stopping_rounds=2)
    lay_out(job, "train", "abalone/data/train", "text/libsvm")
    assert_user_failure(job, run_job(job), "Hyperparameter early_stopping_rounds needs a validation channel")


# ---------------------------------------------------------------------------------------------
# Early stopping, checkpoints, SIGTERM, k-fold


def early_stopped_job(job: SageMakerJob, **extra) -> SageMakerJob:
    # eta 0.9 with deep trees overfits fast: the validation error turns up after a few rounds.
    job.hyperparameters(num_round=200, early_stopping_rounds=3, eta=0.9, max_depth=10, eval_metric="mae,rmse", **extra)
    lay_out(job, "train", "abalone/data/train", "text/libsvm")
    lay_out(job, "validation", "abalone/data/validation", "text/libsvm")
    return job


def test_early_stopping_keeps_the_best_iteration_for_serving(job, caplog):
    with caplog.at_level("INFO", logger="smalgo.metrics"):
        assert run_job(early_stopped_job(job)) == 0, job.failure()
    lines = [m for m in caplog.messages if m.startswith("[")]
    assert 4 <= len(lines) < 200
    # The last eval_metric (rmse) decides; its best round is 3 rounds before the last one.
    rmse = [float(line.split("validation-rmse:")[1]) for line in lines]
    best = int(np.argmin(rmse))
    assert best == len(lines) - 4
    booster = trained_booster(job)
    assert booster.num_boosted_rounds() == best + 1

    X, y, _ = reference_libsvm(data_files("abalone/data/validation"))
    loaded = load_model(job.paths.model_dir, "xgboost")
    served = loaded.predict(Batch(sp.csr_matrix(X, dtype=np.float32)))["score"]
    np.testing.assert_array_equal(served, booster.predict(xgb.DMatrix(X)))


def test_early_stopping_follows_the_tuning_objective_metric(job, caplog):
    with caplog.at_level("INFO", logger="smalgo.metrics"):
        assert run_job(early_stopped_job(job, _tuning_objective_metric="validation:mae")) == 0, job.failure()
    lines = [m for m in caplog.messages if m.startswith("[")]
    mae = [float(line.split("validation-mae:")[1].split("\t")[0]) for line in lines]
    assert int(np.argmin(mae)) == len(lines) - 4
    assert trained_booster(job).num_boosted_rounds() == len(lines) - 3


def test_an_algorithm_model_of_aws_with_a_best_iteration_predicts_with_it():
    X, y, _ = reference_libsvm(data_files("abalone/data/train"))
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(X, y), 10)
    booster.set_attr(best_iteration="4")
    model = _model.XGBoostModel([booster])
    np.testing.assert_array_equal(
        model.predict(Batch(sp.csr_matrix(X)))["score"], booster.predict(xgb.DMatrix(X), iteration_range=(0, 5))
    )


def checkpoint_job(job: SageMakerJob, checkpoints: Path, num_round: int = 12) -> SageMakerJob:
    job.hyperparameters(num_round=num_round, max_depth=4, eval_metric="rmse")
    lay_out(job, "train", "abalone/data/train", "text/libsvm")
    lay_out(job, "validation", "abalone/data/validation", "text/libsvm")
    job.write_config("checkpointconfig.json", {"LocalPath": str(checkpoints)})
    return job


def test_checkpoints_are_written_and_a_restart_resumes_to_the_uninterrupted_model(make_job, tmp_path):
    uninterrupted = checkpoint_job(make_job(), tmp_path / "ckpt-a")
    assert run_job(uninterrupted) == 0, uninterrupted.failure()
    assert sorted(os.listdir(tmp_path / "ckpt-a"), key=lambda name: int(name.split(".")[1])) == [
        f"xgboost-checkpoint.{i}" for i in range(7, 12)
    ]

    # "Killed" after 5 rounds: a job of 5 rounds leaves checkpoints 0..4; the restart with 12
    # rounds resumes from checkpoint 4 and trains the other 7.
    interrupted = checkpoint_job(make_job(), tmp_path / "ckpt-b", num_round=5)
    assert run_job(interrupted) == 0, interrupted.failure()
    (tmp_path / "ckpt-b" / "xgboost-checkpoint.4.sagemaker-uploading").write_bytes(b"being uploaded")
    restarted = checkpoint_job(make_job(), tmp_path / "ckpt-b")
    assert run_job(restarted) == 0, restarted.failure()
    assert trained_booster(restarted).get_dump() == trained_booster(uninterrupted).get_dump()


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import xgboost as xgb
    from smalgo.containers.job import run_training
    from smalgo.containers.paths import JobPaths

    original = xgb.train
    def slow_train(*args, callbacks=(), **kwargs):
        class Slow(xgb.callback.TrainingCallback):
            def after_iteration(self, model, epoch, evals_log):
                if epoch == 2:
                    open(sys.argv[2], "w").close()  # tells the test to send SIGTERM now
                time.sleep(0.2)
                return False
        return original(*args, callbacks=[*callbacks, Slow()], **kwargs)
    xgb.train = slow_train
    sys.exit(run_training(JobPaths(sys.argv[1]), "xgboost"))
    """
)


@pytest.mark.parametrize("save", ["true", "false"])
def test_sigterm_saves_the_model_when_asked(job, tmp_path, save):
    job.hyperparameters(num_round=1000, save_model_on_termination=save)
    lay_out(job, "train", "abalone/data/train", "text/libsvm")
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(job.paths.base), str(ready)])
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 128 + signal.SIGTERM
    if save == "true":
        assert "the model trained so far was saved (xgboost-model)" in job.failure()
        assert 3 <= trained_booster(job).num_boosted_rounds() < 1000
    else:
        assert "no model was saved" in job.failure() and job.model_files() == []


def test_kfold_writes_one_model_per_fold_and_the_cv_line(job, caplog):
    job.hyperparameters(num_round=4, _kfold=3, _num_cv_round=2, objective="binary:logistic", eval_metric="error")
    lay_out(job, "train", "abalone-binary/data/train", "text/libsvm")
    lay_out(job, "validation", "abalone-binary/data/validation", "text/libsvm")
    with caplog.at_level("INFO", logger="smalgo.metrics"):
        assert run_job(job) == 0, job.failure()
    assert job.model_files() == [f"xgboost-model-{k}" for k in range(6)]
    summaries = [m for m in caplog.messages if m.startswith("[4]\t")]
    assert len(summaries) == 3  # one per repeat, then the overall one
    assert all("train-error:" in line and "validation-error:" in line for line in summaries)
    # Served as an ensemble: the mean of the folds' predictions.
    X, _, _ = reference_libsvm(data_files("abalone-binary/data/validation"))
    model = load_model(job.paths.model_dir, "xgboost")
    boosters = [trained_booster(job, f"xgboost-model-{k}") for k in range(6)]
    expected = np.mean([b.predict(xgb.DMatrix(X)) for b in boosters], axis=0, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(model.predict(Batch(sp.csr_matrix(X)))["score"], expected)


def test_fold_indices_cover_every_row_once_per_repeat_and_stratify():
    from smalgo.algorithms.xgboost._train import fold_indices

    labels = np.array([0] * 30 + [1] * 6, dtype=np.float32)
    splits = list(fold_indices(labels, folds=3, repeats=2, stratified=True, seed=0))
    assert len(splits) == 6
    for repeat in (splits[:3], splits[3:]):
        held_out = np.concatenate([validation for _, validation in repeat])
        assert sorted(held_out) == list(range(36))
        for train, validation in repeat:
            assert set(train).isdisjoint(validation)
            assert (labels[validation] == 1).sum() == 2  # 6 positives over 3 folds


# ---------------------------------------------------------------------------------------------
# AWS's models, and pickles


AWS_MODELS = {
    "legacy-binary": TESTDATA / "models" / "saved_booster",
    "ubjson": TESTDATA / "abalone" / "models" / "libsvm_pickled",
}


@pytest.mark.parametrize("name", sorted(AWS_MODELS))
def test_the_containers_own_models_are_served_and_predict_what_xgboost_predicts(name):
    directory = AWS_MODELS[name]
    data = (directory / "xgboost-model").read_bytes()
    raw = xgb.Booster()
    if name == "legacy-binary":
        # XGBoost 3.1+ reads the legacy binary format no more; smalgo converts it to XGBoost's
        # JSON model (the conversion is checked tree for tree below).
        with pytest.raises(xgb.core.XGBoostError):
            xgb.Booster().load_model(bytearray(data))
        data = legacy_binary_to_json(data, name="aws")
    raw.load_model(bytearray(data))
    loaded = load_model(directory, "xgboost")  # as the image serves it
    assert load_model(directory).algorithm.name == "xgboost"  # recognised by its file name too
    width = raw.num_features()
    X = np.random.default_rng(0).uniform(0, 8, (20, width)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(Batch(X))["score"], raw.predict(xgb.DMatrix(X)))
    client = create_app(directory).test_client()
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in X).encode()
    answer = client.post("/invocations", data=body, content_type="text/csv", headers={"Accept": "application/json"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    scores = [row["score"] for row in answer.get_json()["predictions"]]
    np.testing.assert_array_equal(np.float32(scores), raw.predict(xgb.DMatrix(X)))


def test_a_model_tar_gz_beside_the_model_is_not_served_as_a_model(tmp_path, caplog):
    # The SageMaker SDK's local mode extracts model.tar.gz beside itself and mounts that folder.
    source = AWS_MODELS["ubjson"]
    shutil.copy(source / "xgboost-model", tmp_path / "xgboost-model")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as archive:
        archive.add(source / "xgboost-model", arcname="xgboost-model")
    with caplog.at_level("INFO"):
        boosters, names = _model.load_boosters(tmp_path, environ={})
    assert names == ["xgboost-model"] and len(boosters) == 1
    assert any("Ignoring the archive" in m and "model.tar.gz" in m for m in caplog.messages)


def test_the_legacy_binary_model_of_aws_is_what_its_bytes_say():
    booster = _model.read_booster(AWS_MODELS["legacy-binary"] / "xgboost-model")
    config = json.loads(booster.save_config())["learner"]
    assert config["objective"]["name"] == "multi:softprob" and config["learner_model_param"]["num_class"] == "3"
    assert booster.num_features() == 4 and booster.num_boosted_rounds() == 20
    first_tree = json.loads(booster.get_dump(dump_format="json")[0])
    assert first_tree["split"] == "f2" and first_tree["split_condition"] == np.float32(2.45)  # iris' petal length


def legacy_binary_of(booster: xgb.Booster) -> bytes:
    """The model in XGBoost 1.x's binary layout (as _legacy.py's docstring gives it), written
    from its JSON: the converter must give back the very same trees."""
    import struct

    learner = json.loads(booster.save_raw("json"))["learner"]
    param, model = learner["learner_model_param"], learner["gradient_booster"]["model"]
    base = float(json.loads(param["base_score"])[0])
    out = bytearray(
        struct.pack("<fIiiiIIIi", base, int(param["num_feature"]), int(param["num_class"]), 0, 0, 1, 0, 1, 1)
    )
    out += bytes(136 - len(out))
    for text in (learner["objective"]["name"], "gbtree"):
        out += struct.pack("<Q", len(text)) + text.encode()
    trees = model["trees"]
    head = struct.pack("<iiiiqii", len(trees), 1, int(param["num_feature"]), 0, 0, 0, 0)
    out += head + bytes(160 - len(head))
    for tree in trees:
        n = int(tree["tree_param"]["num_nodes"])
        head = struct.pack("<iiiiIi", 1, n, 0, 0, int(param["num_feature"]), 0)
        out += head + bytes(148 - len(head))
        for i in range(n):
            parent = tree["parents"][i]
            if parent == 2**31 - 1:
                parent = -1
            elif tree["left_children"][parent] == i:
                parent -= 2**31  # bit 31: a left child
            split = tree["split_indices"][i] | (tree["default_left"][i] << 31)
            left, right = tree["left_children"][i], tree["right_children"][i]
            out += struct.pack("<iiiIf", parent, left, right, split, tree["split_conditions"][i])
        for i in range(n):
            out += struct.pack("<fffi", tree["loss_changes"][i], tree["sum_hessian"][i], tree["base_weights"][i], 0)
    out += struct.pack(f"<{len(trees)}i", *model["tree_info"])
    return bytes(out)


@pytest.mark.parametrize("objective", ["reg:squarederror", "binary:logistic", "multi:softprob"])
def test_legacy_binary_models_convert_to_the_same_trees(objective, tmp_path):
    X = np.random.default_rng(4).normal(size=(300, 5)).astype(np.float32)
    y = {
        "reg:squarederror": X[:, 0] * 3 + 5,
        "binary:logistic": (X[:, 0] > 0.3).astype(np.float32),
        "multi:softprob": (X[:, 0] > 0).astype(np.float32) + (X[:, 1] > 0),
    }[objective]
    # One intercept for all classes: what the legacy format holds (XGBoost 3 fits one per class).
    extra = {"num_class": 3, "base_score": 0.5} if objective.startswith("multi:") else {}
    booster = xgb.train({"objective": objective, "max_depth": 3, **extra}, xgb.DMatrix(X, y), 6)
    (tmp_path / "xgboost-model").write_bytes(legacy_binary_of(booster))
    served = load_model(tmp_path, "xgboost").predict(Batch(X))["score"]
    np.testing.assert_array_equal(served, booster.predict(xgb.DMatrix(X)))
    assert _model.read_booster(tmp_path / "xgboost-model").get_dump() == booster.get_dump()


def test_a_pickled_model_is_refused_unless_the_operator_opts_in(monkeypatch, tmp_path):
    aws_pickle = TESTDATA / "models" / "pickled_model"
    monkeypatch.delenv(_model.PICKLE_VARIABLE, raising=False)
    with pytest.raises(ModelError, match="is a Python pickle. smalgo does not unpickle model files"):
        load_model(aws_pickle, "xgboost")

    # A pickle of a Booster of this XGBoost, served once the operator opts in.
    import pickle

    X, y, _ = reference_libsvm(data_files("abalone/data/train"))
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(X, y), 5)
    (tmp_path / "xgboost-model").write_bytes(pickle.dumps(booster))
    with pytest.raises(ModelError, match="is a Python pickle"):
        load_model(tmp_path, "xgboost")
    monkeypatch.setenv(_model.PICKLE_VARIABLE, "true")
    served = load_model(tmp_path, "xgboost").predict(Batch(sp.csr_matrix(X)))["score"]
    np.testing.assert_array_equal(served, booster.predict(xgb.DMatrix(X)))

    # AWS's pickle holds a Booster of the XGBoost 0.90 era, which XGBoost 3 cannot restore even
    # when unpickling is allowed: a clear refusal, naming the file.
    with pytest.raises(ModelError, match=f"{aws_pickle / 'xgboost-model'} cannot be unpickled with XGBoost"):
        load_model(aws_pickle, "xgboost")


def test_an_unreadable_model_file_is_named(tmp_path):
    (tmp_path / "xgboost-model").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=f"{tmp_path / 'xgboost-model'} is not an XGBoost model"):
        load_model(tmp_path, "xgboost")


# ---------------------------------------------------------------------------------------------
# Serving


def served(tmp_path: Path, objective: str, monkeypatch, outputs: str | None, **extra):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    if objective.startswith("multi:"):
        y = (X[:, 0] > 0).astype(np.float32) + (X[:, 1] > 0)
        extra = {"num_class": "3", **extra}
    elif objective.startswith("binary:"):
        y = (X[:, 0] > 0).astype(np.float32)
    else:
        y = (X[:, 0] * 3 + 5).astype(np.float32)
        if objective in ("reg:gamma", "reg:tweedie"):
            y = np.abs(y) + 0.1
        if objective == "reg:logistic":
            y = 1 / (1 + np.exp(-X[:, 0]))
    hp = XGB.hyperparameters.parse({"num_round": "5", "objective": objective, **extra})
    XGB.validate(hp)
    XGB.train(hp, InMemoryData({"train": (X, y)})).save(tmp_path)
    if outputs is None:
        monkeypatch.delenv(_model.OUTPUT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(_model.OUTPUT_VARIABLE, outputs)
    booster = trained_from(tmp_path)
    return create_app(tmp_path).test_client(), X[:4], booster.predict(xgb.DMatrix(X[:4]))


def trained_from(directory: Path) -> xgb.Booster:
    return load_booster(directory / "xgboost-model")


def post(client, body: bytes, content_type: str, accept: str = "application/json"):
    return client.post("/invocations", data=body, content_type=content_type, headers={"Accept": accept})


def csv_body(X: np.ndarray) -> bytes:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in X).encode()


def libsvm_body(X: np.ndarray, labelled: bool) -> bytes:
    return "".join(
        ("1 " if labelled else "") + " ".join(f"{k}:{float(v)!r}" for k, v in enumerate(row) if v) + "\n" for row in X
    ).encode()


def test_every_request_format_gives_xgboosts_prediction(tmp_path, monkeypatch):
    client, X, raw = served(tmp_path, "binary:logistic", monkeypatch, None)
    dense, sparse = __import__("io").BytesIO(), __import__("io").BytesIO()
    recordio.write_dense(dense, X)
    recordio.write_sparse(sparse, sp.csr_matrix(X))
    bodies = {
        "text/csv": csv_body(X),
        "text/libsvm": libsvm_body(X, labelled=False),
        "text/x-libsvm": libsvm_body(X, labelled=True),
        "application/x-recordio-protobuf": dense.getvalue(),
        "application/x-recordio-protobuf ": sparse.getvalue(),
        "application/json": json.dumps({"instances": [{"features": row.tolist()} for row in X]}).encode(),
        "application/jsonlines": "".join(json.dumps({"features": row.tolist()}) + "\n" for row in X).encode(),
    }
    for content_type, body in bodies.items():
        answer = post(client, body, content_type.strip())
        assert answer.status_code == 200, (content_type, answer.get_data(as_text=True))
        scores = [row["score"] for row in answer.get_json()["predictions"]]
        np.testing.assert_array_equal(np.float32(scores), raw, err_msg=content_type)
    answer = post(client, csv_body(X), "text/csv", accept="text/csv")
    assert answer.get_data(as_text=True) == "".join(f"{float(v)!r}\n" for v in raw)


def test_one_fewer_csv_feature_is_accepted_as_the_container_does_two_fewer_is_not(tmp_path, monkeypatch):
    client, X, _ = served(tmp_path, "reg:squarederror", monkeypatch, None)
    booster = trained_from(tmp_path)
    answer = post(client, csv_body(X[:, :3]), "text/csv")
    assert answer.status_code == 200
    expected = booster.predict(xgb.DMatrix(X[:, :3]), validate_features=False)
    np.testing.assert_array_equal(np.float32([r["score"] for r in answer.get_json()["predictions"]]), expected)
    answer = post(client, csv_body(X[:, :2]), "text/csv")
    assert answer.status_code == 400
    assert "text/csv body has 2 features per record; the model takes 4" in answer.get_json()["error"]
    answer = post(client, b"1 0:1 9:2\n", "text/libsvm")
    assert answer.status_code == 400
    assert "text/libsvm body has feature index 9; the model's features are 0 to 3" in answer.get_json()["error"]
    answer = post(client, b"1 0:1 x\n", "text/libsvm")
    assert answer.status_code == 400 and "text/libsvm body, line 1, column 7" in answer.get_json()["error"]


SELECTABLE = {
    # objective: (outputs asked, {key: function of the raw predictions})
    "binary:logistic": {
        "predicted_label": lambda p: (p > 0.5).astype(np.float32),
        "labels": lambda p: np.tile([0.0, 1.0], (len(p), 1)),
        "probability": lambda p: p,
        "probabilities": lambda p: np.column_stack([1 - p, p]),
        "raw_score": lambda p: p,
        "raw_scores": lambda p: np.column_stack([1 - p, p]),
        "predicted_score": None,
    },
    "binary:logitraw": {
        "predicted_label": lambda p: (p > 0).astype(np.float32),
        "labels": lambda p: np.tile([0.0, 1.0], (len(p), 1)),
        "raw_score": lambda p: p,
        "raw_scores": lambda p: np.column_stack([1 - p, p]),
        "probability": None,
        "probabilities": None,
    },
    "binary:hinge": {"predicted_label": lambda p: p, "raw_score": lambda p: p, "probability": None},
    "multi:softmax": {
        "predicted_label": lambda p: p,
        "labels": lambda p: np.tile([0.0, 1.0, 2.0], (len(p), 1)),
        "raw_score": lambda p: p,
        "probabilities": None,
    },
    "multi:softprob": {
        "predicted_label": lambda p: p.argmax(axis=1),
        "labels": lambda p: np.tile([0.0, 1.0, 2.0], (len(p), 1)),
        "probability": lambda p: p.max(axis=1),
        "probabilities": lambda p: p,
        "raw_score": lambda p: p.max(axis=1),
        "raw_scores": lambda p: p,
        "predicted_score": None,
    },
    "reg:squarederror": {"predicted_score": lambda p: p, "predicted_label": None},
    "reg:logistic": {"predicted_score": lambda p: p, "probability": None},
    "reg:gamma": {"predicted_score": lambda p: p},
    "reg:tweedie": {"predicted_score": lambda p: p},
}


@pytest.mark.parametrize("objective", sorted(SELECTABLE))
def test_each_selectable_output_per_objective(tmp_path, monkeypatch, objective):
    rules = SELECTABLE[objective]
    keys = list(rules)
    # Spelled as users do: blanks and capitals are fine.
    client, X, raw = served(tmp_path, objective, monkeypatch, ", ".join(k.upper() for k in keys))
    rows = post(client, csv_body(X), "text/csv").get_json()["predictions"]
    for key, rule in rules.items():
        got = np.array([row[key] for row in rows], dtype=np.float64)
        if rule is None:  # not given by this objective: NaN, as the container answers
            assert np.isnan(got).all(), key
        else:
            np.testing.assert_allclose(got, np.asarray(rule(raw), dtype=np.float64), rtol=1e-6, err_msg=key)
    # JSON Lines: the same objects, one a line; CSV: the keys in order, vectors quoted.
    lines = post(client, csv_body(X), "text/csv", accept="application/jsonlines").get_data(as_text=True).splitlines()
    assert [json.loads(line) for line in lines] == json.loads(json.dumps(rows))
    csv_lines = post(client, csv_body(X), "text/csv", accept="text/csv").get_data(as_text=True).splitlines()
    assert len(csv_lines) == len(X)
    for rule in rules.values():
        if rule is not None and np.asarray(rule(raw)).ndim == 2:
            assert '"[' in csv_lines[0]
    # RecordIO: each key a float32 tensor in the record's label map.
    body = post(client, csv_body(X), "text/csv", accept="application/x-recordio-protobuf").get_data()
    decoded = recordio.decode_response(body)
    assert set(decoded) == set(keys) and all(len(values) == len(X) for values in decoded.values())


def test_an_empty_body_is_answered_204_as_the_container_does(tmp_path, monkeypatch):
    client, X, _ = served(tmp_path, "reg:squarederror", monkeypatch, None)
    answer = post(client, b"", "text/csv")
    assert answer.status_code == 204 and answer.get_data() == b""
    assert post(client, csv_body(X), "text/csv").status_code == 200


# ---------------------------------------------------------------------------------------------
# Formats


def test_the_libsvm_decoder_reads_what_scikit_learn_reads():
    path = TESTDATA / "abalone" / "data" / "train" / "abalone.train_0"
    X, y, w = decode_libsvm(path.read_bytes(), name=str(path))
    X_ref, y_ref = load_svmlight_file(str(path), zero_based=True, dtype=np.float32)
    assert w is None and X.shape == (1461, 9)
    np.testing.assert_array_equal(X.toarray(), X_ref.toarray())
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"1 0:1\nx 1:2\n", "f, line 2, column 1: the label is not a number in 'x 1:2'"),
        (b"1 a:2\n", "f, line 1, column 3: the feature index is not a non-negative integer"),
        (b"1 2\n", "f, line 1, column 3: a feature must be written index:value"),
        (b"1 qid:3 1:2\n", "f, line 1, column 3: qid (ranking groups) is not supported"),
        (b"1:x 1:2\n", "f, line 1, column 3: the instance weight (after 'label:') is not a number"),
    ],
)
def test_libsvm_errors_name_the_line_and_column(text, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_libsvm(text, name="f")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The digit loops stop at the bytes either side of '0'..'9' ('/' and ':') and at bytes
        # past ASCII (they wrap in the loops' one unsigned compare): the same errors as before.
        (b"1/ 0:1\n", "f, line 1, column 1: the label is not a number"),
        (b"1 0/:1\n", "f, line 1, column 3: the feature index is not a non-negative integer"),
        (b"1 0:1/\n", "f, line 1, column 5: the feature value is not a number"),
        (b"1 0:1.5/\n", "f, line 1, column 5: the feature value is not a number"),
        (b"1 0:1\xc3\xa9\n", "f, line 1, column 5: the feature value is not a number"),
        (b"1 \xd9:1\n", "f, line 1, column 3: the feature index is not a non-negative integer"),
        (b"1 0:1:2\n", "f, line 1, column 5: the feature value is not a number"),
        (b"1 2147483647:1\n", "f, line 1, column 3: the feature index is not a non-negative integer"),
    ],
)
def test_libsvm_digits_end_where_they_did(text, message):
    with pytest.raises(UserError, match=message):
        decode_libsvm(text, name="f")


def test_libsvm_multi_digit_indices_and_values():
    X, y, _ = decode_libsvm(b"12 10:0.50 9:09 2147483646:7 0:-0.000123456789\n")
    assert y.tolist() == [12.0] and X.shape == (1, 2147483647)
    assert X.indices.tolist() == [0, 9, 10, 2147483646]
    assert X.data.tolist() == [np.float32(-0.000123456789), 9.0, 0.5, 7.0]


def test_libsvm_threads_split_at_line_starts(monkeypatch):
    """A payload split between threads (several segments) reads as one does, whatever the split
    points: CRLF and CR line ends, comments, blank lines, weights, no final line end; and an
    error in a later segment names the line counted from the payload's start."""
    from smalgo.algorithms.formats import csv as csv_module

    rng = np.random.default_rng(3)
    lines = []
    for row in range(300):
        label = f"{rng.integers(0, 3)}" + (f":{rng.random():.3g}" if row % 7 == 0 else "")
        pairs = " ".join(f"{k}:{rng.standard_normal():.9g}" for k in sorted(rng.choice(40, 5, replace=False)))
        end = ("\r\n", "\n", "\r")[row % 3]
        extra = ("  # a comment 1:2" if row % 11 == 0 else "") + ("\n\n" if row % 13 == 0 else "")
        lines.append(f"{label} {pairs}{extra}{end}")
    payload = "".join(lines).rstrip("\r\n").encode()  # no line end after the last line
    monkeypatch.setenv("SMALGO_CSV_THREADS", "1")
    X1, y1, w1 = decode_libsvm(payload)
    assert X1.shape[0] == 300 and w1 is not None
    monkeypatch.setattr(csv_module, "_MIN_SEGMENT_BYTES", 1)
    for threads in (2, 3, 5, 8, 13):
        monkeypatch.setenv("SMALGO_CSV_THREADS", str(threads))
        assert len(csv_module._segment_bounds(np.frombuffer(payload, np.uint8), 0, len(payload))) == threads + 1
        X, y, w = decode_libsvm(payload)
        for a, b in ((X.indptr, X1.indptr), (X.indices, X1.indices), (X.data, X1.data), (y, y1), (w, w1)):
            np.testing.assert_array_equal(a, b)
        assert X.shape == X1.shape
    # Line 250 (of the payload; blank lines counted) made bad, in the last segment.
    text = payload.decode()
    numbered = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    numbered[249] = "x " + numbered[249].split(" ", 1)[1]
    with pytest.raises(UserError, match="f, line 250, column 1: the label is not a number"):
        decode_libsvm("\n".join(numbered).encode(), name="f")


def test_libsvm_numbers_are_read_correctly_rounded():
    values = ["0.1", "1e-45", "3.4028235e38", "-2.5E-3", "123456789012345678901234", "nan", "-inf", "1e400"]
    X, y, _ = decode_libsvm(("0 " + " ".join(f"{k}:{v}" for k, v in enumerate(values)) + "\n").encode())
    expected = np.array([np.float32(float(v)) for v in values], dtype=np.float32)
    np.testing.assert_array_equal(X.toarray()[0], expected)
