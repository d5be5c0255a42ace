"""Models AWS's built-in images wrote (../shared/testdata/aws-builtin-models/), served as AWS's
image serves them, converted to ours and back byte for byte (algorithms/aws_models.py, `smalgo
import-aws` / `export-aws`), and a k-means model built from scikit-learn's centers the way AWS's
example builds one with MXNet. Linear learner and factorization machines models (zips of MXNet
module checkpoints) written by MXNet 1.9.1 the way AWS's images write them, served, and ours
exported so that MXNet's Module.load reads them and computes our scores."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_mxnet_ndarray import AWS_MODELS, MXNET_PYTHON, MXNET_SIDE, mxnet
from test_serve_support import ServerProcess

from smalgo.algorithms.aws_models import AWS_ARCHIVE, AWS_MODEL_FILE, load_aws_model
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.factorization_machines import FactorizationMachinesModel
from smalgo.algorithms.formats.mxnet_checkpoint import read_checkpoint_zip
from smalgo.algorithms.formats.mxnet_ndarray import read_ndarrays, write_ndarrays
from smalgo.algorithms.linear_learner import LinearLearnerModel
from smalgo.algorithms.registry import ALGORITHMS
from smalgo.containers import cli
from smalgo.serve import ServerSettings, create_app
from smalgo.serve.model import ModelError, load_model

FOLDERS = sorted(p.name for p in AWS_MODELS.iterdir())


def stored(folder: str):
    return read_ndarrays((AWS_MODELS / folder / AWS_MODEL_FILE).read_bytes())


def rows_for(folder: str, n: int = 40) -> np.ndarray:
    arrays = stored(folder)
    d = arrays[0].shape[1] if isinstance(arrays, list) else arrays["v"].shape[0]
    return np.random.default_rng(3).normal(0, 2, (n, d)).astype(np.float32)


def what_aws_computes(folder: str, X: np.ndarray) -> dict[str, np.ndarray]:
    """The answer from the stored arrays alone: nearest center and distance; (x - mean) . v."""
    arrays = stored(folder)
    if isinstance(arrays, list):
        centers = arrays[0].astype(np.float64)
        distances = np.sqrt(((X[:, None, :].astype(np.float64) - centers[None]) ** 2).sum(axis=2))
        return {"closest_cluster": distances.argmin(axis=1), "distance_to_cluster": distances.min(axis=1)}
    return {"projection": (X.astype(np.float64) - arrays["mean"]) @ arrays["v"]}


def only(folder: str, name: str, tmp_path: Path) -> Path:
    """A model directory holding just `name` (model_algo-1 or model.tar.gz) of `folder`."""
    target = tmp_path / f"{folder}-{name}"
    target.mkdir()
    shutil.copy(AWS_MODELS / folder / name, target / name)
    return target


def assert_answers(outputs: dict, expected: dict) -> None:
    for key, value in expected.items():
        if key == "closest_cluster":
            assert np.array_equal(np.asarray(outputs[key]).astype(int), value)
        else:
            np.testing.assert_allclose(np.asarray(outputs[key], np.float64), value, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", [AWS_MODEL_FILE, AWS_ARCHIVE])
@pytest.mark.parametrize("folder", FOLDERS)
def test_aws_models_serve_what_their_arrays_compute(folder, name, tmp_path):
    loaded = load_model(only(folder, name, tmp_path))
    assert loaded.algorithm.name == folder.split("-")[0]
    X = rows_for(folder)
    assert_answers(loaded.predict(Batch(X)), what_aws_computes(folder, X))


def test_pca_with_a_nan_singular_value_is_served_as_aws_serves_it(tmp_path):
    assert np.isnan(stored("pca-renejra")["s"][0])
    client = create_app(
        settings=ServerSettings.from_environment(only("pca-renejra", AWS_ARCHIVE, tmp_path))
    ).test_client()
    X = rows_for("pca-renejra", 3)
    body = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in X)
    response = client.post("/invocations", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200
    projections = [item["projection"] for item in json.loads(response.data)["projections"]]
    assert np.isfinite(projections).all()
    assert_answers({"projection": projections}, what_aws_computes("pca-renejra", X))


def test_the_server_process_serves_a_model_tar_gz(tmp_path):
    folder = "kmeans-ahmed-gaal"
    server = ServerProcess(
        only(folder, AWS_ARCHIVE, tmp_path), tmp_path / "server.log", SAGEMAKER_MODEL_SERVER_WORKERS="1"
    )
    try:
        server.wait_until_ready()
        X = rows_for(folder, 5)
        body = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in X).encode()
        status, _, answer = server.request("POST", "/invocations", body, {"Content-Type": "text/csv"})
        assert status == 200
        predictions = json.loads(answer)["predictions"]
        assert_answers(
            {k: [p[k] for p in predictions] for k in ("closest_cluster", "distance_to_cluster")},
            what_aws_computes(folder, X),
        )
    finally:
        server.kill()


@pytest.mark.parametrize("folder", FOLDERS)
def test_import_then_export_gives_the_same_bytes(folder, tmp_path, capsys):
    source = AWS_MODELS / folder / AWS_ARCHIVE
    assert cli.main(["import-aws", str(source), str(tmp_path / "ours")]) == 0
    assert "model written to" in capsys.readouterr().out
    metadata = json.loads((tmp_path / "ours" / "model.json").read_text())
    assert metadata["algorithm"] == folder.split("-")[0]
    assert cli.main(["export-aws", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
    original = (AWS_MODELS / folder / AWS_MODEL_FILE).read_bytes()
    assert (tmp_path / "back" / AWS_MODEL_FILE).read_bytes() == original
    with tarfile.open(tmp_path / "back" / AWS_ARCHIVE) as tar:
        assert tar.getnames() == [AWS_MODEL_FILE]
        assert tar.extractfile(AWS_MODEL_FILE).read() == original


def test_our_trained_models_export_to_files_mxnet_reads(tmp_path):
    from test_serve_support import train_sample_models

    models = train_sample_models(tmp_path / "trained")
    for name in ("linear-learner", "factorization-machines"):
        # Module checkpoints: Module.load reads ours, values bit-identical, and computes our scores.
        assert cli.main(["export-aws", str(models[name]), str(tmp_path / name)]) == 0
        ours = load_model(models[name]).model
        assert_mxnet_loads_our_checkpoint(ours, tmp_path / name / AWS_MODEL_FILE, tmp_path)
        assert_reimport_predicts_the_same(ours, tmp_path / name)
    for name in ("kmeans", "pca"):
        assert cli.main(["export-aws", str(models[name]), str(tmp_path / name)]) == 0
        mxnet("load", str(tmp_path / name / AWS_MODEL_FILE), str(tmp_path / f"{name}.npz"))
        loaded = np.load(tmp_path / f"{name}.npz")
        ours = load_model(models[name]).model
        if name == "kmeans":
            assert loaded["a0"].tobytes() == ours.centers.tobytes()
        else:
            assert [str(n) for n in loaded["__order__"]] == ["s", "v", "mean"]
            assert loaded["v"].tobytes() == ours.components.tobytes()
        # and the exported directory serves what the model it came from serves
        X = np.random.default_rng(1).normal(size=(4, ours.feature_dim)).astype(np.float32)
        again = load_model(tmp_path / name)
        for key, value in ours.predict(Batch(X)).items():
            np.testing.assert_array_equal(again.predict(Batch(X))[key], value)


def test_a_kmeans_model_from_scikit_learn_centers_as_aws_example_builds_it(tmp_path):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, (200, 6)) for c in (-6, 0, 6)]).astype(np.float32)
    fitted = KMeans(n_clusters=3, n_init=3, random_state=0).fit(X)
    # AWS's example: mx.ndarray.save("model_algo-1", [mx.nd.array(kmeans.cluster_centers_)]), tarred.
    np.savez(tmp_path / "spec.npz", __order__=np.array(["a0"]), a0=fitted.cluster_centers_.astype(np.float32))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    mxnet("save", str(model_dir / AWS_MODEL_FILE), str(tmp_path / "spec.npz"))
    served = load_model(model_dir, "kmeans")
    closest = served.predict(Batch(X))["closest_cluster"]
    assert np.array_equal(closest.astype(int), fitted.predict(X))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"PK\x03\x04rest", "not a readable zip"),
        (write_ndarrays([np.ones((2, 2), np.float32), np.ones(2, np.float32)]), "holds a list of 2 array(s)"),
        (write_ndarrays({"w": np.ones((2, 1), np.float32)}), "holds a dict of w (2, 1), which is not the layout"),
        (write_ndarrays([np.array([[np.nan, 1.0]], np.float32)]), "with NaN or infinite values"),
        (write_ndarrays([np.ones((2, 2), np.float64)]), "finite float32 centers, not float64"),
        (write_ndarrays({"mean": np.ones((1, 3)), "v": np.ones((2, 2)), "s": np.ones(2)}), "do not fit together"),
        (b"\x12\x01" + b"\0" * 10, "not an MXNet NDArray file"),
    ],
    ids=["zip", "two-arrays", "other-dict", "nan-centers", "float64-centers", "pca-shapes", "truncated"],
)
def test_what_no_algorithm_reads_is_refused_naming_the_file(tmp_path, content, message):
    (tmp_path / AWS_MODEL_FILE).write_bytes(content)
    with pytest.raises(ModelError, match="model_algo-1") as error:
        load_model(tmp_path)
    assert message in str(error.value)


def test_archives_without_the_model_and_broken_archives(tmp_path):
    with tarfile.open(tmp_path / AWS_ARCHIVE, "w:gz") as tar:
        tar.add(AWS_MODELS / "kmeans-jesamkim" / AWS_MODEL_FILE, arcname="nested/model_algo-1")
    with pytest.raises(UserError, match=r"holds no model_algo-1 at its top \(it holds: nested/model_algo-1\)"):
        load_aws_model(tmp_path)
    (tmp_path / AWS_ARCHIVE).write_bytes((AWS_MODELS / "kmeans-jesamkim" / AWS_ARCHIVE).read_bytes()[:100])
    with pytest.raises(UserError, match="model.tar.gz"):
        load_aws_model(tmp_path)


def test_an_image_serves_only_its_own_algorithm(tmp_path):
    with pytest.raises(ModelError, match="not the layout of an AWS PCA model"):
        load_model(only("kmeans-jesamkim", AWS_MODEL_FILE, tmp_path), "pca")


def test_cli_failures_are_one_line_and_exit_1(tmp_path, capsys):
    assert cli.main(["import-aws", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == f"smalgo import-aws: {tmp_path / 'missing'} does not exist."
    assert cli.main(["export-aws", str(tmp_path), str(tmp_path / "out")]) == 1
    assert "model.json is missing" in capsys.readouterr().err


def test_the_oracle_tools_are_in_place():
    # The tests above that compare with MXNet need its venv; `make test` makes it (mxnet-env).
    assert MXNET_SIDE.exists()
    result = subprocess.run(
        [str(MXNET_PYTHON), "-c", "import mxnet; print(mxnet.__version__)"], capture_output=True, text=True
    )
    assert result.stdout.strip() == "1.9.1", result.stderr


def test_the_numpy_only_reader_in_the_docs_reads_every_aws_model():
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "aws-models.md").read_text()
    snippet = next(code for code in re.findall(r"```python\n(.*?)```", doc, re.S) if "def load_mxnet_ndarrays" in code)
    namespace: dict = {}
    exec(snippet.split("(centers,) =")[0], namespace)
    for folder in FOLDERS:
        theirs = namespace["load_mxnet_ndarrays"](str(AWS_MODELS / folder / AWS_MODEL_FILE))
        ours = stored(folder)
        pairs = (
            zip(theirs.values(), ours.values(), strict=True)
            if isinstance(ours, dict)
            else zip(theirs, ours, strict=True)
        )
        for a, b in pairs:
            assert a.tobytes() == b.tobytes() and a.shape == b.shape


# --- linear learner and factorization machines: module-checkpoint zips --------------------------

FEATURES = 6


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ll_arrays(outputs: int, bias: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(outputs)
    arrays = {"fc0_weight": rng.normal(0, 0.5, (outputs, FEATURES)).astype(np.float32)}
    if bias:
        arrays["fc0_bias"] = rng.normal(0, 0.5, outputs).astype(np.float32)
    return arrays


def fm_arrays(older: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    w0, w, V = (rng.normal(0, 0.3, shape).astype(np.float32) for shape in ((1,), (FEATURES, 1), (FEATURES, 3)))
    if older:
        return {"Linear_Plus_Bias_weight": w.T.copy(), "Linear_Plus_Bias_bias": w0, "v": V.T.copy()}
    return {"w0_weight": w0, "w1_weight": w, "v": V}


UNKNOWN_JSON = {"additional-params.json": {}, "manifest.json": {}}  # AWS's contents are not public


def fm_meta(**training_parameters) -> dict:
    return {"meta.json": {"training_parameters": {"feature_dim": str(FEATURES), **training_parameters}}}


# name: (kind for the oracle, algorithm, parameters, the graph's output op, the zip's JSON files)
AWS_CHECKPOINTS = {
    "ll-binary": ("linear-learner", "linear-learner", ll_arrays(1), "LogisticRegressionOutput", UNKNOWN_JSON),
    "ll-binary-threshold": (
        "linear-learner",
        "linear-learner",
        ll_arrays(1),
        None,
        {"additional-params.json": {"predictor_type": "binary_classifier", "threshold": 0.3}, "manifest.json": {}},
    ),
    "ll-hinge": ("linear-learner", "linear-learner", ll_arrays(1), "SVMOutput", UNKNOWN_JSON),
    "ll-multiclass": ("linear-learner", "linear-learner", ll_arrays(4), "SoftmaxOutput", UNKNOWN_JSON),
    "ll-regressor": ("linear-learner", "linear-learner", ll_arrays(1), "LinearRegressionOutput", UNKNOWN_JSON),
    "ll-regressor-no-bias": (
        "linear-learner",
        "linear-learner",
        ll_arrays(1, bias=False),
        "LinearRegressionOutput",
        UNKNOWN_JSON,
    ),
    "fm-binary": (
        "factorization-machines",
        "factorization-machines",
        fm_arrays(),
        "LogisticRegressionOutput",
        fm_meta(num_factors="3", predictor_type="binary_classifier"),
    ),
    "fm-regressor": (
        "factorization-machines",
        "factorization-machines",
        fm_arrays(),
        "LinearRegressionOutput",
        fm_meta(),
    ),
    "fm-older-names": (
        "factorization-machines-old",
        "factorization-machines",
        fm_arrays(older=True),
        None,
        fm_meta(predictor_type="binary_classifier"),
    ),
}


def what_the_arrays_compute(case: str, X: np.ndarray) -> dict[str, np.ndarray]:
    """AWS's answer from the stored arrays alone, in float64."""
    kind, _, arrays, head, extras = AWS_CHECKPOINTS[case]
    X = X.astype(np.float64)
    if kind == "linear-learner":
        W = arrays["fc0_weight"].astype(np.float64)
        Z = X @ W.T + (arrays["fc0_bias"] if "fc0_bias" in arrays else 0.0)
        if head == "SoftmaxOutput":
            return {"score": softmax(Z), "predicted_label": Z.argmax(axis=1)}
        if head in ("LinearRegressionOutput",):
            return {"score": Z[:, 0]}
        if head == "SVMOutput":
            return {"score": Z[:, 0], "predicted_label": (Z[:, 0] > 0).astype(int)}
        threshold = extras["additional-params.json"].get("threshold", 0.5)
        score = sigmoid(Z[:, 0])
        return {"score": score, "predicted_label": (score > threshold).astype(int)}
    if kind == "factorization-machines":
        w0, w, V = arrays["w0_weight"][0], arrays["w1_weight"][:, 0], arrays["v"]
    else:
        w0, w, V = arrays["Linear_Plus_Bias_bias"][0], arrays["Linear_Plus_Bias_weight"][0], arrays["v"].T
    V = V.astype(np.float64)
    z = w0 + X @ w + 0.5 * ((X @ V) ** 2 - (X**2) @ (V**2)).sum(axis=1)
    if head == "LinearRegressionOutput":
        return {"score": z}
    return {"score": sigmoid(z), "predicted_label": (sigmoid(z) >= 0.5).astype(int)}


