"""`serve()`: the Flask app under gunicorn, as SageMaker starts an inference container.

The master loads and warms the model before it binds the port or forks (gunicorn's preload):
a bad model fails the start with one clear message, the workers share the model's arrays and
the compiled kernels copy-on-write, and the first request pays nothing. SIGTERM (endpoint
update, scale-in) lets in-flight requests finish, within the 30 s SageMaker waits before
SIGKILL, and exits 0.

Worker model: gthread workers with one thread each, whose event loop gathers each request whole
before the thread takes it (worker.py: a slow client must not hold the only thread, nor /ping).
One request at a time per process is what the numba kernels need (numba's fork-safe
"workqueue" threading layer, chosen below because the master runs the kernels before forking,
must not be entered by two threads at once) and what CPU-bound predictions want anyway: a second
thread would only contend for the GIL. Unlike the sync worker, gthread keeps connections alive,
which spares a TCP handshake per request (the sync worker served about half the requests/s in
benchmarks/serve/run.py, which compares both).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path

import gunicorn.app.base
import numba

from smalgo.algorithms.runtime.logs import configure_logging
from smalgo.recordio.parallel import available_cpus

from .app import create_app
from .model import ModelError
from .settings import ServerSettings, SettingsError
from .worker import BufferingThreadWorker

logger = logging.getLogger(__name__)

# SageMaker sends SIGKILL 30 s after SIGTERM; in-flight requests get most of that to finish.
GRACEFUL_TIMEOUT_SECONDS = 25
# Longer than any client's idle timeout in front of us, so that we are never the side that
# closes a connection the client is about to reuse.
KEEPALIVE_SECONDS = 75
THREADS_PER_WORKER = 1
# Settings that only newer gunicorn versions know.
_NEWER_GUNICORN_SETTINGS = ("control_socket_disable",)


class GunicornServer(gunicorn.app.base.BaseApplication):
    """gunicorn run from Python over an app that already exists (no module path, no CLI)."""

    def __init__(self, app, options: dict):
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in _NEWER_GUNICORN_SETTINGS and key not in self.cfg.settings:
                continue  # an older gunicorn without the feature has nothing to turn off
            self.cfg.set(key, value)

    def load(self):
        return self.application


def gunicorn_options(settings: ServerSettings) -> dict:
    """The gunicorn settings the server runs with (the benchmark runs its baseline app with the
    very same ones)."""
    options = {
        "bind": [f"0.0.0.0:{settings.port}"],
        "workers": settings.workers,
        "worker_class": BufferingThreadWorker.configured(
            body_limit_bytes=settings.max_payload_bytes, request_timeout_seconds=settings.timeout_seconds
        ),
        "threads": THREADS_PER_WORKER,
        # gunicorn replaces a worker that has not signalled for this long. A gthread worker's
        # event loop signals every second while its thread predicts, so a long prediction (a
        # 1 GB asynchronous request) is not taken for a hung worker; the worker's own request
        # timeout (408) bounds how long a request may take to arrive.
        "timeout": settings.timeout_seconds,
        "graceful_timeout": min(GRACEFUL_TIMEOUT_SECONDS, settings.timeout_seconds),
        "keepalive": KEEPALIVE_SECONDS,
        "preload_app": True,
        "accesslog": None,  # a log line per request costs more than a small prediction
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "smalgo-serve",
        "post_fork": _share_cpus_between_workers,
        # gunicorn >= 25 opens a control socket under $HOME by default: a second server on the
        # machine would fight over it, and a container's $HOME may be read-only.
        "control_socket_disable": True,
    }
    if os.path.isdir("/dev/shm"):
        # Workers touch a heartbeat file every second; on an overlay filesystem that can stall.
        options["worker_tmp_dir"] = "/dev/shm"
    return options


def _share_cpus_between_workers(server, worker) -> None:
    """Each worker's numba kernels get its share of the CPUs: with one worker per CPU (the
    default) a parallel kernel would otherwise start one thread per CPU in every worker."""
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, available_cpus() // server.cfg.workers)))


def use_fork_safe_kernels() -> None:
    """Pick numba's fork-safe threading layer unless the user chose one: the default (GNU
    OpenMP) kills a child forked after the parent ran a parallel kernel, and the master runs
    every kernel at warm-up, before it forks the workers."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "forksafe"


def serve(model_dir: str | Path | None = None) -> None:
    """Run the inference server until SIGTERM (then exit 0). `model_dir` defaults to
    /opt/ml/model ($SAGEMAKER_BASE_DIR/model). Raises SettingsError or ModelError, before
    binding the port, when the environment or the model cannot be served."""
    use_fork_safe_kernels()
    configure_logging(per_process=True)
    settings = ServerSettings.from_environment(model_dir)
    app = create_app(settings=settings)
    logger.info(
        "Serving on port %d with %d worker(s), request timeout %d s, payload limit %d MB%s.",
        settings.port,
        settings.workers,
        settings.timeout_seconds,
        settings.max_payload_mb,
        ", batch mode" if settings.batch_mode else "",
    )
    run_gunicorn(app, gunicorn_options(settings))


def run_gunicorn(app, options: dict) -> None:
    """Fork the workers and serve `app` until SIGTERM. Everything alive now (the model, the
    compiled kernels, the libraries) lives as long as the server: it is frozen out of the
    garbage collector's sight first, so that workers neither scan it (a full collection of it
    takes ~50 ms, which would show as a p99 spike) nor copy the pages a collection would dirty."""
    gc.collect()
    gc.freeze()
    GunicornServer(app, options).run()


def main(argv: list[str] | None = None) -> int:
    """`python -m smalgo.serve [MODEL_DIR]`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(
            "usage: python -m smalgo.serve [MODEL_DIR]   (default: $SAGEMAKER_BASE_DIR/model, /opt/ml/model)",
            file=sys.stderr,
        )
        return 2
    return run_server(args[0] if args else None)


def run_server(model_dir: str | Path | None) -> int:
    """serve(), with a startup error as one line on stderr and exit status 1 instead of a
    traceback (what `smalgo serve` and `python -m smalgo.serve` return)."""
    try:
        serve(model_dir)
    except (ModelError, SettingsError) as exc:
        # One line, whatever the message holds (a path or an error text with a line break).
        print("smalgo serve: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 1
    return 0
