"""Training throughput through the real job path: each form of the data (RecordIO-protobuf, CSV)
is a job laid out by `local_job.lay_out_job` (File mode, the channel file on disk) and trained by
`job.run_training`, exactly as `smalgo train --train FILE --output DIR` does.

The jobs run in a child process (`python -m smalgo.containers.benchmark.training SPEC RESULT`),
one per algorithm, started after the benchmark restricted its CPUs: every CPU count the child's
libraries read at import (numba's threads, RecordIO's and the CSV decoder's threads, BLAS,
OpenMP) is then the restricted one. Its environment is the benchmark's (run.child_environment:
the image's numba target already settled, as the smalgo command settles it).

Each form first trains a short job of the same data, untimed (numba's cached kernels are loaded
then, as on an instance's first job); the timed job is run_training itself, from reading the
configuration to the model committed in model/, run again until the runs add up to
`min_seconds` (at most MAX_RUNS runs: a fast algorithm's job on the default data takes a tenth of
a second, too short to time alone). Records/s is the rows of one pass over the data times the
runs, per second of the runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from smalgo.algorithms.contract import Algorithm

from ..local_job import lay_out_job
from . import data

# The sample job's settings are the benchmark's, but for these, which would make it a toy: the
# algorithm's own mini-batch size (the sample's is small, to exercise several batches on little
# data), and one pass, so that records/s means records read and learnt from per second.
SAMPLE_ONLY = ("mini_batch_size",)
MAX_RUNS = 30
PASSES = {"epochs": "1"}


def benchmark_hyperparameters(algorithm: Algorithm, features: int) -> dict[str, str]:
    """The hyperparameters every benchmark job of `algorithm` trains with (written in the result)."""
    values = algorithm.sample_job.hyperparameters_for(algorithm, features)
    known = {p.name: p for p in algorithm.hyperparameters.parameters}
    for name in SAMPLE_ONLY:
        if name in values and known[name].default is not None:
            del values[name]
    for name, value in PASSES.items():
        if name in known:
            values[name] = value
    return values


def train_forms(
    algorithm: Algorithm,
    dataset: data.DataSet,
    workdir: Path,
    *,
    environ: dict[str, str],
    min_seconds: float,
    timeout: float = 1800,
) -> list[dict]:
    """Lay out and train one job per form the algorithm reads; a result per form (a form it does
    not read is listed with the reason). Raises RuntimeError with the job's log when a job fails."""
    hyperparameters = benchmark_hyperparameters(algorithm, dataset.features)
    labelled = algorithm.sample_job.labelled
    jobs: list[dict[str, str]] = []
    results: list[dict] = []
    for form in data.FORMS:
        content_type = data.content_type(algorithm, form)
        if content_type is None:
            results.append({"form": form, "skipped": f"{algorithm.name} does not train on {form.upper()}"})
            continue
        files = {}
        for part, rows in (("warmup", data.WARMUP_ROWS), ("timed", dataset.rows)):
            folder = workdir / f"{algorithm.name}-{form}-{part}-data"
            folder.mkdir(parents=True, exist_ok=True)
            files[part] = data.write_channel_file(dataset.head(rows), folder / f"train.{form}", form, labelled=labelled)
        warmup, timed = (
            lay_out_job(
                workdir / f"{algorithm.name}-{form}-{part}-job",
                hyperparameters=hyperparameters,
                channels={"train": files[part]},
                content_type=content_type,
            ).base
            for part in ("warmup", "timed")
        )
        jobs.append({"form": form, "content_type": content_type, "warmup": str(warmup), "job": str(timed)})
        results.append({"form": form, "content_type": content_type, "bytes": files["timed"].stat().st_size})
    if not jobs:
        return results
    spec, answer, log = (workdir / f"{algorithm.name}-training-{name}" for name in ("spec.json", "result.json", "log"))
    spec.write_text(json.dumps({"algorithm": algorithm.name, "jobs": jobs, "min_seconds": min_seconds}))
    with open(log, "wb") as log_file:
        child = subprocess.run(
            [sys.executable, "-m", "smalgo.containers.benchmark.training", str(spec), str(answer)],
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    if child.returncode != 0 or not answer.exists():
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{algorithm.name}: a benchmark training job failed (exit {child.returncode}):\n{tail}")
    timings = {item["form"]: item for item in json.loads(answer.read_text())}
    for result in results:
        timing = timings.get(result["form"])
        if timing is None:
            continue
        result.update(
            records=dataset.rows,
            runs=timing["runs"],
            seconds=timing["seconds"],
            records_per_s=dataset.rows * timing["runs"] / timing["seconds"],
            model_dir=str(Path(timing["job"]) / "model"),
        )
    return results


def _run_jobs(spec_path: Path, result_path: Path) -> int:
    """In the child: each form's warm-up job, then its timed job, through run_training."""
    from ..job import run_training
    from ..paths import JobPaths

    spec = json.loads(spec_path.read_text())
    timings = []
    for job in spec["jobs"]:
        if run_training(JobPaths(Path(job["warmup"])), spec["algorithm"]) != 0:
            print(f"the warm-up job {job['warmup']} failed", file=sys.stderr)
            return 1
        seconds, runs = 0.0, 0
        while runs < MAX_RUNS and (runs == 0 or seconds < spec["min_seconds"]):
            started = time.perf_counter()
            code = run_training(JobPaths(Path(job["job"])), spec["algorithm"])
            seconds += time.perf_counter() - started
            runs += 1
            if code != 0:
                print(f"the job {job['job']} failed (exit {code})", file=sys.stderr)
                return code
        timings.append({"form": job["form"], "job": job["job"], "seconds": seconds, "runs": runs})
    result_path.write_text(json.dumps(timings))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m smalgo.containers.benchmark.training SPEC.json RESULT.json", file=sys.stderr)
        return 2
    return _run_jobs(Path(args[0]), Path(args[1]))


if __name__ == "__main__":
    sys.exit(main())
