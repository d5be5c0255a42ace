"""Trains and serves one of our images through the SageMaker Python SDK v2's own local mode, for
`make test-images` (tests/images/check_images.py), as a user does before paying for an instance:

    benchmarks/.venv-sdk/bin/python tests/images/sdk_local_mode.py WORKDIR IMAGE ALGORITHM HYPERPARAMETERS_JSON \
        FEATURES [CONTENT_TYPE]

`Estimator(image_uri=IMAGE, instance_type="local").fit()` on a `file://` train channel (RecordIO
written by the SDK's `write_numpy_to_dense_tensor`; CONTENT_TYPE, the channel's ContentType, for
an algorithm whose default is not RecordIO, as XGBoost's users give it), then `.deploy()` to a local endpoint, `predict`
with the SDK's CSVSerializer and JSONDeserializer, and `delete_endpoint()`. The SDK runs the
containers with docker-compose against a Docker-API socket (DOCKER_HOST, e.g. podman's
`podman system service`); the caller provides both.

HYPERPARAMETERS_JSON: the map an SDK v2 estimator sends (tests/data/sdk_v2_hyperparameters), or
a file with XGBoost's. FEATURES: the rows' width.

Writes WORKDIR/result.json (stdout carries docker-compose's output): the model.tar.gz the job
wrote (a file:// output path), the rows sent, what `predict` returned and how long each step
took, for the caller to check against the model with smalgo's own code.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
logging.disable(logging.WARNING)

import numpy as np  # noqa: E402
from sagemaker.amazon.common import write_numpy_to_dense_tensor  # noqa: E402
from sagemaker.deserializers import JSONDeserializer  # noqa: E402
from sagemaker.estimator import Estimator  # noqa: E402
from sagemaker.inputs import TrainingInput  # noqa: E402
from sagemaker.local import LocalSession  # noqa: E402
from sagemaker.serializers import CSVSerializer  # noqa: E402

ROWS = 2000
PREDICT_ROWS = 20
# Any role ARN: local mode never assumes it, but the Estimator insists on one.
ROLE = "arn:aws:iam::111111111111:role/smalgo-local-mode"
# The SDK's own config file, with its telemetry (a request to AWS after each call) turned off:
# traffic in tests stays on this machine.
SDK_CONFIG = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_train_channel(directory: Path, features: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    centers = rng.uniform(-10, 10, (6, features))
    X = (centers[rng.integers(0, 6, ROWS)] + rng.normal(0, 1, (ROWS, features))).astype(np.float32)
    labels = (X[:, 0] > np.median(X[:, 0])).astype(np.float32)
    directory.mkdir(parents=True)
    with open(directory / "train.pbr", "wb") as f:
        write_numpy_to_dense_tensor(f, X, labels)
    return X


def main(
    workdir: str, image: str, algorithm: str, hyperparameters_json: str, features: str, content_type: str = ""
) -> None:
    root = Path(workdir).resolve()
    X = write_train_channel(root / "train", int(features))
    (root / "sagemaker-config.yaml").write_text(SDK_CONFIG)
    os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(root / "sagemaker-config.yaml")
    session = LocalSession()
    # The SDK's temporary job folders under WORKDIR (not /tmp), and the endpoint on a free port.
    session.config = {"local": {"container_root": str(root), "serving_port": free_port()}}
    estimator = Estimator(
        image_uri=image,
        role=ROLE,
        instance_count=1,
        instance_type="local",
        hyperparameters=json.loads(Path(hyperparameters_json).read_text()),
        output_path=f"file://{root / 'output'}",
        sagemaker_session=session,
        base_job_name=f"smalgo-{algorithm}",
    )
    channel = TrainingInput(f"file://{root / 'train'}", content_type=content_type or None)
    started = time.monotonic()
    estimator.fit({"train": channel}, logs=False)
    trained = time.monotonic()
    predictor = estimator.deploy(
        initial_instance_count=1,
        instance_type="local",
        serializer=CSVSerializer(),
        deserializer=JSONDeserializer(),
    )
    try:
        rows = X[:PREDICT_ROWS]
        deployed = time.monotonic()
        answer = predictor.predict(rows)
    finally:
        predictor.delete_endpoint()
    result = {
        "model_data": estimator.model_data,
        "rows": rows.tolist(),
        "answer": answer,
        "seconds": {"fit": trained - started, "deploy": deployed - trained, "delete": time.monotonic() - deployed},
    }
    (root / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    if not 6 <= len(sys.argv) <= 7:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
