"""The training job: what `docker run IMAGE train` runs (spec/sagemaker-contract.md section 1).

Order of work: read the configuration, pick the algorithm, parse and cross-check the
hyperparameters, check the channels and their content types -- all before reading any data, so
a mistake costs seconds, not a pass over the data -- then train, then write the model.

The model is saved into a staging directory next to model/ and moved into model/ only once it is
complete (model/ may be a mount point that already exists, so its files are moved, not the
directory). Whatever goes wrong, model/ is left without our files:

* exit 0 and an empty output/success: the model is in model/;
* a user error (UserError, RecordIOError, an unreadable config file): output/failure holds the
  message alone, so that its first 1024 characters (SageMaker's FailureReason) explain it; exit 1;
* an internal error: output/failure starts with a one-line summary, then the traceback; exit 1;
* SIGTERM (StopTrainingJob, `docker stop`) or Ctrl-C: output/failure says the job was stopped;
  exit 143 (128 + SIGTERM) or 130 (128 + SIGINT).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from smalgo.algorithms.contract import Model
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.metrics import MetricWriter
from smalgo.algorithms.registry import get_algorithm
from smalgo.algorithms.runtime import device
from smalgo.algorithms.runtime.logs import configure_logging
from smalgo.recordio import RecordIOError

from .channels import ChannelData, check_channels
from .config import load_job_config
from .paths import JobPaths

logger = logging.getLogger("smalgo.job")

ALGORITHM_VARIABLE = "SMALGO_ALGORITHM"
EXIT_SUCCESS, EXIT_FAILURE = 0, 1
EXIT_STOPPED = 128 + signal.SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT
_FAILURE_REASON_CHARS = 1024


class TrainingStopped(BaseException):
    """Raised in the main thread by the SIGTERM handler. A BaseException, like KeyboardInterrupt,
    so that no `except Exception` on the way up can swallow it."""


def run_training(paths: JobPaths, algorithm: str | None = None) -> int:
    """Run one training job laid out under `paths`; returns the process exit code.

    `algorithm` is the registry name; None means $SMALGO_ALGORITHM (set in each image)."""
    configure_logging()
    logger.info("Docker entrypoint called with argument(s): train")
    restore_signal = _install_sigterm_handler()
    try:
        model_files = _train(paths, algorithm)
    except TrainingStopped:
        return _fail(
            paths,
            EXIT_STOPPED,
            "Training stopped: the job received SIGTERM (StopTrainingJob or "
            "docker stop) before it finished; no model was saved.",
        )
    except KeyboardInterrupt:
        return _fail(paths, EXIT_INTERRUPTED, "Training interrupted (SIGINT) before it finished; no model was saved.")
    except (UserError, RecordIOError) as exc:
        return _fail(paths, EXIT_FAILURE, str(exc))
    except Exception as exc:  # anything else is our bug: say so first, then give the traceback
        summary = f"Internal error in smalgo (a bug, not a problem with your input): {type(exc).__name__}: {exc}"
        details = traceback.format_exc()
        logger.error("%s\n%s", summary, details)
        return _fail(paths, EXIT_FAILURE, f"{summary}\n\n{details}", already_logged=True)
    finally:
        restore_signal()
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    paths.success_file.write_text("")
    logger.info("Training complete; model files in %s: %s", paths.model_dir, ", ".join(model_files))
    return EXIT_SUCCESS


def _train(paths: JobPaths, algorithm_name: str | None) -> list[str]:
    config = load_job_config(paths)
    if len(config.resources.hosts) > 1:
        raise UserError(
            f"This job has {len(config.resources.hosts)} instances ({', '.join(config.resources.hosts)}), "
            f"but smalgo trains on a single instance for now; set InstanceCount to 1."
        )
    if not algorithm_name:
        algorithm_name = os.environ.get(ALGORITHM_VARIABLE, "")
    if not algorithm_name:
        raise UserError(
            f"No algorithm chosen: pass --algorithm NAME or set {ALGORITHM_VARIABLE} (an smalgo image sets it)."
        )
    algorithm = get_algorithm(algorithm_name)
    if device.requested_device() == "gpu":
        device.use_gpu()  # no GPU: fail now, naming SMALGO_DEVICE, not after reading data
        if not algorithm.has_gpu_path:
            logger.warning("SMALGO_DEVICE=gpu, but %s has no GPU kernels: it trains on the CPU.", algorithm.name)
    logger.info("Algorithm: %s", algorithm.name)
    logger.info(
        "Hyperparameters from %s: %s", paths.hyperparameters_file, json.dumps(config.hyperparameters, sort_keys=True)
    )
    hyperparameters = algorithm.hyperparameters.parse(config.hyperparameters)
    logger.info(
        "Hyperparameters in effect (defaults filled in): %s", json.dumps(hyperparameters, sort_keys=True, default=str)
    )
    algorithm.validate(hyperparameters)
    channels = check_channels(algorithm, config.channels, paths)

    data = ChannelData(channels, finite_values_only=algorithm.finite_values_only)
    model = algorithm.train(hyperparameters, data, metrics=MetricWriter(config.resources.current_host))
    return commit_model(model, paths.model_dir)


def commit_model(model: Model, model_dir: Path) -> list[str]:
    """Save `model` into a staging directory beside `model_dir`, then move its files into
    `model_dir`. On any failure, including a stop while moving, every file moved so far is
    removed again: model_dir never holds part of a model. Returns the file names."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smalgo-model-", dir=model_dir.parent))
    moved: list[Path] = []
    try:
        model.save(staging)
        for entry in sorted(staging.iterdir()):
            target = model_dir / entry.name
            _remove(target)  # a stale file of an earlier run in the same directory
            moved.append(target)
            # A rename when model/ is on the same file system; a copy when it is a mount point.
            shutil.move(os.fspath(entry), os.fspath(target))
        return [p.name for p in moved]
    except BaseException:
        for target in moved:
            _remove(target)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fail(paths: JobPaths, exit_code: int, message: str, *, already_logged: bool = False) -> int:
    if not already_logged:
        logger.error("%s", message)
    if len(message.split("\n\n", 1)[0]) > _FAILURE_REASON_CHARS:
        logger.warning(
            "The failure message is longer than the %d characters SageMaker shows as FailureReason.",
            _FAILURE_REASON_CHARS,
        )
    # Written after the logging, as the platform asks: the failure file is the last word.
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    paths.failure_file.write_text(message + "\n")
    return exit_code


def _install_sigterm_handler() -> Callable[[], object]:
    """Make SIGTERM raise TrainingStopped in the main thread; returns a function that restores
    the previous handler. (Signals reach Python only in the main thread; from any other thread
    the job runs without a handler.)"""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum, frame):
        # A second SIGTERM must not interrupt the clean-up that the first one started.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        logger.warning("SIGTERM received: stopping training.")
        raise TrainingStopped()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)
