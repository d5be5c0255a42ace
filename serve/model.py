"""Loading the model once, checking it, and warming every code path a request can take.

The server loads the model in gunicorn's master before it forks the workers, so a bad model
directory fails the start (with a message naming the directory and the problem) instead of every
request, and the workers share the loaded arrays and the compiled numba kernels copy-on-write.
The warm-up runs one tiny request of each body format through decoding, prediction and encoding:
numba compiles (or loads from its cache) every kernel there, so the first real request pays
nothing.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from smalgo import recordio
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.registry import ALGORITHMS, get_algorithm

from .decoding import SMALL_CSV_BYTES, decode_request
from .encoding import encode_response
from .media import ACCEPTABLE_MEDIA_TYPES, CSV, JSON, JSONLINES, RECORDIO_PROTOBUF

logger = logging.getLogger(__name__)

MODEL_METADATA = "model.json"


class ModelError(UserError):
    """The model directory holds no model this server can serve."""


@dataclass(frozen=True)
class LoadedModel:
    algorithm: str  # registry name, e.g. "kmeans"
    model: object  # the algorithm's Model: predict(Batch) -> dict[str, np.ndarray]
    feature_dim: int
    output_names: tuple[str, ...]  # what predict returns, in order
    model_dir: Path

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        return self.model.predict(batch)


def load_model(model_dir: str | Path, expected_algorithm: str | None = None) -> LoadedModel:
    """Load and check the model in `model_dir`; ModelError saying what is wrong otherwise.
    `expected_algorithm` is the algorithm an image is built for: a model of another is refused."""
    model_dir = Path(model_dir)
    metadata_path = model_dir / MODEL_METADATA
    if not model_dir.is_dir():
        raise ModelError(f"Model directory {model_dir} does not exist; SageMaker extracts ModelDataUrl "
                         f"(model.tar.gz) there before the container starts.")
    try:
        metadata = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        present = sorted(p.name for p in model_dir.iterdir())[:10]
        raise ModelError(f"No smalgo model in {model_dir}: {MODEL_METADATA} is missing (the directory holds: "
                         f"{', '.join(present) or 'nothing'}). Serve the model.tar.gz a smalgo training job "
                         f"wrote.") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{metadata_path} cannot be read as JSON: {exc}") from None
    name = metadata.get("algorithm") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or name.strip().lower() not in ALGORITHMS:
        raise ModelError(f"{metadata_path} names algorithm {name!r}; this server serves "
                         f"{', '.join(sorted(ALGORITHMS))}.")
    if expected_algorithm and name.strip().lower() != expected_algorithm.strip().lower():
        raise ModelError(f"This image serves {expected_algorithm} models, but {model_dir} holds a {name} model.")
    module = get_algorithm(name)
    started = time.perf_counter()
    try:
        model = module.load_model(model_dir)
    except UserError as exc:
        raise ModelError(str(exc)) from None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"The {module.NAME} model in {model_dir} cannot be loaded: "
                         f"{type(exc).__name__}: {exc}") from None
    feature_dim = getattr(model, "feature_dim", None)
    if not isinstance(feature_dim, (int, np.integer)) or feature_dim < 1:
        raise ModelError(f"The {module.NAME} model in {model_dir} reports no feature count ({feature_dim!r}).")
    outputs = model.predict(Batch(np.zeros((1, int(feature_dim)), dtype=np.float32)))
    loaded = LoadedModel(module.NAME, model, int(feature_dim), tuple(outputs), model_dir)
    warm_up(loaded)
    logger.info("Loaded the %s model in %s (%d features; outputs %s) and warmed it up in %.2f s.",
                loaded.algorithm, model_dir, loaded.feature_dim, ", ".join(loaded.output_names),
                time.perf_counter() - started)
    return loaded


def warm_up(model: LoadedModel) -> None:
    """One small request of every body format, through decoding, prediction and every encoder.
    Small on purpose: large bodies would start thread pools that must not exist before fork."""
    rows = np.zeros((2, model.feature_dim), dtype=np.float32)
    rows[:, 0] = 1.5
    dense, sparse = io.BytesIO(), io.BytesIO()
    recordio.write_dense(dense, rows)
    recordio.write_sparse(sparse, sp.csr_matrix(rows))
    csv_line = ",".join(["1.5"] + ["0"] * (model.feature_dim - 1))
    json_row = rows[0].tolist()
    requests = [
        (CSV, f"{csv_line}\n{csv_line}\n".encode()),
        # Longer than the CSV fast path takes, so the numba decoder is compiled too.
        (CSV, f"{csv_line}\n".encode() * (SMALL_CSV_BYTES // len(csv_line) + 1)),
        (JSON, json.dumps({"instances": [{"features": json_row}, {"data": {"features": {
            "keys": [0], "values": [1.5], "shape": [model.feature_dim]}}}]}).encode()),
        (JSONLINES, (json.dumps({"features": json_row}) + "\n").encode()),
        (RECORDIO_PROTOBUF, dense.getvalue()),
        (RECORDIO_PROTOBUF, sparse.getvalue()),
    ]
    for media_type, body in requests:
        outputs = model.predict(decode_request(body, media_type, model.feature_dim))
        for accept in ACCEPTABLE_MEDIA_TYPES:
            encode_response(outputs, accept, model.algorithm, batch_mode=False)
