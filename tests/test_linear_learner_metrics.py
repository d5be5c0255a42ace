"""Linear Learner's metrics and threshold calibration (algorithms/linear_learner/_metrics.py) against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from smalgo.algorithms.linear_learner._kernels import descending_order
from smalgo.algorithms.linear_learner._metrics import (
    CRITERIA,
    binary_metrics,
    calibrate_thresholds,
    multiclass_metrics,
    regression_metrics,
)

SEEDS = (0, 1, 2)
# The binary_metrics key whose value each calibration criterion reports.
VALUE_KEY = {
    "accuracy": "accuracy",
    "f_beta": "f_beta",
    "precision_at_target_recall": "precision",
    "recall_at_target_precision": "recall",
}


def binary_data(seed: int, n: int = 200, models: int = 1, weighted: bool = True):
    """Scores rounded to one decimal (many ties), labels correlated with them, weights with some zeros."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    scores = np.round(rng.normal(size=(n, models)) + y[:, None], 1)
    w = rng.random(n) * 3 if weighted else None
    if weighted:
        w[rng.random(n) < 0.1] = 0.0
    return (scores[:, 0] if models == 1 else scores), y, w


def sklearn_binary(scores, y, w, threshold, beta):
    predicted = (scores > threshold).astype(np.int64)
    return {
        "accuracy": skm.accuracy_score(y, predicted, sample_weight=w),
        "precision": skm.precision_score(y, predicted, sample_weight=w, zero_division=0),
        "recall": skm.recall_score(y, predicted, sample_weight=w, zero_division=0),
        "f_beta": skm.fbeta_score(y, predicted, beta=beta, sample_weight=w, zero_division=0),
    }


def assert_close(ours: dict[str, float], theirs: dict[str, float]) -> None:
    for key, value in theirs.items():
        assert isinstance(ours[key], float), key
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


# binary_metrics


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_binary_metrics_match_sklearn(seed, weighted, beta):
    scores, y, w = binary_data(seed, weighted=weighted)
    # A threshold equal to a score present in the data: rows at it are negative (strict >).
    threshold = float(np.median(scores))
    ours = binary_metrics(scores, y, w, threshold=threshold, beta=beta)
    assert set(ours) == {"accuracy", "precision", "recall", "f_beta", "roc_auc"}
    expected = sklearn_binary(scores, y, w, threshold, beta)
    expected["roc_auc"] = skm.roc_auc_score(y, scores, sample_weight=w)
    assert_close(ours, expected)


