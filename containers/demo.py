"""`python -m smalgo.containers.demo` (`make demo`): train every algorithm on a generated sample,
through the same local `smalgo train` path a user runs, and show what came out.

The sample: 20,000 rows x 20 features drawn around 8 Gaussian centers, with a label, written as
CSV (with and without the label column) and as RecordIO-protobuf in a temporary directory. Each
algorithm trains its sample job (contract.SampleJob) on the form it names.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.contract import Algorithm
from smalgo.algorithms.formats.content_types import parse_content_type
from smalgo.algorithms.registry import ALGORITHMS
from smalgo.recordio import write_dense

from . import cli

ROWS, FEATURES, CLUSTERS = 20_000, 20, 8
METRIC_MARKERS = ("#quality_metric", "#progress_metric", "#throughput_metric")


def make_sample(directory: Path, seed: int = 7) -> tuple[dict[str, Path], np.ndarray]:
    """Write the sample as CSV (with and without its label column) and RecordIO; returns the
    paths by form ("csv", "csv-labelled", "recordio") and the rows."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-20, 20, (CLUSTERS, FEATURES))
    cluster = rng.integers(0, CLUSTERS, ROWS)
    X = (centers[cluster] + rng.normal(0, 1.5, (ROWS, FEATURES))).astype(np.float32)
    labels = (cluster % 2).astype(np.float32)
    paths = {
        "csv": directory / "sample.csv",
        "csv-labelled": directory / "sample-labelled.csv",
        "recordio": directory / "sample.pbr",
    }
    np.savetxt(paths["csv"], X, delimiter=",", fmt="%.6g")
    np.savetxt(paths["csv-labelled"], np.column_stack([labels, X]), delimiter=",", fmt="%.6g")
    write_dense(str(paths["recordio"]), X, labels)
    return paths, X


def sample_arguments(algorithm: Algorithm, paths: dict[str, Path]) -> list[str]:
    """`smalgo train` options for the algorithm's sample job on the demo's sample."""
    sample = algorithm.sample_job
    content_type = parse_content_type(sample.content_type, algorithm.content_types, algorithm.default_content_type)
    if content_type.is_csv:
        path = paths["csv-labelled" if content_type.label_size else "csv"]
    else:
        path = paths["recordio"]
    hyperparameters = sample.hyperparameters_for(algorithm, FEATURES)
    return [
        "--train",
        str(path),
        "--content-type",
        sample.content_type,
        "--hyperparameters",
        *(f"{name}={value}" for name, value in hyperparameters.items()),
    ]


def run_job(arguments: list[str]) -> int:
    """Run `smalgo train ARGUMENTS` in this process, show the command and its metric lines."""
    print("\n$ smalgo " + " ".join(shlex.quote(a) for a in arguments), flush=True)
    log, printed = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    # The job logs to stderr: keep the lines worth seeing (all of them if it failed).
    with contextlib.redirect_stderr(log), contextlib.redirect_stdout(printed):
        exit_code = cli.main(arguments)
    for line in log.getvalue().splitlines():
        if any(marker in line for marker in METRIC_MARKERS) or exit_code:
            print("  " + line.split("] ", 1)[-1])
    for line in printed.getvalue().splitlines():
        print("  " + line)
    print(f"  (exit code {exit_code}, {time.perf_counter() - started:.1f} s)")
    return exit_code


def show_model(algorithm: Algorithm, model_dir: Path, rows: np.ndarray) -> None:
    files = ", ".join(f"{p.name} ({p.stat().st_size} bytes)" for p in sorted(model_dir.iterdir()))
    print(f"  model files in {model_dir}: {files}")
    model = algorithm.load(model_dir)
    outputs = model.predict(Batch(rows))
    print(f"  prediction for the first {len(rows)} rows (model.predict on a Batch):")
    for i in range(len(rows)):
        shown = [
            f"{name} = {np.array2string(np.asarray(values[i]), precision=3, suppress_small=True)}"
            for name, values in outputs.items()
        ]
        print(f"    row {i}: " + ", ".join(shown))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="write the sample and the jobs here instead of a temp dir")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        directory = (
            Path(args.keep)
            if args.keep
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smalgo-demo-")))
        )
        directory.mkdir(parents=True, exist_ok=True)
        paths, X = make_sample(directory)
        print(
            f"Sample: {ROWS} rows x {FEATURES} features around {CLUSTERS} centers, written to\n"
            f"  {paths['csv']} (CSV, no label column), {paths['csv-labelled']} (CSV, label first) and\n"
            f"  {paths['recordio']} (RecordIO-protobuf, with labels)"
        )
        for algorithm in ALGORITHMS.values():
            output = directory / f"{algorithm.name}-job"
            options = sample_arguments(algorithm, paths)
            if run_job(["train", "--algorithm", algorithm.name, *options, "--output", str(output)]) != 0:
                return 1
            show_model(algorithm, output / "model", X[:3])
        if args.keep:
            print(f"\nEverything is kept under {directory}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
