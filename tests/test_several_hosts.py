"""Jobs of several hosts: the collective (algorithms/runtime/collective.py), the local
`smalgo train --hosts N` (containers/local_job.py) and the algorithms that train across hosts
(PCA, k-means, XGBoost, factorization machines, linear learner), each against one host on the
union of the data.

Every job here runs as real processes on loopback addresses (one per host, as SageMaker runs one
container per instance): 2 CPUs are shared, so the data are small and the jobs few.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import start_host

from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.registry import get_algorithm
from smalgo.containers.config import hosts_settings
from smalgo.containers.job import run_training
from smalgo.containers.local_job import free_port, lay_out_hosts_job, lay_out_job

SMALGO = [sys.executable, "-m", "smalgo.containers"]
CSV_NO_LABEL = "text/csv;label_size=0"


def write_parts(directory: Path, parts: list[np.ndarray]) -> Path:
    """One CSV file per part (float32 values written exactly), part0.csv, part1.csv, ..."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, part in enumerate(parts):
        np.savetxt(directory / f"part{index}.csv", part.astype(np.float32), delimiter=",", fmt="%.9g")
    return directory


def train_hosts(tmp_path: Path, algorithm: str, data: Path, hosts: int, *hyperparameters: str, **options):
    """`smalgo train --hosts N` in a subprocess; (result, [job directory of each host])."""
    command = [*SMALGO, "train", "--algorithm", algorithm, "--train", str(data), "--output", str(tmp_path / "job")]
    command += ["--content-type", options.get("content_type", CSV_NO_LABEL), "--hosts", str(hosts)]
    for channel in ("validation", "test"):
        if options.get(channel):
            command += [f"--{channel}", str(options[channel])]
    if options.get("distribution"):
        command += ["--distribution", f"train={options['distribution']}"]
    command += ["--hyperparameters", *hyperparameters]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    return result, [tmp_path / "job" / f"algo-{k}" for k in range(1, hosts + 1)]


def quality_lines(output: str, host: str) -> list[str]:
    """A host's metric lines (the platform's, or XGBoost's `[i]\ttrain-rmse:...`), without their
    time stamp and host name."""
    return [
        line.split("] ", 2)[-1].replace(f"host={host}, ", "")
        for line in output.splitlines()
        if line.startswith(f"[{host}]") and ("#quality_metric" in line or re.search(r"\] \[\d+\]\t", line))
    ]


