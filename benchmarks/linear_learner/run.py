"""Linear Learner: smalgo's linear-learner vs scikit-learn's linear models, four scenarios, one run.

    .venv/bin/python benchmarks/linear_learner/run.py            # the sizes below (about 5 minutes on 2 CPUs)
    .venv/bin/python benchmarks/linear_learner/run.py --quick    # rows and sparse width 25x fewer, smoke test

Dense data (scenarios 1-3): latent rows Z ~ N(0, I) of 100 features; what the contenders see is
X = Z * scale + mean, float32, with per-feature scales log-uniform in [0.1, 10] and means uniform
in [-5, 5], so that normalisation matters. Labels come from a model on Z (the same as a model on
X). 500,000 training rows and 100,000 held-out test rows from the same distribution, each data
set generated once. Everything is in memory; ours reads it through `InMemoryData`.

1. binary: true weights N(0, 1), logits scaled to a standard deviation of 4, plus 0.5, labels
   drawn Bernoulli(sigmoid(logit)) (so about 13 % label noise: Bayes accuracy about 0.87).
   smalgo binary_classifier, num_models 32, epochs 5, mini_batch_size 1000, no validation
   channel; scikit-learn SGDClassifier(loss="log_loss", max_iter=5, tol=None): one model, 5
   epochs, on the same X (the time reference); StandardScaler + LogisticRegression(lbfgs,
   max_iter 1000): the accuracy reference. Targets: smalgo time / SGDClassifier time <= 1.0,
   smalgo test accuracy - LogisticRegression's >= -0.002.
2. regression: y = Z w + 2 + noise, w ~ N(0, 1) (signal standard deviation 10), noise N(0, 5^2)
   (R^2 about 0.8; the best possible test RMSE is 5). smalgo regressor, epochs 5, everything
   else default (num_models auto, mini_batch_size default); Ridge(alpha=1.0) on the same X.
   Target: test RMSE smalgo / Ridge <= 1.01.
3. multiclass, 10 classes: weights N(0, 1) per class, class logits scaled to a standard
   deviation of 3, plus biases N(0, 0.5^2), labels drawn from the softmax. smalgo
   multiclass_classifier, num_classes 10, epochs 5, everything else default; StandardScaler +
   LogisticRegression(lbfgs, multinomial, max_iter 1000). Target: smalgo test accuracy -
   LogisticRegression's >= -0.005.
4. sparse binary: 500,000 training + 100,000 test rows x 50,000 features, CSR float32 with 50
   non-zeros a row (distinct random columns, values uniform in (0, 1]); labels Bernoulli from a
   sparse logistic model (10 % of the features carry N(0, 1) weights; logits scaled to standard
   deviation 4, plus 0.5). smalgo binary_classifier, feature_dim 50000, num_models 32, epochs 5,
   default mini_batch_size; SGDClassifier(loss="log_loss", max_iter=5, tol=None) on the same CSR.
   Reported: records/s = training rows x epochs run / training seconds, for each, and the ratio.
   Peak memory (target: training's extra peak < 2x the CSR's size): the training CSR is saved to
   a temporary directory and a fresh child process (this script, --memory-child) loads it
   (data, indices, indptr, labels: exactly their bytes), trains once on 2,000 rows untimed (numba
   and imports), then resets the kernel's peak-RSS mark (/proc/self/clear_refs, where allowed)
   and records its resident set (VmRSS) "before"; it then runs the whole smalgo training
   (InMemoryData over the CSR, train) and reads its peak resident set, VmHWM: the "total peak"
   is that, "training's extra" is that minus "before", set against the CSR's data + indices +
   indptr bytes. Where the peak mark could not be reset, the peak may be an earlier one and the
   extra an overestimate (the output says so). Not getrusage(RUSAGE_SELF).ru_maxrss, though it
   is printed too: Linux carries the peak of the process that ran exec over into it, so in a
   child of this (large) process it reports at least this process's own peak, whatever the
   child did.

Every contender is timed on training only (wall clock, building the model from the arrays:
hyperparameter parsing and InMemoryData included for ours), 3 repeats interleaved within each
scenario so that a busy machine slows all of them alike, medians reported (test metrics too:
medians over the repeats). One untimed warm-up of each contender on 20,000 rows comes first, so
numba's compile/cache load and scikit-learn's first-call set-up are not counted. "epochs|iter"
is the passes over the data (smalgo: counted by a training callback, as early stopping on the
training loss may end it sooner; SGDClassifier: n_iter_) or, for LogisticRegression, lbfgs
iterations. smalgo's training log lines are silenced (logger "smalgo" at WARNING).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.registry import get_algorithm
from smalgo.algorithms.training import TrainingCallback
from smalgo.containers.benchmark import peers

REPEATS = 3
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
# Every scenario's figures against its peers, recorded at the end (benchmarks/results/).
COMPARISONS: list[peers.Comparison] = []
SEED = 0
EPOCHS = 5
WARMUP_ROWS = 20_000
MEMORY_WARMUP_ROWS = 2_000
BINARY_LOGIT_STD = 4.0
MULTICLASS_LOGIT_STD = 3.0
REGRESSION_NOISE_STD = 5.0
N_CLASSES = 10
SPARSE_SUPPORT = 0.1  # share of the sparse model's features that carry a weight

BINARY_HP = {"predictor_type": "binary_classifier", "num_models": "32", "epochs": "5", "mini_batch_size": "1000"}
REGRESSION_HP = {"predictor_type": "regressor", "epochs": "5"}
MULTICLASS_HP = {"predictor_type": "multiclass_classifier", "num_classes": str(N_CLASSES), "epochs": "5"}
SPARSE_HP = {"predictor_type": "binary_classifier", "num_models": "32", "epochs": "5"}


@dataclass(frozen=True)
class Sizes:
    n_train: int
    n_test: int
    d: int
    sparse_d: int
    sparse_nnz: int


FULL = Sizes(n_train=500_000, n_test=100_000, d=100, sparse_d=50_000, sparse_nnz=50)
QUICK = Sizes(n_train=20_000, n_test=4_000, d=100, sparse_d=2_000, sparse_nnz=50)


# --- data ---------------------------------------------------------------------------------------


def dense_features(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Latent rows Z ~ N(0, I) and the observed X = Z * scale + mean (float32, C-contiguous)."""
    Z = rng.standard_normal((n, d), dtype=np.float32)
    scales = (10.0 ** rng.uniform(-1.0, 1.0, d)).astype(np.float32)
    means = rng.uniform(-5.0, 5.0, d).astype(np.float32)
    return Z, np.ascontiguousarray(Z * scales + means)


