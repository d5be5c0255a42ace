"""PCA (SageMaker `pca`, spec section 4.3): what the algorithm declares, and its schema.

The statistics, the model and the method (regular and randomized modes, conventions, numerics)
are in `_pca.py`.
"""

from __future__ import annotations

import numpy as np

from smalgo.algorithms.contract import AWSArrays, Hyperparameters, Model, Output, SampleJob, StreamingAlgorithm
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.content_types import CSV, RECORDIO_PROTOBUF
from smalgo.algorithms.hyperparameters import FEATURE_DIM, Hyperparameter, Schema
from smalgo.algorithms.metrics import quality_definition
from smalgo.algorithms.model_files import ModelFiles
from smalgo.algorithms.training import DRIVER_METRIC_DEFINITIONS

from ._pca import (
    FORMAT_VERSION,
    MAX_MATRIX_VALUES,
    NAME,
    READ_VALUES,
    RECONSTRUCTION_ERROR,
    PCAModel,
    PCAScorer,
    PCATraining,
    sketch_size,
)

HYPERPARAMETERS = Schema(
    (
        FEATURE_DIM,
        Hyperparameter(
            "mini_batch_size",
            "int",
            required=True,
            minimum=1,
            description="Rows per mini-batch (the result does not depend on it).",
        ),
        Hyperparameter(
            "num_components", "int", required=True, minimum=1, description="Number of principal components to compute."
        ),
        Hyperparameter(
            "algorithm_mode",
            "str",
            default="regular",
            choices=("regular", "randomized"),
            description="regular: exact, O(d^2) memory; randomized: sketch, O(d l) memory.",
        ),
        Hyperparameter(
            "extra_components",
            "int",
            default=-1,
            minimum=-1,
            description="Randomized mode: sketch size beyond num_components; -1 = max(10, num_components).",
        ),
        Hyperparameter(
            "subtract_mean", "bool", default=True, description="Center the data (in training and inference)."
        ),
    )
)


class PCA(StreamingAlgorithm):
    name = NAME
    title = "PCA"
    several_hosts = True
    # Its sums, after every pass (one); every host holds the job-wide sums after combine.
    state_checkpoints = True
    state_checkpoints_on_several_hosts = True
    hyperparameters = HYPERPARAMETERS
    content_types = (RECORDIO_PROTOBUF, CSV)
    outputs = (Output("projection", vector=True),)
    json_response_key = "projections"
    model_files = ("model.json", "components.npy", "singular_values.npy", "mean.npy")
    sample_job = SampleJob(
        hyperparameters={
            "num_components": "3",
            "mini_batch_size": "500",
            "algorithm_mode": "regular",
            "subtract_mean": "True",
        },
        variants=({"algorithm_mode": "randomized", "subtract_mean": "False"},),
        bad_hyperparameter=("num_components", "0"),
    )
    # AWS documents no PCA metrics (PCA is not tunable there, spec 4.3): these are smalgo's names,
    # in the platform's form, for what its jobs print.
    metric_definitions = (
        quality_definition("train", RECONSTRUCTION_ERROR, "loss"),
        quality_definition("test", RECONSTRUCTION_ERROR, "loss"),
        *DRIVER_METRIC_DEFINITIONS,
    )

    def validate(self, hp: Hyperparameters) -> None:
        d, num_components = hp["feature_dim"], hp["num_components"]
        if num_components > d:
            raise UserError(
                f"Hyperparameter num_components ({num_components}) must not exceed feature_dim ({d}): "
                f"data with {d} features has at most {d} principal components."
            )
        if hp["algorithm_mode"] == "regular" and d * d > MAX_MATRIX_VALUES:
            raise UserError(
                f"algorithm_mode=regular holds a feature_dim x feature_dim matrix ({d} x {d} float64, "
                f"{d * d * 8 / 2**30:.0f} GiB); use algorithm_mode=randomized for feature_dim > "
                f"{int(MAX_MATRIX_VALUES**0.5)}."
            )
        if hp["algorithm_mode"] == "randomized" and d * min(sketch_size(hp), d) > MAX_MATRIX_VALUES:
            raise UserError(
                f"algorithm_mode=randomized holds a feature_dim x (num_components + extra_components) "
                f"matrix ({d} x {sketch_size(hp)}); lower extra_components or num_components."
            )

    def epochs(self, hp: Hyperparameters) -> int:
        return 1  # the statistics are complete after one pass

    def batch_rows(self, hp: Hyperparameters) -> int:
        # The statistics do not depend on how rows are grouped: read large blocks.
        return max(int(hp["mini_batch_size"]), READ_VALUES // int(hp["feature_dim"]))

    def start(self, hp: Hyperparameters) -> PCATraining:
        return PCATraining(hp)

    def scorer(self, model: Model, hp: Hyperparameters, channel: str) -> PCAScorer:
        assert isinstance(model, PCAModel)
        return PCAScorer(model)

    def from_aws_arrays(self, arrays: AWSArrays, *, source: str) -> PCAModel | None:
        # AWS's PCA saves a dict: mean (1, d), v (d, num_components) and s (num_components,), s
        # ascending in regular mode and descending in randomized mode, v's columns in s's order.
        # It projects (x - mean) . v in that order, whatever s holds (a NaN singular value too).
        if not isinstance(arrays, dict) or set(arrays) != {"mean", "v", "s"}:
            return None
        mean, v, s = arrays["mean"], arrays["v"], arrays["s"]
        if v.ndim != 2 or s.shape != (v.shape[1],) or mean.size != v.shape[0] or mean.ndim > 2:
            raise UserError(
                f"{source}: an AWS PCA model's arrays do not fit together: mean {mean.shape}, v {v.shape}, s {s.shape} "
                "(expected (1, d), (d, c) and (c,))."
            )
        if not (np.isfinite(v).all() and np.isfinite(mean).all()):
            raise UserError(f"{source}: the AWS PCA model's v or mean holds NaN or infinite values.")
        return PCAModel(
            v,
            s,
            mean=mean.reshape(-1),
            n_rows=0,  # not in the file
            details={"imported_from": "AWS PCA model_algo-1"},
        )

    def to_aws_arrays(self, model: Model) -> AWSArrays:
        assert isinstance(model, PCAModel)
        mean = np.zeros(model.feature_dim, np.float32) if model.mean is None else model.mean
        return {"s": model.singular_values, "v": model.components, "mean": mean.reshape(1, -1)}

    def load_model(self, files: ModelFiles) -> PCAModel:
        files.expect_format_version(FORMAT_VERSION, self.title)
        feature_dim, num_components = files.integer("feature_dim"), files.integer("num_components")
        components = files.array("components", shape=(feature_dim, num_components))
        # A model imported from AWS's PCA keeps its singular values as AWS saved them, NaN
        # included (AWS serves such models: projections never use them); ours are all finite.
        imported = bool(files.mapping("details").get("imported_from"))
        singular_values = files.array("singular_values", shape=(num_components,), finite=not imported)
        mean = files.array("mean", shape=(feature_dim,)) if files.has_array("mean") else None
        return PCAModel(
            components,
            singular_values,
            mean=mean,
            n_rows=0 if imported else files.integer("n_rows"),  # AWS's file does not say it
            hyperparameters=files.mapping("hyperparameters"),
            details=files.mapping("details"),
        )


ALGORITHM = PCA()

__all__ = ["ALGORITHM", "PCA", "PCAModel"]
