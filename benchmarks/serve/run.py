"""Inference server throughput: smalgo's k-means endpoint against a bare Flask app that answers
a constant, both under the same gunicorn settings, on this machine, in the same run.

    python benchmarks/serve/run.py [--duration 10] [--runs 3] [--connections 8]

Two loads, each driven by wrk (https://github.com/wg/wrk; Debian/Ubuntu: `apt-get install -y
wrk`) over keep-alive connections on loopback:
  * single: one CSV record per request (the real-time endpoint case);
  * batch:  1,000 CSV records per request (the batch transform case).
Each (load, server) pair is measured `--runs` times for `--duration` seconds, the two servers
alternating (and which goes first alternating too) so that a busy moment on the machine hits
both; the table shows the medians: requests/s, p50 and p99 latency, records/s, the servers' CPU
time per request (master + workers, from /proc), and smalgo's ratios to the bare app. The
targets (single-record throughput >= 70% of the bare app's, p99 <= 3x its p99) are checked at
the end. Other load on the machine moves requests/s and latencies (CPU per request much less):
run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from smalgo.algorithms import kmeans
from smalgo.algorithms.data import InMemoryData
from smalgo.containers.benchmark import peers
from smalgo.containers.benchmark.load import parse_wrk
from smalgo.recordio.parallel import available_cpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slow_clients  # noqa: E402 (beside this script, not a package)

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers.py"
BATCH_RECORDS = 1000
TARGET_THROUGHPUT_RATIO = 0.85
TARGET_P99_RATIO = 3.0
# SageMaker's health check gives /ping 2 s.
TARGET_PING_MS = 2000.0
WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "text/csv"
wrk.headers["Accept"] = "application/json"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="measurements per (load, server); medians shown")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--features", type=int, default=50, help="model feature_dim (default 50)")
    parser.add_argument("--k", type=int, default=10, help="k-means clusters (default 10)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gunicorn workers for both servers (default: SAGEMAKER_MODEL_SERVER_WORKERS or the CPUs)",
    )
    parser.add_argument(
        "--worker-class", default=None, help="override the gunicorn worker class for both servers (sync, gthread)"
    )
    parser.add_argument(
        "--slow-seconds", type=float, default=10, help="seconds of /ping under each slow-client load (default 10)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "wrk is not installed. `make bench-setup` installs it (benchmarks/setup_wrk.sh), or "
            "`brew install wrk` (macOS), then run this again.",
            file=sys.stderr,
        )
        return 2

    with tempfile.TemporaryDirectory(prefix="smalgo-serve-bench-") as tmp:
        tmp = Path(tmp)
        model_dir, rows = train_model(tmp / "model", args.features, args.k)
        bodies = {
            "single": csv_body(rows[:1]),
            "batch": csv_body(rows[:BATCH_RECORDS]),
        }
        for name, body in bodies.items():
            (tmp / f"{name}.csv").write_bytes(body)
        (tmp / "post.lua").write_text(WRK_SCRIPT)

        env = dict(os.environ)
        if args.workers:
            env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(args.workers)
        if args.worker_class:
            env["SMALGO_BENCH_WORKER_CLASS"] = args.worker_class
        servers = {
            "bare": Server(["bare"], env, tmp / "bare.log"),
            "smalgo": Server(["smalgo", str(model_dir)], env, tmp / "smalgo.log"),
        }
        try:
            for server in servers.values():
                server.start()
            check_answers(servers["smalgo"].url, bodies)
            print(
                f"k-means model: k={args.k}, feature_dim={args.features}; {cpu_note(env)}; "
                f"wrk -t{args.threads} -c{args.connections}, {args.runs} x {args.duration} s per cell, "
                f"medians.\n"
            )
            results = {}
            for load, _body in bodies.items():
                records = BATCH_RECORDS if load == "batch" else 1
                samples = {name: [] for name in servers}
                for _name, server in servers.items():  # a short warm-up: connections, caches
                    run_wrk(wrk, args, server.url, tmp, load, duration=2)
                for run in range(args.runs):
                    # Alternate which server goes first: the machine's other load drifts.
                    order = list(servers.items()) if run % 2 == 0 else list(servers.items())[::-1]
                    for name, server in order:
                        cpu_before = server.cpu_seconds()
                        sample = run_wrk(wrk, args, server.url, tmp, load, args.duration)
                        sample["server_cpu_us_per_request"] = (
                            (server.cpu_seconds() - cpu_before) * 1e6 / max(sample["requests"], 1)
                        )
                        samples[name].append(sample)
                results[load] = {name: summarize(runs, records) for name, runs in samples.items()}
            servers["bare"].stop()
            # /ping under slow clients: smalgo, and smalgo on gunicorn's own gthread worker (the
            # worker it had before serve/worker.py) to show what the gathering worker changes.
            servers["smalgo on gthread"] = Server(
                ["smalgo", str(model_dir)], dict(env, SMALGO_BENCH_WORKER_CLASS="gthread"), tmp / "gthread.log"
            )
            servers["smalgo on gthread"].start()
            pings = {
                (load, name): slow_clients.ping_latencies(
                    int(servers[name].url.split(":")[2].split("/")[0]), load, bodies["single"], args.slow_seconds
                )
                for load in ("trickle", "large")
                for name in ("smalgo", "smalgo on gthread")
            }
        finally:
            for server in servers.values():
                server.stop()

    print_table(results)
    single = results["single"]
    throughput_ratio = single["smalgo"]["requests_per_s"] / single["bare"]["requests_per_s"]
    p99_ratio = single["smalgo"]["p99_ms"] / single["bare"]["p99_ms"]
    print_pings(pings)
    worst_ping = max(result["max_ms"] for (_, name), result in pings.items() if name == "smalgo")
    met = throughput_ratio >= TARGET_THROUGHPUT_RATIO and p99_ratio <= TARGET_P99_RATIO and worst_ping < TARGET_PING_MS
    print(
        f"\ntargets: single-record throughput {throughput_ratio:.0%} of bare (>= {TARGET_THROUGHPUT_RATIO:.0%}), "
        f"p99 {p99_ratio:.2f}x bare (<= {TARGET_P99_RATIO:.0f}x), slowest /ping under slow clients "
        f"{worst_ping:.0f} ms (< {TARGET_PING_MS:.0f}): {'met' if met else 'NOT met'}"
    )
    record_peers(results, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "results": results,
                    "pings": {f"{load} {name}": result for (load, name), result in pings.items()},
                    "throughput_ratio": throughput_ratio,
                    "p99_ratio": p99_ratio,
                    "targets_met": met,
                },
                indent=2,
            )
        )
    return 0 if met else 1


def record_peers(results: dict, args) -> None:
    """smalgo's requests/s, p99 and CPU per request against the bare Flask app's, into
    benchmarks/results/."""
    comparisons = []
    for load, by_server in results.items():
        ours, bare = by_server["smalgo"], by_server["bare"]
        records = BATCH_RECORDS if load == "batch" else 1
        case = f"k-means, {records:,}-record CSV requests, {args.connections} connections"
        peer = "bare Flask app, same gunicorn settings"
        for metric, unit, key, higher in (
            ("throughput", "requests/s", "requests_per_s", True),
            ("p99 latency", "ms", "p99_ms", False),
            ("server CPU per request", "us", "server_cpu_us_per_request", False),
        ):
            comparisons.append(peers.Comparison(case, metric, unit, ours[key], peer, bare[key], higher))
    peers.record("serve", comparisons, results_dir=HERE.parent / "results")


def train_model(model_dir: Path, feature_dim: int, k: int) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 10.0, (k, feature_dim))
    rows = (centers[rng.integers(0, k, 20_000)] + rng.normal(0.0, 1.0, (20_000, feature_dim))).astype(np.float32)
    hp = kmeans.ALGORITHM.hyperparameters.parse({"k": str(k), "feature_dim": str(feature_dim)})
    kmeans.ALGORITHM.train(hp, InMemoryData({"train": rows})).save(model_dir)
    return model_dir, rows


def csv_body(rows: np.ndarray) -> bytes:
    return "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows.tolist()).encode()


def check_answers(url: str, bodies: dict[str, bytes]) -> None:
    """The smalgo server answers what the benchmark sends, correctly, before it is timed."""
    for name, body in bodies.items():
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "text/csv", "Accept": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = json.loads(response.read())["predictions"]
        expected = body.count(b"\n")
        if len(predictions) != expected or set(predictions[0]) != {"closest_cluster", "distance_to_cluster"}:
            raise SystemExit(f"smalgo answered the {name} body wrongly: {predictions[:2]}")


def run_wrk(wrk: str, args, url: str, tmp: Path, load: str, duration: int) -> dict:
    env = dict(os.environ, BENCH_BODY_FILE=str(tmp / f"{load}.csv"))
    command = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(tmp / "post.lua"),
        url,
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    # wrk's report, read as `smalgo benchmark` reads it (errors: non-2xx answers and socket errors).
    return parse_wrk(output, connections=args.connections, seconds=duration).as_dict()


def summarize(runs: list[dict], records: int) -> dict:
    summary = {
        key: statistics.median(run[key] for run in runs)
        for key in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")
    }
    summary["records_per_s"] = summary["requests_per_s"] * records
    summary["errors"] = sum(run["errors"] for run in runs)
    summary["runs"] = runs
    return summary


def print_table(results: dict) -> None:
    header = (
        f"{'load':<8}{'server':<8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'records/s':>12}"
        f"{'CPU us/req':>12}{'non-2xx':>9}"
    )
    print(header)
    print("-" * len(header))
    for load, by_server in results.items():
        for name, s in by_server.items():
            print(
                f"{load:<8}{name:<8}{s['requests_per_s']:>10.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                f"{s['records_per_s']:>12.0f}{s['server_cpu_us_per_request']:>12.0f}"
                f"{s['errors']:>9}"
            )
        ours, bare = by_server["smalgo"], by_server["bare"]
        print(
            f"{load:<8}{'ratio':<8}{ours['requests_per_s'] / bare['requests_per_s']:>10.2f}"
            f"{ours['p50_ms'] / bare['p50_ms']:>9.2f}{ours['p99_ms'] / bare['p99_ms']:>9.2f}"
            f"{ours['records_per_s'] / bare['records_per_s']:>12.2f}"
            f"{ours['server_cpu_us_per_request'] / bare['server_cpu_us_per_request']:>12.2f}"
        )


def print_pings(pings: dict) -> None:
    print(
        f"\n/ping under slow clients ({slow_clients.TRICKLING_CLIENTS} connections trickling a byte a second; "
        f"{slow_clients.LARGE_CLIENTS} connections sending 6 MB requests back to back), a ping every "
        f"{slow_clients.PING_INTERVAL * 1e3:.0f} ms, {slow_clients.PING_TIMEOUT:.0f} s counted for one not answered:"
    )
    print(f"{'load':<8} {'server':<18} {'pings':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'6 MB answered':>14}")
    for (load, name), result in pings.items():
        answered = result["large_answered"] if load == "large" else "-"
        print(
            f"{load:<8} {name:<18} {result['pings']:>6} {result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f} "
            f"{result['max_ms']:>8.1f} {answered:>14}"
        )


def cpu_note(env: dict) -> str:
    cpus = available_cpus()  # what the server's default worker count is
    workers = env.get("SAGEMAKER_MODEL_SERVER_WORKERS") or f"{cpus} (one per CPU)"
    worker_class = env.get("SMALGO_BENCH_WORKER_CLASS") or "the server's default worker class"
    return f"{cpus} CPUs, {workers} gunicorn workers, {worker_class}"


class Server:
    """One server process tree on a free loopback port."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.args, self.env, self.log = args, dict(env), log
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 120.0) -> None:
        port = free_port()
        self.env["SAGEMAKER_BIND_TO_PORT"] = str(port)
        self.url = f"http://127.0.0.1:{port}/invocations"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(SERVERS), *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server {self.args[0]} exited at start:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"server {self.args[0]} did not answer /ping within {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's master and its live workers:
        the cost per request, which the machine's other load does not inflate as it does
        requests/s."""
        pids = [self.process.pid] + [
            int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent_of(p) == self.process.pid
        ]
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _parent_of(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