def make_binary(sizes: Sizes, seed: int = SEED):
    """(X_train, y_train, X_test, y_test), and the true model's expected test accuracy."""
    rng = np.random.default_rng(seed)
    Z, X = dense_features(rng, sizes.n_train + sizes.n_test, sizes.d)
    w = rng.standard_normal(sizes.d)
    logits = (Z @ w) * (BINARY_LOGIT_STD / np.sqrt(sizes.d)) + 0.5
    y = (rng.random(logits.size) < expit(logits)).astype(np.float32)
    bayes = float(np.mean(expit(np.abs(logits[sizes.n_train :]))))
    return split(X, y, sizes.n_train), bayes


def make_regression(sizes: Sizes, seed: int = SEED + 1):
    """(X_train, y_train, X_test, y_test), and the best possible test RMSE (the noise's)."""
    rng = np.random.default_rng(seed)
    Z, X = dense_features(rng, sizes.n_train + sizes.n_test, sizes.d)
    w = rng.standard_normal(sizes.d)
    y = Z @ w + 2.0 + REGRESSION_NOISE_STD * rng.standard_normal(Z.shape[0])
    return split(X, y.astype(np.float32), sizes.n_train), REGRESSION_NOISE_STD


def make_multiclass(sizes: Sizes, seed: int = SEED + 2):
    """(X_train, y_train, X_test, y_test) with labels 0..9 as float32, and the true model's
    expected test accuracy."""
    rng = np.random.default_rng(seed)
    Z, X = dense_features(rng, sizes.n_train + sizes.n_test, sizes.d)
    W = rng.standard_normal((sizes.d, N_CLASSES))
    logits = (Z @ W) * (MULTICLASS_LOGIT_STD / np.sqrt(sizes.d)) + 0.5 * rng.standard_normal(N_CLASSES)
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.float32)  # a softmax draw
    test_logits = logits[sizes.n_train :]
    probabilities = np.exp(test_logits - test_logits.max(axis=1, keepdims=True))
    bayes = float(np.mean(probabilities.max(axis=1) / probabilities.sum(axis=1)))
    return split(X, y, sizes.n_train), bayes


