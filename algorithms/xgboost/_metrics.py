"""The evaluation metrics AWS's XGBoost image computes with its own code rather than XGBoost's
(its metrics/custom_metrics.py, on scikit-learn), here in numpy: accuracy, balanced_accuracy, f1,
f1_binary, f1_macro, mse, precision, precision_macro, precision_micro, r2, recall, recall_macro,
recall_micro. Several are documented tuning metrics (validation:accuracy, validation:f1,
validation:mse), so a tuning job may name them.

As in AWS's image they get XGBoost's raw predictions (margins): a class is the argmax of a row of
margins (multi:), or margin > 0 (binary:); mse and r2 read the predictions as values. Instance
weights are ignored, as AWS's image ignores them. The classification scores follow
scikit-learn's definitions (each is tested against it): `f1` is the macro average (AWS's), `precision`
and `recall` are those of class 1, a ratio with nothing to divide is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Larger is better for all of them but mse.
MAXIMIZED = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "f1_binary",
    "f1_macro",
    "precision",
    "precision_macro",
    "precision_micro",
    "r2",
    "recall",
    "recall_macro",
    "recall_micro",
)
AWS_METRICS = (*MAXIMIZED, "mse")


def _classes(margins: np.ndarray) -> np.ndarray:
    if margins.ndim == 2:
        return margins.argmax(axis=1)
    return (margins > 0.0).astype(np.int64)


def _ratio(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def _per_class(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, predicted count, true count, present) per label of truth and prediction."""
    labels = np.union1d(truth, predicted)
    tp = np.array([np.sum((predicted == c) & (truth == c)) for c in labels], dtype=np.float64)
    predicted_count = np.array([np.sum(predicted == c) for c in labels], dtype=np.float64)
    true_count = np.array([np.sum(truth == c) for c in labels], dtype=np.float64)
    return tp, predicted_count, true_count, labels


def _binary(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum((predicted == 1) & (truth == 1)))
    return tp, float(np.sum(predicted == 1)), float(np.sum(truth == 1))


def _score(name: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    if name in ("accuracy", "precision_micro", "recall_micro"):
        return float(np.mean(truth == predicted))
    if name in ("precision", "recall", "f1_binary"):
        hits, predicted_positive, true_positive = _binary(truth, predicted)
        if name == "precision":
            return float(_ratio(hits, predicted_positive))
        if name == "recall":
            return float(_ratio(hits, true_positive))
        return float(_ratio(2 * hits, predicted_positive + true_positive))
    tp, predicted_count, true_count, _ = _per_class(truth, predicted)
    if name == "balanced_accuracy":
        present = true_count > 0
        return float(np.mean(tp[present] / true_count[present]))
    if name == "precision_macro":
        return float(np.mean(_ratio(tp, predicted_count)))
    if name == "recall_macro":
        return float(np.mean(_ratio(tp, true_count)))
    # f1, f1_macro
    return float(np.mean(_ratio(2 * tp, predicted_count + true_count)))


def metric_value(name: str, margins: np.ndarray, labels: np.ndarray) -> float:
    """One of AWS_METRICS for raw predictions and labels."""
    if margins.size == 0:
        return 0.0
    if name == "mse":
        return float(np.mean((labels.astype(np.float64) - margins.astype(np.float64)) ** 2))
    if name == "r2":
        values = margins.astype(np.float64).reshape(-1)
        truth = labels.astype(np.float64)
        residual = float(np.sum((truth - values) ** 2))
        total = float(np.sum((truth - truth.mean()) ** 2))
        if total == 0.0:
            return 1.0 if residual == 0.0 else 0.0  # scikit-learn's r2_score (force_finite)
        return 1.0 - residual / total
    return _score(name, labels.astype(np.int64), _classes(margins))


def custom_metric(names: Sequence[str], *, gather: Callable[[np.ndarray], list[np.ndarray]] | None = None) -> Callable:
    """The `custom_metric` of xgboost.train that reports `names`, in that order. With `gather`
    (a job of several hosts: every host evaluates the same matrices in the same order), the
    metrics are of every host's predictions and labels together, the same on every host."""

    def evaluate(margins: np.ndarray, matrix) -> list[tuple[str, float]]:
        labels = matrix.get_label()
        if gather is not None:
            margins = np.concatenate(gather(np.ascontiguousarray(margins, dtype=np.float32)))
            labels = np.concatenate(gather(np.ascontiguousarray(labels, dtype=np.float32)))
        return [(name, metric_value(name, margins, labels)) for name in names]

    return evaluate
