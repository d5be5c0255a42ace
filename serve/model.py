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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from smalgo import recordio
from smalgo.algorithms.aws_models import holds_aws_model, load_aws_model
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.contract import Algorithm, Model
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.model_files import METADATA_FILE, ModelFiles
from smalgo.algorithms.registry import ALGORITHMS

from .decoding import SMALL_CSV_BYTES, decode_request
from .encoding import encode_response
from .media import ACCEPTABLE_MEDIA_TYPES, CSV, JSON, JSONLINES, LIBSVM, RECORDIO_PROTOBUF

logger = logging.getLogger(__name__)


class ModelError(UserError):
    """The model directory holds no model this server can serve."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve: the algorithm that trained it and the model itself."""

    algorithm: Algorithm
    model: Model
    model_dir: Path

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        return self.model.predict(batch)


def load_model(model_dir: str | Path, expected_algorithm: str | None = None) -> LoadedModel:
    """Load and check the model in `model_dir`; ModelError saying what is wrong otherwise.
    `expected_algorithm` is the algorithm an image is built for: a model of another is refused."""
    model_dir = Path(model_dir)
    started = time.perf_counter()
    native = _native_model_algorithm(model_dir, expected_algorithm)
    if native is not None:
        try:
            return _ready(native, native.load_native_model(model_dir), model_dir, started=started)
        except UserError as exc:
            raise ModelError(str(exc)) from None
    if model_dir.is_dir() and not (model_dir / METADATA_FILE).exists() and holds_aws_model(model_dir):
        # A model AWS's built-in image trained (model_algo-1), served as that image would.
        try:
            aws_algorithm, aws_model = load_aws_model(
                model_dir, expected_algorithm and expected_algorithm.strip().lower()
            )
        except UserError as exc:
            raise ModelError(str(exc)) from None
        return _ready(aws_algorithm, aws_model, model_dir, started=started)
    try:
        files = ModelFiles.read(model_dir)
    except UserError as exc:
        raise ModelError(
            f"{exc} SageMaker extracts ModelDataUrl (model.tar.gz) there before the container "
            f"starts; serve the model.tar.gz a smalgo training job wrote."
        ) from None
    algorithm = ALGORITHMS.get(files.algorithm)
    if algorithm is None:
        raise ModelError(
            f"{files.path} names algorithm {files.metadata.get('algorithm')!r}; this server serves "
            f"{', '.join(sorted(ALGORITHMS))}."
        )
    if expected_algorithm and algorithm.name != expected_algorithm.strip().lower():
        raise ModelError(
            f"This image serves {expected_algorithm} models, but {model_dir} holds a {algorithm.name} model."
        )
    try:
        model = algorithm.load_model(files)
    except UserError as exc:
        raise ModelError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"The {algorithm.name} model in {model_dir} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    return _ready(algorithm, model, model_dir, started=started)


def _native_model_algorithm(model_dir: Path, expected_algorithm: str | None) -> Algorithm | None:
    """The algorithm whose own model format `model_dir` holds (no model.json): the image's
    algorithm when it has one (AWS's XGBoost image reads any file of the directory), else the
    algorithm whose file names are there (xgboost-model*); None for a model.json directory."""
    if not model_dir.is_dir() or (model_dir / METADATA_FILE).exists():
        return None
    if expected_algorithm:
        expected = ALGORITHMS.get(expected_algorithm.strip().lower())
        if expected is not None and expected.native_model_files:
            return expected
        return None
    return next((a for a in ALGORITHMS.values() if a.holds_native_model(model_dir)), None)


def _ready(algorithm: Algorithm, model: Model, model_dir: Path, *, started: float) -> LoadedModel:
    loaded = LoadedModel(algorithm, model, model_dir)
    warm_up(loaded)
    logger.info(
        "Loaded the %s model in %s (%d features; outputs %s) and warmed it up in %.2f s.",
        algorithm.name,
        model_dir,
        loaded.feature_dim,
        ", ".join(algorithm.output_names),
        time.perf_counter() - started,
    )
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
        (
            JSON,
            json.dumps(
                {
                    "instances": [
                        {"features": json_row},
                        {"data": {"features": {"keys": [0], "values": [1.5], "shape": [model.feature_dim]}}},
                    ]
                }
            ).encode(),
        ),
        (JSONLINES, (json.dumps({"features": json_row}) + "\n").encode()),
        (LIBSVM, b"0:1.5\n1 0:1.5\n"),
        (RECORDIO_PROTOBUF, dense.getvalue()),
        (RECORDIO_PROTOBUF, sparse.getvalue()),
    ]
    for media_type, body in requests:
        outputs = model.predict(decode_request(body, media_type, model.feature_dim))
        if media_type == RECORDIO_PROTOBUF or (media_type == CSV and len(body) > SMALL_CSV_BYTES):
            # A large body the worker spilled to disk is decoded from its file, by the streaming
            # decoders (kernels of their own: their buffers are writable).
            with tempfile.TemporaryFile() as file:
                file.write(body)
                file.seek(0)
                model.predict(decode_request(file, media_type, model.feature_dim))
        for accept in ACCEPTABLE_MEDIA_TYPES:
            encode_response(
                outputs,
                accept,
                json_key=model.algorithm.json_response_key,
                batch_mode=False,
                csv_vectors_quoted=model.algorithm.csv_vectors_quoted,
            )
