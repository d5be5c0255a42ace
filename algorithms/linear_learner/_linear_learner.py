"""Linear learner (SageMaker `linear-learner`, spec section 4.1): many linear models trained in
one pass over each mini-batch, the best one kept.

How it trains, as AWS documents it (spec 4.1, "How it works"), and how this module does it:

1. Normalisation. The first `num_point_for_scaler` rows of the train channel (the data are
   expected to be shuffled, as AWS asks) give each feature's mean and standard deviation and,
   for regression, the label's. The models then live in the normalised space, but the data are
   never transformed: the scaling is folded into the weights of each product
   (X @ (W / s) + (b - (mu / s) @ W)), and the gradient is corrected the same way, so a sparse
   batch stays sparse and costs nothing extra. Dense data are centred (unbias_data = auto
   with a bias), sparse data only scaled unless unbias_data = true. Those first rows are held
   until the statistics are known, then trained on like every other row.
2. Model packing. The `num_models` models (_settings.py says what varies) are the columns of one
   features x models matrix (x classes, for multiclass): one GEMM forward and one backward per
   mini-batch train them all (_kernels.py), then one optimizer step updates them all.
3. Selection. Each pass's validation (the driver scores `current_model()` on the validation
   channel) measures every model: its loss, and for binary classifiers its threshold calibrated
   on the first `num_calibration_samples` validation rows and the selection criterion there.
   Each model's best pass is remembered (its weights and threshold); the final model is the
   model whose best pass is best, with that pass's weights: early stopping never costs the
   model the passes it has already made worse. Without a validation channel, the first
   `num_calibration_samples` train rows (at most SAMPLE_BYTES of them) are kept and the models
   are compared on them after the last pass.

Choices this module makes where the documentation is silent:

* Losses: squared and eps-insensitive squared are (z - y)^2 (so mse_objective is the mse); huber
  is 0.5 r^2 inside huber_delta; losses with a parameter (huber_delta, loss_insensitivity) read
  it in the label's unit: with normalize_label the parameter is divided by the label's scale.
  The regression objectives reported are in the label's unit.
* A binary classifier's score is the probability of 1 for logistic loss, the raw margin for
  hinge loss (AWS says the hinge score is no probability); predicted_label is 1 when the score
  is above the threshold (0.5 / 0 before calibration). With criterion loss_function the
  threshold stays there.
* Class weights weigh the gradient only: reported losses weigh every row alike (row weights
  from the data aside), so models with different positive weights compare fairly.
* Early stopping follows the selection criterion of the best model on validation (the
  objective loss for regression, multiclass and loss_function), else the train objective loss;
  training stops after `early_stopping_patience` passes in a row whose relative improvement is
  below `early_stopping_tolerance`.
* A mini-batch larger than the channel is one batch of the whole channel (AWS fails there).
* Several hosts (join, combine): each host trains on its rows. The scaler and class weights come
  from every host's share of num_point_for_scaler rows, their sums exchanged mid-pass (a host
  with fewer rows joins at the pass's end). At the end of every pass the models and optimizer
  moments are averaged, weighted by the rows each host trained on, and the largest step count
  is kept. The first pass's train samples are gathered, and validation and test scoring gather
  the calibration scores, so every host selects the same model. Averaging once a pass was the
  measured choice: on tests/test_several_hosts.py's data (8 features, 4,500 rows, 15 passes), 2
  and 3 hosts reach a test quality within 0.5 % of one host on the union of the data.
* On a GPU (runtime/device.py: SMALGO_DEVICE), a job on dense data whose mini-batch is worth it
  (MIN_GPU_WORK) trains on the GPU (_cuda.py: the same step, the state kept on the GPU); the
  choice is made once, when training starts. Sparse data train on the CPU.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import scipy.sparse as sp

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.checkpoints import CheckpointMismatch, StateArrays, StateMetadata, take_array
from smalgo.algorithms.contract import check_width
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.hyperparameters import AUTO
from smalgo.algorithms.metrics import Metric
from smalgo.algorithms.model_files import save_model_files
from smalgo.algorithms.runtime import device
from smalgo.algorithms.runtime.collective import SingleHost
from smalgo.algorithms.runtime.threads import single_threaded_blas
from smalgo.recordio.parallel import available_cpus, shared_pool

from . import _kernels as kernels
from . import _metrics
from ._settings import (
    BINARY,
    LOSS_DEGREE,
    LOSS_PARAMETER,
    LOSSES,
    MULTICLASS,
    OBJECTIVE_METRICS,
    OPTIMIZERS,
    REGRESSOR,
    SEED,
    ModelSettings,
    calibration_samples,
    model_settings,
    normalization,
    num_models,
    positive_example_weight_mult,
    resolve_criterion,
    resolve_loss,
)

if TYPE_CHECKING:
    from ._cuda import GpuModels

logger = logging.getLogger(__name__)

NAME = "linear-learner"
FORMAT_VERSION = 1
# The train rows kept for model selection when there is no validation channel, at most.
SAMPLE_BYTES = 64 << 20
# Weights of all packed models together, at most: training holds about seven arrays of this
# size (weights, two optimizer moments, the gradient, the raw-feature weights, the best pass's
# copy, a sparse gradient buffer), so 2**26 float32 values are about 1.8 GB.
MAX_WEIGHT_VALUES = 1 << 26
# A job trains on the GPU (when one is used) only if a mini-batch's product X @ W has at least
# this many multiply-adds (rows x features x models x outputs; 1,000 rows x 128 features x 32
# models): below it the CPU's step takes well under a millisecond, about what the GPU's kernel
# launches and copies cost. A round guess, not a measurement. Smaller jobs also never look for a
# GPU.
MIN_GPU_WORK = 1 << 22
SINGLE_HOST = SingleHost()


# --------------------------------------------------------------------------- the problem


@dataclass(frozen=True)
class Problem:
    """What a job's hyperparameters make of the task: predictor type, loss, outputs per model."""

    predictor_type: str
    loss: str
    num_classes: int  # 2 for binary, 1 for regression
    loss_parameter: float
    criterion: str  # binary: the selection criterion (aliases resolved); else "loss_function"
    hp: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, hp: dict[str, Any]) -> Problem:
        predictor_type = hp["predictor_type"]
        loss = resolve_loss(hp)
        parameter = LOSS_PARAMETER.get(loss)
        return cls(
            predictor_type=predictor_type,
            loss=loss,
            num_classes={BINARY: 2, REGRESSOR: 1}.get(predictor_type) or int(hp["num_classes"]),
            loss_parameter=float(hp[parameter]) if parameter else 0.0,
            criterion=resolve_criterion(hp) if predictor_type == BINARY else "loss_function",
            hp=hp,
        )

    @property
    def outputs_per_model(self) -> int:
        return self.num_classes if self.predictor_type == MULTICLASS else 1

    @property
    def objective_metric(self) -> str:
        return OBJECTIVE_METRICS[self.loss]

    @property
    def default_threshold(self) -> float:
        return 0.5 if self.loss == "logistic" else 0.0

    @property
    def calibrates(self) -> bool:
        return self.predictor_type == BINARY and self.criterion != "loss_function"

    def criterion_metric(self) -> str:
        """The metric name that selection and early stopping follow."""
        if not self.calibrates:
            return self.objective_metric
        return {
            "accuracy": "binary_classification_accuracy",
            "f_beta": f"binary_f_{self.beta:.3f}",
            "precision_at_target_recall": "precision_at_target_recall",
            "recall_at_target_precision": "recall_at_target_precision",
        }[self.criterion]

    @property
    def beta(self) -> float:
        return 1.0 if self.hp["binary_classifier_model_selection_criteria"] == "f1" else float(self.hp["f_beta"])

    def check_labels(self, y: np.ndarray | None, *, channel: str, first_record: int) -> np.ndarray:
        """The batch's labels, or a UserError naming the first bad one by its record number in
        the channel (counting from 1)."""
        if y is None:
            raise UserError(
                f"The {channel} channel's records carry no label; linear learner needs one per record "
                f"(CSV: the first column, with content type text/csv; RecordIO-protobuf: the record's "
                f'"values" label).'
            )
        if self.predictor_type == REGRESSOR:
            bad = ~np.isfinite(y)
            what = "a finite number"
        elif self.predictor_type == BINARY:
            bad = (y != 0) & (y != 1)
            what = "0 or 1 (predictor_type binary_classifier)"
        else:
            bad = ~((y >= 0) & (y < self.num_classes) & (y == np.floor(y)))
            what = f"an integer from 0 to {self.num_classes - 1} (num_classes {self.num_classes})"
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(
                f"Record {first_record + i + 1} of the {channel} channel has label {float(y[i])!r}; expected {what}."
            )
        return y