def make_sparse(sizes: Sizes, seed: int = SEED + 3):
    """(X_train, y_train, X_test, y_test) with X CSR float32, and the true model's expected test
    accuracy. Every row has exactly `sparse_nnz` distinct, sorted columns: k sorted draws from
    [0, d - k] plus 0, 1, ..., k - 1 (vectorised, no loop over rows)."""
    rng = np.random.default_rng(seed)
    n, d, k = sizes.n_train + sizes.n_test, sizes.sparse_d, sizes.sparse_nnz
    columns = rng.integers(0, d - k + 1, size=(n, k), dtype=np.int32)
    columns.sort(axis=1)
    columns += np.arange(k, dtype=np.int32)
    values = 1.0 - rng.random(n * k, dtype=np.float32)  # (0, 1]: no explicit zeros
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64 if n * k >= 2**31 else np.int32)
    X = sp.csr_matrix((values, columns.ravel(), indptr), shape=(n, d))
    w = np.zeros(d)
    support = rng.choice(d, max(1, int(SPARSE_SUPPORT * d)), replace=False)
    w[support] = rng.standard_normal(support.size)
    raw = X @ w
    logits = raw * (BINARY_LOGIT_STD / raw.std()) + 0.5
    y = (rng.random(n) < expit(logits)).astype(np.float32)
    bayes = float(np.mean(expit(np.abs(logits[sizes.n_train :]))))
    return split(X, y, sizes.n_train), bayes


def split(X, y: np.ndarray, n_train: int):
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def csr_bytes(X: sp.csr_matrix) -> int:
    return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes


# --- contenders ---------------------------------------------------------------------------------


@dataclass
class Fit:
    """A fitted contender: predicts labels (classifiers) or values (regressors) for test rows."""

    predict: Callable[[Any], np.ndarray]
    passes: int | None = None  # epochs (or lbfgs iterations) made, where known


class EpochCounter(TrainingCallback):
    def __init__(self) -> None:
        self.epochs = 0

    def after_epoch(self, epoch: int, state, metrics: Mapping[str, float]) -> bool:
        self.epochs += 1
        return False


def smalgo_fit(hyperparameters: Mapping[str, str]) -> Callable[[Any, np.ndarray], Fit]:
    output = "score" if hyperparameters["predictor_type"] == "regressor" else "predicted_label"

    def fit(X, y: np.ndarray) -> Fit:
        algorithm = get_algorithm("linear-learner")
        hp = algorithm.hyperparameters.parse({"feature_dim": str(X.shape[1]), **hyperparameters})
        algorithm.validate(hp)
        counter = EpochCounter()
        model = algorithm.train(hp, InMemoryData({"train": (X, y)}), callbacks=[counter])
        return Fit(lambda X_test: model.predict(Batch(X_test))[output], counter.epochs or None)

    return fit


def sgd_fit(X, y: np.ndarray) -> Fit:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SGDClassifier(loss="log_loss", max_iter=EPOCHS, tol=None, random_state=SEED).fit(X, y)
    return Fit(model.predict, int(model.n_iter_))


