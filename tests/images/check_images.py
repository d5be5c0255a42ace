"""`make test-images`: checks built images as SageMaker uses them, with a container engine.

    .venv/bin/python tests/images/check_images.py --engine podman --tag cpu [ALGORITHM ...]   # default: all

For each algorithm's image (smalgo-<algorithm>:<tag>):

0. its configuration: the exec-form entrypoint, the bind-to-port label, port 8080, the
   algorithm, nothing under /opt/ml; for a GPU image, a whole CUDA stack;
1. train: a job laid out by the SageMaker Python SDK v2's own local-mode code
   (tests/images/sdk_local_job.py, in benchmarks/.venv-sdk) is mounted at /opt/ml and trained
   with `--network none`: exit 0, a model in model/, output/success, no failure file, and no
   numba compilation in the container (NUMBA_DEBUG_CACHE=1 shows cache loads only);
2. a bad hyperparameter: non-zero exit, output/failure naming it, nothing in model/;
3. serve, with `--network host` on a loopback port set by SAGEMAKER_BIND_TO_PORT and the model
   mounted read-only: the time from `run` to the first 200 on /ping; CSV, JSON, JSON Lines and
   RecordIO requests, answered as the model predicts in this process; the SDK v2 serializers
   and deserializers (tests/sdk_client.py); the first /invocations against the median of the
   next ones; SIGTERM, then exit 0 within 30 s; again no numba compilation.
4. benchmark (CPU images): `benchmark --quick` with `--network none` and a results directory
   mounted: the summary printed, and a JSON result of the image's algorithm, trained and served
   (check_benchmark).

It prints the start-up and first-request figures (targets: /ping within 10 s, first request
within 5x the steady state) and exits 1 on the first failed check, with the container's log.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from test_serve_support import expected_outputs, free_port  # noqa: E402

from smalgo.algorithms.formats.content_types import RECORDIO_PROTOBUF  # noqa: E402
from smalgo.algorithms.registry import ALGORITHMS, get_algorithm  # noqa: E402
from smalgo.recordio import decode_response, write_dense  # noqa: E402

SDK_PYTHON = REPO / "benchmarks" / ".venv-sdk" / "bin" / "python"
SDK_HYPERPARAMETERS = REPO / "tests" / "data" / "sdk_v2_hyperparameters"
# The width of the sample job's data, for an algorithm without captured SDK hyperparameters.
SAMPLE_FEATURES = 10
PING_TARGET_SECONDS, FIRST_REQUEST_TARGET_RATIO = 10.0, 5.0
STEADY_REQUESTS = 50
SERVE_STARTS = 3  # the start-up figures are medians over this many starts of the server
STOP_LIMIT_SECONDS = 30
# numba's NUMBA_DEBUG_CACHE lines when it compiles and stores a kernel (a cache miss).
COMPILE_MARKERS = ("[cache] data saved", "[cache] index saved")


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Engine:
    def __init__(self, command: str):
        self.command = command

    def run(self, *args: str, timeout: float = 600, check_ok: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run([self.command, *args], capture_output=True, text=True, timeout=timeout)
        if check_ok and result.returncode != 0:
            raise CheckFailed(f"{self.command} {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result


def no_compilation(log: str, what: str) -> None:
    compiled = [line for line in log.splitlines() if line.startswith(COMPILE_MARKERS)]
    check(
        not compiled,
        f"{what} compiled numba kernels instead of loading them from the image's cache:\n  "
        + "\n  ".join(compiled[:10]),
    )


def job_hyperparameters(workdir: Path, algorithm: str) -> Path:
    """A file with the hyperparameters the SDK's estimator sends for `algorithm` (captured in
    tests/data/sdk_v2_hyperparameters/<algorithm>.json), or, for an algorithm the SDK has no
    estimator for, its sample job's (contract.SampleJob), written under `workdir`."""
    hyperparameters = SDK_HYPERPARAMETERS / f"{algorithm}.json"
    if not hyperparameters.exists():
        chosen = get_algorithm(algorithm)
        workdir.mkdir(parents=True, exist_ok=True)
        hyperparameters = workdir / f"{algorithm}-sample-hyperparameters.json"
        hyperparameters.write_text(json.dumps(chosen.sample_job.hyperparameters_for(chosen, SAMPLE_FEATURES)))
    return hyperparameters