def check_model_size(hp: dict[str, Any], feature_dim: int) -> None:
    """UserError naming the hyperparameters when the packed models would not fit in memory."""
    problem = Problem.of(hp)
    models = num_models(hp)
    values = feature_dim * models * problem.outputs_per_model
    if values > MAX_WEIGHT_VALUES:
        classes = f" x num_classes {problem.num_classes}" if problem.predictor_type == MULTICLASS else ""
        raise UserError(
            f"feature_dim {feature_dim} x num_models {models}{classes} = {values} weights is more than the "
            f"{MAX_WEIGHT_VALUES} this implementation trains at once (it keeps about seven copies); "
            "lower num_models."
        )


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Scaler:
    """Feature means and scales (mean 0 and scale 1 where not normalised), label mean and scale."""

    mean: np.ndarray  # float32 (d,)
    scale: np.ndarray  # float32 (d,)
    label_mean: float = 0.0
    label_scale: float = 1.0

    @cached_property
    def centred(self) -> bool:
        return bool(np.any(self.mean != 0.0))

    @cached_property
    def inverse_scale(self) -> np.ndarray:
        return (1.0 / self.scale).astype(np.float32)

    def effective(self, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W', b') with X @ W' + b' = ((X - mean) / scale) @ W + b: the scaling folded into the
        weights, so the data are never transformed. (Training keeps W' up to date itself: the
        update kernel writes it.)"""
        W_raw = W * self.inverse_scale[:, None]
        b_raw = b - (self.mean * self.inverse_scale) @ W if self.centred else b.copy()
        return W_raw, b_raw.astype(np.float32)


def fit_scaler(
    X: np.ndarray | sp.csr_matrix,
    y: np.ndarray,
    problem: Problem,
    *,
    sparse: bool,
    collective: SingleHost = SINGLE_HOST,
) -> Scaler:
    """The scaler of the sample (X, y) under the job's normalisation hyperparameters. On several
    hosts (`collective`) the sample is every host's rows together: the sums are summed across
    hosts (a host may have no rows), so every host fits the same scaler."""
    choice = normalization(problem.hp)
    d = X.shape[1]
    mean = np.zeros(d, np.float64)
    scale = np.ones(d, np.float64)
    n = max(_summed(collective, float(X.shape[0])), 1.0)
    if choice["normalize_data"] or choice["unbias_data"]:
        # Sums, then divided: what X.mean and np.mean compute, so one host's figures are theirs.
        if sparse:
            csr = cast("sp.csr_matrix", X)
            sums = np.asarray(csr.sum(axis=0), dtype=np.float64).ravel()
            squares = np.asarray(csr.multiply(csr).sum(axis=0), dtype=np.float64).ravel()
        else:
            sums = X.sum(axis=0, dtype=np.float64)
            squares = np.einsum("ij,ij->j", X, X, dtype=np.float64)
        if collective.hosts > 1:
            sums, squares = np.split(collective.all_reduce_sum(np.concatenate([sums, squares])), 2)
        column_mean, column_square = sums / n, squares / n
        centre = choice["unbias_data"] if choice["unbias_data"] is not None else not sparse
        if centre:
            mean = column_mean
        if choice["normalize_data"]:
            std = np.sqrt(np.maximum(column_square - column_mean**2, 0.0))
            # A constant feature (std 0) is left unscaled; so is one whose spread is at the
            # float32 noise level, which scaling would blow up.
            scale = np.where(std > 1e-6 * np.maximum(np.abs(column_mean), 1.0), std, 1.0)
    label_mean, label_scale = 0.0, 1.0
    if problem.predictor_type == REGRESSOR:
        # Two passes over the labels, as np.std makes them: the mean, then the squared deviations.
        average = _summed(collective, float(np.sum(y, dtype=np.float64))) / n
        if choice["unbias_label"]:
            label_mean = average
        if choice["normalize_label"]:
            deviations = y.astype(np.float64) - average
            label_std = float(np.sqrt(_summed(collective, float(np.sum(deviations * deviations))) / n))
            label_scale = label_std if label_std > 0.0 else 1.0
    return Scaler(mean.astype(np.float32), scale.astype(np.float32), label_mean, label_scale)


def _summed(collective: SingleHost, value: float) -> float:
    """`value` summed over the job's hosts (itself on one host)."""
    if collective.hosts == 1:
        return value
    return float(collective.all_reduce_sum(np.array([value]))[0])


# --------------------------------------------------------------------------- forward pass


def forward(X: np.ndarray | sp.csr_matrix, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """X @ W + b as a float32 (rows x columns) array, for dense or CSR X."""
    if sp.issparse(X):
        csr = cast("sp.csr_matrix", X)
        Z = np.empty((csr.shape[0], W.shape[1]), np.float32)
        kernels.csr_times_dense(csr.indptr, csr.indices, csr.data, W, Z)
    else:
        Z = X @ W
    Z += b
    return Z


def _row_weights(batch: Batch) -> np.ndarray:
    return np.ones(batch.n_rows, np.float32) if batch.w is None else batch.w


# --------------------------------------------------------------------------- the final model


class LinearLearnerModel:
    """One linear model: weights and bias in the normalised space, the scaler, the threshold."""

    def __init__(
        self,
        problem_hp: dict[str, Any],
        *,
        weights: np.ndarray,
        bias: np.ndarray,
        scaler: Scaler,
        threshold: float,
        settings: dict[str, Any],
    ) -> None:
        self.problem = Problem.of(problem_hp)
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.scaler = scaler
        self.threshold = float(threshold)
        self.settings = settings
        W, b = scaler.effective(self.weights, self.bias)
        # Outputs in the label's unit: the label normalisation folded in too.
        self._W = np.ascontiguousarray(W * np.float32(scaler.label_scale))
        self._b = (b * np.float32(scaler.label_scale) + np.float32(scaler.label_mean)).astype(np.float32)

    @property
    def feature_dim(self) -> int:
        return int(self.weights.shape[0])

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.problem.hp

    def raw_space_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (feature_dim, outputs), b (outputs,)) with raw scores X @ W + b on the features as
        they come, in the label's unit: the scaler and the label normalisation folded in."""
        return self._W, self._b

    def raw_scores(self, X) -> np.ndarray:
        """The model's outputs before the link: (rows,) or, for multiclass, (rows, classes)."""
        Z = forward(X, self._W, self._b)
        return Z if self.problem.predictor_type == MULTICLASS else Z[:, 0]

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        check_width(batch, self.feature_dim)
        Z = self.raw_scores(batch.X)
        if self.problem.predictor_type == REGRESSOR:
            return {"score": Z}
        if self.problem.predictor_type == MULTICLASS:
            probabilities = softmax(Z)
            return {"score": probabilities, "predicted_label": np.argmax(Z, axis=1).astype(np.float32)}
        score = sigmoid(Z) if self.problem.loss == "logistic" else Z
        return {"score": score, "predicted_label": (score > self.threshold).astype(np.float32)}

    def save(self, model_dir) -> None:
        save_model_files(
            model_dir,
            {
                "algorithm": NAME,
                "format_version": FORMAT_VERSION,
                "feature_dim": self.feature_dim,
                "predictor_type": self.problem.predictor_type,
                "loss": self.problem.loss,
                "outputs_per_model": self.weights.shape[1],
                "threshold": self.threshold,
                "label_mean": self.scaler.label_mean,
                "label_scale": self.scaler.label_scale,
                "selected_model": self.settings,
                "hyperparameters": self.problem.hp,
            },
            {
                "weights": self.weights,
                "bias": self.bias,
                "feature_mean": self.scaler.mean,
                "feature_scale": self.scaler.scale,
            },
        )