def test_binary_strict_threshold():
    ours = binary_metrics(np.array([0.5, 0.5, 0.7]), np.array([1, 1, 1]), None, threshold=0.5, beta=1.0)
    assert ours["recall"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("label", [0, 1])
def test_binary_one_class(label):
    scores, _, w = binary_data(3)
    y = np.full(scores.shape, label)
    ours = binary_metrics(scores, y, w, threshold=0.0, beta=1.0)
    # sklearn leaves ROC AUC undefined for a single class (NaN with a warning, or an error); we return chance.
    assert ours["roc_auc"] == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            assert np.isnan(skm.roc_auc_score(y, scores, sample_weight=w))
        except ValueError:
            pass
    assert_close(ours, sklearn_binary(scores, y, w, 0.0, 1.0))
    if label == 0:
        assert ours["recall"] == 0.0 and ours["precision"] == 0.0 and ours["f_beta"] == 0.0


def test_binary_positive_class_with_zero_weight_is_one_class():
    ours = binary_metrics(
        np.array([0.1, 0.9, 0.3]), np.array([0, 1, 0]), np.array([1.0, 0.0, 2.0]), threshold=0.5, beta=1
    )
    assert ours["roc_auc"] == 0.5
    assert ours["accuracy"] == 1.0


def test_binary_nothing_predicted_positive():
    scores, y, w = binary_data(4)
    ours = binary_metrics(scores, y, w, threshold=scores.max(), beta=1.0)
    assert ours["precision"] == 0.0 and ours["recall"] == 0.0 and ours["f_beta"] == 0.0
    assert_close(ours, sklearn_binary(scores, y, w, scores.max(), 1.0))


@pytest.mark.parametrize(("score", "label", "threshold"), [(0.3, 1, 0.0), (0.3, 1, 0.5), (0.3, 0, 0.0), (0.3, 0, 0.5)])
def test_binary_single_row(score, label, threshold):
    ours = binary_metrics(np.array([score]), np.array([label]), None, threshold=threshold, beta=1.0)
    assert ours["roc_auc"] == 0.5
    assert_close(ours, sklearn_binary(np.array([score]), np.array([label]), None, threshold, 1.0))


def test_binary_all_scores_equal():
    _, y, w = binary_data(5)
    scores = np.full(y.shape, 0.25)
    ours = binary_metrics(scores, y, w, threshold=0.0, beta=1.0)
    expected = sklearn_binary(scores, y, w, 0.0, 1.0)
    expected["roc_auc"] = skm.roc_auc_score(y, scores, sample_weight=w)
    assert expected["roc_auc"] == 0.5 and ours["recall"] == 1.0
    assert_close(ours, expected)


@pytest.mark.parametrize(
    ("scores", "labels", "weights"),
    [
        ([], [], None),
        ([0.1, 0.2], [0, 2], None),
        ([0.1, 0.2], [0, 1], [1.0, -1.0]),
        ([0.1, 0.2], [0, 1], [0.0, 0.0]),
        ([0.1, 0.2], [0, 1], [1.0]),
        ([0.1, np.nan], [0, 1], None),
        ([0.1, 0.2], [0, 1, 1], None),
    ],
)
def test_binary_invalid_input(scores, labels, weights):
    w = None if weights is None else np.array(weights)
    with pytest.raises(ValueError):
        binary_metrics(np.array(scores), np.array(labels), w, threshold=0.0, beta=1.0)


# calibrate_thresholds


def partition_counts(column, y, w, threshold):
    """Weighted (tp, fp, fn, tn) at one threshold, by masks (independent of the module's cumulative sums)."""
    w = np.ones(len(y)) if w is None else w
    predicted = column > threshold
    positive = y == 1
    return tuple(float(w[m].sum()) for m in (predicted & positive, predicted & ~positive, ~predicted & positive))


def criterion_value(column, y, w, threshold, criterion, beta, target_recall, target_precision):
    """(value, eligible, fallback) of one threshold, brute force."""
    w1 = np.ones(len(y)) if w is None else w
    tp, fp, fn = partition_counts(column, y, w, threshold)
    total = float(w1.sum())
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    predicts_some = bool((column > threshold).any())
    if criterion == "accuracy":
        return (total - fp - fn) / total, True, 0.0
    if criterion == "f_beta":
        denominator = (1 + beta**2) * tp + beta**2 * fn + fp
        return ((1 + beta**2) * tp / denominator if denominator > 0 else 0.0), True, 0.0
    if criterion == "precision_at_target_recall":
        return precision, recall >= target_recall, recall
    return recall, predicts_some and precision >= target_precision, precision


def brute_force_best(column, y, w, criterion, beta=1.0, target_recall=0.8, target_precision=0.8):
    """The best value over every partition the column's distinct scores allow (with the fallback rule),
    and whether some partition reached the target."""
    distinct = np.unique(column)
    candidates = np.r_[distinct[0] - 1.0, distinct]  # positive iff > candidate: every distinct partition
    rows = [criterion_value(column, y, w, t, criterion, beta, target_recall, target_precision) for t in candidates]
    values = np.array([r[0] for r in rows])
    eligible = np.array([r[1] for r in rows])
    reached = bool(eligible.any())
    if not reached:
        fallback = np.array([r[2] for r in rows])
        eligible = fallback == fallback.max()
    return values[eligible].max(), reached


def assert_threshold_is_a_cut_point(column, threshold):
    """A midpoint of consecutive distinct scores, the maximum, or the float just below the minimum."""
    distinct = np.unique(column)
    if threshold == distinct[-1] or threshold == np.nextafter(distinct[0], -np.inf):
        return
    i = np.searchsorted(distinct, threshold, side="right")
    assert 0 < i < len(distinct), threshold
    lower, upper = distinct[i - 1], distinct[i]
    assert lower <= threshold < upper
    assert threshold == pytest.approx((lower + upper) / 2, rel=1e-15) or threshold == lower


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("weighted", [True, False])
def test_calibration_finds_the_optimum(seed, criterion, weighted):
    scores, y, w = binary_data(seed, n=80, models=4, weighted=weighted)
    kwargs = {"beta": 0.7, "target_recall": 0.75, "target_precision": 0.7}
    thresholds, values = calibrate_thresholds(scores, y, w, criterion, **kwargs)
    assert thresholds.shape == values.shape == (4,)
    assert thresholds.dtype == values.dtype == np.float64
    for m in range(4):
        column = scores[:, m]
        assert_threshold_is_a_cut_point(column, thresholds[m])
        best, reached = brute_force_best(column, y, w, criterion, **kwargs)
        assert values[m] == pytest.approx(best, rel=1e-12)
        # Re-scoring the same rows at the threshold reproduces the value (sklearn's metrics there).
        at = sklearn_binary(column, y, w, thresholds[m], kwargs["beta"])
        assert values[m] == pytest.approx(at[VALUE_KEY[criterion]], rel=1e-12)
        if criterion == "precision_at_target_recall":
            assert at["recall"] >= kwargs["target_recall"]
        if criterion == "recall_at_target_precision" and reached:
            assert at["precision"] >= kwargs["target_precision"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("criterion", ["accuracy", "f_beta"])
def test_calibration_agrees_with_sklearn_curves(seed, criterion):
    """The optimum over sklearn's precision-recall / ROC curve points equals ours."""
    scores, y, w = binary_data(seed, n=150, models=2)
    _, values = calibrate_thresholds(scores, y, w, criterion, beta=1.0)
    for m in range(2):
        precision, recall, _ = skm.precision_recall_curve(y, scores[:, m], sample_weight=w)
        if criterion == "f_beta":
            with np.errstate(invalid="ignore", divide="ignore"):
                f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
            assert values[m] == pytest.approx(f1.max(), rel=1e-12)
        else:
            fpr, tpr, _ = skm.roc_curve(y, scores[:, m], sample_weight=w, drop_intermediate=False)
            positive, negative = w[y == 1].sum(), w[y == 0].sum()
            accuracy = (tpr * positive + (1 - fpr) * negative) / (positive + negative)
            assert values[m] == pytest.approx(accuracy.max(), rel=1e-12)


@pytest.mark.parametrize(("zero_weight_scores", "expected"), [((5, 6, 7), 6.5), ((5, 6), 5.5)])
def test_calibration_ties_pick_the_middle(zero_weight_scores, expected):
    # Scores 1..10: 1-4 negative, the weightless ones anything, the rest positive: every cut between
    # 4 and the first weighted positive is perfect. Four ties (7.5, 6.5, 5.5, 4.5): the second, 6.5;
    # three (6.5, 5.5, 4.5): the middle, 5.5.
    scores = np.arange(1.0, 11.0)
    y = (scores >= 5).astype(int)
    w = np.ones(10)
    w[np.isin(scores, zero_weight_scores)] = 0.0
    y[scores == 5] = 0
    thresholds, values = calibrate_thresholds(scores[:, None], y, w, "accuracy")
    assert values[0] == 1.0
    assert thresholds[0] == expected


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).normal(size=(3, 5000)),  # every byte of the float64 differs
        np.random.default_rng(1).normal(size=(2, 3000)).astype(np.float32).astype(np.float64),
        np.round(np.random.default_rng(2).normal(size=(2, 4000)), 1),  # long runs of ties
        np.array([[0.0, -0.0, 1.0, -1.0, 5e300, -5e300, 1e-310, -1e-310, 2.0, 2.0]]),
        np.full((1, 7), 3.5),  # every byte shared: no pass at all
        np.zeros((2, 1)),
    ],
    ids=["float64", "float32_scores", "ties", "signs_zeros_subnormals", "all_equal", "one_row"],
)
def test_calibration_sort_orders_rows_by_descending_score(values):
    order = np.empty(values.shape, np.int64)
    descending_order(np.ascontiguousarray(values), order)
    assert (np.sort(order, axis=1) == np.arange(values.shape[1])).all()
    assert (np.take_along_axis(values, order, axis=1) == -np.sort(-values, axis=1)).all()


