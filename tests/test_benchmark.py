"""`smalgo benchmark` and `smalgo benchmark-report` (smalgo.containers.benchmark): the instance
type lookup (EC2's IMDSv2 played by a loopback server), prices, the load generators, the command
end to end (short runs on 1 CPU and on all of them) and the report over their results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.registry import get_algorithm
from smalgo.containers import cli
from smalgo.containers.benchmark import data, load, machine, peers, prices, report, results, training
from smalgo.recordio import read
from smalgo.recordio.parallel import available_cpus

TOKEN = "AQAEAFakeToken=="


class FakeImds:
    """A loopback server that answers as EC2's IMDSv2: PUT /latest/api/token with the TTL header
    gives a token; GET /latest/meta-data/instance-type with that token gives the instance type;
    anything else is 400 (token request without TTL) or 401 (no or wrong token), as EC2 answers."""

    def __init__(self, instance_type: str = "m5.xlarge"):
        self.instance_type = instance_type
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                imds.requests.append(("PUT", self.path, dict(self.headers)))
                ttl = self.headers.get(machine.TOKEN_TTL_HEADER)
                if self.path != machine.TOKEN_PATH or not ttl or not ttl.isdigit():
                    return self._answer(400)
                self._answer(200, TOKEN)

            def do_GET(self):
                imds.requests.append(("GET", self.path, dict(self.headers)))
                if self.headers.get(machine.TOKEN_HEADER) != TOKEN:
                    return self._answer(401)
                if self.path != machine.INSTANCE_TYPE_PATH:
                    return self._answer(404)
                self._answer(200, imds.instance_type)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeImds:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_imdsv2_lookup_asks_for_a_token_then_the_instance_type_with_it():
    with FakeImds("c5.2xlarge") as imds:
        assert machine.imds_instance_type(imds.url) == "c5.2xlarge"
    (put_method, put_path, put_headers), (get_method, get_path, get_headers) = imds.requests
    assert (put_method, put_path) == ("PUT", "/latest/api/token")
    assert int(put_headers["X-aws-ec2-metadata-token-ttl-seconds"]) > 0
    assert (get_method, get_path) == ("GET", "/latest/meta-data/instance-type")
    assert get_headers["X-aws-ec2-metadata-token"] == TOKEN


def test_the_instance_type_comes_from_imds_when_nothing_else_names_it(tmp_path):
    with FakeImds("m5.large") as imds:
        found = machine.resolve_instance_type(None, {}, resourceconfig=tmp_path / "missing.json", imds_url=imds.url)
    assert found == machine.InstanceType("m5.large", "EC2 instance metadata (IMDSv2)")


def test_an_imds_answer_that_is_not_an_instance_type_is_ignored():
    with FakeImds("<html>captive portal</html>") as imds:
        assert machine.imds_instance_type(imds.url) is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["closed port", "silent server"])
def test_imds_lookup_falls_back_within_a_second_when_nothing_answers(kind):
    if kind == "closed port":
        url, listener = f"http://127.0.0.1:{_closed_port()}", None
    else:  # accepts connections (the kernel's backlog) and never says a word
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        started = time.monotonic()
        found = machine.resolve_instance_type(None, {}, resourceconfig=Path("/nonexistent"), imds_url=url)
        elapsed = time.monotonic() - started
    finally:
        if listener is not None:
            listener.close()
    assert found.name is None and found.source.startswith("none found")
    assert elapsed < 3.0, f"the fallback took {elapsed:.2f} s"


def test_the_option_then_the_variable_then_resourceconfig_name_the_instance_type(tmp_path):
    resourceconfig = tmp_path / "resourceconfig.json"
    resourceconfig.write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "current_instance_type": "ml.c5.xlarge"})
    )
    with FakeImds("m5.large") as imds:

        def resolve(option, env):
            return machine.resolve_instance_type(option, env, resourceconfig=resourceconfig, imds_url=imds.url)

        assert resolve("ml.m5.4xlarge", {"SMALGO_INSTANCE_TYPE": "ml.p3.2xlarge"}).source == "--instance-type"
        assert resolve(None, {"SMALGO_INSTANCE_TYPE": "ml.p3.2xlarge"}) == machine.InstanceType(
            "ml.p3.2xlarge", "SMALGO_INSTANCE_TYPE"
        )
        from_job = resolve(None, {})
        assert from_job.name == "ml.c5.xlarge" and "current_instance_type" in from_job.source
        assert imds.requests == []  # never asked when something nearer named it
    with pytest.raises(UserError, match="--instance-type 'm5 large'"):
        machine.resolve_instance_type("m5 large", {})
    with pytest.raises(UserError, match="SMALGO_INSTANCE_TYPE"):
        machine.resolve_instance_type(None, {"SMALGO_INSTANCE_TYPE": "big one"})


def test_machine_description():
    described = machine.describe_machine(machine.InstanceType(None, "none found"))
    assert described["vcpus"] <= described["host_vcpus"]
    assert described["vcpus"] <= available_cpus()
    assert described["cpu_model"] and described["memory_gib"] > 0
    assert isinstance(described["gpus"], list)
    assert described["name"].endswith(f"-{described['host_vcpus']}cpu")
    assert machine.machine_name("ml.m5.xlarge", "x", 4) == "ml.m5.xlarge"
    assert (
        machine.machine_name(None, "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", 4)
        == "intel-xeon-platinum-8259cl-4cpu"
    )


def test_price_table_says_where_its_figures_come_from_and_prices_ml_and_ec2_names():
    raw = json.loads(prices.PRICES_FILE.read_text())
    assert raw["region"] == "us-east-1" and raw["collected"] and "aws.amazon.com/sagemaker/pricing" in raw["source"]
    assert "on-demand" in raw["pricing"] and raw["about"]
    table = prices.load_price_table()
    assert table.lookup("ml.m5.xlarge") == ("ml.m5.xlarge", table.prices["ml.m5.xlarge"])
    assert table.lookup("m5.xlarge") == ("ml.m5.xlarge", table.prices["ml.m5.xlarge"])
    assert table.lookup("x9.huge") is None and table.lookup(None) is None
    assert all(0 < price < 100 for price in table.prices.values())
    priced = prices.resolve_price("m5.xlarge", None)
    assert priced["per_hour"] == table.prices["ml.m5.xlarge"] and priced["priced_as"] == "ml.m5.xlarge"
    assert "us-east-1" in priced["source"] and table.collected in priced["source"]
    assert prices.resolve_price("m5.xlarge", 1.5)["per_hour"] == 1.5
    assert prices.resolve_price("m5.xlarge", 1.5)["source"] == "--price-per-hour"
    assert prices.resolve_price(None, None)["per_hour"] is None
    # $0.36/hour at 100 records/s: 360,000 records an hour, so $1 per million.
    assert prices.usd_per_million(0.36, 100.0) == pytest.approx(1.0)
    assert prices.usd_per_million(None, 100.0) is None


def test_benchmark_hyperparameters_are_the_sample_jobs_with_one_pass_and_the_default_batch():
    kmeans = training.benchmark_hyperparameters(get_algorithm("kmeans"), 20)
    assert kmeans["epochs"] == "1" and "mini_batch_size" not in kmeans and kmeans["feature_dim"] == "20"
    pca = training.benchmark_hyperparameters(get_algorithm("pca"), 20)
    assert pca["mini_batch_size"] == get_algorithm("pca").sample_job.hyperparameters["mini_batch_size"]  # required
    xgboost = training.benchmark_hyperparameters(get_algorithm("xgboost"), 20)
    assert "epochs" not in xgboost and xgboost["num_round"] == "10"


def test_generated_data_writes_sparse_recordio_and_csv_with_the_label_first(tmp_path):
    dataset = data.generate(3000, 12, density=0.25, seed=3)
    assert dataset.sparse and 0.15 < dataset.X.nnz / (3000 * 12) < 0.35
    assert set(np.unique(dataset.labels)) == {0.0, 1.0}
    X, y = read(str(data.write_channel_file(dataset, tmp_path / "train.pbr", data.RECORDIO, labelled=True)))
    np.testing.assert_array_equal(X.toarray(), dataset.dense())
    np.testing.assert_array_equal(y, dataset.labels)
    csv = np.loadtxt(
        data.write_channel_file(dataset, tmp_path / "train.csv", data.CSV_FORM, labelled=True), delimiter=","
    )
    np.testing.assert_allclose(csv[:, 0], dataset.labels)
    np.testing.assert_allclose(csv[:, 1:], dataset.dense(), rtol=1e-6)
    assert data.content_type(get_algorithm("factorization-machines"), data.CSV_FORM) is None
    assert data.content_type(get_algorithm("kmeans"), data.CSV_FORM) == "text/csv;label_size=0"
    assert data.content_type(get_algorithm("xgboost"), data.CSV_FORM) == "text/csv"


class _Answers(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1: /ok answers with a Content-Length, /chunked in chunks, /bad with 500."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = b'{"n": %d}' % len(body)
        status = 500 if self.path == "/bad" else 200
        self.send_response(status)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(answer), answer))
        else:
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)


@pytest.mark.parametrize(("path", "answered"), [("/ok", True), ("/chunked", True), ("/bad", False)])
def test_builtin_load_generator_counts_answers_and_latencies(path, answered):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = load.Load(f"http://127.0.0.1:{server.server_address[1]}{path}", b"1,2,3\n", "text/csv", "*/*")
        if answered:
            result = load.run_load(load.BUILTIN, target, seconds=0.5, connections=2)
            assert result.generator == "builtin" and result.connections == 2 and result.errors == 0
            assert result.requests > 10 and result.requests_per_s == pytest.approx(result.requests / 0.5)
            assert 0 < result.p50_ms <= result.p99_ms < 500
        else:
            with pytest.raises(RuntimeError, match="no request .* was answered"):
                load.run_load(load.BUILTIN, target, seconds=0.3, connections=1)
    finally:
        server.shutdown()
        server.server_close()


WRK_REPORT = """Running 2s test @ http://127.0.0.1:8080/invocations
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  600.00us  12.00ms   90.00%
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    1.80ms
     99%    3.50ms
  9000 requests in 2.00s, 1.20MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   4500.00
