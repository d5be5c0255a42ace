"""Reading a training job's configuration files (spec/sagemaker-contract.md 1.3-1.5, 1.10).

Only the shape of the files is checked here (valid JSON, the right kinds of values); what the
values mean (a hyperparameter's range, whether a content type suits the algorithm) is checked by
the algorithm's schema and by `channels.py`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.runtime.collective import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, DEFAULT_TRACKER_PORT

from .paths import JobPaths

LOCAL_HOST = "algo-1"


@dataclass(frozen=True)
class ChannelConfig:
    """One entry of inputdataconfig.json. Fields SageMaker leaves out are None."""

    name: str
    content_type: str | None
    input_mode: str
    record_wrapper_type: str | None = None
    compression_type: str | None = None
    s3_distribution_type: str | None = None


@dataclass(frozen=True)
class ResourceConfig:
    current_host: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class JobConfig:
    hyperparameters: dict[str, Any]
    channels: dict[str, ChannelConfig]
    resources: ResourceConfig
    checkpoint_dir: Path | None


def load_job_config(paths: JobPaths) -> JobConfig:
    """Read every configuration file of the job; UserError naming the file when one is unusable."""
    return JobConfig(
        hyperparameters=load_hyperparameters(paths.hyperparameters_file),
        channels=load_channels(paths.inputdataconfig_file),
        resources=load_resources(paths.resourceconfig_file),
        checkpoint_dir=load_checkpoint_dir(paths.checkpointconfig_file, paths.default_checkpoint_dir),
    )


def load_hyperparameters(path: Path) -> dict[str, Any]:
    """The raw hyperparameter map (values are strings as SageMaker writes them; the algorithm's
    schema parses them). A missing file means none were given, as in a job created without any."""
    if not path.exists():
        return {}
    return _read_object(path, "a JSON object of hyperparameter names to values")


def load_channels(path: Path) -> dict[str, ChannelConfig]:
    if not path.exists():
        raise UserError(
            f"{path} is missing: a training job needs it to say which data channels it has "
            f'(e.g. {{"train": {{"ContentType": "text/csv", "TrainingInputMode": "File"}}}}).'
        )
    raw = _read_object(path, "a JSON object of channel names to channel settings")
    channels = {}
    for name, settings in raw.items():
        if not isinstance(settings, dict):
            raise UserError(f"{path}: channel {name!r} must map to an object of settings, not {settings!r}.")
        fields = {}
        for key in ("ContentType", "TrainingInputMode", "RecordWrapperType", "CompressionType", "S3DistributionType"):
            value = settings.get(key)
            if value is not None and not isinstance(value, str):
                raise UserError(f"{path}: channel {name!r}: {key} must be a string, not {value!r}.")
            fields[key] = value
        channels[name] = ChannelConfig(
            name=name,
            content_type=fields["ContentType"],
            # SageMaker always writes TrainingInputMode; File is the API's default.
            input_mode=fields["TrainingInputMode"] or "File",
            record_wrapper_type=fields["RecordWrapperType"],
            compression_type=fields["CompressionType"],
            s3_distribution_type=fields["S3DistributionType"],
        )
    return channels


def load_resources(path: Path) -> ResourceConfig:
    """resourceconfig.json; absent outside SageMaker, where the job is the single host algo-1."""
    if not path.exists():
        return ResourceConfig(LOCAL_HOST, (LOCAL_HOST,))
    raw = _read_object(path, 'a JSON object with "current_host" and "hosts"')
    current, hosts = raw.get("current_host"), raw.get("hosts")
    if not isinstance(current, str) or not current:
        raise UserError(f"{path}: current_host must be a host name, not {current!r}.")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise UserError(f"{path}: hosts must be a non-empty list of host names, not {hosts!r}.")
    if current not in hosts:
        raise UserError(f"{path}: current_host {current!r} is not among hosts {hosts}.")
    return ResourceConfig(current, tuple(sorted(hosts)))


# A job of several hosts (runtime/collective.py): how the hosts find and wait for one another.
# SageMaker resolves the host names (algo-1, ...) by DNS; a local job of several processes maps
# them to loopback addresses instead ("algo-1=127.0.0.1,algo-2=127.0.0.2"; `smalgo train --hosts`).
HOST_ADDRESSES_VARIABLE = "SMALGO_HOST_ADDRESSES"
TRACKER_PORT_VARIABLE = "SMALGO_TRACKER_PORT"
CONNECT_TIMEOUT_VARIABLE = "SMALGO_HOSTS_CONNECT_TIMEOUT"
TIMEOUT_VARIABLE = "SMALGO_HOSTS_TIMEOUT"


@dataclass(frozen=True)
class HostsSettings:
    addresses: dict[str, str]
    port: int
    connect_timeout: float
    timeout: float


def hosts_settings(environ: Mapping[str, str] | None = None) -> HostsSettings:
    """The several-hosts settings from the environment; a bad value is a UserError naming the
    variable. SMALGO_HOST_ADDRESSES: NAME=ADDRESS pairs separated by commas (unset: DNS);
    SMALGO_TRACKER_PORT: the first host's tracker port (default 9099, as SageMaker's XGBoost);
    SMALGO_HOSTS_CONNECT_TIMEOUT: seconds for every host to join (default 300);
    SMALGO_HOSTS_TIMEOUT: seconds one exchange may wait for a silent host (default 3600)."""
    env = os.environ if environ is None else environ
    addresses = {}
    text = env.get(HOST_ADDRESSES_VARIABLE, "").strip()
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, address = (piece.strip() for piece in item.partition("="))
        if not sep or not name or not address:
            raise UserError(
                f"{HOST_ADDRESSES_VARIABLE}={text!r}: {item!r} is not NAME=ADDRESS; valid values: pairs "
                f"separated by commas, e.g. algo-1=127.0.0.1,algo-2=127.0.0.2."
            )
        addresses[name] = address
    port = _number(
        env, TRACKER_PORT_VARIABLE, default=DEFAULT_TRACKER_PORT, what="a TCP port from 1 to 65535", low=1, high=65535
    )
    return HostsSettings(
        addresses=addresses,
        port=int(port),
        connect_timeout=_number(
            env, CONNECT_TIMEOUT_VARIABLE, default=DEFAULT_CONNECT_TIMEOUT, what="seconds >= 1", low=1, high=math.inf
        ),
        timeout=_number(env, TIMEOUT_VARIABLE, default=DEFAULT_TIMEOUT, what="seconds >= 1", low=1, high=math.inf),
    )


def _number(env: Mapping[str, str], name: str, *, default: float, what: str, low: float, high: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high) or (name == TRACKER_PORT_VARIABLE and value != int(value)):
        raise UserError(f"{name}={env[name]!r} is not valid; valid values: {what} (unset means {default:g}).")
    return value


def load_checkpoint_dir(path: Path, default_dir: Path) -> Path | None:
    """Where SageMaker syncs the job's checkpoints: checkpointconfig.json's LocalPath, else (a
    CheckpointConfig without one, or no checkpointconfig.json but the folder there, as a job
    that mounts /opt/ml/checkpoints has it) `default_dir`, /opt/ml/checkpoints; None for a job
    without checkpoints."""
    if not path.exists():
        return default_dir if default_dir.is_dir() else None
    raw = _read_object(path, 'a JSON object with "LocalPath"')
    local_path = raw.get("LocalPath")
    if local_path is not None and not isinstance(local_path, str):
        raise UserError(f"{path}: LocalPath must be a directory path, not {local_path!r}.")
    return Path(local_path) if local_path else default_dir


def _read_object(path: Path, what: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); it must hold {what}.") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read: {exc.strerror}.") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; it must hold {what}."
        ) from None
    if not isinstance(value, dict):
        raise UserError(f"{path} must hold {what}, not a JSON {type(value).__name__}.")
    return value