def test_calibration_adjacent_floats_separate_exactly():
    low = 1.0
    high = np.nextafter(low, 2.0)
    scores = np.array([[low], [high]])
    thresholds, values = calibrate_thresholds(scores, np.array([0, 1]), None, "accuracy")
    assert values[0] == 1.0
    assert (scores[:, 0] > thresholds[0]).tolist() == [False, True]


def test_calibration_huge_scores_do_not_overflow():
    scores = np.array([[-1e308], [1e308]])
    thresholds, values = calibrate_thresholds(scores, np.array([0, 1]), None, "f_beta")
    assert values[0] == 1.0 and thresholds[0] == 0.0


def test_recall_at_target_precision_predicts_something_when_target_reachable():
    # Only the top row reaches precision 1; a zero target is reachable everywhere, and all positive wins.
    scores = np.array([[0.9], [0.8], [0.7], [0.1]])
    y = np.array([1, 0, 1, 0])
    thresholds, values = calibrate_thresholds(scores, y, None, "recall_at_target_precision", target_precision=1.0)
    assert values[0] == 0.5 and 0.8 <= thresholds[0] < 0.9
    # The top 3 already hold both positives: recall 1 there and with all 4 (a tie; the higher threshold wins).
    thresholds, values = calibrate_thresholds(scores, y, None, "recall_at_target_precision", target_precision=0.0)
    assert values[0] == 1.0 and 0.1 <= thresholds[0] < 0.7


