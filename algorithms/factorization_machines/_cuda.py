"""Factorization machines' mini-batch step on a CUDA GPU (numba-cuda), for sparse and dense
batches (a dense batch goes over as the CSR of its non-zeros, as on the CPU).

The same step as `_kernels.train_batches` on one thread, kernel for kernel:

1. outputs: one thread per row: the row's output and s_f = sum_j v_jf x_j by the CPU's very
   `_row_output` (compiled as a device function), its loss and weighted slope by the CPU's
   `_loss_and_slope`;
2. sums: one thread adds the rows' slopes (w0's gradient), losses and weights in row order, in
   float64, and steps w0;
3. gradient: the touched features (np.unique of the batch's columns, on the CPU) each get a
   row of a compact table, zeroed by one kernel; one thread per non-zero then adds its share of
   the linear and factor gradient with atomic adds;
4. update: one thread per (touched feature, factor or linear weight): the CPU's `_adagrad`.

State: w0, w, V and their AdaGrad accumulators live on the GPU from the first batch to the end of
training; per batch the CSR arrays, labels, row weights and the touched features go over, nothing
comes back. `download` brings the weights back when the CPU needs them (each pass's model), and
`take_totals` the pass's loss sums.

Differences from the CPU are float32 rounding only: the atomic adds sum a feature's gradient in
another order. No fastmath here.

Importing this module imports numba.cuda: only code that has decided to use the GPU imports it
(see runtime/device.py). Set NUMBA_ENABLE_CUDASIM=1 before numba.cuda is first imported to run
the kernels in numba's CUDA simulator (one Python thread per GPU thread: small data only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from numba import cuda

from . import _kernels as kernels

if TYPE_CHECKING:
    from ._fm import FactorizationMachinesTraining

_THREADS_PER_BLOCK = 256
# With grid-stride loops a grid larger than the GPU runs at once only adds blocks to schedule.
_MAX_BLOCKS = 4096
# The parameter groups' indices, as module globals: numba-cuda freezes a kernel's globals into it.
_BIAS, _LINEAR, _FACTORS = kernels.BIAS, kernels.LINEAR, kernels.FACTORS

# The CPU's per-row and per-parameter math, compiled for the GPU.
_row_output = cuda.jit(device=True)(kernels._row_output.py_func)
_loss_and_slope = cuda.jit(device=True)(kernels._loss_and_slope.py_func)
_adagrad = cuda.jit(device=True)(kernels._adagrad.py_func)


def _grid(n: int) -> tuple[int, int]:
    return min(_MAX_BLOCKS, max(1, -(-n // _THREADS_PER_BLOCK))), _THREADS_PER_BLOCK


@cuda.jit
def _outputs(indptr, indices, data, y, row_weights, loss, w0, w, V, sums, slopes, row_losses):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.shape[0], stride):
        z = _row_output(indptr, indices, data, i, w0[0], w, V, sums[i])
        value, slope = _loss_and_slope(loss, z, y[i])
        slopes[i] = row_weights[i] * slope
        row_losses[i] = row_weights[i] * value


@cuda.jit
def _sums_and_bias_step(slopes, row_losses, row_weights, w0, h0, lrs, wds, rescale, clip, eps, totals, scale_out):
    if cuda.grid(1) != 0:
        return
    gradient = 0.0
    loss = 0.0
    weight = 0.0
    for i in range(slopes.shape[0]):
        gradient += slopes[i]
        loss += row_losses[i]
        weight += row_weights[i]
    totals[0] += loss
    totals[1] += weight
    scale = rescale if rescale != 0.0 else (1.0 / weight if weight > 0.0 else 0.0)
    scale_out[0] = scale
    w0[0], h0[0] = _adagrad(w0[0], h0[0], gradient, lrs[_BIAS], wds[_BIAS], scale, clip, eps)


@cuda.jit
def _zero(table):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, table.shape[0], stride):
        for f in range(table.shape[1]):
            table[t, f] = 0.0


@cuda.jit
def _accumulate(rows, indices, data, slots, slopes, sums, V, table):
    """table[t] = (the factor gradient row, then the linear gradient) of touched feature t."""
    k = V.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, indices.shape[0], stride):
        i = rows[p]
        j = indices[p]
        t = slots[p]
        x = data[p]
        gx = slopes[i] * x
        cuda.atomic.add(table, (t, k), gx)
        for f in range(k):
            cuda.atomic.add(table, (t, f), gx * (sums[i, f] - V[j, f] * x))


@cuda.jit
def _update(touched, table, w, V, hw, hV, lrs, wds, scale, clip, eps):
    k = V.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for n in range(start, touched.shape[0] * (k + 1), stride):
        t = n // (k + 1)
        f = n % (k + 1)
        j = touched[t]
        if f == k:
            w[j], hw[j] = _adagrad(w[j], hw[j], table[t, k], lrs[_LINEAR], wds[_LINEAR], scale[0], clip, eps)
        else:
            V[j, f], hV[j, f] = _adagrad(
                V[j, f], hV[j, f], table[t, f], lrs[_FACTORS], wds[_FACTORS], scale[0], clip, eps
            )


class GpuMachine:
    """The weights and accumulators of a FactorizationMachinesTraining on the GPU, and its step."""

    def __init__(self, state: FactorizationMachinesTraining) -> None:
        self.loss = state.loss
        self.rescale = np.float32(state.rescale)
        self.clip = np.float32(state.clip)
        self.eps = np.float32(state.eps)
        self.k = state.V.shape[1]
        self.arrays = {
            name: cuda.to_device(getattr(state, name)) for name in ("w0", "w", "V", "h0", "hw", "hV", "lrs", "wds")
        }
        self.totals = cuda.to_device(np.zeros(2))
        self.scale = cuda.device_array(1, np.float32)

    def train(self, X: sp.csr_matrix, y: np.ndarray, row_weights: np.ndarray) -> None:
        """One mini-batch step on the GPU (the batch's rows as CSR)."""
        n = X.shape[0]
        touched, slots = np.unique(X.indices, return_inverse=True)
        rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(X.indptr))
        a = self.arrays
        indptr, indices, data = (cuda.to_device(v) for v in (X.indptr, X.indices, X.data))
        d_y, d_weights = cuda.to_device(y), cuda.to_device(row_weights)
        sums = cuda.device_array((n, self.k), np.float32)
        slopes = cuda.device_array(n, np.float32)
        row_losses = cuda.device_array(n, np.float32)
        _outputs[_grid(n)](
            indptr, indices, data, d_y, d_weights, self.loss, a["w0"], a["w"], a["V"], sums, slopes, row_losses
        )
        _sums_and_bias_step[1, 1](
            slopes,
            row_losses,
            d_weights,
            a["w0"],
            a["h0"],
            a["lrs"],
            a["wds"],
            self.rescale,
            self.clip,
            self.eps,
            self.totals,
            self.scale,
        )
        if len(touched) == 0:
            return
        table = cuda.device_array((len(touched), self.k + 1), np.float32)
        _zero[_grid(len(touched))](table)
        _accumulate[_grid(len(X.indices))](
            cuda.to_device(rows), indices, data, cuda.to_device(slots.astype(np.int32)), slopes, sums, a["V"], table
        )
        _update[_grid(len(touched) * (self.k + 1))](
            cuda.to_device(touched),
            table,
            a["w"],
            a["V"],
            a["hw"],
            a["hV"],
            a["lrs"],
            a["wds"],
            self.scale,
            self.clip,
            self.eps,
        )

    def download(self, w0: np.ndarray, w: np.ndarray, V: np.ndarray) -> None:
        """Copy the GPU's weights into the host arrays."""
        self.arrays["w0"].copy_to_host(w0)
        self.arrays["w"].copy_to_host(w)
        self.arrays["V"].copy_to_host(V)

    def take_totals(self) -> np.ndarray:
        """The pass's (summed weighted loss, row weight) since the last call; zeroed there."""
        totals = self.totals.copy_to_host()
        self.totals.copy_to_device(np.zeros(2))
        return totals
