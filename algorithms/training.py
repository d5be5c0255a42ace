"""The training driver every mini-batch algorithm runs on.

    state = algorithm.start(hp)
    for each epoch:                      # one pass over the train channel (File or Pipe mode)
        for each mini-batch: state.update(batch)
        (several hosts: the state is all-reduced here, through `collective`)
        train metrics, progress,
        validation metrics of state.current_model(), callbacks (early stopping, checkpoints)
    model, final train metrics = state.finalize()
    throughput; validation and test metrics of the final model

Metric lines go through the job's MetricWriter in the platform's form (metrics.py). The driver
knows no algorithm: what it streams, scores and reports comes from the StreamingAlgorithm and its
StreamingState (contract.py).

Several hosts: `collective` is the one seam for them (runtime/collective.py). On one host it is
`SingleHost`, which exchanges nothing. With several (`Hosts`, on xgboost.collective), each host
streams its own share of the rows, and at the end of every pass the state combines what the
hosts saw (`StreamingState.combine`: PCA sums its statistics, k-means gathers every host's
streaming centers), which is why states keep sums and averages; the row counts, and the
validation and test scorers' sums (`Scorer.combine`), are summed too, so every host logs the same
job-wide values and ends with the same model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from .data import TrainingData
from .errors import UserError
from .hyperparameters import tuning_objective
from .metrics import Metric, MetricWriter, progress_definition, throughput_definition
from .runtime.collective import SingleHost

if TYPE_CHECKING:
    from .contract import Hyperparameters, Model, StreamingAlgorithm, StreamingState

logger = logging.getLogger(__name__)


class TrainingCallback:
    """Hooks into the driver's loop, in the manner of XGBoost's TrainingCallback. Every method
    does nothing by default; override the ones needed."""

    def before_training(self, state: StreamingState) -> None:
        """Called once, before the first pass."""

    def after_epoch(self, epoch: int, state: StreamingState, metrics: Mapping[str, float]) -> bool:
        """Called after each pass with its metrics by "channel:name" ("train:msd",
        "validation:rmse"); returning True ends training after this pass."""
        return False

    def after_training(self, model: Model) -> None:
        """Called once with the finalised model, before it is scored on the test channel."""


class EarlyStopping(TrainingCallback):
    """Stops training when `metric` ("channel:name") has not improved by more than
    `min_delta` for `patience` passes in a row. `maximize` for scores, else a loss. With
    `relative`, min_delta is a fraction of the best value so far (linear learner's
    early_stopping_tolerance)."""

    def __init__(
        self, metric: str, patience: int, *, min_delta: float = 0.0, maximize: bool = False, relative: bool = False
    ) -> None:
        if patience < 1:
            raise ValueError("patience must be at least 1")
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.maximize = maximize
        self.relative = relative
        self.best: float | None = None
        self.best_epoch = -1
        self.stopped_epoch: int | None = None

    def after_epoch(self, epoch: int, state: StreamingState, metrics: Mapping[str, float]) -> bool:
        if self.metric not in metrics:
            return False
        value = metrics[self.metric]
        gain = (value - self.best if self.maximize else self.best - value) if self.best is not None else None
        threshold = self.min_delta * abs(self.best) if self.relative and self.best is not None else self.min_delta
        if gain is None or gain > threshold:
            self.best, self.best_epoch = value, epoch
            return False
        if epoch - self.best_epoch >= self.patience:
            self.stopped_epoch = epoch
            logger.info(
                "Early stopping after epoch %d: %s has not improved on %.6g (epoch %d) for %d epoch(s).",
                epoch,
                self.metric,
                self.best,
                self.best_epoch,
                self.patience,
            )
            return True
        return False


# The attribute of a stop (TrainingStopped, KeyboardInterrupt) that carries the model trained so
# far, which the job then saves (XGBoost's save_model_on_termination).
PARTIAL_MODEL_ATTRIBUTE = "partial_model"


def attach_partial_model(stop: BaseException, model: Model) -> None:
    """Let the job save `model` although training was stopped by `stop`."""
    setattr(stop, PARTIAL_MODEL_ATTRIBUTE, model)


def partial_model(stop: BaseException) -> Model | None:
    """The model a stop carries (attach_partial_model), or None."""
    return getattr(stop, PARTIAL_MODEL_ATTRIBUTE, None)


def warn_when_the_objective_cannot_be_printed(hp: Hyperparameters, data: TrainingData) -> None:
    """A tuning job whose objective (`_tuning_objective_metric`, e.g. test:msd) is measured on a
    channel this job does not have gets no line to read: said at the start, not discovered when
    the tuning job fails."""
    channel, metric = tuning_objective(hp) or ("", "")
    if channel in ("validation", "test") and not data.has_channel(channel):
        objective = f"{channel}:{metric}"
        logger.warning(
            "The tuning objective %s is measured on the %s channel, which this job does not have: no %s "
            "line will be printed, and the tuning job cannot read one. Add a %s channel.",
            objective,
            channel,
            objective,
            channel,
        )


# The lines this driver prints for every mini-batch algorithm, as SageMaker reads them: each
# algorithm's metric_definitions include these beside its own quality metrics.
DRIVER_METRIC_DEFINITIONS = (progress_definition(), throughput_definition("train"))


def train_streaming(
    algorithm: StreamingAlgorithm,
    hp: Hyperparameters,
    data: TrainingData,
    *,
    metrics: MetricWriter | None = None,
    callbacks: Iterable[TrainingCallback] = (),
    collective: SingleHost | None = None,
) -> Model:
    """Run `algorithm` over `data` with validated hyperparameters, reporting through `metrics`
    (a writer for algo-1 by default); returns the model. (StreamingAlgorithm.train is this.)"""
    metrics = metrics or MetricWriter()
    collective = collective or SingleHost()
    several = collective.hosts > 1
    if several and not algorithm.several_hosts:
        raise UserError(f"{algorithm.title} does not train on several hosts yet; set InstanceCount to 1.")
    callbacks = list(callbacks)
    epochs = algorithm.epochs(hp)
    batch_rows = algorithm.batch_rows(hp)
    feature_dim = algorithm.feature_dim(hp)
    validating = "validation" in algorithm.channels and data.has_channel("validation")

    warn_when_the_objective_cannot_be_printed(hp, data)
    state = algorithm.start(hp)
    for callback in callbacks:
        callback.before_training(state)
    started = time.perf_counter()
    rows_seen = 0  # by every host
    for epoch in range(epochs):
        epoch_rows = 0  # by this host
        for batch in data.batches("train", batch_rows, feature_dim=feature_dim):
            if batch.n_rows:
                state.update(batch)
                epoch_rows += batch.n_rows
        if several:
            epoch_rows = int(collective.all_reduce_sum(np.array([epoch_rows], dtype=np.int64))[0])
            state.combine(collective)  # type: ignore[attr-defined]  # several_hosts says it has it
        rows_seen += epoch_rows
        if rows_seen == 0:
            raise UserError("The train channel has no records" + (" on any host." if several else "."))
        epoch_metrics = {}
        for metric in state.end_epoch():
            metrics.quality("train", metric, epoch=epoch)
            epoch_metrics[f"train:{metric.name}"] = metric.value
        metrics.progress(100.0 * (epoch + 1) / epochs)
        if validating:
            current = state.current_model()
            for metric in score(algorithm, current, hp=hp, data=data, channel="validation", collective=collective):
                metrics.quality("validation", metric, epoch=epoch)
                epoch_metrics[f"validation:{metric.name}"] = metric.value
        # Every callback hears of every pass, even when an earlier one asks to stop.
        stop = [callback.after_epoch(epoch, state, epoch_metrics) for callback in callbacks]
        if any(stop) and epoch + 1 < epochs:
            logger.info("Training stops after epoch %d of %d.", epoch, epochs)
            break
    elapsed = time.perf_counter() - started
    metrics.throughput("train", rows_seen / max(elapsed, 1e-9))

    model, final_metrics = state.finalize()
    for metric in final_metrics:
        metrics.quality("train", metric)
    for callback in callbacks:
        callback.after_training(model)
    for channel in ("validation", "test") if validating else ("test",):
        if data.has_channel(channel):
            for metric in score(algorithm, model, hp=hp, data=data, channel=channel, collective=collective):
                metrics.quality(channel, metric)
    return model


def score(
    algorithm: StreamingAlgorithm,
    model: Model,
    *,
    hp: Hyperparameters,
    data: TrainingData,
    channel: str,
    collective: SingleHost | None = None,
) -> list[Metric]:
    """`model`'s metrics on one pass over `channel`; none (with a warning) when it has no rows.
    On several hosts each scores its share of the channel and the scorers' sums are combined."""
    scorer = algorithm.scorer(model, hp, channel)
    for batch in data.batches(channel, algorithm.batch_rows(hp), feature_dim=model.feature_dim):
        if batch.n_rows:
            scorer.add(batch)
    if collective is not None and collective.hosts > 1:
        scorer.combine(collective)  # type: ignore[attr-defined]  # several_hosts says it has it
    found = scorer.metrics()
    if not found:
        logger.warning("The %s channel has no records; no %s metrics.", channel, channel)
    return found
