"""Linear learner's mini-batch training step on a CUDA GPU (numba-cuda), for dense batches.

The same step as `LinearLearnerTraining._train` on the CPU, kernel for kernel:

1. forward: Z = X @ W_raw + (bias - shift), one thread per output element, summed in float32
   (as the CPU's sgemm does), the offset rounded to float32 from float64 as the CPU does;
2. loss and gradient: one thread per (row, model), the math of `_kernels.loss_and_gradient`
   (logistic, softmax, and hinge and the regression losses through the very same
   `_kernels._scalar_loss`, compiled as a CUDA device function), positive weights (binary) and
   class weights (multiclass) on the gradient only; each (row, model) loss goes to a buffer whose
   columns a second kernel adds, in row order, to the per-model sums of the pass (float64);
3. backward and update, fused: the thread of weight (j, c) computes its raw gradient
   (X^T G)[j, c] and applies `_kernels.update_rows`'s step to it (centring and scaling of the
   gradient, wd, adam / rmsprop / sgd with momentum, l1 as soft thresholding, W_raw = W / scale);
   the column sums of G (the centring term and the bias gradient) come first, summed in float64;
4. the centring shift (mean / scale) @ W in float64, when the features are centred, and the
   bias step (lr x bias_lr_mult, bias wd, no l1).

The learning rates stay on the CPU (`_kernels.learning_rates`, a few numbers per batch, copied
with the batch).

State: W, W_raw, both optimizer moments, the bias and its moments, the shift and the pass's loss
sums live on the GPU from the first batch to the end of training (`GpuModels`). Per batch only
X, y, the row weights and the learning rates go to the GPU, and nothing comes back. The caller
copies the weights back (`download`) when the CPU needs them: at the end of a pass (the loss
sums too), for the candidates that validation scores, and for the final model.

Dispatch (`LinearLearnerTraining`): the device is chosen once, when training starts: dense data
whose mini-batch is worth a GPU (`_linear_learner.MIN_GPU_WORK`) and `device.use_gpu()` train on
the GPU for the whole job; anything else on the CPU for the whole job. A sparse batch in a GPU
job (a channel mixing formats) trains on the CPU between a full download and a full upload of
the state, so the two paths never disagree about it; so does an empty batch (the CPU's step
with a zero gradient, which still decays and moves the weights).

Differences from the CPU are float32 rounding only: products and sums are added in another
order (the CPU's BLAS blocks, numpy's pairwise sums), and exp / log are CUDA's, not numpy's. No
fastmath here: CUDA's fast intrinsics would add errors of their own.

Kernels are simple (one thread per output, grid-stride loops, no shared memory): correctness
and clarity first; a tiled GEMM would be the first thing to speed up.

Importing this module imports numba.cuda: only code that has decided to use the GPU imports it
(see runtime/device.py). Set NUMBA_ENABLE_CUDASIM=1 before numba.cuda is first imported to run
the kernels in numba's CUDA simulator (one Python thread per GPU thread: slow, small data only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from numba import cuda

from . import _kernels as kernels

# The CPU kernels' constants, as module globals: numba-cuda freezes a kernel's globals into it.
_ADAM, _RMSPROP = kernels.ADAM, kernels.RMSPROP
_OPTIMIZER_EPSILON, _RMSPROP_DECAY = kernels.OPTIMIZER_EPSILON, kernels.RMSPROP_DECAY

_THREADS_PER_BLOCK = 256
# With grid-stride loops a grid larger than the GPU runs at once only adds blocks to schedule.
_MAX_BLOCKS = 4096

# What GpuModels keeps on the GPU, by the names `download` and `upload` take.
STATE = (
    "weights",
    "W_raw",
    "first_moment",
    "second_moment",
    "bias",
    "bias_first_moment",
    "bias_second_moment",
    "shift",
)

# The CPU's loss of one output (hinge and the regression losses), compiled for the GPU.
_scalar_loss = cuda.jit(device=True)(kernels._scalar_loss.py_func)


def _grid(n: int) -> tuple[int, int]:
    """(blocks, threads per block) of a grid-stride launch over n items."""
    threads = _THREADS_PER_BLOCK
    return max(1, min(_MAX_BLOCKS, -(-n // threads))), threads


# --------------------------------------------------------------------------- kernels


@cuda.jit
def _forward(X, W_raw, bias, shift, Z):
    """Z = X @ W_raw + float32(bias - shift)."""
    rows, features = X.shape
    columns = W_raw.shape[1]
    for t in range(cuda.grid(1), rows * columns, cuda.gridsize(1)):
        i = t // columns
        c = t - i * columns
        total = np.float32(0.0)
        for j in range(features):
            total += X[i, j] * W_raw[j, c]
        Z[i, c] = total + np.float32(np.float64(bias[c]) - shift[c])


@cuda.jit
def _logistic(Z, y, row_weights, positive_weights, weighted, scale, row_losses):
    """Logistic loss log1p(exp(-|z|)) + max(z, 0) - y z per (row, model) into row_losses, and
    its gradient sigmoid(z) - y times the row's (and positive label's) weight x scale into Z."""
    rows, models = Z.shape
    for t in range(cuda.grid(1), rows * models, cuda.gridsize(1)):
        i = t // models
        m = t - i * models
        z = Z[i, m]
        yi = y[i]
        wi = row_weights[i]
        e = math.exp(-abs(z))
        row_losses[i, m] = wi * (math.log1p(e) + max(z, np.float32(0.0)) - yi * z)
        p = np.float32(1.0) / (np.float32(1.0) + e) if z >= 0.0 else e / (np.float32(1.0) + e)
        g = wi * scale
        if weighted and yi == 1.0:
            g = g * positive_weights[m]
        Z[i, m] = g * (p - yi)


@cuda.jit
def _softmax(Z, y, row_weights, class_weights, weighted, scale, n_outputs, row_losses):
    """Softmax cross-entropy log(sum_c exp(z_c)) - z_label per (row, model) into row_losses,
    and its gradient softmax(z) - onehot(label), weighted, into Z."""
    rows = Z.shape[0]
    models = Z.shape[1] // n_outputs
    for t in range(cuda.grid(1), rows * models, cuda.gridsize(1)):
        i = t // models
        m = t - i * models
        base = m * n_outputs
        label = int(y[i])
        top = Z[i, base]
        for c in range(1, n_outputs):
            top = max(top, Z[i, base + c])
        norm = np.float32(0.0)
        for c in range(n_outputs):
            norm += math.exp(Z[i, base + c] - top)
        wi = row_weights[i]
        row_losses[i, m] = wi * (top + math.log(norm) - Z[i, base + label])
        g = wi * scale
        if weighted:
            g = g * class_weights[label]
        inverse = np.float32(1.0) / norm
        for c in range(n_outputs):
            Z[i, base + c] = g * math.exp(Z[i, base + c] - top) * inverse
        Z[i, base + label] -= g


@cuda.jit
def _pointwise(Z, y, row_weights, positive_weights, weighted, loss, param, scale, row_losses):
    """Hinge and the regression losses (`_kernels._scalar_loss`) per (row, model)."""
    rows, models = Z.shape
    for t in range(cuda.grid(1), rows * models, cuda.gridsize(1)):
        i = t // models
        m = t - i * models
        yi = y[i]
        wi = row_weights[i]
        value, slope = _scalar_loss(loss, Z[i, m], yi, param)
        row_losses[i, m] = wi * value
        g = wi * scale
        if weighted and yi == 1.0:
            g = g * positive_weights[m]
        Z[i, m] = g * slope


@cuda.jit
def _column_sums(A, out, accumulate):
    """out[c] (+)= the sum of column c of A, added in row order in float64."""
    rows, columns = A.shape
    for c in range(cuda.grid(1), columns, cuda.gridsize(1)):
        total = np.float64(0.0)
        for i in range(rows):
            total += A[i, c]
        if accumulate:
            total += out[c]
        out[c] = total


@cuda.jit(device=True)
def _step(optimizer, w, m, v, g, rate, l1, momentum, beta_1, beta_2, correction_1, correction_2):
    """One weight's optimizer step (`_kernels.update_rows`'s loops): (weight, first moment,
    second moment) after gradient g, then l1's soft thresholding."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    epsilon = np.float32(_OPTIMIZER_EPSILON)
    if optimizer == _ADAM:
        m = beta_1 * m + (one - beta_1) * g
        v = beta_2 * v + (one - beta_2) * g * g
        w = w - rate * (m / correction_1) / (math.sqrt(v / correction_2) + epsilon)
    elif optimizer == _RMSPROP:
        decay = np.float32(_RMSPROP_DECAY)
        v = decay * v + (one - decay) * g * g
        w = w - rate * g / (math.sqrt(v) + epsilon)
    else:  # sgd, with momentum
        m = momentum * m - rate * g
        w = w + m
    shrink = rate * l1
    w = max(w - shrink, zero) + min(w + shrink, zero)
    return w, m, v


