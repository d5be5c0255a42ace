"""The training job: what `docker run IMAGE train` runs (spec/sagemaker-contract.md section 1).

Order of work: read the configuration, pick the algorithm, parse and cross-check the
hyperparameters, check the channels and their content types -- all before reading any data, so
a mistake costs seconds, not a pass over the data -- then train, then write the model.

A job starts clean, so that a rerun in the same /opt/ml leaves nothing of an earlier run: the
status files output/success and output/failure and the contents of model/ are removed first. The
model is saved into a staging directory next to model/ and replaces model/'s contents only once it
is complete (model/ may be a mount point that already exists, so its contents are replaced, not the
directory). Whatever goes wrong, model/ is left without our files:

* exit 0 and an empty output/success: the model is in model/;
* a user error (UserError, RecordIOError, an unreadable config file): output/failure holds the
  message alone, so that its first 1024 characters (SageMaker's FailureReason) explain it; exit 1;
* a fault of the environment (a read-only or full model directory, a channel path that cannot be
  opened): a user error too, naming the path and the OS error;
* an internal error: output/failure starts with a one-line summary, then the traceback; exit 1;
* SIGTERM (StopTrainingJob, `docker stop`) or Ctrl-C: output/failure says the job was stopped;
  exit 143 (128 + SIGTERM) or 130 (128 + SIGINT).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from smalgo.algorithms.contract import Model
from smalgo.algorithms.errors import UserError, os_error_text
from smalgo.algorithms.formats.csv import csv_threads_setting
from smalgo.algorithms.metrics import MetricWriter
from smalgo.algorithms.registry import get_algorithm
from smalgo.algorithms.runtime import device
from smalgo.algorithms.runtime.collective import Hosts, SingleHost
from smalgo.algorithms.runtime.logs import configure_logging
from smalgo.algorithms.training import attach_partial_model, partial_model, stop_checkpoint
from smalgo.recordio import RecordIOError

from .channels import ChannelData, check_channels, pipe_wait_setting
from .config import hosts_settings, load_job_config
from .entrypoint import PORTABLE, TARGET_VARIABLE
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
        _start_clean(paths)
        model_files = _train(paths, algorithm)
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            paths.success_file.write_text("")
        except OSError as exc:
            raise _environment_error(f"Cannot write {paths.success_file}", exc) from exc
    except TrainingStopped as stop:
        saved = _save_partial_model(stop, paths)
        checkpoint = stop_checkpoint(stop)
        return _fail(
            paths,
            EXIT_STOPPED,
            "Training stopped: the job received SIGTERM (StopTrainingJob or docker stop) before it finished; "
            + (f"the model trained so far was saved ({', '.join(saved)})." if saved else "no model was saved.")
            + (
                f" The training state is checkpointed in {checkpoint}: a job with the same checkpoint "
                "configuration resumes from it."
                if checkpoint is not None
                else ""
            ),
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
    if model_files:
        logger.info("Training complete; model files in %s: %s", paths.model_dir, ", ".join(model_files))
    else:
        logger.info("Training complete; the first host wrote the model.")
    return EXIT_SUCCESS


def _save_partial_model(stop: BaseException, paths: JobPaths) -> list[str]:
    """Commit the model a stop carries (XGBoost's save_model_on_termination), if any; the file
    names saved. A second SIGTERM is already ignored (the handler did that)."""
    model = partial_model(stop)
    if model is None:
        return []
    try:
        return commit_model(model, paths.model_dir)
    except UserError as exc:
        logger.error("The model trained so far could not be saved: %s", exc)
        return []


def _start_clean(paths: JobPaths) -> None:
    """Remove what an earlier run in the same directory left: its status files and its model
    (model/ itself stays: it may be a mount point)."""
    for status in (paths.success_file, paths.failure_file):
        try:
            status.unlink(missing_ok=True)
        except OSError as exc:
            raise _environment_error(f"Cannot remove {status}, left by an earlier run", exc) from exc
    if not paths.model_dir.is_dir():
        return
    try:
        stale = sorted(paths.model_dir.iterdir())
        for entry in stale:
            _remove(entry)
    except OSError as exc:
        raise _model_dir_error(paths.model_dir, exc, doing="remove an earlier run's model from") from exc
    if stale:
        logger.info("Removed an earlier run's model from %s: %s", paths.model_dir, ", ".join(p.name for p in stale))


def check_settings(environ: Mapping[str, str] | None = None) -> None:
    """The environment variables the training job reads, checked before any data is read: each
    bad value is a UserError naming the variable and what is valid. (SMALGO_ALGORITHM is
    checked by the registry, SAGEMAKER_BASE_DIR by JobPaths.from_environment.)"""
    env = os.environ if environ is None else environ
    device.requested_device(env)
    pipe_wait_setting(env)
    hosts_settings(env)
    csv_threads_setting(env)
    target = env.get(TARGET_VARIABLE, "")
    if target.strip() and target.strip().lower() != PORTABLE:
        raise UserError(
            f"{TARGET_VARIABLE}={target!r} is not a numba CPU target; valid values: {PORTABLE} "
            f"(unset means the host CPU, numba's default; set NUMBA_CPU_NAME for another)."
        )


def _train(paths: JobPaths, algorithm_name: str | None) -> list[str]:
    check_settings()
    config = load_job_config(paths)
    resources = config.resources
    host_count = len(resources.hosts)
    if not algorithm_name:
        algorithm_name = os.environ.get(ALGORITHM_VARIABLE, "")
    if not algorithm_name:
        raise UserError(
            f"No algorithm chosen: pass --algorithm NAME or set {ALGORITHM_VARIABLE} (an smalgo image sets it)."
        )
    algorithm = get_algorithm(algorithm_name)
    if host_count > 1 and not algorithm.several_hosts:
        raise UserError(
            f"This job has {host_count} instances ({', '.join(resources.hosts)}), but smalgo's "
            f"{algorithm.title} trains on a single instance for now; set InstanceCount to 1."
        )
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
    rank = resources.hosts.index(resources.current_host)
    channels = check_channels(algorithm, config.channels, paths, hosts=(rank, host_count))

    data = ChannelData(
        channels, finite_values_only=algorithm.finite_values_only, float32_only=algorithm.float32_tensors_only
    )
    # Only an algorithm that declares it takes the checkpoint directory (XGBoost's checkpoints,
    # the shared driver's checkpoints of a mini-batch algorithm's state).
    checkpoints = {"checkpoint_dir": config.checkpoint_dir} if algorithm.resumes_from_checkpoints else {}
    train: Callable[..., Model] = algorithm.train
    writer = MetricWriter(resources.current_host)
    if host_count == 1:
        model = train(hyperparameters, data, metrics=writer, **checkpoints)
        return commit_model(model, paths.model_dir)
    settings = hosts_settings()
    collective: SingleHost
    try:
        with Hosts(
            resources.hosts,
            resources.current_host,
            addresses=settings.addresses,
            port=settings.port,
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            on_lost=functools.partial(_fail_from_the_watch, paths),
        ) as collective:
            model = train(hyperparameters, data, metrics=writer, collective=collective, **checkpoints)
    except TrainingStopped as stop:
        if rank != 0:  # only the first host writes a model, a partial one (XGBoost's) included
            attach_partial_model(stop, None)
        raise
    if collective.is_first:
        return commit_model(model, paths.model_dir)
    # SageMaker merges every host's model/ into one model.tar.gz, so their file names must not
    # clash (spec 1.8): every host ends with the same model, and only the first host writes it,
    # as AWS's XGBoost image's master does (spec 4.5.6). The others succeed with model/ empty.
    logger.info(
        "The model is written by the first host, %s; this host's model directory stays empty.", resources.hosts[0]
    )
    return []


def commit_model(model: Model, model_dir: Path) -> list[str]:
    """Save `model` into a staging directory beside `model_dir`, then replace the whole contents
    of `model_dir` with it: the entries already there (an earlier run's model, of this algorithm
    or another) are moved aside into a trash folder inside `model_dir`, the new files moved in,
    then the trash deleted. On any failure, including a stop while moving, the new files moved
    so far are removed and the old entries put back: model_dir never holds part of a model, nor
    a mix of two. An OSError (a read-only or full model directory) is a UserError naming the
    directory. Returns the file names."""
    try:
        return _commit_model(model, model_dir)
    except OSError as exc:
        raise _model_dir_error(model_dir, exc, doing="save the model in") from exc


def _commit_model(model: Model, model_dir: Path) -> list[str]:
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smalgo-model-", dir=model_dir.parent))
    trash: Path | None = None
    set_aside: list[tuple[Path, Path]] = []  # (where it was, where it is in the trash)
    moved: list[Path] = []
    try:
        model.save(staging)
        new_entries = sorted(staging.iterdir())
        old_entries = sorted(model_dir.iterdir())
        if old_entries:
            # Inside model_dir, so that setting aside is a rename on the same file system.
            trash = Path(tempfile.mkdtemp(prefix=".smalgo-old-", dir=model_dir))
            for entry in old_entries:
                os.rename(entry, trash / entry.name)
                set_aside.append((entry, trash / entry.name))
        for entry in new_entries:
            target = model_dir / entry.name
            moved.append(target)
            # A rename when model/ is on the same file system; a copy when it is a mount point.
            shutil.move(os.fspath(entry), os.fspath(target))
    except BaseException:
        _roll_back(moved, set_aside, trash)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return [p.name for p in moved]


def _roll_back(moved: list[Path], set_aside: list[tuple[Path, Path]], trash: Path | None) -> None:
    """Undo a commit that failed: remove the new files, put the old entries back. Best effort:
    a step that fails is logged, and the rest still done."""
    steps: list[Callable[[], object]] = [functools.partial(_remove, target) for target in moved]
    steps += [functools.partial(os.rename, aside, original) for original, aside in reversed(set_aside)]
    for step in steps:
        try:
            step()
        except OSError as exc:
            logger.error("While undoing the model's move into its directory: %s", exc)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _environment_error(what: str, exc: OSError) -> UserError:
    """`what: [Errno 28] No space left on device (path)` as a UserError: a fault of the
    machine or its mounts, not of smalgo."""
    where = f" ({exc.filename})" if exc.filename else ""
    return UserError(f"{what}: {os_error_text(exc)}{where}.")


def _model_dir_error(model_dir: Path, exc: OSError, *, doing: str) -> UserError:
    if exc.errno == errno.EROFS:
        return _environment_error(f"The model directory {model_dir} is read-only; cannot {doing} it", exc)
    if exc.errno == errno.ENOSPC:
        return _environment_error(f"No space left on the disk to {doing} the model directory {model_dir}", exc)
    return _environment_error(f"Cannot {doing} the model directory {model_dir}", exc)


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


def _fail_from_the_watch(paths: JobPaths, message: str) -> None:
    """Another host is gone while this one waits, maybe inside XGBoost where no exception reaches
    the main thread (runtime/watch.py): output/failure, then the process ends from the watch's
    thread. No model is half-written: the first host commits it only after leaving the group."""
    _fail(paths, EXIT_FAILURE, message)
    logging.shutdown()
    os._exit(EXIT_FAILURE)


def _install_sigterm_handler() -> Callable[[], object]:
    """Make SIGTERM raise TrainingStopped in the main thread; returns a function that restores
    the previous handler. (Signals reach Python only in the main thread; from any other thread
    the job runs without a handler.)"""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    received = threading.Event()

    def on_sigterm(signum, frame):
        # A second SIGTERM must not interrupt the clean-up that the first one started.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not received.is_set():
            received.set()
            logger.warning("SIGTERM received: stopping training.")
        raise TrainingStopped()

    previous_hook = sys.unraisablehook

    def raise_again(unraisable):
        # Python runs the handler at its next bytecode, which may be inside a callback from C
        # (XGBoost's log callback, while a host joins the tracker), whose exceptions ctypes drops:
        # the job would go on with SIGTERM ignored until SIGKILL. So it is sent again, a moment
        # later from another thread (sent from here, the handler would run here), to be raised
        # once the main thread runs Python outside the callback.
        if isinstance(unraisable.exc_value, TrainingStopped):
            signal.signal(signal.SIGTERM, on_sigterm)
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
            return
        previous_hook(unraisable)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    sys.unraisablehook = raise_again

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook

    return restore