def sigmoid(Z: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * Z))).astype(np.float32)


def softmax(Z: np.ndarray) -> np.ndarray:
    shifted = np.exp(Z - Z.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- selection


class Selection:
    """Each model's best pass so far on validation: its criterion value (higher is better),
    threshold and weights. Shared by the training state and the candidates it hands out."""

    def __init__(self, count: int) -> None:
        self.values = np.full(count, -np.inf)
        self.thresholds = np.zeros(count)
        self.epochs = np.full(count, -1)
        self.weights: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    @property
    def recorded(self) -> bool:
        return self.weights is not None

    def record(self, values: np.ndarray, thresholds: np.ndarray, candidates: Candidates) -> None:
        if self.weights is None:
            self.weights = candidates.weights.copy()
            self.bias = candidates.bias.copy()
        assert self.bias is not None
        better = values > self.values
        k = candidates.outputs_per_model
        columns = np.repeat(better, k)
        self.weights[:, columns] = candidates.weights[:, columns]
        self.bias[columns] = candidates.bias[columns]
        self.values[better] = values[better]
        self.thresholds[better] = thresholds[better]
        self.epochs[better] = candidates.epoch


@dataclass
class Candidates:
    """All models as they stand after a pass (what the driver validates each pass)."""

    problem: Problem
    weights: np.ndarray  # (d, models * outputs_per_model), normalised space
    bias: np.ndarray
    scaler: Scaler
    selection: Selection
    epoch: int
    calibration_rows: int

    @property
    def feature_dim(self) -> int:
        return int(self.weights.shape[0])

    @property
    def outputs_per_model(self) -> int:
        return self.problem.outputs_per_model

    @property
    def count(self) -> int:
        return self.weights.shape[1] // self.outputs_per_model

    @cached_property
    def _raw_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The weights and bias on raw features, once for all the batches scored."""
        return self.scaler.effective(self.weights, self.bias)

    def outputs(self, X) -> np.ndarray:
        """Every model's raw outputs in the normalised label space (rows x models*outputs)."""
        return forward(X, *self._raw_weights)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        raise TypeError("candidates are scored, not served; the final model is the selected one")

    def save(self, model_dir) -> None:
        raise TypeError("candidates are not saved; the final model is the selected one")


class ModelEvaluation:
    """Every candidate's loss over rows added batch by batch, and for binary criteria the scores
    of the first `limit` rows for threshold calibration: how candidates are compared, on a
    validation channel each pass or on the train sample at the end."""

    def __init__(self, candidates: Candidates, limit: int, *, channel: str) -> None:
        self.candidates = candidates
        self.problem = candidates.problem
        self.limit = limit
        self.channel = channel
        self.losses = np.zeros(candidates.count)
        self.total_weight = 0.0
        self.rows = 0
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._kept = 0

    def add(self, batch: Batch) -> None:
        y = self.problem.check_labels(batch.y, channel=self.channel, first_record=self.rows)
        w = _row_weights(batch)
        Z = self.candidates.outputs(batch.X)
        y_normal = _normal_labels(y, self.candidates.scaler, self.problem)
        _add_losses(Z, y_normal, w, problem=self.problem, scaler=self.candidates.scaler, losses=self.losses)
        self.total_weight += float(w.sum(dtype=np.float64))
        self.rows += batch.n_rows
        if self.problem.calibrates and self._kept < self.limit:
            take = min(self.limit - self._kept, batch.n_rows)
            scores = Z[:take]
            self._scores.append(_link(scores, self.problem))
            self._labels.append(y[:take])
            self._weights.append(w[:take])
            self._kept += take

    def combine(self, collective: SingleHost) -> None:
        """Several hosts, each having added its share of the rows: the loss sums summed, and the
        calibration rows every host kept (each at most `limit`, its share) gathered in host
        order, so that every host compares the models alike."""
        totals = collective.all_reduce_sum(np.concatenate([self.losses, [self.total_weight, float(self.rows)]]))
        self.losses, self.total_weight, self.rows = totals[:-2], float(totals[-2]), int(totals[-1])
        if self.problem.calibrates:
            self._scores = [collective.gather_rows(self._scores, (self.candidates.count,))]
            self._labels = [collective.gather_rows(self._labels)]
            self._weights = [collective.gather_rows(self._weights)]
            self._kept = len(self._labels[0])

    def mean_losses(self) -> np.ndarray:
        """Each model's mean loss, in the label's unit."""
        return self.losses / max(self.total_weight, 1e-300) * _loss_unit(self.problem, self.candidates.scaler)

    def compare(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, thresholds): each model's criterion value (higher is better) and threshold."""
        losses = self.mean_losses()
        thresholds = np.full(self.candidates.count, self.problem.default_threshold)
        if not self.problem.calibrates:
            # A model that diverged (an infinite or NaN loss) is never chosen.
            return np.nan_to_num(-losses, nan=-np.inf), thresholds
        scores = np.concatenate(self._scores)
        # A model that diverged (NaN scores) is never chosen; the others are calibrated.
        finite = np.isfinite(scores).all(axis=0) & np.isfinite(losses)
        values = np.full(self.candidates.count, -np.inf)
        if finite.any():
            thresholds[finite], values[finite] = calibrate(
                scores[:, finite],
                np.concatenate(self._labels),
                np.concatenate(self._weights),
                problem=self.problem,
            )
        return values, thresholds


_NONE = np.zeros(0)
# The bias as a row of the update kernel: row 0, no centring, no scaling.
_FIRST_ROW = np.zeros(1, np.int64)
_NO_CENTRE = np.zeros(1, np.float32)
_NO_SCALE = np.ones(1, np.float32)
# Calibrations of fewer scores than this run on the calling thread alone.
_MIN_THREADED_SCORES = 1 << 20
# Models calibrated together (the working arrays' memory grows with it).
_CALIBRATION_MODELS = 4


def calibrate(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, *, problem: Problem
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, values) of every model column of `scores` under the binary selection
    criterion. A few models at a time: a calibration holds about eight rows x models float64
    arrays (200 MB for 100,000 rows x 32 models at once), and the process's threads take the
    chunks in turn (the radix sort and numpy's cumulative sums release the GIL; 100,000 rows x 32
    models take about 0.15 s on one core, a third of it the sort)."""
    hp = problem.hp
    options = {
        "beta": problem.beta,
        "target_recall": float(hp["target_recall"]),
        "target_precision": float(hp["target_precision"]),
    }
    models = scores.shape[1]
    starts = range(0, models, _CALIBRATION_MODELS)

    def columns(start: int) -> tuple[np.ndarray, np.ndarray]:
        stop = min(models, start + _CALIBRATION_MODELS)
        return _metrics.calibrate_thresholds(scores[:, start:stop], labels, weights, problem.criterion, **options)

    threads = min(available_cpus(), len(starts)) if scores.size >= _MIN_THREADED_SCORES else 1
    if threads == 1:
        results = [columns(start) for start in starts]
    else:
        results = list(shared_pool(threads).map(columns, starts))
    return np.concatenate([t for t, _ in results]), np.concatenate([v for _, v in results])


def _add_losses(Z: np.ndarray, y: np.ndarray, w: np.ndarray, *, problem: Problem, scaler: Scaler, losses) -> None:
    """Add each model's loss over the rows (raw outputs Z, labels y in the normalised space) to
    `losses`; Z is left as it is."""
    kernels.loss_and_gradient(
        Z,
        y,
        w,
        _NONE,
        _NONE,
        LOSSES[problem.loss],
        _scaled_parameter(problem, scaler),
        problem.outputs_per_model,
        False,
        losses,
    )


def _link(Z: np.ndarray, problem: Problem) -> np.ndarray:
    """Binary scores as served: probabilities for logistic loss, margins for hinge loss."""
    return sigmoid(Z) if problem.loss == "logistic" else Z.copy()


def _normal_labels(y: np.ndarray, scaler: Scaler, problem: Problem) -> np.ndarray:
    if problem.predictor_type != REGRESSOR or (scaler.label_mean == 0.0 and scaler.label_scale == 1.0):
        return y
    return ((y - scaler.label_mean) / scaler.label_scale).astype(np.float32)


def _scaled_parameter(problem: Problem, scaler: Scaler) -> float:
    """The loss's parameter in the normalised label space (huber_delta and loss_insensitivity are
    given in the label's unit; margin and quantile have none)."""
    if problem.loss in ("huber_loss", "eps_insensitive_squared_loss", "eps_insensitive_absolute_loss"):
        return problem.loss_parameter / scaler.label_scale
    return problem.loss_parameter


def _loss_unit(problem: Problem, scaler: Scaler) -> float:
    """What converts a loss on normalised labels to the label's unit."""
    return scaler.label_scale ** LOSS_DEGREE.get(problem.loss, 0)


class CandidateScorer:
    """The driver's per-pass validation scorer: compares the candidates, records each one's best
    pass, and reports the best candidate's objective loss and selection criterion."""

    def __init__(self, candidates: Candidates) -> None:
        self.candidates = candidates
        self.evaluation = ModelEvaluation(candidates, candidates.calibration_rows, channel="validation")

    def add(self, batch: Batch) -> None:
        self.evaluation.add(batch)

    def combine(self, collective: SingleHost) -> None:
        self.evaluation.combine(collective)

    def metrics(self) -> list[Metric]:
        if not self.evaluation.rows:
            return []
        values, thresholds = self.evaluation.compare()
        self.candidates.selection.record(values, thresholds, self.candidates)
        best = int(np.argmax(values))
        problem = self.candidates.problem
        found = [Metric(problem.objective_metric, float(self.evaluation.mean_losses()[best]))]
        if problem.calibrates:
            found.append(Metric(problem.criterion_metric(), float(values[best]), "score"))
        return found


class ModelScorer:
    """The final model's metrics on a channel (spec 4.1's table, by predictor type)."""

    def __init__(self, model: LinearLearnerModel, channel: str) -> None:
        self.model = model
        self.channel = channel
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self.rows = 0

    def add(self, batch: Batch) -> None:
        problem = self.model.problem
        check_width(batch, self.model.feature_dim)
        y = problem.check_labels(batch.y, channel=self.channel, first_record=self.rows)
        self._scores.append(self.model.raw_scores(batch.X))
        self._labels.append(y)
        self._weights.append(_row_weights(batch))
        self.rows += batch.n_rows

    def combine(self, collective: SingleHost) -> None:
        """Every host's scores, labels and weights, for job-wide metrics (several hosts)."""
        k = self.model.problem.outputs_per_model
        self._scores = [collective.gather_rows(self._scores, (k,) if k > 1 else ())]
        self._labels = [collective.gather_rows(self._labels)]
        self._weights = [collective.gather_rows(self._weights)]
        self.rows = len(self._labels[0])

    def metrics(self) -> list[Metric]:
        if not self.rows:
            return []
        return model_metrics(
            self.model,
            np.concatenate(self._scores),
            y=np.concatenate(self._labels),
            w=np.concatenate(self._weights),
        )


def model_metrics(model: LinearLearnerModel, Z: np.ndarray, *, y: np.ndarray, w: np.ndarray) -> list[Metric]:
    """The metric lines of `model`, whose raw outputs on rows with labels y and weights w are Z."""
    problem = model.problem
    scaler = model.scaler
    hp = problem.hp
    # The objective, from the outputs in the normalised label space.
    Z_normal = ((Z - scaler.label_mean) / scaler.label_scale).astype(np.float32) if Z.ndim == 1 else Z
    losses = np.zeros(1)
    _add_losses(
        np.ascontiguousarray(Z_normal.reshape(len(y), -1)),
        _normal_labels(y, scaler, problem),
        w,
        problem=problem,
        scaler=scaler,
        losses=losses,
    )
    objective = float(losses[0] / max(float(w.sum(dtype=np.float64)), 1e-300) * _loss_unit(problem, scaler))
    found = [Metric(problem.objective_metric, objective)]
    if problem.predictor_type == REGRESSOR:
        values = _metrics.regression_metrics(Z, y, w)
        found += [Metric(name, values[name]) for name in ("mse", "rmse", "absolute_loss")]
    elif problem.predictor_type == BINARY:
        score = _link(Z, problem)
        values = _metrics.binary_metrics(score, y, w, threshold=model.threshold, beta=problem.beta)
        found += [
            Metric("binary_classification_accuracy", values["accuracy"], "score"),
            Metric(f"binary_f_{problem.beta:.3f}", values["f_beta"], "score"),
            Metric("precision", values["precision"], "score"),
            Metric("recall", values["recall"], "score"),
            Metric("roc_auc_score", values["roc_auc"], "score"),
        ]
    else:
        top_k = int(hp["accuracy_top_k"])
        values = _metrics.multiclass_metrics(softmax(Z), y.astype(np.int64), w, top_k=top_k, beta=problem.beta)
        found += [
            Metric("multiclass_accuracy", values["accuracy"], "score"),
            Metric(f"multiclass_top_k_accuracy_{top_k}", values["top_k_accuracy"], "score"),
            Metric("dcg", values["dcg"], "score"),
            Metric("macro_recall", values["macro_recall"], "score"),
            Metric("macro_precision", values["macro_precision"], "score"),
            Metric(f"macro_f_{problem.beta:.3f}", values["macro_f_beta"], "score"),
            Metric("multiclass_balanced_accuracy", values["balanced_accuracy"], "score"),
            # AWS's line reads "<score>" for it too; kept for whoever matches those lines.
            Metric("multiclass_log_loss", values["log_loss"], "score"),
        ]
    return found


# --------------------------------------------------------------------------- training


class LinearLearnerTraining:
    """The driver's StreamingState: the M models, their optimizer state, and what selection
    needs."""

    def __init__(self, hp: dict[str, Any], *, batch_rows: int) -> None:
        self.problem = Problem.of(hp)
        self.settings: ModelSettings = model_settings(hp)
        self.batch_rows = batch_rows
        self.scaler_rows = int(hp["num_point_for_scaler"])
        self.calibration_rows = calibration_samples(hp)
        self.scheduled = bool(hp["use_lr_scheduler"])
        self.selection = Selection(self.settings.count)
        self.rng = np.random.default_rng(SEED)
        self.epoch = 0
        self.step = 0
        self.rows_seen = 0  # in the current pass
        self._pending: list[Batch] = []
        self._pending_rows = 0
        self._sample: list[Batch] = []
        self._sample_rows = 0
        self._sample_limit = 0
        self._epoch_losses = np.zeros(self.settings.count)
        self._epoch_weight = 0.0
        self.scaler: Scaler | None = None
        self.weights = np.zeros((0, 0), np.float32)
        self.bias = np.zeros(0, np.float32)
        # Empty: every positive (binary) or class (multiclass) weighs 1.
        self.positive_weights = _NONE
        self.class_weights = _NONE
        # On a GPU: the models there (_cuda.py), and whether they are ahead of the host arrays
        # (weights, bias, loss sums) since the last download. Restored from a checkpoint, the
        # device is chosen at the first batch after it.
        self._gpu: GpuModels | None = None
        self._gpu_ahead = False
        self._device_pending = False
        # The job's hosts (join), and this host's part of the rows that fit the scaler, of the
        # calibration rows and of the train sample's bytes: on several hosts, each its share.
        self._collective = SINGLE_HOST
        self._scaler_share = self.scaler_rows
        self._calibration_share = self.calibration_rows
        self._sample_bytes = SAMPLE_BYTES
        self._sparse = False  # the job's data (every host's): sparse rows, not centred under auto

    # ---- several hosts

    def join(self, collective: SingleHost) -> None:
        """Train as one of `collective.hosts` hosts (the driver's call, before the first pass).
        Each host streams its own rows and takes its share of num_point_for_scaler, of the
        calibration rows and of the train sample; the scaler is fitted on every host's rows
        (_begin), and at the end of every pass the hosts average their models (combine)."""
        hosts = collective.hosts
        self._collective = collective
        self._scaler_share = -(-self.scaler_rows // hosts)
        self._calibration_share = -(-self.calibration_rows // hosts)
        self._sample_bytes = SAMPLE_BYTES // hosts

    def combine(self, collective: SingleHost) -> None:
        """End of a pass on one of several hosts: every host takes the average of the hosts'
        models and optimizer state, each weighted by the rows it trained on in the pass (a host
        without rows adopts the others'), the largest step count, and the pass's loss sums
        summed; after the first pass, every host's train sample too. The hosts' states are then
        the same, so the first host's checkpoint is every host's."""
        if self.scaler is None:
            self._begin()  # this host's rows were fewer than its share of num_point_for_scaler
        if self._gpu is not None:
            self._gpu.download(self._training_state())
            self._gpu.take_losses(self._epoch_losses)
            self._gpu_ahead = False
        totals = collective.all_reduce_sum(
            np.concatenate([self._epoch_losses, [self._epoch_weight, float(self.rows_seen)]])
        )
        self._epoch_losses[:] = totals[:-2]
        self._epoch_weight, rows = float(totals[-2]), float(totals[-1])
        if rows > 0:
            # The models and their optimizer state.
            collective.average_in_place(list(self._training_state().values()), self.rows_seen / rows)
            steps = collective.all_gather(np.array([[self.step]], dtype=np.int64))
            self.step = max(int(part.max(initial=0)) for part in steps)
        if self.epoch == 0:
            self._sample = _gathered_sample(collective, self._sample, self.weights.shape[0], sparse=self._sparse)
            self._sample_rows = sum(part.n_rows for part in self._sample)
        if self._gpu is not None:
            self._gpu.upload(self._training_state())

    # ---- the StreamingState protocol

    def update(self, batch: Batch) -> None:
        self.problem.check_labels(batch.y, channel="train", first_record=self.rows_seen)
        self.rows_seen += batch.n_rows
        if self.epoch == 0:
            self._keep_sample(batch)
        if self.scaler is None:
            self._pending.append(_owned(batch))
            self._pending_rows += batch.n_rows
            if self._pending_rows >= self._scaler_share:
                self._begin()
        else:
            self._train(batch)

    def end_epoch(self) -> list[Metric]:
        if self.scaler is None:
            self._begin()  # the whole channel is smaller than num_point_for_scaler
        self._sync_from_gpu()
        if self.epoch == 0 and self.rows_seen < self.batch_rows:
            logger.info(
                "mini_batch_size %d is larger than the train channel's %d records: each pass is one batch of "
                "all of them.",
                self.batch_rows,
                self.rows_seen,
            )
        losses = self._epoch_losses / max(self._epoch_weight, 1e-300) * _loss_unit(self.problem, self._scaler)
        self._epoch_losses[:] = 0.0
        self._epoch_weight = 0.0
        self.epoch += 1
        self.rows_seen = 0
        return [Metric(self.problem.objective_metric, float(losses.min()))]

    def current_model(self) -> Candidates:
        self._sync_from_gpu()
        return Candidates(
            self.problem,
            self.weights,
            self.bias,
            self._scaler,
            self.selection,
            epoch=self.epoch - 1,
            calibration_rows=self._calibration_share,
        )

    def finalize(self) -> tuple[LinearLearnerModel, list[Metric]]:
        if self.scaler is None:
            self._begin()
        candidates = self.current_model()
        selection = self.selection
        if not selection.recorded:
            # No validation channel: compare the models on the train sample.
            evaluation = ModelEvaluation(candidates, self.calibration_rows, channel="train")
            for part in self._sample:
                evaluation.add(part)
            values, thresholds = evaluation.compare()
            selection = Selection(self.settings.count)
            selection.record(values, thresholds, candidates)
        best = int(np.argmax(selection.values))
        if not np.isfinite(selection.values[best]):
            raise UserError(
                f"Training diverged: every one of the {self.settings.count} models reached an infinite or undefined "
                "loss. Lower learning_rate (or use optimizer adam), or check the data for extreme values."
            )
        k = self.problem.outputs_per_model
        assert selection.weights is not None and selection.bias is not None
        positive_weight = None
        if self.problem.predictor_type == BINARY:
            positive_weight = float(self.positive_weights[best]) if len(self.positive_weights) else 1.0
        described = self.settings.describe(best, positive_weight)
        logger.info("Best model found for hyperparameters: %s", json.dumps(described))
        if selection.epochs[best] >= 0 and self.selection.recorded:
            logger.info("The best model is model %d as of epoch %d.", best, int(selection.epochs[best]))
        model = LinearLearnerModel(
            self.problem.hp,
            weights=selection.weights[:, best * k : (best + 1) * k],
            bias=selection.bias[best * k : (best + 1) * k],
            scaler=self._scaler,
            threshold=float(selection.thresholds[best]),
            settings=dict(described, model=best),
        )
        # The final model's train metrics, on the sample part by part (never stacked: a copy of
        # up to SAMPLE_BYTES more).
        scorer = ModelScorer(model, "train")
        for part in self._sample:
            scorer.add(part)
        return model, scorer.metrics()

    # ---- checkpoints (the driver's, after a pass and its validation: the pass's sums are zero)

    def checkpoint_arrays(self) -> tuple[StateArrays, StateMetadata]:
        """The models and their optimizer state, the scaler, the class weights, each model's
        best pass so far, and the train sample (model selection without a validation channel)."""
        if self._gpu is not None:
            self._gpu.download(self._training_state())
        scaler, selection = self._scaler, self.selection
        arrays: StateArrays = {
            **self._training_state(),
            "feature_mean": scaler.mean,
            "feature_scale": scaler.scale,
            "positive_weights": np.asarray(self.positive_weights, dtype=np.float64),
            "class_weights": self.class_weights,
            "selection_values": selection.values,
            "selection_thresholds": selection.thresholds,
            "selection_epochs": selection.epochs,
            **_sample_arrays(self._sample, self.weights.shape[0], sparse=self._sparse),
        }
        if selection.weights is not None and selection.bias is not None:
            arrays["selection_weights"], arrays["selection_bias"] = selection.weights, selection.bias
        metadata = {
            "epoch": self.epoch,
            "step": self.step,
            "label_mean": scaler.label_mean,
            "label_scale": scaler.label_scale,
            "sparse": self._sparse,
        }
        return arrays, metadata

    def restore_checkpoint(self, arrays: StateArrays, metadata: StateMetadata) -> None:
        """A fresh state made the checkpoint's; CheckpointMismatch before anything changes."""
        assert self.scaler is None, "restore_checkpoint is for a fresh state"
        count, k = self.settings.count, self.problem.outputs_per_model
        columns = count * k
        weights = arrays.get("weights")
        if weights is None or weights.ndim != 2 or weights.shape[1] != columns or weights.dtype != np.float32:
            found = "none" if weights is None else f"{weights.dtype}{list(weights.shape)}"
            raise CheckpointMismatch(
                f"its array 'weights' is {found}; this job's {count} models need float32[d, {columns}]"
            )
        d = weights.shape[0]
        feature_dim = self.problem.hp["feature_dim"]
        if feature_dim != AUTO and int(feature_dim) != d:
            raise CheckpointMismatch(f"its models have {d} features, and feature_dim is {feature_dim}")
        matrix, row = np.zeros((d, columns), np.float32), np.zeros((1, columns), np.float32)
        restored = {
            "weights": take_array(arrays, "weights", matrix),
            "W_raw": take_array(arrays, "W_raw", matrix),
            "first_moment": take_array(arrays, "first_moment", matrix),
            "second_moment": take_array(arrays, "second_moment", matrix),
            "bias": take_array(arrays, "bias", np.zeros(columns, np.float32)),
            "bias_first_moment": take_array(arrays, "bias_first_moment", row),
            "bias_second_moment": take_array(arrays, "bias_second_moment", row),
            "shift": take_array(arrays, "shift", np.zeros(columns, np.float64)),
            "feature_mean": take_array(arrays, "feature_mean", np.zeros(d, np.float32)),
            "feature_scale": take_array(arrays, "feature_scale", np.zeros(d, np.float32)),
            "selection_values": take_array(arrays, "selection_values", self.selection.values),
            "selection_thresholds": take_array(arrays, "selection_thresholds", self.selection.thresholds),
            "selection_epochs": take_array(arrays, "selection_epochs", self.selection.epochs),
        }
        positive_weights = _optional_array(arrays, "positive_weights", count)
        class_weights = _optional_array(arrays, "class_weights", self.problem.num_classes)
        selection_weights = selection_bias = None
        if "selection_weights" in arrays:
            selection_weights = take_array(arrays, "selection_weights", matrix)
            selection_bias = take_array(arrays, "selection_bias", np.zeros(columns, np.float32))
        sample = _sample_of(arrays, d)
        epoch, step = metadata.get("epoch"), metadata.get("step")
        label_mean, label_scale, sparse = (
            metadata.get("label_mean"),
            metadata.get("label_scale"),
            metadata.get("sparse"),
        )
        if not (isinstance(epoch, int) and epoch >= 1 and isinstance(step, int) and step >= 0):
            raise CheckpointMismatch(f"its epoch={epoch!r} and step={step!r} are not counts of passes and steps")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (label_mean, label_scale)):
            raise CheckpointMismatch(f"its label_mean={label_mean!r} and label_scale={label_scale!r} are not numbers")
        if not isinstance(sparse, bool):
            raise CheckpointMismatch(f"its sparse={sparse!r} is not true or false")
        # Everything checked: the state becomes the checkpoint's.
        self.scaler = Scaler(
            restored.pop("feature_mean"),
            restored.pop("feature_scale"),
            float(cast("float", label_mean)),
            float(cast("float", label_scale)),
        )
        self._prepare_columns(d)
        self.weights, self.bias, self._W_raw, self._shift = (
            restored["weights"],
            restored["bias"],
            restored["W_raw"],
            restored["shift"],
        )
        self._moments = (restored["first_moment"], restored["second_moment"])
        self._bias_moments = (restored["bias_first_moment"], restored["bias_second_moment"])
        self.positive_weights, self.class_weights = positive_weights, class_weights
        selection = self.selection
        selection.values, selection.thresholds, selection.epochs = (
            restored["selection_values"],
            restored["selection_thresholds"],
            restored["selection_epochs"],
        )
        selection.weights, selection.bias = selection_weights, selection_bias
        self._sample = sample
        self._sample_rows = self._sample_limit = sum(part.n_rows for part in sample)
        self.epoch, self.step, self._sparse = epoch, step, sparse
        self._device_pending = True

    # ---- training

    @property
    def _scaler(self) -> Scaler:
        assert self.scaler is not None
        return self.scaler

    def _begin(self) -> None:
        """Fit the scaler on the held rows (every host's, on several), set up the models, and
        train on the held rows."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        collective = self._collective
        if collective.hosts > 1:
            sample = _stack(pending) if pending else None
            d, self._sparse = _agree_on_the_data(collective, sample)
            if sample is None:  # a host without rows takes part with none
                sample = Batch(
                    sp.csr_matrix((0, d), dtype=np.float32) if self._sparse else np.zeros((0, d), np.float32),
                    np.zeros(0, np.float32),
                )
        else:
            sample = _stack(pending) if pending else None
            if sample is None or sample.n_rows == 0:
                raise UserError("The train channel has no records.")
            self._sparse = sample.is_sparse
        head = _head(sample, self._scaler_share)
        y = head.y
        assert y is not None
        self.scaler = fit_scaler(head.X, y, self.problem, sparse=self._sparse, collective=collective)
        self._init_models(sample.n_features, y)
        self._gpu = self._gpu_models(sample)
        logger.info(
            "Linear learner: %d models, %s, loss %s; normalisation from %d records (features %s, label %s).",
            self.settings.count,
            self.settings.optimizer,
            self.problem.loss,
            int(_summed(collective, float(head.n_rows))),
            "centred and scaled" if self.scaler.centred else "scaled" if np.any(self.scaler.scale != 1) else "as given",
            f"mean {self.scaler.label_mean:.6g}, scale {self.scaler.label_scale:.6g}"
            if self.problem.predictor_type == REGRESSOR
            else "not normalised",
        )
        for batch in pending:
            self._train(batch)

    def _init_models(self, d: int, y: np.ndarray) -> None:
        hp = self.problem.hp
        check_model_size(hp, d)  # feature_dim = auto: the data's width is known only now
        columns = self.settings.count * self.problem.outputs_per_model
        if hp["init_method"] == "normal":
            W = self.rng.normal(0.0, float(hp["init_sigma"]), size=(d, columns))
        else:
            scale = float(hp["init_scale"])
            W = self.rng.uniform(-scale, scale, size=(d, columns))
        self.weights = np.ascontiguousarray(W, dtype=np.float32)
        use_bias = bool(hp["use_bias"])
        self.bias = np.full(columns, float(hp["init_bias"]) if use_bias else 0.0, np.float32)
        self._moments = (np.zeros_like(self.weights), np.zeros_like(self.weights))
        self._bias_moments = (np.zeros((1, columns), np.float32), np.zeros((1, columns), np.float32))
        self._prepare_columns(d)
        # The weights on raw features and the shift the centring adds (see Scaler.effective),
        # kept up to date by the update kernel.
        W_raw, b_raw = self._scaler.effective(self.weights, np.zeros(columns, np.float32))
        self._W_raw, self._shift = W_raw, -b_raw.astype(np.float64)
        self._init_class_weights(y)

    def _prepare_columns(self, d: int) -> None:
        """The per-column settings and working arrays of models of `d` features."""
        columns = self.settings.count * self.problem.outputs_per_model
        # Per column (each model's value repeated over its outputs), as the update kernel reads them.
        k = self.problem.outputs_per_model
        settings = self.settings
        self._rates = np.zeros(columns, np.float32)
        self._wd = np.repeat(settings.wd, k).astype(np.float32)
        self._l1 = np.repeat(settings.l1, k).astype(np.float32)
        self._bias_wd = self._wd * np.float32(settings.bias_wd_mult)
        self._no_sums = np.zeros(columns, np.float32)
        self._no_l1 = np.zeros(columns, np.float32)
        self._bias_scratch = np.zeros((1, columns), np.float32)
        self._all_rows = np.arange(d, dtype=np.int64)
        # Sparse batches: the touched features' gradient rows, and the feature -> row map.
        self._sparse_gradient = np.zeros((0, columns), np.float32)
        self._slots = np.full(d, -1, np.int32)
        self._touched = np.zeros(d, np.int64)

    def _init_class_weights(self, y: np.ndarray) -> None:
        """The positive example weights (binary) or class weights (multiclass) that the scaler's
        rows `y` (every host's, on several) give."""
        hp = self.problem.hp
        collective = self._collective
        if self.problem.predictor_type == BINARY:
            counts = collective.all_reduce_sum(np.array([float(np.sum(y == 1)), float(len(y))]))
            positives, rows = float(counts[0]), float(counts[1])
            ratio = (rows - positives) / positives if positives > 0 and positives < rows else 1.0
            mult = positive_example_weight_mult(str(hp["positive_example_weight_mult"]))
            if self.settings.positive_weight_exponent is not None:
                self.positive_weights = ratio**self.settings.positive_weight_exponent
            else:
                weight = ratio if mult == "balanced" else float(mult)
                if weight != 1.0:
                    self.positive_weights = np.full(self.settings.count, weight)
        elif self.problem.predictor_type == MULTICLASS and hp["balance_multiclass_weights"]:
            counts = np.bincount(y.astype(np.int64), minlength=self.problem.num_classes).astype(np.float64)
            counts = collective.all_reduce_sum(counts)
            # Classes missing from the sample weigh like the rarest one present.
            present = counts > 0
            weights = np.ones_like(counts)
            weights[present] = counts.sum() / (present.sum() * counts[present])
            weights[~present] = weights[present].max() if present.any() else 1.0
            self.class_weights = weights

    def _gpu_models(self, sample: Batch) -> GpuModels | None:
        """The models on the GPU, when this job trains there: dense data, a mini-batch worth it
        and a GPU to use (device.use_gpu(), asked only then); else None, the CPU."""
        if sample.is_sparse:
            return None
        work = min(self.batch_rows, sample.n_rows) * sample.n_features * self.weights.shape[1]
        if work < MIN_GPU_WORK or not device.use_gpu():
            return None
        from ._cuda import GpuModels  # imports numba.cuda: only once a GPU is used

        settings = self.settings
        logger.info("Linear learner trains on the GPU.")
        return GpuModels(
            self._training_state(),
            mean=self._scaler.mean,
            inverse_scale=self._scaler.inverse_scale,
            centred=self._scaler.centred,
            weight_decays=self._wd,
            l1s=self._l1,
            bias_weight_decays=self._bias_wd,
            positive_weights=self.positive_weights,
            class_weights=self.class_weights,
            loss=LOSSES[self.problem.loss],
            loss_parameter=_scaled_parameter(self.problem, self._scaler),
            n_outputs=self.problem.outputs_per_model,
            optimizer=OPTIMIZERS[settings.optimizer],
            momentum=settings.momentum,
            beta_1=settings.beta_1,
            beta_2=settings.beta_2,
            bias_lr_mult=settings.bias_lr_mult,
            use_bias=bool(self.problem.hp["use_bias"]),
        )

    def _training_state(self) -> dict[str, np.ndarray]:
        """The arrays a training step changes, by _cuda.STATE's names."""
        return {
            "weights": self.weights,
            "W_raw": self._W_raw,
            "first_moment": self._moments[0],
            "second_moment": self._moments[1],
            "bias": self.bias,
            "bias_first_moment": self._bias_moments[0],
            "bias_second_moment": self._bias_moments[1],
            "shift": self._shift,
        }

    def _sync_from_gpu(self) -> None:
        """Bring the GPU's weights, bias and loss sums to the host (for the CPU's use of them)."""
        if self._gpu is not None and self._gpu_ahead:
            self._gpu.download(self._training_state(), ("weights", "bias"))
            self._gpu.take_losses(self._epoch_losses)
            self._gpu_ahead = False

    def _train(self, batch: Batch) -> None:
        if self._device_pending:  # restored from a checkpoint: the device is chosen now
            self._device_pending = False
            self._gpu = self._gpu_models(batch)
        gpu = self._gpu
        if gpu is None:
            self._train_on_cpu(batch)
        elif batch.is_sparse or batch.n_rows == 0:
            # A sparse (or empty) batch in a GPU job: on the CPU, the whole state brought over
            # and back.
            gpu.download(self._training_state())
            gpu.take_losses(self._epoch_losses)
            self._gpu_ahead = False
            self._train_on_cpu(batch)
            gpu.upload(self._training_state())
        else:
            self._train_on_gpu(gpu, batch)

    def _train_on_gpu(self, gpu: GpuModels, batch: Batch) -> None:
        """The GPU's step (_cuda.py), which keeps its state; the learning rates and the row
        weight of the pass are the CPU's, as in _train_on_cpu."""
        y = batch.y
        assert y is not None and self.scaler is not None
        w = _row_weights(batch)
        self._next_step(w)
        gpu.train(batch.X, _normal_labels(y, self.scaler, self.problem), w, self._rates, self.step)
        self._gpu_ahead = True

    def _next_step(self, w: np.ndarray) -> None:
        """Count the batch's row weight into the pass and set the learning rates of the next
        update, whichever device makes it."""
        settings = self.settings
        self._epoch_weight += float(w.sum(dtype=np.float64))
        kernels.learning_rates(
            self._rates,
            settings.learning_rate,
            settings.lr_scheduler_factor,
            settings.lr_scheduler_step,
            settings.lr_scheduler_minimum_lr,
            self.step,
            self.scheduled,
        )
        self.step += 1

    def _train_on_cpu(self, batch: Batch) -> None:
        y = batch.y
        assert y is not None and self.scaler is not None
        w = _row_weights(batch)
        scaler = self.scaler
        problem = self.problem
        settings = self.settings
        with single_threaded_blas():
            G = forward(batch.X, self._W_raw, (self.bias - self._shift).astype(np.float32))
            kernels.loss_and_gradient(
                G,
                _normal_labels(y, scaler, problem),
                w,
                self.positive_weights,
                self.class_weights,
                LOSSES[problem.loss],
                _scaled_parameter(problem, scaler),
                problem.outputs_per_model,
                True,
                self._epoch_losses,
            )
            lazy = batch.is_sparse and not scaler.centred
            if lazy:
                X = cast("sp.csr_matrix", batch.X)
                if self._sparse_gradient.shape[0] < min(X.nnz, self.weights.shape[0]):
                    self._sparse_gradient = np.zeros((min(X.nnz, self.weights.shape[0]), G.shape[1]), np.float32)
                rows = self._touched
                count = kernels.csr_gradient_rows(
                    X.indptr, X.indices, X.data, G, self._slots, rows, self._sparse_gradient
                )
                gradient = self._sparse_gradient
            else:
                # Every row: a dense batch's gradient is dense, and with centring so is a sparse one's.
                gradient = np.ascontiguousarray(batch.X.T @ G, dtype=np.float32)
                rows, count = self._all_rows, len(self._all_rows)
        column_sums = G.sum(axis=0)
        self._next_step(w)
        optimizer = OPTIMIZERS[settings.optimizer]
        common = (optimizer, settings.momentum, settings.beta_1, settings.beta_2, self.step)
        kernels.update_rows(
            self.weights,
            rows,
            count,
            gradient,
            column_sums,
            scaler.mean,
            scaler.inverse_scale,
            *self._moments,
            self._rates,
            self._wd,
            self._l1,
            *common,
            self._W_raw,
        )
        if scaler.centred:
            self._shift = (scaler.mean * scaler.inverse_scale).astype(np.float64) @ self.weights
        if problem.hp["use_bias"]:
            # The bias is one more row: raw gradient column_sums, no scaling, no l1.
            kernels.update_rows(
                self.bias.reshape(1, -1),
                _FIRST_ROW,
                1,
                column_sums.reshape(1, -1),
                self._no_sums,
                _NO_CENTRE,
                _NO_SCALE,
                *self._bias_moments,
                self._rates * np.float32(settings.bias_lr_mult),
                self._bias_wd,
                self._no_l1,
                *common,
                self._bias_scratch,
            )

    # ---- the train sample

    def _keep_sample(self, batch: Batch) -> None:
        if not self._sample_limit:
            if batch.is_sparse:
                row_bytes = max(1, cast("sp.csr_matrix", batch.X).nnz * 8 // max(batch.n_rows, 1))
            else:
                row_bytes = batch.n_features * 4
            self._sample_limit = max(1, min(self._calibration_share, self._sample_bytes // row_bytes))
        if self._sample_rows < self._sample_limit:
            part = _head(batch, self._sample_limit - self._sample_rows)
            self._sample.append(_owned(part))
            self._sample_rows += part.n_rows


def _agree_on_the_data(collective: SingleHost, sample: Batch | None) -> tuple[int, bool]:
    """(features, sparse) of every host's train rows: a host without rows takes the others'
    width; UserError when the hosts' data have different widths or there are none."""
    mine = [-1, 0] if sample is None else [sample.n_features, int(sample.is_sparse)]
    found = np.concatenate(collective.all_gather(np.array([mine], dtype=np.int64)))
    widths = sorted({int(width) for width, _ in found if width >= 0})
    if not widths:
        raise UserError("The train channel has no records on any host.")
    if len(widths) > 1:
        described = ", ".join(f"host {rank + 1}: {int(width)}" for rank, (width, _) in enumerate(found) if width >= 0)
        raise UserError(f"The hosts' train data have different numbers of features ({described}).")
    return widths[0], bool(found[:, 1].any())


def _gathered_sample(collective: SingleHost, sample: list[Batch], d: int, *, sparse: bool) -> list[Batch]:
    """Every host's train sample, in host order, one part a host (a host without rows adds none)."""
    local = _stack(sample) if sample else None
    y = np.zeros(0, np.float32) if local is None else np.asarray(local.y, dtype=np.float32)
    w = np.zeros(0, np.float32) if local is None else _row_weights(local).astype(np.float32, copy=False)
    labels, weights = collective.all_gather(y), collective.all_gather(w)
    if sparse:
        csr = sp.csr_matrix((0, d), dtype=np.float32) if local is None else sp.csr_matrix(local.X, dtype=np.float32)
        counts = collective.all_gather(np.diff(csr.indptr).astype(np.int64))
        indices = collective.all_gather(csr.indices.astype(np.int64))
        data = collective.all_gather(csr.data.astype(np.float32))
        matrices = [
            sp.csr_matrix((values, columns, np.concatenate([[0], np.cumsum(nnz)])), shape=(len(nnz), d))
            for nnz, columns, values in zip(counts, indices, data, strict=True)
        ]
    else:
        dense = np.zeros((0, d), np.float32) if local is None else np.asarray(local.X, dtype=np.float32)
        matrices = collective.all_gather(dense)
    return [Batch(X, y, w) for X, y, w in zip(matrices, labels, weights, strict=True) if len(y)]


def _sample_arrays(sample: list[Batch], d: int, *, sparse: bool) -> StateArrays:
    """The train sample as a checkpoint's arrays: its parts' row counts, labels, weights and
    rows (dense, or CSR's three arrays)."""
    stacked = _stack(sample) if sample else Batch(np.zeros((0, d), np.float32), np.zeros(0, np.float32))
    arrays: StateArrays = {
        "sample_parts": np.array([part.n_rows for part in sample], dtype=np.int64),
        "sample_y": np.asarray(stacked.y, dtype=np.float32),
        "sample_w": _row_weights(stacked).astype(np.float32, copy=False),
    }
    if sparse:
        csr = sp.csr_matrix(stacked.X, dtype=np.float32)
        arrays |= {
            "sample_indptr": csr.indptr.astype(np.int64),
            "sample_indices": csr.indices.astype(np.int64),
            "sample_data": csr.data,
        }
    else:
        arrays["sample_X"] = np.asarray(stacked.X, dtype=np.float32)
    return arrays


def _sample_of(arrays: StateArrays, d: int) -> list[Batch]:
    """The train sample _sample_arrays wrote, in its parts; CheckpointMismatch when the arrays
    do not fit together or have not `d` features."""
    parts, y, w = (arrays.get(name) for name in ("sample_parts", "sample_y", "sample_w"))
    if parts is None or y is None or w is None:
        raise CheckpointMismatch("it has no train sample (sample_parts, sample_y, sample_w)")
    rows = len(y)
    if (
        parts.ndim != 1
        or parts.dtype.kind != "i"
        or (parts < 0).any()
        or int(parts.sum()) != rows
        or w.shape != y.shape
    ):
        raise CheckpointMismatch("its train sample's arrays sample_parts, sample_y and sample_w do not fit together")
    if "sample_X" in arrays:
        X = arrays["sample_X"]
        if X.shape != (rows, d) or X.dtype.kind != "f":
            raise CheckpointMismatch(f"its array 'sample_X' is {X.dtype}{list(X.shape)}, not float[{rows}, {d}]")
        matrix: np.ndarray | sp.csr_matrix = X
    else:
        indptr, indices, data = (arrays.get(name) for name in ("sample_indptr", "sample_indices", "sample_data"))
        if indptr is None or indices is None or data is None:
            raise CheckpointMismatch(
                "its train sample has neither sample_X nor sample_indptr, sample_indices and sample_data"
            )
        if (
            indptr.shape != (rows + 1,)
            or indptr[0] != 0
            or (np.diff(indptr) < 0).any()
            or indptr[-1] != len(indices)
            or indices.shape != data.shape
            or (len(indices) and (indices.min() < 0 or indices.max() >= d))
        ):
            raise CheckpointMismatch("its train sample's CSR arrays do not fit together or have not its features")
        matrix = sp.csr_matrix((data, indices, indptr), shape=(rows, d))
    starts = np.concatenate([[0], np.cumsum(parts)])
    return [Batch(matrix[a:b], y[a:b], w[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True) if b > a]


def _optional_array(arrays: StateArrays, name: str, length: int) -> np.ndarray:
    """arrays[name], a float64 vector that is empty or of `length` values."""
    array = arrays.get(name)
    if array is None or array.dtype != np.float64 or array.shape not in ((0,), (length,)):
        found = "none" if array is None else f"{array.dtype}{list(array.shape)}"
        raise CheckpointMismatch(f"its array {name!r} is {found}, not float64[0] or float64[{length}]")
    return np.array(array, copy=True)


def _owned(batch: Batch) -> Batch:
    """A batch whose arrays are not views into a decoder's buffers."""
    X = batch.X.copy()
    return Batch(X, None if batch.y is None else batch.y.copy(), None if batch.w is None else batch.w.copy())


def _head(batch: Batch, rows: int) -> Batch:
    if batch.n_rows <= rows:
        return batch
    return Batch(
        batch.X[:rows], None if batch.y is None else batch.y[:rows], None if batch.w is None else batch.w[:rows]
    )


def _stack(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    if any(b.is_sparse for b in batches):
        X = sp.vstack([b.X if b.is_sparse else sp.csr_matrix(b.X) for b in batches], format="csr")
    else:
        X = np.concatenate([b.X for b in batches])
    y = np.concatenate([b.y for b in batches]) if batches[0].y is not None else None
    w = np.concatenate([_row_weights(b) for b in batches]) if any(b.w is not None for b in batches) else None
    return Batch(X, y, w)


def load(files, problem_hp: dict[str, Any]) -> LinearLearnerModel:
    """The model saved in `files` (ModelFiles of a linear-learner model directory)."""
    feature_dim = files.integer("feature_dim")
    outputs = files.integer("outputs_per_model")
    scaler = Scaler(
        files.array("feature_mean", shape=(feature_dim,)).astype(np.float32),
        files.array("feature_scale", shape=(feature_dim,)).astype(np.float32),
        files.number("label_mean"),
        files.number("label_scale"),
    )
    return LinearLearnerModel(
        problem_hp,
        weights=files.array("weights", shape=(feature_dim, outputs)),
        bias=files.array("bias", shape=(outputs,)),
        scaler=scaler,
        threshold=files.number("threshold"),
        settings=files.mapping("selected_model"),
    )
