"""The server's settings, read once from the environment SageMaker gives an inference container.

    SAGEMAKER_BIND_TO_PORT                port to listen on (default 8080; set in inference pipelines)
    SAGEMAKER_MODEL_SERVER_WORKERS        gunicorn worker processes (default: the CPUs we may use)
    SAGEMAKER_MODEL_SERVER_TIMEOUT        seconds a request may take to arrive whole (then 408), and a
                                          worker's event loop to stay silent before gunicorn replaces it;
                                          a prediction is never cut short (default 60, at most 3600,
                                          batch transform's hour; asynchronous inference allows 15 minutes)
    SAGEMAKER_MAX_PAYLOAD_IN_MB           largest request body, MiB (default 6, as real-time endpoints;
                                          at most 1024, asynchronous inference's 1 GB)
    SAGEMAKER_MAX_CONCURRENT_TRANSFORMS   what /execution-parameters advertises (default: workers)
    SAGEMAKER_BATCH_STRATEGY              MULTI_RECORD (default) or SINGLE_RECORD, advertised likewise
    SAGEMAKER_BATCH                       "true" in batch transform: one output line per record
    SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT  response type when Accept is missing or */* (application/json)
    SAGEMAKER_BASE_DIR                    base of the /opt/ml layout (the model is in <base>/model)
    SMALGO_ALGORITHM                      set by an image: the one algorithm it may serve
    SMALGO_DEVICE                         auto (default), cpu or gpu (see smalgo.algorithms.runtime.device)
    SMALGO_CSV_THREADS                    threads that parse one CSV chunk (default: the CPUs we may use)

A value that does not parse is a startup error naming the variable, never a silent default:
a typo in an endpoint's Environment should fail CreateEndpoint, not serve with other settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.csv import csv_threads_setting
from smalgo.algorithms.runtime import device
from smalgo.recordio.parallel import available_cpus

from .media import ACCEPTABLE_MEDIA_TYPES, parse_media_type

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_SECONDS = 60
# Batch transform's longest invocation is an hour (asynchronous inference's 15 minutes).
MAX_TIMEOUT_SECONDS = 3600
DEFAULT_MAX_PAYLOAD_MB = 6
# Asynchronous inference takes payloads up to 1 GB (batch transform up to 100 MB, real-time 6 MB);
# a larger setting is a mistake, not a wish.
MAX_PAYLOAD_MB_LIMIT = 1024
DEFAULT_ACCEPT = "application/json"
DEFAULT_BASE_DIR = "/opt/ml"
BATCH_STRATEGIES = ("MULTI_RECORD", "SINGLE_RECORD")


class SettingsError(UserError):
    """An environment variable the server cannot work with."""


@dataclass(frozen=True)
class ServerSettings:
    model_dir: Path
    port: int
    workers: int
    timeout_seconds: int
    max_payload_mb: int
    max_concurrent_transforms: int
    batch_strategy: str
    batch_mode: bool
    default_accept: str
    expected_algorithm: str | None

    @property
    def max_payload_bytes(self) -> int:
        # MiB, as the peers' 6,291,456-byte default: SageMaker's "6 MB" must fit.
        return self.max_payload_mb << 20

    @classmethod
    def from_environment(
        cls, model_dir: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
    ) -> ServerSettings:
        env = os.environ if environ is None else environ
        if model_dir is None:
            model_dir = Path(_text(env, "SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR) / "model"
        workers = _positive_int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", available_cpus())
        default_accept = _text(env, "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or DEFAULT_ACCEPT
        media_type = parse_media_type(default_accept).media_type
        if media_type not in ACCEPTABLE_MEDIA_TYPES:
            raise SettingsError(
                f"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={default_accept!r} is not a response type this "
                f"server writes; use one of {', '.join(ACCEPTABLE_MEDIA_TYPES)}."
            )
        strategy = (_text(env, "SAGEMAKER_BATCH_STRATEGY") or "MULTI_RECORD").upper().replace("-", "_")
        if strategy not in BATCH_STRATEGIES:
            raise SettingsError(
                f"SAGEMAKER_BATCH_STRATEGY={env['SAGEMAKER_BATCH_STRATEGY']!r} must be MULTI_RECORD or SINGLE_RECORD."
            )
        _check_device(env)
        try:
            csv_threads_setting(env)  # read by the CSV decoder on each request: refused here, at startup
        except UserError as exc:
            raise SettingsError(str(exc)) from exc
        max_payload_mb = _bounded_int(
            env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", default=DEFAULT_MAX_PAYLOAD_MB, maximum=MAX_PAYLOAD_MB_LIMIT
        )
        timeout_seconds = _bounded_int(
            env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", default=DEFAULT_TIMEOUT_SECONDS, maximum=MAX_TIMEOUT_SECONDS
        )
        return cls(
            model_dir=Path(model_dir),
            port=_port(env),
            workers=workers,
            timeout_seconds=timeout_seconds,
            max_payload_mb=max_payload_mb,
            # One request at a time per worker (see server.py), so more concurrent transforms
            # than workers would only queue.
            max_concurrent_transforms=_positive_int(env, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", workers),
            batch_strategy=strategy,
            batch_mode=_flag(env, "SAGEMAKER_BATCH"),
            default_accept=media_type,
            expected_algorithm=(_text(env, "SMALGO_ALGORITHM") or None),
        )


def _check_device(env: Mapping[str, str]) -> None:
    """SMALGO_DEVICE must be valid, and `gpu` needs the CUDA driver. Only the driver library is
    looked at here: the GPU itself is opened in each worker, on first need, because CUDA
    initialised in the master would be unusable in the workers it forks."""
    try:
        choice = device.requested_device(env)
    except UserError as exc:
        raise SettingsError(str(exc)) from None
    problem = device.driver_problem() if choice == "gpu" else None
    if problem:
        raise SettingsError(
            f"{device.ENV_VARIABLE}=gpu, but {problem}; serve on a GPU instance, or set "
            f"{device.ENV_VARIABLE}=auto or cpu."
        )


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = _text(env, name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError(f"{name}={env[name]!r} must be a positive integer.")
    return value


def _bounded_int(env: Mapping[str, str], name: str, *, default: int, maximum: int) -> int:
    """A positive integer of at most `maximum` (SageMaker's own limit on the setting)."""
    value = _positive_int(env, name, default)
    if value > maximum:
        raise SettingsError(
            f"{name}={env[name]!r} is above SageMaker's limit of {maximum}; "
            f"valid values: an integer from 1 to {maximum}."
        )
    return value


def _port(env: Mapping[str, str]) -> int:
    text = _text(env, "SAGEMAKER_BIND_TO_PORT")
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SettingsError(
            f"SAGEMAKER_BIND_TO_PORT={env['SAGEMAKER_BIND_TO_PORT']!r} must be a port number between 1 and 65535."
        )
    return int(text)


def _flag(env: Mapping[str, str], name: str) -> bool:
    text = _text(env, name).lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise SettingsError(f"{name}={env[name]!r} must be true or false.")
