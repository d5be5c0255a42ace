"""`python -m smalgo.containers.warm_cache`: compile every numba kernel that a training job or the
inference server can reach, into numba's on-disk cache. The images run it at build time, so that
neither `train` nor the first request of `serve` pays for compiling (a few seconds per input form,
about 20 s for everything on 2 cores).

It runs real work, not a list of signatures, so that the cache holds exactly the types the real
code passes (numba compiles a kernel again for a read-only buffer, a memory map or a stream's
buffer): for every algorithm, training jobs in File and Pipe mode over CSV, dense RecordIO (with
labels, and with records of unequal sizes) and sparse RecordIO, larger than one read chunk, with
a test channel, under each set of hyperparameters that picks other kernels; jobs and requests
with malformed data, whose error reports use kernels of their own; the server's model loading
and warm-up; predictions on batches large enough for the multi-threaded and BLAS paths. Last,
it checks that every cached kernel in smalgo was compiled, and fails naming any that was not: a
kernel the warm-up never reached would compile in front of a user.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Only this: everything that imports numba is imported inside the functions, once main() has
# chosen numba's CPU target (numba reads it when first imported).
from .entrypoint import choose_cpu_target

if TYPE_CHECKING:
    from smalgo.algorithms.contract import Algorithm

FEATURES = 20
# Enough training rows that the CSV and RecordIO files span more than one 8 MiB read chunk and
# a CSV chunk is split between threads; rows x centers x features of a prediction must pass
# row_threads.MIN_THREADED_WORK (2**23) for the threaded and BLAS k-means paths.
TRAIN_ROWS, TEST_ROWS, PREDICT_ROWS = 100_000, 500, 45_000


def warm_up(algorithms: list[str], workdir: Path) -> None:
    from smalgo.algorithms.registry import get_algorithm

    for name in algorithms:
        algorithm = get_algorithm(name)
        started = time.perf_counter()
        _warm_up_algorithm(algorithm, workdir / algorithm.name)
        print(f"warm_cache: {algorithm.name} warmed in {time.perf_counter() - started:.1f} s", flush=True)


def _warm_up_algorithm(algorithm: Algorithm, workdir: Path) -> None:
    from smalgo.algorithms.formats.content_types import LIBSVM, parse_media_type

    X, inputs, bad_csv = _write_inputs(workdir / "data", labelled=algorithm.sample_job.labelled)
    if LIBSVM in algorithm.content_types:
        inputs["libsvm"] = _write_libsvm(workdir / "data", inputs["csv"])
    # Only the content types the algorithm reads (factorization machines: RecordIO-protobuf alone).
    inputs = {
        name: spec for name, spec in inputs.items() if parse_media_type(spec[0]).media_type in algorithm.content_types
    }
    model_dir = _run_jobs(algorithm, workdir, inputs=inputs, bad_csv=bad_csv)
    _serve(algorithm, model_dir, X)


def _write_inputs(data_dir: Path, *, labelled: bool):
    """Sample rows, and the training inputs written from them: {name: (content type, train file,
    test file)}, plus a malformed CSV file. CSV files carry the label first when `labelled`."""
    import numpy as np
    import scipy.sparse as sp

    from smalgo.recordio import write_dense, write_sparse

    rng = np.random.default_rng(0)
    n_rows = TRAIN_ROWS + TEST_ROWS
    centers = rng.uniform(-10, 10, (10, FEATURES))
    X = (centers[rng.integers(0, 10, n_rows)] + rng.normal(0, 1, (n_rows, FEATURES))).astype(np.float32)
    X[X < -5] = 0  # zeros, so that the sparse files hold really sparse rows
    labels = rng.integers(0, 2, n_rows).astype(np.float32)

    data_dir.mkdir(parents=True)
    for part, rows in (("train", slice(0, TRAIN_ROWS)), ("test", slice(TRAIN_ROWS, n_rows))):
        csv_rows = np.column_stack([labels[rows], X[rows]]) if labelled else X[rows]
        np.savetxt(data_dir / f"{part}.csv", csv_rows, delimiter=",", fmt="%.6g")
        write_dense(str(data_dir / f"{part}.pbr"), X[rows], labels[rows])
        part_labels = labels[rows] if labelled else None
        write_sparse(str(data_dir / f"{part}-sparse.pbr"), sp.csr_matrix(X[rows]), part_labels)
        unequal = _records_of_unequal_sizes(
            X[rows][:TEST_ROWS], None if part_labels is None else part_labels[:TEST_ROWS]
        )
        (data_dir / f"{part}-unequal.pbr").write_bytes(unequal)
    inputs = {
        input_name: (content_type, data_dir / f"train{suffix}", data_dir / f"test{suffix}")
        for input_name, content_type, suffix in (
            ("csv", "text/csv" if labelled else "text/csv;label_size=0", ".csv"),
            ("recordio", "application/x-recordio-protobuf", ".pbr"),
            ("recordio-sparse", "application/x-recordio-protobuf", "-sparse.pbr"),
            ("recordio-unequal", "application/x-recordio-protobuf", "-unequal.pbr"),
        )
    }
    bad_csv = data_dir / "bad.csv"
    bad_csv.write_bytes(b"1,2,3\n" * 10 + b"4,five,6\n")
    return X, inputs, bad_csv


def _write_libsvm(data_dir: Path, csv_input: tuple) -> tuple:
    """The CSV input's rows as LIBSVM files (label first, zero-based indices, zeros left out)."""
    import numpy as np

    _, train_csv, test_csv = csv_input
    paths = []
    for csv_path in (train_csv, test_csv):
        rows = np.loadtxt(csv_path, delimiter=",", dtype=np.float32, ndmin=2)
        lines = (f"{row[0]:g} " + " ".join(f"{k}:{v:g}" for k, v in enumerate(row[1:]) if v) + "\n" for row in rows)
        path = csv_path.with_suffix(".libsvm")
        path.write_text("".join(lines))
        paths.append(path)
    return ("text/libsvm", *paths)


