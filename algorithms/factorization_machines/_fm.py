"""Factorization machines (SageMaker `factorization-machines`, spec section 4.4): training, the
model, its files and its metrics.

The model is y = w0 + sum_j w_j x_j + sum_{i<j} <v_i, v_j> x_i x_j, with V of shape
(feature_dim, num_factors), computed in O(num_factors x non-zeros) per row (_kernels.py). A
regressor's score is y, trained with squared loss; a binary classifier's score is sigmoid(y),
trained with log loss, and its predicted_label is 1 when the score is at least 0.5.

How it trains, where AWS's documentation is silent (AWS's image is MXNet's, whose FM trains with
per-group learning rates and weight decays on row-sparse weights):

* The optimizer is AdaGrad as MXNet writes it (the hyperparameters eps, clip_gradient and
  rescale_grad are its parameters): per parameter g = rescale_grad x the mini-batch's summed
  gradient, clipped to [-clip_gradient, clip_gradient]; h += g^2;
  p -= lr (g / sqrt(h + eps) + wd p), with the lr and wd of its group (bias_*, linear_*,
  factors_*). rescale_grad defaults to 1 / the batch's rows (the mean gradient, as MXNet's
  Module sets it), eps to 1e-7 (MXNet's AdaGrad), clip_gradient to none.
* Updates are lazy: a mini-batch updates w0 and the w_j, v_j of the features that are non-zero
  in it, nothing else (weight decay included), as MXNet's optimizers do for row-sparse
  gradients. A dense batch is read as its non-zeros, so it follows the same rule.
* Cores: a batch's rows are split over the threads when it is worth it
  (runtime/threads.run_in_row_chunks), each thread adding its rows' gradient into a table of its
  own, summed before the step: no locks and no shared writes on the hot path, and the step of
  one thread up to the order of the sums. (Hogwild, threads stepping the shared weights with
  batches of their own, was measured first: on 2 busy cores it was slower than one thread, its
  threads fighting over the cache lines of the features every row has, and its result varied
  from run to run, test RMSE 0.116-0.268 where one thread gives 0.121; docs/factorization-machines.md.)
* Initial values: bias, linear and factors each drawn by their *_init_method (normal with
  *_init_sigma, uniform on [-*_init_scale, *_init_scale], or *_init_value), from a fixed seed.
* The train metric of a pass (rmse, or binary_classification_cross_entropy) is measured on each
  batch just before its step, the way SGD sees it.
* Several hosts: each trains on its rows; at the end of every pass the hosts' weights and
  accumulators are averaged, weighted by the rows each trained on (combine): one exchange of
  2 x feature_dim x (num_factors + 1) floats a pass. Averaging once a pass converges in more
  passes than one host: on a rank-4 user x item regression (tests/test_several_hosts.py, 6,000
  rows, noise 0.1) 2 hosts reached a test RMSE 4.8 % above one host's after 8 passes, and after
  20 passes 0.1 % below it (3 hosts: 0.4 % above). Fewer rows a host need more passes: 3 hosts,
  one of them without rows and the two others with 1,500 each, were 1.4 % above after 20 passes
  and 0.2 % below after 30 (the test now runs 30).
* On a GPU (runtime/device.py), training runs there (_cuda.py: the same step, weights kept on the
  device); the choice is made once, at the first batch.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any, cast

import numba
import numpy as np
import scipy.sparse as sp

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.checkpoints import StateArrays, StateMetadata, take_array
from smalgo.algorithms.contract import check_width
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.linear_learner._metrics import binary_metrics, regression_metrics
from smalgo.algorithms.metrics import Metric
from smalgo.algorithms.model_files import ModelFiles, save_model_files
from smalgo.algorithms.runtime import device
from smalgo.algorithms.runtime.collective import SingleHost
from smalgo.algorithms.runtime.threads import run_in_row_chunks

from . import _kernels as kernels

if TYPE_CHECKING:
    from ._cuda import GpuMachine

logger = logging.getLogger(__name__)

NAME = "factorization-machines"
FORMAT_VERSION = 1
BINARY = "binary_classifier"
REGRESSOR = "regressor"
PREDICTOR_TYPES = (BINARY, REGRESSOR)
GROUPS = ("bias", "linear", "factors")
INIT_METHODS = ("normal", "uniform", "constant")
# What each init method reads (the others' parameters must not be given with it).
INIT_PARAMETER = {"normal": "sigma", "uniform": "scale", "constant": "value"}
# Documented defaults of the *_init_sigma hyperparameters (the schema leaves them unset, so that
# one given with another init method can be told from the default).
DEFAULT_SIGMA = {"bias": 0.01, "linear": 0.01, "factors": 0.001}
# MXNet AdaGrad's default epsilon, used when eps is not given.
DEFAULT_EPS = 1e-7
SEED = 0
# A score is a positive prediction from this value up (spec 4.4: label 1 when score >= 0.5).
POSITIVE_FROM = 0.5
# A job trains on the GPU (when one is used) only if its first batch's step has at least this many
# multiply-adds (3 x non-zeros x (num_factors + 1)): below it the CPU's step takes well under a
# millisecond, about what the kernel launches and copies cost. A round guess, as linear
# learner's; smaller jobs never look for a GPU.
MIN_GPU_WORK = 1 << 22
# V of more values than this is refused before any data is read (training holds V, its AdaGrad
# accumulator and the gradient rows of a batch: 2**28 float32 values are 1 GiB each).
MAX_FACTOR_VALUES = 1 << 28


def init_parameter_name(group: str, method: str) -> str:
    return f"{group}_init_{INIT_PARAMETER[method]}"


def check_init(hp: dict[str, Any]) -> None:
    """UserError naming both hyperparameters when an init method's parameter is given without
    that method, or a method is chosen without the parameter it needs."""
    for group in GROUPS:
        method = hp[f"{group}_init_method"]
        for other, parameter in INIT_PARAMETER.items():
            name = f"{group}_init_{parameter}"
            if other != method and hp[name] is not None:
                raise UserError(
                    f"Hyperparameter {name} is given, but {group}_init_method is {method}: {name} applies to "
                    f"{group}_init_method {other} only. Remove {name}, or set {group}_init_method to {other}."
                )
        needed = init_parameter_name(group, method)
        if method != "normal" and hp[needed] is None:
            raise UserError(f"Hyperparameter {group}_init_method is {method}, which needs {needed}; it is not given.")


def check_model_size(feature_dim: int, num_factors: int) -> None:
    if feature_dim * num_factors > MAX_FACTOR_VALUES:
        raise UserError(
            f"feature_dim {feature_dim} x num_factors {num_factors} = {feature_dim * num_factors} factor values is "
            f"more than the {MAX_FACTOR_VALUES} this implementation trains; lower num_factors."
        )


def initial_values(hp: dict[str, Any], group: str, shape: tuple[int, ...], *, rng: np.random.Generator) -> np.ndarray:
    method = hp[f"{group}_init_method"]
    if method == "constant":
        return np.full(shape, float(hp[f"{group}_init_value"]), np.float32)
    if method == "uniform":
        scale = float(hp[f"{group}_init_scale"])
        return rng.uniform(-scale, scale, shape).astype(np.float32)
    sigma = hp[f"{group}_init_sigma"]
    return rng.normal(0.0, DEFAULT_SIGMA[group] if sigma is None else float(sigma), shape).astype(np.float32)


def as_csr(X: np.ndarray | sp.csr_matrix) -> sp.csr_matrix:
    """The rows as CSR of their non-zeros (a dense batch's zeros are no work for the kernels)."""
    if sp.issparse(X):
        return cast("sp.csr_matrix", X)
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def check_labels(predictor_type: str, y: np.ndarray | None, *, channel: str, first_record: int) -> np.ndarray:
    """The labels, or a UserError naming the first bad one by its record number (from 1)."""
    if y is None:
        raise UserError(
            f"The {channel} channel's records carry no label; factorization machines need one per record "
            f'(the RecordIO-protobuf record\'s "values" label).'
        )
    if predictor_type == BINARY:
        bad = (y != 0) & (y != 1)
        what = "0 or 1 (predictor_type binary_classifier)"
    else:
        bad = ~np.isfinite(y)
        what = "a finite number"
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(
            f"Record {first_record + i + 1} of the {channel} channel has label {float(y[i])!r}; expected {what}."
        )
    return y


def sigmoid(z: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


# --------------------------------------------------------------------------- the model


class FactorizationMachinesModel:
    """w0, w (feature_dim,) and V (feature_dim, num_factors), and the predictor type."""

    def __init__(self, hp: dict[str, Any], *, w0: np.ndarray, w: np.ndarray, V: np.ndarray) -> None:
        self.hp = hp
        self.predictor_type = str(hp["predictor_type"])
        self.w0 = np.ascontiguousarray(w0, dtype=np.float32).reshape(1)
        self.w = np.ascontiguousarray(w, dtype=np.float32)
        self.V = np.ascontiguousarray(V, dtype=np.float32)

    @property
    def feature_dim(self) -> int:
        return int(self.w.shape[0])

    def raw_outputs(self, X: np.ndarray | sp.csr_matrix) -> np.ndarray:
        """y before the logistic, one per row (float32)."""
        csr = as_csr(X)
        out = np.empty(csr.shape[0], np.float32)
        kernels.predict_rows(csr.indptr, csr.indices, csr.data, self.w0[0], self.w, self.V, out)
        return out

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        check_width(batch, self.feature_dim)
        z = self.raw_outputs(batch.X)
        if self.predictor_type == REGRESSOR:
            return {"score": z}
        score = sigmoid(z)
        return {"score": score, "predicted_label": (score >= POSITIVE_FROM).astype(np.float32)}

    def save(self, model_dir) -> None:
        save_model_files(
            model_dir,
            {
                "algorithm": NAME,
                "format_version": FORMAT_VERSION,
                "feature_dim": self.feature_dim,
                "num_factors": int(self.V.shape[1]),
                "predictor_type": self.predictor_type,
                "score": (
                    "w0 + x @ w + 0.5 * sum((x @ V)**2 - (x**2) @ (V**2), axis=1)"
                    + ("" if self.predictor_type == REGRESSOR else ", through the logistic function")
                ),
                "hyperparameters": self.hp,
            },
            {"w0": self.w0, "w": self.w, "V": self.V},
        )


def load(files: ModelFiles, hp: dict[str, Any]) -> FactorizationMachinesModel:
    feature_dim = files.integer("feature_dim")
    num_factors = files.integer("num_factors")
    return FactorizationMachinesModel(
        hp,
        w0=files.array("w0", shape=(1,)),
        w=files.array("w", shape=(feature_dim,)),
        V=files.array("V", shape=(feature_dim, num_factors)),
    )


# --------------------------------------------------------------------------- metrics


def log_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's log loss of sigmoid(z) against y, computed from z without overflow."""
    z64 = z.astype(np.float64)
    return np.log1p(np.exp(-np.abs(z64))) + np.maximum(z64, 0.0) - y * z64


def model_metrics(predictor_type: str, z: np.ndarray, y: np.ndarray, *, w: np.ndarray | None) -> list[Metric]:
    """The metrics of spec 4.4 for raw outputs z against labels y (row weights w, or None)."""
    if predictor_type == REGRESSOR:
        return [Metric("rmse", regression_metrics(z, y, w)["rmse"])]
    weights = np.ones(len(y)) if w is None else w.astype(np.float64)
    cross_entropy = float(np.dot(weights, log_loss(z, y)) / weights.sum())
    # binary_metrics predicts positive above its threshold: the float32 just below 0.5 makes that
    # "score >= 0.5" for float32 scores.
    threshold = float(np.nextafter(np.float32(POSITIVE_FROM), np.float32(0.0)))
    values = binary_metrics(sigmoid(z), y, w, threshold=threshold, beta=1.0)
    return [
        Metric("binary_classification_accuracy", values["accuracy"], "score"),
        Metric("binary_classification_cross_entropy", cross_entropy),
        Metric("binary_f_beta", values["f_beta"], "score"),
    ]


class ModelScorer:
    """The model's metrics over a channel's batches (test scoring)."""

    def __init__(self, model: FactorizationMachinesModel, channel: str) -> None:
        self.model = model
        self.channel = channel
        self.rows = 0
        self._outputs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []

    def add(self, batch: Batch) -> None:
        check_width(batch, self.model.feature_dim)
        y = check_labels(self.model.predictor_type, batch.y, channel=self.channel, first_record=self.rows)
        self._outputs.append(self.model.raw_outputs(batch.X))
        self._labels.append(y)
        self._weights.append(np.ones(batch.n_rows, np.float32) if batch.w is None else batch.w)
        self.rows += batch.n_rows

    def combine(self, collective: SingleHost) -> None:
        """Every host's outputs, labels and weights, for job-wide metrics (several hosts)."""
        for parts in (self._outputs, self._labels, self._weights):
            parts[:] = [collective.gather_rows(parts)]
        self.rows = len(self._labels[0])

    def metrics(self) -> list[Metric]:
        if not self.rows:
            return []
        return model_metrics(
            self.model.predictor_type,
            np.concatenate(self._outputs),
            np.concatenate(self._labels),
            w=np.concatenate(self._weights),
        )


# --------------------------------------------------------------------------- training


# The weights and their AdaGrad accumulators: what the hosts average and a checkpoint keeps.
STATE_ARRAYS = ("w0", "w", "V", "h0", "hw", "hV")


class FactorizationMachinesTraining:
    """The driver's StreamingState: the weights, their AdaGrad accumulators, the pass's loss."""

    def __init__(self, hp: dict[str, Any]) -> None:
        self.hp = hp
        self.predictor_type = str(hp["predictor_type"])
        self.loss = kernels.SQUARED if self.predictor_type == REGRESSOR else kernels.LOGISTIC
        d, k = int(hp["feature_dim"]), int(hp["num_factors"])
        check_model_size(d, k)
        rng = np.random.default_rng(SEED)
        self.w0 = initial_values(hp, "bias", (1,), rng=rng)
        self.w = initial_values(hp, "linear", (d,), rng=rng)
        self.V = initial_values(hp, "factors", (d, k), rng=rng)
        self.h0 = np.zeros(1, np.float32)
        self.hw = np.zeros(d, np.float32)
        self.hV = np.zeros((d, k), np.float32)
        self.lrs = np.array([hp[f"{group}_lr"] for group in GROUPS], np.float32)
        self.wds = np.array([hp[f"{group}_wd"] for group in GROUPS], np.float32)
        self.rescale = float(hp["rescale_grad"]) if hp["rescale_grad"] is not None else 0.0
        self.clip = float(hp["clip_gradient"]) if hp["clip_gradient"] is not None else 0.0
        self.eps = float(hp["eps"]) if hp["eps"] is not None else DEFAULT_EPS
        # A batch's scratch: the feature -> table row map (all -1 between batches), the touched
        # features, and one gradient table and one set of sums per thread taking its rows.
        threads = max(1, numba.get_num_threads())
        self._slots = np.full(d, -1, np.int32)
        self._touched = np.zeros(0, np.int64)
        self._tables = np.zeros((threads, 0, k + 1), np.float32)
        self._sums = np.zeros((threads, 3))
        self._pass_totals = np.zeros(2)  # weighted loss, row weight
        self.rows_seen = 0  # in the current pass
        self._gpu: GpuMachine | None = None
        self._device_chosen = False

    # ---- the StreamingState protocol

    def update(self, batch: Batch) -> None:
        y = check_labels(self.predictor_type, batch.y, channel="train", first_record=self.rows_seen)
        self.rows_seen += batch.n_rows
        weights = np.ones(batch.n_rows, np.float32) if batch.w is None else batch.w
        X = as_csr(batch.X)
        if not self._device_chosen:
            self._gpu = self._gpu_machine(X)
            self._device_chosen = True
        if self._gpu is not None:
            self._gpu.train(X, y, weights)
        else:
            self._train(X, y, weights)

    def combine(self, collective: SingleHost) -> None:
        """End of a pass on one of several hosts: every host takes the average of the hosts'
        weights and AdaGrad accumulators, each weighted by the rows it trained on in the pass
        (a host without rows adopts the others'), and the pass's loss is summed."""
        if self._gpu is not None:
            for name in STATE_ARRAYS:
                self._gpu.arrays[name].copy_to_host(getattr(self, name))
            self._pass_totals += self._gpu.take_totals()
        self._pass_totals = collective.all_reduce_sum(self._pass_totals)
        rows = float(collective.all_reduce_sum(np.array([float(self.rows_seen)]))[0])
        if rows == 0:
            return
        collective.average_in_place([getattr(self, name) for name in STATE_ARRAYS], np.float32(self.rows_seen / rows))
        if self._gpu is not None:
            for name in STATE_ARRAYS:
                self._gpu.arrays[name].copy_to_device(getattr(self, name))

    def end_epoch(self) -> list[Metric]:
        if self._gpu is not None:
            self._pass_totals += self._gpu.take_totals()
        loss, weight = self._pass_totals
        self._pass_totals[:] = 0.0
        self.rows_seen = 0
        mean = loss / max(weight, 1e-300)
        if self.predictor_type == REGRESSOR:
            return [Metric("rmse", float(np.sqrt(mean)))]
        return [Metric("binary_classification_cross_entropy", float(mean))]

    def current_model(self) -> FactorizationMachinesModel:
        if self._gpu is not None:
            self._gpu.download(self.w0, self.w, self.V)
        if not (np.isfinite(self.w0).all() and np.isfinite(self.w).all() and np.isfinite(self.V).all()):
            raise UserError(
                "Training diverged: the weights reached infinite or undefined values. Lower the learning rates "
                "(bias_lr, linear_lr, factors_lr), set clip_gradient, or check the data for extreme values."
            )
        return FactorizationMachinesModel(self.hp, w0=self.w0.copy(), w=self.w.copy(), V=self.V.copy())

    def finalize(self) -> tuple[FactorizationMachinesModel, list[Metric]]:
        return self.current_model(), []

    # ---- checkpoints (the driver's, after a pass: the pass's loss and row count are zero then)

    def checkpoint_arrays(self) -> tuple[StateArrays, StateMetadata]:
        """The weights and their AdaGrad accumulators (from the GPU when it trains there)."""
        if self._gpu is not None:
            for name in STATE_ARRAYS:
                self._gpu.arrays[name].copy_to_host(getattr(self, name))
        return {name: getattr(self, name) for name in STATE_ARRAYS}, {}

    def restore_checkpoint(self, arrays: StateArrays, metadata: StateMetadata) -> None:
        # Before the first batch: a GPU machine, made then, starts from these arrays.
        assert self._gpu is None, "restore_checkpoint is for a fresh state"
        restored = {name: take_array(arrays, name, getattr(self, name)) for name in STATE_ARRAYS}
        for name, array in restored.items():
            setattr(self, name, array)

    # ---- training

    def _gpu_machine(self, X: sp.csr_matrix) -> GpuMachine | None:
        """The weights on the GPU, when this job trains there: a first batch worth it and a GPU
        to use (device.use_gpu(), asked only then); else None, the CPU."""
        if 3 * X.nnz * (self.V.shape[1] + 1) < MIN_GPU_WORK or not device.use_gpu():
            return None
        from ._cuda import GpuMachine  # imports numba.cuda: only once a GPU is used

        logger.info("Factorization machines train on the GPU.")
        return GpuMachine(self)

    def _train(self, X: sp.csr_matrix, y: np.ndarray, weights: np.ndarray) -> None:
        """One mini-batch step on the CPU; the rows over the threads when the batch is worth it."""
        indptr, indices, data = X.indptr, X.indices, X.data
        if len(self._touched) < len(indices):
            self._touched = np.zeros(len(indices), np.int64)
        count = kernels.assign_slots(indices, 0, len(indices), self._slots, self._touched)
        if self._tables.shape[1] < count:
            self._tables = np.zeros((self._tables.shape[0], count, self._tables.shape[2]), np.float32)
        parts = itertools.count()  # next() on a count is atomic under the GIL

        def make_scratch(chunk_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            part = next(parts)
            table, sums = self._tables[part, :count], self._sums[part]
            table[:] = 0.0
            sums[:] = 0.0
            return np.empty((chunk_rows, self.V.shape[1]), np.float32), table, sums

        def rows(start: int, stop: int, scratch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
            kernels.accumulate_rows(
                indptr,
                indices,
                data,
                y,
                weights,
                self.loss,
                self.w0[0],
                self.w,
                self.V,
                self._slots,
                start,
                stop,
                *scratch,
            )

        work = 3 * len(indices) * (self.V.shape[1] + 1)
        run_in_row_chunks(rows, (), X.shape[0], work=work, make_scratch=make_scratch)
        used = next(parts)
        self._pass_totals += self._sums[:used, 1:].sum(axis=0)
        kernels.apply_step(
            self._touched,
            count,
            self._tables,
            used,
            self._sums,
            self.w0,
            self.w,
            self.V,
            self.h0,
            self.hw,
            self.hV,
            self.lrs,
            self.wds,
            self.rescale,
            self.clip,
            self.eps,
            self._slots,
        )