def logistic_fit(X, y: np.ndarray) -> Fit:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(solver="lbfgs", max_iter=1000)).fit(X, y)
    return Fit(model.predict, int(np.max(model[-1].n_iter_)))


def ridge_fit(X, y: np.ndarray) -> Fit:
    from sklearn.linear_model import Ridge

    return Fit(Ridge(alpha=1.0).fit(X, y).predict)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_pred).ravel() == y_true))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y_pred, dtype=np.float64).ravel() - y_true) ** 2)))


@dataclass
class Result:
    times: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    passes: list[int | None] = field(default_factory=list)

    @property
    def time(self) -> float:
        return statistics.median(self.times)

    @property
    def score(self) -> float:
        return statistics.median(self.scores)

    @property
    def passes_text(self) -> str:
        known = [p for p in self.passes if p is not None]
        if not known:
            return "-"
        return str(known[0]) if min(known) == max(known) else f"{min(known)}-{max(known)}"


def run_contenders(contenders: Mapping[str, Callable[[Any, np.ndarray], Fit]], data, score) -> dict[str, Result]:
    """Warm-up, then REPEATS interleaved timed fits of every contender, each scored on the test
    rows with `score(y_true, y_pred)`."""
    X, y, X_test, y_test = data
    for fit in contenders.values():  # untimed warm-up
        fit(X[:WARMUP_ROWS], y[:WARMUP_ROWS])
    results = {name: Result() for name in contenders}
    for _ in range(REPEATS):
        for name, fit in contenders.items():
            gc.collect()
            started = time.perf_counter()
            fitted = fit(X, y)
            results[name].times.append(time.perf_counter() - started)
            results[name].scores.append(score(y_test, fitted.predict(X_test)))
            results[name].passes.append(fitted.passes)
    return results


def print_table(results: Mapping[str, Result], score_name: str, score_format: str = ".4f") -> None:
    print(f"{'contender':<44} {'train s':>9} {'(min-max)':>15} {'epochs|iter':>12} {score_name:>10}")
    for name, result in results.items():
        spread = f"({min(result.times):.2f}-{max(result.times):.2f})"
        print(f"{name:<44} {result.time:>9.3f} {spread:>15} {result.passes_text:>12} {result.score:>10{score_format}}")


Check = tuple[str, bool]


def check(text: str, ok: bool) -> Check:
    print(f"{text}: {'PASS' if ok else 'FAIL'}")
    return text, ok


# --- scenarios ----------------------------------------------------------------------------------


def binary_scenario(sizes: Sizes) -> list[Check]:
    data, bayes = make_binary(sizes)
    print(
        f"\n== 1. binary: {sizes.n_train:,} x {sizes.d} dense train, {sizes.n_test:,} test; Bayes accuracy {bayes:.4f}"
    )
    ours, sgd, logistic = (
        "smalgo linear-learner (32 models, 5 epochs)",
        "sklearn SGDClassifier log_loss (5 epochs)",
        "sklearn StandardScaler+LogisticRegression",
    )
    results = run_contenders({ours: smalgo_fit(BINARY_HP), sgd: sgd_fit, logistic: logistic_fit}, data, accuracy)
    print_table(results, "test acc")
    time_ratio = results[ours].time / results[sgd].time
    gap = results[ours].score - results[logistic].score
    case = f"binary, {sizes.n_train:,} x {sizes.d} dense"
    COMPARISONS.extend(
        [
            peers.Comparison(case, "training time", "s", results[ours].time, sgd, results[sgd].time, False),
            peers.Comparison(case, "test accuracy", "", results[ours].score, logistic, results[logistic].score, True),
        ]
    )
    return [
        check(f"binary: smalgo / SGDClassifier train time = {time_ratio:.2f} (target <= 1.0)", time_ratio <= 1.0),
        check(f"binary: smalgo - LogisticRegression test accuracy = {gap:+.4f} (target >= -0.002)", gap >= -0.002),
    ]