def test_recall_at_target_precision_unreachable_takes_the_highest_precision():
    # Best precision 2/3 (top 3 rows) < target 0.9: its recall (2/3) is the value.
    scores = np.array([[0.9], [0.8], [0.7], [0.6], [0.5], [0.4]])
    y = np.array([0, 1, 1, 0, 1, 0])
    thresholds, values = calibrate_thresholds(scores, y, None, "recall_at_target_precision", target_precision=0.9)
    assert values[0] == pytest.approx(2 / 3)
    assert 0.6 <= thresholds[0] < 0.7


def test_precision_at_target_recall_picks_the_best_feasible():
    scores = np.array([[0.9], [0.8], [0.7], [0.6], [0.5], [0.4]])
    y = np.array([1, 0, 1, 1, 0, 0])
    thresholds, values = calibrate_thresholds(scores, y, None, "precision_at_target_recall", target_recall=0.6)
    # Recall >= 0.6 first at the top 3 rows (2/3, precision 2/3), then top 4 (precision 3/4): the best.
    assert values[0] == pytest.approx(3 / 4)
    assert 0.5 <= thresholds[0] < 0.6


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("label", [0, 1])
def test_calibration_one_class(criterion, label):
    scores, _, w = binary_data(6, n=50, models=3)
    y = np.full(50, label)
    thresholds, values = calibrate_thresholds(scores, y, w, criterion)
    for m in range(3):
        assert_threshold_is_a_cut_point(scores[:, m], thresholds[m])
        assert values[m] == pytest.approx(brute_force_best(scores[:, m], y, w, criterion)[0], rel=1e-12)
    if criterion == "accuracy":
        assert (values == 1.0).all()
        # Unweighted (no weightless rows to tie with): all negative predicts nothing, all positive everything.
        thresholds, values = calibrate_thresholds(scores, y, None, criterion)
        assert (thresholds == (scores.max(axis=0) if label == 0 else np.nextafter(scores.min(axis=0), -np.inf))).all()
        assert (values == 1.0).all()


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("label", [0, 1])
def test_calibration_single_row(criterion, label):
    thresholds, values = calibrate_thresholds(np.array([[0.3, -2.0]]), np.array([label]), None, criterion)
    for m, score in enumerate((0.3, -2.0)):
        assert thresholds[m] in (score, np.nextafter(score, -np.inf))
        column = np.array([score])
        assert values[m] == brute_force_best(column, np.array([label]), None, criterion)[0]
    if label == 1 and criterion != "precision_at_target_recall":
        assert (thresholds < [0.3, -2.0]).all() and (values == 1.0).all()


@pytest.mark.parametrize("criterion", CRITERIA)
def test_calibration_all_scores_equal(criterion):
    _, y, w = binary_data(7, n=40)
    scores = np.full((40, 2), 0.5)
    thresholds, values = calibrate_thresholds(scores, y, w, criterion)
    # Only "all negative" (threshold 0.5) and "all positive" (just below) exist.
    assert set(thresholds.tolist()) <= {0.5, float(np.nextafter(0.5, 0.0))}
    expected = brute_force_best(scores[:, 0], y, w, criterion)[0]
    assert values.tolist() == pytest.approx([expected, expected], rel=1e-12)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_calibration_matches_binary_metrics(criterion):
    scores, y, w = binary_data(8, n=300, models=5)
    thresholds, values = calibrate_thresholds(scores, y, w, criterion, beta=2.0)
    for m in range(5):
        ours = binary_metrics(scores[:, m], y, w, threshold=float(thresholds[m]), beta=2.0)
        assert ours[VALUE_KEY[criterion]] == pytest.approx(values[m], rel=1e-12)


