"""Linear learner (SageMaker `linear-learner`, spec section 4.1): what the algorithm declares,
its schema and the checks that span several hyperparameters.

Training, selection and the model are in `_linear_learner.py` (its docstring explains the method
and the choices made where AWS's documentation is silent), what `auto` resolves to and what the
packed models vary in `_settings.py`, the numba kernels in `_kernels.py` (their GPU version in
`_cuda.py`), the evaluation metrics and threshold calibration in `_metrics.py`, the model in AWS's
form (model_algo-1, a module-checkpoint zip) in `_aws.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from smalgo.algorithms.contract import Hyperparameters, Model, Output, SampleJob, StreamingAlgorithm
from smalgo.algorithms.data import TrainingData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.content_types import CSV, RECORDIO_PROTOBUF
from smalgo.algorithms.formats.mxnet_checkpoint import MXNetCheckpoint
from smalgo.algorithms.hyperparameters import AUTO, Hyperparameter, Schema
from smalgo.algorithms.metrics import MetricDefinition, MetricWriter, quality_definition
from smalgo.algorithms.model_files import ModelFiles
from smalgo.algorithms.training import (
    DRIVER_METRIC_DEFINITIONS,
    EarlyStopping,
    SingleHost,
    TrainingCallback,
    train_streaming,
)

from . import _aws
from ._linear_learner import (
    FORMAT_VERSION,
    NAME,
    Candidates,
    CandidateScorer,
    LinearLearnerModel,
    LinearLearnerTraining,
    ModelScorer,
    Problem,
    check_model_size,
    load,
)
from ._settings import (
    BINARY,
    LOSSES,
    LOSSES_BY_PREDICTOR,
    MULTICLASS,
    PREDICTOR_TYPES,
    REGRESSOR,
    positive_example_weight_mult,
)

logger = logging.getLogger(__name__)

CRITERIA = (
    "accuracy",
    "f_beta",
    "precision_at_target_recall",
    "recall_at_target_precision",
    "loss_function",
    # Older names the SageMaker Python SDK still accepts: f1 is f_beta with beta 1,
    # cross_entropy_loss is loss_function.
    "f1",
    "cross_entropy_loss",
)


def _float(name: str, default, description: str, **bounds) -> Hyperparameter:
    return Hyperparameter(name, "float", default=default, description=description, **bounds)


def _open_unit(name: str, default, description: str, **options) -> Hyperparameter:
    """A float strictly between 0 and 1."""
    return _float(
        name,
        default,
        description,
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
        exclusive_maximum=True,
        **options,
    )


def _unit(name: str, description: str) -> Hyperparameter:
    """auto, or a float from 0 up to (not including) 1."""
    return _float(name, AUTO, description, minimum=0.0, maximum=1.0, exclusive_maximum=True, allow_auto=True)


def _positive(name: str, default, description: str, **options) -> Hyperparameter:
    return _float(name, default, description, minimum=0.0, exclusive_minimum=True, **options)


def _non_negative(name: str, default, description: str, **options) -> Hyperparameter:
    return _float(name, default, description, minimum=0.0, **options)


def _flag(name: str, default, description: str, *, allow_auto: bool = False) -> Hyperparameter:
    return Hyperparameter(name, "bool", default=default, allow_auto=allow_auto, description=description)


def _count(name: str, default, description: str, **options) -> Hyperparameter:
    return Hyperparameter(name, "int", default=default, minimum=1, description=description, **options)


# The metrics AWS's linear-learner image defines for CloudWatch and tuning, as a tuning job's
# description lists them (spec 4.1), with the documented roc_auc_score and validation:rmse: 40,
# the most a MetricDefinitions list may hold. A metric whose line carries a parameter is matched
# by a pattern: the beta of binary_f_1.000 and macro_f_1.000, the k of multiclass_top_k_accuracy_3,
# the loss of <loss>_objective (OBJECTIVE_METRICS).
OBJECTIVE_PATTERN = r"\S+_objective"
_MODEL_METRICS = (  # metric, kind, the pattern of its name in the line (None: the name itself)
    ("absolute_loss", "loss", None),
    ("binary_classification_accuracy", "score", None),
    ("binary_f_beta", "score", r"binary_f_\S+"),
    ("dcg", "score", None),
    ("macro_f_beta", "score", r"macro_f_\S+"),
    ("macro_precision", "score", None),
    ("macro_recall", "score", None),
    ("mse", "loss", None),
    ("multiclass_accuracy", "score", None),
    ("multiclass_top_k_accuracy", "score", r"multiclass_top_k_accuracy_\S+"),
    ("precision", "score", None),
    ("recall", "score", None),
    ("roc_auc_score", "score", None),
)
# Of those, the ones also defined on the train channel (the final model on the training data).
_TRAIN_MODEL_METRICS = (
    "absolute_loss",
    "binary_classification_accuracy",
    "binary_f_beta",
    "mse",
    "precision",
    "recall",
)


def _metric_definitions() -> tuple[MetricDefinition, ...]:
    objective = [
        quality_definition("train", "objective_loss", "loss", printed=OBJECTIVE_PATTERN, per_epoch=True),
        quality_definition(
            "train", "objective_loss", "loss", printed=OBJECTIVE_PATTERN, name="train:objective_loss:final"
        ),
        quality_definition("validation", "objective_loss", "loss", printed=OBJECTIVE_PATTERN, per_epoch=True),
        quality_definition(
            "validation", "objective_loss", "loss", printed=OBJECTIVE_PATTERN, name="validation:objective_loss:final"
        ),
        quality_definition("test", "objective_loss", "loss", printed=OBJECTIVE_PATTERN),
    ]
    final = [
        quality_definition(channel, metric, kind, printed=printed)
        for channel in ("validation", "test")
        for metric, kind, printed in _MODEL_METRICS
    ]
    train = [
        quality_definition("train", metric, kind, printed=printed)
        for metric, kind, printed in _MODEL_METRICS
        if metric in _TRAIN_MODEL_METRICS
    ]
    rmse = [quality_definition("validation", "rmse", "loss")]
    return (*objective, *final, *train, *rmse, *DRIVER_METRIC_DEFINITIONS)


HYPERPARAMETERS = Schema(
    (
        Hyperparameter(
            "predictor_type", "str", required=True, choices=PREDICTOR_TYPES, description="What is predicted."
        ),
        Hyperparameter(
            "num_classes",
            "int",
            minimum=1,
            maximum=1_000_000,
            description="Classes of a multiclass_classifier (labels 0 .. num_classes - 1).",
        ),
        _count("feature_dim", AUTO, "Number of features; auto takes it from the data.", allow_auto=True),
        _count("accuracy_top_k", 3, "k of the multiclass top-k accuracy metric.", maximum=1_000_000),
        _flag("balance_multiclass_weights", False, "Weigh each class by the inverse of its frequency."),
        _unit("beta_1", "adam's first-moment decay."),
        _unit("beta_2", "adam's second-moment decay."),
        _positive("bias_lr_mult", AUTO, "Learning-rate multiplier of the bias.", allow_auto=True),
        _non_negative("bias_wd_mult", AUTO, "wd multiplier of the bias (auto: 0, not regularised).", allow_auto=True),
        Hyperparameter(
            "binary_classifier_model_selection_criteria",
            "str",
            default="accuracy",
            choices=CRITERIA,
            description="How the best binary classifier is chosen on validation.",
        ),
        _count("early_stopping_patience", 3, "Passes without improvement before training stops."),
        _positive("early_stopping_tolerance", 0.001, "Relative improvement below which a pass is no improvement."),
        _count("epochs", 15, "Maximum passes over the training data."),
        _positive("f_beta", 1.0, "beta of the F-beta metrics and criterion."),
        _non_negative("huber_delta", 1.0, "huber_loss: where the loss turns from squared to linear."),
        _float("init_bias", 0.0, "Initial bias."),
        Hyperparameter(
            "init_method",
            "str",
            default="uniform",
            choices=("uniform", "normal"),
            description="Initial weights: uniform(-init_scale, init_scale) or normal(0, init_sigma).",
        ),
        _positive("init_scale", 0.07, "Half-width of the uniform initial weights."),
        _positive("init_sigma", 0.01, "Standard deviation of the normal initial weights."),
        _non_negative("l1", AUTO, "L1 regularisation (a proximal step); 0 = off.", allow_auto=True),
        _positive("learning_rate", AUTO, "Step size; auto depends on the optimizer.", allow_auto=True),
        Hyperparameter(
            "loss",
            "str",
            default=AUTO,
            choices=tuple(LOSSES),
            allow_auto=True,
            description="Loss; auto: logistic, softmax_loss or squared_loss by predictor_type.",
        ),
        _positive("loss_insensitivity", 0.01, "epsilon of the eps-insensitive losses."),
        _open_unit("lr_scheduler_factor", AUTO, "Learning-rate decay factor.", allow_auto=True),
        _positive("lr_scheduler_minimum_lr", AUTO, "Learning rate floor of the scheduler.", allow_auto=True),
        _count("lr_scheduler_step", AUTO, "Updates between learning-rate decays.", allow_auto=True),
        _non_negative("margin", 1.0, "hinge_loss margin."),
        _count("mini_batch_size", 1000, "Rows per update."),
        _unit("momentum", "sgd momentum."),
        _flag("normalize_data", True, "Scale the features (from a sample).", allow_auto=True),
        _flag("normalize_label", AUTO, "Scale the label (regression only).", allow_auto=True),
        _count("num_calibration_samples", AUTO, "Validation rows for threshold calibration.", allow_auto=True),
        _count("num_models", AUTO, "Models trained in parallel.", allow_auto=True),
        _count("num_point_for_scaler", 10_000, "Rows the normalisation statistics come from."),
        Hyperparameter(
            "optimizer",
            "str",
            default=AUTO,
            choices=("sgd", "adam", "rmsprop"),
            allow_auto=True,
            description="Optimizer; auto is adam.",
        ),
        Hyperparameter(
            "positive_example_weight_mult",
            "str",
            default="1.0",
            allow_auto=True,
            description="Weight of positive examples: a positive number, balanced or auto.",
        ),
        _open_unit("quantile", 0.5, "quantile_loss: the quantile predicted."),
        _open_unit("target_precision", 0.8, "recall_at_target_precision: the precision to reach."),
        _open_unit("target_recall", 0.8, "precision_at_target_recall: the recall to reach."),
        _flag("unbias_data", AUTO, "Centre the features (auto: dense data, with a bias).", allow_auto=True),
        _flag("unbias_label", AUTO, "Centre the label (regression, with a bias).", allow_auto=True),
        _flag("use_bias", True, "Learn a bias term."),
        _flag("use_lr_scheduler", True, "Decay the learning rate."),
        _non_negative("wd", AUTO, "L2 regularisation (weight decay); 0 = off.", allow_auto=True),
    )
)


class LinearLearner(StreamingAlgorithm):
    name = NAME
    title = "linear learner"
    hyperparameters = HYPERPARAMETERS
    channels = {"train": True, "validation": False, "test": False}
    content_types = (RECORDIO_PROTOBUF, CSV)
    # score: a vector of class probabilities for multiclass_classifier, else one number;
    # regressors give no predicted_label.
    outputs = (Output("score", vector=None), Output("predicted_label"))
    # Dense data train on a GPU when one is used (_cuda.py).
    has_gpu_path = True
    model_files = ("model.json", "weights.npy", "bias.npy", "feature_mean.npy", "feature_scale.npy")
    sample_job = SampleJob(
        hyperparameters={
            "predictor_type": "binary_classifier",
            "mini_batch_size": "100",
            "epochs": "2",
            "num_models": "4",
        },
        # Other predictor types and losses, optimizers and sparse-friendly settings use kernels
        # of their own.
        variants=(
            {"predictor_type": "regressor", "loss": "huber_loss", "optimizer": "sgd", "num_models": "2"},
            {"predictor_type": "multiclass_classifier", "num_classes": "3", "optimizer": "rmsprop", "epochs": "1"},
            {"loss": "hinge_loss", "binary_classifier_model_selection_criteria": "f_beta", "epochs": "1"},
        ),
        bad_hyperparameter=("predictor_type", "classifier"),
        content_type="text/csv",
        labelled=True,
    )
    metric_definitions = _metric_definitions()
    # Each host trains on its rows; the hosts average their models after every pass, when their
    # states become the same: checkpointed on one host or several.
    several_hosts = True
    state_checkpoints = True
    state_checkpoints_on_several_hosts = True

    def feature_dim(self, hp: Hyperparameters) -> int | None:
        return None if hp["feature_dim"] == AUTO else int(hp["feature_dim"])

    def validate(self, hp: Hyperparameters) -> None:
        predictor_type = hp["predictor_type"]
        if predictor_type == MULTICLASS and (hp["num_classes"] is None or hp["num_classes"] < 3):
            given = "is missing" if hp["num_classes"] is None else f"is {hp['num_classes']}"
            raise UserError(
                f"Hyperparameter num_classes {given}: predictor_type multiclass_classifier needs it, "
                "an integer from 3 to 1000000 (use binary_classifier for two classes)."
            )
        if predictor_type != MULTICLASS and hp["num_classes"] is not None:
            logger.warning("num_classes is ignored: predictor_type is %s.", predictor_type)
        loss = hp["loss"]
        if loss != AUTO and loss not in LOSSES_BY_PREDICTOR[predictor_type]:
            raise UserError(
                f"Hyperparameter loss: {loss} does not fit predictor_type {predictor_type}; "
                f"it takes auto, {', '.join(LOSSES_BY_PREDICTOR[predictor_type])}."
            )
        weight_mult = positive_example_weight_mult(str(hp["positive_example_weight_mult"]))
        if predictor_type != BINARY and weight_mult != 1.0:
            logger.warning("positive_example_weight_mult is ignored: predictor_type is %s.", predictor_type)
        if predictor_type != MULTICLASS and hp["balance_multiclass_weights"]:
            logger.warning("balance_multiclass_weights is ignored: predictor_type is %s.", predictor_type)
        if predictor_type != REGRESSOR and hp["normalize_label"] is True:
            logger.warning("normalize_label is ignored: a %s's labels are classes.", predictor_type)
        if hp["optimizer"] != "sgd" and hp["momentum"] not in (AUTO, 0.0):
            logger.warning("momentum is ignored: it applies to optimizer sgd.")
        if not hp["use_bias"]:
            for name in ("unbias_data", "unbias_label"):
                if hp[name] is True:
                    logger.warning("%s is ignored: centring needs a bias, and use_bias is false.", name)
        feature_dim = self.feature_dim(hp)
        if feature_dim is not None:
            check_model_size(hp, feature_dim)

    def start(self, hp: Hyperparameters) -> LinearLearnerTraining:
        return LinearLearnerTraining(hp, batch_rows=self.batch_rows(hp))

    def scorer(self, model: Model, hp: Hyperparameters, channel: str) -> CandidateScorer | ModelScorer:
        if isinstance(model, Candidates):
            return CandidateScorer(model)
        assert isinstance(model, LinearLearnerModel)
        return ModelScorer(model, channel)

    def train(
        self,
        hp: Hyperparameters,
        data: TrainingData,
        *,
        metrics: MetricWriter | None = None,
        callbacks: Iterable[TrainingCallback] = (),
        collective: SingleHost | None = None,
        checkpoint_dir: Path | None = None,
    ) -> Model:
        """The shared driver, with early stopping on the selection criterion (validation) or
        the train objective loss (its best pass is checkpointed with the state)."""
        problem = Problem.of(hp)
        validating = data.has_channel("validation")
        metric = problem.criterion_metric() if validating else problem.objective_metric
        stopping = EarlyStopping(
            f"{'validation' if validating else 'train'}:{metric}",
            int(hp["early_stopping_patience"]),
            min_delta=float(hp["early_stopping_tolerance"]),
            relative=True,
            maximize=metric != problem.objective_metric,
        )
        return train_streaming(
            self,
            hp,
            data,
            metrics=metrics,
            callbacks=[*callbacks, stopping],
            collective=collective,
            checkpoint_dir=checkpoint_dir,
        )

    def from_aws_checkpoint(self, checkpoint: MXNetCheckpoint, *, source: str) -> LinearLearnerModel | None:
        # AWS's linear learner zips a module checkpoint: fc0_weight and fc0_bias (_aws.py).
        return _aws.model_from_checkpoint(self.hyperparameters, checkpoint, source=source)

    def to_aws_checkpoint(self, model: Model) -> MXNetCheckpoint:
        assert isinstance(model, LinearLearnerModel)
        return _aws.checkpoint_of(model)

    def load_model(self, files: ModelFiles) -> LinearLearnerModel:
        files.expect_format_version(FORMAT_VERSION, self.title)
        # Unset optional hyperparameters (num_classes of a binary classifier) are saved as null.
        saved = {name: value for name, value in files.mapping("hyperparameters").items() if value is not None}
        return load(files, self.hyperparameters.parse(saved))


ALGORITHM = LinearLearner()

__all__ = ["ALGORITHM", "LinearLearner", "LinearLearnerModel"]
