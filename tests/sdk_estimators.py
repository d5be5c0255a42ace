"""Drives smalgo.sagemaker's estimators through the SageMaker Python SDK v2, for
tests/test_sagemaker_estimators.py. Runs in the SDK's own environment (benchmarks/.venv-sdk, made
by benchmarks/recordio/setup_sdk_env.sh, where smalgo is installed with its `sagemaker` extra):

    benchmarks/.venv-sdk/bin/python tests/sdk_estimators.py OUT.json REGISTRY ALGORITHM...

No AWS: the SDK's boto3 clients are real (they build and validate every request against the
service model), but a handler on their `before-call` event answers each call here instead of
sending it: SageMaker's Create* calls are recorded and acknowledged, DescribeTrainingJob gives the
recorded job back as Completed (the SDK waits on it), DescribeEndpoint says InService, S3's
PutObject (record_set's upload) is recorded. Any other call fails the run, naming it.

For each ALGORITHM, with smalgo.sagemaker's estimator on the image REGISTRY/smalgo-ALGORITHM:cpu:
record_set() uploads (XGBoost: S3 channels), fit(), deploy(), create_model(),
transformer().transform(), a HyperparameterTuner without metric definitions (fit, then deploy of
its best job, which the local DescribeHyperParameterTuningJob names), attach() to the job,
the same through HyperparameterTuner.create (several estimators' form), an invalid
hyperparameter, a missing image and an objective the definitions lack; then, for the
Amazon algorithms, the SDK's own class given the same image and inputs (the control: it trains
AWS's image). Writes OUT.json: {algorithm: what each step gave back, and every request in order
({"service", "operation", "params"}; S3 bodies in base64)}, and under "installation" how smalgo
is installed here. (The SDK prints its progress on stdout, hence the file.)
"""

from __future__ import annotations

import base64
import datetime
import importlib.metadata
import json
import logging
import os
import sys
import time

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
logging.disable(logging.WARNING)
# The SDK sleeps before each poll (5 s for a training job, 30 s for an endpoint); every job and
# endpoint here is done at once, so its waits return at once too.
time.sleep = lambda seconds: None

import boto3  # noqa: E402
import numpy as np  # noqa: E402
import sagemaker  # noqa: E402
from botocore.awsrequest import AWSResponse  # noqa: E402
from sagemaker.inputs import TrainingInput  # noqa: E402
from sagemaker.telemetry import telemetry_logging  # noqa: E402
from sagemaker.tuner import ContinuousParameter, IntegerParameter  # noqa: E402

import smalgo.sagemaker as smalgo_sagemaker  # noqa: E402

# Estimator.fit reports to AWS's telemetry (STS, then an HTTPS request) after it returns: not from
# a test. (Opting out through the SDK's config file instead costs a schema validation per lookup.)
telemetry_logging._send_telemetry_request = lambda *args, **kwargs: None

REGION = "us-west-2"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
BUCKET = "smalgo-test-bucket"
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


