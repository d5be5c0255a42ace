"""Training: the channels decoded by smalgo's decoders into one float32 matrix each, handed to
`xgboost.train` as a QuantileDMatrix for `hist` on one host (train_matrix_of), else a DMatrix (no
second parse, no pandas), with AWS's image's behaviours around it (spec section 4.5):

* the evaluation lines, `[i]\\ttrain-<m>:<v>\\tvalidation-<m>:<v>` (5 decimals, XGBoost's own
  EvaluationMonitor format), which the tuner's regex `.*\\[[0-9]+\\].*#011validation-<m>:(\\S+)` reads;
* early stopping on the validation channel and the metric `_tuning_objective_metric` names (else
  the last eval_metric); the model keeps the trees up to the best iteration (save_best), which
  is what serving then predicts with;
* checkpoints `xgboost-checkpoint.<i>` in the job's checkpoint directory after every round (the 5
  newest kept, files still being uploaded by SageMaker skipped), and resuming from the newest
  whole one (a damaged one is passed over, with a warning); on several hosts the first host alone
  writes them, as AWS's image's master does, and every host resumes from its own copy (SageMaker
  copies the job's checkpoints to each) once the hosts have checked that they hold the same one;
* with save_model_on_termination, the rounds done so far are the model when the job is stopped;
* k-fold cross-validation (`_kfold`, `_num_cv_round`) over train + validation, one model per fold.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import xgboost as xgb

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import TrainingData, stack_rows
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.metrics import MetricWriter
from smalgo.algorithms.runtime.collective import Hosts, SingleHost
from smalgo.algorithms.training import attach_checkpoint, attach_partial_model

from ._metrics import custom_metric
from ._model import XGBoostModel, booster_from_bytes, to_dmatrix
from ._names import EarlyStoppingRule

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "xgboost-checkpoint"
CHECKPOINTS_KEPT = 5
# SageMaker renames a checkpoint file it is uploading to <name>.sagemaker-uploading.
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}\.(\d+)$")


def read_channel(data: TrainingData, channel: str, *, csv_weights: bool, may_be_empty: bool = False) -> Batch:
    """A whole channel as one Batch (one pass; every block stacked once). With csv_weights, the
    first column after the label is the instance weight (AWS's `label,weight,f0,...`). With
    may_be_empty (one of several hosts), no records is an empty batch, not an error."""
    parts = [(b.X, b.y, b.w) for b in data.batches(channel, 1 << 62) if b.n_rows]
    if not parts and may_be_empty:
        return Batch(np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.float32), None)
    if not parts:
        raise UserError(f"The {channel} channel has no records.")
    X, y, w = stack_rows(parts)
    if y is None:
        raise UserError(
            f"The {channel} channel has no labels; XGBoost trains on labelled data "
            f"(CSV: the label is the first column, so do not set label_size=0)."
        )
    if csv_weights and w is None:
        if X.shape[1] < 2:
            raise UserError(
                f"The {channel} channel has {X.shape[1]} column(s) after the label; "
                f"csv_weights=1 needs a weight and a feature."
            )
        if sp.issparse(X):
            X = sp.csr_matrix(X)
            w = np.asarray(X[:, 0].toarray()).reshape(-1).astype(np.float32)
            X = X[:, 1:]
        else:
            w = np.ascontiguousarray(X[:, 0])
            X = np.ascontiguousarray(X[:, 1:])
    return Batch(X, y, w)


def matrix_of(batch: Batch, width: int | None = None) -> xgb.DMatrix:
    """The DMatrix of a channel; a LIBSVM channel narrower than `width` (its largest index is
    smaller) is widened, so that train and validation have the same columns."""
    X = batch.X
    if width is not None and sp.issparse(X) and X.shape[1] < width:
        csr = sp.csr_matrix(X)
        X = sp.csr_matrix((csr.data, csr.indices, csr.indptr), shape=(csr.shape[0], width))
    return to_dmatrix(X, label=batch.y, weight=batch.w)


def uses_quantile_matrix(params: Mapping[str, Any]) -> bool:
    """Whether the train matrix is a QuantileDMatrix: trees grown by `hist` (XGBoost 3's `auto`
    too). XGBoost then bins the float32 rows straight into its histogram index, where a DMatrix
    first copies them into its own row pages (8 bytes a value) and bins those at the first round:
    the same cuts and trees (tested against raw xgboost.train on a QuantileDMatrix and on a
    DMatrix), in less memory (500,000 x 28: +69 MB peak instead of +184 MB), in the same time.
    `exact` and `approx` read the rows themselves, gblinear has no trees, and the GPU path
    (`device=cuda`, untested here) keeps the DMatrix it had: a DMatrix for those."""
    return (
        params.get("booster", "gbtree") != "gblinear"
        and params.get("tree_method", "auto") in ("auto", "hist")
        and params.get("device", "cpu") != "cuda"
    )


def train_matrix_of(batch: Batch, width: int | None, params: Mapping[str, Any]) -> xgb.DMatrix:
    """The train channel's matrix: a QuantileDMatrix where `uses_quantile_matrix(params)` (with
    the booster's max_bin), else matrix_of's DMatrix."""
    if not uses_quantile_matrix(params):
        return matrix_of(batch, width)
    X = batch.X
    if width is not None and sp.issparse(X) and X.shape[1] < width:
        csr = sp.csr_matrix(X)
        X = sp.csr_matrix((csr.data, csr.indices, csr.indptr), shape=(csr.shape[0], width))
    extra = {"max_bin": int(params["max_bin"])} if params.get("max_bin") is not None else {}
    try:
        return xgb.QuantileDMatrix(X, label=batch.y, weight=batch.w, missing=np.nan, **extra)
    except xgb.core.XGBoostError as exc:
        raise UserError(f"XGBoost refused the train channel: {str(exc).splitlines()[0]}") from None


class _EvaluationLines(xgb.callback.TrainingCallback):
    """AWS's evaluation line after every round, through the job's MetricWriter's logger."""

    def __init__(self, writer: MetricWriter, offset: int) -> None:
        self.writer = writer
        self.offset = offset

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        if evals_log:
            self.writer.evaluation(epoch + self.offset, evals_log)
        return False


class _Checkpoints(xgb.callback.TrainingCallback):
    """xgboost-checkpoint.<i> after round i (written aside, then renamed: a stop mid-write leaves
    no damaged checkpoint); the CHECKPOINTS_KEPT newest are kept, and any of a later round goes:
    the job resumed from the newest it could read, so those are damaged ones it passed over, and
    kept they would outlive the new ones (the newest numbers are kept)."""

    def __init__(self, directory: Path, offset: int) -> None:
        self.directory = directory
        self.offset = offset
        self.written: Path | None = None  # the newest checkpoint this job wrote

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        number = epoch + self.offset
        target = self.directory / f"{CHECKPOINT_PREFIX}.{number}"
        partial = self.directory / f".{target.name}.partial"
        partial.write_bytes(bytes(model.save_raw("ubj")))
        partial.rename(target)
        self.written = target
        numbers = sorted(checkpoint_numbers(self.directory))
        kept = [n for n in numbers if n <= number][-CHECKPOINTS_KEPT:]
        for old in numbers:
            if old not in kept:
                (self.directory / f"{CHECKPOINT_PREFIX}.{old}").unlink(missing_ok=True)
        return False


class _KeepLatest(xgb.callback.TrainingCallback):
    """Remembers the booster after each round, so that a stopped job can save it."""

    def __init__(self) -> None:
        self.booster: xgb.Booster | None = None

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        self.booster = model
        return False


def checkpoint_numbers(directory: Path) -> list[int]:
    """The round numbers of the complete checkpoints in `directory`."""
    if not directory.is_dir():
        return []
    return [int(m.group(1)) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]


class Checkpoint(NamedTuple):
    """A checkpoint read back: its booster, the rounds it holds, its file and the SHA-256 of its
    bytes (what the hosts of a job compare)."""

    booster: xgb.Booster
    rounds: int
    path: Path
    digest: bytes


def latest_checkpoint(directory: Path | None) -> Checkpoint | None:
    """The newest whole checkpoint in `directory`, or None. One that cannot be read (truncated by
    an interrupted upload, damaged, or holding other rounds than its name says) is passed over,
    with a warning naming it, for the next older one; when none is left, training starts from
    the first round."""
    if directory is None:
        return None
    numbers = sorted(checkpoint_numbers(directory), reverse=True)
    for number in numbers:
        path = directory / f"{CHECKPOINT_PREFIX}.{number}"
        try:
            data = path.read_bytes()
            booster = booster_from_bytes(data, path)
            if booster.num_boosted_rounds() != number + 1:
                raise UserError(f"it holds {booster.num_boosted_rounds()} rounds, not the {number + 1} of its name")
        except (OSError, UserError) as exc:
            reason = str(exc).removeprefix(f"{path} is not an XGBoost model XGBoost {xgb.__version__} can read: ")
            logger.warning(
                "Not resuming from the checkpoint %s: %s; %s.",
                path,
                reason.rstrip("."),
                "trying the next older one" if number != numbers[-1] else "no older one: training starts from round 0",
            )
            continue
        logger.info("Resuming from checkpoint %s (%d rounds done).", path, number + 1)
        return Checkpoint(booster, number + 1, path, hashlib.sha256(data).digest())
    return None


def same_checkpoint_on_every_host(
    collective: SingleHost, directory: Path | None, checkpoint: Checkpoint | None
) -> None:
    """UserError, on every host alike, unless every host of the job resumes from the same
    checkpoint (the same rounds, the same bytes) or none does: a host that resumed from another
    round, or trained from the start while the others resume, would train another booster
    beside them, which XGBoost's distributed training cannot combine. Every host takes part,
    with or without a checkpoint directory."""
    found = np.zeros((1, 6), dtype=np.int64)  # rounds, has a directory, the digest's first 32 bytes
    if directory is not None:
        found[0, 1] = 1
    if checkpoint is not None:
        found[0, 0] = checkpoint.rounds
        found[0, 2:] = np.frombuffer(checkpoint.digest, dtype=">i8").astype(np.int64)
    rows = [np.asarray(part).reshape(-1) for part in collective.all_gather(found)]
    names = list(getattr(collective, "names", [f"host {k + 1}" for k in range(len(rows))]))
    here = f"({directory} here)" if directory is not None else "(this host has no checkpoint directory)"
    if len({int(row[0]) for row in rows}) > 1:

        def what(row: np.ndarray) -> str:
            if row[0]:
                return f"{CHECKPOINT_PREFIX}.{int(row[0]) - 1} ({int(row[0])} rounds)"
            return "none, so it would train from the start" if row[1] else "no checkpoint directory"

        found_by = "; ".join(f"{name}: {what(row)}" for name, row in zip(names, rows, strict=True))
        raise UserError(
            f"The hosts found different XGBoost checkpoints in their checkpoint directories {here}: {found_by}. "
            "Every host must resume from the same checkpoint, or the hosts would train different boosters: give "
            "every host the same checkpoints (SageMaker copies the job's to each), or remove them to train from "
            "the start."
        )
    if len({row[2:].tobytes() for row in rows}) > 1:
        raise UserError(
            f"The hosts found {CHECKPOINT_PREFIX}.{int(rows[0][0]) - 1} in their checkpoint directories {here}, but "
            "its contents differ between hosts: they would train different boosters. Give every host the same "
            "checkpoints (SageMaker copies the job's to each), or remove them to train from the start."
        )


def train_booster(
    params: dict[str, Any],
    dtrain: xgb.DMatrix,
    *,
    num_round: int,
    evals: list[tuple[xgb.DMatrix, str]],
    writer: MetricWriter,
    early_stopping: EarlyStoppingRule | None,
    checkpoint_dir: Path | None,
    save_on_termination: bool,
    aws_metrics: Sequence[str] = (),
    collective: SingleHost | None = None,
) -> xgb.Booster:
    """xgboost.train with AWS's callbacks and metrics (`aws_metrics`: those AWS's image computes
    itself, _metrics.py); a stop (SIGTERM) carries the rounds done so far when
    save_on_termination, and names the newest checkpoint written. On several hosts
    (`collective`), the collective's all_gather brings every host's predictions and labels
    together for the metrics AWS's image computes itself (XGBoost reduces its own); every host
    resumes from the checkpoint in its own checkpoint directory once all have checked it is the
    same (same_checkpoint_on_every_host), and only the first host writes checkpoints (every
    host's booster is the same after each round)."""
    several = collective is not None and collective.hosts > 1
    checkpoint = latest_checkpoint(checkpoint_dir)
    if several:
        assert collective is not None
        same_checkpoint_on_every_host(collective, checkpoint_dir, checkpoint)
    resumed, done = (checkpoint.booster, checkpoint.rounds) if checkpoint is not None else (None, 0)
    gather = collective.all_gather if several and collective is not None else None
    writes = checkpoint_dir is not None and (not several or collective is None or collective.is_first)
    callbacks: list[xgb.callback.TrainingCallback] = [_EvaluationLines(writer, done)]
    saver = None
    if writes:
        assert checkpoint_dir is not None
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        saver = _Checkpoints(checkpoint_dir, done)
        callbacks.append(saver)
    latest = _KeepLatest()
    callbacks.append(latest)
    if early_stopping is not None:
        callbacks.append(
            xgb.callback.EarlyStopping(
                rounds=early_stopping.rounds,
                metric_name=early_stopping.metric,
                data_name="validation",
                maximize=early_stopping.maximize,
                save_best=True,
            )
        )
    if done >= num_round:
        logger.info("The checkpoint already holds all %d rounds.", num_round)
        assert resumed is not None
        return resumed
    started = time.perf_counter()
    try:
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=num_round - done,
            evals=evals,
            callbacks=callbacks,
            xgb_model=resumed,
            verbose_eval=False,
            custom_metric=custom_metric(aws_metrics, gather=gather) if aws_metrics else None,
        )
    except xgb.core.XGBoostError as exc:
        if isinstance(collective, Hosts) and "/collective/" in str(exc):  # XGBoost's own exchanges failed
            raise collective.lost_contact(exc) from None
        raise UserError(f"XGBoost refused the training job: {str(exc).splitlines()[0]}") from None
    except BaseException as exc:
        if save_on_termination and latest.booster is not None and not isinstance(exc, Exception):
            attach_partial_model(exc, XGBoostModel([latest.booster.copy()]))
        if saver is not None and not isinstance(exc, Exception):  # a stop: the failure names the checkpoint
            resumable = saver.written or (checkpoint.path if checkpoint is not None else None)
            if resumable is not None:
                attach_checkpoint(exc, resumable)
        raise
    logger.info("Trained %d rounds in %.2f s.", booster.num_boosted_rounds(), time.perf_counter() - started)
    return booster


