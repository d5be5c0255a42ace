"""`make test-images`: a job of two hosts as two containers of one image (issue 14).

    .venv/bin/python tests/images/check_several_hosts.py --engine podman --tag cpu [ALGORITHM ...]
    # default algorithms: kmeans xgboost

For each algorithm, a small CSV data set of two files is trained twice, as a job of two hosts
whose train channel is ShardedByS3Key (algo-1 reads part0.csv, algo-2 part1.csv), with the
algorithm's sample-job hyperparameters (contract.SampleJob):

1. as two containers of smalgo-<algorithm>:<tag> running `train` at the same time, each with its
   own job directory mounted at /opt/ml (resourceconfig.json: current_host algo-1 or algo-2,
   hosts [algo-1, algo-2]; its own shard copied in), `--network host` and
   `--add-host algo-1:127.0.0.1 --add-host algo-2:127.0.0.2`: each host finds the other by its
   name as on SageMaker (no SMALGO_HOST_ADDRESSES), every address is on loopback, and the
   tracker listens on algo-1's 127.0.0.1 at a port free now (SMALGO_TRACKER_PORT), so that runs
   side by side do not collide. Both must exit 0 within JOB_LIMIT_SECONDS (else both are removed
   and their logs printed), each write output/success and no output/failure, algo-1 alone write
   the model (algo-2's model/ stays empty), both log the same job-wide metric lines, and both
   name the tracker as algo-1 (127.0.0.1:<port>);
2. as `smalgo train --hosts 2` processes of this checkout (.venv), on the same files: the
   containers' model must be that model (XGBoost: the same predictions to 1e-5 on the union;
   k-means: the same centres to 1e-5) and their final metric its final metric.

Podman 4.3 accepts `--add-host` with `--network host` (it writes the names into the container's
/etc/hosts), so nothing stands in for it here. It prints the wall time of each job and exits 1
on the first failed check, with both containers' logs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from check_images import CheckFailed, Engine, check  # noqa: E402

from smalgo.algorithms.formats.content_types import CSV  # noqa: E402
from smalgo.algorithms.registry import get_algorithm  # noqa: E402
from smalgo.containers.local_job import SHARDED, free_port, lay_out_hosts_job  # noqa: E402

ALGORITHMS = ("kmeans", "xgboost")
HOSTS = {"algo-1": "127.0.0.1", "algo-2": "127.0.0.2"}
FEATURES, ROWS_PER_HOST = 10, 1000
# Each job takes a few seconds; this bounds one that hangs (the hosts' own start-up and exchange
# timeouts, set below, are shorter, so a host that never joins fails rather than hangs).
JOB_LIMIT_SECONDS = 120
HOSTS_TIMEOUT_SECONDS = 60
TOLERANCE = 1e-5
# A host's metric lines: the platform's (#quality_metric: host=algo-1, train msd <loss>=7.64) or
# XGBoost's evaluation lines ([9]\ttrain-auc:0.95928), after the log line's own prefix.
METRIC_LINE = re.compile(r"(#quality_metric: .*|\[\d+\]\t\S+:\S+)$")


def kmeans_parts(rng: np.random.Generator) -> list[np.ndarray]:
    """Rows around 10 centres, unlabelled."""
    centres = rng.normal(0, 5, (10, FEATURES))
    return [centres[rng.integers(0, 10, ROWS_PER_HOST)] + rng.normal(size=(ROWS_PER_HOST, FEATURES)) for _ in HOSTS]


def xgboost_parts(rng: np.random.Generator) -> list[np.ndarray]:
    """A 0/1 label (first column) of a noisy linear score of the features."""
    weights = rng.normal(size=FEATURES)
    parts = []
    for _ in HOSTS:
        X = rng.normal(size=(ROWS_PER_HOST, FEATURES))
        parts.append(np.column_stack([(X @ weights + 0.5 * rng.normal(size=ROWS_PER_HOST) > 0), X]))
    return parts


DATA: dict[str, Callable[[np.random.Generator], list[np.ndarray]]] = {
    "kmeans": kmeans_parts,
    "xgboost": xgboost_parts,
}


def write_data(directory: Path, algorithm: str) -> np.ndarray:
    """part0.csv and part1.csv (float32 values written exactly); returns their union."""
    directory.mkdir(parents=True)
    parts = [part.astype(np.float32) for part in DATA[algorithm](np.random.default_rng(14))]
    for index, part in enumerate(parts):
        np.savetxt(directory / f"part{index}.csv", part, delimiter=",", fmt="%.9g")
    return np.vstack(parts)


def content_type(algorithm: str) -> str:
    return CSV if get_algorithm(algorithm).sample_job.labelled else f"{CSV};label_size=0"


def hyperparameters(algorithm: str) -> dict[str, str]:
    chosen = get_algorithm(algorithm)
    return chosen.sample_job.hyperparameters_for(chosen, FEATURES)


def container_jobs(directory: Path, algorithm: str, data: Path) -> list[Path]:
    """The two hosts' job directories, laid out as `smalgo train --hosts 2` lays them out, with
    each host's shard copied in (the layout links to the files, which a container cannot see)."""
    jobs = lay_out_hosts_job(
        directory,
        hosts=len(HOSTS),
        hyperparameters=hyperparameters(algorithm),
        channels={"train": data},
        content_type=content_type(algorithm),
        distributions={"train": SHARDED},
    )
    for job in jobs:
        for link in [path for path in job.data_dir.rglob("*") if path.is_symlink()]:
            target = link.resolve()
            link.unlink()
            shutil.copyfile(target, link)
    return [job.base for job in jobs]


