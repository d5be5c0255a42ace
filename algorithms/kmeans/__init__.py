"""k-means (SageMaker `kmeans`, spec section 4.2): what the algorithm declares, and its schema.

The training and the model are in `_kmeans.py` (its docstring explains the method and the choices
made where AWS's documentation is silent), the CPU kernels in `_kernels.py`, the GPU kernel in
`_cuda.py`.
"""

from __future__ import annotations

import numpy as np

from smalgo.algorithms.contract import AWSArrays, Hyperparameters, Model, Output, SampleJob, StreamingAlgorithm
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.content_types import CSV, RECORDIO_PROTOBUF
from smalgo.algorithms.hyperparameters import AUTO, FEATURE_DIM, Hyperparameter, Schema, tuning_objective
from smalgo.algorithms.metrics import quality_definition
from smalgo.algorithms.model_files import ModelFiles
from smalgo.algorithms.training import DRIVER_METRIC_DEFINITIONS

from ._kmeans import (
    FORMAT_VERSION,
    MAX_CENTER_VALUES,
    NAME,
    KMeansModel,
    KMeansScorer,
    KMeansTraining,
    resolve_extra_center_factor,
)

INIT_METHODS = ("random", "kmeans++")
EVAL_METRICS = ("msd", "ssd")


HYPERPARAMETERS = Schema(
    (
        FEATURE_DIM,
        Hyperparameter(
            "k",
            "int",
            required=True,
            minimum=1,
            description="Number of clusters (k = 1 is accepted: the weighted mean).",
        ),
        Hyperparameter("epochs", "int", default=1, minimum=1, description="Passes over the training data."),
        Hyperparameter(
            "eval_metrics",
            "list",
            default=["msd"],
            choices=EVAL_METRICS,
            item_kind="str",
            description="Metrics reported on the test channel.",
        ),
        Hyperparameter(
            "extra_center_factor",
            "int",
            default=AUTO,
            minimum=1,
            allow_auto=True,
            description="Streaming uses k x extra_center_factor centers.",
        ),
        Hyperparameter(
            "half_life_time_size",
            "int",
            default=0,
            minimum=0,
            description="Points after which a point's weight halves; 0 = no decay.",
        ),
        Hyperparameter(
            "init_method",
            "str",
            default="random",
            choices=INIT_METHODS,
            description="Seeding of the streaming centers from the first mini-batch.",
        ),
        Hyperparameter(
            "local_lloyd_init_method",
            "str",
            default="kmeans++",
            choices=INIT_METHODS,
            description="Seeding of the local Lloyd reduction from K to k centers.",
        ),
        Hyperparameter(
            "local_lloyd_max_iter",
            "int",
            default=300,
            minimum=1,
            description="Maximum Lloyd iterations per reduction trial.",
        ),
        Hyperparameter(
            "local_lloyd_num_trials",
            "int",
            default=AUTO,
            minimum=1,
            allow_auto=True,
            description="Reduction trials; the one with the least loss is kept.",
        ),
        Hyperparameter(
            "local_lloyd_tol",
            "float",
            default=0.0001,
            minimum=0.0,
            maximum=1.0,
            description="Relative loss decrease under which Lloyd stops.",
        ),
        Hyperparameter("mini_batch_size", "int", default=5000, minimum=1, description="Rows per streaming update."),
    ),
    # The SageMaker Python SDK's KMeans estimator always sends force_dense="True".
    extra_allowed=("force_dense",),
)


class KMeans(StreamingAlgorithm):
    name = NAME
    title = "k-means"
    several_hosts = True
    # Its streaming centers, weights and random generator, after every pass. On several hosts each
    # host keeps streaming its own centers, and combine gathers every host's state: the first
    # host's checkpoint holds them all, by rank, and each host resumes its own (a job of as many
    # hosts only).
    state_checkpoints = True
    state_checkpoints_on_several_hosts = True
    hyperparameters = HYPERPARAMETERS
    content_types = (RECORDIO_PROTOBUF, CSV)
    outputs = (Output("closest_cluster"), Output("distance_to_cluster"))
    model_files = ("model.json", "centers.npy")
    has_gpu_path = True
    sample_job = SampleJob(
        hyperparameters={
            "k": "10",
            "mini_batch_size": "500",
            "epochs": "2",
            "init_method": "kmeans++",
            "eval_metrics": '["msd", "ssd"]',
        },
        # Random seeding, in streaming and in the reduction, uses kernels of its own.
        variants=(
            {"epochs": "1", "init_method": "random", "local_lloyd_init_method": "random", "eval_metrics": '["msd"]'},
        ),
        bad_hyperparameter=("k", "0"),
        content_type="text/csv;label_size=0",
    )
    # The platform's k-means metrics (spec 4.2): test:msd and test:ssd (eval_metrics), and the
    # final train msd line.
    metric_definitions = (
        *(quality_definition("test", metric, "loss") for metric in EVAL_METRICS),
        quality_definition("train", "msd", "loss"),
        *DRIVER_METRIC_DEFINITIONS,
    )

    def validate(self, hp: Hyperparameters) -> None:
        k, feature_dim = hp["k"], hp["feature_dim"]
        factor = resolve_extra_center_factor(k, hp["extra_center_factor"])
        if k * factor * feature_dim > MAX_CENTER_VALUES:
            raise UserError(
                f"k x extra_center_factor x feature_dim = {k} x {factor} x {feature_dim} = "
                f"{k * factor * feature_dim} streaming center values is more than the "
                f"{MAX_CENTER_VALUES} this implementation holds in memory; lower k, "
                f"extra_center_factor or feature_dim."
            )

    def start(self, hp: Hyperparameters) -> KMeansTraining:
        return KMeansTraining(hp)

    def scorer(self, model: Model, hp: Hyperparameters, channel: str) -> KMeansScorer:
        assert isinstance(model, KMeansModel)
        # The metric a tuning job optimises is printed even when eval_metrics leaves it out
        # (test:ssd with the default ["msd"]): the tuner has nothing to read otherwise.
        names = list(hp["eval_metrics"])
        objective_channel, objective = tuning_objective(hp) or ("", "")
        if objective_channel == channel and objective in ("msd", "ssd") and objective not in names:
            names.append(objective)
        return KMeansScorer(model, names)

    def from_aws_arrays(self, arrays: AWSArrays, *, source: str) -> KMeansModel | None:
        # AWS's k-means saves a list holding one array: the k x feature_dim centers, float32.
        if not isinstance(arrays, list) or len(arrays) != 1 or arrays[0].ndim != 2:
            return None
        centers = arrays[0]
        if centers.dtype != np.float32 or centers.shape[0] < 1 or not np.isfinite(centers).all():
            raise UserError(
                f"{source}: an AWS k-means model holds finite float32 centers, not {centers.dtype} {centers.shape}"
                f"{'' if np.isfinite(centers).all() else ' with NaN or infinite values'}."
            )
        return KMeansModel(centers, details={"imported_from": "AWS k-means model_algo-1"})

    def to_aws_arrays(self, model: Model) -> AWSArrays:
        assert isinstance(model, KMeansModel)
        return [model.centers]

    def load_model(self, files: ModelFiles) -> KMeansModel:
        files.expect_format_version(FORMAT_VERSION, self.title)
        k, feature_dim = files.integer("k"), files.integer("feature_dim")
        centers = files.array("centers", shape=(k, feature_dim))
        return KMeansModel(centers, files.mapping("hyperparameters"), files.mapping("details"))


ALGORITHM = KMeans()

__all__ = ["ALGORITHM", "KMeans", "KMeansModel"]
