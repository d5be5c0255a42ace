"""smalgo.sagemaker with the SageMaker Python SDK v2: each estimator's training job, model,
endpoint configuration, transform job, tuning jobs and attach() name smalgo's image, and the
tuning jobs carry the algorithm's metric definitions with no extra argument.

The SDK runs in its own environment (benchmarks/.venv-sdk, where setup_sdk_env.sh installs smalgo
with its `sagemaker` extra): tests/sdk_estimators.py drives every estimator against boto3 clients
that validate each request and answer it locally, and writes what it saw; the checks are here."""

import base64
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from smalgo.algorithms.registry import ALGORITHMS
from smalgo.recordio import read

REPO = Path(__file__).resolve().parent.parent
SDK_PYTHON = REPO / "benchmarks" / ".venv-sdk" / "bin" / "python"
SDK_SCRIPT = REPO / "tests" / "sdk_estimators.py"
REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
RECORDIO = "application/x-recordio-protobuf"
# algorithm -> (the SDK's class it derives from, the SDK's model class, its predictor)
SDK_CLASSES = {
    "kmeans": ("sagemaker.amazon.kmeans.KMeans", "sagemaker.amazon.kmeans.KMeansModel", "KMeansPredictor"),
    "pca": ("sagemaker.amazon.pca.PCA", "sagemaker.amazon.pca.PCAModel", "PCAPredictor"),
    "linear-learner": (
        "sagemaker.amazon.linear_learner.LinearLearner",
        "sagemaker.amazon.linear_learner.LinearLearnerModel",
        "LinearLearnerPredictor",
    ),
    "factorization-machines": (
        "sagemaker.amazon.factorization_machines.FactorizationMachines",
        "sagemaker.amazon.factorization_machines.FactorizationMachinesModel",
        "FactorizationMachinesPredictor",
    ),
    "xgboost": ("sagemaker.estimator.Estimator", "sagemaker.model.Model", "XGBoostPredictor"),
}
AMAZON = sorted(set(ALGORITHMS) - {"xgboost"})


def image_of(algorithm: str) -> str:
    return f"{REGISTRY}/smalgo-{algorithm}:cpu"


def definitions_of(algorithm: str) -> list[dict[str, str]]:
    """What the algorithm declares, read here without smalgo.sagemaker."""
    return [definition.as_dict() for definition in ALGORITHMS[algorithm].metric_definitions]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    """tests/sdk_estimators.py's report for every registered algorithm, run once."""
    if not SDK_PYTHON.exists():
        pytest.fail(
            f"The SageMaker SDK v2 environment {SDK_PYTHON.parent.parent} is missing: create it with "
            f"`bash benchmarks/recordio/setup_sdk_env.sh` (or `make sdk-env`)."
        )
    work = tmp_path_factory.mktemp("sdk_estimators")
    out = work / "reports.json"
    # Credentials and region of no account: every call is answered by the script, none leaves.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_DEFAULT_REGION="us-west-2",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    result = subprocess.run(
        [str(SDK_PYTHON), str(SDK_SCRIPT), str(out), REGISTRY, *sorted(ALGORITHMS)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        "tests/sdk_estimators.py failed (is smalgo installed in the SDK environment? `make sdk-env`):\n"
        + result.stdout[-6000:]
        + result.stderr[-6000:]
    )
    return json.loads(out.read_text())


def requests(report: dict, operation: str) -> list[dict]:
    return [request["params"] for request in report["requests"] if request["operation"] == operation]


def our_training_job(report: dict) -> dict:
    (job,) = [job for job in requests(report, "CreateTrainingJob") if job["TrainingJobName"] == report["training_job"]]
    return job


