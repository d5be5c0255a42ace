"""Jobs of several hosts: what the hosts' exchanges cost, beside the training time.

    .venv/bin/python benchmarks/several_hosts/run.py            # 200,000 rows a job
    .venv/bin/python benchmarks/several_hosts/run.py --quick    # 20,000 rows, smoke test

Each algorithm that trains on several hosts (PCA, k-means, linear learner, factorization machines,
XGBoost) runs
the same job as `smalgo train --hosts 1` and `--hosts 2` (ShardedByS3Key over 8 files, two
processes on loopback on this machine), and the table shows, per job: the wall time of the whole
job (process start-up included), the passes, and from the first host's log line "Exchanges with
the other hosts: N all-reduces of X MB in all, Y s" the bytes and seconds of smalgo's exchanges,
in all and per pass (the seconds include waiting for the slower host at each exchange).
XGBoost's own exchanges (its quantile sketch and histograms, inside
xgboost.train) are not counted: only the few of smalgo's around them.

Two hosts on one machine share its cores, so the wall times compare the two layouts here, not
two machines against one; the exchange costs are what a pass sends, whatever the machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from smalgo.recordio import write_sparse

FILES = 8
EXCHANGES = re.compile(r"\[algo-1\].*Exchanges with the other hosts: (\d+) all-reduces of (\S+) MB in all, (\S+) s\.")


def write_dense(directory: Path, X: np.ndarray) -> None:
    directory.mkdir(parents=True)
    for index, part in enumerate(np.array_split(X, FILES)):
        np.savetxt(directory / f"part{index}.csv", part, delimiter=",", fmt="%.6g")


def jobs(rows: int, directory: Path) -> list[tuple[str, Path, str, list[str], int]]:
    """(algorithm, data, content type, hyperparameters, passes) of each job."""
    rng = np.random.default_rng(0)
    d = 50
    X = (rng.normal(size=(rows, 10)) @ rng.normal(size=(10, d)) + rng.normal(size=(rows, d))).astype(np.float32)
    write_dense(directory / "dense", X)
    regression = np.column_stack([X @ rng.normal(size=d) + rng.normal(size=rows), X])
    write_dense(directory / "labelled", regression)
    levels = 1000
    users, items = rng.integers(0, levels, rows), rng.integers(0, levels, rows)
    U, W = rng.normal(0, 0.7, (levels, 4)), rng.normal(0, 0.7, (levels, 4))
    y = (np.einsum("ij,ij->i", U[users], W[items]) + rng.normal(0, 0.1, rows)).astype(np.float32)
    columns = np.column_stack([users, levels + items]).ravel()
    onehot = sp.csr_matrix(
        (np.ones(2 * rows, np.float32), columns, np.arange(0, 2 * rows + 1, 2)), shape=(rows, 2 * levels)
    )
    (directory / "sparse").mkdir()
    for index, part in enumerate(np.array_split(np.arange(rows), FILES)):
        write_sparse(str(directory / "sparse" / f"part{index}.pbr"), onehot[part], labels=y[part])
    unlabelled = "text/csv;label_size=0"
    return [
        ("pca", directory / "dense", unlabelled, [f"feature_dim={d}", "num_components=5", "mini_batch_size=5000"], 1),
        ("kmeans", directory / "dense", unlabelled, [f"feature_dim={d}", "k=10", "epochs=3"], 3),
        (
            "linear-learner",
            directory / "labelled",
            "text/csv",
            # 32 models (num_models auto); patience 3 cannot stop 3 passes early.
            [f"feature_dim={d}", "predictor_type=regressor", "epochs=3", "early_stopping_patience=3"],
            3,
        ),
        (
            "factorization-machines",
            directory / "sparse",
            "application/x-recordio-protobuf",
            [f"feature_dim={2 * levels}", "num_factors=8", "predictor_type=regressor", "epochs=3"],
            3,
        ),
        ("xgboost", directory / "labelled", "text/csv", ["num_round=20", "objective=reg:squarederror"], 20),
    ]


def run_job(algorithm: str, data: Path, content_type: str, hyperparameters: list[str], hosts: int, output: Path):
    command = [sys.executable, "-m", "smalgo.containers", "train", "--algorithm", algorithm, "--train", str(data)]
    command += ["--content-type", content_type, "--output", str(output), "--hosts", str(hosts)]
    command += ["--distribution", "train=ShardedByS3Key", "--hyperparameters", *hyperparameters]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{algorithm} on {hosts} host(s) failed:\n{result.stderr[-3000:]}")
    found = EXCHANGES.search(result.stderr)
    exchanges = (int(found.group(1)), float(found.group(2)), float(found.group(3))) if found else (0, 0.0, 0.0)
    return elapsed, exchanges


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 rows a job")
    args = parser.parse_args()
    rows = 20_000 if args.quick else 200_000
    with tempfile.TemporaryDirectory(prefix="smalgo-several-hosts-") as scratch:
        directory = Path(scratch)
        print(f"{rows:,} rows a job, {FILES} files, ShardedByS3Key")
        print(
            f"{'algorithm':24} {'hosts':>5} {'wall s':>8} {'passes':>6} {'all-reduces':>11} "
            f"{'MB':>9} {'MB/pass':>9} {'s':>7} {'s/pass':>7}"
        )
        for algorithm, data, content_type, hyperparameters, passes in jobs(rows, directory):
            for hosts in (1, 2):
                output = directory / f"{algorithm}-{hosts}"
                elapsed, (count, megabytes, seconds) = run_job(
                    algorithm, data, content_type, hyperparameters, hosts, output
                )
                print(
                    f"{algorithm:24} {hosts:>5} {elapsed:>8.2f} {passes:>6} {count:>11} {megabytes:>9.4g} "
                    f"{megabytes / passes:>9.4g} {seconds:>7.3f} {seconds / passes:>7.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
