"""The metric definitions each algorithm publishes (`smalgo metric-definitions`, smalgo.sagemaker):
their form, the command that prints them, and that every regex reads a line of a real job's log."""

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import clustered_rows, csv_text

from smalgo.algorithms.linear_learner import OBJECTIVE_PATTERN
from smalgo.algorithms.linear_learner._settings import OBJECTIVE_METRICS
from smalgo.algorithms.metrics import (
    Metric,
    MetricWriter,
    evaluation_definition,
    progress_definition,
    quality_definition,
    throughput_definition,
)
from smalgo.algorithms.registry import ALGORITHMS
from smalgo.algorithms.xgboost import METRICS as XGBOOST_METRICS
from smalgo.algorithms.xgboost import TUNING_METRICS
from smalgo.algorithms.xgboost._metrics import AWS_METRICS
from smalgo.containers import cli
from smalgo.containers.job import run_training
from smalgo.recordio import write_dense

# The most a MetricDefinitions list may hold, and the lengths of a name and a regex (the
# SageMaker API's MetricDefinitionList, MetricName and MetricRegex; spec 1.11).
MAX_DEFINITIONS, MAX_NAME, MAX_REGEX = 40, 255, 500
RECORDIO = "application/x-recordio-protobuf"


def definitions_of(algorithm: str) -> list[dict[str, str]]:
    return [definition.as_dict() for definition in ALGORITHMS[algorithm].metric_definitions]


# --------------------------------------------------------------------------- the definitions


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_definitions_are_valid_metric_definitions(algorithm):
    definitions = definitions_of(algorithm)
    names = [definition["Name"] for definition in definitions]
    assert definitions, f"{algorithm} publishes no metric definitions"
    assert len(definitions) <= MAX_DEFINITIONS
    assert len(set(names)) == len(names), names
    for definition in definitions:
        assert 1 <= len(definition["Name"]) <= MAX_NAME
        assert 1 <= len(definition["Regex"]) <= MAX_REGEX
        # "<channel>:<metric>", the platform's form (linear learner's ":final" ones too).
        assert re.fullmatch(r"(train|validation|test):[a-z0-9_]+(:final)?", definition["Name"]), definition
        # SageMaker takes the value from the one capture group.
        assert re.compile(definition["Regex"]).groups == 1, definition


def test_the_platforms_names_where_the_spec_lists_them():
    """Spec 4.1, 4.2, 4.4, 4.5.5: the tuning metrics AWS documents for each algorithm are there."""
    names = {algorithm: {d["Name"] for d in definitions_of(algorithm)} for algorithm in ALGORITHMS}
    assert {"test:msd", "test:ssd", "train:msd"} <= names["kmeans"]
    assert {
        "test:rmse",
        "test:binary_classification_accuracy",
        "test:binary_classification_cross_entropy",
        "test:binary_f_beta",
    } <= names["factorization-machines"]
    for channel in ("test", "validation"):
        assert {
            f"{channel}:{metric}"
            for metric in (
                "absolute_loss",
                "binary_classification_accuracy",
                "binary_f_beta",
                "dcg",
                "macro_f_beta",
                "macro_precision",
                "macro_recall",
                "mse",
                "multiclass_accuracy",
                "multiclass_top_k_accuracy",
                "objective_loss",
                "precision",
                "recall",
                "roc_auc_score",
            )
        } <= names["linear-learner"]
    assert {"validation:rmse", "train:objective_loss", "train:progress"} <= names["linear-learner"]
    assert names["xgboost"] == {f"validation:{metric}" for metric in TUNING_METRICS}
    # Every tuning metric is one a job computes (XGBoost's own or smalgo's, as AWS's image).
    assert set(TUNING_METRICS) <= set(XGBOOST_METRICS) | set(AWS_METRICS)


