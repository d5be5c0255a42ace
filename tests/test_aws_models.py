"""Models AWS's built-in images wrote (../shared/testdata/aws-builtin-models/), served as AWS's
image serves them, converted to ours and back byte for byte (algorithms/aws_models.py, `smalgo
import-aws` / `export-aws`), and a k-means model built from scikit-learn's centers the way AWS's
example builds one with MXNet."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_mxnet_ndarray import AWS_MODELS, MXNET_PYTHON, MXNET_SIDE, mxnet
from test_serve_support import ServerProcess

from smalgo.algorithms.aws_models import AWS_ARCHIVE, AWS_MODEL_FILE, load_aws_model
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.mxnet_ndarray import read_ndarrays, write_ndarrays
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
        (b"PK\x03\x04rest", "is a zip of an MXNet module checkpoint"),
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