class LocalAWS:
    """Answers the boto3 calls of one session here, recording each request's parameters."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.training_jobs: dict[str, dict] = {}
        self.tuning_jobs: dict[str, dict] = {}
        self.boto_session = boto3.Session(
            region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local", aws_session_token="local"
        )
        # Clients copy the session's event handlers when they are made: register before any is.
        self.boto_session.events.register("before-parameter-build", self._record)
        self.boto_session.events.register("before-call", self._answer)

    def sagemaker_session(self) -> sagemaker.Session:
        return sagemaker.Session(boto_session=self.boto_session, default_bucket=BUCKET)

    def _record(self, params, model, **_):
        """Every request's parameters, as the SDK passed them (before botocore validates them)."""
        recorded = {key: _jsonable(value) for key, value in params.items()}
        self.requests.append({"service": model.service_model.service_name, "operation": model.name, "params": recorded})

    def _answer(self, model, **_):
        service, operation = model.service_model.service_name, model.name
        params = self.requests[-1]["params"]
        assert self.requests[-1]["operation"] == operation, (self.requests[-1], operation)
        answer = getattr(self, f"_{service}_{operation}".replace("-", "_"), None)
        if answer is None:
            raise RuntimeError(f"unexpected AWS call in the test: {service} {operation}")
        return AWSResponse(f"https://{service}.{REGION}.amazonaws.com", 200, {}, None), answer(params)

    # SageMaker

    def _sagemaker_CreateTrainingJob(self, params):  # noqa: N802 (the API's names)
        self.training_jobs[params["TrainingJobName"]] = params
        return {"TrainingJobArn": _arn("training-job", params["TrainingJobName"])}

    def _sagemaker_DescribeTrainingJob(self, params):  # noqa: N802
        job = self.training_jobs[params["TrainingJobName"]]
        output = job["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        return {
            **job,
            # DescribeTrainingJob always has a KmsKeyId (empty when none), which attach() reads.
            "OutputDataConfig": {"KmsKeyId": "", **job["OutputDataConfig"]},
            "TrainingJobArn": _arn("training-job", job["TrainingJobName"]),
            "TrainingJobStatus": "Completed",
            "SecondaryStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": f"{output}/{job['TrainingJobName']}/output/model.tar.gz"},
            "CreationTime": NOW,
            "TrainingStartTime": NOW,
            "TrainingEndTime": NOW,
            "LastModifiedTime": NOW,
        }

    def _sagemaker_ListTags(self, params):  # noqa: N802
        return {"Tags": []}

    def _sagemaker_CreateModel(self, params):  # noqa: N802
        return {"ModelArn": _arn("model", params["ModelName"])}

    def _sagemaker_CreateEndpointConfig(self, params):  # noqa: N802
        return {"EndpointConfigArn": _arn("endpoint-config", params["EndpointConfigName"])}

    def _sagemaker_CreateEndpoint(self, params):  # noqa: N802
        return {"EndpointArn": _arn("endpoint", params["EndpointName"])}

    def _sagemaker_DescribeEndpoint(self, params):  # noqa: N802
        name = params["EndpointName"]
        return {
            "EndpointName": name,
            "EndpointArn": _arn("endpoint", name),
            "EndpointConfigName": name,
            "EndpointStatus": "InService",
            "CreationTime": NOW,
            "LastModifiedTime": NOW,
        }

    def _sagemaker_CreateTransformJob(self, params):  # noqa: N802
        return {"TransformJobArn": _arn("transform-job", params["TransformJobName"])}

    def _sagemaker_CreateHyperParameterTuningJob(self, params):  # noqa: N802
        self.tuning_jobs[params["HyperParameterTuningJobName"]] = params
        return {"HyperParameterTuningJobArn": _arn("hyper-parameter-tuning-job", params["HyperParameterTuningJobName"])}

    def _sagemaker_DescribeHyperParameterTuningJob(self, params):  # noqa: N802
        """Completed; its best training job is the first this session trained on the same image."""
        name = params["HyperParameterTuningJobName"]
        tuning = self.tuning_jobs[name]
        image = tuning["TrainingJobDefinition"]["AlgorithmSpecification"]["TrainingImage"]
        best = next(
            job for job in self.training_jobs.values() if job["AlgorithmSpecification"]["TrainingImage"] == image
        )
        return {
            **tuning,
            "HyperParameterTuningJobArn": _arn("hyper-parameter-tuning-job", name),
            "HyperParameterTuningJobStatus": "Completed",
            "CreationTime": NOW,
            "TrainingJobStatusCounters": {"Completed": 1},
            "ObjectiveStatusCounters": {"Succeeded": 1},
            "BestTrainingJob": {
                "TrainingJobName": best["TrainingJobName"],
                "TrainingJobArn": _arn("training-job", best["TrainingJobName"]),
                "CreationTime": NOW,
                "TrainingJobStatus": "Completed",
                "TunedHyperParameters": {},
            },
        }

    # S3 (record_set's upload; the default bucket's check)

    def _s3_PutObject(self, params):  # noqa: N802
        return {"ETag": '"0"'}

    def _s3_ListBuckets(self, params):  # noqa: N802 (the default bucket exists: attach() asks)
        return {"Buckets": [{"Name": BUCKET, "CreationDate": NOW}]}


