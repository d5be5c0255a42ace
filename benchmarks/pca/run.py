"""PCA: smalgo's regular and randomized modes vs scikit-learn's PCA, on the same data, same run.

    .venv/bin/python benchmarks/pca/run.py            # 500,000 x 100, 10 components (about a minute)
    .venv/bin/python benchmarks/pca/run.py --quick    # 20,000 x 30, 5 components, smoke test

Data: float32 rows = 10 latent directions with variances from 100 down to 10 (geometric), plus
isotropic Gaussian noise of standard deviation 0.5 in every one of the 100 features, plus a mean
drawn uniformly in [-3, 3] per feature. 500,000 rows, all in memory; ours reads them through
`InMemoryData` with mini_batch_size 500 (the SageMaker SDK's default for PCA).

Contenders, 3 repeats interleaved so that a busy machine slows all of them alike, medians of the
wall-clock fit time reported:

* smalgo pca, algorithm_mode=regular and algorithm_mode=randomized (extra_components default,
  so a sketch of 20 columns);
* scikit-learn PCA(n_components=10, svd_solver="covariance_eigh"): the exact reference, and the
  time reference for regular mode;
* scikit-learn PCA(n_components=10, svd_solver="randomized"), for information: it makes several
  passes over the data (power iterations), which a streaming job cannot.

Accuracy, measured against the exact float64 covariance computed once outside the timings:
* "reported EV err": the largest relative error, over the 10 components, of the explained
  variance each model reports (ours: singular_values**2 / (n - 1)) against scikit-learn's
  covariance_eigh explained_variance_;
* "captured": the variance of the data along the model's 10 components, summed, over the sum of
  the 10 largest eigenvalues (1.0 = the optimal subspace).
Targets: regular mode's reported EV error <= 1e-4 and time <= 1.5x covariance_eigh's; randomized
mode within 1 % of the explained variance (captured >= 0.99).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from smalgo.algorithms import pca
from smalgo.algorithms.data import InMemoryData
from smalgo.containers.benchmark import peers

REPEATS = 3
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
SEED = 0
MINI_BATCH_SIZE = 500


def make_data(n: int, d: int, n_signal: int, seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, n_signal)))
    variances = np.geomspace(100.0, 10.0, n_signal)
    X = (rng.standard_normal((n, n_signal)) * np.sqrt(variances)) @ basis.T
    X += 0.5 * rng.standard_normal((n, d))
    X += rng.uniform(-3.0, 3.0, d)
    return X.astype(np.float32)


def fit_smalgo(mode: str):
    def fit(X: np.ndarray, n_components: int):
        hp = pca.ALGORITHM.hyperparameters.parse(
            {
                "feature_dim": str(X.shape[1]),
                "mini_batch_size": str(MINI_BATCH_SIZE),
                "num_components": str(n_components),
                "algorithm_mode": mode,
            }
        )
        model = pca.ALGORITHM.train(hp, InMemoryData({"train": X}))
        # Ours orders components smallest first; report largest first like scikit-learn.
        return model.components[:, ::-1].astype(np.float64), model.explained_variance[::-1]

    return fit


def fit_sklearn(solver: str):
    def fit(X: np.ndarray, n_components: int):
        from sklearn.decomposition import PCA

        model = PCA(n_components=n_components, svd_solver=solver, random_state=SEED).fit(X)
        return model.components_.T.astype(np.float64), model.explained_variance_

    return fit


CONTENDERS = {
    "smalgo pca regular": fit_smalgo("regular"),
    "smalgo pca randomized": fit_smalgo("randomized"),
    "sklearn covariance_eigh": fit_sklearn("covariance_eigh"),
    "sklearn randomized": fit_sklearn("randomized"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, for a smoke test")
    args = parser.parse_args(argv)
    n, d, n_components = (20_000, 30, 5) if args.quick else (500_000, 100, 10)

    import numba
    import sklearn

    X = make_data(n, d, n_components)
    print(f"PCA benchmark: {n:,} x {d} float32, {n_components} components, {REPEATS} repeats")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"scikit-learn {sklearn.__version__}, {os.cpu_count()} CPUs"
    )

    X64 = X.astype(np.float64)
    centered_gram = X64.T @ X64 - n * np.outer(X64.mean(axis=0), X64.mean(axis=0))
    covariance = centered_gram / (n - 1)
    del X64
    best_variance = np.linalg.eigvalsh(covariance)[::-1][:n_components].sum()

    for fit in CONTENDERS.values():  # untimed warm-up
        fit(X[: min(n, 20_000)], n_components)

    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    results = {}
    for _ in range(REPEATS):
        for name, fit in CONTENDERS.items():
            started = time.perf_counter()
            results[name] = fit(X, n_components)
            times[name].append(time.perf_counter() - started)

    reference_ev = results["sklearn covariance_eigh"][1]
    median_time = {name: statistics.median(values) for name, values in times.items()}
    reference_time = median_time["sklearn covariance_eigh"]
    print()
    print(
        f"{'contender':<24} {'fit s':>8} {'(min-max)':>13} {'time / cov_eigh':>16} "
        f"{'reported EV err':>16} {'captured':>10}"
    )
    accuracy = {}
    for name in CONTENDERS:
        components, explained = results[name]
        ev_error = float(np.max(np.abs(explained / reference_ev - 1)))
        captured = float(np.einsum("ij,ij->", components, covariance @ components) / best_variance)
        accuracy[name] = (ev_error, captured)
        spread = f"({min(times[name]):.2f}-{max(times[name]):.2f})"
        print(
            f"{name:<24} {median_time[name]:>8.3f} {spread:>13} {median_time[name] / reference_time:>15.2f}x "
            f"{ev_error:>16.2e} {captured:>10.6f}"
        )

    regular_error, _ = accuracy["smalgo pca regular"]
    regular_ratio = median_time["smalgo pca regular"] / reference_time
    _, randomized_captured = accuracy["smalgo pca randomized"]
    checks = [
        (f"regular reported explained variance error = {regular_error:.2e} (target <= 1e-4)", regular_error <= 1e-4),
        (f"regular time / covariance_eigh = {regular_ratio:.2f}x (target <= 1.5x)", regular_ratio <= 1.5),
        (
            f"randomized captured variance = {randomized_captured:.4f} of optimal (target >= 0.99)",
            randomized_captured >= 0.99,
        ),
    ]
    print()
    for text, ok in checks:
        print(f"{text}: {'PASS' if ok else 'FAIL'}")
    case = f"{n:,} x {d}, {n_components} components"
    reference = "scikit-learn PCA covariance_eigh"
    peers.record(
        "pca",
        [
            peers.Comparison(
                case,
                f"{name[len('smalgo pca ') :]}: fit time",
                "s",
                median_time[name],
                reference,
                reference_time,
                False,
            )
            for name in ("smalgo pca regular", "smalgo pca randomized")
        ]
        + [
            peers.Comparison(
                case,
                "randomized: variance captured, of the optimum",
                "share",
                randomized_captured,
                reference,
                accuracy["sklearn covariance_eigh"][1],
                True,
            )
        ],
        results_dir=RESULTS_DIR,
    )
    return 0 if all(ok for _, ok in checks) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