def check_job_succeeded(result, jobs: list[Path]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    for job in jobs:
        assert (job / "output" / "success").exists()
        assert not (job / "output" / "failure").exists()
    assert any((jobs[0] / "model").iterdir())
    for job in jobs[1:]:
        assert not any((job / "model").iterdir()), "only the first host writes the model"
    # Every host logs the same job-wide metrics.
    first = quality_lines(result.stderr, "algo-1")
    assert first
    for k in range(2, len(jobs) + 1):
        assert quality_lines(result.stderr, f"algo-{k}") == first


# --------------------------------------------------------------------------- the collective

COLLECTIVE_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    from smalgo.algorithms.runtime.collective import Hosts
    names = ["algo-1", "algo-2", "algo-3"]
    me, port = sys.argv[1], int(sys.argv[2])
    addresses = {name: f"127.0.0.{k}" for k, name in enumerate(names, start=1)}
    with Hosts(names, me, addresses=addresses, port=port, connect_timeout=60, timeout=60) as hosts:
        r = hosts.rank
        total = hosts.all_reduce_sum(np.arange(4, dtype=np.float64) * (r + 1))
        sent = hosts.broadcast(np.array([[1.5, -0.0], [3.0, 4.25]], dtype=np.float32) if r == 1 else None, root=1)
        gathered = hosts.all_gather(np.full((r, 2), r, dtype=np.int32))  # algo-1 adds no rows
        print(r, total.tolist(), sent.dtype.str, sent.tolist(), [g.tolist() for g in gathered], flush=True)
    """
)


def test_the_collective_sums_broadcasts_and_gathers_across_three_processes():
    port = free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", COLLECTIVE_SCRIPT, name, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("algo-3", "algo-2", "algo-1")  # the tracker's host last: the others wait for it
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    lines = sorted(out.strip().splitlines()[-1] for out, _ in outputs)  # after the tracker's lines
    gathered = "[[], [[1, 1]], [[2, 2], [2, 2]]]"
    for rank, line in enumerate(lines):
        assert line == f"{rank} [0.0, 6.0, 12.0, 18.0] <f4 [[1.5, -0.0], [3.0, 4.25]] {gathered}"


def test_the_watch_reports_a_host_gone_without_done_and_nothing_for_one_that_leaves(monkeypatch):
    import threading

    from smalgo.algorithms.runtime import watch

    monkeypatch.setattr(watch, "WATCH_GRACE_SECONDS", 0.2)
    names = ["algo-1", "algo-2", "algo-3"]
    lost: dict[str, list[str]] = {name: [] for name in names}
    reported = threading.Event()

    def on_lost(name):
        def record(message):
            lost[name].append(message)
            reported.set()

        return record

    port = free_port()
    deadline = time.monotonic() + 30
    first = watch.HostWatch(names, "algo-1", on_lost("algo-1"))
    first.listen("127.0.0.1", port, deadline)
    second, third = (watch.HostWatch(names, name, on_lost(name)) for name in names[1:])
    second.connect("127.0.0.1", port, deadline)
    third.connect("127.0.0.1", port, deadline)
    second.close(finished=True)  # algo-2 leaves normally: nobody is told anything
    time.sleep(0.5)
    assert not reported.is_set()
    third.close(finished=False)  # algo-3 fails (or its process ends): its connection ends without done
    assert reported.wait(10)
    assert lost["algo-1"] == [
        "Host algo-1 lost contact with the other hosts (algo-1, algo-2, algo-3): algo-3 is gone without leaving "
        "the group (its process ended or its machine was lost); this host was waiting on it, and stops (the lost "
        "host's output/failure, if it wrote one, says why)."
    ]
    first.close(finished=False)  # algo-1 failing by itself: the others would be told, but are gone
    assert lost["algo-2"] == [] and lost["algo-3"] == []


# --------------------------------------------------------------------------- PCA


def pca_data(rng: np.random.Generator, parts: int, rows: int = 300) -> list[np.ndarray]:
    basis = rng.normal(size=(3, 8))
    return [
        (rng.normal(size=(rows, 3)) * [5, 2, 1]) @ basis + 0.1 * rng.normal(size=(rows, 8)) + 100.0
        for _ in range(parts)
    ]


def one_host_model(algorithm_name: str, union, **raw):
    """The model one host trains on `union` (X, or (X, y)), in this process."""
    algorithm = get_algorithm(algorithm_name)
    hp = algorithm.hyperparameters.parse({key: str(value) for key, value in raw.items()})
    return algorithm.train(hp, InMemoryData({"train": union}))


@pytest.mark.parametrize(
    ("hosts", "distribution", "mode", "files"),
    [
        (2, "ShardedByS3Key", "regular", 4),
        (3, "FullyReplicated", "randomized", 4),
        (3, "ShardedByS3Key", "regular", 2),  # algo-3 has no rows
    ],
)
def test_pca_on_several_hosts_equals_one_host_on_the_union(tmp_path, hosts, distribution, mode, files):
    parts = pca_data(np.random.default_rng(7), files)
    union = np.vstack([part.astype(np.float32) for part in parts]).astype(np.float64)
    hp = {"feature_dim": 8, "num_components": 3, "mini_batch_size": 100, "algorithm_mode": mode}
    if mode == "randomized":
        hp["extra_components"] = 2  # a sketch narrower than the data: the sketch's sums are combined
    result, jobs = train_hosts(
        tmp_path,
        "pca",
        write_parts(tmp_path / "data", parts),
        hosts,
        *(f"{k}={v}" for k, v in hp.items()),
        distribution=distribution,
    )
    check_job_succeeded(result, jobs)
    if files < hosts:
        assert re.search(r"\[algo-3\].*this host's shard holds no files", result.stderr)
    several = get_algorithm("pca").load(jobs[0] / "model")
    one = one_host_model("pca", union.astype(np.float32), **hp)
    assert several.n_rows == one.n_rows == union.shape[0]
    print(
        f"PCA {hosts} hosts vs one: components {np.abs(several.components - one.components).max():.2e}, "
        f"singular values {np.abs(several.singular_values / one.singular_values - 1).max():.2e} (relative), "
        f"mean {np.abs(several.mean - one.mean).max():.2e}"
    )
    np.testing.assert_allclose(several.mean, one.mean, rtol=1e-6)
    np.testing.assert_allclose(several.singular_values, one.singular_values, rtol=1e-4)
    np.testing.assert_allclose(several.components, one.components, atol=1e-4)


# --------------------------------------------------------------------------- k-means


def kmeans_data(rng: np.random.Generator, parts: int, rows: int = 400) -> list[np.ndarray]:
    centers = rng.normal(0, 6, size=(5, 4))
    return [centers[rng.integers(0, 5, rows)] + rng.normal(size=(rows, 4)) for _ in range(parts)]


def msd(centers: np.ndarray, X: np.ndarray) -> float:
    return float((((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)).min(axis=1).mean())


def test_kmeans_sharded_over_three_hosts_one_without_data_is_as_good_as_one_host(tmp_path):
    # Two files for three hosts: algo-3's shard is empty, and it takes part without data.
    parts = kmeans_data(np.random.default_rng(3), 2)
    union = np.vstack([part.astype(np.float32) for part in parts]).astype(np.float64)
    hp = {"k": 5, "feature_dim": 4, "mini_batch_size": 100, "epochs": 2}
    result, jobs = train_hosts(
        tmp_path,
        "kmeans",
        write_parts(tmp_path / "data", parts),
        3,
        *(f"{k}={v}" for k, v in hp.items()),
        distribution="ShardedByS3Key",
        test=write_parts(tmp_path / "test", [union[:500]]),
    )
    check_job_succeeded(result, jobs)
    assert re.search(
        r"\[algo-3\].*this host's shard holds no files: this host takes part without train data", result.stderr
    )
    model = get_algorithm("kmeans").load(jobs[0] / "model")
    one = one_host_model("kmeans", union.astype(np.float32), **hp)
    several_msd, one_msd = msd(model.centers, union), msd(one.centers, union)
    print(f"k-means msd on the union: 3 hosts (one empty) {several_msd:.6f}, one host {one_msd:.6f}")
    assert several_msd <= one_msd * 1.01, (several_msd, one_msd)
    # The test channel (FullyReplicated: a third of its rows on each host) scored job-wide.
    logged = re.search(r"#quality_metric: host=algo-3, test msd <loss>=(\S+)", result.stderr)
    assert logged is not None
    assert float(logged.group(1)) == pytest.approx(msd(model.centers, union[:500]), rel=1e-5)
    assert json.loads((jobs[0] / "model" / "model.json").read_text())["details"]["records_seen"] == 2 * union.shape[0]


def test_kmeans_fully_replicated_over_two_hosts_reads_each_row_once(tmp_path):
    parts = kmeans_data(np.random.default_rng(4), 1, rows=900)
    union = parts[0].astype(np.float32).astype(np.float64)
    hp = {"k": 5, "feature_dim": 4, "mini_batch_size": 100}
    result, jobs = train_hosts(
        tmp_path, "kmeans", write_parts(tmp_path / "data", parts), 2, *(f"{k}={v}" for k, v in hp.items())
    )
    check_job_succeeded(result, jobs)
    assert "[algo-2]" in result.stderr and "FullyReplicated: rows 1, 3, ..." in result.stderr
    assert re.search(r"\[algo-1\].*Channel train, pass 1: .*450 records", result.stderr)
    model = get_algorithm("kmeans").load(jobs[0] / "model")
    one = one_host_model("kmeans", union.astype(np.float32), **hp)
    print(f"k-means msd on the union: 2 hosts {msd(model.centers, union):.6f}, one host {msd(one.centers, union):.6f}")
    assert msd(model.centers, union) <= msd(one.centers, union) * 1.01
    assert json.loads((jobs[0] / "model" / "model.json").read_text())["details"]["records_seen"] == 900


# --------------------------------------------------------------------------- XGBoost


def regression_parts(rng: np.random.Generator, parts: int, rows: int = 300) -> list[np.ndarray]:
    weights = rng.normal(size=5)
    out = []
    for _ in range(parts):
        X = rng.normal(size=(rows, 5))
        out.append(np.column_stack([X @ weights + 0.3 * rng.normal(size=rows), X]))
    return out


@pytest.mark.parametrize(
    ("hosts", "distribution", "files"),
    [(2, "ShardedByS3Key", 3), (3, "FullyReplicated", 3), (3, "ShardedByS3Key", 2)],  # the last: algo-3 empty
)
def test_xgboost_on_several_hosts_predicts_as_one_host_on_the_union(tmp_path, hosts, distribution, files):
    import xgboost as xgb

    parts = regression_parts(np.random.default_rng(5), files)
    union = np.vstack([part.astype(np.float32) for part in parts])
    hp = ["num_round=8", "objective=reg:squarederror", "eval_metric=rmse,mse", "max_depth=4"]
    result, jobs = train_hosts(
        tmp_path,
        "xgboost",
        write_parts(tmp_path / "data", parts),
        hosts,
        *hp,
        content_type="text/csv",
        distribution=distribution,
    )
    check_job_succeeded(result, jobs)
    if files < hosts:
        assert re.search(r"\[algo-3\].*it takes part in training without them", result.stderr)
    several = get_algorithm("xgboost").load(jobs[0] / "model").boosters[0]
    one = one_host_model("xgboost", (union[:, 1:], union[:, 0]), num_round=8, objective="reg:squarederror", max_depth=4)
    matrix = xgb.DMatrix(union[:, 1:])
    difference = np.abs(several.predict(matrix) - one.boosters[0].predict(matrix)).max()
    print(f"XGBoost {hosts} hosts ({files} files) vs one: largest prediction difference {difference:.2e}")
    # Only XGBoost's distributed rounding of the histogram sums may separate the two (measured: 0 to 1.2e-7).
    np.testing.assert_allclose(several.predict(matrix), one.boosters[0].predict(matrix), rtol=1e-5, atol=1e-5)


# nthread=1: each host's threads on all of the machine's shared cores make the rounds 100 times slower.
XGBOOST_CHECKPOINT_HP = {"num_round": "12", "objective": "reg:squarederror", "max_depth": "3", "nthread": "1"}

# `smalgo train` with every round slowed down (after its checkpoint is written): a job to kill.
SLOW_XGBOOST_HOST = textwrap.dedent(
    """
    import sys, time
    import xgboost as xgb
    from smalgo.containers.cli import main

    original = xgb.train
    def slow_train(*args, callbacks=(), **kwargs):
        class Slow(xgb.callback.TrainingCallback):
            def after_iteration(self, model, epoch, evals_log):
                time.sleep(0.3)
                return False
        return original(*args, callbacks=[*callbacks, Slow()], **kwargs)
    xgb.train = slow_train
    sys.exit(main(["train", "--algorithm", "xgboost"]))
    """
)


def xgboost_hosts_job(directory: Path, data: Path) -> list[Path]:
    """A 2-host XGBoost job on `data` (ShardedByS3Key), each host with its own checkpoint
    directory, host/checkpoints."""
    paths = lay_out_hosts_job(
        directory,
        hosts=2,
        hyperparameters=XGBOOST_CHECKPOINT_HP,
        channels={"train": data},
        content_type="text/csv",
        distributions={"train": "ShardedByS3Key"},
    )
    for host in paths:
        host.checkpointconfig_file.write_text(json.dumps({"LocalPath": str(host.base / "checkpoints")}))
    return [host.base for host in paths]


def run_xgboost_hosts(jobs: list[Path], *, slow: bool = False) -> list[subprocess.Popen]:
    port = free_port()
    command = [sys.executable, "-c", SLOW_XGBOOST_HOST] if slow else None
    return [start_host(job, port, len(jobs), "xgboost", command=command) for job in jobs]


def xgboost_checkpoints(directory: Path) -> list[str]:
    names = [p.name for p in directory.glob("xgboost-checkpoint.*")] if directory.is_dir() else []
    return sorted(names, key=lambda name: int(name.rsplit(".", 1)[1]))


def test_xgboost_on_two_hosts_checkpoints_on_the_first_and_a_killed_job_resumes_to_the_same_model(tmp_path):
    """Only algo-1 writes checkpoints (every host holds the same booster after a round); a job
    whose hosts were all killed (SIGKILL) resumes on both hosts from algo-1's checkpoints, as
    SageMaker gives each host the job's checkpoints, passing over a truncated newer one on each,
    and ends with the model of an uninterrupted job: the same trees, the same predictions."""
    import xgboost as xgb

    parts = regression_parts(np.random.default_rng(8), 2, rows=200)
    data = write_parts(tmp_path / "data", parts)
    # Uninterrupted.
    plain = xgboost_hosts_job(tmp_path / "plain", data)
    for process in run_xgboost_hosts(plain):
        assert process.wait(timeout=300) == 0, [(job / "log").read_text()[-3000:] for job in plain]
    assert xgboost_checkpoints(plain[0] / "checkpoints") == [f"xgboost-checkpoint.{i}" for i in range(7, 12)]
    assert xgboost_checkpoints(plain[1] / "checkpoints") == []
    # Killed after a few rounds.
    killed = xgboost_hosts_job(tmp_path / "killed", data)
    processes = run_xgboost_hosts(killed, slow=True)
    deadline = time.monotonic() + 120
    while len(xgboost_checkpoints(killed[0] / "checkpoints")) < 4 and time.monotonic() < deadline:
        assert all(process.poll() is None for process in processes), (killed[0] / "log").read_text()[-3000:]
        time.sleep(0.05)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    for process in processes:
        process.wait(timeout=60)
    written = xgboost_checkpoints(killed[0] / "checkpoints")
    newest = int(written[-1].rsplit(".", 1)[1])
    assert 3 <= newest < 11 and xgboost_checkpoints(killed[1] / "checkpoints") == []
    assert not any((killed[0] / "model").iterdir())
    # What SageMaker gives each host on the restart: the job's checkpoints, here with a newer one
    # that an interrupted upload cut short.
    shutil.copytree(killed[0] / "checkpoints", killed[1] / "checkpoints", dirs_exist_ok=True)
    damaged = f"xgboost-checkpoint.{newest + 1}"
    whole = (plain[0] / "checkpoints" / "xgboost-checkpoint.11").read_bytes()
    for job in killed:
        (job / "checkpoints" / damaged).write_bytes(whole[: len(whole) // 2])
    for process in run_xgboost_hosts(killed):
        assert process.wait(timeout=300) == 0, [(job / "log").read_text()[-3000:] for job in killed]
    for job in killed:
        log = (job / "log").read_text()
        assert f"Not resuming from the checkpoint {job / 'checkpoints' / damaged}: it is truncated" in log
        assert f"Resuming from checkpoint {job / 'checkpoints' / written[-1]} ({newest + 1} rounds done)" in log
    assert xgboost_checkpoints(killed[0] / "checkpoints") == [f"xgboost-checkpoint.{i}" for i in range(7, 12)]
    resumed = get_algorithm("xgboost").load(killed[0] / "model").boosters[0]
    uninterrupted = get_algorithm("xgboost").load(plain[0] / "model").boosters[0]
    assert not any((killed[1] / "model").iterdir())
    assert resumed.num_boosted_rounds() == 12
    assert resumed.get_dump(dump_format="json") == uninterrupted.get_dump(dump_format="json")
    matrix = xgb.DMatrix(np.vstack(parts)[:, 1:])
    np.testing.assert_array_equal(resumed.predict(matrix), uninterrupted.predict(matrix))


def save_checkpoint(directory: Path, rounds: int) -> None:
    """An XGBoost checkpoint of `rounds` rounds, xgboost-checkpoint.<rounds - 1>, in `directory`."""
    import xgboost as xgb

    rng = np.random.default_rng(rounds)
    X = rng.normal(size=(50, 5))
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(X, label=X[:, 0]), rounds)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"xgboost-checkpoint.{rounds - 1}").write_bytes(bytes(booster.save_raw("ubj")))


def test_xgboost_hosts_with_different_checkpoints_fail_naming_them(tmp_path):
    """(A host without any, and hosts with the same round's checkpoint of other bytes:
    test_checkpoints.py.)"""
    data = write_parts(tmp_path / "data", regression_parts(np.random.default_rng(8), 2, rows=100))
    jobs = xgboost_hosts_job(tmp_path / "job", data)
    save_checkpoint(jobs[0] / "checkpoints", 3)
    save_checkpoint(jobs[1] / "checkpoints", 5)
    started = time.monotonic()
    processes = run_xgboost_hosts(jobs)
    for process in processes:
        process.wait(timeout=60)
    assert time.monotonic() - started < 60
    for rank, (process, job) in enumerate(zip(processes, jobs, strict=True)):
        assert process.returncode == 1, (job / "log").read_text()[-3000:]
        failure = (job / "output" / "failure").read_text()
        assert failure.startswith(
            "The hosts found different XGBoost checkpoints in their checkpoint directories "
            f"({job / 'checkpoints'} here): algo-1: xgboost-checkpoint.2 (3 rounds); algo-2: xgboost-checkpoint.4 "
            "(5 rounds). "
        ), failure
        assert not any((job / "model").iterdir())
        assert xgboost_checkpoints(job / "checkpoints") == [f"xgboost-checkpoint.{2 + 2 * rank}"]


# --------------------------------------------------------------------------- factorization machines


def recommender_parts(rng: np.random.Generator, parts: int, rows: int, levels: int = 30):
    """One-hot user and item fields; label = a rank-4 user x item interaction + noise."""
    import scipy.sparse as sp

    U, W = rng.normal(0, 0.7, (levels, 4)), rng.normal(0, 0.7, (levels, 4))
    out = []
    for _ in range(parts):
        users, items = rng.integers(0, levels, rows), rng.integers(0, levels, rows)
        y = np.einsum("ij,ij->i", U[users], W[items]) + rng.normal(0, 0.1, rows)
        columns = np.column_stack([users, levels + items]).ravel()
        X = sp.csr_matrix(
            (np.ones(2 * rows, np.float32), columns, np.arange(0, 2 * rows + 1, 2)), shape=(rows, 2 * levels)
        )
        out.append((X, y.astype(np.float32)))
    return out


FM_HP = {
    "feature_dim": 60,
    "num_factors": 4,
    "predictor_type": "regressor",
    "epochs": 30,
    "mini_batch_size": 100,
    "bias_lr": 0.1,
    "linear_lr": 0.1,
    "factors_lr": 0.1,
    "factors_init_sigma": 0.1,
    "linear_wd": 0,
    "factors_wd": 0,
}


@pytest.mark.parametrize(
    ("hosts", "distribution", "files"),
    [(2, "ShardedByS3Key", 4), (3, "FullyReplicated", 4), (3, "ShardedByS3Key", 2)],  # the last: algo-3 empty
)
def test_factorization_machines_on_several_hosts_are_as_good_as_one_host(tmp_path, hosts, distribution, files):
    import scipy.sparse as sp

    from smalgo.algorithms.batch import Batch
    from smalgo.recordio import write_sparse

    parts = recommender_parts(np.random.default_rng(11), files, rows=1500)
    data = tmp_path / "data"
    data.mkdir()
    for index, (X, y) in enumerate(parts):
        write_sparse(str(data / f"part{index}.pbr"), X, labels=y)
    (X_test, y_test), *_ = recommender_parts(np.random.default_rng(11), 1, rows=2000)  # the same U, W
    write_sparse(str(tmp_path / "test.pbr"), X_test, labels=y_test)
    result, jobs = train_hosts(
        tmp_path,
        "factorization-machines",
        data,
        hosts,
        *(f"{k}={v}" for k, v in FM_HP.items()),
        content_type="application/x-recordio-protobuf",
        distribution=distribution,
        test=tmp_path / "test.pbr",
    )
    check_job_succeeded(result, jobs)
    if files < hosts:
        assert re.search(r"\[algo-3\].*this host's shard holds no files", result.stderr)
    several = get_algorithm("factorization-machines").load(jobs[0] / "model")
    union = (sp.vstack([X for X, _ in parts]).tocsr(), np.concatenate([y for _, y in parts]))
    one = one_host_model("factorization-machines", union, **FM_HP)

    def rmse(model) -> float:
        return float(np.sqrt(np.mean((model.predict(Batch(X_test))["score"] - y_test) ** 2)))

    print(f"test rmse: {hosts} hosts {rmse(several):.5f}, one host {rmse(one):.5f}")
    assert rmse(several) <= rmse(one) * 1.01
    # The test channel (FullyReplicated: each host scores every N-th row) scored job-wide.
    logged = re.search(r"\[algo-1\].*#quality_metric: host=algo-1, test rmse <loss>=(\S+)", result.stderr)
    assert logged is not None
    assert float(logged.group(1)) == pytest.approx(rmse(several), rel=1e-5)


# --------------------------------------------------------------------------- linear learner


def labelled_parts(rng: np.random.Generator, predictor_type: str, parts: int, rows: int) -> list[np.ndarray]:
    """CSV rows (label first) of 8 features on unequal scales around 10: labels from a noisy
    linear score (regressor), its sign (binary) or its tercile (multiclass); the same weights
    for every part and for a test part drawn after them."""
    weights = rng.normal(size=8)
    out = []
    for _ in range(parts):
        X = rng.normal(size=(rows, 8)) * np.arange(1, 9) + 10
        score = (X - 10) @ weights / 4 + rng.logistic(size=rows) * 0.5
        if predictor_type == "regressor":
            y = score
        elif predictor_type == "binary_classifier":
            y = (score > 0).astype(float)
        else:
            y = np.digitize(score, [-1.5, 1.5]).astype(float)
        out.append(np.column_stack([y, X]))
    return out


@pytest.mark.parametrize(
    ("hosts", "distribution", "files", "predictor_type"),
    [
        (2, "ShardedByS3Key", 3, "binary_classifier"),  # with a validation channel
        (3, "FullyReplicated", 3, "regressor"),
        (3, "ShardedByS3Key", 2, "multiclass_classifier"),  # algo-3 has no rows
    ],
)
def test_linear_learner_on_several_hosts_is_as_good_as_one_host(tmp_path, hosts, distribution, files, predictor_type):
    from smalgo.algorithms.batch import Batch

    validating = predictor_type == "binary_classifier"  # the models are compared on it each pass
    *parts, test = labelled_parts(np.random.default_rng(3), predictor_type, files + 1 + validating, rows=1500)
    np.savetxt(tmp_path / "test.csv", test.astype(np.float32), delimiter=",", fmt="%.9g")
    if validating:
        validation = parts.pop(0)
        np.savetxt(tmp_path / "validation.csv", validation.astype(np.float32), delimiter=",", fmt="%.9g")
    hp = {"predictor_type": predictor_type, "feature_dim": 8, "mini_batch_size": 100, "epochs": 15}
    if predictor_type == "multiclass_classifier":
        hp["num_classes"] = 3
    result, jobs = train_hosts(
        tmp_path,
        "linear-learner",
        write_parts(tmp_path / "data", parts),
        hosts,
        *(f"{k}={v}" for k, v in hp.items()),
        content_type="text/csv",
        distribution=distribution,
        validation=tmp_path / "validation.csv" if validating else None,
        test=tmp_path / "test.csv",
    )
    check_job_succeeded(result, jobs)
    if files < hosts:
        assert re.search(r"\[algo-3\].*this host's shard holds no files", result.stderr)
    union = np.vstack(parts).astype(np.float32)
    channels = {"train": (union[:, 1:], union[:, 0])}
    if validating:
        channels["validation"] = (validation[:, 1:].astype(np.float32), validation[:, 0].astype(np.float32))
    algorithm = get_algorithm("linear-learner")
    one = algorithm.train(algorithm.hyperparameters.parse({k: str(v) for k, v in hp.items()}), InMemoryData(channels))
    several = algorithm.load(jobs[0] / "model")
    X_test, y_test = test[:, 1:].astype(np.float32), test[:, 0]

    def quality(model) -> float:
        """Test MSE (regressor, lower is better) or accuracy (classifiers, higher is better)."""
        predicted = model.predict(Batch(X_test))
        if predictor_type == "regressor":
            return float(np.mean((predicted["score"] - y_test) ** 2))
        return float(np.mean(predicted["predicted_label"] == y_test))

    print(f"linear learner {predictor_type}, {hosts} hosts: test {quality(several):.5f}, one host {quality(one):.5f}")
    if predictor_type == "regressor":
        assert quality(several) <= quality(one) * 1.01
        logged = re.search(r"\[algo-1\].*#quality_metric: host=algo-1, test mse <loss>=(\S+)", result.stderr)
    else:
        assert quality(several) >= quality(one) * 0.99
        name = "binary_classification_accuracy" if validating else "multiclass_accuracy"
        logged = re.search(rf"\[algo-1\].*#quality_metric: host=algo-1, test {name} <score>=(\S+)", result.stderr)
    # The test channel (FullyReplicated: each host scores every N-th row) scored job-wide.
    assert logged is not None
    assert float(logged.group(1)) == pytest.approx(quality(several), rel=1e-5)


# --------------------------------------------------------------------------- failures


def hosts_job(tmp_path: Path, hosts: int, *, algorithm: str = "kmeans", endless: bool = False) -> list[Path]:
    """A job of `hosts` hosts, one file each, of one pass or round (`endless`: of a million)."""
    rng = np.random.default_rng(9)
    passes = "1000000" if endless else "1"
    content_type = "text/csv"
    if algorithm == "kmeans":
        data = write_parts(tmp_path / "data", kmeans_data(rng, hosts, rows=200))
        hyperparameters, content_type = {"k": "3", "feature_dim": "4", "epochs": passes}, CSV_NO_LABEL
    elif algorithm == "linear-learner":
        data = write_parts(tmp_path / "data", labelled_parts(rng, "regressor", hosts, rows=200))
        hyperparameters = {"predictor_type": "regressor", "feature_dim": "8", "epochs": passes}
        hyperparameters["early_stopping_patience"] = passes
    elif algorithm == "factorization-machines":
        from smalgo.recordio import write_sparse

        data = tmp_path / "data"
        data.mkdir()
        for index, (X, y) in enumerate(recommender_parts(rng, hosts, rows=200)):
            write_sparse(str(data / f"part{index}.pbr"), X, labels=y)
        hyperparameters = {"feature_dim": "60", "num_factors": "4", "predictor_type": "regressor", "epochs": passes}
        content_type = "application/x-recordio-protobuf"
    else:
        data = write_parts(tmp_path / "data", regression_parts(rng, hosts, rows=200))
        hyperparameters = {"num_round": passes, "objective": "reg:squarederror", "nthread": "1"}
    if algorithm != "xgboost":
        hyperparameters["mini_batch_size"] = "50"
    paths = lay_out_hosts_job(
        tmp_path / "job",
        hosts=hosts,
        hyperparameters=hyperparameters,
        channels={"train": data},
        content_type=content_type,
        distributions={"train": "ShardedByS3Key"},
    )
    return [paths.base for paths in paths]


@pytest.mark.parametrize(
    ("algorithm", "killed"),
    [("kmeans", 0), ("kmeans", 1), ("linear-learner", 2), ("factorization-machines", 1), ("xgboost", 1)],
)
def test_a_host_killed_mid_training_fails_every_other_host_quickly(tmp_path, algorithm, killed):
    """killed: the rank killed with SIGKILL (0 is the first host, which runs the tracker and the
    watch). A host connected to the dead one fails at its next exchange; one waiting on a live
    host in an exchange (seen in about one run in three without it) learns of it from the watch
    (runtime/watch.py): XGBoost's hosts wait inside xgboost.train. SMALGO_HOSTS_TIMEOUT stays at
    its hour: the watch must do it. (PCA makes one pass, and exchanges through the same code.)"""
    jobs = hosts_job(tmp_path, 3, algorithm=algorithm, endless=True)
    port = free_port()
    processes = [start_host(job, port, 3, algorithm) for job in jobs]
    victim = processes[killed]
    deadline = time.monotonic() + 120
    # Until the victim is training: its second pass's (or round's) metric line.
    training = "[1]\t" if algorithm == "xgboost" else "epoch=1, train"
    while training not in (jobs[killed] / "log").read_text() and time.monotonic() < deadline:
        assert victim.poll() is None
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    for rank, process in enumerate(processes):
        if rank == killed:
            continue
        process.communicate(timeout=60)  # within 60 s of the kill, or this raises
        assert process.returncode == 1
        failure = (jobs[rank] / "output" / "failure").read_text()
        assert failure.startswith(f"Host algo-{rank + 1} lost contact with the other hosts (algo-1, algo-2, algo-3)")
        assert not any((jobs[rank] / "model").iterdir())
        print(f"algo-{rank + 1} failed {time.monotonic() - killed_at:.1f} s after algo-{killed + 1} was killed")
    victim.wait()
    assert time.monotonic() - killed_at < 60


def test_a_host_stopped_while_it_joins_the_group_fails_at_once(tmp_path):
    """SIGTERM while XGBoost retries to reach the tracker: Python runs the handler inside
    XGBoost's log callback, whose exception ctypes drops; the job sends it again (job.py), so the
    host still stops within seconds, not at SIGKILL."""
    jobs = hosts_job(tmp_path, 2)
    process = start_host(jobs[1], free_port(), 2, "kmeans", SMALGO_HOSTS_CONNECT_TIMEOUT="60")  # algo-1 never starts
    deadline = time.monotonic() + 60
    while "Joining the tracker on algo-1 failed" not in (jobs[1] / "log").read_text():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    time.sleep(1.0)  # into XGBoost's next join attempt
    process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    process.communicate(timeout=30)
    print(f"algo-2 stopped {time.monotonic() - stopped_at:.1f} s after SIGTERM")
    assert process.returncode == 143
    assert (jobs[1] / "output" / "failure").read_text().startswith("Training stopped: the job received SIGTERM")


def test_a_host_whose_data_is_bad_fails_with_its_reason_and_the_others_follow(tmp_path):
    data = write_parts(tmp_path / "data", kmeans_data(np.random.default_rng(9), 1, rows=200))
    (data / "part1.csv").write_text("1,2,3,4\n5,6,seven,8\n")  # algo-2's shard
    started = time.monotonic()
    result, jobs = train_hosts(
        tmp_path, "kmeans", data, 2, "k=3", "feature_dim=4", "mini_batch_size=50", distribution="ShardedByS3Key"
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 60
    assert "seven" in (jobs[1] / "output" / "failure").read_text()
    assert (jobs[0] / "output" / "failure").read_text().startswith("Host algo-1 lost contact with the other hosts")
    assert not any((jobs[0] / "model").iterdir())
    assert re.search(r"Host algo-2 failed \(exit code 1\): .*seven", result.stderr)


def test_a_host_that_cannot_form_the_group_fails_in_bounded_time_naming_the_hosts(tmp_path):
    jobs = hosts_job(tmp_path, 2)
    port = free_port()
    started = time.monotonic()
    # Only algo-2 starts: the tracker on algo-1 never listens.
    process = start_host(jobs[1], port, 2, "kmeans", SMALGO_HOSTS_CONNECT_TIMEOUT="4")
    process.communicate(timeout=60)
    assert process.returncode == 1
    assert time.monotonic() - started < 45
    failure = (jobs[1] / "output" / "failure").read_text()
    assert failure.startswith("Host algo-2 could not form the group of 2 hosts (algo-1, algo-2) within 4 s")
    assert f"the tracker on algo-1 (127.0.0.1:{port})" in failure
    # And the first host alone: its tracker hears from nobody.
    process = start_host(jobs[0], free_port(), 2, "kmeans", SMALGO_HOSTS_CONNECT_TIMEOUT="3")
    process.communicate(timeout=60)
    assert process.returncode == 1
    failure = (jobs[0] / "output" / "failure").read_text()
    assert failure.startswith("Host algo-1 could not form the group of 2 hosts (algo-1, algo-2) within 3 s")
    assert "did not hear from every host" in failure


# --------------------------------------------------------------------------- the job and the layout


def test_an_algorithm_without_several_hosts_is_refused_naming_it(tmp_path, monkeypatch):
    # Every algorithm trains on several hosts today: one that says it does not stands for the next.
    monkeypatch.setattr(type(get_algorithm("linear-learner")), "several_hosts", False)
    data = write_parts(tmp_path / "data", [np.ones((4, 3))])
    paths = lay_out_job(
        tmp_path / "job",
        hyperparameters={"feature_dim": "2", "predictor_type": "regressor"},
        channels={"train": data},
        content_type="text/csv",
        hosts=["algo-1", "algo-2"],
        current_host="algo-2",
    )
    assert run_training(paths, "linear-learner") == 1
    failure = paths.failure_file.read_text()
    assert failure.startswith(
        "This job has 2 instances (algo-1, algo-2), but smalgo's linear learner trains on a single"
    )
    assert "set InstanceCount to 1" in failure


def test_sharded_channels_give_each_host_every_nth_file_and_replicated_ones_every_file(tmp_path):
    data = write_parts(tmp_path / "data", [np.ones((1, 2))] * 5)
    jobs = lay_out_hosts_job(
        tmp_path / "job",
        hosts=3,
        hyperparameters={},
        channels={"train": data, "test": data},
        content_type=CSV_NO_LABEL,
        distributions={"train": "ShardedByS3Key"},
    )
    for rank, paths in enumerate(jobs):
        resources = json.loads(paths.resourceconfig_file.read_text())
        assert resources["current_host"] == f"algo-{rank + 1}" and resources["hosts"] == ["algo-1", "algo-2", "algo-3"]
        shard = sorted(p.name for p in paths.channel_dir("train").iterdir())
        assert shard == [f"part{index}.csv" for index in range(rank, 5, 3)]
        assert len(list(paths.channel_dir("test").iterdir())) == 5
        channels = json.loads(paths.inputdataconfig_file.read_text())
        assert channels["train"]["S3DistributionType"] == "ShardedByS3Key"
        assert channels["test"]["S3DistributionType"] == "FullyReplicated"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SMALGO_HOST_ADDRESSES", "algo-1:127.0.0.1"),
        ("SMALGO_TRACKER_PORT", "70000"),
        ("SMALGO_HOSTS_CONNECT_TIMEOUT", "soon"),
        ("SMALGO_HOSTS_TIMEOUT", "0"),
    ],
)
def test_bad_several_hosts_settings_are_refused_naming_the_variable(variable, value):
    with pytest.raises(UserError, match=rf"^{variable}="):
        hosts_settings({variable: value})


def test_several_hosts_settings_default_and_parse():
    settings = hosts_settings({"SMALGO_HOST_ADDRESSES": "algo-1=127.0.0.1, algo-2=127.0.0.2"})
    assert settings.addresses == {"algo-1": "127.0.0.1", "algo-2": "127.0.0.2"}
    assert (settings.port, settings.connect_timeout, settings.timeout) == (9099, 300.0, 3600.0)


def test_a_host_name_that_does_not_resolve_is_named():
    from smalgo.algorithms.runtime.collective import Hosts, HostsError

    hosts = Hosts(["algo-1", "no-such-host.invalid"], "algo-1", addresses={"algo-1": "127.0.0.1"}, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(HostsError, match=r"^Host algo-1 cannot resolve the address of host no-such-host\.invalid"):
        hosts.__enter__()
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--hosts", "0"], "--hosts takes a number of hosts >= 1, got 0"),
        (["--hosts", "2", "--distribution", "train=Sharded"], "--distribution takes CHANNEL=TYPE"),
        (["--hosts", "2", "--distribution", "test=ShardedByS3Key"], "--distribution takes CHANNEL=TYPE"),
    ],
)
def test_bad_local_hosts_options_are_usage_errors(tmp_path, capsys, options, message):
    from smalgo.containers import cli

    data = write_parts(tmp_path / "data", [np.ones((2, 2))])
    argv = ["train", "--algorithm", "kmeans", "--train", str(data), "--output", str(tmp_path / "job"), *options]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--hyperparameters", "k=1", "feature_dim=2"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
