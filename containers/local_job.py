"""Laying out a SageMaker-style training job in a local directory, so that `smalgo train` on a
laptop runs exactly the code path a SageMaker container runs, with SAGEMAKER_BASE_DIR=DIR:

    DIR/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json
    DIR/input/data/<channel>/...   (symbolic links to the user's files; nothing is copied)
                                   (a Pipe-mode channel gets no files: its FIFOs are fed by the
                                   caller, e.g. with pipe_feeder.PipeFeeder)
    DIR/model/  DIR/output/

A job of several hosts (`smalgo train --hosts N`) is N such jobs, DIR/algo-1 ... DIR/algo-N, one
per host, each with its resourceconfig.json (current_host algo-K, hosts algo-1..algo-N); a
ShardedByS3Key channel gives host K every N-th of the channel's files (sorted, from the K-th), as
SageMaker shards by S3 key, and a FullyReplicated one (the default) every file to every host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from smalgo.algorithms.errors import UserError

from .channels import list_data_files
from .config import CONNECT_TIMEOUT_VARIABLE, HOST_ADDRESSES_VARIABLE, LOCAL_HOST, TRACKER_PORT_VARIABLE
from .paths import JobPaths

# Marks a directory as laid out by us, so that a second run may clear it and nothing else is.
MARKER = ".smalgo-local-job"


SHARDED, REPLICATED = "ShardedByS3Key", "FullyReplicated"
DISTRIBUTIONS = (SHARDED, REPLICATED)


def host_names(count: int) -> list[str]:
    """SageMaker's host names for a job of `count` instances: algo-1 ... algo-N."""
    return [f"algo-{index}" for index in range(1, count + 1)]


def lay_out_hosts_job(
    directory: Path,
    *,
    hosts: int,
    hyperparameters: dict[str, str],
    channels: dict[str, Path],
    content_type: str | None,
    distributions: dict[str, str] | None = None,
) -> list[JobPaths]:
    """Write a job of `hosts` hosts under `directory`: one job directory per host,
    directory/algo-K; `distributions` maps a channel to ShardedByS3Key or FullyReplicated (the
    default). Returns the hosts' job paths, in host order."""
    directory = directory.resolve()
    _prepare(directory)
    for stale in directory.glob("algo-*"):
        if (stale / MARKER).exists():
            shutil.rmtree(stale)
    names = host_names(hosts)
    return [
        lay_out_job(
            directory / name,
            hyperparameters=hyperparameters,
            channels=channels,
            content_type=content_type,
            hosts=names,
            current_host=name,
            distributions=distributions,
        )
        for name in names
    ]


def lay_out_job(
    directory: Path,
    *,
    hyperparameters: dict[str, str],
    channels: dict[str, Path],
    content_type: str | None,
    pipe_channels: tuple[str, ...] = (),
    hosts: list[str] | None = None,
    current_host: str = LOCAL_HOST,
    distributions: dict[str, str] | None = None,
) -> JobPaths:
    """Write a job under `directory` (created if needed; a directory of an earlier local job is
    cleared first). `channels` maps a channel name to a file or a directory of files, in File
    mode; `pipe_channels` names channels in Pipe mode. `hosts` and `current_host` go into
    resourceconfig.json (one host, algo-1, by default); a channel that `distributions` says is
    ShardedByS3Key gets this host's share of its files."""
    hosts = hosts or [LOCAL_HOST]
    distributions = distributions or {}
    directory = directory.resolve()
    _prepare(directory)
    paths = JobPaths(directory)
    paths.config_dir.mkdir(parents=True)
    paths.data_dir.mkdir(parents=True)
    paths.model_dir.mkdir()
    paths.output_dir.mkdir()

    channel_settings = {}
    for name, source in channels.items():
        source = source.resolve()
        if not source.exists():
            raise UserError(f"--{name} {source}: no such file or directory.")
        distribution = distributions.get(name, REPLICATED)
        if distribution == SHARDED and len(hosts) > 1:
            _link_shard(source, paths.channel_dir(name), rank=hosts.index(current_host), hosts=len(hosts))
        elif source.is_dir():
            # The channel directory is the user's directory itself, so its sub-folders keep working.
            paths.channel_dir(name).symlink_to(source, target_is_directory=True)
        else:
            paths.channel_dir(name).mkdir()
            (paths.channel_dir(name) / source.name).symlink_to(source)
        channel_settings[name] = _channel_settings("File", content_type, distribution)
    for name in pipe_channels:
        channel_settings[name] = _channel_settings("Pipe", content_type, distributions.get(name, REPLICATED))

    _write_json(paths.hyperparameters_file, hyperparameters)
    _write_json(paths.inputdataconfig_file, channel_settings)
    _write_json(
        paths.resourceconfig_file, {"current_host": current_host, "hosts": hosts, "network_interface_name": "eth0"}
    )
    return paths