def _run_jobs(algorithm: Algorithm, workdir: Path, *, inputs: dict, bad_csv: Path) -> Path:
    """Training jobs of the sample job and each of its variants, on every input and in both
    input modes; returns a model."""
    from smalgo.algorithms.formats.content_types import CSV

    from .job import run_training
    from .local_job import lay_out_job
    from .pipe_feeder import PipeFeeder

    model_dir = None
    sample = algorithm.sample_job
    name = algorithm.name
    variants = [None, *sample.variants]
    for number, variant in enumerate(variants):
        hyperparameters = sample.hyperparameters_for(algorithm, FEATURES, variant)
        for input_name, (content_type, train_file, test_file) in inputs.items():
            job = lay_out_job(
                workdir / f"job-{number}-{input_name}",
                hyperparameters=hyperparameters,
                channels={
                    "train": train_file,
                    **{channel: test_file for channel in ("test", "validation") if channel in algorithm.channels},
                },
                content_type=content_type,
            )
            _check(_quietly(run_training, job, name), job)
            model_dir = model_dir or job.model_dir
            if number == 0:
                pipe_job = lay_out_job(
                    workdir / f"pipe-{input_name}",
                    hyperparameters=hyperparameters,
                    channels={},
                    content_type=content_type,
                    pipe_channels=("train",),
                )
                with PipeFeeder(pipe_job.data_dir, "train", train_file.read_bytes()):
                    _check(_quietly(run_training, pipe_job, name), pipe_job)

    assert model_dir is not None  # the sample job itself ran first
    if CSV not in algorithm.content_types:
        return model_dir
    # A job with a malformed CSV file, in both modes: its error report must fail the job, fast.
    bad_hyperparameters = sample.hyperparameters_for(algorithm, 3)
    job = lay_out_job(
        workdir / "bad-file",
        hyperparameters=bad_hyperparameters,
        channels={"train": bad_csv},
        content_type="text/csv;label_size=0",
    )
    _check(_quietly(run_training, job, name), job, expect_failure="line 11")
    job = lay_out_job(
        workdir / "bad-pipe",
        hyperparameters=bad_hyperparameters,
        channels={},
        content_type="text/csv;label_size=0",
        pipe_channels=("train",),
    )
    with PipeFeeder(job.data_dir, "train", bad_csv.read_bytes()):
        _check(_quietly(run_training, job, name), job, expect_failure="line 11")
    return model_dir


def _serve(algorithm: Algorithm, model_dir: Path, X) -> None:
    """The server's path: loading (with its per-format warm-up), large predictions, malformed
    requests, RecordIO records of unequal sizes and sparse records whose keys are out of order
    (checked for repeated keys by a kernel of their own), and the library's CSV decoder."""
    import scipy.sparse as sp

    from smalgo.algorithms.batch import Batch
    from smalgo.algorithms.errors import UserError
    from smalgo.algorithms.formats.csv import decode_csv
    from smalgo.recordio import RecordIOError
    from smalgo.serve.decoding import decode_request
    from smalgo.serve.errors import RequestError
    from smalgo.serve.media import CSV, RECORDIO_PROTOBUF
    from smalgo.serve.model import load_model

    model = load_model(model_dir, algorithm.name)
    for rows in (X[:1], X[:PREDICT_ROWS]):  # one row, and enough rows for the threaded and BLAS paths
        model.predict(Batch(rows))
        model.predict(Batch(sp.csr_matrix(rows)))
    csv_line = ",".join(["1"] * FEATURES)
    for media_type, body in (
        (CSV, f"{csv_line}\n{csv_line},x\n".encode()),
        (RECORDIO_PROTOBUF, b"\x0a\x23\xd7\xce" + bytes(12)),
        (RECORDIO_PROTOBUF, _sparse_record([2, 0, 2])),
    ):
        try:
            decode_request(body, media_type, FEATURES)
        except (RequestError, UserError, RecordIOError):
            pass
        else:
            raise SystemExit(f"warm_cache: a malformed {media_type} request was accepted")
    model.predict(decode_request(_records_of_unequal_sizes(X[:3]), RECORDIO_PROTOBUF, FEATURES))
    model.predict(decode_request(_sparse_record([3, 1]), RECORDIO_PROTOBUF, FEATURES))
    # For files whose width the decoder finds on the first line (no feature_dim given).
    decode_csv(f"{csv_line}\n{csv_line}\n".encode())


