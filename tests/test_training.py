"""The shared training driver (smalgo.algorithms.training), on a toy mini-batch algorithm: a
model that predicts the running mean of the labels it has seen, with validation and test
channels, epochs, callbacks and early stopping."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CountingData

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.contract import Hyperparameters, Model, Output, SampleJob, StreamingAlgorithm
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.content_types import RECORDIO_PROTOBUF
from smalgo.algorithms.hyperparameters import Hyperparameter, Schema
from smalgo.algorithms.metrics import Metric, MetricWriter
from smalgo.algorithms.model_files import ModelFiles
from smalgo.algorithms.training import EarlyStopping, TrainingCallback


class MeanModel:
    def __init__(self, mean: float, feature_dim: int) -> None:
        self.mean = mean
        self._feature_dim = feature_dim

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        return {"score": np.full(batch.n_rows, self.mean, dtype=np.float32)}

    def save(self, model_dir) -> None:
        raise NotImplementedError


class MeanState:
    """Each pass moves the mean halfway towards the labels' mean: the error halves per epoch."""

    def __init__(self, feature_dim: int) -> None:
        self.feature_dim = feature_dim
        self.mean = 0.0
        self.sum = self.count = 0.0
        self.batches = 0

    def update(self, batch: Batch) -> None:
        assert batch.y is not None
        self.sum += float(batch.y.sum())
        self.count += batch.n_rows
        self.batches += 1

    def end_epoch(self) -> list[Metric]:
        target = self.sum / self.count
        self.mean += (target - self.mean) / 2
        self.sum = self.count = 0.0
        return [Metric("distance", abs(target - self.mean))]

    def current_model(self) -> MeanModel:
        return self.finalize()[0]

    def finalize(self) -> tuple[MeanModel, list[Metric]]:
        return MeanModel(self.mean, self.feature_dim), [Metric("final_mean", self.mean, kind="score")]


class SquaredError:
    def __init__(self, model: MeanModel) -> None:
        self.model, self.total, self.rows = model, 0.0, 0

    def add(self, batch: Batch) -> None:
        assert batch.y is not None
        self.total += float(((batch.y - self.model.mean) ** 2).sum())
        self.rows += batch.n_rows

    def metrics(self) -> list[Metric]:
        return [Metric("mse", self.total / self.rows)] if self.rows else []


class RunningMean(StreamingAlgorithm):
    name = "running-mean"
    title = "running mean"
    hyperparameters = Schema(
        (
            Hyperparameter("feature_dim", "int", required=True, minimum=1),
            Hyperparameter("epochs", "int", default=1, minimum=1),
            Hyperparameter("mini_batch_size", "int", default=10, minimum=1),
        )
    )
    channels = {"train": True, "validation": False, "test": False}
    content_types = (RECORDIO_PROTOBUF,)
    outputs = (Output("score"),)
    model_files = ("model.json",)
    sample_job = SampleJob(hyperparameters={}, bad_hyperparameter=("epochs", "0"))

    def start(self, hp: Hyperparameters) -> MeanState:
        return MeanState(hp["feature_dim"])

    def scorer(self, model: Model, hp: Hyperparameters, channel: str) -> SquaredError:
        assert isinstance(model, MeanModel)
        return SquaredError(model)

    def load_model(self, files: ModelFiles) -> Model:
        raise NotImplementedError


ALGORITHM = RunningMean()


def data(**channels) -> CountingData:
    X = np.zeros((40, 2), dtype=np.float32)
    return CountingData({name: (X, np.full(40, label, dtype=np.float32)) for name, label in channels.items()})


def metric_lines(caplog) -> list[str]:
    return [m for m in caplog.messages if "_metric:" in m]


def train(channels: InMemoryData, *, callbacks=(), **raw):
    hp = ALGORITHM.hyperparameters.parse({"feature_dim": 2, **raw})
    return ALGORITHM.train(hp, channels, metrics=MetricWriter("algo-2"), callbacks=callbacks)


