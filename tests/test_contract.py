"""Every algorithm in the registry declares what the rest of the house reads from it, and its
declarations hold: the sample job trains, the outputs, JSON key and model files are what the
trained model really gives."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import clustered_rows

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.contract import Algorithm, Model, StreamingAlgorithm
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.content_types import parse_content_type
from smalgo.algorithms.metrics import MetricWriter
from smalgo.algorithms.model_files import METADATA_FILE, ModelFiles
from smalgo.algorithms.registry import ALGORITHMS, get_algorithm

FEATURES = 6
NAMES = sorted(ALGORITHMS)


def labelled_rows(n_rows: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Clustered rows and a 0/1 label that a linear rule separates (every sample job can use it:
    binary, regression and multiclass labels alike)."""
    X = clustered_rows(n_rows, FEATURES, 4, seed=seed)
    return X, (X[:, 0] > 0).astype(np.float32)


def sample_model(algorithm: Algorithm, caplog=None) -> Model:
    hp = algorithm.hyperparameters.parse(algorithm.sample_job.hyperparameters_for(algorithm, FEATURES))
    algorithm.validate(hp)
    X, labels = labelled_rows(800)
    return algorithm.train(hp, InMemoryData({"train": (X, labels), "test": (X[:100], labels[:100])}))


def test_registry_is_keyed_by_each_algorithms_own_name():
    assert NAMES, "the registry is empty"
    for name, algorithm in ALGORITHMS.items():
        assert isinstance(algorithm, Algorithm) and algorithm.name == name
        assert get_algorithm(f"  {name.upper()} ") is algorithm
    with pytest.raises(UserError, match="Unknown algorithm 'nope'; this smalgo provides: " + ", ".join(NAMES)):
        get_algorithm("nope")


@pytest.mark.parametrize("name", NAMES)
def test_declarations_are_complete_and_consistent(name):
    algorithm = ALGORITHMS[name]
    assert algorithm.title and algorithm.outputs and algorithm.model_files
    # model.json and .npy files, or the algorithm's own format (XGBoost's xgboost-model).
    assert (METADATA_FILE in algorithm.model_files) != bool(algorithm.native_model_files)
    assert "train" in algorithm.channels and algorithm.channels["train"] is True
    assert algorithm.json_response_key and algorithm.output_names == tuple(o.name for o in algorithm.outputs)
    # Every accepted content type parses as itself; the default is one of them.
    for content_type in algorithm.content_types:
        assert (
            parse_content_type(content_type, algorithm.content_types, algorithm.default_content_type).media_type
            == content_type
        )
    assert (
        parse_content_type(None, algorithm.content_types, algorithm.default_content_type).media_type
        in algorithm.content_types
    )
    assert (
        parse_content_type(
            algorithm.sample_job.content_type, algorithm.content_types, algorithm.default_content_type
        ).media_type
        in algorithm.content_types
    )
    if algorithm.feature_dim_hyperparameter:
        # Stated by the user (SageMaker's SDK fills it in), or "auto": taken from the data.
        declared = algorithm.hyperparameters[algorithm.feature_dim_hyperparameter]
        assert declared.required or declared.allow_auto


@pytest.mark.parametrize("name", NAMES)
def test_sample_job_and_its_variants_parse_and_validate(name):
    algorithm = ALGORITHMS[name]
    sample = algorithm.sample_job
    for variant in (None, *sample.variants):
        hp = algorithm.hyperparameters.parse(sample.hyperparameters_for(algorithm, FEATURES, variant))
        algorithm.validate(hp)
        assert algorithm.feature_dim(hp) in (FEATURES, None)


@pytest.mark.parametrize("name", NAMES)
def test_the_bad_hyperparameter_is_refused_naming_it(name):
    algorithm = ALGORITHMS[name]
    bad_name, bad_value = algorithm.sample_job.bad_hyperparameter
    raw = dict(algorithm.sample_job.hyperparameters_for(algorithm, FEATURES), **{bad_name: bad_value})
    with pytest.raises(UserError, match=f"Hyperparameter {bad_name}"):
        algorithm.validate(algorithm.hyperparameters.parse(raw))