def test_the_sdk_environment_has_smalgo_with_its_sagemaker_extra(reports):
    """setup_sdk_env.sh installs this working tree (editable) with the `sagemaker` extra, which
    asks for the SDK v2; the tests below exercise this tree's smalgo.sagemaker, not a copy."""
    installation = reports["installation"]
    assert Path(installation["smalgo.sagemaker"]) == REPO / "sagemaker" / "__init__.py"
    assert "sagemaker" in installation["extras"]
    assert any(
        requirement.startswith("sagemaker") and "<3" in requirement and 'extra == "sagemaker"' in requirement
        for requirement in installation["requires"]
    ), installation["requires"]
    assert installation["sagemaker"].startswith("2.")


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_training_job_runs_our_image_with_the_metric_definitions(reports, algorithm):
    report = reports[algorithm]
    assert report["class"][0] == f"smalgo.sagemaker.{report['class'][0].rsplit('.', 1)[1]}"
    assert SDK_CLASSES[algorithm][0] in report["class"]
    job = our_training_job(report)
    assert job["AlgorithmSpecification"]["TrainingImage"] == image_of(algorithm)
    assert job["AlgorithmSpecification"]["MetricDefinitions"] == definitions_of(algorithm)
    channels = {channel["ChannelName"]: channel for channel in job["InputDataConfig"]}
    if algorithm == "xgboost":
        assert set(channels) == {"train", "validation"}
        assert channels["train"]["ContentType"] == "text/csv"
    else:
        # The channels are the RecordSets record_set() made: their manifests, as the SDK sends them.
        manifests = [channel["DataSource"]["S3DataSource"] for channel in job["InputDataConfig"]]
        assert [source["S3Uri"] for source in manifests] == report["record_set"]["manifests"]
        assert {source["S3DataType"] for source in manifests} == {"ManifestFile"}
        assert job["HyperParameters"]["feature_dim"] == "5"
    assert report["model_data"].endswith(f"/{report['training_job']}/output/model.tar.gz")


@pytest.mark.parametrize("algorithm", AMAZON)
def test_the_sdks_own_behaviour_is_kept(reports, algorithm):
    """The SDK's class given the same image and inputs (the control) trains AWS's image, sends no
    metric definitions, and otherwise the same request: the hyperparameters as the SDK serialises
    them, the channels. Its hyperparameter validation is the SDK's."""
    report = reports[algorithm]
    ours = our_training_job(report)
    (control,) = [
        job for job in requests(report, "CreateTrainingJob") if job["TrainingJobName"] == report["sdk_training_job"]
    ]
    assert control["AlgorithmSpecification"]["TrainingImage"].endswith(f"/{algorithm}:1")
    assert "MetricDefinitions" not in control["AlgorithmSpecification"]
    assert report["sdk_create_model_image_uri"].endswith(f"/{algorithm}:1")
    assert ours["HyperParameters"] == control["HyperParameters"]
    assert ours["InputDataConfig"] == control["InputDataConfig"]
    assert report["invalid_hyperparameter"].startswith("ValueError: Invalid hyperparameter value")


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_an_estimator_without_an_image_is_refused(reports, algorithm):
    error = reports[algorithm]["missing_image"]
    assert error is not None and error.startswith("ValueError: ")
    assert "needs image_uri=, the smalgo image that trains and serves it (for example " in error
    assert f"/smalgo-{algorithm}:cpu)" in error


@pytest.mark.parametrize("algorithm", AMAZON)
def test_record_set_uploads_the_rows_as_recordio(reports, algorithm):
    """record_set() as the SDK does it: one RecordIO-protobuf shard per instance and a manifest
    naming it, under data_location; smalgo reads the shard back as the rows and labels given."""
    report = reports[algorithm]
    uploads = {
        (put["Bucket"], put["Key"]): base64.b64decode(put["Body"]["base64"]) for put in requests(report, "PutObject")
    }
    manifest_uri = report["record_set"]["manifests"][0]
    bucket, key = manifest_uri.removeprefix("s3://").split("/", 1)
    prefix, shard = json.loads(uploads[(bucket, key)])
    assert prefix == {"prefix": manifest_uri.rsplit("/", 1)[0] + "/"}
    X, y = read(uploads[(bucket, key.rsplit("/", 1)[0] + "/" + shard)])
    np.testing.assert_array_equal(X, np.asarray(report["record_set"]["rows"], dtype=np.float32))
    if report["record_set"]["labels"] is None:
        assert y is None
    else:
        np.testing.assert_array_equal(y, np.asarray(report["record_set"]["labels"], dtype=np.float32))


