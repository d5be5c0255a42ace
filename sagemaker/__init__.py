"""smalgo.sagemaker: the SageMaker Python SDK v2's estimators, training and serving smalgo's images.

    pip install 'smalgo[sagemaker]'

    from smalgo.sagemaker import HyperparameterTuner, KMeans

    kmeans = KMeans(
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/smalgo-kmeans:cpu",
        role=role, instance_count=1, instance_type="ml.c5.xlarge", k=10,
    )
    kmeans.fit([kmeans.record_set(X), kmeans.record_set(X_test, channel="test")])
    predictor = kmeans.deploy(1, "ml.c5.large")

`KMeans`, `PCA`, `LinearLearner` and `FactorizationMachines` are the SDK's own classes
(`sagemaker.KMeans`, ...) with one difference, the image. The SDK's Amazon estimators accept
`image_uri=` and drop it: `training_image_uri()` looks AWS's image up, `create_model()` makes a
`KMeansModel` (`PCAModel`, ...) that looks it up again, and `attach()` forgets the job's image.
Here the image given trains (`fit`, `HyperparameterTuner`), serves (`deploy`, `create_model`,
`transformer`, `register`) and is read back by `attach()`. The hyperparameters and their
validation, `record_set()`, the predictors and their serializers are the SDK's, unchanged.

`XGBoost` is `sagemaker.estimator.Estimator`, the class AWS documents for XGBoost as a built-in
algorithm (algorithm mode), which already honours `image_uri` everywhere. The SDK's
`sagemaker.xgboost.XGBoost` is script mode instead: it needs an `entry_point` script, sends it as
hyperparameters (sagemaker_program, sagemaker_submit_directory) and repacks it into the model,
none of which smalgo's image runs. `XGBoost` adds the metric definitions and, for `deploy`, the
SDK's `XGBoostPredictor` (text/libsvm requests, CSV answers) unless another is asked for.

Every estimator carries its algorithm's metric definitions (`metric_definitions=` defaults to
them; `smalgo metric-definitions ALGORITHM` prints the same), and `HyperparameterTuner` is the
SDK's tuner with metric definitions that default to its estimators': the SDK's own tuner reads
only its own `metric_definitions` argument, and a tuning job on an image that is not AWS's needs
them. The definitions come from smalgo.algorithms (each algorithm declares them); nothing in
smalgo imports this package.
"""

from __future__ import annotations

if __name__ == "sagemaker":  # this folder imported as the SDK itself
    raise ImportError(
        "This is smalgo's sagemaker/ folder (the package smalgo.sagemaker), imported as the SageMaker SDK "
        "because the smalgo repository's root is on sys.path (Python started there with -c, -m, - or a "
        "REPL). Start it from another directory, or with python -P."
    )

from typing import Any, ClassVar

try:
    import sagemaker.amazon.amazon_estimator  # noqa: F401 (the SDK v2's Amazon estimators, or why not)
except ModuleNotFoundError as missing:
    if not (missing.name or "").startswith("sagemaker"):
        raise
    raise ImportError(
        f"smalgo.sagemaker needs the SageMaker Python SDK v2 (sagemaker>=2.200,<3), and {missing.name} "
        "cannot be imported here: pip install 'smalgo[sagemaker]'. (With the SDK v3, use its ModelTrainer "
        "with smalgo's image and `smalgo metric-definitions ALGORITHM`: docs/sagemaker-sdk.md.)"
    ) from missing

