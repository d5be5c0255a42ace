"""The k-means assignment step on a CUDA GPU (numba-cuda): nearest center of dense float32 rows.

Same contract as `_kmeans_kernels.assign_dense`, computed differently: each GPU thread takes
rows (a grid-stride loop) and, for each center, sums (x_t - c_t)^2 in float64 straight from the
unshifted values. The CPU kernels choose the center by the float32 expansion
||c - shift||^2 - 2 (x - shift).(c - shift) and only then recompute the winner's distance in
float64; here every distance is already exact, so no shift is needed and the chosen distance
is the one reported. It is a sum of squares, so never negative (the CPU's CSR kernel clamps
because its expansion can cancel below zero; nothing here can).

Ties: the CPU keeps the first of equal values (strict `<` from center 0 up), i.e. the lowest
center index; so does this kernel. Where the CPU's float32 values tie, the exact distances
usually do too (e.g. a row midway between two centers on small integer coordinates); where two
centers are nearer to a row than float32 can tell apart, the CPU may pick either and this kernel
picks the truly nearer one, whose distance is then the same to float32 precision.

Excluded centers (the CPU's UNSEEDED_SQ_NORM sentinel) are skipped. If every center is excluded,
which k-means never asks for, the CPU's argmin of equal sentinels gives center 0 and the exact
distance to it; so does this kernel.

Importing this module imports numba.cuda: only code that has decided to use the GPU imports it
(see device.py). Set NUMBA_ENABLE_CUDASIM=1 before numba.cuda is first imported to run the
kernel in numba's CUDA simulator (pure Python, one thread per simulated GPU thread: slow).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

_THREADS_PER_BLOCK = 256
# With the grid-stride loop a grid larger than the GPU can run at once only adds blocks to
# schedule; 4096 blocks of 256 threads fill any current GPU several times over.
_MAX_BLOCKS = 4096


@cuda.jit
def _assign_rows(X, centers, excluded, labels, sq_distances):
    n_rows, n_features = X.shape
    n_centers = centers.shape[0]
    for i in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
        best = -1
        best_value = np.float64(0.0)
        for j in range(n_centers):
            if excluded[j]:
                continue
            total = np.float64(0.0)
            for t in range(n_features):
                diff = np.float64(X[i, t]) - np.float64(centers[j, t])
                total += diff * diff
            if best < 0 or total < best_value:
                best = j
                best_value = total
        if best < 0:
            best = 0
            for t in range(n_features):
                diff = np.float64(X[i, t]) - np.float64(centers[0, t])
                best_value += diff * diff
        labels[i] = best
        sq_distances[i] = best_value


def assign_dense_gpu(X, centers, excluded, labels, sq_distances) -> None:
    """Nearest center of every row of X (n x d, float32), on the GPU.

    centers: (K, d) float32. excluded: (K,) bool, True for a center no row may be assigned to
    (the CPU kernels' UNSEEDED_SQ_NORM). Writes labels (n,) int64 and sq_distances (n,) float64,
    the exact squared Euclidean distance, as `_kmeans_kernels.assign_dense` does. Copies X and
    the centers to the GPU and the results back on every call.
    """
    n_rows = X.shape[0]
    if n_rows == 0:
        return
    device_X = cuda.to_device(np.ascontiguousarray(X, dtype=np.float32))
    device_centers = cuda.to_device(np.ascontiguousarray(centers, dtype=np.float32))
    device_excluded = cuda.to_device(np.ascontiguousarray(excluded, dtype=np.bool_))
    device_labels = cuda.device_array(n_rows, dtype=np.int64)
    device_sq_distances = cuda.device_array(n_rows, dtype=np.float64)
    blocks = min(_MAX_BLOCKS, -(-n_rows // _THREADS_PER_BLOCK))
    _assign_rows[blocks, _THREADS_PER_BLOCK](
        device_X, device_centers, device_excluded, device_labels, device_sq_distances
    )
    device_labels.copy_to_host(labels)
    device_sq_distances.copy_to_host(sq_distances)
