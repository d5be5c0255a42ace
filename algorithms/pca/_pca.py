"""PCA (SageMaker `pca`, spec section 4.3): principal components from one streaming pass.

Both modes keep only sums over the rows, so the state is mergeable across hosts and independent
of how the rows are grouped into mini-batches:

* `regular`: n, s = sum of x and S = sum of x x^T (d x d, float64). The scatter matrix
  S - (1/n) s s^T (S alone when subtract_mean is false) is eigendecomposed with
  numpy.linalg.eigh; its top num_components eigenvectors are the components. Memory O(d^2).
* `randomized`: memory O(d l), l = num_components + extra_components (extra_components -1 means
  max(10, num_components)). With a seeded d x l matrix Omega of random signs (+-1), the pass
  keeps Y = sum over mini-batches of X_t^T (X_t Omega), i.e. the covariance times Omega, with
  n and s for the mean correction Y - (1/n) s (s^T Omega). The components and their variances
  come from the Nystrom approximation of the covariance from Y (Tropp, Yurtsever, Udell,
  Cevher 2017, "Fixed-rank approximation of a positive-semidefinite matrix from streaming
  data", with their shift for stability).

  This is not the row sketch AWS documents (B = sum H_t X_t with a fresh l x b sign matrix H_t
  per mini-batch, then the SVD of B - (1/n) h s^T). It keeps the same shape of state (a sum of
  per-batch products with a +-1 matrix, plus s and n) but sketches the covariance, not the
  rows. Measured on 200,000 x 100 rows with 10 strong directions plus isotropic noise and
  l = 20, the documented row sketch finds a subspace that captures 93 % of the variance of the
  true top 10 (89 % with a decaying spectrum, 77 % with a flat one), and its variance estimates
  are off by 10-77 %; the covariance sketch captures 99.95 % (99.5 %, 90 %) at about twice the
  arithmetic per row and no random numbers per row.
  When l >= feature_dim a sketch saves nothing, so randomized mode then accumulates S exactly.

Conventions, as the original's artifacts show (spec 4.3): components are ordered from the
smallest to the largest, both in the model (`components` d x num_components, `singular_values`
ascending) and in the `projection` output. `singular_values` are those of the centered data
matrix (of the raw data with subtract_mean false), as scikit-learn's `singular_values_`: the
explained variance of component i is singular_values[i]**2 / (n - 1). Each component's sign is
fixed so that its entry of largest magnitude is positive.

In randomized mode (with a sketch) the singular values are the Nystrom approximation's, and
they are lower bounds: the Nystrom approximation of a covariance C is below C in the Loewner
order, so each value is at most the data's true singular value along its component,
sqrt(v^T C v). How far below depends on the spectrum and on extra_components: on 200,000 x 100
rows with a decaying spectrum, the last of 10 components came out up to 27 % low with the
default extra_components (the first ones within 1 %). Exact values would take a second pass
over the data; the model says which kind it holds (model.json details.singular_values:
"exact" or "nystrom_lower_bounds"), and so does the README.

Numerics: every pass shifts the rows by a fixed point near the data (the mean of the first
mini-batch, rounded to float32) before multiplying, so float32 products do not cancel
catastrophically when the mean is large against the spread; the products of one chunk of rows
run in float32 BLAS and are accumulated in float64.

Metrics: PCA has no documented metrics (spec 4.3). This module logs the mean squared
reconstruction error per record, sum ||x - mean - V V^T (x - mean)||^2 / n, as
`train reconstruction_error <loss>=` (from the statistics; an estimate in randomized mode) and,
when a test channel is given, as `test reconstruction_error <loss>=` (exact, on the test rows).
Weights in the data are ignored: PCA is unweighted.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.checkpoints import CheckpointMismatch, StateArrays, StateMetadata, take_array
from smalgo.algorithms.contract import check_width
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.metrics import Metric
from smalgo.algorithms.model_files import save_model_files
from smalgo.algorithms.runtime import threads as row_threads
from smalgo.algorithms.runtime.collective import SingleHost

# The name of its one quality metric, on train (after the pass) and test.
RECONSTRUCTION_ERROR = "reconstruction_error"
NAME = "pca"
FORMAT_VERSION = 1
SEED = 0x5EED_FCA
# Regular mode holds a d x d float64 matrix: refuse more than 8 GiB of it up front.
MAX_MATRIX_VALUES = 1 << 30
# Rows multiplied per BLAS call: big enough for BLAS to run at full speed, small enough that the
# shifted copy stays in cache.
_CHUNK_ROWS = 4096
# Largest per-thread partial sum (values of float64) for which helper threads are used.
_MAX_PARTIAL_VALUES = 1 << 22
# The statistics do not depend on how rows are grouped, so rows are read in blocks of about
# this many values when mini_batch_size is smaller (fewer, larger reads; same result).
READ_VALUES = 1 << 22

logger = logging.getLogger(__name__)


def sketch_size(hp: dict[str, Any]) -> int:
    """l = num_components + extra_components, with -1 meaning max(10, num_components)."""
    extra = hp["extra_components"]
    if extra == -1:
        extra = max(10, hp["num_components"])
    return int(hp["num_components"] + extra)


# --------------------------------------------------------------------------- statistics


class PCAStatistics:
    """The streaming state: n, the shift, the sum of shifted rows and either the scatter matrix
    about the shift (exact) or its product with the random sign matrix (sketch)."""

    def __init__(
        self, feature_dim: int, *, subtract_mean: bool, sketch_columns: int | None, rng: np.random.Generator
    ) -> None:
        self.feature_dim = feature_dim
        self.subtract_mean = subtract_mean
        self.n = 0
        self.shift: np.ndarray | None = None if subtract_mean else np.zeros(feature_dim, dtype=np.float32)
        self.shifted_sum = np.zeros(feature_dim, dtype=np.float64)
        self.exact = sketch_columns is None or sketch_columns >= feature_dim
        if sketch_columns is None or sketch_columns >= feature_dim:
            self.scatter = np.zeros((feature_dim, feature_dim), dtype=np.float64)
        else:
            signs = rng.integers(0, 2, size=(feature_dim, sketch_columns), dtype=np.int8) * 2 - 1
            self.test_matrix = signs.astype(np.float32)
            self.sketch = np.zeros((feature_dim, sketch_columns), dtype=np.float64)
            self.shifted_sq_sum = 0.0

    def update(self, X) -> None:
        if X.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = _mean_of(X).astype(np.float32)
        if sp.issparse(X):
            self._update_sparse(X)
        else:
            self._update_dense(np.ascontiguousarray(X, dtype=np.float32))
        self.n += X.shape[0]

    def _update_dense(self, X: np.ndarray) -> None:
        # Row chunks are multiplied by single-threaded BLAS on this thread and on helper threads,
        # each into its own partial sums (see _kmeans_kernels): OpenBLAS's own threads, one
        # product at a time, ran 5x slower on a busy machine (1.4-1.7 s against 0.25-0.31 s
        # for 500,000 x 100). A partial scatter matrix per thread costs d^2 memory each, so
        # wide data (whose products are large enough for OpenBLAS to thread well) skip this.
        partials: list[_DensePartial] = []

        def make_partial(rows: int) -> _DensePartial:
            partial = _DensePartial(
                min(rows, _CHUNK_ROWS), self.feature_dim, None if self.exact else self.test_matrix.shape[1]
            )
            partials.append(partial)
            return partial

        per_thread_values = self.feature_dim * (self.feature_dim if self.exact else self.test_matrix.shape[1])
        if row_threads.can_limit_blas_threads() and per_thread_values <= _MAX_PARTIAL_VALUES:
            d = self.feature_dim
            work = X.shape[0] * d * (d // 2 if self.exact else 2 * self.test_matrix.shape[1])
            with row_threads.single_threaded_blas():
                row_threads.run_in_row_chunks(
                    self._accumulate_rows, (X,), X.shape[0], work=work, make_scratch=make_partial
                )
        else:
            # Without threadpoolctl OpenBLAS threads each product itself, and threads of ours on
            # top would only oversubscribe the cores.
            self._accumulate_rows(X, 0, X.shape[0], make_partial(_CHUNK_ROWS))
        for partial in partials:
            self.shifted_sum += partial.shifted_sum
            if self.exact:
                self.scatter += partial.product
            else:
                self.sketch += partial.product
                self.shifted_sq_sum += partial.sq_sum

    def _accumulate_rows(self, X: np.ndarray, start: int, stop: int, partial: _DensePartial) -> None:  # noqa: PLR0917 (run_in_row_chunks' callback)
        assert self.shift is not None  # update() set it before the first rows
        for chunk_start in range(start, stop, partial.buffer.shape[0]):
            rows = X[chunk_start : min(stop, chunk_start + partial.buffer.shape[0])]
            shifted = partial.buffer[: rows.shape[0]]
            np.subtract(rows, self.shift, out=shifted)
            # float32 is enough here: the shifted rows are centred near zero.
            partial.shifted_sum += shifted.sum(axis=0)
            if self.exact:
                # `a.T @ a` on one buffer is a BLAS syrk: half the work of a general product.
                partial.product += shifted.T @ shifted
            else:
                partial.product += shifted.T @ (shifted @ self.test_matrix)
                flat = shifted.reshape(-1)
                partial.sq_sum += float(np.dot(flat, flat))

    def _update_sparse(self, X) -> None:
        # Shifting would densify the rows, so work on the raw rows in float64 and move the
        # result to the shifted frame: sum (x-r)(x-r)^T = X^T X - r s^T - s r^T + n r r^T.
        assert self.shift is not None  # update() set it before the first rows
        X = sp.csr_matrix(X, dtype=np.float64)
        n = X.shape[0]
        r = self.shift.astype(np.float64)
        row_sum = np.asarray(X.sum(axis=0)).ravel()
        self.shifted_sum += row_sum - n * r
        if self.exact:
            gram = (X.T @ X).toarray()
            gram -= np.outer(r, row_sum)
            gram -= np.outer(row_sum, r)
            gram += n * np.outer(r, r)
            self.scatter += gram
        else:
            omega = self.test_matrix.astype(np.float64)
            sketch = np.asarray(X.T @ (X @ omega))
            r_omega = r @ omega
            sketch -= np.outer(r, row_sum @ omega)
            sketch -= np.outer(row_sum, r_omega)
            sketch += n * np.outer(r, r_omega)
            self.sketch += sketch
            self.shifted_sq_sum += float(X.multiply(X).sum()) - 2.0 * float(r @ row_sum) + n * float(r @ r)

    def combine(self, collective: SingleHost) -> None:
        """Make these the statistics of every host's rows (a job of several hosts, at the end of
        the pass): each host moves its sums to a common shift, the job-wide mean (zero without
        subtract_mean), then they are summed. A host without rows adds nothing."""
        d = self.feature_dim
        own_shift = np.zeros(d) if self.shift is None else self.shift.astype(np.float64)
        totals = collective.all_reduce_sum(np.concatenate([[float(self.n)], self.shifted_sum + self.n * own_shift]))
        n_total = int(round(totals[0]))
        common = totals[1:] / n_total if self.subtract_mean and n_total else np.zeros(d)
        delta = own_shift - common
        s, n = self.shifted_sum, self.n
        if self.exact:
            self.scatter += np.outer(s, delta) + np.outer(delta, s) + n * np.outer(delta, delta)
            products = self.scatter
        else:
            omega = self.test_matrix.astype(np.float64)
            self.sketch += np.outer(s, delta @ omega) + np.outer(delta, s @ omega) + n * np.outer(delta, delta @ omega)
            self.shifted_sq_sum += 2.0 * float(delta @ s) + n * float(delta @ delta)
            products = self.sketch
        square = 0.0 if self.exact else self.shifted_sq_sum
        summed = collective.all_reduce_sum(np.concatenate([s + n * delta, products.ravel(), [square]]))
        self.shifted_sum = summed[:d]
        products[...] = summed[d:-1].reshape(products.shape)
        if not self.exact:
            self.shifted_sq_sum = float(summed[-1])
        self.n = n_total
        self.shift = common

    def finalize(self, num_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
        """(components d x c ascending, singular values ascending, mean or None, the mean
        squared reconstruction error per row implied by the statistics)."""
        if self.n == 0:
            raise UserError("The train channel has no records; PCA needs at least one.")
        products = self.scatter if self.exact else self.sketch
        if not (np.isfinite(products).all() and np.isfinite(self.shifted_sum).all()):
            # Else eigh/svd fail with LinAlgError, which reads as a bug of ours.
            raise UserError(
                "The train channel's values are too large for PCA (or not finite): the sums of their "
                "squares overflow the 32-bit floats they are read as (about 3.4e38), e.g. for values "
                "around 1e19 or larger after centering; scale the data down."
            )
        shifted_mean = self.shifted_sum / self.n
        if self.exact:
            scatter = self.scatter
            if self.subtract_mean:
                scatter = scatter - self.n * np.outer(shifted_mean, shifted_mean)
            # else the shift is zero and scatter is already sum x x^T.
            scatter = (scatter + scatter.T) / 2
            total = float(np.trace(scatter))
            eigenvalues, eigenvectors = np.linalg.eigh(scatter)
            top_values = eigenvalues[-num_components:]
            top_vectors = eigenvectors[:, -num_components:]
        else:
            sketch = self.sketch
            total = self.shifted_sq_sum
            if self.subtract_mean:
                sketch = sketch - np.outer(self.shifted_sum, self.shifted_sum @ self.test_matrix) / self.n
                total -= self.n * float(shifted_mean @ shifted_mean)
            vectors, values = _nystrom(sketch, self.test_matrix.astype(np.float64))
            vectors, values = _complete_basis(vectors, values, num_components)
            top_values = values[:num_components][::-1]
            top_vectors = vectors[:, :num_components][:, ::-1]
        top_values = np.maximum(top_values, 0.0)
        components = _fix_signs(top_vectors)
        singular_values = np.sqrt(top_values)
        mean = (self.shift.astype(np.float64) + shifted_mean) if self.shift is not None and self.subtract_mean else None
        reconstruction_error = max(total - float(top_values.sum()), 0.0) / self.n
        return components, singular_values, mean, reconstruction_error


class _DensePartial:
    """One thread's share of a dense update: a scratch buffer for shifted rows and the partial
    sums (float64) of the rows it multiplied."""

    def __init__(self, buffer_rows: int, feature_dim: int, sketch_columns: int | None) -> None:
        self.buffer = np.empty((max(buffer_rows, 1), feature_dim), dtype=np.float32)
        self.shifted_sum = np.zeros(feature_dim, dtype=np.float64)
        columns = feature_dim if sketch_columns is None else sketch_columns
        self.product = np.zeros((feature_dim, columns), dtype=np.float64)
        self.sq_sum = 0.0


def _mean_of(X) -> np.ndarray:
    if sp.issparse(X):
        return np.asarray(X.mean(axis=0, dtype=np.float64)).ravel()
    return X.mean(axis=0, dtype=np.float64)


def _nystrom(sketch: np.ndarray, test_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors (d x r) and eigenvalues (r, descending) of the Nystrom approximation
    A ~ Y (Omega^T Y)^+ Y^T from Y = A Omega, A positive semi-definite (Tropp et al. 2017,
    Algorithm 3, with a pseudo-inverse so that a rank-deficient A needs no special case)."""
    d = sketch.shape[0]
    norm = np.linalg.norm(sketch, 2)
    if norm == 0:
        return np.zeros((d, 0)), np.zeros(0)
    # A tiny shift of A (nu I) keeps Omega^T Y numerically positive definite; removed at the end.
    nu = np.sqrt(d) * np.spacing(norm)
    shifted = sketch + nu * test_matrix
    core = test_matrix.T @ shifted
    core = (core + core.T) / 2
    core_values, core_vectors = np.linalg.eigh(core)
    keep = core_values > core_values.max() * core.shape[0] * np.finfo(np.float64).eps
    factor = shifted @ (core_vectors[:, keep] / np.sqrt(core_values[keep]))
    vectors, singular, _ = np.linalg.svd(factor, full_matrices=False)
    return vectors, np.maximum(singular**2 - nu, 0.0)


