"""Kernels for k-means: nearest-center assignment and per-center sums (numba), spread over
threads by `row_threads`.

Assignment is the hot loop (rows x centers x features). Two implementations, same contract:

* BLAS (when threadpoolctl is installed): per chunk of rows, one float32 matrix product
  (x - shift) @ (-2 (C - shift))^T, then a numba pass that adds ||c - shift||^2, takes the
  argmin and recomputes the exact distance. Single-threaded BLAS runs 25-30 G multiply-adds/s
  per core here, the fused kernel below 4-11.
* numba only (without threadpoolctl, and for thin products: few centers or few rows): for each
  row, `||c - shift||^2 - 2 (x - shift).(c - shift)` accumulated for all centers in a small
  scratch array (the loop over centers vectorises), then the same argmin. It never writes an
  n x K matrix.

BLAS threads are the catch: OpenBLAS's own threads, on cores that other processes also use,
took 1.5-19 s for the assignment of 500,000 x 50 rows to 160 centers that single-threaded BLAS
does in 0.26-0.35 s. So BLAS runs single-threaded (threadpoolctl) and the parallelism is ours:
a mini-batch is split into row chunks that the calling thread and helper threads claim one at a
time; helpers that have not started when the caller runs out of chunks are cancelled instead
of waited for. A numba `parallel=True` region per mini-batch, by contrast, waits for every
worker to be scheduled: 0.85-1.3 s over 100 batches of 5,000 rows on a busy machine, against
0.48-0.75 s on one thread.

`||c||^2 - 2 x.c` in float32 loses precision when the data sit far from the origin, so the
dense paths work on shifted coordinates `x - shift`, `c - shift` (the caller passes a shift
near the data, e.g. the mean of the first batch): the argmin is unchanged and the magnitudes are
those of the spread, not of the offset. The squared distance to the chosen center is then
recomputed exactly, in float64, from the unshifted values.

The CSR kernel follows the numba scheme over each row's non-zeros, so sparse batches are never
densified (a wide sparse batch, e.g. 5,000 x 100,000, would not fit in memory dense).

Per-center sums are serial loops: they are O(rows x features), a small fraction of the
assignment's O(rows x centers x features), and a threaded version would need one K x d buffer
per thread.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from smalgo.algorithms.runtime.threads import (
    MIN_THREADED_WORK,
    blas_controller,
    run_in_row_chunks,
    single_threaded_blas,
)

# No `nnan`/`ninf`: the kernels must stay correct for any finite input, and fastmath's "no inf"
# assumption would make the unseeded-center sentinel below undefined behaviour.
_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# Squared norm given to centers that hold no position yet, so that no row is ever assigned to
# them. Finite on purpose (see _FASTMATH).
UNSEEDED_SQ_NORM = np.float32(1e30)

# Below this many centers a matrix product is too thin for BLAS to beat the fused kernel.
_MIN_BLAS_CENTERS = 8


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _assign_dense_rows(X, shift, centers_t_m2, shifted_sq_norms, centers, labels, sq_distances, start, stop, acc):
    """assign_dense for rows start..stop, with `acc` (K,) float32 as scratch."""
    d = X.shape[1]
    n_centers = centers_t_m2.shape[1]
    for i in range(start, stop):
        for j in range(n_centers):
            acc[j] = shifted_sq_norms[j]
        for t in range(d):
            xv = X[i, t] - shift[t]
            for j in range(n_centers):
                acc[j] += xv * centers_t_m2[t, j]
        _pick_nearest(acc, X, centers, labels, sq_distances, i)


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _nearest_from_products(products, shifted_sq_norms, X, centers, labels, sq_distances, start):
    """The BLAS path's second half: products[r, j] = -2 (x - shift).(c_j - shift) for row
    start + r (from one matrix product); adds ||c_j - shift||^2 and picks the nearest."""
    n_centers = products.shape[1]
    for r in range(products.shape[0]):
        for j in range(n_centers):
            products[r, j] += shifted_sq_norms[j]
        _pick_nearest(products[r], X, centers, labels, sq_distances, start + r)


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _pick_nearest(values, X, centers, labels, sq_distances, i):
    """labels[i] = argmin of values (the first of equal ones); sq_distances[i] = the exact
    squared distance from row i to that center, in float64."""
    best = 0
    best_value = values[0]
    for j in range(1, values.shape[0]):
        if values[j] < best_value:
            best_value = values[j]
            best = j
    labels[i] = best
    exact = 0.0
    for t in range(X.shape[1]):
        diff = np.float64(X[i, t]) - np.float64(centers[best, t])
        exact += diff * diff
    sq_distances[i] = exact


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _assign_csr_rows(
    data, indices, indptr, centers_t, sq_norms, sq_norms_exact, centers, labels, sq_distances, start, stop, acc
):
    """assign_csr for rows start..stop, with `acc` (K,) float32 as scratch."""
    n_centers = centers_t.shape[1]
    for i in range(start, stop):
        for j in range(n_centers):
            acc[j] = sq_norms[j]
        for p in range(indptr[i], indptr[i + 1]):
            t = indices[p]
            xv = np.float32(-2.0) * data[p]
            for j in range(n_centers):
                acc[j] += xv * centers_t[t, j]
        best = 0
        best_value = acc[0]
        for j in range(1, n_centers):
            if acc[j] < best_value:
                best_value = acc[j]
                best = j
        labels[i] = best
        exact = sq_norms_exact[best]
        for p in range(indptr[i], indptr[i + 1]):
            c = np.float64(centers[best, indices[p]])
            v = np.float64(data[p])
            exact += (v - c) * (v - c) - c * c
        sq_distances[i] = max(exact, 0.0)


def assign_dense(X, shift, centers_t_m2, shifted_sq_norms, centers, labels, sq_distances):
    """Nearest center of every row of X (n x d, float32).

    shift: (d,) float32. centers_t_m2: (d, K) float32, column j = -2 (center j - shift).
    shifted_sq_norms: (K,) float32, ||center j - shift||^2 (UNSEEDED_SQ_NORM to exclude one).
    centers: (K, d) float32, unshifted, for the exact distance.
    Writes labels (n,) int64 and sq_distances (n,) float64 (exact squared Euclidean distance).
    """
    n_rows, n_features = X.shape
    n_centers = centers.shape[0]
    args = (X, shift, centers_t_m2, shifted_sq_norms, centers, labels, sq_distances)
    work = n_rows * n_centers * n_features
    use_blas = n_centers >= _MIN_BLAS_CENTERS and work >= MIN_THREADED_WORK and blas_controller() is not None
    if not use_blas:
        run_in_row_chunks(
            _assign_dense_rows, args, n_rows, work=work, make_scratch=lambda rows: np.empty(n_centers, np.float32)
        )
        return
    with single_threaded_blas():
        run_in_row_chunks(
            _assign_dense_rows_blas,
            args,
            n_rows,
            work=work,
            make_scratch=lambda rows: (
                np.empty((rows, n_features), np.float32),
                np.empty((rows, n_centers), np.float32),
            ),
        )


def _assign_dense_rows_blas(
    X, shift, centers_t_m2, shifted_sq_norms, centers, labels, sq_distances, start, stop, scratch
) -> None:
    shifted, products = scratch
    rows = stop - start
    np.subtract(X[start:stop], shift, out=shifted[:rows])
    np.matmul(shifted[:rows], centers_t_m2, out=products[:rows])
    _nearest_from_products(products[:rows], shifted_sq_norms, X, centers, labels, sq_distances, start)


def assign_csr(data, indices, indptr, centers_t, sq_norms, sq_norms_exact, centers, labels, sq_distances):
    """Nearest center of every row of a CSR matrix (canonical: no duplicate column indices).

    centers_t: (d, K) float32; sq_norms: (K,) float32 (UNSEEDED_SQ_NORM to exclude a center);
    sq_norms_exact: (K,) float64; centers: (K, d) float32.
    Writes labels (n,) int64 and sq_distances (n,) float64, computed exactly as
    ||c||^2 + sum over non-zeros of ((v - c_t)^2 - c_t^2).
    """
    n_rows = indptr.shape[0] - 1
    n_centers = centers.shape[0]
    run_in_row_chunks(
        _assign_csr_rows,
        (data, indices, indptr, centers_t, sq_norms, sq_norms_exact, centers, labels, sq_distances),
        n_rows,
        work=max(n_rows, data.shape[0]) * n_centers,
        make_scratch=lambda rows: np.empty(n_centers, np.float32),
    )


@njit(cache=True, nogil=True)
def accumulate_dense(X, weights, labels, sums, totals):
    """sums[j] += sum of weights[i] * X[i] over rows i with labels[i] == j; totals[j] += their
    weights. sums (K, d) and totals (K,) are float64."""
    n, d = X.shape
    for i in range(n):
        j = labels[i]
        w = weights[i]
        totals[j] += w
        for t in range(d):
            sums[j, t] += w * X[i, t]


@njit(cache=True, nogil=True)
def accumulate_csr(data, indices, indptr, weights, labels, sums, totals):
    """accumulate_dense for a CSR matrix."""
    n = indptr.shape[0] - 1
    for i in range(n):
        j = labels[i]
        w = weights[i]
        totals[j] += w
        for p in range(indptr[i], indptr[i + 1]):
            sums[j, indices[p]] += w * data[p]
