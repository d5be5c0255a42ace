"""`smalgo benchmark` (in an image: `docker run IMAGE benchmark`): training and inference
throughput, latency and cost on this machine, for the image's algorithm, `--algorithm NAME`, or
`--algorithm all`. Writes one JSON result (results.py) and a Markdown summary, and prints the
summary. The defaults take about a minute per algorithm on 2 vCPUs; `--quick` a few seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.registry import ALGORITHMS, get_algorithm

from ..entrypoint import choose_cpu_target
from ..job import ALGORITHM_VARIABLE
from . import data, inference, load, machine, prices, results, training

ALL = "all"
DEFAULT_ROWS, DEFAULT_FEATURES = 100_000, 50
# Each form's training job runs again until its runs take this long (--quick: once).
TRAIN_SECONDS = 2.0
DEFAULT_SECONDS, DEFAULT_WARMUP_SECONDS = 6.0, 1.0
QUICK_ROWS, QUICK_SECONDS = 2_000, 1.0
MIN_ROWS = inference.BATCH_RECORDS  # the 1,000-record request is cut from the data
DEFAULT_OUTPUT = "smalgo-benchmark"
# Thread settings of the libraries below numba, for a run restricted with --cpus (numba, the CSV
# decoder, RecordIO and the server's workers follow the CPU affinity by themselves).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--algorithm",
        help=f"an algorithm ({', '.join(ALGORITHMS)}) or '{ALL}' (default: ${ALGORITHM_VARIABLE}, set in each image; "
        f"else {ALL})",
    )
    parser.add_argument(
        "--rows", type=int, help=f"rows of generated data (default {DEFAULT_ROWS:,}; --quick {QUICK_ROWS:,})"
    )
    parser.add_argument("--features", type=int, default=DEFAULT_FEATURES, help=f"features (default {DEFAULT_FEATURES})")
    parser.add_argument(
        "--density",
        type=float,
        default=1.0,
        help="share of non-zero values: 1 (the default) is dense data, less is sparse (sparse RecordIO records)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help=f"seconds per inference load (default {DEFAULT_SECONDS:g}; --quick {QUICK_SECONDS:g})",
    )
    parser.add_argument("--connections", type=int, help="concurrent connections of the load (default: 2 per worker)")
    parser.add_argument(
        "--load-generator",
        choices=load.GENERATORS,
        default="auto",
        help="wrk, the built-in closed-loop generator, or auto (wrk when on PATH; the default)",
    )
    parser.add_argument(
        "--cpus",
        type=int,
        help="use only this many of the CPUs (CPU affinity of the jobs and the server, their thread counts and "
        "gunicorn workers); the load generator then runs on the others, if any",
    )
    parser.add_argument(
        "--instance-type",
        help=f"the instance type, e.g. ml.m5.xlarge (default: ${machine.INSTANCE_TYPE_VARIABLE}, resourceconfig.json, "
        "or EC2's instance metadata)",
    )
    parser.add_argument(
        "--price-per-hour",
        type=float,
        help="US dollars per hour of this machine (default: the instance type's in the price table)",
    )
    parser.add_argument("--quick", action="store_true", help="a short run (small data, 1 s per load), for tests")
    parser.add_argument(
        "--output",
        metavar="DIR",
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSON and Markdown (default ./{DEFAULT_OUTPUT})",
    )


def run(args: argparse.Namespace) -> int:
    """The command: 0, or 2 with a line naming the bad option, or 1 when a measurement failed."""
    started = time.perf_counter()
    try:
        settings = _settings(args)
        names = _algorithms(args.algorithm)
        _check_output(Path(args.output))
        cpus = _restrict_cpus(args.cpus)
        instance = machine.resolve_instance_type(args.instance_type)
    except UserError as exc:
        print(f"smalgo benchmark: {exc}", file=sys.stderr)
        return 2
    described = machine.describe_machine(instance)
    price = prices.resolve_price(instance.name, args.price_per_hour)
    try:
        workers = _server_workers()
        generator = load.choose_generator(args.load_generator)
    except (UserError, FileNotFoundError) as exc:
        print(f"smalgo benchmark: {exc}", file=sys.stderr)
        return 2
    connections = args.connections or 2 * workers
    all_cpus = set(cpus.all)
    load_cpus = all_cpus - set(cpus.used) or None
    settings.update(
        cpus=len(cpus.used),
        workers=workers,
        load_generator=generator,
        connections=connections,
        load_generator_cpus=sorted(load_cpus) if load_cpus else "shared with the server",
    )
    result = results.header("benchmark", described, price)
    result["settings"] = settings
    result["algorithms"] = []
    print(
        f"smalgo benchmark: {', '.join(names)} on {results.machine_label(result)} "
        f"({settings['rows']:,} rows x {settings['features']} features); writing to {args.output}/",
        flush=True,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="smalgo-benchmark-") as tmp:
            dataset = data.generate(settings["rows"], settings["features"], density=settings["density"])
            for name in names:
                result["algorithms"].append(
                    _benchmark_algorithm(
                        name,
                        dataset,
                        Path(tmp),
                        settings=settings,
                        price=price,
                        vcpus=described["vcpus"],
                        load_cpus=load_cpus,
                    )
                )
    except RuntimeError as exc:
        print(f"smalgo benchmark: {exc}", file=sys.stderr)
        return 1
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    base = (
        Path(args.output) / f"{described['name']}-{results.format_vcpus(described['vcpus'])}vcpu-{_names_part(names)}"
    )
    json_path = results.write_json(result, base.parent / f"{base.name}.json")
    summary = markdown_summary(result)
    markdown_path = base.parent / f"{base.name}.md"
    markdown_path.write_text(summary + "\n")
    print("\n" + summary + "\n", flush=True)
    print(f"Result: {json_path} (and {markdown_path}), in {result['wall_seconds']:.0f} s.", flush=True)
    return 0


class _Cpus(NamedTuple):
    all: list[int]  # the CPUs this process could use when it started
    used: list[int]  # those the run uses (--cpus: the first N)


def _check_output(directory: Path) -> None:
    """--output must be a directory this process can write in (checked before the long run)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".smalgo-benchmark-"):
            pass
    except OSError as exc:
        raise UserError(
            f"--output {directory}: cannot write there ({exc.strerror or exc}); in an image, mount a directory "
            '(-v "$PWD/results:/results") and pass --output /results.'
        ) from None