@cuda.jit
def _update_weights(
    X,
    G,
    column_sums,
    mean,
    inverse_scale,
    W,
    W_raw,
    first_moment,
    second_moment,
    rates,
    weight_decays,
    l1s,
    optimizer,
    momentum,
    beta_1,
    beta_2,
    correction_1,
    correction_2,
):
    """Every weight (j, c): its raw gradient (X^T G)[j, c], made the gradient of the normalised
    weight ((raw - mean_j column_sums_c) / scale_j + wd W), then the optimizer step; W_raw too."""
    rows, features = X.shape
    columns = W.shape[1]
    for t in range(cuda.grid(1), features * columns, cuda.gridsize(1)):
        j = t // columns
        c = t - j * columns
        raw = np.float32(0.0)
        for i in range(rows):
            raw += X[i, j] * G[i, c]
        inverse = inverse_scale[j]
        w = W[j, c]
        g = (raw - mean[j] * column_sums[c]) * inverse + weight_decays[c] * w
        w, m, v = _step(
            optimizer,
            w,
            first_moment[j, c],
            second_moment[j, c],
            g,
            rates[c],
            l1s[c],
            momentum,
            beta_1,
            beta_2,
            correction_1,
            correction_2,
        )
        W[j, c] = w
        first_moment[j, c] = m
        second_moment[j, c] = v
        W_raw[j, c] = w * inverse