from sagemaker.amazon.factorization_machines import (
    FactorizationMachines as _SDKFactorizationMachines,
)
from sagemaker.amazon.factorization_machines import (
    FactorizationMachinesModel as _SDKFactorizationMachinesModel,
)
from sagemaker.amazon.factorization_machines import FactorizationMachinesPredictor
from sagemaker.amazon.kmeans import KMeans as _SDKKMeans
from sagemaker.amazon.kmeans import KMeansModel as _SDKKMeansModel
from sagemaker.amazon.kmeans import KMeansPredictor
from sagemaker.amazon.linear_learner import LinearLearner as _SDKLinearLearner
from sagemaker.amazon.linear_learner import LinearLearnerModel as _SDKLinearLearnerModel
from sagemaker.amazon.linear_learner import LinearLearnerPredictor
from sagemaker.amazon.pca import PCA as _SDKPCA
from sagemaker.amazon.pca import PCAModel as _SDKPCAModel
from sagemaker.amazon.pca import PCAPredictor
from sagemaker.estimator import Estimator
from sagemaker.model import Model
from sagemaker.tuner import HyperparameterTuner as _SDKHyperparameterTuner
from sagemaker.vpc_utils import VPC_CONFIG_DEFAULT
from sagemaker.xgboost.model import XGBoostPredictor

from smalgo.algorithms.registry import get_algorithm

__all__ = [
    "PCA",
    "FactorizationMachines",
    "FactorizationMachinesModel",
    "FactorizationMachinesPredictor",
    "HyperparameterTuner",
    "KMeans",
    "KMeansModel",
    "KMeansPredictor",
    "LinearLearner",
    "LinearLearnerModel",
    "LinearLearnerPredictor",
    "PCAModel",
    "PCAPredictor",
    "XGBoost",
    "XGBoostPredictor",
    "metric_definitions",
]


def metric_definitions(algorithm: str) -> list[dict[str, str]]:
    """The metric definitions of smalgo's `algorithm` ("kmeans", "xgboost", ...), as the SDK,
    boto3 and the console take them: [{"Name": "test:msd", "Regex": "..."}, ...]. The same as
    `smalgo metric-definitions ALGORITHM` prints."""
    return [definition.as_dict() for definition in get_algorithm(algorithm).metric_definitions]


def _checked_image(image_uri: Any, owner: str, algorithm: str) -> Any:
    """`image_uri`, or a ValueError saying what is missing (a PipelineVariable passes as it is)."""
    if image_uri is None or image_uri == "":
        raise ValueError(
            f"{owner} needs image_uri=, the smalgo image that trains and serves it "
            f"(for example 123456789012.dkr.ecr.us-east-1.amazonaws.com/smalgo-{algorithm}:cpu)."
        )
    return image_uri


# --------------------------------------------------------------------------- models


class _SmalgoModel:
    """What smalgo's model classes change in the SDK's: the image is the one given, not AWS's.

    The SDK's KMeansModel (PCAModel, ...) exists to fill in AWS's image and the algorithm's
    predictor, and drops an `image_uri` it is given; these call `sagemaker.model.Model` directly
    with the image given and the same predictor, and are still instances of the SDK's class."""

    _algorithm: ClassVar[str]
    _predictor_class: ClassVar[type]

    def __init__(
        self,
        model_data: Any,
        role: str | None = None,
        sagemaker_session: Any = None,
        *,
        image_uri: Any,
        **kwargs: Any,
    ) -> None:
        image_uri = _checked_image(image_uri, type(self).__name__, self._algorithm)
        kwargs.setdefault("predictor_cls", self._predictor_class)
        Model.__init__(self, image_uri, model_data, role, sagemaker_session=sagemaker_session, **kwargs)


class KMeansModel(_SmalgoModel, _SDKKMeansModel):
    """sagemaker.KMeansModel on smalgo's k-means image (`image_uri=`); predicts with KMeansPredictor."""

    _algorithm = "kmeans"
    _predictor_class = KMeansPredictor


class PCAModel(_SmalgoModel, _SDKPCAModel):
    """sagemaker.PCAModel on smalgo's PCA image (`image_uri=`); predicts with PCAPredictor."""

    _algorithm = "pca"
    _predictor_class = PCAPredictor


class LinearLearnerModel(_SmalgoModel, _SDKLinearLearnerModel):
    """sagemaker.LinearLearnerModel on smalgo's linear learner image (`image_uri=`); predicts
    with LinearLearnerPredictor."""

    _algorithm = "linear-learner"
    _predictor_class = LinearLearnerPredictor


