"""Capture the hyperparameter maps that SageMaker Python SDK v2 estimators send to training.

Run with the benchmark's SDK venv, never the project's (see setup_sdk_env.sh):

    benchmarks/.venv-sdk/bin/python benchmarks/recordio/capture_sdk_hyperparameters.py

It drives the real code path, `estimator.fit(RecordSet(...), mini_batch_size=..., wait=False)`,
against a Session whose SageMaker client only records the CreateTrainingJob request (no AWS
access, no credentials, no S3). The request's `HyperParameters` map is what SageMaker writes to
/opt/ml/input/config/hyperparameters.json in the training container, so that map is saved as-is
(a flat JSON object of strings) under tests/data/sdk_v2_hyperparameters/.

Notes on the SDK v2 behaviour this records:
- `fit()` passes `mini_batch_size` and the RecordSet's `feature_dim` through
  `AmazonAlgorithmEstimatorBase._prepare_for_training`; both become strings.
- KMeans always adds `force_dense="True"`; lists (`eval_metrics`) are JSON-encoded.
- KMeans' `num_trials` and `center_factor` are typed `int` in the SDK, so the algorithm's
  documented "auto" cannot be passed (`int("auto")` raises ValueError). kmeans.json leaves
  them unset (how an SDK user gets "auto"); kmeans_explicit.json sets integers so that
  `local_lloyd_num_trials` and `extra_center_factor` appear in a fixture too.
- LinearLearner sends only what was set (no defaults of its own), plus `feature_dim` and
  `mini_batch_size`. Without `mini_batch_size` in fit() the SDK sends
  min(1000, num_records // instance_count): "1000" for the 100,000 records used here.
  `predictor_type` is optional in the SDK (an estimator without it sends no `predictor_type`, which
  the algorithm requires); `multiclass_classifier` without `num_classes` >= 3 raises ValueError.
- LinearLearner booleans are Python-cased ("True"/"False", not the documented "true"/"false"), and
  they pass through bool(): `use_bias="false"` is sent as "True". Floats go through str(float):
  1e-5 is sent as "1e-05", 1.0 as "1.0". `num_models` (int) and `learning_rate` (float) cannot be
  "auto"; leave them unset for that. `positive_example_weight_mult` is typed str, so "balanced" and
  "auto" pass, and a number is sent as str() of what was given ("2" for 2, "2.0" for 2.0).
- FactorizationMachines requires num_factors and predictor_type (the constructor takes them as
  keywords) and, like LinearLearner, sends only what was set, plus `feature_dim` and
  `mini_batch_size` (fit() without it: 1000 here, as for LinearLearner); floats go through
  str(float): 1e-4 is sent as "0.0001", 0.01 as "0.01".
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
import logging  # noqa: E402

logging.disable(logging.INFO)  # sagemaker.config / image_uris INFO chatter

import boto3  # noqa: E402
import sagemaker  # noqa: E402
from sagemaker import PCA, FactorizationMachines, KMeans, LinearLearner  # noqa: E402
from sagemaker.amazon.amazon_estimator import RecordSet  # noqa: E402
from sagemaker.session import Session  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/x"
REGION = "us-east-1"
BUCKET = "sagemaker-us-east-1-123456789012"
OUT_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "sdk_v2_hyperparameters"


class _RecordingSageMakerClient:
    """Stands in for boto3's SageMaker client: keeps CreateTrainingJob requests, calls nothing."""

    def __init__(self):
        self.requests = []

    def create_training_job(self, **request):
        self.requests.append(request)
        return {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/x"}

    def __getattr__(self, name):  # any other API call would need AWS: fail loudly
        raise RuntimeError(f"unexpected SageMaker API call in capture: {name}")


class OfflineSession(Session):
    """A Session that needs no AWS: fixed region and bucket, recording SageMaker client."""

    def __init__(self):
        self.recorder = _RecordingSageMakerClient()
        boto_session = boto3.Session(region_name=REGION, aws_access_key_id="offline", aws_secret_access_key="offline")
        super().__init__(
            boto_session=boto_session,
            sagemaker_client=self.recorder,
            default_bucket=BUCKET,
            sagemaker_config={"SchemaVersion": "1.0"},
        )

    def default_bucket(self):  # the base class would check/create the bucket in S3
        return BUCKET


def _capture(estimator, session, feature_dim, num_records, mini_batch_size=None):
    """fit() on a RecordSet; mini_batch_size None leaves the estimator to pick its default."""
    records = RecordSet(
        f"s3://{BUCKET}/sagemaker-record-sets/manifest",
        num_records=num_records,
        feature_dim=feature_dim,
        s3_data_type="ManifestFile",
        channel="train",
    )
    n_before = len(session.recorder.requests)
    estimator.fit(records, mini_batch_size=mini_batch_size, wait=False, logs=False)
    assert len(session.recorder.requests) == n_before + 1
    sent = session.recorder.requests[-1]["HyperParameters"]
    # Cross-check against the public accessor: fit() stringifies hyperparameters() unchanged.
    assert sent == {k: str(v) for k, v in estimator.hyperparameters().items()}, (
        sent,
        estimator.hyperparameters(),
    )
    return sent


def main() -> int:
    common = dict(role=ROLE, instance_count=1, instance_type="ml.c5.xlarge")
    captured = {}

    # What both k-means captures set; the second adds the two settings the first must leave out.
    kmeans_settings = dict(
        common,
        k=10,
        init_method="kmeans++",
        max_iterations=300,
        tol=1e-4,
        local_init_method="kmeans++",
        half_life_time_size=0,
        epochs=1,
        eval_metrics=["msd", "ssd"],
    )
    s = OfflineSession()
    km = KMeans(**kmeans_settings, sagemaker_session=s)
    for name, value in (("num_trials", "auto"), ("center_factor", "auto")):
        try:
            setattr(km, name, value)
        except ValueError as e:
            print(f"SDK v2 rejects KMeans {name}={value!r}: {e}; leaving it unset", file=sys.stderr)
        else:
            raise AssertionError(f"SDK v2 accepted {name}={value!r}; update the notes above")
    captured["kmeans"] = _capture(km, s, feature_dim=50, num_records=100_000, mini_batch_size=5000)

    s = OfflineSession()
    km2 = KMeans(**kmeans_settings, num_trials=3, center_factor=2, sagemaker_session=s)
    captured["kmeans_explicit"] = _capture(km2, s, feature_dim=50, num_records=100_000, mini_batch_size=5000)

    s = OfflineSession()
    pca = PCA(
        **common,
        num_components=5,
        algorithm_mode="randomized",
        subtract_mean=True,
        extra_components=-1,
        sagemaker_session=s,
    )
    captured["pca"] = _capture(pca, s, feature_dim=50, num_records=100_000, mini_batch_size=500)

    # Linear Learner: fit() without mini_batch_size, so the SDK picks it as
    # min(DEFAULT_MINI_BATCH_SIZE=1000, num_records // instance_count) = 1000 here.
    linear_learner = {
        "linear_learner_binary": dict(predictor_type="binary_classifier"),
        "linear_learner_regressor": dict(predictor_type="regressor"),
        "linear_learner_multiclass": dict(predictor_type="multiclass_classifier", num_classes=3),
        "linear_learner_explicit": dict(
            predictor_type="binary_classifier",
            epochs=5,
            num_models=4,
            loss="hinge_loss",
            margin=1.0,
            optimizer="sgd",
            momentum=0.9,
            learning_rate=0.01,
            wd=1e-4,
            l1=1e-5,
            use_bias=False,
            init_method="normal",
            init_sigma=0.01,
            positive_example_weight_mult="balanced",
            binary_classifier_model_selection_criteria="precision_at_target_recall",
            target_recall=0.9,
            early_stopping_patience=3,
            early_stopping_tolerance=0.001,
            normalize_data=True,
            unbias_data=True,
            num_point_for_scaler=1000,
            num_calibration_samples=1000,
            use_lr_scheduler=True,
            lr_scheduler_step=10,
            lr_scheduler_factor=0.99,
            lr_scheduler_minimum_lr=1e-5,
        ),
    }
    for name, settings in linear_learner.items():
        s = OfflineSession()
        ll = LinearLearner(**common, **settings, sagemaker_session=s)
        captured[name] = _capture(ll, s, feature_dim=50, num_records=100_000)
    # Factorization Machines: fit() without mini_batch_size, as for Linear Learner. The explicit
    # one sets every hyperparameter the estimator has that fits together (one init method per
    # group, with its own parameter).
    factorization_machines = {
        "factorization_machines_binary": dict(num_factors=8, predictor_type="binary_classifier"),
        "factorization_machines_regressor": dict(num_factors=8, predictor_type="regressor"),
        "factorization_machines_explicit": dict(
            num_factors=4,
            predictor_type="regressor",
            epochs=3,
            clip_gradient=5.0,
            eps=1e-6,
            rescale_grad=0.01,
            bias_lr=0.1,
            linear_lr=0.05,
            factors_lr=0.05,
            bias_wd=0.01,
            linear_wd=0.001,
            factors_wd=1e-5,
            bias_init_method="constant",
            bias_init_value=0.5,
            linear_init_method="uniform",
            linear_init_scale=0.01,
            factors_init_method="normal",
            factors_init_sigma=0.05,
        ),
    }
    for name, settings in factorization_machines.items():
        s = OfflineSession()
        fm = FactorizationMachines(**common, **settings, sagemaker_session=s)
        captured[name] = _capture(fm, s, feature_dim=53, num_records=100_000)
    # What the SDK's types do to values the algorithm documents: checked, so that the notes
    # above stay true for the SDK version in the venv.
    s = OfflineSession()
    for name, value in (("num_models", "auto"), ("learning_rate", "auto")):
        try:
            LinearLearner(**common, predictor_type="binary_classifier", sagemaker_session=s, **{name: value})
        except ValueError as e:
            print(f"SDK v2 rejects LinearLearner {name}={value!r}: {e}", file=sys.stderr)
        else:
            raise AssertionError(f"SDK v2 accepted LinearLearner {name}={value!r}; update the notes above")
    for name, value, sent in (("use_bias", "false", "True"), ("positive_example_weight_mult", 2, "2")):
        ll = LinearLearner(**common, predictor_type="binary_classifier", sagemaker_session=s, **{name: value})
        assert ll.hyperparameters()[name] == sent, (name, value, ll.hyperparameters())
    assert LinearLearner(**common, sagemaker_session=s).hyperparameters() == {}  # predictor_type optional

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, hps in captured.items():
        path = OUT_DIR / f"{name}.json"
        path.write_text(json.dumps(hps, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path} (sagemaker {sagemaker.__version__})")
        print(json.dumps(hps, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