@cuda.jit
def _update_bias(
    bias,
    column_sums,
    first_moment,
    second_moment,
    rates,
    rate_mult,
    weight_decays,
    optimizer,
    momentum,
    beta_1,
    beta_2,
    correction_1,
    correction_2,
):
    """The bias as one more weight: gradient column_sums (+ bias wd), rate x bias_lr_mult, no l1.
    The moments are (1, columns), as on the CPU."""
    columns = bias.shape[0]
    for c in range(cuda.grid(1), columns, cuda.gridsize(1)):
        b = bias[c]
        g = column_sums[c] + weight_decays[c] * b
        b, m, v = _step(
            optimizer,
            b,
            first_moment[0, c],
            second_moment[0, c],
            g,
            rates[c] * rate_mult,
            np.float32(0.0),
            momentum,
            beta_1,
            beta_2,
            correction_1,
            correction_2,
        )
        bias[c] = b
        first_moment[0, c] = m
        second_moment[0, c] = v


@cuda.jit
def _shift(centre, W, shift):
    """shift = centre @ W in float64 (centre = mean / scale): what centring adds to the bias."""
    features, columns = W.shape
    for c in range(cuda.grid(1), columns, cuda.gridsize(1)):
        total = np.float64(0.0)
        for j in range(features):
            total += centre[j] * np.float64(W[j, c])
        shift[c] = total