def oracle_checkpoint(case: str, out_zip: Path, work: Path, *, head: str | None = "same") -> Path:
    """model_algo-1 of `case`, written by MXNet 1.9.1 as AWS's image writes it."""
    kind, _, arrays, case_head, extras = AWS_CHECKPOINTS[case]
    np.savez(work / f"{case}.npz", **arrays)
    spec = {
        "kind": kind,
        "arrays": str(work / f"{case}.npz"),
        "head": case_head if head == "same" else head,
        "extras": extras,
    }
    (work / f"{case}.json").write_text(json.dumps(spec))
    mxnet("checkpoint-save", str(out_zip), str(work / f"{case}.json"))
    return out_zip


@pytest.fixture(scope="module")
def aws_checkpoints(tmp_path_factory):
    """Each case's model_algo-1, written by the oracle once."""
    work = tmp_path_factory.mktemp("aws-checkpoints")
    return {case: oracle_checkpoint(case, work / f"{case}.zip", work) for case in AWS_CHECKPOINTS}


def model_dir_holding(zip_path: Path, name: str, target: Path) -> Path:
    """A model directory holding `zip_path` as model_algo-1, or inside model.tar.gz."""
    target.mkdir()
    if name == AWS_MODEL_FILE:
        shutil.copy(zip_path, target / AWS_MODEL_FILE)
    else:
        with tarfile.open(target / AWS_ARCHIVE, "w:gz") as tar:
            tar.add(zip_path, arcname=AWS_MODEL_FILE)
    return target