def test_epochs_batches_and_metric_lines_in_order(caplog):
    channels = data(train=8.0, validation=6.0, test=4.0)
    with caplog.at_level("INFO"):
        model = train(channels, epochs=2, mini_batch_size=15)
    assert model.mean == 6.0  # 0 -> 4 -> 6
    # Validation: once a pass, then once more for the final model (the tuner's ":final" metrics).
    assert channels.passes == {"train": 2, "validation": 3, "test": 1}
    lines = metric_lines(caplog)
    assert lines[:3] == [
        "#quality_metric: host=algo-2, epoch=0, train distance <loss>=4.0",
        "#progress_metric: host=algo-2, completed 50 % of epochs",
        "#quality_metric: host=algo-2, epoch=0, validation mse <loss>=4.0",
    ]
    assert lines[3:6] == [
        "#quality_metric: host=algo-2, epoch=1, train distance <loss>=2.0",
        "#progress_metric: host=algo-2, completed 100 % of epochs",
        "#quality_metric: host=algo-2, epoch=1, validation mse <loss>=0.0",
    ]
    assert lines[6].startswith("#throughput_metric: host=algo-2, train throughput=")
    assert lines[7:] == [
        "#quality_metric: host=algo-2, train final_mean <score>=6.0",
        "#quality_metric: host=algo-2, validation mse <loss>=0.0",
        "#quality_metric: host=algo-2, test mse <loss>=4.0",
    ]


def test_no_validation_scoring_without_the_channel(caplog):
    channels = data(train=8.0)
    with caplog.at_level("INFO"):
        train(channels, epochs=3)
    assert channels.passes == {"train": 3}
    assert not any("validation" in line or " test " in line for line in metric_lines(caplog))


def test_callbacks_hear_every_pass_with_its_metrics_and_the_final_model():
    heard = []

    class Recorder(TrainingCallback):
        def before_training(self, state):
            heard.append(("before", state.mean))

        def after_epoch(self, epoch, state, metrics):
            heard.append((epoch, dict(metrics)))
            return False

        def after_training(self, model):
            heard.append(("after", model.mean))

    train(data(train=8.0, validation=8.0), callbacks=[Recorder()], epochs=2)
    assert heard == [
        ("before", 0.0),
        (0, {"train:distance": 4.0, "validation:mse": 16.0}),
        (1, {"train:distance": 2.0, "validation:mse": 4.0}),
        ("after", 6.0),
    ]


def test_early_stopping_ends_training_when_the_metric_stops_improving(caplog):
    channels = data(train=8.0, validation=0.0)  # the validation error grows every pass
    stopping = EarlyStopping("validation:mse", patience=2)
    with caplog.at_level("INFO"):
        model = train(channels, callbacks=[stopping], epochs=10)
    assert stopping.best_epoch == 0 and stopping.stopped_epoch == 2
    assert channels.passes["train"] == 3 and model.mean == 7.0  # 4, 6, 7: stopped after the third pass
    assert "Early stopping after epoch 2: validation:mse has not improved" in caplog.text


def test_early_stopping_on_a_score_and_with_min_delta():
    stopping = EarlyStopping("train:gain", patience=1, maximize=True, min_delta=0.5)
    assert not stopping.after_epoch(0, None, {"train:gain": 1.0})
    assert not stopping.after_epoch(1, None, {"train:gain": 2.0})
    assert stopping.after_epoch(2, None, {"train:gain": 2.4})  # not better by more than 0.5
    assert not stopping.after_epoch(3, None, {"other": 1.0})  # a metric it does not watch
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("train:gain", patience=0)


def test_an_empty_train_channel_is_a_user_error():
    empty = InMemoryData({"train": (np.zeros((0, 2), np.float32), np.zeros(0, np.float32))})
    with pytest.raises(UserError, match="The train channel has no records"):
        train(empty)


def test_an_empty_test_channel_warns_and_reports_nothing(caplog):
    channels = InMemoryData(
        {
            "train": (np.zeros((5, 2), np.float32), np.ones(5, np.float32)),
            "test": (np.zeros((0, 2), np.float32), np.zeros(0, np.float32)),
        }
    )
    with caplog.at_level("INFO"):
        train(channels)
    assert "The test channel has no records; no test metrics." in caplog.text
    assert not any(" test " in line for line in metric_lines(caplog))