def fold_indices(labels: np.ndarray, *, folds: int, repeats: int, stratified: bool, seed: int):
    """(train rows, validation rows) of each fold, `repeats` times `folds` folds; each repeat a new
    shuffle. Stratified: each class's rows dealt round-robin over the folds, so every fold holds
    each class in proportion (AWS's image uses scikit-learn's RepeatedStratifiedKFold for
    classification, RepeatedKFold otherwise; the split differs, the principle is the same)."""
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    if n < folds:
        raise UserError(f"Hyperparameter _kfold: {folds} folds need at least {folds} records; the data has {n}.")
    for _ in range(repeats):
        assignment = np.empty(n, dtype=np.int64)
        if stratified:
            position = 0
            for value in np.unique(labels):
                rows = rng.permutation(np.flatnonzero(labels == value))
                assignment[rows] = (position + np.arange(rows.shape[0])) % folds
                position += rows.shape[0]
        else:
            assignment[rng.permutation(n)] = np.arange(n) % folds
        for fold in range(folds):
            yield np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold)


def mean_cv_line(num_round: int, results: Sequence[Mapping[str, Mapping[str, list[float]]]]) -> str:
    """AWS's cross-validation summary line: each metric's last value averaged over the folds."""
    line = f"[{num_round}]"
    for metric in results[0]["train"]:
        for data_name in results[0]:
            values = [result[data_name][metric][-1] for result in results]
            line += f"\t{data_name}-{metric}:{np.mean(values):.5f}"
    return line