def rows(n: int = 25, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.5, (n, FEATURES)).astype(np.float32)


def assert_close_answers(predictions: list[dict], expected: dict[str, np.ndarray]) -> None:
    assert set(predictions[0]) == set(expected)
    np.testing.assert_allclose(
        np.array([p["score"] for p in predictions], np.float64), expected["score"], rtol=2e-5, atol=2e-6
    )
    if "predicted_label" in expected:
        assert [int(p["predicted_label"]) for p in predictions] == expected["predicted_label"].tolist()


@pytest.mark.parametrize("name", [AWS_MODEL_FILE, AWS_ARCHIVE])
@pytest.mark.parametrize("case", AWS_CHECKPOINTS)
def test_aws_checkpoint_models_serve_what_their_arrays_compute(aws_checkpoints, case, name, tmp_path):
    algorithm = AWS_CHECKPOINTS[case][1]
    model_dir = model_dir_holding(aws_checkpoints[case], name, tmp_path / "model")
    settings = ServerSettings.from_environment(model_dir, {"SMALGO_ALGORITHM": algorithm})
    client = create_app(settings=settings).test_client()
    X = rows()
    body = json.dumps({"instances": [{"features": row.tolist()} for row in X]})
    response = client.post(
        "/invocations", data=body, headers={"Content-Type": "application/json", "Accept": "application/json"}
    )
    assert response.status_code == 200, response.data
    assert_close_answers(json.loads(response.data)["predictions"], what_the_arrays_compute(case, X))


