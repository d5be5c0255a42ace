"""PCA: hyperparameters, agreement with a dense SVD, ordering, both modes, sparse input,
predictions, persistence, metric lines."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import scipy.sparse as sp

from smalgo.algorithms import pca
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.errors import UserError


def low_rank_data(n: int, d: int, variances, noise: float, offset: float = 3.0, seed: int = 0) -> np.ndarray:
    """Rows with a few strong directions (given variances), isotropic noise and a mean."""
    rng = np.random.default_rng(seed)
    variances = np.asarray(variances, dtype=np.float64)
    basis, _ = np.linalg.qr(rng.standard_normal((d, variances.size)))
    X = (rng.standard_normal((n, variances.size)) * np.sqrt(variances)) @ basis.T
    X += noise * rng.standard_normal((n, d)) + rng.uniform(-offset, offset, d)
    return X.astype(np.float32)


def parse(**raw) -> dict:
    raw.setdefault("mini_batch_size", 100)
    return pca.ALGORITHM.hyperparameters.parse({key: str(value) for key, value in raw.items()})


def train(X, **raw) -> pca._pca.PCAModel:
    return pca.ALGORITHM.train(parse(feature_dim=X.shape[1], **raw), InMemoryData({"train": X}))


def reference_svd(X: np.ndarray, subtract_mean: bool = True):
    """(top right singular vectors as columns, largest first; singular values, largest first)."""
    X = X.astype(np.float64)
    if subtract_mean:
        X = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    return vt.T, s


def assert_same_up_to_sign(actual: np.ndarray, expected: np.ndarray, atol: float) -> None:
    signs = np.sign(np.sum(actual * expected, axis=0))
    np.testing.assert_allclose(actual * signs, expected, atol=atol)


# --------------------------------------------------------------------------- hyperparameters


def test_sdk_hyperparameters_parse():
    hp = pca.ALGORITHM.hyperparameters.parse(
        {
            "feature_dim": "50",
            "mini_batch_size": "500",
            "num_components": "10",
            "algorithm_mode": "randomized",
            "subtract_mean": "True",
            "extra_components": "-1",
        }
    )
    pca.ALGORITHM.validate(hp)
    assert hp == {
        "feature_dim": 50,
        "mini_batch_size": 500,
        "num_components": 10,
        "algorithm_mode": "randomized",
        "subtract_mean": True,
        "extra_components": -1,
    }
    assert pca._pca.sketch_size(hp) == 20


def test_defaults_and_sketch_size():
    hp = parse(feature_dim=100, num_components=30)
    assert hp["algorithm_mode"] == "regular" and hp["subtract_mean"] is True and hp["extra_components"] == -1
    assert pca._pca.sketch_size(hp) == 60  # -1 means max(10, num_components)
    assert pca._pca.sketch_size(parse(feature_dim=100, num_components=3, extra_components=0)) == 3


@pytest.mark.parametrize(
    "raw, name",
    [
        ({"feature_dim": "5", "num_components": "2"}, "mini_batch_size"),
        ({"feature_dim": "5", "mini_batch_size": "10"}, "num_components"),
        ({"feature_dim": "5", "mini_batch_size": "10", "num_components": "0"}, "num_components"),
        (
            {"feature_dim": "5", "mini_batch_size": "10", "num_components": "2", "extra_components": "-2"},
            "extra_components",
        ),
        (
            {"feature_dim": "5", "mini_batch_size": "10", "num_components": "2", "algorithm_mode": "fast"},
            "algorithm_mode",
        ),
    ],
)
def test_bad_hyperparameters_are_user_errors_naming_them(raw, name):
    with pytest.raises(UserError, match=name):
        pca.ALGORITHM.hyperparameters.parse(raw)


def test_more_components_than_features_is_refused_before_reading_data():
    hp = parse(feature_dim=5, num_components=6)
    with pytest.raises(UserError, match=r"num_components \(6\).*feature_dim \(5\)"):
        pca.ALGORITHM.validate(hp)


def test_regular_mode_refuses_a_matrix_that_cannot_fit():
    with pytest.raises(UserError, match="randomized"):
        pca.ALGORITHM.validate(parse(feature_dim=100_000, num_components=10))
    pca.ALGORITHM.validate(parse(feature_dim=100_000, num_components=10, algorithm_mode="randomized"))


# --------------------------------------------------------------------------- regular mode


def test_components_match_a_dense_svd_up_to_sign():
    X = low_rank_data(600, 9, [16.0, 9.0, 4.0], noise=0.3)
    model = train(X, num_components=3)
    vectors, singular = reference_svd(X)
    # The model orders components from the smallest to the largest.
    assert_same_up_to_sign(model.components, vectors[:, :3][:, ::-1], atol=1e-4)
    np.testing.assert_allclose(model.singular_values, singular[:3][::-1], rtol=1e-4)
    np.testing.assert_allclose(model.mean, X.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-5)


def test_components_are_ordered_smallest_to_largest_in_model_and_projection():
    X = low_rank_data(500, 8, [25.0, 10.0, 4.0, 1.0], noise=0.1)
    model = train(X, num_components=4)
    assert np.all(np.diff(model.singular_values) > 0)
    projection = model.predict(Batch(X))["projection"]
    assert projection.shape == (500, 4) and projection.dtype == np.float32
    assert np.all(np.diff(projection.var(axis=0)) > 0)


def test_projection_is_centered_rows_times_components():
    X = low_rank_data(300, 7, [9.0, 4.0], noise=0.2)
    model = train(X, num_components=2)
    expected = (X.astype(np.float64) - model.mean) @ model.components.astype(np.float64)
    np.testing.assert_allclose(model.predict(Batch(X))["projection"], expected, rtol=1e-4, atol=1e-4)


def test_explained_variance_matches_scikit_learn():
    sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
    X = low_rank_data(2000, 20, [30.0, 20.0, 10.0, 5.0, 2.0], noise=0.5)
    model = train(X, num_components=5, mini_batch_size=300)
    reference = sklearn_decomposition.PCA(n_components=5, svd_solver="full").fit(X.astype(np.float64))
    np.testing.assert_allclose(model.explained_variance[::-1], reference.explained_variance_, rtol=1e-4)


def test_without_subtract_mean_the_raw_rows_are_decomposed():
    X = low_rank_data(400, 6, [9.0, 4.0], noise=0.2, offset=5.0)
    model = train(X, num_components=2, subtract_mean="false")
    vectors, singular = reference_svd(X, subtract_mean=False)
    assert model.mean is None
    assert_same_up_to_sign(model.components, vectors[:, :2][:, ::-1], atol=1e-4)
    np.testing.assert_allclose(model.singular_values, singular[:2][::-1], rtol=1e-4)
    np.testing.assert_allclose(model.predict(Batch(X))["projection"], X @ model.components, rtol=1e-5, atol=1e-4)


def test_a_large_mean_does_not_cost_precision():
    # float32 sums of x x^T would cancel catastrophically at this offset; the shift avoids it.
    X = low_rank_data(2000, 10, [4.0, 1.0], noise=0.1, offset=0.0) + np.float32(10_000.0)
    model = train(X, num_components=2, mini_batch_size=250)
    _, singular = reference_svd(X)
    np.testing.assert_allclose(model.singular_values, singular[:2][::-1], rtol=1e-4)


def test_result_does_not_depend_on_mini_batch_size():
    X = low_rank_data(500, 6, [9.0, 4.0, 1.0], noise=0.3)
    small = train(X, num_components=3, mini_batch_size=7)
    large = train(X, num_components=3, mini_batch_size=500)
    np.testing.assert_allclose(small.components, large.components, atol=1e-5)
    np.testing.assert_allclose(small.singular_values, large.singular_values, rtol=1e-5)


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_sparse_input_gives_the_dense_result(mode):
    X = low_rank_data(800, 40, [30.0, 20.0, 10.0], noise=0.2)
    X[np.abs(X) < 2.0] = 0.0
    dense = train(X, num_components=3, algorithm_mode=mode, extra_components=5)
    sparse = pca.ALGORITHM.train(
        parse(feature_dim=40, num_components=3, algorithm_mode=mode, extra_components=5),
        InMemoryData({"train": sp.csr_matrix(X)}),
    )
    np.testing.assert_allclose(sparse.singular_values, dense.singular_values, rtol=1e-4)
    np.testing.assert_allclose(sparse.components, dense.components, atol=1e-4)
    np.testing.assert_allclose(sparse.mean, dense.mean, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- randomized mode


def test_randomized_is_close_to_regular_on_low_rank_data():
    X = low_rank_data(5000, 60, [50.0, 30.0, 20.0, 10.0], noise=0.05)
    regular = train(X, num_components=4, mini_batch_size=500)
    randomized = train(X, num_components=4, mini_batch_size=500, algorithm_mode="randomized")
    assert randomized.details["sketch_columns"] == 14
    # Same subspace: the principal angles are all tiny.
    cosines = np.linalg.svd(regular.components.T.astype(np.float64) @ randomized.components, compute_uv=False)
    assert cosines.min() > 0.9999
    np.testing.assert_allclose(randomized.singular_values, regular.singular_values, rtol=0.01)
    np.testing.assert_allclose(np.abs(np.sum(randomized.components * regular.components, axis=0)), 1.0, atol=1e-3)


def test_randomized_with_a_sketch_as_wide_as_the_data_is_exact():
    X = low_rank_data(400, 12, [9.0, 4.0, 1.0], noise=0.3)
    regular = train(X, num_components=3)
    randomized = train(X, num_components=3, algorithm_mode="randomized")  # l = 13 >= 12
    assert randomized.details["exact"] is True
    np.testing.assert_allclose(randomized.components, regular.components, atol=1e-6)


def test_randomized_singular_values_are_lower_bounds_and_the_model_says_so():
    """Issue 10, point 12: a sketch's singular values are the Nystrom approximation's, below
    the data's own along each component (the last one most); model.json names their kind."""
    X = low_rank_data(20_000, 100, 100.0 * 0.8 ** np.arange(30), noise=0.5, seed=7)
    randomized = train(X, num_components=10, mini_batch_size=2000, algorithm_mode="randomized")
    regular = train(X, num_components=10, mini_batch_size=2000)
    centred = X.astype(np.float64) - X.mean(axis=0)
    along = np.linalg.norm(centred @ randomized.components.astype(np.float64), axis=0)
    assert np.all(randomized.singular_values <= along * (1 + 1e-4))
    assert along[0] - randomized.singular_values[0] > 0.01 * along[0]  # the smallest is visibly low
    assert randomized.details["singular_values"] == "nystrom_lower_bounds"
    assert regular.details["singular_values"] == "exact"
    np.testing.assert_allclose(
        regular.singular_values, np.linalg.norm(centred @ regular.components.astype(np.float64), axis=0), rtol=1e-4
    )