def sdk_job(workdir: Path, algorithm: str) -> tuple[Path, np.ndarray]:
    """A job laid out by the SDK's local mode under `workdir`; returns its host directory and
    sample rows, trained with `job_hyperparameters`."""
    host_dir = workdir / f"{algorithm}-job" / "algo-1"
    hyperparameters = job_hyperparameters(workdir, algorithm)
    result = subprocess.run(
        [
            str(SDK_PYTHON),
            str(REPO / "tests" / "images" / "sdk_local_job.py"),
            str(host_dir),
            algorithm,
            str(hyperparameters),
            str(SAMPLE_FEATURES),
            # The SDK's RecordSet channel has no ContentType: what the algorithm's default must then
            # be. An algorithm with another default (XGBoost's is LIBSVM) is told the type, as its
            # users tell it with TrainingInput(content_type=...).
            "" if get_algorithm(algorithm).default_content_type == RECORDIO_PROTOBUF else RECORDIO_PROTOBUF,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    check(result.returncode == 0, f"sdk_local_job.py failed:\n{result.stderr}")
    return host_dir, np.array(json.loads(result.stdout), dtype=np.float32)


def check_train(engine: Engine, image: str, host_dir: Path, algorithm: str) -> float:
    started = time.perf_counter()
    result = engine.run(
        "run", "--rm", "--network", "none", "-e", "NUMBA_DEBUG_CACHE=1", "-v", f"{host_dir}:/opt/ml", image, "train"
    )
    seconds = time.perf_counter() - started
    log = result.stdout + result.stderr
    failure = host_dir / "output" / "failure"
    check(result.returncode == 0, f"train exited {result.returncode}:\n{log[-4000:]}")
    check((host_dir / "output" / "success").exists(), "train exited 0 but wrote no output/success")
    if failure.exists():
        raise CheckFailed(f"train succeeded but wrote output/failure: {failure.read_text()[:500]}")
    model_files = get_algorithm(algorithm).model_files
    check(
        any((host_dir / "model" / name).exists() for name in model_files),
        f"train exited 0 but model/ holds none of {', '.join(model_files)}",
    )
    # The platform's #..._metric lines, or XGBoost's own evaluation lines ([0]\ttrain-auc:0.5).
    check(
        "_metric: host=algo-1," in log or re.search(r"\[0\]\ttrain-\S+:", log) is not None,
        "train printed no metric line (#..._metric: host=algo-1, ... or [0]\ttrain-<metric>:<value>)",
    )
    no_compilation(log, "train")
    return seconds


def check_bad_hyperparameter(engine: Engine, image: str, host_dir: Path, algorithm: str) -> None:
    bad_dir = host_dir.parent.parent / f"{algorithm}-bad-job" / "algo-1"
    shutil.copytree(host_dir, bad_dir)
    shutil.rmtree(bad_dir / "model")
    shutil.rmtree(bad_dir / "output")
    (bad_dir / "model").mkdir()
    (bad_dir / "output").mkdir()
    config = bad_dir / "input" / "config" / "hyperparameters.json"
    name, value = get_algorithm(algorithm).sample_job.bad_hyperparameter
    config.write_text(json.dumps(dict(json.loads(config.read_text()), **{name: value})))
    result = engine.run("run", "--rm", "--network", "none", "-v", f"{bad_dir}:/opt/ml", image, "train")
    failure = bad_dir / "output" / "failure"
    check(result.returncode != 0, f"train with {name}={value} exited 0")
    check(failure.exists(), f"train with {name}={value} failed but wrote no output/failure")
    text = failure.read_text()
    check(name in text and "Traceback" not in text, f"output/failure does not name {name} plainly: {text[:500]!r}")
    check(
        not any((bad_dir / "model").iterdir()),
        f"a failed training left files in model/: {sorted(p.name for p in (bad_dir / 'model').iterdir())}",
    )
    check(not (bad_dir / "output" / "success").exists(), "a failed training wrote output/success")
    print(
        f"    bad hyperparameter {name}={value}: exit {result.returncode}, "
        f"failure: {text.strip().splitlines()[0][:120]}"
    )


def request(
    url: str, body: bytes | None = None, content_type: str | None = None, accept: str | None = None, timeout: float = 30
) -> tuple[int, str, bytes, float]:
    headers = {key: value for key, value in (("Content-Type", content_type), ("Accept", accept)) if value}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            data = response.read()
            return response.status, response.headers.get("Content-Type", ""), data, time.perf_counter() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read(), time.perf_counter() - started


def wait_for_ping(base_url: str, container_started: float, limit: float = 60) -> float:
    while time.perf_counter() - container_started < limit:
        try:
            if request(base_url + "/ping", timeout=1)[0] == 200:
                return time.perf_counter() - container_started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.02)
    raise CheckFailed(f"/ping did not answer 200 within {limit} s")


def check_answers(base_url: str, algorithm: str, model_dir: Path, rows: np.ndarray) -> None:
    expected = expected_outputs(model_dir, rows)
    url = base_url + "/invocations"
    csv_body = "\n".join(",".join(f"{v:.9g}" for v in row) for row in rows).encode()
    json_body = json.dumps({"instances": [{"features": row.tolist()} for row in rows]}).encode()
    jsonl_body = "".join(json.dumps({"features": row.tolist()}) + "\n" for row in rows).encode()
    recordio_body = _recordio(rows)
    for name, body, content_type, accept in (
        ("CSV", csv_body, "text/csv", "application/json"),
        ("JSON", json_body, "application/json", "application/json"),
        ("JSON Lines", jsonl_body, "application/jsonlines", "application/json"),
        ("RecordIO", recordio_body, "application/x-recordio-protobuf", "application/x-recordio-protobuf"),
    ):
        status, answer_type, answer, _ = request(url, body, content_type, accept)
        check(status == 200, f"{name} request: HTTP {status}: {answer[:300]!r}")
        outputs = (
            decode_response(answer)
            if accept.endswith("protobuf")
            else _outputs_from_json(json.loads(answer), algorithm)
        )
        for key, values in expected.items():
            got = np.asarray(outputs[key], dtype=np.float64).reshape(len(rows), -1)
            want = np.asarray(values, dtype=np.float64).reshape(len(rows), -1)
            if key == "closest_cluster":
                check(np.array_equal(got, want), f"{name} request: {key} {got.ravel()[:5]} != {want.ravel()[:5]}")
            else:
                check(np.allclose(got, want, rtol=1e-4, atol=1e-4), f"{name} request: {key} differs from the model's")
    status, _, answer, _ = request(url, b"1,2\n", "text/csv", "application/json")
    check(400 <= status < 500, f"a request of the wrong width got HTTP {status}, not a 4xx")
    print("    CSV, JSON, JSON Lines and RecordIO requests answered as the model predicts; a bad one got 4xx")


def _recordio(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    write_dense(buffer, rows)
    return buffer.getvalue()


def _outputs_from_json(answer: dict, algorithm: str) -> dict[str, list]:
    items = answer[get_algorithm(algorithm).json_response_key]
    return {key: [item[key] for item in items] for key in items[0]}


def check_sdk_client(base_url: str, rows: np.ndarray, algorithm: str, model_dir: Path) -> None:
    result = subprocess.run(
        [
            str(SDK_PYTHON),
            str(REPO / "tests" / "sdk_client.py"),
            base_url + "/invocations",
            json.dumps(rows[:5].tolist()),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    check(result.returncode == 0, f"the SDK v2 client failed:\n{result.stderr[-3000:]}")
    answers = json.loads(result.stdout)
    expected = expected_outputs(model_dir, rows[:5])
    key = get_algorithm(algorithm).outputs[0].name
    want = np.asarray(expected[key], dtype=np.float64).reshape(5, -1)
    as_json = _outputs_from_json(answers["csv+json"], algorithm)[key]
    as_records = [record[key] for record in answers["recordio+recordio"]]
    for name, got in (
        ("CSVSerializer + JSONDeserializer", as_json),
        ("RecordSerializer + RecordDeserializer", as_records),
    ):
        got = np.asarray(got, dtype=np.float64).reshape(5, -1)
        check(np.allclose(got, want, rtol=1e-4, atol=1e-4), f"SDK v2 {name}: {key} {got[:2]} != {want[:2]}")
    print(f"    SDK v2 serializers and deserializers: {', '.join(sorted(answers))} all answered")


def check_serve(engine: Engine, image: str, algorithm: str, model_dir: Path, rows: np.ndarray) -> dict:
    """Every serving check on the first start; then more starts, for medians of the start-up
    figures (one first request is one sample on a shared machine)."""
    one_row = ",".join(f"{v:.9g}" for v in rows[0]).encode()
    pings, firsts, steadies, stops = [], [], [], []
    for start in range(SERVE_STARTS):
        port = free_port()
        name = f"smalgo-check-{algorithm}-{port}"
        base_url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        engine.run(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-e",
            f"SAGEMAKER_BIND_TO_PORT={port}",
            "-e",
            "NUMBA_DEBUG_CACHE=1",
            "-v",
            f"{model_dir}:/opt/ml/model:ro",
            image,
            "serve",
            check_ok=True,
        )
        try:
            try:
                pings.append(wait_for_ping(base_url, started))
            except CheckFailed as exc:
                raise CheckFailed(f"{exc}\n{engine.run('logs', name).stderr[-4000:]}") from None
            status, _, answer, first = request(base_url + "/invocations", one_row, "text/csv", "application/json")
            check(status == 200, f"first request: HTTP {status}: {answer[:300]!r}")
            firsts.append(first)
            steadies.append(
                statistics.median(
                    request(base_url + "/invocations", one_row, "text/csv", "application/json")[3]
                    for _ in range(STEADY_REQUESTS)
                )
            )
            if start == 0:
                check_answers(base_url, algorithm, model_dir, rows)
                check_sdk_client(base_url, rows, algorithm, model_dir)
            stops.append(stop_with_sigterm(engine, name))
        finally:
            engine.run("rm", "--force", name)
    return {
        "ping": statistics.median(pings),
        "first": statistics.median(firsts),
        "steady": statistics.median(steadies),
        "stop": max(stops),
    }


def stop_with_sigterm(engine: Engine, name: str) -> float:
    """SIGTERM, as SageMaker sends it: exit 0 within the 30 s before its SIGKILL, having
    compiled nothing. Returns the seconds it took."""
    stop_started = time.perf_counter()
    engine.run("kill", "--signal", "TERM", name, check_ok=True)
    exit_code = engine.run("wait", name, timeout=STOP_LIMIT_SECONDS + 30).stdout.strip()
    stop_seconds = time.perf_counter() - stop_started
    log = engine.run("logs", name)
    log = log.stdout + log.stderr
    check(exit_code == "0", f"serve exited {exit_code} after SIGTERM, not 0:\n{log[-3000:]}")
    check(stop_seconds < STOP_LIMIT_SECONDS, f"serve took {stop_seconds:.1f} s to stop after SIGTERM")
    no_compilation(log, "serve")
    return stop_seconds


# Run in a GPU image: the CUDA stack it ships must be whole (the libraries load without a
# driver); whether a GPU is visible is reported, and without one the image runs on the CPU.
GPU_STACK_PROBE = """
import json
import xgboost, numba, numba.cuda
from cuda.pathfinder import load_nvidia_dynamic_lib
libraries = {name: load_nvidia_dynamic_lib(name).abs_path for name in ("cudart", "nvrtc", "nvJitLink", "nccl")}
print(json.dumps({"xgboost": xgboost.__version__, "xgboost_cuda": bool(xgboost.build_info()["USE_CUDA"]),
                  "numba_cuda": numba.cuda.__name__, "gpu_visible": bool(numba.cuda.is_available()),
                  "libraries": libraries}))
"""


def check_gpu_stack(engine: Engine, image: str) -> None:
    result = engine.run("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", GPU_STACK_PROBE)
    check(result.returncode == 0, f"the CUDA stack of {image} is incomplete:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    check(report["xgboost_cuda"], f"{image}: XGBoost {report['xgboost']} is built without CUDA")
    print(
        f"    CUDA stack: XGBoost {report['xgboost']} with CUDA, numba-cuda, "
        f"{', '.join(sorted(report['libraries']))} load; GPU visible: {report['gpu_visible']}"
    )


def check_configuration(engine: Engine, image: str, algorithm: str) -> None:
    """What SageMaker relies on before it runs anything: an exec-form entrypoint, the bind-to-port
    label, port 8080, the algorithm, and nothing under /opt/ml (SageMaker mounts over it)."""
    config = json.loads(engine.run("image", "inspect", image, check_ok=True).stdout)[0]["Config"]
    labels = config.get("Labels") or {}
    environment = dict(item.split("=", 1) for item in config.get("Env") or [])
    check(config.get("Entrypoint") == ["/opt/smalgo/bin/smalgo"], f"entrypoint is {config.get('Entrypoint')}")
    check(
        labels.get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port") == "true",
        f"the accept-bind-to-port label is missing: {labels}",
    )
    check("8080/tcp" in (config.get("ExposedPorts") or {}), f"port 8080 is not exposed: {config.get('ExposedPorts')}")
    check(
        environment.get("SMALGO_ALGORITHM") == algorithm, f"SMALGO_ALGORITHM is {environment.get('SMALGO_ALGORITHM')!r}"
    )
    listing = engine.run("run", "--rm", "--network", "none", "--entrypoint", "ls", image, "-A", "/opt")
    check(
        listing.returncode == 0 and "ml" not in listing.stdout.split(),
        f"the image has files under /opt/ml: {listing.stdout}",
    )


def check_image(engine: Engine, algorithm: str, tag: str, workdir: Path) -> dict:
    image = f"smalgo-{algorithm}:{tag}"
    print(f"{image}:", flush=True)
    check_configuration(engine, image, algorithm)
    if tag == "gpu":
        check_gpu_stack(engine, image)
    host_dir, rows = sdk_job(workdir / tag, algorithm)
    train_seconds = check_train(engine, image, host_dir, algorithm)
    print(
        f"    train (SDK v2 local-mode job, --network none): exit 0 in {train_seconds:.1f} s, "
        f"model: {', '.join(sorted(p.name for p in (host_dir / 'model').iterdir()))}; nothing compiled"
    )
    check_bad_hyperparameter(engine, image, host_dir, algorithm)
    figures = check_serve(engine, image, algorithm, host_dir / "model", rows)
    print(
        f"    serve ({SERVE_STARTS} starts, medians): /ping 200 after {figures['ping']:.2f} s; first request "
        f"{figures['first'] * 1000:.1f} ms, steady {figures['steady'] * 1000:.2f} ms (median of "
        f"{STEADY_REQUESTS}); SIGTERM -> exit 0 within {figures['stop']:.1f} s; nothing compiled",
        flush=True,
    )
    if tag == "cpu":  # the benchmark's code is the same in both flavours: one check per algorithm
        benchmark_seconds = check_benchmark(engine, image, algorithm, workdir / tag)
        print(f"    benchmark --quick (--network none): summary printed, JSON written, in {benchmark_seconds:.1f} s")
    return dict(figures, train=train_seconds)


# `docker run IMAGE benchmark` (a user's default run) must finish within this; --quick far sooner.
BENCHMARK_LIMIT_SECONDS = 120
BENCHMARK_LOADS = {("csv", 1), ("csv", 1000), ("recordio", 1), ("recordio", 1000)}


def check_benchmark(engine: Engine, image: str, algorithm: str, workdir: Path) -> float:
    """`benchmark --quick` in the image, with no network and a directory mounted for its result:
    exit 0 within BENCHMARK_LIMIT_SECONDS, the summary on stdout, and a JSON result for the
    image's algorithm whose training jobs ran and whose four loads were answered without errors
    (by the built-in load generator: the image has no wrk). Returns the seconds it took."""
    out = workdir / f"{algorithm}-benchmark"
    out.mkdir(parents=True)
    started = time.perf_counter()
    result = engine.run(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{out}:/results",
        image,
        "benchmark",
        "--quick",
        "--seconds",
        "0.5",
        "--output",
        "/results",
        timeout=BENCHMARK_LIMIT_SECONDS + 60,
    )
    seconds = time.perf_counter() - started
    log = result.stdout + result.stderr
    check(result.returncode == 0, f"benchmark exited {result.returncode}:\n{log[-4000:]}")
    check(seconds < BENCHMARK_LIMIT_SECONDS, f"benchmark --quick took {seconds:.0f} s")
    check("## smalgo benchmark on" in result.stdout, f"benchmark printed no summary:\n{result.stdout[-2000:]}")
    written = sorted(out.glob("*.json"))
    check(len(written) == 1, f"benchmark wrote {[p.name for p in written]}, not one JSON result")
    report = json.loads(written[0].read_text())
    check(report.get("schema") == "smalgo-benchmark", f"the result's schema is {report.get('schema')!r}")
    names = [entry["name"] for entry in report["algorithms"]]
    check(names == [algorithm], f"the image benchmarked {names}, not {algorithm} alone")
    entry = report["algorithms"][0]
    check(report["settings"]["load_generator"] == "builtin", f"load generator {report['settings']['load_generator']}")
    check(
        any(t.get("records_per_s", 0) > 0 for t in entry["training"]),
        f"no training job was timed: {entry['training']}",
    )
    loads = {(i["form"], i["records_per_request"]): i for i in entry["inference"]}
    check(set(loads) == BENCHMARK_LOADS, f"the loads measured: {sorted(loads)}")
    for key, measured in loads.items():
        check(measured["requests"] > 0 and measured["errors"] == 0, f"load {key}: {measured}")
    return seconds


def image_arguments(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The image checks' common command line: --engine, --tag (repeatable) and the algorithms."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--engine", default="podman", help="docker or podman")
    parser.add_argument("--tag", action="append", help="image tags (flavours) to check (default: cpu); repeatable")
    parser.add_argument("algorithms", nargs="*", help="algorithms whose images to check (default: all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = image_arguments(__doc__.splitlines()[0], argv)
    if not SDK_PYTHON.exists():
        print(
            f"check_images: the SageMaker SDK v2 environment is missing ({SDK_PYTHON}); run `make sdk-env`",
            file=sys.stderr,
        )
        return 1
    engine = Engine(args.engine)
    results = {}
    with tempfile.TemporaryDirectory(prefix="smalgo-image-check-", dir="/var/tmp") as workdir:
        try:
            for tag in args.tag or ["cpu"]:
                for algorithm in args.algorithms or list(ALGORITHMS):
                    results[f"smalgo-{algorithm}:{tag}"] = check_image(engine, algorithm, tag, Path(workdir))
        except CheckFailed as exc:
            print(f"check_images: FAILED: {exc}", file=sys.stderr)
            return 1
    print(
        f"\nStart-up figures, medians of {SERVE_STARTS} starts (targets: /ping within "
        f"{PING_TARGET_SECONDS:.0f} s of `run`, first request within {FIRST_REQUEST_TARGET_RATIO:.0f}x "
        f"the steady state):"
    )
    print(f"  {'image':<24} {'train':>8} {'/ping':>8} {'first':>10} {'steady':>10} {'ratio':>7}")
    for image, f in results.items():
        ratio = f["first"] / f["steady"]
        flags = [] if f["ping"] <= PING_TARGET_SECONDS and ratio <= FIRST_REQUEST_TARGET_RATIO else ["over target"]
        print(
            f"  {image:<24} {f['train']:>7.2f}s {f['ping']:>7.2f}s {f['first'] * 1000:>8.2f}ms "
            f"{f['steady'] * 1000:>8.2f}ms {ratio:>6.1f}x {' '.join(flags)}"
        )
    print("check_images: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