def regression_scenario(sizes: Sizes) -> list[Check]:
    data, floor = make_regression(sizes)
    print(
        f"\n== 2. regression: {sizes.n_train:,} x {sizes.d} dense train, {sizes.n_test:,} test; "
        f"noise (best possible) RMSE {floor:.4f}"
    )
    ours, ridge = "smalgo linear-learner regressor (5 epochs)", "sklearn Ridge(alpha=1.0)"
    results = run_contenders({ours: smalgo_fit(REGRESSION_HP), ridge: ridge_fit}, data, rmse)
    print_table(results, "test rmse")
    ratio = results[ours].score / results[ridge].score
    case = f"regression, {sizes.n_train:,} x {sizes.d} dense"
    COMPARISONS.extend(
        [
            peers.Comparison(case, "training time", "s", results[ours].time, ridge, results[ridge].time, False),
            peers.Comparison(case, "test RMSE", "", results[ours].score, ridge, results[ridge].score, False),
        ]
    )
    print(f"regression: smalgo / Ridge train time = {results[ours].time / results[ridge].time:.2f} (for information)")
    return [check(f"regression: smalgo / Ridge test RMSE = {ratio:.4f} (target <= 1.01)", ratio <= 1.01)]


def multiclass_scenario(sizes: Sizes) -> list[Check]:
    data, bayes = make_multiclass(sizes)
    print(
        f"\n== 3. multiclass, {N_CLASSES} classes: {sizes.n_train:,} x {sizes.d} dense train, "
        f"{sizes.n_test:,} test; Bayes accuracy {bayes:.4f}"
    )
    ours, logistic = "smalgo linear-learner multiclass (5 epochs)", "sklearn StandardScaler+LogisticRegression"
    results = run_contenders({ours: smalgo_fit(MULTICLASS_HP), logistic: logistic_fit}, data, accuracy)
    print_table(results, "test acc")
    gap = results[ours].score - results[logistic].score
    case = f"{N_CLASSES}-class, {sizes.n_train:,} x {sizes.d} dense"
    COMPARISONS.extend(
        [
            peers.Comparison(case, "training time", "s", results[ours].time, logistic, results[logistic].time, False),
            peers.Comparison(case, "test accuracy", "", results[ours].score, logistic, results[logistic].score, True),
        ]
    )
    print(
        f"multiclass: smalgo / LogisticRegression train time = {results[ours].time / results[logistic].time:.2f} "
        "(for information)"
    )
    return [
        check(f"multiclass: smalgo - LogisticRegression test accuracy = {gap:+.4f} (target >= -0.005)", gap >= -0.005)
    ]


def sparse_scenario(sizes: Sizes) -> list[Check]:
    data, bayes = make_sparse(sizes)
    X, y = data[0], data[1]
    size = csr_bytes(X)
    print(
        f"\n== 4. sparse binary: {sizes.n_train:,} x {sizes.sparse_d:,} CSR float32 train, {sizes.sparse_nnz} "
        f"non-zeros a row ({size / 2**20:.1f} MiB: data + indices + indptr), {sizes.n_test:,} test; "
        f"Bayes accuracy {bayes:.4f}"
    )
    ours, sgd = "smalgo linear-learner (32 models, 5 epochs)", "sklearn SGDClassifier log_loss (5 epochs)"
    results = run_contenders({ours: smalgo_fit(SPARSE_HP), sgd: sgd_fit}, data, accuracy)
    print_table(results, "test acc")
    rate = {}
    for name, result in results.items():
        passes = statistics.median(p or EPOCHS for p in result.passes)
        rate[name] = sizes.n_train * passes / result.time
        print(f"sparse: {name}: {rate[name]:,.0f} records/s ({passes:g} epochs)")
    print(f"sparse: smalgo / SGDClassifier records/s = {rate[ours] / rate[sgd]:.2f} (for information)")
    case = f"sparse binary, {sizes.n_train:,} x {sizes.sparse_d:,}, {sizes.sparse_nnz} non-zeros a row"
    COMPARISONS.extend(
        [
            peers.Comparison(case, "training throughput", "records/s", rate[ours], sgd, rate[sgd], True),
            peers.Comparison(case, "test accuracy", "", results[ours].score, sgd, results[sgd].score, True),
        ]
    )

    memory = measure_memory(X, y)
    extra = memory["peak_kb"] * 1024 - memory["rss_before_kb"] * 1024
    print(
        f"sparse memory (fresh process, smalgo training {memory['seconds']:.1f} s): RSS before training "
        f"{memory['rss_before_kb'] / 1024:.1f} MiB, peak during training {memory['peak_kb'] / 1024:.1f} MiB "
        f"(VmHWM), extra {extra / 2**20:.1f} MiB = {extra / size:.2f}x the CSR's {size / 2**20:.1f} MiB "
        f"(ru_maxrss {memory['ru_maxrss_kb'] / 1024:.1f} MiB: not used, exec carries this process's peak into it)"
    )
    if not memory["peak_reset"]:
        print("sparse memory: the peak-RSS mark could not be reset; the peak may predate training (an overestimate)")
    return [
        check(
            f"sparse: training's extra peak memory = {extra / size:.2f}x the CSR size (target < 2x)", extra < 2 * size
        )
    ]


