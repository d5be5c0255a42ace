"""Lays out a training job as the SageMaker Python SDK v2's local mode lays it out, with the SDK's
own code, for `make test-images` (tests/images/check_images.py).

Runs in the SDK's environment (benchmarks/.venv-sdk), never the project's:

    benchmarks/.venv-sdk/bin/python tests/images/sdk_local_job.py HOST_DIR ALGORITHM HYPERPARAMETERS_JSON \
        [FEATURES [CONTENT_TYPE]]

FEATURES: the rows' width when the hyperparameters have no feature_dim (XGBoost's); CONTENT_TYPE:
the train channel's ContentType, for an algorithm whose default is not RecordIO (XGBoost's).

HOST_DIR becomes what local mode mounts at /opt/ml for host algo-1:
- input/config/{hyperparameters,resourceconfig,inputdataconfig}.json, written by
  `sagemaker.local.image._SageMakerContainer.write_config_files` (the SDK's function, called
  on a stand-in for the container object, whose constructor wants docker-compose and AWS);
  the hyperparameters are the map an SDK v2 estimator sends (HYPERPARAMETERS_JSON, captured by
  benchmarks/recordio/capture_sdk_hyperparameters.py), the channel is `train` with no
  ContentType, as `estimator.fit(RecordSet)` gives it;
- input/data/train/train.pbr, written by the SDK's `write_numpy_to_dense_tensor` from
  `estimator.record_set()`'s code path (float32 rows, float32 labels);
- model/ and output/, as `_create_config_file_directories` and `train()` make them.

Prints the rows it wrote, as JSON, for the checks on the trained model.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import types

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
logging.disable(logging.WARNING)

import numpy as np  # noqa: E402
from sagemaker.amazon.common import write_numpy_to_dense_tensor  # noqa: E402
from sagemaker.local import image as local_image  # noqa: E402

HOST = "algo-1"
ROWS = 3000


def main(host_dir: str, algorithm: str, hyperparameters_json: str, features: str = "", content_type: str = "") -> None:
    hyperparameters = json.loads(open(hyperparameters_json).read())
    feature_dim = int(hyperparameters.get("feature_dim") or features)
    container_root = os.path.dirname(os.path.abspath(host_dir))
    if os.path.basename(os.path.abspath(host_dir)) != HOST:
        raise SystemExit(f"{host_dir}: the SDK names a host's directory {HOST}")

    # What _SageMakerContainer.train() does for each host, minus docker-compose.
    local_image._create_config_file_directories(container_root, HOST)
    os.makedirs(os.path.join(host_dir, "output", "data"), exist_ok=True)
    container = types.SimpleNamespace(container_root=container_root, hosts=[HOST], instance_type="local")
    input_data_config = [
        {
            "ChannelName": "train",
            "DataUri": "file:///unused",
            "DataSource": {"FileDataSource": {"FileUri": "file:///unused"}},
            **({"ContentType": content_type} if content_type else {}),
        }
    ]
    local_image._SageMakerContainer.write_config_files(container, HOST, hyperparameters, input_data_config)

    rng = np.random.default_rng(11)
    centers = rng.uniform(-10, 10, (8, feature_dim))
    X = (centers[rng.integers(0, 8, ROWS)] + rng.normal(0, 1, (ROWS, feature_dim))).astype(np.float32)
    labels = rng.integers(0, 2, ROWS).astype(np.float32)
    train_dir = os.path.join(host_dir, "input", "data", "train")
    os.makedirs(train_dir)
    with open(os.path.join(train_dir, "train.pbr"), "wb") as f:
        write_numpy_to_dense_tensor(f, X, labels)
    json.dump(X[:20].tolist(), sys.stdout)


if __name__ == "__main__":
    if not 4 <= len(sys.argv) <= 6:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
