"""The two servers the benchmark compares, each started as its own process tree:

    python benchmarks/serve/servers.py smalgo MODEL_DIR   # smalgo.serve.serve(MODEL_DIR)
    python benchmarks/serve/servers.py bare               # a Flask app that reads the body and
                                                          # answers a constant

Both run under the gunicorn settings smalgo.serve uses (`gunicorn_options`), from the same
environment (SAGEMAKER_BIND_TO_PORT, SAGEMAKER_MODEL_SERVER_WORKERS, ...), except that the bare
app runs on gunicorn's own gthread worker rather than smalgo's request-gathering one
(serve/worker.py), so the difference between them is what smalgo does per request, its worker
included. SMALGO_BENCH_WORKER_CLASS overrides the worker class for both, to compare gunicorn's
workers (sync, gthread).
"""

from __future__ import annotations

import os
import sys

from flask import Flask, Response, request

from smalgo.algorithms.runtime.logs import configure_logging
from smalgo.serve import server
from smalgo.serve.app import create_app
from smalgo.serve.settings import ServerSettings

# What the smalgo k-means server answers a single CSV record with, byte for byte in size.
CONSTANT_RESPONSE = b'{"predictions": [{"closest_cluster": 7.0, "distance_to_cluster": 6.594212055206299}]}'


def bare_app() -> Flask:
    app = Flask("bare")

    @app.get("/ping")
    def ping():
        return Response(status=200)

    @app.post("/invocations")
    def invocations():
        request.get_data(cache=False)  # drained, as a keep-alive connection needs
        return Response(CONSTANT_RESPONSE, status=200, content_type="application/json")

    return app


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("smalgo", "bare") or (argv[0] == "smalgo") != (len(argv) == 2):
        print(__doc__, file=sys.stderr)
        return 2
    server.use_fork_safe_kernels()
    configure_logging(per_process=True)
    settings = ServerSettings.from_environment(argv[1] if argv[0] == "smalgo" else "/nonexistent")
    app = create_app(settings=settings) if argv[0] == "smalgo" else bare_app()
    options = server.gunicorn_options(settings)
    if argv[0] == "bare":
        options["worker_class"] = "gthread"  # the floor: a plain Flask app on gunicorn's own worker
    if os.environ.get("SMALGO_BENCH_WORKER_CLASS"):
        options["worker_class"] = os.environ["SMALGO_BENCH_WORKER_CLASS"]
    server.run_gunicorn(app, options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