def _complete_basis(vectors: np.ndarray, values: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to `count` orthonormal vectors, with eigenvalue 0, when the sketch found fewer (the
    data have lower rank than num_components): any direction orthogonal to the data's span is
    as good as another, a seeded random one keeps the model deterministic."""
    missing = count - vectors.shape[1]
    if missing <= 0:
        return vectors, values
    extra = np.random.default_rng(SEED).standard_normal((vectors.shape[0], missing))
    for _ in range(2):  # twice, for orthogonality to working precision
        extra -= vectors @ (vectors.T @ extra)
        extra, _ = np.linalg.qr(extra)
    return np.hstack([vectors, extra]), np.concatenate([values, np.zeros(missing)])


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Make the entry of largest magnitude of each component positive (deterministic output)."""
    largest = np.argmax(np.abs(components), axis=0)
    signs = np.sign(components[largest, np.arange(components.shape[1])])
    signs[signs == 0] = 1.0
    return components * signs


# --------------------------------------------------------------------------- model


class PCAModel:
    """Projects rows onto num_components principal components, smallest first."""

    def __init__(
        self,
        components: np.ndarray,
        singular_values: np.ndarray,
        *,
        mean: np.ndarray | None,
        n_rows: int,
        hyperparameters: dict | None = None,
        details: dict | None = None,
    ) -> None:
        self.components = np.ascontiguousarray(components, dtype=np.float32)
        self.singular_values = np.ascontiguousarray(singular_values, dtype=np.float32)
        self.mean = None if mean is None else np.ascontiguousarray(mean, dtype=np.float32)
        self.n_rows = int(n_rows)
        self.hyperparameters = dict(hyperparameters or {})
        self.details = dict(details or {})
        if self.components.ndim != 2 or self.singular_values.shape != (self.components.shape[1],):
            raise ValueError("components must be d x c and singular_values must have c entries")
        if self.mean is not None and self.mean.shape != (self.components.shape[0],):
            raise ValueError("mean must have feature_dim entries")
        self.feature_dim, self.num_components = self.components.shape
        self._mean_projection = None if self.mean is None else self.mean @ self.components

    @property
    def explained_variance(self) -> np.ndarray:
        """Variance along each component (ascending), as scikit-learn's explained_variance_."""
        return self.singular_values.astype(np.float64) ** 2 / max(self.n_rows - 1, 1)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        check_width(batch, self.feature_dim)
        return {"projection": self._project(batch.X)}

    def _project(self, X) -> np.ndarray:
        if sp.issparse(X):
            projection = np.asarray(sp.csr_matrix(X, dtype=np.float32) @ self.components, dtype=np.float32)
            if self._mean_projection is not None:
                projection -= self._mean_projection
            return projection
        X = np.asarray(X, dtype=np.float32)
        if self.mean is not None:
            X = X - self.mean
        return np.ascontiguousarray(X @ self.components, dtype=np.float32)

    def reconstruction_error_sum(self, batch: Batch) -> float:
        """Sum over the batch's rows of ||x - mean - V V^T (x - mean)||^2."""
        check_width(batch, self.feature_dim)
        projection = self._project(batch.X).astype(np.float64)
        X = batch.X
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=np.float64)
            sq = float(X.multiply(X).sum())
            if self.mean is not None:
                mean = self.mean.astype(np.float64)
                sq += -2.0 * float(np.asarray(X.sum(axis=0)).ravel() @ mean) + X.shape[0] * float(mean @ mean)
        else:
            centered = np.asarray(X, dtype=np.float64)
            if self.mean is not None:
                centered = centered - self.mean
            sq = float(np.einsum("ij,ij->", centered, centered))
        return max(sq - float(np.einsum("ij,ij->", projection, projection)), 0.0)

    def save(self, model_dir) -> None:
        arrays = {"components": self.components, "singular_values": self.singular_values}
        if self.mean is not None:
            arrays["mean"] = self.mean
        save_model_files(
            model_dir,
            {
                "algorithm": NAME,
                "format_version": FORMAT_VERSION,
                "feature_dim": self.feature_dim,
                "num_components": self.num_components,
                "n_rows": self.n_rows,
                "component_order": "ascending",
                "hyperparameters": self.hyperparameters,
                "details": self.details,
            },
            arrays,
        )