def run_containers(engine: Engine, image: str, jobs: list[Path], algorithm: str) -> tuple[list[str], float]:
    """Both hosts' `train` at once; returns their logs (algo-1's first) and the job's wall time."""
    port = free_port(HOSTS["algo-1"])
    names = [f"smalgo-hosts-{algorithm}-{port}-{host}" for host in HOSTS]
    add_hosts = [option for host, address in HOSTS.items() for option in ("--add-host", f"{host}:{address}")]
    logs = [job.parent / f"{job.name}.log" for job in jobs]
    processes = []
    started = time.perf_counter()
    try:
        for name, job, log in zip(names, jobs, logs, strict=True):
            with open(log, "wb") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            engine.command,
                            "run",
                            "--rm",
                            "--name",
                            name,
                            "--network",
                            "host",
                            *add_hosts,
                            "-e",
                            f"SMALGO_TRACKER_PORT={port}",
                            "-e",
                            f"SMALGO_HOSTS_CONNECT_TIMEOUT={HOSTS_TIMEOUT_SECONDS}",
                            "-e",
                            f"SMALGO_HOSTS_TIMEOUT={HOSTS_TIMEOUT_SECONDS}",
                            "-v",
                            f"{job}:/opt/ml",
                            image,
                            "train",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        deadline = started + JOB_LIMIT_SECONDS
        codes: list[int | None] = []
        for process in processes:
            try:
                codes.append(process.wait(timeout=max(0.1, deadline - time.perf_counter())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        seconds = time.perf_counter() - started
    finally:
        for name in names:  # gone already (--rm) unless it is still running
            engine.run("rm", "--force", name)
        for process in processes:
            process.wait()
    texts = [log.read_text(errors="replace") for log in logs]
    both_logs = "\n".join(f"--- {host}'s log:\n{text[-3000:]}" for host, text in zip(HOSTS, texts, strict=True))
    check(None not in codes, f"the 2-host job did not end within {JOB_LIMIT_SECONDS} s (both removed):\n{both_logs}")
    check(codes == [0, 0], f"the hosts exited {codes}, not 0 and 0:\n{both_logs}")
    for host, text in zip(HOSTS, texts, strict=True):
        tracker = f"tracker on algo-1 ({HOSTS['algo-1']}:{port})"
        check(tracker in text, f"{host}'s log does not name the {tracker}:\n{both_logs}")
    return texts, seconds


def metric_lines(log: str, host: str) -> list[str]:
    """A host's metric lines, without their log prefix and host name."""
    found = (METRIC_LINE.search(line) for line in log.splitlines())
    return [match.group(1).replace(f"host={host}, ", "") for match in found if match]


def final_value(line: str) -> float:
    return float(re.split(r"[=:]", line)[-1])


def check_job_outputs(jobs: list[Path], logs: list[str], algorithm: str) -> list[str]:
    """Success on both hosts, the model on algo-1 alone, the same metric lines on both; returns them."""
    for host, job, log in zip(HOSTS, jobs, logs, strict=True):
        failure = job / "output" / "failure"
        check((job / "output" / "success").exists(), f"{host} exited 0 but wrote no output/success:\n{log[-3000:]}")
        if failure.exists():
            raise CheckFailed(f"{host} succeeded but wrote output/failure: {failure.read_text()[:500]}")
    model_files = get_algorithm(algorithm).model_files
    written = sorted(path.name for path in (jobs[0] / "model").iterdir())
    check(any(name in written for name in model_files), f"algo-1's model/ holds {written}, none of {model_files}")
    others = sorted(path.name for path in (jobs[1] / "model").iterdir())
    check(not others, f"algo-2 wrote {others} to its model/: only the first host writes the model")
    first, second = (metric_lines(log, host) for host, log in zip(HOSTS, logs, strict=True))
    check(bool(first), f"algo-1 logged no metric line:\n{logs[0][-3000:]}")
    check(first == second, f"the hosts logged different metrics:\n  algo-1: {first}\n  algo-2: {second}")
    return first


def reference_job(directory: Path, algorithm: str, data: Path) -> tuple[Path, list[str], float]:
    """`smalgo train --hosts 2` of this checkout, as processes on loopback: algo-1's model
    directory, its metric lines and the wall time."""
    command = [sys.executable, "-m", "smalgo.containers", "train", "--algorithm", algorithm, "--train", str(data)]
    command += ["--output", str(directory), "--hosts", str(len(HOSTS)), "--distribution", f"train={SHARDED}"]
    command += ["--content-type", content_type(algorithm), "--hyperparameters"]
    command += [f"{name}={value}" for name, value in hyperparameters(algorithm).items()]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=JOB_LIMIT_SECONDS)
    seconds = time.perf_counter() - started
    check(result.returncode == 0, f"smalgo train --hosts 2 exited {result.returncode}:\n{result.stderr[-3000:]}")
    own = "\n".join(line[len("[algo-1] ") :] for line in result.stderr.splitlines() if line.startswith("[algo-1] "))
    return directory / "algo-1" / "model", metric_lines(own, "algo-1"), seconds


def check_same_model(algorithm: str, containers: Path, processes: Path, union: np.ndarray) -> str:
    """The containers' model against the processes'; returns what was compared, in words."""
    chosen = get_algorithm(algorithm)
    ours: Any = chosen.load(containers)  # a KMeansModel or an XGBoost model
    theirs: Any = chosen.load(processes)
    if algorithm == "kmeans":
        got, want = ours.centers, theirs.centers
        check(got.shape == want.shape, f"centres of shape {got.shape}, the processes' {want.shape}")
        difference = float(np.abs(got - want).max())
        check(difference <= TOLERANCE, f"the centres differ from the processes' by up to {difference:.3g}")
        return f"{len(got)} centres equal to the processes' (largest difference {difference:.2g})"
    import xgboost as xgb

    matrix = xgb.DMatrix(union[:, 1:])
    got, want = (model.boosters[0].predict(matrix) for model in (ours, theirs))
    difference = float(np.abs(got - want).max())
    check(difference <= TOLERANCE, f"the predictions differ from the processes' by up to {difference:.3g}")
    return f"predictions on the {len(union)} rows equal to the processes' (largest difference {difference:.2g})"


def check_algorithm(engine: Engine, algorithm: str, tag: str, workdir: Path) -> float:
    image = f"smalgo-{algorithm}:{tag}"
    print(f"{image}, 2 hosts:", flush=True)
    check(
        engine.run("image", "inspect", image).returncode == 0,
        f"there is no image {image}; build it with `make images IMAGE_ALGORITHMS={algorithm}`",
    )
    data = workdir / algorithm / "data"
    union = write_data(data, algorithm)
    jobs = container_jobs(workdir / algorithm / "containers", algorithm, data)
    logs, seconds = run_containers(engine, image, jobs, algorithm)
    lines = check_job_outputs(jobs, logs, algorithm)
    model = ", ".join(sorted(path.name for path in (jobs[0] / "model").iterdir()))
    print(
        f"    2 containers (--network host, algo-1 on 127.0.0.1, algo-2 on 127.0.0.2, {ROWS_PER_HOST} rows each): "
        f"exit 0 and 0 in {seconds:.1f} s; output/success on both; model on algo-1 only ({model})"
    )
    print(f"    the same {len(lines)} metric lines on both hosts, the last: {lines[-1]!r}")
    reference, reference_lines, reference_seconds = reference_job(workdir / algorithm / "processes", algorithm, data)
    check(bool(reference_lines), "smalgo train --hosts 2 logged no metric line on algo-1")
    last, want = final_value(lines[-1]), final_value(reference_lines[-1])
    check(
        abs(last - want) <= TOLERANCE * max(1.0, abs(want)),
        f"the containers' final metric {lines[-1]!r} is not the processes' {reference_lines[-1]!r}",
    )
    compared = check_same_model(algorithm, jobs[0] / "model", reference, union)
    print(
        f"    against `smalgo train --hosts 2` as processes ({reference_seconds:.1f} s): {compared}; same last metric"
    )
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", default="podman", help="docker or podman")
    parser.add_argument("--tag", action="append", help="image tags (flavours) to check (default: cpu); repeatable")
    parser.add_argument("algorithms", nargs="*", help=f"algorithms to check (default: {' '.join(ALGORITHMS)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.algorithms) - set(DATA))
    if unknown:
        parser.error(f"no 2-host check for {', '.join(unknown)}; choose from {', '.join(DATA)}")
    engine = Engine(args.engine)
    started = time.perf_counter()
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="smalgo-hosts-check-", dir="/var/tmp") as workdir:
        try:
            for tag in args.tag or ["cpu"]:
                for algorithm in args.algorithms or ALGORITHMS:
                    seconds[f"smalgo-{algorithm}:{tag}"] = check_algorithm(engine, algorithm, tag, Path(workdir) / tag)
        except CheckFailed as exc:
            print(f"check_several_hosts: FAILED: {exc}", file=sys.stderr)
            return 1
    jobs = ", ".join(f"{image} {value:.1f} s" for image, value in seconds.items())
    print(f"check_several_hosts: all checks passed in {time.perf_counter() - started:.1f} s (2-container jobs: {jobs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
