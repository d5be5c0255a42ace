"""numba kernels for factorization machines: the O(k nnz) forward pass (Rendle's identity), the
mini-batch gradient of the features a batch touches, and AdaGrad's lazy step on them.

The model: y = w0 + sum_j w_j x_j + sum_{i<j} <v_i, v_j> x_i x_j, where the pairwise sum is
0.5 sum_f ((sum_j v_jf x_j)^2 - sum_j v_jf^2 x_j^2) (Rendle 2010, lemma 3.1): one walk over a
row's non-zeros per factor instead of one per pair. With s_f = sum_j v_jf x_j, the gradient of
the output is 1 (w0), x_j (w_j) and x_j s_f - v_jf x_j^2 (v_jf).

Rows are CSR (a dense batch is handed over as the CSR of its non-zeros). A mini-batch's step:
`assign_slots` gives every feature the batch touches a row of a compact gradient table;
`accumulate_rows` computes the outputs and slopes of a range of rows at the batch's start and
adds their gradient into a table; `apply_step` sums the tables and takes one AdaGrad step on the
touched features only (MXNet's lazy_update for row-sparse gradients: an untouched feature keeps
its weights, decay included) and on w0.

Cores: a batch's rows may be split over threads (runtime/threads.run_in_row_chunks), each with
a table of its own, summed in `apply_step`: no locks, no shared writes, and the same step as on
one thread up to the order of the sums.

AdaGrad as MXNet writes it, per parameter: g = rescale_grad * gradient, clipped to
[-clip_gradient, clip_gradient] when clipping is on; h += g^2; p -= lr (g / sqrt(h + eps) + wd p).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Loss codes.
SQUARED = 0  # regressor: (y - yhat)^2, gradient 2 (yhat - y) halved to yhat - y as MXNet's LinearRegressionOutput
LOGISTIC = 1  # binary_classifier: log loss of sigmoid(yhat), gradient sigmoid(yhat) - y

# Parameter groups, in the order of the per-group arrays (lrs, wds).
BIAS = 0
LINEAR = 1
FACTORS = 2

_FASTMATH = {"nsz", "arcp", "contract", "reassoc", "afn"}


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _row_output(indptr, indices, data, i, w0, w, V, s):
    """The output of CSR row i; s (k,) receives sum_j v_jf x_j."""
    k = V.shape[1]
    for f in range(k):
        s[f] = 0.0
    linear = 0.0
    squares = 0.0
    for p in range(indptr[i], indptr[i + 1]):
        j = indices[p]
        x = data[p]
        linear += w[j] * x
        row = V[j]
        for f in range(k):
            vx = row[f] * x
            s[f] += vx
            squares += vx * vx
    pairs = 0.0
    for f in range(k):
        pairs += s[f] * s[f]
    return w0 + linear + 0.5 * (pairs - squares)


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def predict_rows(indptr, indices, data, w0, w, V, out):
    """out[i] = the model's raw output for CSR row i (before the logistic, for a classifier)."""
    s = np.empty(V.shape[1], np.float32)
    for i in range(indptr.shape[0] - 1):
        out[i] = _row_output(indptr, indices, data, i, w0, w, V, s)


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _loss_and_slope(loss, z, y):
    """(loss, dloss/dz) of raw output z against label y."""
    if loss == SQUARED:
        r = z - y
        return r * r, r
    # Log loss of p = sigmoid(z), written stably: log(1 + e^-|z|) + max(z, 0) - y z.
    p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return math.log1p(math.exp(-abs(z))) + max(z, 0.0) - y * z, p - y


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _adagrad(p, h, gradient, lr, wd, rescale, clip, eps):
    """AdaGrad's step of parameter p with accumulator h; returns (p, h)."""
    g = gradient * rescale
    if clip > 0.0:
        g = min(max(g, -clip), clip)
    h += g * g
    return p - lr * (g / math.sqrt(h + eps) + wd * p), h


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def assign_slots(indices, start, stop, slots, touched):
    """Give each feature among indices[start:stop] a row of the gradient table: slots[j] = its
    row, touched[row] = j, in order of first appearance; returns the number of features."""
    count = 0
    for p in range(start, stop):
        j = indices[p]
        if slots[j] < 0:
            slots[j] = count
            touched[count] = j
            count += 1
    return count


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def accumulate_rows(indptr, indices, data, y, row_weights, loss, w0, w, V, slots, start, stop, sums, table, totals):
    """Rows start .. stop - 1 of a batch, at the weights as they are: each row's output, loss and
    slope, and its share of the gradient added to `table` (row slots[j]: the factor gradient of
    feature j, then its linear gradient) and to totals (float64: w0's gradient, the weighted loss,
    the row weight). sums (at least stop - start rows of k) is scratch."""
    k = V.shape[1]
    for i in range(start, stop):
        s = sums[i - start]
        z = _row_output(indptr, indices, data, i, w0, w, V, s)
        value, slope = _loss_and_slope(loss, z, y[i])
        r = row_weights[i]
        g = r * slope
        totals[0] += g
        totals[1] += r * value
        totals[2] += r
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            x = data[p]
            gx = g * x
            row = V[j]
            out = table[slots[j]]
            for f in range(k):
                out[f] += gx * (s[f] - row[f] * x)
            out[k] += gx


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def apply_step(touched, count, tables, parts, totals, w0, w, V, h0, hw, hV, lrs, wds, rescale, clip, eps, slots):
    """AdaGrad's step on w0 and on the `count` touched features, from the gradient summed over
    tables[:parts] and totals[:parts] (one per thread that took rows of the batch); leaves slots
    all -1 again. rescale: rescale_grad, or 0 for 1 / the batch's total row weight. clip:
    clip_gradient, or 0 for none."""
    k = V.shape[1]
    bias_gradient = 0.0
    weight = 0.0
    for part in range(parts):
        bias_gradient += totals[part, 0]
        weight += totals[part, 2]
    scale = rescale if rescale != 0.0 else (1.0 / weight if weight > 0.0 else 0.0)
    lrw, lrv = lrs[LINEAR], lrs[FACTORS]
    wdw, wdv = wds[LINEAR], wds[FACTORS]
    for t in range(count):
        j = touched[t]
        slots[j] = -1
        row = V[j]
        history = hV[j]
        for f in range(k):
            gradient = tables[0, t, f]
            for part in range(1, parts):
                gradient += tables[part, t, f]
            row[f], history[f] = _adagrad(row[f], history[f], gradient, lrv, wdv, scale, clip, eps)
        gradient = tables[0, t, k]
        for part in range(1, parts):
            gradient += tables[part, t, k]
        w[j], hw[j] = _adagrad(w[j], hw[j], gradient, lrw, wdw, scale, clip, eps)
    w0[0], h0[0] = _adagrad(w0[0], h0[0], bias_gradient, lrs[BIAS], wds[BIAS], scale, clip, eps)