# --------------------------------------------------------------------------- training and scoring


class PCATraining:
    """The driver's StreamingState: the statistics of one pass, finalised into the model."""

    def __init__(self, hp: dict[str, Any]) -> None:
        self.hp = hp
        d = hp["feature_dim"]
        self.columns = sketch_size(hp) if hp["algorithm_mode"] == "randomized" else None
        self.stats = PCAStatistics(
            d, subtract_mean=hp["subtract_mean"], sketch_columns=self.columns, rng=np.random.default_rng(SEED)
        )
        if self.columns is not None and self.stats.exact:
            logger.info(
                "PCA: sketch size %d >= feature_dim %d; randomized mode computes the exact scatter matrix",
                self.columns,
                d,
            )

    def update(self, batch: Batch) -> None:
        self.stats.update(batch.X)

    def combine(self, collective: SingleHost) -> None:
        self.stats.combine(collective)

    def end_epoch(self) -> list[Metric]:
        return []

    def checkpoint_arrays(self) -> tuple[StateArrays, StateMetadata]:
        """The sums (the sign matrix of a sketch is not kept: it is drawn again from SEED)."""
        s = self.stats
        arrays: StateArrays = {"shifted_sum": s.shifted_sum}
        if s.shift is not None:
            arrays["shift"] = s.shift
        if s.exact:
            arrays["scatter"] = s.scatter
        else:
            arrays["sketch"] = s.sketch
        return arrays, {"n": s.n, "shifted_sq_sum": None if s.exact else s.shifted_sq_sum}

    def restore_checkpoint(self, arrays: StateArrays, metadata: StateMetadata) -> None:
        s = self.stats
        n = metadata.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise CheckpointMismatch(f"its row count n={n!r} is not a count")
        shifted_sum = take_array(arrays, "shifted_sum", s.shifted_sum)
        shift = s.shift
        if "shift" in arrays:
            # float32 on one host, float64 after combine (the job-wide mean).
            dtype = np.float64 if arrays["shift"].dtype == np.float64 else np.float32
            shift = take_array(arrays, "shift", np.zeros(s.feature_dim, dtype=dtype))
        elif n:
            raise CheckpointMismatch("it has rows but no array 'shift'")
        products = take_array(arrays, "scatter", s.scatter) if s.exact else take_array(arrays, "sketch", s.sketch)
        square = metadata.get("shifted_sq_sum")
        if not s.exact and not isinstance(square, float):
            raise CheckpointMismatch(f"its shifted_sq_sum={square!r} is not a number")
        s.n, s.shift, s.shifted_sum = n, shift, shifted_sum
        if s.exact:
            s.scatter = products
        else:
            s.sketch, s.shifted_sq_sum = products, float(square)  # type: ignore[arg-type]  # checked above

    def current_model(self) -> PCAModel:
        return self.finalize()[0]

    def finalize(self) -> tuple[PCAModel, list[Metric]]:
        components, singular_values, mean, train_error = self.stats.finalize(self.hp["num_components"])
        model = PCAModel(
            components,
            singular_values,
            mean=mean,
            n_rows=self.stats.n,
            hyperparameters=self.hp,
            details={
                "sketch_columns": None if self.stats.exact else self.columns,
                "exact": self.stats.exact,
                # What singular_values are (see the module docstring): a reader of model.json
                # must not take a randomized model's for the data's.
                "singular_values": "exact" if self.stats.exact else "nystrom_lower_bounds",
            },
        )
        return model, [Metric(RECONSTRUCTION_ERROR, train_error)]


class PCAScorer:
    """The mean squared reconstruction error of a channel's rows."""

    def __init__(self, model: PCAModel) -> None:
        self.model = model
        self.total = 0.0
        self.rows = 0

    def add(self, batch: Batch) -> None:
        self.total += self.model.reconstruction_error_sum(batch)
        self.rows += batch.n_rows

    def combine(self, collective: SingleHost) -> None:
        self.total, rows = collective.all_reduce_sum(np.array([self.total, self.rows], dtype=np.float64))
        self.rows = int(round(rows))

    def metrics(self) -> list[Metric]:
        return [Metric(RECONSTRUCTION_ERROR, self.total / self.rows)] if self.rows else []
