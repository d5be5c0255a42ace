"""Factorization machines (SageMaker `factorization-machines`, spec section 4.4): what the
algorithm declares, its schema and the checks that span several hyperparameters.

Training, the model and its metrics are in `_fm.py` (its docstring explains the method and the
choices made where AWS's documentation is silent), the numba kernels in `_kernels.py`, their GPU
version in `_cuda.py`, the model in AWS's form (model_algo-1, a module-checkpoint zip) in `_aws.py`.
"""

from __future__ import annotations

from smalgo.algorithms.contract import Hyperparameters, Model, Output, SampleJob, StreamingAlgorithm
from smalgo.algorithms.formats.content_types import RECORDIO_PROTOBUF
from smalgo.algorithms.formats.mxnet_checkpoint import MXNetCheckpoint
from smalgo.algorithms.hyperparameters import FEATURE_DIM, Hyperparameter, Schema
from smalgo.algorithms.metrics import quality_definition
from smalgo.algorithms.model_files import ModelFiles
from smalgo.algorithms.training import DRIVER_METRIC_DEFINITIONS

from . import _aws
from ._fm import (
    DEFAULT_SIGMA,
    FORMAT_VERSION,
    GROUPS,
    INIT_METHODS,
    NAME,
    PREDICTOR_TYPES,
    FactorizationMachinesModel,
    FactorizationMachinesTraining,
    ModelScorer,
    check_init,
    check_model_size,
    load,
)

# Documented defaults (spec 4.4) of each group's learning rate and weight decay.
DEFAULT_LR = {"bias": 0.1, "linear": 0.001, "factors": 0.0001}
DEFAULT_WD = {"bias": 0.01, "linear": 0.001, "factors": 0.00001}


def _non_negative(name: str, default, description: str) -> Hyperparameter:
    return Hyperparameter(name, "float", default=default, minimum=0.0, description=description)


def _group(group: str) -> tuple[Hyperparameter, ...]:
    """The init method, its three parameters, lr and wd of one parameter group."""
    return (
        Hyperparameter(
            f"{group}_init_method",
            "str",
            default="normal",
            choices=INIT_METHODS,
            description=f"How the {group} weights start: normal, uniform or constant.",
        ),
        _non_negative(f"{group}_init_scale", None, f"uniform: the {group} weights start in [-scale, scale]."),
        # Unset in the schema so that one given with another method can be told from the default;
        # unset reads as the documented default, DEFAULT_SIGMA.
        _non_negative(
            f"{group}_init_sigma",
            None,
            f"normal: standard deviation of the initial {group} weights (default {DEFAULT_SIGMA[group]}).",
        ),
        Hyperparameter(
            f"{group}_init_value", "float", description=f"constant: the value the {group} weights start at."
        ),
        _non_negative(f"{group}_lr", DEFAULT_LR[group], f"Learning rate of the {group} weights."),
        _non_negative(f"{group}_wd", DEFAULT_WD[group], f"Weight decay (L2) of the {group} weights."),
    )


HYPERPARAMETERS = Schema(
    (
        FEATURE_DIM,
        Hyperparameter("num_factors", "int", required=True, minimum=1, description="Rank of the pairwise factors."),
        Hyperparameter(
            "predictor_type", "str", required=True, choices=PREDICTOR_TYPES, description="What is predicted."
        ),
        *(parameter for group in GROUPS for parameter in _group(group)),
        Hyperparameter(
            "clip_gradient",
            "float",
            description="Clip each gradient value to [-clip_gradient, clip_gradient]; 0 or less: none (MXNet).",
        ),
        Hyperparameter("epochs", "int", default=1, minimum=1, description="Passes over the training data."),
        Hyperparameter("eps", "float", description="AdaGrad's epsilon (default 1e-7)."),
        Hyperparameter("mini_batch_size", "int", default=1000, minimum=1, description="Rows per update."),
        Hyperparameter("rescale_grad", "float", description="Gradient multiplier (default 1 / the mini-batch's rows)."),
    )
)