# --------------------------------------------------------------------------- serving


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_deploy_creates_a_model_of_our_image_and_an_endpoint_on_it(reports, algorithm):
    report = reports[algorithm]
    model = requests(report, "CreateModel")[0]
    assert model["PrimaryContainer"]["Image"] == image_of(algorithm)
    assert model["PrimaryContainer"]["ModelDataUrl"] == report["model_data"]
    # deploy() came first; the tuner's deploy makes the second endpoint (its own test).
    config = requests(report, "CreateEndpointConfig")[0]
    assert [variant["ModelName"] for variant in config["ProductionVariants"]] == [model["ModelName"]]
    endpoint = requests(report, "CreateEndpoint")[0]
    assert endpoint["EndpointConfigName"] == config["EndpointConfigName"]
    # The predictor deploy() returns: the SDK's for the algorithm, with its serializers.
    predictor = report["predictor"]
    assert predictor["class"] == SDK_CLASSES[algorithm][2]
    if algorithm == "xgboost":
        assert (predictor["content_type"], predictor["accept"]) == ("text/libsvm", ["text/csv"])
    else:
        assert (predictor["content_type"], predictor["accept"]) == (RECORDIO, [RECORDIO])


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_create_model_is_the_sdks_model_class_on_our_image(reports, algorithm):
    created = reports[algorithm]["create_model"]
    assert created["image_uri"] == image_of(algorithm)
    assert SDK_CLASSES[algorithm][1] in created["mro"]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_transformer_runs_a_model_of_our_image(reports, algorithm):
    report = reports[algorithm]
    models = {model["ModelName"]: model for model in requests(report, "CreateModel")}
    (transform,) = requests(report, "CreateTransformJob")
    assert models[transform["ModelName"]]["PrimaryContainer"]["Image"] == image_of(algorithm)
    assert models[transform["ModelName"]]["PrimaryContainer"]["ModelDataUrl"] == report["model_data"]


# --------------------------------------------------------------------------- tuning, attach


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_tuning_jobs_carry_our_image_and_metric_definitions(reports, algorithm):
    """HyperparameterTuner(estimator, objective, ranges), with no metric_definitions, and
    HyperparameterTuner.create({name: estimator}, ...): each tuning job's training definition
    names our image and the algorithm's metric definitions, which include the objective."""
    report = reports[algorithm]
    tuning_jobs = requests(report, "CreateHyperParameterTuningJob")
    assert len(tuning_jobs) == 2
    single, several = tuning_jobs
    objective = single["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"]
    definitions = [single["TrainingJobDefinition"], *several["TrainingJobDefinitions"]]
    for definition in definitions:
        assert definition["AlgorithmSpecification"]["TrainingImage"] == image_of(algorithm)
        assert definition["AlgorithmSpecification"]["MetricDefinitions"] == definitions_of(algorithm)
    assert objective in {d["Name"] for d in definitions_of(algorithm)}
    assert several["TrainingJobDefinitions"][0]["TuningObjective"]["MetricName"] == objective
    # The static hyperparameters are the training job's, less the tuned ones.
    ranges = single["HyperParameterTuningJobConfig"]["ParameterRanges"]
    tuned = {parameter["Name"] for kind in ranges.values() for parameter in kind}
    static = single["TrainingJobDefinition"]["StaticHyperParameters"]
    assert tuned and not tuned & set(static)
    assert {
        k: v for k, v in our_training_job(report)["HyperParameters"].items() if k not in tuned
    }.items() <= static.items()
    assert "is not among the metric definitions of" in report["tuner_objective_refused"]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_tuner_deploys_its_best_job_on_our_image(reports, algorithm):
    """tuner.deploy(): the best training job attached with our class, its model on our image."""
    report = reports[algorithm]
    assert report["tuner_best_estimator"] == report["class"][0].rsplit(".", 1)[1]
    (endpoint,) = [e for e in requests(report, "CreateEndpoint") if e["EndpointName"] == report["tuner_endpoint"]]
    configs = {config["EndpointConfigName"]: config for config in requests(report, "CreateEndpointConfig")}
    models = {model["ModelName"]: model for model in requests(report, "CreateModel")}
    (variant,) = configs[endpoint["EndpointConfigName"]]["ProductionVariants"]
    assert models[variant["ModelName"]]["PrimaryContainer"]["Image"] == image_of(algorithm)
    assert models[variant["ModelName"]]["PrimaryContainer"]["ModelDataUrl"] == report["model_data"]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_attach_reads_our_image_back(reports, algorithm):
    attached = reports[algorithm]["attached"]
    assert attached["image_uri"] == attached["training_image_uri"] == image_of(algorithm)
    assert attached["create_model_image_uri"] == image_of(algorithm)
    assert attached["metric_definitions"] == definitions_of(algorithm)