def test_randomized_on_data_of_lower_rank_than_num_components():
    rng = np.random.default_rng(5)
    X = (rng.standard_normal((300, 2)) @ rng.standard_normal((2, 40))).astype(np.float32)
    model = train(X, num_components=5, algorithm_mode="randomized")
    gram = model.components.T.astype(np.float64) @ model.components
    np.testing.assert_allclose(gram, np.eye(5), atol=1e-5)
    # Three directions hold nothing but float32 rounding: the sketch is accumulated from float32
    # products, whose rounding (relative 1e-5 of the largest eigenvalue here, with numpy 2.4's
    # OpenBLAS) shows as singular values up to a few thousandths of the largest.
    assert np.all(model.singular_values[:3] < 1e-2 * model.singular_values[-1])


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_constant_rows_give_orthonormal_components_with_zero_variance(mode):
    X = np.tile(np.arange(30, dtype=np.float32), (50, 1))
    model = train(X, num_components=4, algorithm_mode=mode, extra_components=2)
    gram = model.components.T.astype(np.float64) @ model.components
    np.testing.assert_allclose(gram, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(model.singular_values, 0.0, atol=1e-6)
    np.testing.assert_allclose(model.predict(Batch(X))["projection"], 0.0, atol=1e-5)


def test_randomized_is_deterministic():
    X = low_rank_data(1000, 50, [9.0, 4.0], noise=0.3)
    first = train(X, num_components=2, algorithm_mode="randomized")
    second = train(X, num_components=2, algorithm_mode="randomized")
    np.testing.assert_array_equal(first.components, second.components)


# --------------------------------------------------------------------------- metrics


def test_reconstruction_error_is_logged_for_train_and_test(caplog):
    X = low_rank_data(600, 10, [9.0, 4.0], noise=0.5, seed=1)
    X_test = low_rank_data(200, 10, [9.0, 4.0], noise=0.5, seed=1)[:100]
    with caplog.at_level(logging.INFO, logger="smalgo.metrics"):
        model = pca.ALGORITHM.train(parse(feature_dim=10, num_components=2), InMemoryData({"train": X, "test": X_test}))
    centered = X_test.astype(np.float64) - model.mean
    V = model.components.astype(np.float64)
    expected = np.mean(np.sum((centered - centered @ V @ V.T) ** 2, axis=1))
    logged = float(
        re.search(r"#quality_metric: host=\S+, test reconstruction_error <loss>=(\S+)", caplog.text).group(1)
    )
    assert logged == pytest.approx(expected, rel=1e-4)
    train_centered = X.astype(np.float64) - X.astype(np.float64).mean(axis=0)
    train_expected = np.mean(np.sum((train_centered - train_centered @ V @ V.T) ** 2, axis=1))
    train_logged = float(re.search(r"train reconstruction_error <loss>=(\S+)", caplog.text).group(1))
    assert train_logged == pytest.approx(train_expected, rel=1e-4)
    assert re.search(r"#throughput_metric: host=\S+, train throughput=\S+ records/second", caplog.text)


def test_empty_train_channel_is_a_user_error():
    with pytest.raises(UserError, match="no records"):
        train(np.zeros((0, 4), np.float32), num_components=2)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_values_whose_squares_overflow_are_a_user_error(mode):
    # Finite, but their float32 products are not: eigh then raised LinAlgError (an "internal error").
    X = low_rank_data(200, 30, [5.0, 3.0], noise=0.1)
    X[:10] = 1e38
    with pytest.raises(UserError, match="too large for PCA"):
        train(X, num_components=2, algorithm_mode=mode, extra_components=2)


# --------------------------------------------------------------------------- the model


def test_predict_accepts_csr_batches():
    X = low_rank_data(200, 15, [9.0, 4.0], noise=0.3)
    model = train(X, num_components=2)
    X[np.abs(X) < 2] = 0.0
    dense = model.predict(Batch(X))["projection"]
    sparse = model.predict(Batch(sp.csr_matrix(X)))["projection"]
    assert sparse.dtype == np.float32 and sparse.shape == (200, 2)
    np.testing.assert_allclose(sparse, dense, rtol=1e-4, atol=1e-4)


def test_predict_with_the_wrong_width_is_a_user_error():
    X = low_rank_data(100, 50, [4.0], noise=0.3)
    model = train(X, num_components=1)
    with pytest.raises(UserError, match="expected 50 features, got 49"):
        model.predict(Batch(np.ascontiguousarray(X[:, :49])))


@pytest.mark.parametrize("subtract_mean", ["true", "false"])
def test_save_load_round_trip(tmp_path, subtract_mean):
    X = low_rank_data(300, 8, [9.0, 4.0, 1.0], noise=0.3)
    model = train(X, num_components=3, subtract_mean=subtract_mean)
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["algorithm"] == "pca" and meta["format_version"] == pca._pca.FORMAT_VERSION
    assert meta["component_order"] == "ascending" and meta["n_rows"] == 300
    assert (tmp_path / "mean.npy").exists() == (subtract_mean == "true")
    loaded = pca.ALGORITHM.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(Batch(X))["projection"], model.predict(Batch(X))["projection"])
    np.testing.assert_array_equal(loaded.singular_values, model.singular_values)


def test_loading_a_kmeans_model_is_a_user_error(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"algorithm": "kmeans", "format_version": 1}))
    with pytest.raises(UserError, match="not a pca model"):
        pca.ALGORITHM.load(tmp_path)


def test_module_contract():
    assert pca.ALGORITHM.name == "pca"
    assert pca.ALGORITHM.default_content_type == "application/x-recordio-protobuf"
    assert pca.ALGORITHM.content_types == ("application/x-recordio-protobuf", "text/csv")
    assert pca.ALGORITHM.channels == {"train": True, "test": False}


def test_without_threadpoolctl_the_result_is_the_same(monkeypatch):
    from smalgo.algorithms.runtime import threads as row_threads

    X = low_rank_data(30_000, 40, [30.0, 20.0, 10.0], noise=0.2)  # enough work for helper threads
    threaded = train(X, num_components=3, mini_batch_size=5000)
    monkeypatch.setattr(row_threads, "_blas_controller", None)
    monkeypatch.setattr(row_threads, "_blas_controller_ready", True)
    single = train(X, num_components=3, mini_batch_size=5000)
    np.testing.assert_allclose(single.components, threaded.components, atol=1e-5)
    np.testing.assert_allclose(single.singular_values, threaded.singular_values, rtol=1e-5)