class FactorizationMachines(StreamingAlgorithm):
    name = NAME
    title = "factorization machines"
    several_hosts = True
    # Its weights and AdaGrad accumulators, after every pass; every host holds their average after combine.
    state_checkpoints = True
    state_checkpoints_on_several_hosts = True
    hyperparameters = HYPERPARAMETERS
    channels = {"train": True, "test": False}
    # RecordIO-protobuf with Float32 tensors only, as AWS's image (spec 4.4).
    content_types = (RECORDIO_PROTOBUF,)
    content_types_note = (
        "Factorization machines read RecordIO-protobuf only, as AWS's image does: their data are sparse "
        "(one-hot users, items, contexts), which CSV cannot carry. Convert the data with the SageMaker SDK's "
        "write_spmatrix_to_sparse_tensor (scipy sparse) or write_numpy_to_dense_tensor, from float32 arrays."
    )
    float32_tensors_only = True
    outputs = (Output("score"), Output("predicted_label"))
    has_gpu_path = True
    model_files = ("model.json", "w0.npy", "w.npy", "V.npy")
    sample_job = SampleJob(
        hyperparameters={
            "predictor_type": "binary_classifier",
            "num_factors": "4",
            "mini_batch_size": "100",
            "epochs": "2",
            "factors_lr": "0.01",
            "linear_lr": "0.01",
        },
        # The paths a job can take besides the sample's: the squared loss, the other init
        # methods, clipping (the warm-up and the contract tests train each).
        variants=(
            {"predictor_type": "regressor", "factors_init_method": "uniform", "factors_init_scale": "0.01"},
            {"bias_init_method": "constant", "bias_init_value": "0.5", "clip_gradient": "1.0", "epochs": "1"},
        ),
        bad_hyperparameter=("num_factors", "0"),
        labelled=True,
    )
    # The platform's test metrics (spec 4.4: rmse for a regressor; accuracy, cross entropy and F1
    # for a binary classifier), and the train loss of each pass (smalgo's, in the same form).
    metric_definitions = (
        quality_definition("test", "rmse", "loss"),
        quality_definition("test", "binary_classification_accuracy", "score"),
        quality_definition("test", "binary_classification_cross_entropy", "loss"),
        quality_definition("test", "binary_f_beta", "score"),
        quality_definition("train", "rmse", "loss", per_epoch=True),
        quality_definition("train", "binary_classification_cross_entropy", "loss", per_epoch=True),
        *DRIVER_METRIC_DEFINITIONS,
    )

    def validate(self, hp: Hyperparameters) -> None:
        check_init(hp)
        check_model_size(int(hp["feature_dim"]), int(hp["num_factors"]))

    def start(self, hp: Hyperparameters) -> FactorizationMachinesTraining:
        return FactorizationMachinesTraining(hp)

    def scorer(self, model: Model, hp: Hyperparameters, channel: str) -> ModelScorer:
        assert isinstance(model, FactorizationMachinesModel)
        return ModelScorer(model, channel)

    def from_aws_checkpoint(self, checkpoint: MXNetCheckpoint, *, source: str) -> FactorizationMachinesModel | None:
        # AWS's factorization machines zip a module checkpoint: w0_weight, w1_weight and v (_aws.py).
        return _aws.model_from_checkpoint(self.hyperparameters, checkpoint, source=source)

    def to_aws_checkpoint(self, model: Model) -> MXNetCheckpoint:
        assert isinstance(model, FactorizationMachinesModel)
        return _aws.checkpoint_of(model)

    def load_model(self, files: ModelFiles) -> FactorizationMachinesModel:
        files.expect_format_version(FORMAT_VERSION, self.title)
        # Unset optional hyperparameters (clip_gradient, the init methods' others) are saved as null.
        saved = {name: value for name, value in files.mapping("hyperparameters").items() if value is not None}
        return load(files, self.hyperparameters.parse(saved))


ALGORITHM = FactorizationMachines()

__all__ = ["ALGORITHM", "FactorizationMachines", "FactorizationMachinesModel"]
