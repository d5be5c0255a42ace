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


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _log1p_exp(x):
    """log(1 + exp(x)) without overflow."""
    if x > 0.0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _scalar_loss(loss, z, y, param):
    """(loss, dloss/dz) of one output z against label y. `param` is the loss's own number:
    margin (hinge), insensitivity (eps losses), quantile, delta (huber)."""
    if loss == LOGISTIC:
        # y in {0, 1}; log(1 + exp(-z)) for a positive, log(1 + exp(z)) for a negative.
        return _log1p_exp(z) - y * z, _sigmoid(z) - y
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


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def loss_and_gradient(Z, y, row_weights, gradient_weights, loss, param, n_outputs, losses):  # noqa: PLR0913
    """Per model, sum the loss of outputs Z (rows x models*n_outputs) against labels y into
    `losses` (float64, models); with gradient_weights given (rows x models: each row's weight
    in each model's gradient, e.g. row weight x positive_example_weight_mult), overwrite Z with
    gradient_weights * dL/dZ / sum(row_weights).

    Softmax (n_outputs = classes): each model's n_outputs columns are its class scores; y holds
    class indices. Every other loss has one column per model."""
    rows, columns = Z.shape
    models = columns // n_outputs
    total = 0.0
    for i in range(rows):
        total += row_weights[i]
    scale = 1.0 / total if total > 0.0 else 0.0
    with_gradient = gradient_weights.shape[0] == rows
    for i in range(rows):
        yi = y[i]
        wi = row_weights[i]
        for m in range(models):
            if loss == SOFTMAX:
                base = m * n_outputs
                top = Z[i, base]
                for c in range(1, n_outputs):
                    top = max(top, Z[i, base + c])
                norm = 0.0
                for c in range(n_outputs):
                    norm += math.exp(Z[i, base + c] - top)
                label = int(yi)
                losses[m] += wi * (top + math.log(norm) - Z[i, base + label])
                if with_gradient:
                    g = gradient_weights[i, m] * scale
                    for c in range(n_outputs):
                        p = math.exp(Z[i, base + c] - top) / norm
                        Z[i, base + c] = g * (p - (1.0 if c == label else 0.0))
            else:
                value, slope = _scalar_loss(loss, Z[i, m], yi, param)
                losses[m] += wi * value
                if with_gradient:
                    Z[i, m] = gradient_weights[i, m] * scale * slope


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
def csr_transpose_times_dense(indptr, indices, data, G, out):
    """out (features x columns) = CSR^T @ G (rows x columns); out is zeroed first."""
    out[:] = 0.0
    rows = indptr.shape[0] - 1
    columns = G.shape[1]
    for i in range(rows):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            v = data[k]
            for c in range(columns):
                out[j, c] += v * G[i, c]


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def update_weights(  # noqa: PLR0913
    W,
    gradient,
    first_moment,
    second_moment,
    optimizer,
    learning_rates,
    weight_decays,
    l1s,
    n_outputs,
    momentum,
    beta_1,
    beta_2,
    step,
):
    """One optimizer step on W (rows x models*n_outputs) in place. Column c belongs to model
    c // n_outputs, whose learning rate, wd and l1 are learning_rates/weight_decays/l1s[model].
    `step` counts updates from 1 (adam's bias correction). first_moment is sgd's velocity or
    adam's mean; second_moment adam's or rmsprop's mean square."""
    rows, columns = W.shape
    correction_1 = 1.0 - beta_1**step
    correction_2 = 1.0 - beta_2**step
    for j in range(rows):
        for c in range(columns):
            m = c // n_outputs
            lr = learning_rates[m]
            g = gradient[j, c] + weight_decays[m] * W[j, c]
            if optimizer == ADAM:
                mean = beta_1 * first_moment[j, c] + (1.0 - beta_1) * g
                square = beta_2 * second_moment[j, c] + (1.0 - beta_2) * g * g
                first_moment[j, c] = mean
                second_moment[j, c] = square
                w = W[j, c] - lr * (mean / correction_1) / (math.sqrt(square / correction_2) + OPTIMIZER_EPSILON)
            elif optimizer == RMSPROP:
                square = RMSPROP_DECAY * second_moment[j, c] + (1.0 - RMSPROP_DECAY) * g * g
                second_moment[j, c] = square
                w = W[j, c] - lr * g / (math.sqrt(square) + OPTIMIZER_EPSILON)
            else:
                velocity = momentum * first_moment[j, c] - lr * g
                first_moment[j, c] = velocity
                w = W[j, c] + velocity
            shrink = lr * l1s[m]
            if shrink > 0.0:
                w = w - shrink if w > shrink else w + shrink if w < -shrink else 0.0
            W[j, c] = w
