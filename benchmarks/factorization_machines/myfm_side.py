"""The peers' side of benchmarks/factorization_machines/run.py: myfm (and scikit-learn) on the
same data, in their own environment (benchmarks/.venv-myfm, made by setup_myfm_env.sh), never
the project's.

    benchmarks/.venv-myfm/bin/python benchmarks/factorization_machines/myfm_side.py DATA.npz TASK

DATA.npz holds the train and test CSR matrices (train_/test_ data, indices, indptr, shape) and
labels that run.py wrote. TASK is `regression` (MyFMRegressor, Gibbs sampling, and
VariationalFMRegressor, 50 iterations each, rank 8) or `binary` (MyFMClassifier, ordered probit
Gibbs sampling, 50 iterations, and scikit-learn's LogisticRegression on the one-hot columns plus
every user x item cross, as a column of its own); the Gibbs samplers' predictions average their
last KEPT_SAMPLES samples. Prints one JSON object: per model, the fit time (seconds), the test
predictions' metrics.
"""

from __future__ import annotations

import json
import sys
import time

import myfm
import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

RANK = 8
ITERATIONS = 50
# Gibbs samples averaged for the predictions: the last half, the first half being burn-in (all 50,
# myfm's default, average in the first samples' poor models: test RMSE 0.27-0.34 instead of 0.106
# on the regression, at the same fit time).
KEPT_SAMPLES = ITERATIONS // 2
SEED = 0


def csr(data, prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix(
        (data[f"{prefix}_data"], data[f"{prefix}_indices"], data[f"{prefix}_indptr"]),
        shape=tuple(data[f"{prefix}_shape"]),
    )


def timed(fit):
    started = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - started


def rmse(predicted, y) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - y) ** 2)))


def binary(probabilities, y) -> dict:
    p = np.clip(np.asarray(probabilities, np.float64), 1e-15, 1 - 1e-15)
    return {
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
    }


def crossed(X: sp.csr_matrix, levels: int) -> sp.csr_matrix:
    """X plus one indicator column per (user, item) pair: a linear model's pairwise features."""
    user = X[:, :levels].tocsr().indices  # one user and one item a row
    item = X[:, levels : 2 * levels].tocsr().indices
    pairs = sp.csr_matrix(
        (np.ones(X.shape[0], np.float32), (np.arange(X.shape[0]), user * levels + item)),
        shape=(X.shape[0], levels * levels),
    )
    return sp.hstack([X, pairs], format="csr")


def main(path: str, task: str) -> None:
    data = np.load(path)
    X, Xt = csr(data, "train"), csr(data, "test")
    y, yt = data["train_y"].astype(np.float64), data["test_y"].astype(np.float64)
    results = {}
    if task == "regression":
        gibbs, seconds = timed(
            lambda: myfm.MyFMRegressor(rank=RANK, random_seed=SEED).fit(
                X, y, n_iter=ITERATIONS, n_kept_samples=KEPT_SAMPLES
            )
        )
        results["MyFMRegressor"] = {"seconds": seconds, "rmse": rmse(gibbs.predict(Xt), yt)}
        variational, seconds = timed(
            lambda: myfm.VariationalFMRegressor(rank=RANK, random_seed=SEED).fit(X, y, n_iter=ITERATIONS)
        )
        results["VariationalFMRegressor"] = {"seconds": seconds, "rmse": rmse(variational.predict(Xt), yt)}
    else:
        gibbs, seconds = timed(
            lambda: myfm.MyFMClassifier(rank=RANK, random_seed=SEED).fit(
                X, y, n_iter=ITERATIONS, n_kept_samples=KEPT_SAMPLES
            )
        )
        results["MyFMClassifier"] = {"seconds": seconds, **binary(gibbs.predict_proba(Xt), yt)}
        levels = int(data["levels"])
        Xc, Xtc = crossed(X, levels), crossed(Xt, levels)
        logistic, seconds = timed(lambda: LogisticRegression(max_iter=1000).fit(Xc, y))
        results["LogisticRegression (one-hot + crosses)"] = {
            "seconds": seconds,
            **binary(logistic.predict_proba(Xtc)[:, 1], yt),
        }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("regression", "binary"):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