def _arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name}"


def _jsonable(value):
    """A request parameter as JSON: bodies (bytes, files) as {"base64": ...}, datetimes as text."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "read"):
        position = value.tell()
        data = value.read()
        value.seek(position)
        value = data
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


# --------------------------------------------------------------------------- the scenarios


def rows(n_rows: int, n_features: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_rows, n_features)).astype(np.float32)


def binary_labels(X: np.ndarray) -> np.ndarray:
    return (X[:, 0] > 0).astype(np.float32)


# algorithm -> (the class's name, in smalgo.sagemaker and in the SDK; its constructor arguments;
# an invalid hyperparameter the SDK refuses (none for XGBoost: the SDK checks none); whether the
# data has labels; a channel besides train and test; the tuning objective, its direction and a
# range to tune)
SCENARIOS = {
    "kmeans": (
        "KMeans",
        {"k": 3, "eval_metrics": ["msd", "ssd"]},
        ("k", 0),
        False,
        None,
        ("test:msd", "Minimize", {"extra_center_factor": IntegerParameter(4, 10)}),
    ),
    "pca": (
        "PCA",
        {"num_components": 2},
        ("num_components", 0),
        False,
        None,
        ("test:reconstruction_error", "Minimize", {"extra_components": IntegerParameter(1, 3)}),
    ),
    "linear-learner": (
        "LinearLearner",
        {"predictor_type": "binary_classifier", "epochs": 2},
        ("predictor_type", "classifier"),
        True,
        "validation",
        ("validation:binary_f_beta", "Maximize", {"learning_rate": ContinuousParameter(1e-4, 1e-1)}),
    ),
    "factorization-machines": (
        "FactorizationMachines",
        {"num_factors": 2, "predictor_type": "binary_classifier"},
        ("num_factors", 0),
        True,
        None,
        ("test:binary_classification_accuracy", "Maximize", {"factors_lr": ContinuousParameter(1e-4, 1e-1)}),
    ),
    "xgboost": (
        "XGBoost",
        {"hyperparameters": {"objective": "binary:logistic", "num_round": "10", "eval_metric": "auc"}},
        None,
        True,
        "validation",
        ("validation:auc", "Maximize", {"eta": ContinuousParameter(0.1, 0.5)}),
    ),
}


def estimator(cls, image: str, session, arguments: dict):
    common = {
        "role": ROLE,
        "instance_count": 1,
        "instance_type": "ml.c5.xlarge",
        "sagemaker_session": session,
        "output_path": f"s3://{BUCKET}/output",
    }
    if cls is smalgo_sagemaker.XGBoost:
        return cls(image, **common, **arguments)
    return cls(image_uri=image, data_location=f"s3://{BUCKET}/record-sets/", **common, **arguments)


def error_of(call) -> str | None:
    try:
        call()
    except (ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run(aws: LocalAWS, algorithm: str, image: str) -> dict:
    name, arguments, invalid, labelled, extra_channel, (objective, direction, ranges) = SCENARIOS[algorithm]
    cls = getattr(smalgo_sagemaker, name)
    first_request = len(aws.requests)
    session = aws.sagemaker_session()
    ours = estimator(cls, image, session, arguments)
    report: dict = {"class": [c.__module__ + "." + c.__name__ for c in type(ours).__mro__[:3]]}

    if algorithm == "xgboost":
        inputs = {
            channel: TrainingInput(f"s3://{BUCKET}/xgboost/{channel}", content_type="text/csv")
            for channel in ("train", "validation")
        }
    else:
        X, X_test = rows(60, 5, 0), rows(20, 5, 1)
        labels = binary_labels(X) if labelled else None
        test_labels = binary_labels(X_test) if labelled else None
        inputs = [ours.record_set(X, labels=labels), ours.record_set(X_test, labels=test_labels, channel="test")]
        if extra_channel:
            inputs.append(ours.record_set(X_test, labels=test_labels, channel=extra_channel))
        report["record_set"] = {
            "rows": X.tolist(),
            "labels": None if labels is None else labels.tolist(),
            "manifests": [record_set.s3_data for record_set in inputs],
        }

    ours.fit(inputs, logs=False)
    report["training_job"] = ours.latest_training_job.name
    report["model_data"] = ours.model_data

    predictor = ours.deploy(1, "ml.c5.large")
    report["predictor"] = {
        "class": type(predictor).__name__,
        "content_type": predictor.serializer.CONTENT_TYPE,
        "accept": list(predictor.deserializer.ACCEPT),
    }
    model = ours.create_model()
    report["create_model"] = {"class": type(model).__name__, "image_uri": model.image_uri, "mro": _names(model)}

    transformer = ours.transformer(1, "ml.c5.large", output_path=f"s3://{BUCKET}/batch/output")
    transformer.transform(f"s3://{BUCKET}/batch/input", content_type="text/csv", wait=False)

    tuner = smalgo_sagemaker.HyperparameterTuner(
        ours, objective, ranges, objective_type=direction, max_jobs=2, max_parallel_jobs=1
    )
    tuner.fit(inputs, wait=False)
    report["tuner_best_estimator"] = type(tuner.best_estimator()).__name__
    report["tuner_endpoint"] = tuner.deploy(1, "ml.c5.large").endpoint_name
    several = smalgo_sagemaker.HyperparameterTuner.create(
        {"smalgo": ours},
        {"smalgo": objective},
        {"smalgo": ranges},
        objective_type=direction,
        max_jobs=2,
        max_parallel_jobs=1,
    )
    several.fit(inputs={"smalgo": inputs}, include_cls_metadata={"smalgo": False}, wait=False)
    report["tuner_objective_refused"] = error_of(
        lambda: smalgo_sagemaker.HyperparameterTuner(ours, "validation:no_such_metric", ranges)
    )

    attached = cls.attach(ours.latest_training_job.name, sagemaker_session=session)
    report["attached"] = {
        "class": type(attached).__name__,
        "image_uri": attached.image_uri,
        "training_image_uri": attached.training_image_uri(),
        "metric_definitions": attached.metric_definitions,
        "create_model_image_uri": attached.create_model().image_uri,
    }
    if invalid is not None:
        parameter, value = invalid
        report["invalid_hyperparameter"] = error_of(
            lambda: estimator(cls, image, session, {**arguments, parameter: value})
        )
    report["missing_image"] = error_of(lambda: estimator(cls, None, session, arguments))

    if algorithm != "xgboost":
        # The control: the SDK's own class, given the same image and inputs, trains AWS's image.
        sdk_class = getattr(sagemaker, name)
        report["sdk_class"] = sdk_class.__module__ + "." + sdk_class.__name__
        control = estimator(sdk_class, image, session, arguments)
        control.fit(inputs, logs=False)
        report["sdk_training_job"] = control.latest_training_job.name
        report["sdk_create_model_image_uri"] = control.create_model().image_uri

    report["requests"] = aws.requests[first_request:]
    return report


def _names(instance) -> list[str]:
    return [c.__module__ + "." + c.__name__ for c in type(instance).__mro__]


if __name__ == "__main__":
    out, registry, *algorithms = sys.argv[1:]
    local_aws = LocalAWS()  # one boto3 session for all: its clients load the service models once
    reports = {algorithm: run(local_aws, algorithm, f"{registry}/smalgo-{algorithm}:cpu") for algorithm in algorithms}
    distribution = importlib.metadata.distribution("smalgo")
    reports["installation"] = {
        "smalgo.sagemaker": smalgo_sagemaker.__file__,
        "extras": distribution.metadata.get_all("Provides-Extra"),
        "requires": distribution.requires,
        "sagemaker": sagemaker.__version__,
    }
    with open(out, "w") as file:
        json.dump(reports, file)