class FactorizationMachinesModel(_SmalgoModel, _SDKFactorizationMachinesModel):
    """sagemaker.FactorizationMachinesModel on smalgo's factorization machines image
    (`image_uri=`); predicts with FactorizationMachinesPredictor."""

    _algorithm = "factorization-machines"
    _predictor_class = FactorizationMachinesPredictor


# --------------------------------------------------------------------------- estimators


class _SmalgoEstimator:
    """What smalgo's estimators change in the SDK's Amazon estimators: the image given is the
    one every job, model and tuning job uses, and the algorithm's metric definitions come along.

    Every place the SDK decides the image goes through one of these: `training_image_uri()`
    (fit, the tuner, pipelines' TrainingStep and the job's base name), `create_model()` (deploy,
    transformer, register) and `_prepare_init_params_from_job_description()` (attach, and the
    tuner's best_estimator, which attaches)."""

    _algorithm: ClassVar[str]
    _model_class: ClassVar[type]

    image_uri: Any

    def __init__(self, *args: Any, image_uri: Any, **kwargs: Any) -> None:
        # Set before the SDK's constructor runs, in case it asks for the training image.
        self.image_uri = _checked_image(image_uri, type(self).__name__, self._algorithm)
        if kwargs.get("metric_definitions") is None:
            kwargs["metric_definitions"] = metric_definitions(self._algorithm)
        super().__init__(*args, **kwargs)

    def training_image_uri(self) -> Any:
        """The image the training jobs run: the one given (the SDK's looks AWS's up)."""
        return self.image_uri

    def create_model(self, vpc_config_override: Any = VPC_CONFIG_DEFAULT, image_uri: Any = None, **kwargs: Any) -> Any:
        """The model of the latest training job, served by `image_uri` (default: the training
        image); `kwargs` go to the model (name, env, model_kms_key, ...), as in the SDK."""
        self_: Any = self  # the SDK's estimator attributes (model_data, role, ...)
        return self._model_class(
            self_.model_data,
            self_.role,
            self_.sagemaker_session,
            image_uri=image_uri or self.image_uri,
            vpc_config=self_.get_vpc_config(vpc_config_override),
            **kwargs,
        )

    @classmethod
    def _prepare_init_params_from_job_description(cls, job_details: dict, model_channel_name: Any = None) -> dict:
        """The SDK's constructor arguments from a training job's description, with the job's
        image (the SDK's Amazon estimators drop it)."""
        sdk_base: Any = super()
        init_params = sdk_base._prepare_init_params_from_job_description(job_details, model_channel_name)
        init_params["image_uri"] = job_details["AlgorithmSpecification"]["TrainingImage"]
        return init_params


class KMeans(_SmalgoEstimator, _SDKKMeans):
    """sagemaker.KMeans training and serving smalgo's k-means image: `KMeans(image_uri=..., role=...,
    instance_count=..., instance_type=..., k=..., ...)`, the SDK's arguments and validation."""

    _algorithm = "kmeans"
    _model_class = KMeansModel


class PCA(_SmalgoEstimator, _SDKPCA):
    """sagemaker.PCA training and serving smalgo's PCA image: `PCA(image_uri=..., role=...,
    instance_count=..., instance_type=..., num_components=..., ...)`."""

    _algorithm = "pca"
    _model_class = PCAModel


class LinearLearner(_SmalgoEstimator, _SDKLinearLearner):
    """sagemaker.LinearLearner training and serving smalgo's linear learner image:
    `LinearLearner(image_uri=..., role=..., instance_count=..., instance_type=...,
    predictor_type=..., ...)`."""

    _algorithm = "linear-learner"
    _model_class = LinearLearnerModel


