"""The training driver every mini-batch algorithm runs on.

    state = algorithm.start(hp)          # several hosts: state.join(collective), if it has join
                                         # restored from the job's newest checkpoint (checkpoints.py)
    for each epoch not done yet:         # one pass over the train channel (File or Pipe mode)
        for each mini-batch: state.update(batch)
        (several hosts: the state is all-reduced here, through `collective`)
        train metrics, progress,
        validation metrics of state.current_model(), callbacks (early stopping),
        the state checkpointed (a job with a checkpoint directory, an algorithm with state_checkpoints),
        with the callbacks' values (early stopping's best pass)
    model, final train metrics = state.finalize()
    throughput; validation and test metrics of the final model

Metric lines go through the job's MetricWriter in the platform's form (metrics.py). The driver
knows no algorithm: what it streams, scores and reports comes from the StreamingAlgorithm and its
StreamingState (contract.py).

Several hosts: `collective` is the one seam for them (runtime/collective.py). On one host it is
`SingleHost`, which exchanges nothing. With several (`Hosts`, on xgboost.collective), each host
streams its own share of the rows, and at the end of every pass the state combines what the
hosts saw (`StreamingState.combine`: PCA sums its statistics, k-means gathers every host's
streaming centers, factorization machines and linear learner average their models), which is why
states keep sums and averages; combine comes first at a pass's end, because a state may still be
in an exchange of the pass (linear learner's scaler, fitted on every host's first rows, whose
sums a host with fewer rows gives only there); the row counts, and the
validation and test scorers' sums (`Scorer.combine`), are summed too, so every host logs the same
job-wide values and ends with the same model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .checkpoints import STATE_FILE, CallbackValues, CheckpointMismatch, StateArrays, StateCheckpoints, StateMetadata
from .data import TrainingData
from .errors import UserError
from .hyperparameters import tuning_objective
from .metrics import Metric, MetricWriter, progress_definition, throughput_definition
from .runtime.collective import SingleHost

if TYPE_CHECKING:
    from .contract import CheckpointableState, Hyperparameters, Model, StreamingAlgorithm, StreamingState

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

    def checkpoint_values(self) -> dict[str, Any] | None:
        """What the callback must remember across a stop, as JSON-able values, kept in the
        state's checkpoint after each pass (None: nothing)."""
        return None

    def restore_values(self, values: dict[str, Any]) -> None:
        """Take back what checkpoint_values gave (a job resuming from the checkpoint); ValueError
        for values it cannot take."""


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

    def checkpoint_values(self) -> dict[str, Any] | None:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def restore_values(self, values: dict[str, Any]) -> None:
        best, best_epoch = values.get("best"), values.get("best_epoch")
        if not (best is None or isinstance(best, float)) or not isinstance(best_epoch, int):
            raise ValueError(f"early stopping's best={best!r} and best_epoch={best_epoch!r} are not valid")
        self.best, self.best_epoch = best, best_epoch

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


def attach_partial_model(stop: BaseException, model: Model | None) -> None:
    """Let the job save `model` although training was stopped by `stop` (None: save nothing)."""
    setattr(stop, PARTIAL_MODEL_ATTRIBUTE, model)


def partial_model(stop: BaseException) -> Model | None:
    """The model a stop carries (attach_partial_model), or None."""
    return getattr(stop, PARTIAL_MODEL_ATTRIBUTE, None)


# The attribute of a stop that names the newest checkpoint it can resume from (the driver's
# state, XGBoost's xgboost-checkpoint.<i>), which the job's output/failure then names.
CHECKPOINT_ATTRIBUTE = "state_checkpoint"


def attach_checkpoint(stop: BaseException, path: Path) -> None:
    """Let the job name `path` as the checkpoint a job stopped by `stop` resumes from."""
    setattr(stop, CHECKPOINT_ATTRIBUTE, path)


def stop_checkpoint(stop: BaseException) -> Path | None:
    """The checkpoint a stopped job can resume from (attach_checkpoint), or None."""
    return getattr(stop, CHECKPOINT_ATTRIBUTE, None)


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
    checkpoint_dir: Path | None = None,
) -> Model:
    """Run `algorithm` over `data` with validated hyperparameters, reporting through `metrics`
    (a writer for algo-1 by default); returns the model. (StreamingAlgorithm.train is this.)
    With `checkpoint_dir` (the job's), an algorithm whose state_checkpoints is true resumes from
    the newest checkpoint there and writes one after every pass (checkpoints.py)."""
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
    join = getattr(state, "join", None)  # a state that needs the hosts within a pass (contract.py)
    if several and join is not None:
        join(collective)
    store = _state_checkpoints(algorithm, hp, checkpoint_dir, several=several)
    first_epoch = 0
    if store is not None:
        first_epoch = _resume(store, state, epochs, callbacks=callbacks, first_host=collective.is_first)
        if several:  # every host must resume from the same pass, or their exchanges would not pair up
            gathered = collective.all_gather(np.array([[first_epoch]], dtype=np.int64))
            resumed = [int(part.ravel()[0]) for part in gathered]
            if len(set(resumed)) > 1:
                raise UserError(
                    "The hosts found checkpoints of different passes in their checkpoint directories "
                    f"({store.directory} here): they would resume at epochs {resumed}. Give every host the same "
                    "checkpoints."
                )
    for callback in callbacks:
        callback.before_training(state)
    started = time.perf_counter()
    rows_seen = 0  # by every host
    saver = _EpochCheckpoints(store, first_host=collective.is_first)
    try:
        for epoch in range(first_epoch, epochs):
            epoch_rows = 0  # by this host
            for batch in data.batches("train", batch_rows, feature_dim=feature_dim):
                if batch.n_rows:
                    state.update(batch)
                    epoch_rows += batch.n_rows
            if several:
                # combine first: a state may still take part in an exchange of the pass there.
                state.combine(collective)  # type: ignore[attr-defined]  # several_hosts says it has it
                epoch_rows = int(collective.all_reduce_sum(np.array([epoch_rows], dtype=np.int64))[0])
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
            stopping = any(stop) and epoch + 1 < epochs
            saver.end_of_pass(epoch + 1, state, callbacks, stopped=stopping)
            if stopping:
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
    except BaseException as interruption:
        if not isinstance(interruption, Exception):  # SIGTERM (TrainingStopped) or Ctrl-C: keep the last pass
            saver.on_stop(interruption)
        raise


