"""K-means (SageMaker `kmeans`, spec section 4.2): streaming mini-batch k-means over K = k x
extra_center_factor centers, then a weighted local Lloyd reduction from K centers to k.

Training, as documented by AWS (spec 4.2, "How K-Means Clustering Works"):

1. The K centers are seeded from the first mini-batch with `init_method` (`random`: K distinct
   rows; `kmeans++`: greedy D^2 sampling, each step keeping the best of 2 + ln K sampled
   candidates, as scikit-learn does).
2. Every mini-batch is assigned to the nearest centers; a center with count n_prev that receives
   new points of total weight m moves to (1 - p) center + p mean(new points), p = m / (n_prev + m)
   (Sculley's web-scale mini-batch update). With `half_life_time_size` > 0 all counts are first
   multiplied by 0.5 ** (m_batch / half_life_time_size), so a point's weight halves after that
   many later points. `epochs` passes, each over the whole channel.
3. The K centers, weighted by their counts, are reduced to k by weighted Lloyd iterations seeded
   with `local_lloyd_init_method`, `local_lloyd_num_trials` times; the trial with the least
   weighted loss is kept. Each trial stops after `local_lloyd_max_iter` iterations or when the
   loss decreases by a relative amount of at most `local_lloyd_tol`.

Choices this module makes where the documentation is silent:

* `k` = 1 is accepted: the docs say "positive integer" and a single center (the weighted mean)
  is a well-defined model; only the SageMaker Python SDK's own validator asks for k > 1.
* `extra_center_factor` = auto resolves to ceil(ln k) + 2, clamped to [4, 10] (the tuning range
  AWS documents is 4..10): k = 5 gives 4, k = 20 gives 5, k = 1000 gives 9. Why: the extra
  centers are what lets `random` seeding from the first batch cover every cluster (a cluster
  left without a seed is only recovered when a streaming center of a neighbouring cluster
  drifts into it), and the chance of leaving one out grows with k. Measured on mixtures of
  k = 5, 20, 50 Gaussian clusters (12 each, one epoch, random seeding): a factor of 3 ended
  more than 2 % above Lloyd's test msd in 2 of 36 cases, 4, 6 and 8 in none. Every extra
  center costs as much as a cluster in the streaming pass, hence no more margin than that.
* `local_lloyd_num_trials` = auto resolves to 10 trials when the reduction is cheap, fewer when
  K x k x feature_dim is large (10**9 / (K k d), clamped to [1, 10]), so that the reduction never
  costs more than a few seconds: it works on K points, not on the data.
* A center that holds no weight when a mini-batch arrives (it was seeded on a duplicate of
  another center's point, or K exceeds the rows of the first batch and it was never seeded) is
  first re-seeded from that mini-batch by D^2 sampling against the centers that hold weight, so
  the K centers are all put to use and rows far from every center get one of their own.
* `local_lloyd_init_method` = random picks k distinct centers with probability proportional to
  their weights (uniform picks would favour the many light centers at the fringes).
* An empty cluster during local Lloyd is moved to the center that contributes most to the loss.
* When fewer than k centers hold weight (fewer distinct rows than k), the model still has k
  centers: the missing ones are copies of the heaviest one and, as the argmin keeps the first of
  equal distances, are never predicted.
* Reported metrics: per epoch `train msd` is the weighted mean squared distance of the epoch's
  rows to the streaming centers just before each mini-batch updates them (free: the assignment
  computes it); `test msd` / `test ssd` score the final k centers on the `test` channel.
* Randomness comes from one generator with a fixed seed: a job is deterministic given its data.
* Sparse (CSR) mini-batches are assigned and summed by numba CSR kernels, never densified; only
  the rows that become centers are.
* Speed: see _kmeans_kernels. The fast dense path needs threadpoolctl (to run BLAS on one thread
  per worker); without it the numba kernel does the same job at about half the speed.
* On a GPU (device.py: SMALGO_DEVICE), dense batches of at least MIN_GPU_ROWS rows are assigned
  by _kmeans_cuda; smaller and sparse ones stay on the CPU.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

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
from smalgo.algorithms.runtime import threads as row_threads
from smalgo.algorithms.runtime.collective import SingleHost

from . import _kernels as kernels

NAME = "kmeans"
FORMAT_VERSION = 1
SEED = 0x5EED_C1
# Keep the streaming centers (K x feature_dim float32, plus float64 sums of the same size) well
# inside memory; K = k x extra_center_factor.
MAX_CENTER_VALUES = 1 << 28
# Dense batches with fewer rows are assigned on the CPU even when a GPU is used: copying them to
# the GPU and back costs more than it saves. Small batches also never look for a GPU, so the
# server's tiny warm-up requests in gunicorn's master do not initialise CUDA before it forks.
MIN_GPU_ROWS = 4096

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- hyperparameters


def resolve_extra_center_factor(k: int, value: Any) -> int:
    """The factor K / k; see the module docstring for why auto is ceil(ln k) + 2 in [4, 10]."""
    if value != AUTO:
        return int(value)
    return int(min(10, max(4, math.ceil(math.log(k)) + 2)))


def resolve_num_trials(value: Any, *, n_centers: int, k: int, feature_dim: int) -> int:
    """Local Lloyd trials; auto = 10, fewer when one trial on K x k x d is expensive."""
    if value != AUTO:
        return int(value)
    return int(min(10, max(1, 10**9 // max(1, n_centers * k * feature_dim))))


# --------------------------------------------------------------------------- rows and centers


def _canonical_rows(X):
    """X as the kernels take it: C-contiguous float32, or canonical float32 CSR with int64
    indices (one compiled specialisation per kernel)."""
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if X.dtype != np.float32:
            X = X.astype(np.float32)
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        return X
    return np.ascontiguousarray(X, dtype=np.float32)


def _csr_arrays(X: sp.csr_matrix):
    return X.data, X.indices.astype(np.int64, copy=False), X.indptr.astype(np.int64, copy=False)


def _weights_of(batch_weights, n: int) -> np.ndarray:
    if batch_weights is None:
        return np.ones(n, dtype=np.float64)
    return np.asarray(batch_weights, dtype=np.float64)


class _CenterTable:
    """Centers laid out for the assignment kernels. `seeded` marks which rows hold a position;
    the others are never chosen."""

    def __init__(self, centers: np.ndarray, shift: np.ndarray, seeded: np.ndarray | None = None) -> None:
        self.centers = np.ascontiguousarray(centers, dtype=np.float32)
        self.shift = np.ascontiguousarray(shift, dtype=np.float32)
        shifted = self.centers - self.shift
        exact_sq = np.einsum("ij,ij->i", self.centers.astype(np.float64), self.centers.astype(np.float64))
        shifted_sq = np.einsum("ij,ij->i", shifted.astype(np.float64), shifted.astype(np.float64))
        self.sq_norms_exact = exact_sq
        self.sq_norms = exact_sq.astype(np.float32)
        self.shifted_sq_norms = shifted_sq.astype(np.float32)
        if seeded is not None and not seeded.all():
            shifted[~seeded] = 0.0
            self.sq_norms[~seeded] = kernels.UNSEEDED_SQ_NORM
            self.shifted_sq_norms[~seeded] = kernels.UNSEEDED_SQ_NORM
        # -2 (c - shift), transposed: the kernels add (x - shift) . this to ||c - shift||^2.
        self.shifted_t_m2 = np.ascontiguousarray(shifted.T * np.float32(-2.0))
        self.centers_t = np.ascontiguousarray(self.centers.T)

    def nearest(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(labels int64, exact squared distances float64) of the rows of canonical X."""
        n = X.shape[0]
        labels = np.empty(n, dtype=np.int64)
        sq_distances = np.empty(n, dtype=np.float64)
        if sp.issparse(X):
            data, indices, indptr = _csr_arrays(X)
            kernels.assign_csr(
                data,
                indices,
                indptr,
                self.centers_t,
                self.sq_norms,
                self.sq_norms_exact,
                self.centers,
                labels,
                sq_distances,
            )
        else:
            self._assign_dense(X, labels, sq_distances)
        return labels, sq_distances

    def _assign_dense(self, X: np.ndarray, labels: np.ndarray, sq_distances: np.ndarray) -> None:
        if X.shape[0] >= MIN_GPU_ROWS and device.use_gpu():
            from ._cuda import assign_dense_gpu  # imports numba.cuda: only once a GPU is used

            excluded = self.shifted_sq_norms == kernels.UNSEEDED_SQ_NORM
            assign_dense_gpu(X, self.centers, excluded, labels, sq_distances)
        else:
            kernels.assign_dense(
                X, self.shift, self.shifted_t_m2, self.shifted_sq_norms, self.centers, labels, sq_distances
            )