@pytest.mark.parametrize(
    ("scores", "labels", "criterion"),
    [
        (np.zeros((0, 2)), np.zeros(0), "accuracy"),
        (np.zeros(3), np.zeros(3), "accuracy"),
        (np.zeros((3, 2)), np.zeros(3), "auc"),
        (np.zeros((3, 2)), np.array([0, 1, 3]), "accuracy"),
        (np.array([[0.0], [np.inf]]), np.array([0, 1]), "accuracy"),
    ],
)
def test_calibration_invalid_input(scores, labels, criterion):
    with pytest.raises(ValueError):
        calibrate_thresholds(scores, labels, None, criterion)


# multiclass_metrics


def multiclass_data(seed: int, n: int = 300, classes: int = 5, weighted: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), y] += 1.0
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    w = rng.random(n) * 2 if weighted else None
    return p, y, w


def sklearn_multiclass(p, y, w, top_k, beta):
    classes = p.shape[1]
    predicted = p.argmax(axis=1)
    precision, recall, f, _ = skm.precision_recall_fscore_support(
        y, predicted, beta=beta, average="macro", sample_weight=w, zero_division=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k >= C, and predicted classes absent from y_true
        top_k_accuracy = skm.top_k_accuracy_score(y, p, k=top_k, labels=np.arange(classes), sample_weight=w)
        balanced = skm.balanced_accuracy_score(y, predicted, sample_weight=w)
    return {
        "accuracy": skm.accuracy_score(y, predicted, sample_weight=w),
        "top_k_accuracy": top_k_accuracy,
        "dcg": skm.dcg_score(np.eye(classes)[y], p, sample_weight=w),
        "macro_precision": precision,
        "macro_recall": recall,
        "macro_f_beta": f,
        "balanced_accuracy": balanced,
        "log_loss": skm.log_loss(y, y_proba=p, labels=np.arange(classes), sample_weight=w),
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize(("top_k", "beta"), [(1, 1.0), (2, 0.5), (3, 2.0), (5, 1.0), (9, 1.0)])
def test_multiclass_metrics_match_sklearn(seed, weighted, top_k, beta):
    p, y, w = multiclass_data(seed, weighted=weighted)
    ours = multiclass_metrics(p, y, w, top_k=top_k, beta=beta)
    assert set(ours) == {
        "accuracy",
        "top_k_accuracy",
        "dcg",
        "macro_precision",
        "macro_recall",
        "macro_f_beta",
        "balanced_accuracy",
        "log_loss",
    }
    assert_close(ours, sklearn_multiclass(p, y, w, top_k, beta))
    if top_k >= 5:
        assert ours["top_k_accuracy"] == 1.0


def test_multiclass_absent_classes_leave_the_macro_mean():
    # Class 5 is never labelled and never predicted; class 4 is predicted but never labelled.
    p, y, w = multiclass_data(9, classes=6)
    p[:, 5] = 1e-6
    y[y == 4] = 0
    p /= p.sum(axis=1, keepdims=True)
    assert 4 in p.argmax(axis=1) and 5 not in p.argmax(axis=1)
    ours = multiclass_metrics(p, y, w, top_k=2, beta=1.0)
    assert_close(ours, sklearn_multiclass(p, y, w, 2, 1.0))


def test_multiclass_zero_weight_class():
    # Class 2 occurs only in a weightless row: the macro mean keeps it (zeros), balanced accuracy drops it.
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.7, 0.2], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    y = np.array([0, 0, 1, 1, 2])
    w = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    ours = multiclass_metrics(p, y, w, top_k=1, beta=1.0)
    assert ours["balanced_accuracy"] == pytest.approx(0.75)
    assert ours["macro_precision"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert_close(ours, sklearn_multiclass(p, y, w, 1, 1.0))


def test_multiclass_ties_rank_the_true_class_first():
    p = np.full((4, 4), 0.25)
    y = np.array([0, 1, 2, 3])
    ours = multiclass_metrics(p, y, None, top_k=1, beta=1.0)
    # Every true class ties for first: DCG 1 and top-1 1; the argmax (class 0) is right once.
    assert ours["dcg"] == 1.0 and ours["top_k_accuracy"] == 1.0
    assert ours["accuracy"] == 0.25
    assert ours["log_loss"] == pytest.approx(np.log(4))
    # Partial tie: true class 2 ranks 2nd behind class 0 (strictly higher), level with class 1.
    ours = multiclass_metrics(np.array([[0.5, 0.25, 0.25]]), np.array([2]), None, top_k=1, beta=1.0)
    assert ours["dcg"] == pytest.approx(1 / np.log2(3)) and ours["top_k_accuracy"] == 0.0


def test_multiclass_log_loss_clips():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    ours = multiclass_metrics(p, np.array([1, 0]), np.array([3.0, 1.0]), top_k=1, beta=1.0)
    assert ours["log_loss"] == pytest.approx((3 * -np.log(1e-15) + np.log(2)) / 4)


@pytest.mark.parametrize("label", [0, 2])
def test_multiclass_one_class_labels(label):
    p, _, w = multiclass_data(10, classes=3)
    y = np.full(len(p), label)
    ours = multiclass_metrics(p, y, w, top_k=2, beta=1.0)
    assert_close(ours, sklearn_multiclass(p, y, w, 2, 1.0))


def test_multiclass_single_row():
    p = np.array([[0.2, 0.5, 0.3]])
    for label in range(3):
        ours = multiclass_metrics(p, np.array([label]), None, top_k=2, beta=1.0)
        expected = sklearn_multiclass(p, np.array([label]), None, 2, 1.0)
        del expected["dcg"]  # sklearn's dcg_score needs more than one row
        assert_close(ours, expected)
        assert ours["dcg"] == pytest.approx(1 / np.log2(1 + [3, 1, 2][label]))


def test_multiclass_float_labels():
    p, y, w = multiclass_data(11)
    assert multiclass_metrics(p, y.astype(np.float32), w, top_k=2, beta=1.0) == multiclass_metrics(
        p, y, w, top_k=2, beta=1.0
    )


@pytest.mark.parametrize(
    ("p", "labels", "top_k"),
    [
        (np.zeros((0, 3)), np.zeros(0, dtype=int), 1),
        (np.full((2, 3), 1 / 3), np.array([0, 3]), 1),
        (np.full((2, 3), 1 / 3), np.array([0, -1]), 1),
        (np.full((2, 3), 1 / 3), np.array([0.0, 1.5]), 1),
        (np.full((2, 3), 1 / 3), np.array([0, 1]), 0),
        (np.full(3, 1 / 3), np.array([0, 1, 2]), 1),
        (np.array([[np.nan, 0.5], [0.5, 0.5]]), np.array([0, 1]), 1),
    ],
)
def test_multiclass_invalid_input(p, labels, top_k):
    with pytest.raises(ValueError):
        multiclass_metrics(p, labels, None, top_k=top_k, beta=1.0)


# regression_metrics


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [True, False])
def test_regression_metrics_match_sklearn(seed, weighted):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=500) * 10
    predictions = y + rng.normal(size=500)
    w = rng.random(500) if weighted else None
    ours = regression_metrics(predictions, y, w)
    assert_close(
        ours,
        {
            "mse": skm.mean_squared_error(y, predictions, sample_weight=w),
            "rmse": skm.root_mean_squared_error(y, predictions, sample_weight=w),
            "absolute_loss": skm.mean_absolute_error(y, predictions, sample_weight=w),
        },
    )


def test_regression_single_row_and_divergence():
    assert regression_metrics(np.array([3.0]), np.array([1.0]), None) == {"mse": 4.0, "rmse": 2.0, "absolute_loss": 2.0}
    assert regression_metrics(np.array([np.inf, 0.0]), np.array([1.0, 0.0]), None)["mse"] == np.inf


@pytest.mark.parametrize(
    ("predictions", "labels", "weights"),
    [
        ([], [], None),
        ([1.0, np.nan], [1.0, 2.0], None),
        ([1.0, 2.0], [1.0, 2.0, 3.0], None),
        ([1.0, 2.0], [1.0, 2.0], [0.0, 0.0]),
        ([1.0, 2.0], [1.0, 2.0], [1.0, np.inf]),
    ],
)
def test_regression_invalid_input(predictions, labels, weights):
    w = None if weights is None else np.array(weights)
    with pytest.raises(ValueError):
        regression_metrics(np.array(predictions), np.array(labels), w)