def _link_shard(source: Path, channel_dir: Path, *, rank: int, hosts: int) -> None:
    """Link this host's files of a sharded channel: every hosts-th of its sorted files, from
    the rank-th (possibly none), keeping their paths below the channel's directory."""
    files = list_data_files(source) if source.is_dir() else [source]
    channel_dir.mkdir()
    for path in files[rank::hosts]:
        target = channel_dir / (path.relative_to(source) if source.is_dir() else path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())


def _channel_settings(input_mode: str, content_type: str | None, distribution: str = REPLICATED) -> dict[str, str]:
    settings = {"TrainingInputMode": input_mode, "S3DistributionType": distribution, "RecordWrapperType": "None"}
    if content_type:
        settings["ContentType"] = content_type
    return settings


def _prepare(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise UserError(
                f"--output {directory} is a directory that is not empty and was not made by smalgo train; "
                f"pick a new or empty directory."
            )
        for part in ("input", "model", "output"):
            target = directory / part
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("Laid out by `smalgo train`; a later run with the same --output replaces it.\n")


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def loopback_addresses(names: list[str]) -> dict[str, str]:
    """Host K on 127.0.0.K: every host its own loopback address, as if on its own machine."""
    return {name: f"127.0.0.{index}" for index, name in enumerate(names, start=1)}


def loopback_hosts_setting(count: int) -> str:
    """SMALGO_HOST_ADDRESSES for a job of `count` hosts on loopback: algo-1=127.0.0.1,..."""
    return ",".join(f"{name}={address}" for name, address in loopback_addresses(host_names(count)).items())


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on `address` now, and the next one too (the tracker's, and the first
    host's watch, runtime/watch.py; another process may take them before the first host does,
    which then fails naming the port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
            port = probe.getsockname()[1]
        if port < 65535:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as following:
                try:
                    following.bind((address, port + 1))
                    return port
                except OSError:
                    continue


def run_hosts(jobs: list[JobPaths], algorithm: str, *, environ: dict[str, str] | None = None) -> list[int]:
    """Run one `smalgo train` process per host job, on loopback addresses, each with its job
    directory as SAGEMAKER_BASE_DIR; their output goes to stderr, each line prefixed with its
    host. Returns the exit codes in host order. SIGTERM or Ctrl-C is passed on to every host."""
    names = host_names(len(jobs))
    addresses = loopback_addresses(names)
    env = dict(os.environ if environ is None else environ)
    env[HOST_ADDRESSES_VARIABLE] = loopback_hosts_setting(len(jobs))
    env.setdefault(TRACKER_PORT_VARIABLE, str(free_port(addresses[names[0]])))
    env.setdefault(CONNECT_TIMEOUT_VARIABLE, "60")  # the processes start together here
    processes = []
    for job in jobs:
        host_env = dict(env, SAGEMAKER_BASE_DIR=str(job.base))
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "smalgo.containers", "train", "--algorithm", algorithm],
                env=host_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
    relays = [
        threading.Thread(target=_relay, args=(process, name), daemon=True)
        for name, process in zip(names, processes, strict=True)
    ]
    for relay in relays:
        relay.start()
    try:
        codes = [process.wait() for process in processes]
    except BaseException:  # Ctrl-C or SIGTERM of this command: stop every host, then say so
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait()
        raise
    for relay in relays:
        relay.join()
    return codes


def _relay(process: subprocess.Popen, name: str) -> None:
    assert process.stdout is not None
    for line in iter(process.stdout.readline, b""):
        sys.stderr.write(f"[{name}] {line.decode('utf-8', 'replace')}")
        sys.stderr.flush()