@pytest.mark.parametrize("case", AWS_CHECKPOINTS)
def test_the_arrays_compute_what_mxnet_computes_from_the_aws_file(aws_checkpoints, case, tmp_path):
    # The reference above is MXNet's own forward pass of AWS's graph (where the graph has an output op).
    X = rows()
    np.save(tmp_path / "X.npy", X)
    mxnet("checkpoint-load", str(aws_checkpoints[case]), str(tmp_path / "out.npz"), str(tmp_path / "X.npy"))
    loaded = np.load(tmp_path / "out.npz")
    _, _, arrays, head, _ = AWS_CHECKPOINTS[case]
    for name, array in arrays.items():
        assert loaded[f"arg:{name}"].tobytes() == array.tobytes()
    expected = what_the_arrays_compute(case, X)["score"]
    outputs = loaded["__outputs__"]
    if head is None and "Linear_Plus_Bias_weight" in arrays:
        expected = np.log(expected / (1 - expected))  # a graph without an output op gives the raw value
    elif head is None:
        outputs = sigmoid(outputs.astype(np.float64))
    np.testing.assert_allclose(outputs.reshape(expected.shape), expected, rtol=2e-5, atol=2e-6)


def test_imported_aws_models_keep_what_the_file_says(aws_checkpoints):
    algorithm, model = load_aws_model(aws_checkpoints["ll-binary-threshold"])
    assert algorithm.name == "linear-learner" and model.threshold == 0.3
    assert model.settings == {"imported_from": "AWS linear-learner model_algo-1"}
    assert np.array_equal(model.weights, AWS_CHECKPOINTS["ll-binary-threshold"][2]["fc0_weight"].T)
    _, hinge = load_aws_model(aws_checkpoints["ll-hinge"])
    assert (hinge.problem.loss, hinge.threshold) == ("hinge_loss", 0.0)
    _, multiclass = load_aws_model(aws_checkpoints["ll-multiclass"])
    assert (multiclass.problem.predictor_type, multiclass.problem.num_classes) == ("multiclass_classifier", 4)
    _, older = load_aws_model(aws_checkpoints["fm-older-names"])
    assert older.V.shape == (FEATURES, 3) and older.predictor_type == "binary_classifier"
    _, regressor = load_aws_model(aws_checkpoints["fm-regressor"])
    assert regressor.predictor_type == "regressor"