def test_the_definitions_read_the_writers_lines():
    """The regexes and the lines come from one module: each regex reads what MetricWriter writes,
    and an after-training definition does not read a pass's line (nor the other way round)."""
    writer = MetricWriter("algo-3")
    final = writer.quality("test", Metric("msd", 0.25))
    per_pass = writer.quality("train", Metric("msd", 1.5), epoch=4)
    assert re.search(quality_definition("test", "msd", "loss").regex, final).group(1) == "0.25"
    assert re.search(quality_definition("train", "msd", "loss", per_epoch=True).regex, per_pass).group(1) == "1.5"
    assert not re.search(quality_definition("train", "msd", "loss").regex, per_pass)
    assert not re.search(quality_definition("test", "msd", "loss", per_epoch=True).regex, final)
    assert not re.search(quality_definition("test", "msd", "score").regex, final)
    assert re.search(progress_definition().regex, writer.progress(50.0)).group(1) == "50"
    assert re.search(throughput_definition().regex, writer.throughput("train", 1234.5)).group(1) == "1234.5"
    line = writer.evaluation(3, {"train": {"auc": [0.5, 0.9]}, "validation": {"auc": [0.8], "logloss": [0.3]}})
    assert re.search(evaluation_definition("validation", "auc").regex, line).group(1) == "0.80000"
    assert re.search(evaluation_definition("validation", "logloss").regex, line).group(1) == "0.30000"
    assert not re.search(evaluation_definition("validation", "error").regex, line)
    with pytest.raises(ValueError, match="loss or score"):
        quality_definition("test", "msd", "lost")


def test_linear_learner_objective_pattern_reads_every_losss_line():
    for objective in OBJECTIVE_METRICS.values():
        assert re.fullmatch(OBJECTIVE_PATTERN, objective), objective


# --------------------------------------------------------------------------- the command


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_metric_definitions_command_prints_them_as_json(algorithm, capsys):
    assert cli.main(["metric-definitions", algorithm]) == 0
    assert json.loads(capsys.readouterr().out) == definitions_of(algorithm)