# --------------------------------------------------------------------------- the models on the GPU


def _weights_or_none(weights: np.ndarray) -> tuple[object, bool]:
    """A device copy of positive or class weights (float64) and whether there are any (an empty
    array means every one weighs 1; a kernel still needs an array)."""
    if len(weights) == 0:
        return cuda.to_device(np.ones(1)), False
    return cuda.to_device(np.ascontiguousarray(weights, dtype=np.float64)), True


class GpuModels:
    """The packed models and their optimizer state on the GPU, trained batch by batch.

    `state` holds the host arrays named in STATE (the CPU path's: weights, W_raw, the two
    moments of the weights and of the bias as (1, columns) arrays, the bias, the float64 shift);
    they are copied to the GPU once here, then only on `upload`. The rest are the job's
    constants, as the CPU's `_train` passes them to the kernels."""

    def __init__(
        self,
        state: Mapping[str, np.ndarray],
        *,
        mean: np.ndarray,
        inverse_scale: np.ndarray,
        centred: bool,
        weight_decays: np.ndarray,
        l1s: np.ndarray,
        bias_weight_decays: np.ndarray,
        positive_weights: np.ndarray,
        class_weights: np.ndarray,
        loss: int,
        loss_parameter: float,
        n_outputs: int,
        optimizer: int,
        momentum: float,
        beta_1: float,
        beta_2: float,
        bias_lr_mult: float,
        use_bias: bool,
    ) -> None:
        self._state = {name: cuda.to_device(np.ascontiguousarray(state[name])) for name in STATE}
        features, columns = state["weights"].shape
        self.models = columns // n_outputs
        self._mean = cuda.to_device(np.ascontiguousarray(mean, dtype=np.float32))
        self._inverse_scale = cuda.to_device(np.ascontiguousarray(inverse_scale, dtype=np.float32))
        self._centre = cuda.to_device((mean * inverse_scale).astype(np.float64)) if centred else None
        self._weight_decays = cuda.to_device(np.ascontiguousarray(weight_decays, dtype=np.float32))
        self._l1s = cuda.to_device(np.ascontiguousarray(l1s, dtype=np.float32))
        self._bias_weight_decays = cuda.to_device(np.ascontiguousarray(bias_weight_decays, dtype=np.float32))
        self._positive_weights, self._positive_weighted = _weights_or_none(positive_weights)
        self._class_weights, self._class_weighted = _weights_or_none(class_weights)
        self.loss = int(loss)
        self.loss_parameter = float(loss_parameter)
        self.n_outputs = int(n_outputs)
        self.optimizer = int(optimizer)
        self.momentum = np.float32(momentum)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.bias_lr_mult = np.float32(bias_lr_mult)
        self.use_bias = bool(use_bias)
        self._losses = cuda.to_device(np.zeros(self.models))
        self._rates = cuda.device_array(columns, np.float32)
        self._column_sums = cuda.device_array(columns, np.float32)
        self._rows = -1  # the per-batch buffers' row count

    def _buffers(self, rows: int) -> None:
        """(Re)allocate the per-batch buffers for batches of `rows` rows: in a pass, all batches
        but the last have the same size."""
        if rows == self._rows:
            return
        features, columns = self._state["weights"].shape
        self._X = cuda.device_array((rows, features), np.float32)
        self._y = cuda.device_array(rows, np.float32)
        self._w = cuda.device_array(rows, np.float32)
        self._Z = cuda.device_array((rows, columns), np.float32)
        self._row_losses = cuda.device_array((rows, self.models), np.float64)
        self._rows = rows

    def train(self, X: np.ndarray, y: np.ndarray, row_weights: np.ndarray, rates: np.ndarray, step: int) -> None:
        """One update of every model on the dense batch X (rows x features, float32) with labels
        y (normalised) and row weights; `rates` are this update's learning rates per column,
        `step` counts updates from 1 (adam's bias correction)."""
        rows = X.shape[0]
        if rows == 0:
            raise ValueError("an empty batch: the caller trains it on the CPU")
        self._buffers(rows)
        self._X.copy_to_device(np.ascontiguousarray(X, dtype=np.float32))
        self._y.copy_to_device(np.ascontiguousarray(y, dtype=np.float32))
        self._w.copy_to_device(np.ascontiguousarray(row_weights, dtype=np.float32))
        self._rates.copy_to_device(np.ascontiguousarray(rates, dtype=np.float32))
        total = float(row_weights.sum(dtype=np.float64))
        scale = 1.0 / total if total > 0.0 else 0.0
        state = self._state
        W = state["weights"]
        features, columns = W.shape
        Z = self._Z

        blocks, threads = _grid(rows * columns)
        _forward[blocks, threads](self._X, state["W_raw"], state["bias"], state["shift"], Z)

        blocks, threads = _grid(rows * self.models)
        if self.loss == kernels.LOGISTIC:
            _logistic[blocks, threads](
                Z, self._y, self._w, self._positive_weights, self._positive_weighted, scale, self._row_losses
            )
        elif self.loss == kernels.SOFTMAX:
            _softmax[blocks, threads](
                Z, self._y, self._w, self._class_weights, self._class_weighted, scale, self.n_outputs, self._row_losses
            )
        else:
            _pointwise[blocks, threads](
                Z,
                self._y,
                self._w,
                self._positive_weights,
                self._positive_weighted,
                self.loss,
                self.loss_parameter,
                scale,
                self._row_losses,
            )
        blocks, threads = _grid(self.models)
        _column_sums[blocks, threads](self._row_losses, self._losses, True)
        blocks, threads = _grid(columns)
        _column_sums[blocks, threads](Z, self._column_sums, False)

        # As update_rows: the corrections in float64, then float32.
        optimizer_args = (
            self.optimizer,
            self.momentum,
            np.float32(self.beta_1),
            np.float32(self.beta_2),
            np.float32(1.0 - self.beta_1**step),
            np.float32(1.0 - self.beta_2**step),
        )
        blocks, threads = _grid(features * columns)
        _update_weights[blocks, threads](
            self._X,
            Z,
            self._column_sums,
            self._mean,
            self._inverse_scale,
            W,
            state["W_raw"],
            state["first_moment"],
            state["second_moment"],
            self._rates,
            self._weight_decays,
            self._l1s,
            *optimizer_args,
        )
        blocks, threads = _grid(columns)
        if self._centre is not None:
            _shift[blocks, threads](self._centre, W, state["shift"])
        if self.use_bias:
            _update_bias[blocks, threads](
                state["bias"],
                self._column_sums,
                state["bias_first_moment"],
                state["bias_second_moment"],
                self._rates,
                self.bias_lr_mult,
                self._bias_weight_decays,
                *optimizer_args,
            )

    def download(self, state: Mapping[str, np.ndarray], names: Iterable[str] = STATE) -> None:
        """Copy the named parts of the GPU's state into the host arrays of `state`, in place."""
        for name in names:
            self._state[name].copy_to_host(state[name])

    def upload(self, state: Mapping[str, np.ndarray], names: Iterable[str] = STATE) -> None:
        """Copy the named host arrays of `state` to the GPU (after the CPU trained a batch)."""
        for name in names:
            self._state[name].copy_to_device(np.ascontiguousarray(state[name]))

    def take_losses(self, losses: np.ndarray) -> None:
        """Add each model's loss sum since the last call to `losses` (float64), and restart the
        sums from 0."""
        losses += self._losses.copy_to_host()
        self._losses.copy_to_device(np.zeros(self.models))