@pytest.mark.parametrize("case", ["ll-multiclass", "fm-binary"])
def test_import_aws_writes_models_numpy_reads(aws_checkpoints, case, tmp_path, capsys):
    assert cli.main(["import-aws", str(aws_checkpoints[case]), str(tmp_path / "ours")]) == 0
    assert capsys.readouterr().out.startswith(f"{ALGORITHMS[AWS_CHECKPOINTS[case][1]].title} model written to")
    metadata = json.loads((tmp_path / "ours" / "model.json").read_text())
    arrays = AWS_CHECKPOINTS[case][2]
    if case == "fm-binary":
        assert np.load(tmp_path / "ours" / metadata["arrays"]["V"]).tobytes() == arrays["v"].tobytes()
        assert np.load(tmp_path / "ours" / metadata["arrays"]["w"]).tobytes() == arrays["w1_weight"].tobytes()
    else:
        weights = np.load(tmp_path / "ours" / metadata["arrays"]["weights"])
        assert np.array_equal(weights, arrays["fc0_weight"].T)
        assert np.load(tmp_path / "ours" / metadata["arrays"]["feature_scale"]).tolist() == [1.0] * FEATURES


def scaled_ll_model(predictor_type: str, outputs: int, loss: str = "auto") -> LinearLearnerModel:
    """A model whose normalisation is not the identity: the export folds it into the weights."""
    from smalgo.algorithms.linear_learner._linear_learner import Scaler

    rng = np.random.default_rng(outputs + len(loss))
    raw = {"predictor_type": predictor_type, "loss": loss, "feature_dim": FEATURES}
    if predictor_type == "multiclass_classifier":
        raw["num_classes"] = outputs
    hp = ALGORITHMS["linear-learner"].hyperparameters.parse(raw)
    scaler = Scaler(
        rng.normal(0, 2, FEATURES).astype(np.float32),
        rng.uniform(0.5, 3, FEATURES).astype(np.float32),
        label_mean=3.25 if predictor_type == "regressor" else 0.0,
        label_scale=2.5 if predictor_type == "regressor" else 1.0,
    )
    return LinearLearnerModel(
        hp,
        weights=rng.normal(0, 0.5, (FEATURES, outputs)).astype(np.float32),
        bias=rng.normal(0, 0.5, outputs).astype(np.float32),
        scaler=scaler,
        threshold=0.37,
        settings={},
    )


