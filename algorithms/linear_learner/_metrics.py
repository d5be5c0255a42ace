"""Linear Learner's evaluation metrics and its binary threshold calibration, in vectorised numpy.

Every metric is weighted by the rows' weights (all 1 when `weights` is None): a weighted mean
divides by the weights' sum, a count is a sum of weights. Empty input, weights that are negative,
non-finite or sum to zero, labels outside their range and NaN inputs raise ValueError.

Binary classifier (`binary_metrics`; a row is predicted positive iff its score > threshold):

* accuracy - weighted share of rows predicted right (backs `binary_classification_accuracy`).
* precision - TP / (TP + FP); 0.0 when nothing is predicted positive (backs `precision`).
* recall - TP / (TP + FN); 0.0 when no row is labelled positive (backs `recall`).
* f_beta - (1 + beta^2) P R / (beta^2 P + R); 0.0 when P + R = 0 (backs `binary_f_beta`).
* roc_auc - weighted probability that a positive row scores above a negative one, a tie counting
  one half: the area under the ROC curve, as sklearn.metrics.roc_auc_score with sample_weight.
  It is 0.5 (a model no better than chance) when only one class carries weight, where sklearn
  leaves it undefined (NaN with a warning in 1.9, an error before); the caller then still gets a
  number (backs `roc_auc_score`).

`calibrate_thresholds` picks, for each of M models scored on the same rows, the threshold that
maximises accuracy, F-beta, precision at a target recall or recall at a target precision; the
values it returns are the same metrics as `binary_metrics` computes at those thresholds.

Multiclass classifier (`multiclass_metrics`; probabilities (n, C), the prediction is the argmax,
the first class on ties as np.argmax; the rank of the true class is 1 + the number of classes of
strictly higher probability, so ties rank it first among its equals):

* accuracy - weighted share of rows whose argmax is the label (backs `multiclass_accuracy`).
* top_k_accuracy - weighted share of rows whose true class ranks <= top_k (backs
  `multiclass_top_k_accuracy`). Under exact ties at the top, top-1 can exceed accuracy, which
  takes the argmax; sklearn's top_k_accuracy_score breaks ties by class index instead.
* dcg - weighted mean of 1 / log2(1 + rank of the true class) (backs `dcg`).
* macro_precision, macro_recall, macro_f_beta - unweighted mean over the classes of the
  per-class metric of the argmax prediction (per-class counts are weighted); a class never
  predicted has precision 0, never labelled recall 0; classes that occur neither among the
  labels nor the predictions are left out, as sklearn's precision_recall_fscore_support
  (average="macro", zero_division=0) does (back `macro_precision`, `macro_recall`, `macro_f_beta`).
* balanced_accuracy - mean per-class recall over the classes with positive weight among the
  labels, = sklearn.metrics.balanced_accuracy_score (backs `multiclass_balanced_accuracy`).
* log_loss - weighted mean of -log p_true, p clipped to [1e-15, 1] (backs `multiclass_log_loss`).

Regressor (`regression_metrics`): mse - weighted mean squared error (backs `mse`); rmse - its
square root (backs `rmse`); absolute_loss - weighted mean absolute error (backs `absolute_loss`).
"""

from __future__ import annotations

import numpy as np

from ._kernels import descending_order

CRITERIA = ("accuracy", "f_beta", "precision_at_target_recall", "recall_at_target_precision")
LOG_LOSS_EPSILON = 1e-15


def binary_metrics(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, *, threshold: float, beta: float
) -> dict[str, float]:
    """Accuracy, precision, recall, F-beta at `threshold` (positive iff score > threshold) and ROC AUC.

    scores (n,), labels (n,) in {0, 1}, weights (n,) >= 0 or None (all 1); see the module docstring.
    """
    scores = _finite_vector(scores, "scores")
    n = scores.shape[0]
    y = _binary_labels(labels, n)
    w = _weights(weights, n)
    wpos = w * y
    wneg = w - wpos
    positive = float(wpos.sum())
    negative = float(wneg.sum())
    predicted = scores > threshold
    tp = float(wpos[predicted].sum())
    fp = float(wneg[predicted].sum())
    tn = negative - fp
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, positive)
    return {
        "accuracy": (tp + tn) / (positive + negative),
        "precision": precision,
        "recall": recall,
        "f_beta": _f_beta(precision, recall, beta),
        "roc_auc": _roc_auc(scores, wpos, wneg, positive=positive, negative=negative),
    }


