"""XGBoost: smalgo's training job against raw xgboost.train, and smalgo's CSV and LIBSVM loading
against the way AWS's XGBoost image loads the same files. One run, same machine, same data.

    .venv/bin/python benchmarks/xgboost/run.py            # 500,000 x 28, 100 rounds (a few minutes)
    .venv/bin/python benchmarks/xgboost/run.py --quick    # 50,000 x 28, 20 rounds (smoke test)

The data is HIGGS-like, made here: 28 float features (21 "low-level" standard normals and 7
"high-level" products and sums of them, as HIGGS derives its last 7 columns), a 0/1 label from a
noisy non-linear rule, written as CSV (label first, '%.9g') and as LIBSVM (zeros left out).

Figures, each the median of --repeats runs, the contenders taking turns within each run so that a
shared machine's changing load weighs on them alike (numba's compilation is done by an untimed
warm-up):

  decode      smalgo's decoders, file -> float32 arrays (CSV: the streaming decoder the job uses;
              LIBSVM: decode_libsvm), then the DMatrix the job builds from them;
  aws         AWS's image's way (its data_utils): xgboost.DMatrix("<file>?format=csv&label_column=0")
              and DMatrix("<file>?format=libsvm"), XGBoost's own text readers;
  raw         xgboost.train on the arrays already in memory: DMatrix(X, y) then 100 rounds of hist
              (and the same with the train set evaluated after every round, as AWS's image and
              the job do for their evaluation lines; and that on a QuantileDMatrix, the matrix
              the job builds for hist);
  job         smalgo's training job end to end, in this process: read the CSV channel, decode it,
              train, write xgboost-model (run_training on a job laid out in a temporary folder).

and the ratios the issue asks for: job / (raw + CSV decode) (at most 1.1), aws / decode for CSV and
LIBSVM (at least 3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import xgboost as xgb

from smalgo.algorithms.formats.csv import iter_csv_blocks
from smalgo.algorithms.formats.libsvm import decode_libsvm
from smalgo.algorithms.runtime.logs import configure_logging
from smalgo.containers.benchmark import peers
from smalgo.containers.job import run_training
from smalgo.containers.local_job import lay_out_job

FEATURES = 28
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def make_data(n_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    low = rng.standard_normal((n_rows, 21))
    high = np.column_stack(
        [
            low[:, 0] * low[:, 1],
            low[:, 2] * low[:, 3] + low[:, 4],
            np.abs(low[:, 5] - low[:, 6]),
            low[:, 7] ** 2 + low[:, 8] ** 2,
            np.sin(low[:, 9]) * low[:, 10],
            low[:, 11] * low[:, 12] * low[:, 13],
            np.maximum(low[:, 14], low[:, 15]),
        ]
    )
    X = np.column_stack([low, high]).astype(np.float32)
    score = high[:, 0] + 0.5 * high[:, 1] - 0.3 * high[:, 3] + high[:, 5] + rng.normal(0, 1, n_rows)
    return X, (score > np.median(score)).astype(np.float32)


def write_files(directory: Path, X: np.ndarray, y: np.ndarray) -> tuple[Path, Path]:
    csv_path, libsvm_path = directory / "train.csv", directory / "train.libsvm"
    np.savetxt(csv_path, np.column_stack([y, X]), delimiter=",", fmt="%.9g")
    with libsvm_path.open("w") as f:
        for row, label in zip(X, y, strict=True):
            f.write(f"{label:g} " + " ".join(f"{k}:{v:.9g}" for k, v in enumerate(row) if v) + "\n")
    return csv_path, libsvm_path


def interleaved(functions: dict, repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each function over `repeats` rounds, the functions taking turns within
    a round, so that a machine whose load changes (a shared one) weighs on each alike; and each
    one's last result."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            results[name] = function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}, results


def decode_csv(path: Path):
    blocks = list(iter_csv_blocks(path, 1, name=str(path)))
    X = np.concatenate([b[0] for b in blocks])
    y = np.concatenate([b[1] for b in blocks])
    return X, y


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 20 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds = 50_000, 20
    configure_logging()
    warnings.filterwarnings("ignore", message=".*Text file input has been deprecated.*")
    params = {"objective": "binary:logistic", "tree_method": "hist", "eval_metric": "logloss", "max_depth": 6}
    print(
        f"XGBoost {xgb.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"{args.rows:,} rows x {FEATURES} features, {args.rounds} rounds of hist; median of {args.repeats}."
    )
    with tempfile.TemporaryDirectory(prefix="smalgo-xgboost-bench-") as tmp:
        tmp_path = Path(tmp)
        X, y = make_data(args.rows)
        csv_path, libsvm_path = write_files(tmp_path, X, y)
        print(f"files: CSV {csv_path.stat().st_size / 1e6:.1f} MB, LIBSVM {libsvm_path.stat().st_size / 1e6:.1f} MB")
        # Untimed warm-up: numba's kernels compiled or loaded from the cache.
        decode_csv(csv_path)
        decode_libsvm(libsvm_path.read_bytes()[:100_000].rsplit(b"\n", 1)[0])

        def raw_train():
            return xgb.train(params, xgb.DMatrix(X, y), num_boost_round=args.rounds)

        def raw_train_watched():
            # AWS's image (and so the job) evaluates the train set after every round, for its
            # `[i]\ttrain-logloss:...` lines: the same work, for a like-for-like figure.
            matrix = xgb.DMatrix(X, y)
            return xgb.train(params, matrix, num_boost_round=args.rounds, evals=[(matrix, "train")], verbose_eval=False)

        def raw_quantile_watched():
            # The matrix kind the job trains hist on (a QuantileDMatrix): like for like.
            matrix = xgb.QuantileDMatrix(X, y)
            return xgb.train(params, matrix, num_boost_round=args.rounds, evals=[(matrix, "train")], verbose_eval=False)

        def job():
            job_paths = lay_out_job(
                tmp_path / f"job-{time.monotonic_ns()}",
                hyperparameters={"num_round": str(args.rounds), **{k: str(v) for k, v in params.items()}},
                channels={"train": csv_path},
                content_type="text/csv",
            )
            exit_code = run_training(job_paths, "xgboost")
            if exit_code != 0:
                raise SystemExit(job_paths.failure_file.read_text())
            return job_paths

        seconds, results = interleaved(
            {
                "csv_decode": lambda: decode_csv(csv_path),
                "aws_csv": lambda: xgb.DMatrix(f"{csv_path}?format=csv&label_column=0"),
                "svm_decode": lambda: decode_libsvm(libsvm_path.read_bytes(), name=str(libsvm_path)),
                "aws_svm": lambda: xgb.DMatrix(f"{libsvm_path}?format=libsvm"),
            },
            args.repeats,
        )
        Xc, yc = results["csv_decode"]
        Xs, ys, _ = results["svm_decode"]
        matrix_seconds, _ = interleaved(
            {"csv_matrix": lambda: xgb.DMatrix(Xc, yc), "svm_matrix": lambda: xgb.DMatrix(Xs, ys)}, args.repeats
        )
        seconds.update(matrix_seconds)
        assert results["aws_csv"].num_row() == Xc.shape[0] and Xc.shape == (args.rows, FEATURES)
        np.testing.assert_array_equal(Xc, X)  # the file holds X exactly ('%.9g' round-trips float32)
        train_seconds, results = interleaved(
            {
                "raw": raw_train,
                "raw_watched": raw_train_watched,
                "raw_quantile_watched": raw_quantile_watched,
                "job": job,
            },
            args.repeats,
        )
        seconds.update(train_seconds)
        raw_booster, job_paths = results["raw"], results["job"]
        ours_booster = xgb.Booster()
        ours_booster.load_model(bytearray((job_paths.model_dir / "xgboost-model").read_bytes()))
        assert isinstance(raw_booster, xgb.Booster)
        same = ours_booster.get_dump() == raw_booster.get_dump()

    csv_decode, csv_matrix, aws_csv = seconds["csv_decode"], seconds["csv_matrix"], seconds["aws_csv"]
    svm_decode, svm_matrix, aws_svm = seconds["svm_decode"], seconds["svm_matrix"], seconds["aws_svm"]
    raw, ours = seconds["raw"], seconds["job"]
    budget = raw + csv_decode
    rows = [
        ("smalgo CSV decode (file -> arrays)", csv_decode),
        ("  + DMatrix from the arrays", csv_matrix),
        ("AWS's way: DMatrix('...?format=csv')", aws_csv),
        ("smalgo LIBSVM decode (file -> CSR)", svm_decode),
        ("  + DMatrix from the CSR matrix", svm_matrix),
        ("AWS's way: DMatrix('...?format=libsvm')", aws_svm),
        (f"raw xgboost.train, arrays in memory ({args.rounds} rounds)", raw),
        ("  the same, evaluating the train set every round (as AWS)", seconds["raw_watched"]),
        ("  the same on a QuantileDMatrix (the job's matrix for hist)", seconds["raw_quantile_watched"]),
        ("smalgo job end to end (CSV channel)", ours),
    ]
    for name, took in rows:
        print(f"  {name:<58} {took:8.2f} s")
    figures = {
        "job / (raw + CSV decode)": ours / budget,
        "job / (raw evaluating train + CSV decode)": ours / (seconds["raw_watched"] + csv_decode),
        "job / (raw QuantileDMatrix evaluating train + CSV decode)": ours
        / (seconds["raw_quantile_watched"] + csv_decode),
        "AWS CSV / smalgo CSV decode": aws_csv / csv_decode,
        "AWS CSV / smalgo CSV decode + DMatrix": aws_csv / (csv_decode + csv_matrix),
        "AWS LIBSVM / smalgo LIBSVM decode": aws_svm / svm_decode,
        "AWS LIBSVM / smalgo LIBSVM decode + DMatrix": aws_svm / (svm_decode + svm_matrix),
    }
    for name, ratio in figures.items():
        print(f"  {name:<58} {ratio:8.2f}x")
    print(f"  the job's model equals raw xgboost.train's (same trees): {same}")
    print(json.dumps({"seconds": dict(rows), "ratios": figures, "same_trees": same}))
    ok = figures["job / (raw + CSV decode)"] <= 1.1 and figures["AWS CSV / smalgo CSV decode"] >= 3
    ok = ok and figures["AWS LIBSVM / smalgo LIBSVM decode"] >= 3 and same
    print("targets (job <= 1.1x, loading >= 3x, same trees):", "met" if ok else "NOT met")
    case = f"{args.rows:,} x {FEATURES}, {args.rounds} rounds of hist"
    peers.record(
        "xgboost",
        [
            peers.Comparison(
                case,
                "training, the job end to end (CSV file)",
                "s",
                ours,
                "raw xgboost.train on arrays in memory, evaluating train (+ smalgo's CSV decode)",
                seconds["raw_watched"] + csv_decode,
                False,
            ),
            peers.Comparison(
                case, "CSV loading", "s", csv_decode, "DMatrix('...?format=csv') (AWS's image)", aws_csv, False
            ),
            peers.Comparison(
                case, "LIBSVM loading", "s", svm_decode, "DMatrix('...?format=libsvm') (AWS's image)", aws_svm, False
            ),
        ],
        results_dir=RESULTS_DIR,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