def fm_model(predictor_type: str) -> FactorizationMachinesModel:
    rng = np.random.default_rng(2)
    hp = ALGORITHMS["factorization-machines"].hyperparameters.parse(
        {"feature_dim": FEATURES, "num_factors": 3, "predictor_type": predictor_type}
    )
    return FactorizationMachinesModel(
        hp, w0=np.array([0.2], np.float32), w=rng.normal(0, 0.3, FEATURES), V=rng.normal(0, 0.3, (FEATURES, 3))
    )


EXPORTED = {
    "ll-binary": lambda: scaled_ll_model("binary_classifier", 1),
    "ll-hinge": lambda: scaled_ll_model("binary_classifier", 1, "hinge_loss"),
    "ll-multiclass": lambda: scaled_ll_model("multiclass_classifier", 5),
    "ll-regressor": lambda: scaled_ll_model("regressor", 1),
    "fm-binary": lambda: fm_model("binary_classifier"),
    "fm-regressor": lambda: fm_model("regressor"),
}


def assert_mxnet_loads_our_checkpoint(model, zip_path: Path, work: Path) -> None:
    """Module.load (as AWS's examples call it) reads our zip with our values bit for bit, and its
    forward pass is our score; our graph is the one MXNet builds for the same model."""
    X = rows(30, seed=9)[:, : model.feature_dim]
    np.save(work / "X.npy", X)
    mxnet("checkpoint-load", str(zip_path), str(work / "loaded.npz"), str(work / "X.npy"))
    loaded = np.load(work / "loaded.npz")
    ours = read_checkpoint_zip(zip_path.read_bytes())
    if isinstance(model, LinearLearnerModel):
        W, b = model.raw_space_weights()
        expected_params = {"fc0_weight": W.T, "fc0_bias": b}
        kind = "linear-learner"
        head = {
            "binary_classifier": "LogisticRegressionOutput" if model.problem.loss == "logistic" else "SVMOutput",
            "multiclass_classifier": "SoftmaxOutput",
            "regressor": "LinearRegressionOutput",
        }[model.problem.predictor_type]
    else:
        expected_params = {"w0_weight": model.w0, "w1_weight": model.w.reshape(-1, 1), "v": model.V}
        kind = "factorization-machines"
        head = "LogisticRegressionOutput" if model.predictor_type == "binary_classifier" else "LinearRegressionOutput"
    assert sorted(n for n in loaded.files if n.startswith(("arg:", "aux:"))) == sorted(
        f"arg:{n}" for n in expected_params
    )
    for name, array in expected_params.items():
        assert loaded[f"arg:{name}"].dtype == np.float32 and loaded[f"arg:{name}"].shape == array.shape
        assert loaded[f"arg:{name}"].tobytes() == np.ascontiguousarray(array).tobytes()
    score = model.predict(Batch(X))["score"]
    np.testing.assert_allclose(loaded["__outputs__"].reshape(score.shape), score, rtol=2e-5, atol=2e-6)
    # The graph MXNet builds for this model, saved by save_checkpoint, is ours node for node.
    np.savez(work / "params.npz", **expected_params)
    (work / "spec.json").write_text(json.dumps({"kind": kind, "arrays": str(work / "params.npz"), "head": head}))
    mxnet("checkpoint-save", str(work / "theirs.zip"), str(work / "spec.json"))
    assert read_checkpoint_zip((work / "theirs.zip").read_bytes()).symbol == ours.symbol


