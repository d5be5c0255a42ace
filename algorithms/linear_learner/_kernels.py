"""numba kernels for linear learner: the losses and their gradients for many models at once,
the sparse products, and the optimizer steps.

Layout: a mini-batch trains M models together. Each model has K output columns (K = 1 for
binary and regression, K = num_classes for multiclass), so the weights of all models are one
features x (M K) float32 matrix W and the forward pass of a dense batch is one GEMM, X @ W, the
backward one more, X^T @ G (numpy, single-threaded BLAS: see runtime/threads.py for why not
BLAS's own threads). For a CSR batch the two products are the kernels below, which walk each
row's non-zeros once for all M K columns, so a sparse batch is never densified.

The loss kernel reads the batch's outputs Z (rows x M K) and writes the gradient dL/dZ into the
same buffer, already multiplied by each row's weight and divided by the batch's total weight,
so that the two products give the mean gradient directly. It returns each model's summed loss
(row weights only: class weights shape the gradient, not the reported loss).

The update kernel applies the gradient to every weight: weight decay (wd, L2) in the gradient,
the optimizer step (sgd with momentum, adam, rmsprop) with each model's own learning rate,
then l1 as a proximal step (soft thresholding), which sets small weights exactly to zero.

Kernels are serial: a mini-batch's work (e.g. 1,000 x 100 x 32) is far below what waking
threads pays for (runtime/threads.py measured 0.85-1.3 s of thread scheduling over 100
batches on a busy machine).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Loss codes (the loss hyperparameter's values, resolved).
LOGISTIC = 0
HINGE = 1
SQUARED = 2
ABSOLUTE = 3
EPS_SQUARED = 4
EPS_ABSOLUTE = 5
QUANTILE = 6
HUBER = 7
SOFTMAX = 8

# Optimizer codes.
SGD = 0
ADAM = 1
RMSPROP = 2

# Added to the root of adam's and rmsprop's second moment, as MXNet and PyTorch do.
OPTIMIZER_EPSILON = 1e-8
# rmsprop's decay of the squared-gradient average (MXNet's gamma1 default).
RMSPROP_DECAY = 0.9

_FASTMATH = {"nsz", "arcp", "contract", "reassoc", "afn"}


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _scalar_loss(loss, z, y, param):
    """(loss, dloss/dz) of one output z against label y, for hinge and the regression losses.
    `param` is the loss's own number: margin
    (hinge), insensitivity (eps losses), quantile, delta (huber)."""
    if loss == HINGE:
        sign = 2.0 * y - 1.0
        slack = param - sign * z
        if slack > 0.0:
            return slack, -sign
        return 0.0, 0.0
    r = z - y
    if loss == SQUARED:
        return r * r, 2.0 * r
    if loss == ABSOLUTE:
        return abs(r), (1.0 if r > 0.0 else -1.0 if r < 0.0 else 0.0)
    if loss == EPS_SQUARED or loss == EPS_ABSOLUTE:
        excess = abs(r) - param
        if excess <= 0.0:
            return 0.0, 0.0
        sign = 1.0 if r > 0.0 else -1.0
        if loss == EPS_SQUARED:
            return excess * excess, 2.0 * excess * sign
        return excess, sign
    if loss == QUANTILE:
        # Pinball loss: an under-prediction (y > z) costs quantile per unit, an over-prediction
        # 1 - quantile, so the minimiser is the quantile-th quantile of y.
        if r < 0.0:
            return -param * r, -param
        return (1.0 - param) * r, 1.0 - param
    # HUBER
    a = abs(r)
    if a <= param:
        return 0.5 * r * r, r
    return param * (a - 0.5 * param), (param if r > 0.0 else -param)


def loss_and_gradient(Z, y, row_weights, positive_weights, class_weights, loss, param, n_outputs, gradient, losses):
    """Per model, add the loss of outputs Z (rows x models*n_outputs) against labels y, weighted
    by row_weights, to `losses` (float64, one per model). With `gradient`, overwrite Z with
    dL/dZ x the row's weight in the model's gradient / the batch's total row weight: the row
    weight times positive_weights[model] for a positive label (binary; empty: 1) or times
    class_weights[label] (multiclass; empty: 1).

    Softmax (n_outputs = classes): each model's n_outputs columns are its class scores; y holds
    class indices. Every other loss has one column per model.

    The exponentials and logarithms are numpy's: its float32 SIMD loops take 15 us for the
    32,000 outputs of a 1,000-row batch of 32 models, where numba's scalar libm calls (no SVML
    here) took 0.7-0.9 ms, more than the batch's two GEMMs. The rest is numba."""
    total = float(row_weights.sum(dtype=np.float64))
    scale = 1.0 / total if total > 0.0 else 0.0
    if loss == LOGISTIC:
        E = np.abs(Z)
        np.negative(E, out=E)
        np.exp(E, out=E)  # exp(-|z|), in (0, 1]: neither log1p nor the sigmoid can overflow
        _logistic(Z, E, np.log1p(E), y, row_weights, positive_weights, scale, gradient, losses)
    elif loss == SOFTMAX:
        # numpy's reductions over a short last axis (the classes) cost more than the exp: 0.45 s
        # of 1.2 s for 100 batches of 1,000 x 32 models x 10 classes. numba does those.
        E = np.empty((Z.shape[0], Z.shape[1] // n_outputs, n_outputs), Z.dtype)
        top = _softmax_shift(Z, E)
        np.exp(E, out=E)
        norm = _class_sums(E)
        _softmax(Z, E, top + np.log(norm), norm, y, row_weights, class_weights, scale, gradient, losses)
    else:
        _pointwise(Z, y, row_weights, positive_weights, loss, param, scale, gradient, losses)


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _logistic(Z, E, L, y, row_weights, positive_weights, scale, gradient, losses):
    """Logistic loss log(1 + exp(z)) - y z = log1p(exp(-|z|)) + max(z, 0) - y z, and its
    gradient sigmoid(z) - y, from E = exp(-|z|) and L = log1p(E)."""
    rows, models = Z.shape
    weighted_positives = positive_weights.shape[0] == models
    for i in range(rows):
        yi = y[i]
        wi = row_weights[i]
        g = wi * scale
        for m in range(models):
            z = Z[i, m]
            e = E[i, m]
            losses[m] += wi * (L[i, m] + max(z, 0.0) - yi * z)
            if gradient:
                p = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
                gm = g * positive_weights[m] if weighted_positives and yi == 1.0 else g
                Z[i, m] = gm * (p - yi)


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _softmax_shift(Z, E):
    """E[i, m, c] = Z[i, m * classes + c] - max over c; returns those maxima (rows x models)."""
    rows, models, classes = E.shape
    top = np.empty((rows, models), Z.dtype)
    for i in range(rows):
        for m in range(models):
            base = m * classes
            best = Z[i, base]
            for c in range(1, classes):
                best = max(best, Z[i, base + c])
            top[i, m] = best
            for c in range(classes):
                E[i, m, c] = Z[i, base + c] - best
    return top


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _class_sums(E):
    """Sum over the last axis (the classes) of E (rows x models x classes)."""
    rows, models, classes = E.shape
    sums = np.empty((rows, models), E.dtype)
    for i in range(rows):
        for m in range(models):
            total = E[i, m, 0]
            for c in range(1, classes):
                total += E[i, m, c]
            sums[i, m] = total
    return sums


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _softmax(Z, E, log_partition, norm, y, row_weights, class_weights, scale, gradient, losses):
    """Softmax cross-entropy log(sum_c exp(z_c)) - z_label per model, and its gradient
    softmax(z) - onehot(label), from E = exp(z - max z) (rows x models x classes), the log
    partition max z + log(sum E) and sum E (rows x models)."""
    rows, models, classes = E.shape
    weighted_classes = class_weights.shape[0] > 0
    for i in range(rows):
        label = int(y[i])
        wi = row_weights[i]
        g = wi * scale * (class_weights[label] if weighted_classes else 1.0)
        for m in range(models):
            base = m * classes
            losses[m] += wi * (log_partition[i, m] - Z[i, base + label])
            if gradient:
                inverse = 1.0 / norm[i, m]
                for c in range(classes):
                    Z[i, base + c] = g * E[i, m, c] * inverse
                Z[i, base + label] -= g


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _pointwise(Z, y, row_weights, positive_weights, loss, param, scale, gradient, losses):
    """The losses without a transcendental function: hinge and the regression losses."""
    rows, models = Z.shape
    weighted_positives = positive_weights.shape[0] == models
    for i in range(rows):
        yi = y[i]
        wi = row_weights[i]
        g = wi * scale
        for m in range(models):
            value, slope = _scalar_loss(loss, Z[i, m], yi, param)
            losses[m] += wi * value
            if gradient:
                gm = g * positive_weights[m] if weighted_positives and yi == 1.0 else g
                Z[i, m] = gm * slope


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def csr_times_dense(indptr, indices, data, W, out):
    """out (rows x columns) = CSR @ W (features x columns), walking each row's non-zeros once."""
    rows = indptr.shape[0] - 1
    columns = W.shape[1]
    for i in range(rows):
        for c in range(columns):
            out[i, c] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            v = data[k]
            for c in range(columns):
                out[i, c] += v * W[j, c]


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def csr_gradient_rows(indptr, indices, data, G, slots, touched, out):
    """The rows of CSR^T @ G (features x columns) that the batch touches: out[t] is the
    gradient row of feature touched[t], for t < the returned count, in increasing feature
    order. Features the batch does not touch have a zero row, which is never written: a 1,000-row
    batch of 50,000 features touches about 63 % of them, and the optimizer step then runs over
    those rows only. `slots` (int32, one per feature, all -1) maps a feature to its row of `out`
    while the kernel runs and is left all -1 again.

    The rows come in feature order (a scan of `slots`, not the order of first appearance) so
    that the optimizer step walks the weight arrays forwards: on 32,000 of 50,000 rows of 32
    columns it took 5 ms so against 15-22 ms in random order, the arrays being larger than the
    caches."""
    columns = G.shape[1]
    for k in range(indices.shape[0]):
        slots[indices[k]] = 0
    count = 0
    for j in range(slots.shape[0]):
        if slots[j] == 0:
            slots[j] = count
            touched[count] = j
            for c in range(columns):
                out[count, c] = 0.0
            count += 1
    for i in range(indptr.shape[0] - 1):
        for k in range(indptr[i], indptr[i + 1]):
            row = out[slots[indices[k]]]
            v = data[k]
            for c in range(columns):
                row[c] += v * G[i, c]
    for t in range(count):
        slots[touched[t]] = -1
    return count


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def learning_rates(rates, base, factor, every, minimum, step, scheduled):
    """Each model's learning rate for update number `step` (from 0), written to each of its
    columns of `rates` (models x outputs per model): the base rate multiplied by `factor` every
    `every` updates, never below `minimum` (nor above the base)."""
    models = base.shape[0]
    n_outputs = rates.shape[0] // models
    for m in range(models):
        rate = base[m]
        if scheduled:
            rate = min(base[m], max(base[m] * factor[m] ** (step // every[m]), minimum[m]))
        for k in range(n_outputs):
            rates[m * n_outputs + k] = rate


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def update_rows(
    W,
    rows,
    count,
    gradient,
    column_sums,
    mean,
    inverse_scale,
    first_moment,
    second_moment,
    rates,
    weight_decays,
    l1s,
    optimizer,
    momentum,
    beta_1,
    beta_2,
    step,
    W_raw,
):
    """One optimizer step on rows rows[:count] of the normalised weights W (features x
    columns), in place; gradient[t] is the raw-feature gradient of row rows[t].

    The gradient with respect to W is (gradient - mean column_sums) * inverse_scale, where
    gradient = X^T G over raw features and column_sums = sum of G's rows: the scaling folded
    into the gradient as it is into the forward pass. rates, weight_decays and l1s are per
    column (each model's, repeated over its outputs): wd (L2) joins the gradient, l1 is a
    proximal step after it (soft thresholding: small weights become exactly 0). `step` counts
    updates from 1 (adam's bias correction). first_moment is sgd's velocity or adam's mean,
    second_moment adam's or rmsprop's mean square. W_raw = W * inverse_scale is kept up to date
    for the next forward pass.

    A dense batch updates every row. A sparse one updates the rows its features touch, as
    MXNet's optimizers do for row-sparse gradients (lazy_update): an untouched row keeps its
    weights and moments, decay included, until a batch touches it.

    One loop per optimizer, each over contiguous columns, so that LLVM vectorises them."""
    columns = W.shape[1]
    # float32 throughout (rates, weight_decays and l1s are float32 arrays): twice the SIMD lanes
    # of float64, and every array the loops touch is float32 anyway.
    one = np.float32(1.0)
    b1, b2, mu = np.float32(beta_1), np.float32(beta_2), np.float32(momentum)
    correction_1 = np.float32(1.0 - beta_1**step)
    correction_2 = np.float32(1.0 - beta_2**step)
    epsilon = np.float32(OPTIMIZER_EPSILON)
    decay = np.float32(RMSPROP_DECAY)
    zero = np.float32(0.0)
    for t in range(count):
        j = rows[t]
        inverse = inverse_scale[j]
        centre = mean[j]
        w_row = W[j]
        raw_row = W_raw[j]
        g_row = gradient[t]
        m_row = first_moment[j]
        v_row = second_moment[j]
        if optimizer == ADAM:
            for c in range(columns):
                g = (g_row[c] - centre * column_sums[c]) * inverse + weight_decays[c] * w_row[c]
                mean_c = b1 * m_row[c] + (one - b1) * g
                square = b2 * v_row[c] + (one - b2) * g * g
                m_row[c] = mean_c
                v_row[c] = square
                w = w_row[c] - rates[c] * (mean_c / correction_1) / (math.sqrt(square / correction_2) + epsilon)
                shrink = rates[c] * l1s[c]
                w = max(w - shrink, zero) + min(w + shrink, zero)
                w_row[c] = w
                raw_row[c] = w * inverse
        elif optimizer == RMSPROP:
            for c in range(columns):
                g = (g_row[c] - centre * column_sums[c]) * inverse + weight_decays[c] * w_row[c]
                square = decay * v_row[c] + (one - decay) * g * g
                v_row[c] = square
                w = w_row[c] - rates[c] * g / (math.sqrt(square) + epsilon)
                shrink = rates[c] * l1s[c]
                w = max(w - shrink, zero) + min(w + shrink, zero)
                w_row[c] = w
                raw_row[c] = w * inverse
        else:
            for c in range(columns):
                g = (g_row[c] - centre * column_sums[c]) * inverse + weight_decays[c] * w_row[c]
                velocity = mu * m_row[c] - rates[c] * g
                m_row[c] = velocity
                w = w_row[c] + velocity
                shrink = rates[c] * l1s[c]
                w = max(w - shrink, zero) + min(w + shrink, zero)
                w_row[c] = w
                raw_row[c] = w * inverse


_SIGN_BIT = np.uint64(1 << 63)
_DIGIT_MASK = np.uint64(255)


@njit(cache=True, nogil=True)
def descending_order(values, order):
    """order[j] := the indices of row j of `values` (float64, finite) by descending value, ties
    in any order: threshold calibration's sort. An LSD radix sort on the values' bits, a byte a
    pass, that skips a byte all the row's values share: scores computed in float32 share their
    low three bytes, so a row takes five O(n) passes instead of numpy's O(n log n) argsort
    (about 3x faster on 100,000 rows)."""
    models, n = values.shape
    bits = values.view(np.uint64)
    keys = np.empty(n, np.uint64)
    spare_keys = np.empty(n, np.uint64)
    spare = np.empty(n, np.int64)
    counts = np.empty(256, np.int64)
    for j in range(models):
        rows = order[j]
        for i in range(n):
            b = bits[j, i]
            # Unsigned keys in ascending float order (negatives: all bits flipped, so larger
            # magnitudes come first; positives: sign bit set), then flipped for descending.
            ascending = ~b if b >= _SIGN_BIT else b | _SIGN_BIT
            keys[i] = ~ascending
            rows[i] = i
        source_keys, source_rows, target_keys, target_rows = keys, rows, spare_keys, spare
        for byte in range(8):
            shift = np.uint64(8 * byte)
            counts[:] = 0
            for i in range(n):
                counts[np.int64((source_keys[i] >> shift) & _DIGIT_MASK)] += 1
            if counts.max() == n:
                continue
            start = 0
            for digit in range(256):
                count = counts[digit]
                counts[digit] = start
                start += count
            for i in range(n):
                digit = np.int64((source_keys[i] >> shift) & _DIGIT_MASK)
                position = counts[digit]
                counts[digit] = position + 1
                target_keys[position] = source_keys[i]
                target_rows[position] = source_rows[i]
            source_keys, source_rows, target_keys, target_rows = target_keys, target_rows, source_keys, source_rows
        if source_rows is not rows:
            rows[:] = source_rows