# The caller's API takes the criterion by position, after the data (as binary_metrics takes weights).
def calibrate_thresholds(  # noqa: PLR0917
    scores: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None,
    criterion: str,
    *,
    beta: float = 1.0,
    target_recall: float = 0.8,
    target_precision: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """For each model column of scores (n, M), the threshold that maximises `criterion`, and its value.

    A cut point k (0 <= k <= n) predicts the k highest-scoring rows positive; it is usable only at a
    boundary between distinct scores (k = 0 and k = n always are). Its threshold is the midpoint of
    the scores either side (the lower one when the midpoint rounds onto the upper one), the largest
    score itself for k = 0 and the float just below the smallest for k = n, so that `score >
    threshold` on the same scores gives exactly the counts the value was computed from.

    Criteria (values as `binary_metrics` defines them):

    * "accuracy", "f_beta": the maximum over all cut points.
    * "precision_at_target_recall": the best precision among cut points with recall >=
      target_recall. When none reaches it (no positive weight, or target_recall > 1), the cut
      points of highest recall compete on precision instead.
    * "recall_at_target_precision": the best recall among cut points that predict at least one
      row positive and have precision >= target_precision, so a threshold predicting nothing is
      never returned when some threshold reaches the target. When none reaches it, the cut points
      of highest precision compete on recall (the value is the recall there).

    Ties (equal criterion values, compared exactly) go to the median of the tied cut points in
    score order (the higher-threshold one of the middle two when their number is even): the middle
    of the optimal range, and deterministic.

    Returns (thresholds (M,), values (M,)), float64. Cost: one radix sort per column, then cumulative
    weighted true/false positive counts over the sorted rows, O(n) per model.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, not {criterion!r}")
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"scores must be a matrix (rows, models), not of shape {matrix.shape}")
    n, models = matrix.shape
    if n == 0:
        raise ValueError("no rows to calibrate on")
    if not np.isfinite(matrix).all():
        raise ValueError("scores must be finite")
    y = _binary_labels(labels, n)
    w = _weights(weights, n)
    wpos = w * y
    wneg = w - wpos

    # Models along the rows of the working arrays so that the sort, the gathers and the cumulative
    # sums each run over contiguous memory rather than down the strided columns of the (n, M)
    # matrix. Ties are grouped whatever their order, and only group boundaries are used.
    by_model = np.ascontiguousarray(matrix.T)
    order = np.empty(by_model.shape, np.int64)
    descending_order(by_model, order)
    ranked = np.take_along_axis(by_model, order, axis=1)
    # tp[:, k], fp[:, k]: weighted true / false positives when the top k rows are predicted positive.
    tp = np.zeros((models, n + 1))
    fp = np.zeros((models, n + 1))
    np.cumsum(wpos[order], axis=1, out=tp[:, 1:])
    np.cumsum(wneg[order], axis=1, out=fp[:, 1:])
    # Cut points inside a run of equal scores would split rows that any threshold keeps together.
    usable = np.ones((models, n + 1), dtype=bool)
    usable[:, 1:n] = ranked[:, :-1] != ranked[:, 1:]
    # Totals from the same cumulative sums (per model, as its row order sums them), so that the
    # all-positive cut point gets recall and perfect accuracy of exactly 1, not 1 - 1 ulp.
    positive = tp[:, -1:]
    negative = fp[:, -1:]

    if criterion == "accuracy":
        # (TP + TN) / W with TN = negatives - FP.
        value = (tp + (negative - fp)) / (positive + negative)
        eligible = usable
    elif criterion == "f_beta":
        # (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP), FN = positives - TP: sklearn's count form,
        # equal to (1 + b^2) P R / (b^2 P + R), and 0 where the denominator is.
        b2 = beta * beta
        value = _safe_divide((1.0 + b2) * tp, b2 * positive + tp + fp)
        eligible = usable
    else:
        precision = _safe_divide(tp, tp + fp)
        recall = _safe_divide(tp, positive)
        if criterion == "precision_at_target_recall":
            value, fallback = precision, recall
            eligible = usable & (recall >= target_recall)
        else:
            value, fallback = recall, precision
            eligible = usable & (precision >= target_precision)
            eligible[:, 0] = False
        # Models where no cut point reaches the target: keep the cut points of best fallback value.
        missed = ~eligible.any(axis=1)
        if missed.any():
            masked = np.where(usable[missed], fallback[missed], -np.inf)
            eligible[missed] = usable[missed] & (masked == masked.max(axis=1, keepdims=True))

    best = _median_argmax(np.where(eligible, value, -np.inf))
    rows = np.arange(models)
    values = value[rows, best]
    # Threshold between ranked[k - 1] (predicted positive) and ranked[k] (negative).
    upper = ranked[rows, np.maximum(best - 1, 0)]
    lower = ranked[rows, np.minimum(best, n - 1)]
    middle = 0.5 * upper + 0.5 * lower  # no overflow, unlike (upper + lower) / 2
    # Adjacent floats can round the midpoint onto `upper`; `lower` itself still separates them.
    middle = np.where((middle >= lower) & (middle < upper), middle, lower)
    thresholds = np.where(best == 0, ranked[:, 0], np.where(best == n, np.nextafter(ranked[:, -1], -np.inf), middle))
    return thresholds.astype(np.float64), values.astype(np.float64)


def multiclass_metrics(
    probabilities: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, *, top_k: int, beta: float
) -> dict[str, float]:
    """Accuracy, top-k accuracy, DCG, macro precision / recall / F-beta, balanced accuracy, log loss.

    probabilities (n, C) (rows are used as given, not renormalised), labels (n,) ints in [0, C),
    weights (n,) >= 0 or None; see the module docstring.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be a matrix (rows, classes), not of shape {p.shape}")
    n, classes = p.shape
    if n == 0:
        raise ValueError("no rows to evaluate")
    if classes == 0:
        raise ValueError("probabilities have no classes")
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")
    y = _class_labels(labels, n, classes)
    w = _weights(weights, n)
    total = float(w.sum())
    rows = np.arange(n)

    predicted = np.argmax(p, axis=1)
    correct = predicted == y
    p_true = p[rows, y]
    rank = 1 + np.count_nonzero(p > p_true[:, None], axis=1)

    # Per-class weighted counts; presence by row counts, as sklearn's unique_labels (a class seen
    # only in zero-weight rows still enters the macro mean, with zeros).
    support = np.bincount(y, weights=w, minlength=classes)
    predicted_weight = np.bincount(predicted, weights=w, minlength=classes)
    tp = np.bincount(y[correct], weights=w[correct], minlength=classes)
    present = (np.bincount(y, minlength=classes) > 0) | (np.bincount(predicted, minlength=classes) > 0)
    precision = _safe_divide(tp, predicted_weight)
    recall = _safe_divide(tp, support)
    b2 = beta * beta
    # Count form, as sklearn: (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP) = ... / (b^2 support + predicted).
    f_beta = _safe_divide((1.0 + b2) * tp, b2 * support + predicted_weight)
    # sklearn's balanced accuracy drops the classes whose weighted support is zero (their recall is NaN).
    supported = support > 0

    return {
        "accuracy": float(w[correct].sum()) / total,
        "top_k_accuracy": float(w[rank <= top_k].sum()) / total,
        "dcg": float(np.dot(w, 1.0 / np.log2(1.0 + rank))) / total,
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f_beta": float(f_beta[present].mean()),
        "balanced_accuracy": float(recall[supported].mean()),
        "log_loss": float(np.dot(w, -np.log(np.clip(p_true, LOG_LOSS_EPSILON, 1.0)))) / total,
    }


def regression_metrics(predictions: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> dict[str, float]:
    """Weighted mean squared error, its root, and weighted mean absolute error.

    Infinite predictions are allowed (a diverged model gets an infinite loss); NaN raises.
    """
    prediction = _vector(predictions, "predictions")
    n = prediction.shape[0]
    label = _vector(labels, "labels")
    if label.shape[0] != n:
        raise ValueError(f"labels have {label.shape[0]} rows, predictions {n}")
    if np.isnan(prediction).any() or np.isnan(label).any():
        raise ValueError("predictions and labels must not be NaN")
    w = _weights(weights, n)
    total = float(w.sum())
    error = prediction - label
    mse = float(np.dot(w, error * error)) / total
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "absolute_loss": float(np.dot(w, np.abs(error))) / total}


def _roc_auc(scores: np.ndarray, wpos: np.ndarray, wneg: np.ndarray, *, positive: float, negative: float) -> float:
    if positive <= 0 or negative <= 0:
        return 0.5
    order = np.argsort(scores)
    ranked = scores[order]
    # Groups of equal scores: each positive beats the negatives of lower groups and ties its own.
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    pos = np.add.reduceat(wpos[order], starts)
    neg = np.add.reduceat(wneg[order], starts)
    below = np.cumsum(neg) - neg
    return float(np.dot(pos, below + 0.5 * neg)) / (positive * negative)


def _median_argmax(values: np.ndarray) -> np.ndarray:
    """Per row, the index of the median (lower middle) of the positions holding the row's maximum."""
    is_max = values == values.max(axis=1, keepdims=True)
    seen = np.cumsum(is_max, axis=1)
    middle = (seen[:, -1] - 1) // 2
    # The first position where more than `middle` maxima have been seen is the (middle + 1)-th maximum.
    return np.argmax(seen > middle[:, None], axis=1)


def _f_beta(precision: float, recall: float, beta: float) -> float:
    b2 = beta * beta
    denominator = b2 * precision + recall
    return (1.0 + b2) * precision * recall / denominator if denominator > 0 else 0.0


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (the zero_division=0 convention)."""
    denominator = np.broadcast_to(np.asarray(denominator, dtype=np.float64), np.shape(numerator))
    out = np.zeros(np.shape(numerator))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _vector(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a vector, not of shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"no rows to evaluate: {name} is empty")
    return array


def _finite_vector(values: np.ndarray, name: str) -> np.ndarray:
    array = _vector(values, name)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), not {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    if not w.sum() > 0:
        raise ValueError("weights sum to zero")
    return w


def _binary_labels(labels: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), not {y.shape}")
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("binary labels must be 0 or 1")
    return y


def _class_labels(labels: np.ndarray, n: int, classes: int) -> np.ndarray:
    raw = np.asarray(labels)
    if raw.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), not {raw.shape}")
    if raw.dtype.kind not in "iub":
        # Float labels (as read from CSV or recordio) are accepted when they hold whole numbers.
        as_float = raw.astype(np.float64)
        if not (np.isfinite(as_float).all() and (as_float == np.round(as_float)).all()):
            raise ValueError("class labels must be whole numbers")
        raw = as_float
    if (raw < 0).any() or (raw >= classes).any():
        raise ValueError(f"class labels must lie in [0, {classes})")
    return raw.astype(np.intp)
