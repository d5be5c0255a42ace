"""k-means: smalgo's streaming k-means vs scikit-learn's KMeans (Lloyd) and MiniBatchKMeans.

    .venv/bin/python benchmarks/kmeans/run.py            # 500,000 x 50, k = 20 (under a minute)
    .venv/bin/python benchmarks/kmeans/run.py --quick    # 20,000 x 10, k = 5, smoke test

Data: 20 Gaussian clusters in 50 dimensions (centers uniform in [-10, 10], per-cluster standard
deviation uniform in [1, 3], cluster sizes uneven, proportional to uniform(0.5, 1.5) weights),
float32; 500,000 training rows and 100,000 held-out test rows from the same mixture. Everything
is in memory on both sides (ours reads it through `InMemoryData` in mini-batches).

Contenders, each timed on training only (wall clock), 3 repeats interleaved so that a busy
machine slows all of them alike, medians reported:

* smalgo kmeans with its defaults (k = 20, feature_dim = 50; init_method random,
  mini_batch_size 5000, extra_center_factor auto, one epoch);
* scikit-learn KMeans(n_clusters=20, algorithm="lloyd", init="k-means++"): the quality reference;
* scikit-learn MiniBatchKMeans(n_clusters=20, batch_size=5000, max_iter=1,
  max_no_improvement=None): one full epoch, the speed reference.

The test msd (mean squared Euclidean distance of the test rows to their closest center) is
computed afterwards for every fitted model. Targets: our test msd within 2 % of Lloyd's, and our
training at least 3x faster than MiniBatchKMeans. One untimed warm-up of each contender on a
small sample comes first, so numba's compile/cache load and scikit-learn's first-call set-up are
not counted.
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

from smalgo.algorithms import kmeans
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.containers.benchmark import peers

REPEATS = 3
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
SEED = 0


def make_clusters(n_train: int, n_test: int, d: int, k: int, seed: int = SEED):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10.0, 10.0, size=(k, d))
    stds = rng.uniform(1.0, 3.0, size=k)
    proportions = rng.uniform(0.5, 1.5, size=k)
    proportions /= proportions.sum()
    labels = rng.choice(k, size=n_train + n_test, p=proportions)
    X = centers[labels] + stds[labels, None] * rng.standard_normal((labels.size, d))
    X = X.astype(np.float32)
    return X[:n_train], X[n_train:]


def test_msd(model_kind: str, model, X_test: np.ndarray) -> float:
    if model_kind == "smalgo":
        ssd, weight = model.sum_squared_distances(Batch(X_test))
        return ssd / weight
    return -model.score(X_test) / X_test.shape[0]


def fit_smalgo(X: np.ndarray, k: int):
    hp = kmeans.ALGORITHM.hyperparameters.parse({"k": str(k), "feature_dim": str(X.shape[1])})
    return kmeans.ALGORITHM.train(hp, InMemoryData({"train": X}))


def fit_lloyd(X: np.ndarray, k: int):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, algorithm="lloyd", init="k-means++", random_state=SEED).fit(X)


def fit_minibatch(X: np.ndarray, k: int):
    from sklearn.cluster import MiniBatchKMeans

    # max_no_improvement=None: a full epoch (100 mini-batches), as ours does, rather than the
    # early stop after about a dozen batches that scikit-learn's smoothed-inertia check makes.
    return MiniBatchKMeans(n_clusters=k, batch_size=5000, max_iter=1, max_no_improvement=None, random_state=SEED).fit(X)


CONTENDERS = {
    "smalgo kmeans (1 epoch)": ("smalgo", fit_smalgo),
    "sklearn KMeans lloyd": ("sklearn", fit_lloyd),
    "sklearn MiniBatchKMeans": ("sklearn", fit_minibatch),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, for a smoke test")
    args = parser.parse_args(argv)
    n_train, n_test, d, k = (20_000, 5_000, 10, 5) if args.quick else (500_000, 100_000, 50, 20)

    import numba
    import sklearn

    X_train, X_test = make_clusters(n_train, n_test, d, k)
    print(f"k-means benchmark: {n_train:,} x {d} float32 train, {n_test:,} test, k = {k}, {REPEATS} repeats")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"scikit-learn {sklearn.__version__}, {os.cpu_count()} CPUs"
    )
    from smalgo.algorithms.runtime import threads as row_threads

    path = "BLAS, one thread per worker" if row_threads.blas_controller() is not None else "numba only"
    print(f"smalgo dense assignment path: {path} (threadpoolctl {'present' if path.startswith('BLAS') else 'absent'})")

    for _kind, fit in CONTENDERS.values():  # untimed warm-up
        fit(X_train[: min(n_train, 20_000)], k)

    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    msds: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(REPEATS):
        for name, (kind, fit) in CONTENDERS.items():
            started = time.perf_counter()
            model = fit(X_train, k)
            times[name].append(time.perf_counter() - started)
            msds[name].append(test_msd(kind, model, X_test))

    median_time = {name: statistics.median(values) for name, values in times.items()}
    median_msd = {name: statistics.median(values) for name, values in msds.items()}
    ours, lloyd, minibatch = CONTENDERS
    print()
    print(
        f"{'contender':<26} {'train s':>9} {'(min-max)':>15} {'test msd':>12} {'msd / lloyd':>12} "
        f"{'ours faster by':>15}"
    )
    for name in CONTENDERS:
        spread = f"({min(times[name]):.2f}-{max(times[name]):.2f})"
        speedup = median_time[name] / median_time[ours]
        print(
            f"{name:<26} {median_time[name]:>9.3f} {spread:>15} {median_msd[name]:>12.4f} "
            f"{median_msd[name] / median_msd[lloyd]:>12.4f} {speedup:>14.2f}x"
        )

    msd_ratio = median_msd[ours] / median_msd[lloyd]
    speedup = median_time[minibatch] / median_time[ours]
    quality_ok = msd_ratio <= 1.02
    speed_ok = speedup >= 3.0
    print()
    print(f"test msd ours / lloyd = {msd_ratio:.4f} (target <= 1.02): {'PASS' if quality_ok else 'FAIL'}")
    print(f"MiniBatchKMeans time / ours = {speedup:.2f}x (target >= 3x): {'PASS' if speed_ok else 'FAIL'}")
    case = f"{n_train:,} x {d}, k={k}"
    peers.record(
        "kmeans",
        [
            peers.Comparison(case, "training time", "s", median_time[ours], minibatch, median_time[minibatch], False),
            peers.Comparison(case, "training time", "s", median_time[ours], lloyd, median_time[lloyd], False),
            peers.Comparison(case, "test msd", "", median_msd[ours], lloyd, median_msd[lloyd], False),
        ],
        results_dir=RESULTS_DIR,
    )
    return 0 if (quality_ok and speed_ok) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