def _state_checkpoints(
    algorithm: StreamingAlgorithm, hp: Hyperparameters, checkpoint_dir: Path | None, *, several: bool
) -> StateCheckpoints | None:
    """The job's checkpoints of the state, or None (said in the log when the job has a
    checkpoint directory that this algorithm does not use)."""
    if checkpoint_dir is None:
        return None
    if not algorithm.state_checkpoints:
        logger.warning(
            "%s does not checkpoint its training state yet: the checkpoint directory %s is not used, and a "
            "stopped job trains again from the start.",
            algorithm.title,
            checkpoint_dir,
        )
        return None
    if several and not algorithm.state_checkpoints_on_several_hosts:
        logger.warning(
            "%s's hosts do not hold the same state after a pass, so it is not checkpointed on several hosts: "
            "the checkpoint directory %s is not used.",
            algorithm.title,
            checkpoint_dir,
        )
        return None
    store = StateCheckpoints(checkpoint_dir, algorithm.name, hp)
    return store


def _resume(
    store: StateCheckpoints, state: StreamingState, epochs: int, *, callbacks: list[TrainingCallback], first_host: bool
) -> int:
    """Restore the newest checkpoint into the fresh `state` and the callbacks (early stopping's
    best pass); the first epoch left to train (`epochs` when the checkpoint's job had finished
    its passes or stopped early)."""
    if first_host:
        store.remove_leftovers()
    checkpoint = store.latest()
    if checkpoint is None:
        logger.info("No training state to resume in %s: training starts at epoch 0.", store.directory)
        return 0
    try:
        if len(checkpoint.callbacks) != len(callbacks):
            raise CheckpointMismatch(
                f"it keeps the values of {len(checkpoint.callbacks)} training callback(s), and this job has "
                f"{len(callbacks)}"
            )
        for callback, values in zip(callbacks, checkpoint.callbacks, strict=True):
            if values is not None:
                try:
                    callback.restore_values(values)
                except ValueError as exc:
                    raise CheckpointMismatch(str(exc)) from None
        cast("CheckpointableState", state).restore_checkpoint(checkpoint.arrays, checkpoint.metadata)
    except CheckpointMismatch as exc:
        raise UserError(
            f"Cannot resume from the checkpoint {checkpoint.path / STATE_FILE}: {exc}; remove {checkpoint.path} to "
            "train from the start."
        ) from None
    done = checkpoint.epochs_done
    if checkpoint.stopped or done >= epochs:
        logger.info(
            "Resuming from the checkpoint %s: its job had finished its passes (%d epoch(s)%s); the model is "
            "made from it.",
            checkpoint.path,
            done,
            ", stopped early" if checkpoint.stopped else "",
        )
        return epochs
    logger.info(
        "Resuming from the checkpoint %s: epochs 0 to %d are done; training continues at epoch %d of %d.",
        checkpoint.path,
        done - 1,
        done,
        epochs,
    )
    return done


class _EpochCheckpoints:
    """Writes the state at the end of every pass (the first host only), and once more on a stop
    when that write did not finish."""

    def __init__(self, store: StateCheckpoints | None, *, first_host: bool) -> None:
        self.store = store if first_host else None
        self.pending: tuple[int, StateArrays, StateMetadata, list[CallbackValues], bool] | None = None

    def end_of_pass(
        self, epochs_done: int, state: StreamingState, callbacks: list[TrainingCallback], *, stopped: bool
    ) -> None:
        if self.store is None:
            return
        arrays, metadata = cast("CheckpointableState", state).checkpoint_arrays()  # state_checkpoints says it has it
        values = [callback.checkpoint_values() for callback in callbacks]
        # No copies: nothing updates the state between here and on_stop (a stop during the write).
        self.pending = (epochs_done, arrays, metadata, values, stopped)
        path = self.store.write(epochs_done, arrays, metadata, callbacks=values, stopped=stopped)
        self.pending = None
        logger.info("Checkpoint of the training state after epoch %d: %s", epochs_done - 1, path)

    def on_stop(self, stop: BaseException) -> None:
        """Finish the interrupted end-of-pass write, and tell the job where the state is."""
        if self.store is None:
            return
        if self.pending is not None:
            epochs_done, arrays, metadata, values, stopped = self.pending
            try:
                self.store.write(epochs_done, arrays, metadata, callbacks=values, stopped=stopped)
            except (OSError, UserError) as exc:
                logger.error("The training state could not be checkpointed when training stopped: %s", exc)
        found = self.store.existing()
        if found:
            attach_checkpoint(stop, found[0][1])


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