def test_metric_definitions_command_as_installed():
    result = subprocess.run(
        [sys.executable, "-m", "smalgo.containers", "metric-definitions", "XGBoost"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == definitions_of("xgboost")
    assert printed[1] == {"Name": "validation:auc", "Regex": r".*\[[0-9]+\].*validation-auc:([^\s#]+)"}


def test_metric_definitions_command_with_an_unknown_algorithm(capsys):
    assert cli.main(["metric-definitions", "kmeans++"]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("smalgo metric-definitions: Unknown algorithm 'kmeans++'; this smalgo provides: ")
    assert "linear-learner" in captured.err
    with pytest.raises(SystemExit):
        cli.main(["metric-definitions"])  # the algorithm is required (argparse's usage error)


# --------------------------------------------------------------------------- real jobs' logs


def recordio(X, labels) -> bytes:
    buffer = io.BytesIO()
    write_dense(buffer, X, labels)
    return buffer.getvalue()


def labelled_rows(kind: str, n_rows: int = 240, n_features: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    scores = X @ rng.normal(size=(n_features, 3))
    labels = {
        "binary": scores[:, 0] > 0,
        "regression": scores[:, 0] + rng.normal(0.0, 0.1, n_rows),
        "multiclass": scores.argmax(axis=1),
    }[kind]
    return X, labels.astype(np.float32)


def channels_of(kind: str, names: tuple[str, ...], encode) -> dict[str, bytes | str]:
    """Channel name -> file content: train on 160 rows, each other channel on 40 of the rest."""
    X, y = labelled_rows(kind)
    parts = {"train": slice(0, 160), "validation": slice(160, 200), "test": slice(200, 240)}
    return {name: encode(X[parts[name]], y[parts[name]]) for name in names}


def labelled_csv(X, y) -> str:
    return csv_text(X, y)


# algorithm -> its jobs: (hyperparameters, content type, channel -> file), with the channels and
# settings that make it print every metric it defines.
def jobs(algorithm: str) -> list[tuple[dict, str, dict]]:
    if algorithm == "kmeans":
        X = clustered_rows(n_rows=300)
        hp = {"k": 3, "feature_dim": 5, "epochs": 2, "mini_batch_size": 100, "eval_metrics": '["msd", "ssd"]'}
        return [(hp, "text/csv;label_size=0", {"train": csv_text(X), "test": csv_text(X[:60])})]
    if algorithm == "pca":
        X = clustered_rows(n_rows=300)
        hp = {"num_components": 2, "feature_dim": 5, "mini_batch_size": 100}
        return [(hp, "text/csv;label_size=0", {"train": csv_text(X), "test": csv_text(X[:60])})]
    if algorithm == "linear-learner":
        all_channels = ("train", "validation", "test")
        return [
            (
                {"predictor_type": predictor_type, "feature_dim": 5, "epochs": 2, "mini_batch_size": 40, **extra},
                RECORDIO,
                channels_of(kind, all_channels, recordio),
            )
            for predictor_type, kind, extra in (
                ("binary_classifier", "binary", {}),
                ("regressor", "regression", {}),
                ("multiclass_classifier", "multiclass", {"num_classes": 3}),
            )
        ]
    if algorithm == "factorization-machines":
        return [
            (
                {"predictor_type": predictor_type, "feature_dim": 5, "num_factors": 2, "epochs": 2},
                RECORDIO,
                channels_of(kind, ("train", "test"), recordio),
            )
            for predictor_type, kind in (("binary_classifier", "binary"), ("regressor", "regression"))
        ]
    if algorithm == "xgboost":
        # Each objective with the tuning metrics it takes, on a validation channel.
        return [
            (
                {"num_round": 2, "max_depth": 2, "objective": objective, "eval_metric": metrics, **extra},
                "text/csv",
                channels_of(kind, ("train", "validation"), labelled_csv),
            )
            for objective, kind, metrics, extra in (
                ("binary:logistic", "binary", "accuracy,auc,error,f1,logloss", {}),
                ("multi:softprob", "multiclass", "merror,mlogloss", {"num_class": 3}),
                ("reg:squarederror", "regression", "mae,mse,rmse", {}),
                ("rank:pairwise", "binary", "map,ndcg", {}),
            )
        ]
    raise AssertionError(f"no jobs for {algorithm}: add them here so that its metric definitions are tested")


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_published_regex_reads_a_line_of_a_real_jobs_log(algorithm, make_job, capsys):
    """Each algorithm's jobs run as SageMaker runs them (the job's own log set-up, on stderr);
    every definition's regex matches at least one line and captures a number, and reads only the
    lines it means: a pass's lines (epoch=) or the lines after training, not both."""
    log = []
    for hyperparameters, content_type, channels in jobs(algorithm):
        job = make_job().hyperparameters(**hyperparameters)
        for name, content in channels.items():
            job.channel(name, content_type, files={"part-0": content})
        capsys.readouterr()
        assert run_training(job.paths, algorithm) == 0, job.failure()
        log += capsys.readouterr().err.splitlines()
    assert any(line.startswith("[") and " INFO " in line for line in log), "not the job's log format"
    # SageMaker reads the log as CloudWatch stores it, a tab shown as #011 (XGBoost's lines).
    for form, lines in (("as printed", log), ("as CloudWatch stores it", [line.replace("\t", "#011") for line in log])):
        for definition in definitions_of(algorithm):
            regex = re.compile(definition["Regex"])
            matched = [(line, match) for line in lines if (match := regex.search(line))]
            assert matched, f"{definition} matches no line of the {algorithm} jobs' log ({form})"
            for line, match in matched:
                float(match.group(1))  # a number, as SageMaker parses it
                if "#quality_metric" in line:
                    per_pass = "epoch=" in definition["Regex"]
                    assert ("epoch=" in line) == per_pass, (definition, line)