def assert_reimport_predicts_the_same(model, exported_dir: Path) -> None:
    _, again = load_aws_model(exported_dir)
    X = rows(30, seed=9)[:, : model.feature_dim]
    ours, theirs = model.predict(Batch(X)), again.predict(Batch(X))
    assert set(ours) == set(theirs)
    for key in ours:
        np.testing.assert_array_equal(theirs[key], ours[key])


@pytest.mark.parametrize("case", EXPORTED)
def test_our_models_export_as_checkpoints_mxnet_loads(case, tmp_path):
    model = EXPORTED[case]()
    model.save(tmp_path / "ours")
    assert cli.main(["export-aws", str(tmp_path / "ours"), str(tmp_path / "aws")]) == 0
    names = zipfile_names(tmp_path / "aws" / AWS_MODEL_FILE)
    expected_names = (
        ["additional-params.json", "manifest.json", "mx-mod-symbol.json", "mx-mod-0000.params"]
        if case.startswith("ll")
        else ["meta.json", "symbol.json", "params"]
    )
    assert names == expected_names
    with tarfile.open(tmp_path / "aws" / AWS_ARCHIVE) as tar:
        assert tar.getnames() == [AWS_MODEL_FILE]
        assert tar.extractfile(AWS_MODEL_FILE).read() == (tmp_path / "aws" / AWS_MODEL_FILE).read_bytes()
    assert_mxnet_loads_our_checkpoint(model, tmp_path / "aws" / AWS_MODEL_FILE, tmp_path)
    assert_reimport_predicts_the_same(model, tmp_path / "aws")
    if case.startswith("ll"):
        settings = read_checkpoint_zip((tmp_path / "aws" / AWS_MODEL_FILE).read_bytes()).extras[
            "additional-params.json"
        ]
        assert settings["predictor_type"] == model.problem.predictor_type and settings["loss"] == model.problem.loss
        assert settings.get("threshold") == (0.37 if model.problem.predictor_type == "binary_classifier" else None)


def zipfile_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_the_export_folds_the_normalisation_in_exactly_up_to_float32(tmp_path):
    model = scaled_ll_model("regressor", 1)
    X = rows(40).astype(np.float64)
    scaler = model.scaler
    # The model as trained: normalised features and label.
    normalised = ((X - scaler.mean) / scaler.scale) @ model.weights + model.bias
    in_label_unit = normalised[:, 0] * scaler.label_scale + scaler.label_mean
    W, b = model.raw_space_weights()
    np.testing.assert_allclose(X @ W[:, 0] + b[0], in_label_unit, rtol=1e-5, atol=1e-5)


