"""CSV decoding throughput: smalgo's numba decoder vs numpy.loadtxt, on the same file, same run.

    .venv/bin/python benchmarks/csv/run.py            # 100 MB file (a minute or two)
    .venv/bin/python benchmarks/csv/run.py --quick    # 5 MB, smoke test

The file is generated in a temporary directory: a label column (integers 0-9, as a SageMaker
training CSV has first) and feature columns written the ways real CSVs write floats: shortest
float32 round-trip ('%.9g'), full float64 repr as pandas writes it ('%.17g'), scientific
('%.6e', like the SDK's transform_input.csv), fixed point ('%.4f') and plain integers, about
one in four negative. Each decoder reads the whole file into a float32 matrix; we time the wall
clock of each of 3 repeats (after one untimed warm-up of ours, so numba's compile/cache load is
not counted), report the medians in MB/s and the ratio, and check that both matrices are
bit-identical.

smalgo's decoder is timed as the training job uses it: streaming the file in 8 MB chunks into
mini-batches (`iter_csv_batches`, batch 5000 rows), with the batches concatenated at the end so
both sides produce one matrix.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from smalgo.algorithms.formats.csv import iter_csv_batches
from smalgo.containers.benchmark import peers

FORMATS = ("%.9g", "%.17g", "%.6e", "%.4f", "%d")
REPEATS = 3
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def generate(path: str, target_bytes: int, n_features: int = 40, seed: int = 0) -> tuple[int, int]:
    """Write a numeric CSV of about `target_bytes`; returns (rows, columns)."""
    rng = np.random.default_rng(seed)
    formats = ["%d"] + [FORMATS[j % len(FORMATS)] for j in range(n_features)]
    rows = 0
    block_rows = 2_000  # about 1 MB of text
    with open(path, "w") as f:
        while f.tell() < target_bytes:
            block = rng.standard_normal((block_rows, n_features + 1)) * rng.choice([1e-3, 1.0, 1e3], n_features + 1)
            block[:, 0] = rng.integers(0, 10, len(block))
            integer_columns = [j + 1 for j in range(n_features) if formats[j + 1] == "%d"]
            block[:, integer_columns] = np.round(block[:, integer_columns] * 100)
            # float32 data written at float32 precision, as a float32 pipeline would write it.
            float32_columns = [j + 1 for j in range(n_features) if formats[j + 1] == "%.9g"]
            block[:, float32_columns] = block[:, float32_columns].astype(np.float32)
            np.savetxt(f, block, fmt=formats, delimiter=",")
            rows += len(block)
    return rows, n_features + 1


def smalgo_decode(path: str) -> np.ndarray:
    blocks = [X for X, _ in iter_csv_batches(path, 5000, label_size=0)]
    return np.concatenate(blocks)


def loadtxt_decode(path: str) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", dtype=np.float32)


def timed(fn, path: str) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn(path)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 MB instead of 100 MB")
    parser.add_argument("--megabytes", type=float, help="file size in MB (overrides --quick)")
    args = parser.parse_args(argv)
    megabytes = args.megabytes or (5 if args.quick else 100)

    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="smalgo-csv-bench-") as tmp:
        path = os.path.join(tmp, "data.csv")
        start = time.perf_counter()
        rows, columns = generate(path, int(megabytes * 1e6))
        size_mb = os.path.getsize(path) / 1e6
        print(
            f"generated {path}: {size_mb:.1f} MB, {rows} rows x {columns} columns ({time.perf_counter() - start:.1f} s)"
        )
        smalgo_decode(path)  # warm-up: numba compiles or loads its cache once per process

        times: dict[str, list[float]] = {"smalgo": [], "loadtxt": []}
        results: dict[str, np.ndarray] = {}
        for repeat in range(REPEATS):
            # Alternate who goes first so neither always gets the warmer page cache.
            order = (("smalgo", smalgo_decode), ("loadtxt", loadtxt_decode))
            for name, fn in order if repeat % 2 == 0 else order[::-1]:
                seconds, results[name] = timed(fn, path)
                times[name].append(seconds)
                print(f"  repeat {repeat + 1}: {name:8s} {seconds:7.3f} s")

        ours, theirs = results["smalgo"], results["loadtxt"]
        identical = ours.shape == theirs.shape and np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))
        print(f"bit-identical to numpy.loadtxt: {'yes' if identical else 'NO'} ({ours.size} values)")
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name in ("smalgo", "loadtxt"):
            print(f"{name:8s} median {medians[name]:7.3f} s  {size_mb / medians[name]:8.1f} MB/s")
        ratio = medians["loadtxt"] / medians["smalgo"]
        print(f"smalgo is {ratio:.1f}x numpy.loadtxt (target: at least 5x)")
        peers.record(
            "csv",
            [
                peers.Comparison(
                    f"{size_mb:.0f} MB, {rows:,} x {columns}",
                    "decoding throughput",
                    "MB/s",
                    size_mb / medians["smalgo"],
                    "numpy.loadtxt",
                    size_mb / medians["loadtxt"],
                    higher_is_better=True,
                )
            ],
            results_dir=RESULTS_DIR,
        )
        return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