def _restrict_cpus(count: int | None) -> _Cpus:
    """--cpus N: this process (and so every job, server and thread pool started from now on) runs
    on the first N of the CPUs it may use."""
    all_cpus = sorted(os.sched_getaffinity(0))
    if count is None:
        return _Cpus(all_cpus, all_cpus)
    if not 1 <= count <= len(all_cpus):
        raise UserError(f"--cpus {count}: this machine lets the benchmark use 1 to {len(all_cpus)} CPUs.")
    used = all_cpus[:count]
    os.sched_setaffinity(0, used)
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(count))
    return _Cpus(all_cpus, used)


def _settings(args: argparse.Namespace) -> dict:
    rows = args.rows if args.rows is not None else (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    seconds = args.seconds if args.seconds is not None else (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    if rows < MIN_ROWS:
        raise UserError(f"--rows {rows}: at least {MIN_ROWS:,} (the 1,000-record request is cut from the data).")
    if args.features < 1:
        raise UserError(f"--features {args.features}: at least 1.")
    if not 0 < args.density <= 1:
        raise UserError(f"--density {args.density:g}: a share of non-zero values, above 0 and at most 1.")
    if seconds <= 0:
        raise UserError(f"--seconds {seconds:g}: a positive number of seconds per load.")
    if args.connections is not None and args.connections < 1:
        raise UserError(f"--connections {args.connections}: at least 1.")
    if args.price_per_hour is not None and args.price_per_hour <= 0:
        raise UserError(f"--price-per-hour {args.price_per_hour:g}: a positive number of US dollars.")
    return {
        "rows": rows,
        "features": args.features,
        "density": args.density,
        "sparse": args.density < 1,
        "seconds_per_load": seconds,
        "warmup_seconds_per_load": 0.0 if args.quick else DEFAULT_WARMUP_SECONDS,
        "min_training_seconds": 0.0 if args.quick else TRAIN_SECONDS,
        "quick": bool(args.quick),
    }


def _algorithms(choice: str | None) -> list[str]:
    choice = choice or os.environ.get(ALGORITHM_VARIABLE) or ALL
    if choice == ALL:
        return list(ALGORITHMS)
    try:
        return [get_algorithm(choice).name]
    except UserError:
        raise UserError(f"--algorithm {choice!r}: choose one of {', '.join(ALGORITHMS)}, or {ALL}.") from None


def _server_workers() -> int:
    """The workers `smalgo serve` starts here (the image's default: one per CPU it may use)."""
    from smalgo.serve.settings import ServerSettings

    return ServerSettings.from_environment(model_dir=".").workers


def _names_part(names: list[str]) -> str:
    return ALL if len(names) == len(ALGORITHMS) > 1 else "-".join(names)


def child_environment(algorithm: str) -> dict[str, str]:
    """The jobs' and the server's environment: this one, the algorithm set as an image sets it,
    and numba's code-generation target settled as the smalgo command settles it (so that an
    image's child processes load the kernels its build cached)."""
    environ = dict(os.environ)
    environ[ALGORITHM_VARIABLE] = algorithm
    choose_cpu_target(environ)
    return environ


def _benchmark_algorithm(
    name: str,
    dataset: data.DataSet,
    tmp: Path,
    *,
    settings: dict,
    price: dict,
    vcpus: float,
    load_cpus: set[int] | None,
) -> dict:
    """Train and serve one algorithm; its entry of the result. `vcpus`: what per-vCPU figures
    divide by (the CPUs the run uses, lowered to a container's CPU quota)."""
    algorithm = get_algorithm(name)
    environ = child_environment(name)
    print(f"  {name}: training ...", flush=True)
    trained = training.train_forms(
        algorithm, dataset, tmp, environ=environ, min_seconds=settings["min_training_seconds"]
    )
    for item in trained:
        if "records_per_s" in item:
            item["records_per_s_per_vcpu"] = item["records_per_s"] / vcpus
            item["usd_per_million"] = prices.usd_per_million(price["per_hour"], item["records_per_s"])
    model_dir = next(Path(item["model_dir"]) for item in trained if "model_dir" in item)
    workers = f"{settings['workers']} worker{'s' if settings['workers'] > 1 else ''}"
    print(f"  {name}: serving ({workers}) under {settings['load_generator']} ...", flush=True)
    with inference.Server(model_dir, environ, tmp / f"{name}-server.log") as server:
        served = inference.measure(
            algorithm,
            dataset,
            server,
            generator=settings["load_generator"],
            seconds=settings["seconds_per_load"],
            warmup_seconds=settings["warmup_seconds_per_load"],
            connections=settings["connections"],
            load_cpus=load_cpus,
        )
    for item in served:
        item["records_per_s_per_vcpu"] = item["records_per_s"] / vcpus
        item["usd_per_million"] = prices.usd_per_million(price["per_hour"], item["records_per_s"])
    for item in trained:
        item.pop("model_dir", None)
    return {
        "name": name,
        "title": algorithm.title,
        "hyperparameters": training.benchmark_hyperparameters(algorithm, dataset.features),
        "training": trained,
        "inference": served,
    }


FORM_NAMES = {data.RECORDIO: "RecordIO", data.CSV_FORM: "CSV"}


def markdown_summary(result: dict) -> str:
    """One result as Markdown: what ran where, then a training and an inference table."""
    m, s, price = result["machine"], result["settings"], result["price"]
    gpus = ", ".join(m["gpus"]) if m["gpus"] else "no GPU"
    per_hour = f"${price['per_hour']:g}/hour ({price['source']})" if price["per_hour"] else f"none ({price['source']})"
    lines = [
        f"## smalgo benchmark on {results.machine_label(result)}",
        "",
        "- Machine: instance type "
        + (
            f"{m['instance_type']} (from {m['instance_type_source']})"
            if m["instance_type"]
            else f"unknown ({m['instance_type_source']})"
        )
        + "; "
        f"{results.format_vcpus(m['vcpus'])} of {m['host_vcpus']} vCPUs, {m['cpu_model']}, "
        f"{m['memory_gib']} GiB, {gpus}.",
        f"- Price: {per_hour}.",
        f"- Data: {s['rows']:,} rows x {s['features']} features, "
        + (f"sparse (density {s['density']:g})" if s["sparse"] else "dense")
        + "; training: one pass, File mode, the whole job (configuration to model committed).",
        f"- Inference: `smalgo serve` with {s['workers']} gunicorn worker{'s' if s['workers'] > 1 else ''}; "
        f"{s['load_generator']} load generator, {s['connections']} keep-alive connections, "
        f"{s['seconds_per_load']:g} s per load; CSV answered in JSON, "
        "RecordIO in RecordIO.",
        "",
        "Training:",
        "",
    ]
    rows = []
    for entry in result["algorithms"]:
        for t in entry["training"]:
            if "skipped" in t:
                rows.append([entry["name"], FORM_NAMES[t["form"]], "-", "-", "-", t["skipped"]])
                continue
            rows.append(
                [
                    entry["name"],
                    FORM_NAMES[t["form"]],
                    results.figure(t["records_per_s"]),
                    results.figure(t["records_per_s_per_vcpu"]),
                    f"{t['runs']} x {t['seconds'] / t['runs']:.2f}",
                    results.figure(t["usd_per_million"]),
                ]
            )
    lines.append(
        results.markdown_table(
            ["algorithm", "data", "records/s", "records/s per vCPU", "runs x job s", "$ per million records"],
            rows,
            ["l", "l", "r", "r", "r", "r"],
        )
    )
    lines += ["", "Inference:", ""]
    rows = []
    for entry in result["algorithms"]:
        for i in entry["inference"]:
            n = i["records_per_request"]
            rows.append(
                [
                    entry["name"],
                    f"{FORM_NAMES[i['form']]}, {n:,} record{'s' if n > 1 else ''}",
                    results.figure(i["requests_per_s"]),
                    results.figure(i["records_per_s"]),
                    results.figure(i["p50_ms"]),
                    results.figure(i["p99_ms"]),
                    str(i["errors"]),
                    results.figure(i["usd_per_million"]),
                ]
            )
    lines.append(
        results.markdown_table(
            ["algorithm", "request", "requests/s", "records/s", "p50 ms", "p99 ms", "errors", "$ per million records"],
            rows,
            ["l", "l", "r", "r", "r", "r", "r", "r"],
        )
    )
    return "\n".join(lines)
