"""`make test-images`: each image trained and served by the SageMaker Python SDK v2's own local
mode, the way a user tries an image on a laptop before a real job:

    .venv/bin/python tests/images/check_sdk_local_mode.py --engine podman --tag cpu [ALGORITHM ...]

For each algorithm, tests/images/sdk_local_mode.py (in benchmarks/.venv-sdk) runs
`Estimator(image_uri="localhost/smalgo-<algorithm>:<tag>", instance_type="local")`: `fit` on a
`file://` RecordIO channel, `deploy`, `predict` with the SDK's CSVSerializer and
JSONDeserializer, `delete_endpoint`. The SDK drives the containers with docker-compose through a
Docker-API socket: with podman, this script starts `podman system service` on a socket of its
own and hands it over as DOCKER_HOST (the SDK also calls `docker info`: a docker CLI, or
podman-docker's). The answers must be what the model.tar.gz the job wrote predicts, computed
here with smalgo's own code, and no container may be left running (the stopped ones
docker-compose leaves behind are removed).

Exits 1 on the first failed check, with the SDK's output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from check_images import (
    REPO,
    SAMPLE_FEATURES,
    SDK_PYTHON,
    CheckFailed,
    Engine,
    _outputs_from_json,
    check,
    image_arguments,
    job_hyperparameters,
)
from test_serve_support import expected_outputs

from smalgo.algorithms.formats.content_types import RECORDIO_PROTOBUF
from smalgo.algorithms.registry import ALGORITHMS, get_algorithm

# Local mode's deploy waits on the endpoint with the SDK's own 30 s poll; fit and deploy together
# take about a minute on 2 cores.
LOCAL_MODE_LIMIT_SECONDS = 600


def docker_api(engine: Engine, workdir: Path) -> tuple[dict[str, str], subprocess.Popen | None]:
    """The environment that points docker-compose at a Docker-API socket, and the podman
    service that provides it (None for docker, whose daemon is the socket)."""
    missing = [command for command in ("docker-compose", "docker") if shutil.which(command) is None]
    check(
        not missing,
        f"SDK local mode needs {' and '.join(missing)} (Debian: docker-compose, podman-docker; "
        "containers/setup_podman.sh installs them)",
    )
    environment = dict(os.environ)
    if engine.command != "podman":
        return environment, None
    socket = workdir / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not socket.exists():
        if service.poll() is not None or time.monotonic() > deadline:
            service.kill()
            raise CheckFailed("podman system service did not open its socket within 20 s")
        time.sleep(0.1)
    environment["DOCKER_HOST"] = f"unix://{socket}"
    return environment, service


def check_local_mode(algorithm: str, tag: str, workdir: Path, environment: dict[str, str], engine: Engine) -> None:
    image = f"localhost/smalgo-{algorithm}:{tag}"
    chosen = get_algorithm(algorithm)
    hyperparameters = job_hyperparameters(workdir, algorithm)
    features = json.loads(hyperparameters.read_text()).get(chosen.feature_dim_hyperparameter or "", SAMPLE_FEATURES)
    job_dir = workdir / f"{algorithm}-local-mode"
    result = subprocess.run(
        [
            str(SDK_PYTHON),
            str(REPO / "tests" / "images" / "sdk_local_mode.py"),
            str(job_dir),
            image,
            algorithm,
            str(hyperparameters),
            str(features),
            "" if chosen.default_content_type == RECORDIO_PROTOBUF else RECORDIO_PROTOBUF,
        ],
        capture_output=True,
        text=True,
        timeout=LOCAL_MODE_LIMIT_SECONDS,
        env=environment,
    )
    check(
        result.returncode == 0,
        f"SDK local mode with {image} failed:\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}",
    )
    answer = json.loads((job_dir / "result.json").read_text())
    check(answer["model_data"].startswith("file://"), f"local mode wrote the model to {answer['model_data']}")
    model_dir = job_dir / "model"
    with tarfile.open(answer["model_data"].removeprefix("file://")) as archive:
        archive.extractall(model_dir, filter="data")
    rows = np.asarray(answer["rows"], dtype=np.float32)
    expected = expected_outputs(model_dir, rows)
    got = _outputs_from_json(answer["answer"], algorithm)
    for key, values in expected.items():
        want = np.asarray(values, dtype=np.float64).reshape(len(rows), -1)
        have = np.asarray(got[key], dtype=np.float64).reshape(len(rows), -1)
        check(np.allclose(have, want, rtol=1e-4, atol=1e-4), f"{image} in local mode: {key} differs from the model's")
    running = engine.run("ps", "--format", "{{.Names}} {{.Image}}").stdout
    check(image not in running, f"local mode left containers of {image} running:\n{running}")
    # docker-compose leaves the stopped training and serving containers behind (with Docker too).
    stopped = engine.run("ps", "--all", "--filter", f"ancestor={image}", "--format", "{{.ID}}").stdout.split()
    if stopped:
        engine.run("rm", *stopped)
    seconds = answer["seconds"]
    print(
        f"    {image}: SDK v2 local mode fit in {seconds['fit']:.1f} s, deploy in {seconds['deploy']:.1f} s, "
        f"predict answered as the model predicts ({', '.join(expected)}), endpoint deleted"
    )


def main(argv: list[str] | None = None) -> int:
    args = image_arguments(__doc__.splitlines()[0], argv)
    engine = Engine(args.engine)
    print(f"SDK v2 local mode ({engine.command}):")
    with tempfile.TemporaryDirectory(prefix="smalgo-local-mode-check-", dir="/var/tmp") as workdir:
        service = None
        try:
            environment, service = docker_api(engine, Path(workdir))
            for tag in args.tag or ["cpu"]:
                for algorithm in args.algorithms or list(ALGORITHMS):
                    check_local_mode(algorithm, tag, Path(workdir), environment, engine)
        except CheckFailed as exc:
            print(f"check_sdk_local_mode: FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            if service is not None:
                service.terminate()
                service.wait(timeout=30)
    print("check_sdk_local_mode: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