@pytest.mark.parametrize("name", NAMES)
def test_aws_hidden_hyperparameters_are_ignored_with_a_log_line_and_typos_still_refused(name, caplog):
    # What a job description copied from one of AWS's own jobs carries besides the documented ones.
    algorithm = ALGORITHMS[name]
    sample = algorithm.sample_job.hyperparameters_for(algorithm, FEATURES)
    hidden = {"_num_gpus": "auto", "_kvstore": "dist_async", "_log_level": "info", "_num_kv_servers": "auto"}
    with caplog.at_level("INFO", logger="smalgo.algorithms.hyperparameters"):
        hp = algorithm.hyperparameters.parse({**sample, **hidden})
    assert hp == algorithm.hyperparameters.parse(sample)
    assert "Ignoring hyperparameters _kvstore, _log_level, _num_gpus, _num_kv_servers: hidden settings" in caplog.text
    with pytest.raises(UserError, match="Unknown hyperparameter num_gpus"):
        algorithm.hyperparameters.parse({**sample, "num_gpus": "1"})


@pytest.mark.parametrize("name", NAMES)
def test_the_trained_model_gives_the_declared_outputs_and_files(name, tmp_path, caplog):
    algorithm = ALGORITHMS[name]
    with caplog.at_level("INFO", logger="smalgo.metrics"):
        model = sample_model(algorithm)
    if "test" in algorithm.channels:
        assert any("#quality_metric: host=algo-1, test " in line for line in caplog.messages)
    else:  # XGBoost: its own evaluation lines, `[0]\ttrain-auc:0.98765`
        assert any(line.startswith("[0]\ttrain-") for line in caplog.messages)
    assert isinstance(model, Model) and model.feature_dim == FEATURES
    X = clustered_rows(7, FEATURES, 2, seed=5)
    outputs = model.predict(Batch(X))
    # The declared outputs, in order; a model may give a subset (a linear learner regressor gives
    # no predicted_label), never the first one left out.
    assert tuple(outputs) == tuple(name for name in algorithm.output_names if name in outputs)
    assert algorithm.output_names[0] in outputs
    for output in algorithm.outputs:
        if output.name in outputs:
            assert outputs[output.name].shape[0] == 7
            assert outputs[output.name].ndim in ((1, 2) if output.vector is None else (2 if output.vector else 1,))
    model.save(tmp_path)
    assert set(p.name for p in tmp_path.iterdir()) <= set(algorithm.model_files)
    if algorithm.native_model_files:
        assert algorithm.holds_native_model(tmp_path)
    else:
        files = ModelFiles.read(tmp_path)
        assert files.algorithm == name and isinstance(files.metadata["format_version"], int)
    reloaded = algorithm.load(tmp_path)
    for key, value in reloaded.predict(Batch(X)).items():
        np.testing.assert_array_equal(value, outputs[key])
    # One feature fewer than the model's, or (an algorithm that accepts fewer: XGBoost) one more
    # fewer than it accepts.
    narrow = FEATURES - 1 - algorithm.fewer_request_features
    with pytest.raises(UserError, match=f"expected 6 features, got {narrow}"):
        model.predict(Batch(X[:, :narrow]))


@pytest.mark.parametrize("name", NAMES)
def test_a_model_of_another_algorithm_is_refused(name, tmp_path):
    other = next((a for a in ALGORITHMS.values() if a.name != name), None)
    if other is None:
        pytest.skip("only one algorithm is registered")
    sample_model(other).save(tmp_path)
    with pytest.raises(UserError, match=f"holds a '{other.name}' model, not a {name} model"):
        ALGORITHMS[name].load(tmp_path)


def test_streaming_algorithms_report_through_the_writer_they_are_given(caplog):
    streaming = [a for a in ALGORITHMS.values() if isinstance(a, StreamingAlgorithm)]
    for algorithm in streaming:
        hp = algorithm.hyperparameters.parse(algorithm.sample_job.hyperparameters_for(algorithm, FEATURES))
        caplog.clear()
        with caplog.at_level("INFO", logger="smalgo.metrics"):
            algorithm.train(hp, InMemoryData({"train": labelled_rows(300)}), metrics=MetricWriter("algo-7"))
        lines = [m for m in caplog.messages if "_metric:" in m]
        assert lines and all("host=algo-7," in line for line in lines), lines