class FactorizationMachines(_SmalgoEstimator, _SDKFactorizationMachines):
    """sagemaker.FactorizationMachines training and serving smalgo's factorization machines
    image: `FactorizationMachines(image_uri=..., role=..., instance_count=..., instance_type=...,
    num_factors=..., predictor_type=..., ...)`."""

    _algorithm = "factorization-machines"
    _model_class = FactorizationMachinesModel


class XGBoost(Estimator):
    """XGBoost as a built-in algorithm (algorithm mode) on smalgo's XGBoost image:
    `XGBoost(image_uri=..., role=..., instance_count=..., instance_type=...,
    hyperparameters={"objective": ..., "num_round": ...})`, sagemaker.estimator.Estimator with
    XGBoost's metric definitions and, for deploy, the SDK's XGBoostPredictor."""

    _algorithm = "xgboost"

    def __init__(self, image_uri: Any, *args: Any, **kwargs: Any) -> None:
        image_uri = _checked_image(image_uri, type(self).__name__, self._algorithm)
        if kwargs.get("metric_definitions") is None:
            kwargs["metric_definitions"] = metric_definitions(self._algorithm)
        super().__init__(image_uri, *args, **kwargs)

    def create_model(self, *args: Any, predictor_cls: Any = None, **kwargs: Any) -> Any:
        """Estimator.create_model, predicting with XGBoostPredictor unless another is given."""
        return super().create_model(*args, predictor_cls=predictor_cls or XGBoostPredictor, **kwargs)


# --------------------------------------------------------------------------- tuning


class HyperparameterTuner(_SDKHyperparameterTuner):
    """sagemaker.tuner.HyperparameterTuner whose metric definitions default to its estimators'.

    The SDK's tuner sends only the metric definitions passed to it, and a tuning job on an image
    that is not AWS's has no others: with smalgo's estimators this one needs no extra argument.
    An objective that the definitions do not name is refused here, where AWS would refuse the
    tuning job."""

    def __init__(  # noqa: PLR0917 (the SDK's signature: callers pass these by position)
        self,
        estimator: Any,
        objective_metric_name: Any,
        hyperparameter_ranges: Any,
        metric_definitions: list[dict[str, Any]] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if metric_definitions is None and estimator is not None:
            metric_definitions = estimator.metric_definitions
        _check_objective(objective_metric_name, metric_definitions, estimator)
        super().__init__(estimator, objective_metric_name, hyperparameter_ranges, metric_definitions, *args, **kwargs)

    @classmethod
    def create(  # noqa: PLR0917 (the SDK's signature)
        cls,
        estimator_dict: dict[str, Any],
        objective_metric_name_dict: dict[str, Any],
        hyperparameter_ranges_dict: dict[str, Any],
        metric_definitions_dict: dict[str, list[dict[str, Any]]] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The SDK's several-estimator tuner, each estimator's metric definitions its own unless given."""
        given = metric_definitions_dict or {}
        filled = {name: given.get(name) or estimator.metric_definitions for name, estimator in estimator_dict.items()}
        for name, definitions in filled.items():
            _check_objective(objective_metric_name_dict.get(name), definitions, estimator_dict[name])
        sdk_base: Any = super()
        return sdk_base.create(
            estimator_dict,
            objective_metric_name_dict,
            hyperparameter_ranges_dict,
            metric_definitions_dict={name: d for name, d in filled.items() if d} or None,
            **kwargs,
        )


def _check_objective(objective: Any, definitions: list[dict[str, Any]] | None, estimator: Any) -> None:
    """A ValueError when the objective is a metric the definitions do not read."""
    if not isinstance(objective, str) or not definitions:
        return
    names = [definition.get("Name") for definition in definitions]
    if objective not in names:
        raise ValueError(
            f"The tuning objective {objective!r} is not among the metric definitions of "
            f"{type(estimator).__name__} ({', '.join(str(name) for name in names)}): a tuning job could "
            f"not read it from the training jobs' logs. Pick one of those, or pass metric_definitions= "
            f"with a definition for it."
        )