def _sparse_record(keys: list[int]) -> bytes:
    """One sparse record of FEATURES columns with `keys` in the given order (1.0 at each)."""
    from smalgo.recordio import record_pb2
    from smalgo.recordio.framing import frame

    record = record_pb2.Record()
    tensor = record.features["values"].float32_tensor
    tensor.keys.extend(keys)
    tensor.values.extend([1.0] * len(keys))
    tensor.shape.append(FEATURES)
    return frame(record.SerializeToString())


def _records_of_unequal_sizes(X, labels=None) -> bytes:
    """Dense records whose `uid` fields differ in length, as some writers (not the SDK's) write
    them: their values lie at irregular offsets, which the readers copy row by row. With
    `labels`, each record carries its label."""
    from smalgo.recordio import record_pb2
    from smalgo.recordio.framing import frame

    frames = []
    for i, row in enumerate(X):
        record = record_pb2.Record(uid="r" * (1 + i % 7))
        record.features["values"].float32_tensor.values.extend(row.tolist())
        if labels is not None:
            record.label["values"].float32_tensor.values.append(float(labels[i]))
        frames.append(frame(record.SerializeToString()))
    return b"".join(frames)


def _quietly(run_training, job, name: str) -> int:
    """Run a warm-up job with its log kept out of the build's output (a failure shows its
    reason through _check)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return run_training(job, name)


def _check(exit_code: int, job, expect_failure: str | None = None) -> None:
    failure = job.failure_file.read_text() if job.failure_file.exists() else ""
    if expect_failure is None and exit_code != 0:
        raise SystemExit(f"warm_cache: the warm-up job under {job.base} failed (exit code {exit_code}):\n{failure}")
    if expect_failure is not None and (exit_code == 0 or expect_failure not in failure):
        raise SystemExit(
            f"warm_cache: the job under {job.base} should have failed naming {expect_failure!r}; "
            f"exit code {exit_code}, failure file: {failure!r}"
        )


def uncompiled_kernels(package: str = "smalgo") -> list[str]:
    """Cached numba kernels (cache=True, not inlined) in the loaded modules of `package` that
    neither this process compiled or loaded nor the on-disk cache holds for the current CPU
    target: what the warm-up did not reach. (A kernel called only from other kernels gets no
    signature of its own when its callers come from the cache; its own cache entry shows it
    was compiled.)"""
    from numba.core.registry import CPUDispatcher

    missing = []
    for module_name, module in sorted(sys.modules.items()):
        if module is None or not (module_name == package or module_name.startswith(package + ".")):
            continue
        for attribute, value in vars(module).items():
            if not isinstance(value, CPUDispatcher) or value.__module__ != module_name:
                continue
            inlined = value.targetoptions.get("inline", "never") == "always"
            cached = type(value._cache).__name__ != "NullCache"
            if cached and not inlined and not value.signatures and not _in_disk_cache(value):
                missing.append(f"{module_name}.{attribute}")
    return missing


def _in_disk_cache(dispatcher) -> bool:
    """Whether numba's on-disk index for `dispatcher` has an entry for the current CPU target.
    (numba's cache internals; if they change shape, only in-process compilation counts.)"""
    try:
        target = dispatcher.targetctx.codegen().magic_tuple()
        index = dispatcher._cache._cache_file._load_index()
        return any(key[1] == target for key in index)
    except (AttributeError, TypeError, IndexError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algorithms", nargs="*", help="algorithms to warm up (default: all)")
    args = parser.parse_args(argv)
    target = choose_cpu_target(os.environ) if "numba" not in sys.modules else None

    import numba

    from smalgo.algorithms.registry import ALGORITHMS

    cpu = numba.core.config.CPU_NAME or "the host CPU (not portable to other CPU models)"
    print(
        f"warm_cache: compiling for {cpu}{' (chosen by SMALGO_NUMBA_CPU)' if target else ''}, "
        f"numba {numba.__version__}",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smalgo-warm-cache-") as workdir:
        warm_up(args.algorithms or sorted(ALGORITHMS), Path(workdir))
    missing = uncompiled_kernels()
    if missing:
        print(
            "warm_cache: these cached kernels were never compiled, so they would compile on first use:\n  "
            + "\n  ".join(missing),
            file=sys.stderr,
        )
        return 1
    print(f"warm_cache: done in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