def _accumulate(X, weights: np.ndarray, labels: np.ndarray, *, n_centers: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-center weighted sums of rows and per-center total weights, float64."""
    sums = np.zeros((n_centers, X.shape[1]), dtype=np.float64)
    totals = np.zeros(n_centers, dtype=np.float64)
    if sp.issparse(X):
        data, indices, indptr = _csr_arrays(X)
        kernels.accumulate_csr(data, indices, indptr, weights, labels, sums, totals)
    else:
        kernels.accumulate_dense(X, weights, labels, sums, totals)
    return sums, totals


def _dense_rows(X, rows) -> np.ndarray:
    if sp.issparse(X):
        return np.asarray(X[rows].toarray(), dtype=np.float64)
    return np.asarray(X[rows], dtype=np.float64)


def _row_shift(X) -> np.ndarray:
    """A point near the data (the mean of X), to keep the float32 distance expansion accurate."""
    if sp.issparse(X):
        return np.asarray(X.mean(axis=0), dtype=np.float64).ravel().astype(np.float32)
    return X.mean(axis=0, dtype=np.float64).astype(np.float32)


def _kmeanspp(X, weights: np.ndarray, *, n_centers: int, rng: np.random.Generator) -> list[int]:
    """Greedy weighted k-means++ seeding among the rows of canonical X: each step draws
    2 + ln(n_centers) candidates by D^2 sampling and keeps the one that lowers the potential most
    (Arthur and Vassilvitskii's greedy variant, as scikit-learn uses). Plain k-means++ left the
    local Lloyd reduction of 400 streaming centers to k = 50 at twice the loss scikit-learn's
    KMeans reaches on the same weighted centers; the greedy seeding closes that gap.
    Returns up to n_centers distinct row indices: fewer when the remaining rows all coincide
    with chosen ones."""
    n_rows = X.shape[0]
    total_weight = weights.sum()
    if total_weight <= 0 or n_centers < 1:
        return []
    n_candidates = 2 + int(math.log(n_centers))
    with row_threads.single_threaded_blas():
        distances = _SquaredDistances(X)
        first = min(int(np.searchsorted(np.cumsum(weights), rng.random() * total_weight, side="right")), n_rows - 1)
        chosen = [first]
        closest = distances.to_rows([first])[:, 0]
        while len(chosen) < n_centers:
            mass = weights * closest
            cumulative = np.cumsum(mass)
            if cumulative[-1] <= 0:
                break
            candidates = np.searchsorted(cumulative, rng.random(n_candidates) * cumulative[-1], side="right")
            candidates = np.minimum(candidates, n_rows - 1)
            # Rounding at the very end of the cumulative sum can land on a row without mass.
            candidates[mass[candidates] <= 0] = int(np.flatnonzero(mass > 0)[-1])
            candidates = np.unique(candidates)
            with_candidate = np.minimum(closest[:, None], distances.to_rows(candidates))
            best = int(np.argmin(weights @ with_candidate))
            chosen.append(int(candidates[best]))
            closest = with_candidate[:, best]
    return chosen


class _SquaredDistances:
    """Exact-enough squared distances from all rows of X to a few of its rows, for seeding:
    float64 ||x||^2 - 2 x.c + ||c||^2 with one matrix product per call."""

    def __init__(self, X) -> None:
        if sp.issparse(X):
            self.X = sp.csr_matrix(X, dtype=np.float64)
            self.sq_norms = np.asarray(self.X.multiply(self.X).sum(axis=1)).ravel()
        else:
            # Centered: the expansion then cancels no more than the spread of the rows.
            self.X = np.asarray(X, dtype=np.float64)
            self.X = self.X - self.X.mean(axis=0)
            self.sq_norms = np.einsum("ij,ij->i", self.X, self.X)

    def to_rows(self, rows) -> np.ndarray:
        """(n_rows, len(rows)) squared distances."""
        if sp.issparse(self.X):
            targets = self.X[rows].toarray()
            products = np.asarray(self.X @ targets.T)
        else:
            targets = self.X[rows]
            products = self.X @ targets.T
        distances = self.sq_norms[:, None] - 2.0 * products + self.sq_norms[rows][None, :]
        np.maximum(distances, 0.0, out=distances)
        distances[rows, np.arange(len(rows))] = 0.0
        return distances


def _weighted_sample_without_replacement(weights: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` distinct indices, drawn with probability proportional to `weights`."""
    positive = np.flatnonzero(weights > 0)
    count = min(count, positive.size)
    if count == 0:
        return np.empty(0, dtype=np.int64)
    p = weights[positive] / weights[positive].sum()
    return positive[rng.choice(positive.size, size=count, replace=False, p=p)]


# --------------------------------------------------------------------------- streaming state


class StreamingKMeans:
    """The streaming state: K centers (float64) and their decayed weights ("counts")."""

    def __init__(
        self, n_centers: int, feature_dim: int, *, init_method: str, half_life_time_size: int, rng: np.random.Generator
    ) -> None:
        self.n_centers = n_centers
        self.feature_dim = feature_dim
        self.init_method = init_method
        self.half_life_time_size = half_life_time_size
        self.rng = rng
        self.centers = np.zeros((n_centers, feature_dim), dtype=np.float64)
        self.counts = np.zeros(n_centers, dtype=np.float64)
        self.seeded = np.zeros(n_centers, dtype=bool)
        self.shift: np.ndarray | None = None

    def _seed(self, X, weights: np.ndarray) -> None:
        """Seed the centers from the first mini-batch; when it has fewer rows than K, the rest
        are seeded from later mini-batches (see _reseed_empty)."""
        self.shift = _row_shift(X)
        wanted = min(self.n_centers, X.shape[0])
        if self.init_method == "kmeans++":
            rows = _kmeanspp(X, weights, n_centers=wanted, rng=self.rng)
        else:
            rows = list(_weighted_sample_without_replacement(weights, wanted, self.rng))
        self.centers[: len(rows)] = _dense_rows(X, rows)
        self.seeded[: len(rows)] = True

    def update(self, batch: Batch) -> tuple[float, float]:
        """Consume one mini-batch; returns (weighted sum of squared distances to the centers
        before the update, total weight)."""
        X = _canonical_rows(batch.X)
        weights = _weights_of(batch.w, X.shape[0])
        if self.shift is None:
            self._seed(X, weights)
        elif not (self.seeded & (self.counts > 0)).all():
            self._reseed_empty(X, weights)
        assert self.shift is not None  # _seed set it
        labels, sq_distances = _CenterTable(self.centers, self.shift, self.seeded).nearest(X)
        batch_weight = float(weights.sum())
        if self.half_life_time_size > 0:
            self.counts *= 0.5 ** (batch_weight / self.half_life_time_size)
        sums, totals = _accumulate(X, weights, labels, n_centers=self.n_centers)
        moved = totals > 0
        new_counts = self.counts + totals
        # (1 - p) c + p mean(new) with p = m / (n_prev + m) is (n_prev c + sum(new)) / (n_prev + m).
        self.centers[moved] = (self.counts[moved, None] * self.centers[moved] + sums[moved]) / new_counts[moved, None]
        self.counts = new_counts
        return float(np.dot(weights, sq_distances)), batch_weight

    def _reseed_empty(self, X, weights: np.ndarray) -> None:
        """Move the centers that hold no weight onto rows of this mini-batch, by D^2 sampling
        against the centers that do, before the batch is assigned: rows far from every live
        center (a cluster that the seeding missed, e.g. in data sorted by cluster) get a center
        of their own instead of dragging a live one towards them."""
        assert self.shift is not None  # only called after _seed
        live = self.seeded & (self.counts > 0)
        empty = np.flatnonzero(~live)
        if live.any():
            _, sq_distances = _CenterTable(self.centers, self.shift, live).nearest(X)
            mass = weights * sq_distances
        else:
            mass = weights
        rows = _weighted_sample_without_replacement(mass, empty.size, self.rng)
        targets = empty[: rows.size]
        if rows.size:
            self.centers[targets] = _dense_rows(X, rows)
            self.seeded[targets] = True


# --------------------------------------------------------------------------- local Lloyd

NOTHING_TO_CLUSTER = "The train channel holds no records with positive weight; k-means has nothing to cluster."


def reduce_centers(
    points: np.ndarray,
    weights: np.ndarray,
    *,
    k: int,
    init_method: str,
    max_iter: int,
    tol: float,
    num_trials: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Weighted Lloyd from the streaming centers to k centers; returns k x d float32."""
    keep = weights > 0
    points = np.ascontiguousarray(points[keep], dtype=np.float32)
    weights = np.ascontiguousarray(weights[keep], dtype=np.float64)
    if points.shape[0] == 0:
        raise UserError(NOTHING_TO_CLUSTER)
    if points.shape[0] <= k:
        return _pad_centers(points, weights, k)
    shift = _row_shift(points)
    total_weight = weights.sum()
    best_loss, best_centers = math.inf, None
    for trial in range(num_trials):
        if init_method == "kmeans++":
            rows = _kmeanspp(points, weights, n_centers=k, rng=rng)
        else:
            rows = list(_weighted_sample_without_replacement(weights, k, rng))
        if len(rows) < k:
            # Fewer distinct heavy points than k: fill with other points (duplicates in value).
            others = np.setdiff1d(np.arange(points.shape[0]), rows)[: k - len(rows)]
            rows = list(rows) + list(others)
        centers = points[rows].astype(np.float64)
        loss, centers = _lloyd(points, weights, centers, shift=shift, max_iter=max_iter, tol=tol)
        logger.info("local kmeans attempt #%d. Current mean square distance %.6g", trial, loss / total_weight)
        if loss < best_loss:
            best_loss, best_centers = loss, centers
    logger.info(
        "finished %d local kmeans attempts; best mean square distance %.6g", num_trials, best_loss / total_weight
    )
    assert best_centers is not None  # num_trials >= 1 and every loss is finite
    return best_centers.astype(np.float32)


def _lloyd(
    points: np.ndarray, weights: np.ndarray, centers: np.ndarray, *, shift: np.ndarray, max_iter: int, tol: float
) -> tuple[float, np.ndarray]:
    labels, sq = _CenterTable(centers, shift).nearest(points)
    loss = float(np.dot(weights, sq))
    for _ in range(max_iter):
        sums, totals = _accumulate(points, weights, labels, n_centers=centers.shape[0])
        filled = totals > 0
        centers[filled] = sums[filled] / totals[filled, None]
        empty = np.flatnonzero(~filled)
        if empty.size:
            # Move each empty cluster onto the point that costs the most where it is now.
            worst = np.argsort(-(weights * sq))[: empty.size]
            centers[empty[: worst.size]] = points[worst]
        labels, sq = _CenterTable(centers, shift).nearest(points)
        new_loss = float(np.dot(weights, sq))
        converged = loss - new_loss <= tol * loss
        loss = new_loss
        if converged:
            break
    return loss, centers


def _pad_centers(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    heaviest = points[int(np.argmax(weights))]
    padding = np.repeat(heaviest[None, :], k - points.shape[0], axis=0)
    return np.ascontiguousarray(np.vstack([points, padding]), dtype=np.float32)


# --------------------------------------------------------------------------- model


class KMeansModel:
    """k centers; predicts the closest one and the Euclidean distance to it."""

    def __init__(self, centers: np.ndarray, hyperparameters: dict | None = None, details: dict | None = None) -> None:
        centers = np.ascontiguousarray(centers, dtype=np.float32)
        if centers.ndim != 2 or centers.shape[0] < 1:
            raise ValueError(f"centers must be a non-empty 2-D array, got shape {centers.shape}")
        self.centers = centers
        self.k, self.feature_dim = centers.shape
        self.hyperparameters = dict(hyperparameters or {})
        self.details = dict(details or {})
        # Shift for the float32 expansion: the centers' mean is near any data they were fit on.
        self._table = _CenterTable(centers, centers.astype(np.float64).mean(axis=0))

    def _nearest(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        check_width(batch, self.feature_dim)
        return self._table.nearest(_canonical_rows(batch.X))

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        labels, sq_distances = self._nearest(batch)
        return {
            "closest_cluster": labels.astype(np.float32),
            "distance_to_cluster": np.sqrt(sq_distances).astype(np.float32),
        }

    def sum_squared_distances(self, batch: Batch) -> tuple[float, float]:
        """(weighted sum of squared distances to the closest center, total weight)."""
        _, sq_distances = self._nearest(batch)
        weights = _weights_of(batch.w, batch.n_rows)
        return float(np.dot(weights, sq_distances)), float(weights.sum())

    def save(self, model_dir) -> None:
        save_model_files(
            model_dir,
            {
                "algorithm": NAME,
                "format_version": FORMAT_VERSION,
                "k": self.k,
                "feature_dim": self.feature_dim,
                "hyperparameters": self.hyperparameters,
                "details": self.details,
            },
            {"centers": self.centers},
        )


# --------------------------------------------------------------------------- training and scoring


@dataclass(frozen=True)
class _HostPart:
    """One host's streaming state, as a job of several hosts checkpoints it."""

    centers: np.ndarray
    counts: np.ndarray
    seeded: np.ndarray
    shift: np.ndarray | None  # None until the host has seen rows
    rows_seen: int
    rng: dict[str, Any]  # the random generator's state (bit_generator.state)


def _hosts(count: int) -> str:
    return f"{count} host{'' if count == 1 else 's'}"


class KMeansTraining:
    """The driver's StreamingState: the streaming centers, the epoch's loss, and the reduction
    to k centers at the end."""

    def __init__(self, hp: dict) -> None:
        self.hp = hp
        k, feature_dim = hp["k"], hp["feature_dim"]
        self.factor = resolve_extra_center_factor(k, hp["extra_center_factor"])
        self.n_centers = k * self.factor
        self.num_trials = resolve_num_trials(
            hp["local_lloyd_num_trials"], n_centers=self.n_centers, k=k, feature_dim=feature_dim
        )
        logger.info(
            "k-means: k=%d, %d streaming centers (extra_center_factor=%d), %d local Lloyd trials",
            k,
            self.n_centers,
            self.factor,
            self.num_trials,
        )
        self.rng = np.random.default_rng(SEED)
        self.stream = StreamingKMeans(
            self.n_centers,
            feature_dim,
            init_method=hp["init_method"],
            half_life_time_size=hp["half_life_time_size"],
            rng=self.rng,
        )
        self.rows_seen = 0
        self._loss_sum = self._weight_sum = 0.0
        self._last_msd: float | None = None
        # A job of several hosts: the collective (join), and every host's streaming state as of
        # the last pass (combine), by rank: the union of their centers is what finalize reduces,
        # and the first host's checkpoint holds them all.
        self._collective: SingleHost | None = None
        self._parts: list[_HostPart] | None = None
        self._rows_everywhere = 0

    def join(self, collective: SingleHost) -> None:
        """A job of several hosts (the driver calls this before resuming and before the first
        pass): restore_checkpoint then takes this host's part of a checkpoint of every host."""
        self._collective = collective

    def update(self, batch: Batch) -> None:
        batch_loss, batch_weight = self.stream.update(batch)
        self._loss_sum += batch_loss
        self._weight_sum += batch_weight
        self.rows_seen += batch.n_rows

    def combine(self, collective: SingleHost) -> None:
        """End of a pass on one of several hosts: gather every host's streaming state (each host
        keeps streaming its own in the next pass), and sum the pass's loss. The model is then
        reduced from the union of all hosts' centers (finalize), and the first host's checkpoint
        holds every host's state, which each host takes back by rank (restore_checkpoint)."""
        stream = self.stream
        rows = np.array([self._loss_sum, self._weight_sum, self.rows_seen], dtype=np.float64)
        self._loss_sum, self._weight_sum, rows_everywhere = collective.all_reduce_sum(rows)
        self._rows_everywhere = int(round(rows_everywhere))
        weighted = np.column_stack([stream.counts, stream.seeded, stream.centers])
        # No row for a host that has seen no rows yet: its shift is None.
        shift = np.empty((0, stream.feature_dim), np.float32) if stream.shift is None else stream.shift[None, :]
        small = json.dumps({"rows_seen": self.rows_seen, "rng": self.rng.bit_generator.state}).encode("ascii")
        parts = zip(
            collective.all_gather(weighted),
            collective.all_gather(shift),
            collective.all_gather(np.frombuffer(small, dtype=np.uint8)),
            strict=True,
        )
        gathered = []
        for weighted_part, shift_part, small_part in parts:
            values = json.loads(small_part.tobytes())
            gathered.append(
                _HostPart(
                    centers=weighted_part[:, 2:],
                    counts=weighted_part[:, 0],
                    seeded=weighted_part[:, 1] != 0,
                    shift=shift_part[0] if shift_part.shape[0] else None,
                    rows_seen=int(values["rows_seen"]),
                    rng=values["rng"],
                )
            )
        self._parts = gathered
        self._collective = collective

    def end_epoch(self) -> list[Metric]:
        loss, weight = self._loss_sum, self._weight_sum
        self._loss_sum = self._weight_sum = 0.0
        if weight <= 0:
            return []
        self._last_msd = loss / weight
        return [Metric("msd", self._last_msd)]

    def checkpoint_arrays(self) -> tuple[StateArrays, StateMetadata]:
        """The streaming centers, their weights, which are seeded, the shift, and the random
        generator's state (it seeds centers and, scoring the validation channel, reduces them).

        On several hosts (the first host writes it) every host's, by rank: arrays centers_<r>,
        counts_<r>, seeded_<r> and shift_<r> (when host r has seen rows), and per-host lists
        rows_seen and rng, with `hosts`. The last pass's msd is the job's on every host."""
        collective = self._collective
        if collective is None or collective.hosts == 1:
            part = self._own_part()
            arrays = {"centers": part.centers, "counts": part.counts, "seeded": part.seeded}
            if part.shift is not None:
                arrays["shift"] = part.shift
            metadata: StateMetadata = {"rows_seen": part.rows_seen, "last_msd": self._last_msd, "rng": part.rng}
            return arrays, metadata
        assert self._parts is not None, "a state of several hosts is checkpointed after combine"
        # This host's part as it stands now: the first host's generator has moved since combine
        # if it reduced the centers for the validation channel. The other hosts' parts are as
        # combine gathered them: between combine and the checkpoint they only receive the model.
        parts = list(self._parts)
        parts[collective.rank] = self._own_part()
        arrays = {}
        for rank, part in enumerate(parts):
            arrays[f"centers_{rank}"], arrays[f"counts_{rank}"] = part.centers, part.counts
            arrays[f"seeded_{rank}"] = part.seeded
            if part.shift is not None:
                arrays[f"shift_{rank}"] = part.shift
        metadata = {
            "hosts": len(parts),
            "rows_seen": [part.rows_seen for part in parts],
            "last_msd": self._last_msd,
            "rng": [part.rng for part in parts],
        }
        return arrays, metadata

    def _own_part(self) -> _HostPart:
        stream = self.stream
        return _HostPart(
            stream.centers,
            stream.counts,
            stream.seeded,
            stream.shift,
            self.rows_seen,
            dict(self.rng.bit_generator.state),
        )

    def restore_checkpoint(self, arrays: StateArrays, metadata: StateMetadata) -> None:
        """This host's part of the checkpoint (all of it on one host). A checkpoint of a job of
        another number of hosts is refused: each host streams its own centers, so the parts only
        fit a job of as many hosts (whose ShardedByS3Key shares are the same). Every host's part
        is checked before anything changes, so every host refuses the same checkpoint."""
        collective = self._collective
        hosts = 1 if collective is None else collective.hosts
        theirs = metadata.get("hosts", 1)
        if not isinstance(theirs, int) or isinstance(theirs, bool) or theirs < 1:
            raise CheckpointMismatch(f"its hosts={theirs!r} is not a number of hosts")
        if theirs != hosts:
            raise CheckpointMismatch(
                f"it was written by a job of {_hosts(theirs)}, and this job has {_hosts(hosts)}: each host "
                "streams its own centers, so only a job of as many hosts can resume it"
            )
        rows_seen, rng_states = metadata.get("rows_seen"), metadata.get("rng")
        if hosts == 1:
            parts = [self._checked_part(arrays, rows_seen, rng_states, suffix="", whose="")]
        else:
            if not (isinstance(rows_seen, list) and isinstance(rng_states, list)) or not (
                len(rows_seen) == len(rng_states) == hosts
            ):
                raise CheckpointMismatch(f"its rows_seen and rng are not lists of one value per host ({hosts})")
            parts = [
                self._checked_part(arrays, rows_seen[r], rng_states[r], suffix=f"_{r}", whose=f" of host {r}")
                for r in range(hosts)
            ]
        last_msd = metadata.get("last_msd")
        if last_msd is not None and not isinstance(last_msd, float):
            raise CheckpointMismatch(f"its last_msd={last_msd!r} is not a number")
        # Everything checked: nothing below fails.
        own = parts[0 if collective is None else collective.rank]
        stream = self.stream
        stream.centers, stream.counts, stream.seeded, stream.shift = (
            np.array(own.centers, copy=True),
            np.array(own.counts, copy=True),
            np.array(own.seeded, copy=True),
            None if own.shift is None else np.array(own.shift, copy=True),
        )
        self.rows_seen, self._last_msd = own.rows_seen, last_msd
        self.rng.bit_generator.state = own.rng
        if hosts > 1:
            # A job that resumes with no pass left reduces the union of these (finalize).
            self._parts = parts
            self._rows_everywhere = sum(part.rows_seen for part in parts)

    def _checked_part(
        self, arrays: StateArrays, rows_seen: Any, rng_state: Any, *, suffix: str, whose: str
    ) -> _HostPart:
        """One host's part of a checkpoint, checked whole (its arrays are copies)."""
        stream = self.stream
        centers = take_array(arrays, f"centers{suffix}", stream.centers)
        counts = take_array(arrays, f"counts{suffix}", stream.counts)
        seeded = take_array(arrays, f"seeded{suffix}", stream.seeded)
        shift_name = f"shift{suffix}"
        shift = (
            take_array(arrays, shift_name, np.zeros(stream.feature_dim, dtype=np.float32))
            if shift_name in arrays
            else None
        )
        if not isinstance(rows_seen, int) or isinstance(rows_seen, bool) or rows_seen < 0:
            raise CheckpointMismatch(f"its rows_seen={rows_seen!r}{whose} is not a count")
        if (shift is None) != (rows_seen == 0):
            raise CheckpointMismatch(f"its array {shift_name!r} must be there exactly when rows have been seen")
        if not isinstance(rng_state, dict):
            raise CheckpointMismatch(f"its random generator state{whose} {rng_state!r} is not valid")
        probe = type(self.rng.bit_generator)()
        try:
            probe.state = rng_state
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointMismatch(f"its random generator state{whose} is not valid ({exc})") from None
        return _HostPart(centers, counts, seeded, shift, rows_seen, dict(probe.state))

    def current_model(self) -> KMeansModel:
        return self.finalize()[0]

    def finalize(self) -> tuple[KMeansModel, list[Metric]]:
        hp = self.hp
        points, weights = self.stream.centers, self.stream.counts
        collective = self._collective
        if collective is not None and self._parts is not None:
            # Every host's centers, in rank order (the first host reduces them).
            points = np.vstack([part.centers for part in self._parts])
            weights = np.concatenate([part.counts for part in self._parts])
            if not (weights > 0).any():  # said by every host, not only by the first
                raise UserError(NOTHING_TO_CLUSTER)
        if collective is not None and not collective.is_first:
            # The first host reduces the union and sends the k centers: every host holds the same
            # model, bit for bit.
            centers = collective.broadcast(None, root=0)
        else:
            centers = self._reduce(points, weights)
            if collective is not None:
                centers = collective.broadcast(centers, root=0)
        return KMeansModel(
            centers,
            hp,
            {
                "extra_center_factor": self.factor,
                "streaming_centers": self.n_centers,
                "local_lloyd_num_trials": self.num_trials,
                "records_seen": self._rows_everywhere if collective is not None else self.rows_seen,
            },
        ), self._final_metrics()

    def _reduce(self, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
        hp = self.hp
        return reduce_centers(
            points,
            weights,
            k=hp["k"],
            init_method=hp["local_lloyd_init_method"],
            max_iter=hp["local_lloyd_max_iter"],
            tol=hp["local_lloyd_tol"],
            num_trials=self.num_trials,
            rng=self.rng,
        )

    def _final_metrics(self) -> list[Metric]:
        """The last pass's msd once more, without an epoch: the `train msd <loss>=` line the
        platform's train:msd regex reads (AWS's image prints one at the end too)."""
        return [] if self._last_msd is None else [Metric("msd", self._last_msd)]


class KMeansScorer:
    """msd and ssd of a channel's rows to the model's centers (the metrics in eval_metrics)."""

    def __init__(self, model: KMeansModel, eval_metrics: list[str]) -> None:
        self.model = model
        self.eval_metrics = list(dict.fromkeys(eval_metrics))
        self.ssd = self.weight = 0.0

    def add(self, batch: Batch) -> None:
        ssd, weight = self.model.sum_squared_distances(batch)
        self.ssd += ssd
        self.weight += weight

    def combine(self, collective: SingleHost) -> None:
        self.ssd, self.weight = collective.all_reduce_sum(np.array([self.ssd, self.weight], dtype=np.float64))

    def metrics(self) -> list[Metric]:
        if self.weight == 0:
            return []
        scores = {"msd": self.ssd / self.weight, "ssd": self.ssd}
        return [Metric(name, scores[name]) for name in self.eval_metrics]