Transfer/sec:    600.00KB
"""


def test_wrk_report_is_read():
    result = load.parse_wrk(WRK_REPORT, connections=4, seconds=2)
    assert (result.requests, result.errors, result.requests_per_s) == (9000, 3, 4500.0)
    assert (result.p50_ms, result.p99_ms) == (pytest.approx(0.85), pytest.approx(3.5))
    with pytest.raises(ValueError, match="cannot read wrk's report"):
        load.parse_wrk("wrk: connection refused", connections=4, seconds=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rows", "10"], "--rows 10"),
        (["--density", "0"], "--density 0"),
        (["--cpus", "999"], "--cpus 999"),
        (["--algorithm", "kmeanz"], "--algorithm 'kmeanz'"),
        (["--seconds", "0"], "--seconds 0"),
        (["--price-per-hour", "-1"], "--price-per-hour -1"),
        (["--instance-type", "not a type"], "--instance-type 'not a type'"),
        (["--output", "/proc/no-such-dir"], "--output /proc/no-such-dir"),
    ],
)
def test_bad_options_are_refused_naming_them(args, message, capsys, tmp_path):
    assert cli.main(["benchmark", "--quick", "--output", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smalgo benchmark: ") and message in err
    assert not any(tmp_path.iterdir())


def _benchmark(out: Path, *args: str) -> tuple[dict, str]:
    run = subprocess.run(
        [sys.executable, "-m", "smalgo.containers", "benchmark", "--algorithm", "kmeans", "--quick"]
        + ["--instance-type", "ml.m5.large", "--output", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (path,) = out.glob("*.json")
    assert path.with_suffix(".md").exists()
    return json.loads(path.read_text()), run.stdout


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    """Short k-means runs: on 1 CPU with the built-in load generator, and on every CPU with the
    default one (wrk when installed)."""
    base = tmp_path_factory.mktemp("benchmarks")
    _benchmark(base / "one", "--cpus", "1", "--load-generator", "builtin")
    _benchmark(base / "all")
    return [next((base / name).glob("*.json")) for name in ("one", "all")]


def test_benchmark_result_holds_training_inference_machine_and_cost(two_runs):
    one = results.read_result(two_runs[0])
    assert (one["schema"], one["schema_version"], one["kind"]) == ("smalgo-benchmark", 1, "benchmark")
    assert one["machine"]["vcpus"] == 1 and one["machine"]["instance_type"] == "ml.m5.large"
    assert one["settings"]["workers"] == 1 and one["settings"]["load_generator"] == "builtin"
    assert one["price"]["per_hour"] == prices.load_price_table().prices["ml.m5.large"]
    (kmeans,) = one["algorithms"]
    assert kmeans["name"] == "kmeans" and kmeans["hyperparameters"]["epochs"] == "1"
    assert {t["form"] for t in kmeans["training"]} == {"recordio", "csv"}
    for trained in kmeans["training"]:
        assert trained["records"] == one["settings"]["rows"] and trained["records_per_s"] > 0
        assert trained["usd_per_million"] == pytest.approx(
            one["price"]["per_hour"] / 3600 / trained["records_per_s"] * 1e6
        )
    loads = {(i["form"], i["records_per_request"]): i for i in kmeans["inference"]}
    assert set(loads) == {("csv", 1), ("csv", 1000), ("recordio", 1), ("recordio", 1000)}
    for (_, records), measured in loads.items():
        assert measured["errors"] == 0 and measured["requests"] > 0
        assert measured["records_per_s"] == pytest.approx(measured["requests_per_s"] * records)
        assert 0 < measured["p50_ms"] <= measured["p99_ms"]
    assert loads[("recordio", 1)]["accept"] == "application/x-recordio-protobuf"


def test_benchmark_summary_is_printed_and_written(tmp_path, two_runs):
    summary = two_runs[1].with_suffix(".md").read_text()
    assert "## smalgo benchmark on ml.m5.large" in summary
    assert "| kmeans | RecordIO |" in summary and "| kmeans | CSV, 1,000 records |" in summary


def test_report_over_one_and_all_cpus_writes_the_table_and_the_plots(tmp_path, two_runs):
    out = tmp_path / "report"
    assert cli.main(["benchmark-report", *map(str, two_runs), "--output", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| machine | algorithm | RecordIO | CSV |" in text
    assert "ml.m5.large, 1 vCPU" in text
    assert "![throughput](throughput.png)" in text
    expected = {"throughput.png", "per_vcpu.png", "cost.png", "latency.png"}
    if available_cpus() > 1:
        expected.add("scaling.png")
        assert "### Scaling with vCPUs" in text
    assert expected <= {p.name for p in out.iterdir()}
    from PIL import Image

    for name in expected:
        with Image.open(out / name) as image:
            width, height = image.size
            assert width >= 800 and height >= 400, (name, image.size)
            pixels = np.asarray(image.convert("RGB"))
        # Not blank: many colours, and a good share of the picture is not the background.
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, name
        assert (pixels != pixels[0, 0]).any(axis=2).mean() > 0.05, name


def test_report_without_matplotlib_writes_the_table_and_says_how_to_get_plots(tmp_path, two_runs, monkeypatch, capsys):
    def no_matplotlib(*args, **kwargs):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(report, "write_plots", no_matplotlib)
    assert cli.main(["benchmark-report", str(two_runs[0]), "--output", str(tmp_path)]) == 1
    assert "smalgo[report]" in capsys.readouterr().err
    assert "| kmeans |" in (tmp_path / "report.md").read_text()
    assert not list(tmp_path.glob("*.png"))
    assert cli.main(["benchmark-report", str(two_runs[0]), "--output", str(tmp_path), "--no-plots"]) == 0


def test_report_refuses_what_is_not_a_result_naming_the_file(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema": "smalgo-benchmark", "schema_version": 99, "kind": "benchmark"}))
    for path, message in ((other, "not a smalgo benchmark result"), (newer, "schema_version 99")):
        assert cli.main(["benchmark-report", str(path), "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and message in err


def test_an_image_runs_the_benchmark_through_the_entrypoint(tmp_path):
    """As `docker run IMAGE benchmark`: SMALGO_ALGORITHM chooses the algorithm."""
    env = dict(os.environ, SMALGO_ALGORITHM="pca", SMALGO_INSTANCE_TYPE="ml.c5.xlarge")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "smalgo.containers",
            "benchmark",
            "--quick",
            "--seconds",
            "0.5",
            "--output",
            str(tmp_path),
        ]
        + ["--density", "0.3", "--load-generator", "builtin"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert [a["name"] for a in result["algorithms"]] == ["pca"]
    assert result["settings"]["sparse"] and result["machine"]["instance_type_source"] == "SMALGO_INSTANCE_TYPE"
    assert "| pca | RecordIO, 1,000 records |" in run.stdout


def test_peer_comparisons_are_recorded_per_machine_and_merged_by_benchmark(tmp_path, monkeypatch, capsys):
    """What `make bench`'s scripts write: benchmarks/results/<machine>.json (the result schema,
    kind "peers") and the Markdown table of ratios beside it, one entry per benchmark."""
    monkeypatch.setenv("SMALGO_INSTANCE_TYPE", "ml.c5.xlarge")
    faster = peers.Comparison("6 MB", "decoding throughput", "MB/s", 300.0, "numpy.loadtxt", 50.0, True)
    slower = peers.Comparison("20,000 x 10", "training time", "s", 2.0, "MiniBatchKMeans", 1.0, False)
    assert (faster.ratio, slower.ratio) == (6.0, 0.5)
    path = peers.record("csv", [faster], results_dir=tmp_path)
    peers.record("kmeans", [slower], results_dir=tmp_path)
    peers.record("csv", [faster], results_dir=tmp_path)  # a second run replaces its own entry only
    assert path == tmp_path / "ml.c5.xlarge.json"
    recorded = results.read_result(path)
    assert recorded["kind"] == "peers" and set(recorded["benchmarks"]) == {"csv", "kmeans"}
    (kmeans,) = recorded["benchmarks"]["kmeans"]["comparisons"]
    assert kmeans["ratio"] == 0.5 and kmeans["peer"] == "MiniBatchKMeans" and not kmeans["higher_is_better"]
    table = path.with_suffix(".md").read_text()
    assert "| csv | 6 MB | decoding throughput (MB/s, higher is better) | 300 | numpy.loadtxt | 50.0 | 6.00x |" in table
    assert (
        "| kmeans | 20,000 x 10 | training time (s, lower is better) | 2.00 | MiniBatchKMeans | 1.00 | 0.50x |" in table
    )
    # benchmark-report reads it too, beside benchmark results.
    assert cli.main(["benchmark-report", str(path), "--output", str(tmp_path / "report"), "--no-plots"]) == 0
    assert "smalgo against its peers on ml.c5.xlarge" in capsys.readouterr().out