def test_a_zip_without_its_parameters_is_refused_naming_the_member(aws_checkpoints, tmp_path):
    with (
        zipfile.ZipFile(aws_checkpoints["ll-binary"]) as source,
        zipfile.ZipFile(tmp_path / AWS_MODEL_FILE, "w") as out,
    ):
        for name in source.namelist():
            if not name.endswith(".params"):
                out.writestr(name, source.read(name))
    with pytest.raises(ModelError) as error:
        load_model(tmp_path, "linear-learner")
    message = str(error.value)
    assert message.startswith(str(tmp_path / AWS_MODEL_FILE))
    assert "no parameters member (<prefix>-0000.params or params" in message
    assert "it holds: additional-params.json, manifest.json, mx-mod-symbol.json" in message


def test_checkpoints_no_algorithm_reads_are_refused_naming_the_file(aws_checkpoints, tmp_path):
    with pytest.raises(
        ModelError,
        match="whose parameters are fc0_weight .1, 6., fc0_bias .1,., which are not those of an AWS PCA model",
    ):
        load_model(model_dir_holding(aws_checkpoints["ll-binary"], AWS_MODEL_FILE, tmp_path / "pca"), "pca")
    # No predictor type in its JSON files and no output op: a binary classifier or a regressor?
    unknown = oracle_checkpoint("ll-regressor", tmp_path / "unknown.zip", tmp_path, head=None)
    with pytest.raises(
        UserError,
        match="cannot tell whether this AWS linear learner model is a binary classifier or a "
        "regressor: none of its JSON files .additional-params.json, manifest.json. names a predictor_type, "
        "and its graph ends in FullyConnected",
    ):
        load_aws_model(unknown)
    (tmp_path / "fm-bad").mkdir()
    with (
        zipfile.ZipFile(aws_checkpoints["fm-older-names"]) as source,
        zipfile.ZipFile(tmp_path / "fm-bad" / AWS_MODEL_FILE, "w") as out,
    ):
        for name in source.namelist():
            content = source.read(name)
            out.writestr(
                name, content.replace(b'"binary_classifier"', b'"classifier!"') if name == "meta.json" else content
            )
    with pytest.raises(
        ModelError, match="meta.json names predictor_type 'classifier!', none of binary_classifier, regressor"
    ):
        load_model(tmp_path / "fm-bad")


def test_the_numpy_only_readers_in_the_docs_read_checkpoint_models(aws_checkpoints, tmp_path, monkeypatch):
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "aws-models.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    ndarrays = next(code for code in blocks if "def load_mxnet_ndarrays" in code).split("(centers,) =")[0]
    checkpoint = next(code for code in blocks if "def load_checkpoint_params" in code)
    imported = next(code for code in blocks if "ll-ours/model.json" in code)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(ndarrays + checkpoint.split("p = load_checkpoint_params")[0], namespace)
    for case in ("ll-multiclass", "ll-regressor-no-bias", "fm-binary", "fm-older-names"):
        params = namespace["load_checkpoint_params"](str(aws_checkpoints[case]))
        expected = AWS_CHECKPOINTS[case][2]
        assert list(params) == list(expected)
        assert all(
            params[n].tobytes() == expected[n].tobytes() and params[n].shape == expected[n].shape for n in params
        )
    # After smalgo import-aws: the arrays, with numpy alone.
    assert cli.main(["import-aws", str(aws_checkpoints["ll-multiclass"]), "ll-ours"]) == 0
    assert cli.main(["import-aws", str(aws_checkpoints["fm-binary"]), "fm-ours"]) == 0
    namespace = {}
    exec(imported, namespace)
    ll, fm = AWS_CHECKPOINTS["ll-multiclass"][2], AWS_CHECKPOINTS["fm-binary"][2]
    assert np.array_equal(namespace["W"], ll["fc0_weight"].T) and np.array_equal(namespace["b"], ll["fc0_bias"])
    assert namespace["w0"].tobytes() == fm["w0_weight"].tobytes() and namespace["V"].tobytes() == fm["v"].tobytes()
    assert namespace["w"].tobytes() == fm["w1_weight"].tobytes() and namespace["w"].shape == (FEATURES,)