# --- peak memory, in a fresh process ------------------------------------------------------------


def measure_memory(X: sp.csr_matrix, y: np.ndarray) -> dict[str, Any]:
    """Run memory_child in a fresh interpreter over the training CSR; its report."""
    with tempfile.TemporaryDirectory(prefix="smalgo-ll-bench-") as directory:
        for name, array in (("data", X.data), ("indices", X.indices), ("indptr", X.indptr), ("y", y)):
            np.save(Path(directory, f"{name}.npy"), array)
        Path(directory, "shape.json").write_text(json.dumps(list(X.shape)))
        completed = subprocess.run(
            [sys.executable, __file__, "--memory-child", directory], capture_output=True, text=True
        )
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise RuntimeError(f"the memory-measuring child process failed (exit status {completed.returncode})")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now; VmHWM: peak), in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def memory_child(directory: str) -> int:
    logging.getLogger("smalgo").setLevel(logging.WARNING)
    arrays = {name: np.load(Path(directory, f"{name}.npy")) for name in ("data", "indices", "indptr", "y")}
    shape = tuple(json.loads(Path(directory, "shape.json").read_text()))
    X = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape, copy=False)
    y = arrays["y"]
    fit = smalgo_fit(SPARSE_HP)
    fit(X[:MEMORY_WARMUP_ROWS], y[:MEMORY_WARMUP_ROWS])  # numba compile/cache load, imports
    gc.collect()
    peak_reset = reset_peak_rss()
    rss_before = status_kb("VmRSS")
    started = time.perf_counter()
    fit(X, y)
    seconds = time.perf_counter() - started
    report = {
        "rss_before_kb": rss_before,
        "peak_kb": status_kb("VmHWM"),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # kB on Linux
        "seconds": seconds,
        "peak_reset": peak_reset,
    }
    print(json.dumps(report))
    return 0


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, for a smoke test")
    parser.add_argument("--memory-child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child)
    sizes = QUICK if args.quick else FULL
    logging.getLogger("smalgo").setLevel(logging.WARNING)

    import numba
    import scipy
    import sklearn

    print(f"Linear Learner benchmark: 4 scenarios, {REPEATS} repeats each{' (quick)' if args.quick else ''}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"numba {numba.__version__}, scikit-learn {sklearn.__version__}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    checks = []
    for scenario in (binary_scenario, regression_scenario, multiclass_scenario, sparse_scenario):
        checks += scenario(sizes)
        gc.collect()

    print("\nsummary:")
    for text, ok in checks:
        print(f"{text}: {'PASS' if ok else 'FAIL'}")
    peers.record("linear-learner", COMPARISONS, results_dir=RESULTS_DIR)
    return 0 if all(ok for _, ok in checks) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
