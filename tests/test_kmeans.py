"""K-means: hyperparameters, training behaviour, predictions, persistence, metric lines."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import CountingData

from smalgo.algorithms import kmeans
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData, TrainingData
from smalgo.algorithms.errors import UserError

# What the SageMaker Python SDK's KMeans estimator sends (values as strings).
SDK_HYPERPARAMETERS = {
    "k": "10",
    "feature_dim": "50",
    "force_dense": "True",
    "mini_batch_size": "5000",
    "init_method": "kmeans++",
    "local_lloyd_max_iter": "300",
    "local_lloyd_tol": "0.0001",
    "local_lloyd_num_trials": "auto",
    "local_lloyd_init_method": "kmeans++",
    "half_life_time_size": "0",
    "epochs": "1",
    "extra_center_factor": "auto",
    "eval_metrics": '["msd", "ssd"]',
}


def blobs(n_per_cluster: int, centers: np.ndarray, std: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    k, d = centers.shape
    labels = np.repeat(np.arange(k), n_per_cluster)
    X = centers[labels] + std * rng.standard_normal((labels.size, d))
    order = rng.permutation(labels.size)
    return X[order].astype(np.float32), labels[order]


def separated_centers(k: int, d: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-20, 20, size=(k, d))


def parse(**raw) -> dict:
    return kmeans.ALGORITHM.hyperparameters.parse({key: str(value) for key, value in raw.items()})


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings group the rows identically (up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# --------------------------------------------------------------------------- hyperparameters


def test_sdk_hyperparameters_parse_unchanged():
    hp = kmeans.ALGORITHM.hyperparameters.parse(SDK_HYPERPARAMETERS)
    kmeans.ALGORITHM.validate(hp)
    assert hp["k"] == 10 and hp["feature_dim"] == 50 and hp["mini_batch_size"] == 5000
    assert hp["init_method"] == "kmeans++" and hp["local_lloyd_init_method"] == "kmeans++"
    assert hp["eval_metrics"] == ["msd", "ssd"]
    assert hp["extra_center_factor"] == "auto" and hp["local_lloyd_num_trials"] == "auto"
    assert hp["local_lloyd_tol"] == pytest.approx(1e-4) and hp["local_lloyd_max_iter"] == 300
    assert "force_dense" not in hp


def test_defaults_follow_the_documentation():
    hp = parse(k=3, feature_dim=2)
    assert hp["epochs"] == 1 and hp["mini_batch_size"] == 5000 and hp["eval_metrics"] == ["msd"]
    assert hp["init_method"] == "random" and hp["local_lloyd_init_method"] == "kmeans++"
    assert hp["half_life_time_size"] == 0 and hp["local_lloyd_max_iter"] == 300


@pytest.mark.parametrize(
    "raw",
    [
        {"feature_dim": "5"},
        {"feature_dim": "5", "k": "abc"},
        {"feature_dim": "5", "k": "0"},
        {"feature_dim": "5", "k": "-3"},
        {"feature_dim": "5", "k": "2.5"},
    ],
)
def test_bad_k_is_a_user_error_naming_k(raw):
    with pytest.raises(UserError, match=r"\bk\b"):
        kmeans.ALGORITHM.hyperparameters.parse(raw)


@pytest.mark.parametrize(
    "name, value",
    [
        ("init_method", "kmeans||"),
        ("local_lloyd_tol", "1.5"),
        ("eval_metrics", '["mse"]'),
        ("extra_center_factor", "0"),
        ("half_life_time_size", "-1"),
        ("mini_batch_size", "0"),
        ("local_lloyd_num_trials", "zero"),
    ],
)
def test_out_of_range_values_name_the_hyperparameter(name, value):
    with pytest.raises(UserError, match=name):
        kmeans.ALGORITHM.hyperparameters.parse({"k": "2", "feature_dim": "3", name: value})


def test_auto_values_resolve_as_documented():
    assert kmeans._kmeans.resolve_extra_center_factor(20, "auto") == 5
    assert kmeans._kmeans.resolve_extra_center_factor(1, "auto") == 4
    assert kmeans._kmeans.resolve_extra_center_factor(1000, "auto") == 9
    assert kmeans._kmeans.resolve_extra_center_factor(10_000, "auto") == 10
    assert kmeans._kmeans.resolve_extra_center_factor(20, 3) == 3
    assert kmeans._kmeans.resolve_num_trials("auto", n_centers=100, k=20, feature_dim=50) == 10
    assert kmeans._kmeans.resolve_num_trials("auto", n_centers=10_000, k=1_000, feature_dim=1_000) == 1
    assert kmeans._kmeans.resolve_num_trials(4, n_centers=10_000, k=1_000, feature_dim=1_000) == 4


def test_validate_refuses_centers_that_cannot_fit_in_memory():
    with pytest.raises(UserError, match="extra_center_factor"):
        kmeans.ALGORITHM.validate(parse(k=100_000, feature_dim=10_000))


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("init_method", ["random", "kmeans++"])
def test_recovers_well_separated_clusters(init_method):
    true_centers = separated_centers(6, 8)
    X, labels = blobs(300, true_centers, std=0.5)
    hp = parse(k=6, feature_dim=8, mini_batch_size=400, init_method=init_method)
    model = kmeans.ALGORITHM.train(hp, InMemoryData({"train": X}))
    predicted = model.predict(Batch(X))["closest_cluster"].astype(int)
    assert same_partition(predicted, labels)
    # Every learned center sits on a true one.
    gaps = np.linalg.norm(model.centers[:, None, :] - true_centers[None], axis=2).min(axis=1)
    assert gaps.max() < 0.2


def test_training_is_deterministic():
    X, _ = blobs(200, separated_centers(4, 5), std=1.0)
    hp = parse(k=4, feature_dim=5, mini_batch_size=100)
    first = kmeans.ALGORITHM.train(hp, InMemoryData({"train": X}))
    second = kmeans.ALGORITHM.train(hp, InMemoryData({"train": X}))
    np.testing.assert_array_equal(first.centers, second.centers)


def test_k_equal_one_gives_the_mean():
    X, _ = blobs(100, separated_centers(3, 4), std=1.0)
    model = kmeans.ALGORITHM.train(parse(k=1, feature_dim=4, mini_batch_size=64), InMemoryData({"train": X}))
    np.testing.assert_allclose(model.centers[0], X.mean(axis=0), rtol=1e-4, atol=1e-4)


def test_row_weights_count_as_repeated_rows():
    X = np.array([[0.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    weights = np.array([1.0, 2.0], dtype=np.float32)
    model = kmeans.ALGORITHM.train(parse(k=1, feature_dim=2), InMemoryData({"train": (X, None, weights)}))
    np.testing.assert_allclose(model.centers[0], [2.0, 0.0], atol=1e-6)


def test_more_streaming_centers_than_rows_in_the_first_batch():
    X, labels = blobs(50, separated_centers(3, 4), std=0.3)
    # K = 3 x 10 = 30 centers, mini-batches of 7 rows: the centers are seeded over several batches.
    hp = parse(k=3, feature_dim=4, mini_batch_size=7, extra_center_factor=10)
    model = kmeans.ALGORITHM.train(hp, InMemoryData({"train": X}))
    assert same_partition(model.predict(Batch(X))["closest_cluster"].astype(int), labels)


def test_duplicate_points_and_fewer_distinct_points_than_k():
    X = np.repeat(np.array([[1.0, 2.0], [5.0, 5.0]], dtype=np.float32), 50, axis=0)
    model = kmeans.ALGORITHM.train(parse(k=4, feature_dim=2, mini_batch_size=30), InMemoryData({"train": X}))
    assert model.centers.shape == (4, 2)
    out = model.predict(Batch(X))
    np.testing.assert_array_equal(out["distance_to_cluster"], 0.0)
    assert set(np.unique(out["closest_cluster"]).tolist()) <= set(range(4))
    assert len(np.unique(out["closest_cluster"])) == 2


def test_all_rows_identical():
    X = np.full((20, 3), 7.0, dtype=np.float32)
    model = kmeans.ALGORITHM.train(parse(k=2, feature_dim=3, init_method="kmeans++"), InMemoryData({"train": X}))
    np.testing.assert_array_equal(model.predict(Batch(X))["distance_to_cluster"], 0.0)


def test_data_far_from_the_origin_is_assigned_exactly():
    # float32 ||c||^2 - 2 x.c would lose these clusters 0.5 apart at an offset of 10,000.
    true_centers = 10_000.0 + separated_centers(3, 4) / 40
    X, labels = blobs(100, true_centers, std=0.01)
    model = kmeans.ALGORITHM.train(parse(k=3, feature_dim=4, mini_batch_size=100), InMemoryData({"train": X}))
    assert same_partition(model.predict(Batch(X))["closest_cluster"].astype(int), labels)


def test_half_life_lets_the_centers_follow_drifting_data():
    rng = np.random.default_rng(3)
    early = rng.normal(0.0, 0.1, size=(2000, 2))
    late = rng.normal(10.0, 0.1, size=(2000, 2))
    X = np.vstack([early, late]).astype(np.float32)
    remembering = kmeans.ALGORITHM.train(parse(k=1, feature_dim=2, mini_batch_size=100), InMemoryData({"train": X}))
    forgetting = kmeans.ALGORITHM.train(
        parse(k=1, feature_dim=2, mini_batch_size=100, half_life_time_size=100), InMemoryData({"train": X})
    )
    np.testing.assert_allclose(remembering.centers[0], [5.0, 5.0], atol=0.1)
    np.testing.assert_allclose(forgetting.centers[0], [10.0, 10.0], atol=0.1)


def test_each_epoch_is_one_pass_over_the_channel(caplog):
    X, _ = blobs(50, separated_centers(2, 3), std=1.0)
    data = CountingData({"train": X})
    with caplog.at_level(logging.INFO, logger="smalgo.metrics"):
        kmeans.ALGORITHM.train(parse(k=2, feature_dim=3, epochs=3, mini_batch_size=40), data)
    assert data.passes["train"] == 3
    epochs_logged = re.findall(r"#quality_metric: host=\S+, epoch=(\d+), train msd <loss>=\S+", caplog.text)
    assert epochs_logged == ["0", "1", "2"]
    assert "completed 100 % of epochs" in caplog.text
    assert re.search(r"#throughput_metric: host=\S+, train throughput=\S+ records/second", caplog.text)


def test_sparse_training_matches_dense_training():
    X, labels = blobs(150, separated_centers(4, 12), std=0.5)
    X[np.abs(X) < 8] = 0.0  # make it genuinely sparse
    hp = parse(k=4, feature_dim=12, mini_batch_size=128, init_method="kmeans++")
    dense = kmeans.ALGORITHM.train(hp, InMemoryData({"train": X}))
    sparse = kmeans.ALGORITHM.train(hp, InMemoryData({"train": sp.csr_matrix(X)}))
    np.testing.assert_allclose(sparse.centers, dense.centers, rtol=1e-4, atol=1e-4)


def test_empty_train_channel_is_a_user_error():
    with pytest.raises(UserError, match="no records"):
        kmeans.ALGORITHM.train(parse(k=2, feature_dim=3), InMemoryData({"train": np.zeros((0, 3), np.float32)}))


# --------------------------------------------------------------------------- test channel metrics


def test_test_channel_is_scored_with_each_eval_metric(caplog):
    true_centers = separated_centers(3, 5)
    X, _ = blobs(200, true_centers, std=1.0, seed=0)
    X_test, _ = blobs(50, true_centers, std=1.0, seed=9)
    hp = parse(k=3, feature_dim=5, mini_batch_size=100, eval_metrics='["msd", "ssd"]')
    with caplog.at_level(logging.INFO, logger="smalgo.metrics"):
        model = kmeans.ALGORITHM.train(hp, InMemoryData({"train": X, "test": X_test}))
    squared = model.predict(Batch(X_test))["distance_to_cluster"].astype(np.float64) ** 2
    msd = float(re.search(r"#quality_metric: host=\S+, test msd <loss>=(\S+)", caplog.text).group(1))
    ssd = float(re.search(r"#quality_metric: host=\S+, test ssd <loss>=(\S+)", caplog.text).group(1))
    assert msd == pytest.approx(squared.mean(), rel=1e-5)
    assert ssd == pytest.approx(squared.sum(), rel=1e-5)


def test_only_the_requested_eval_metrics_are_logged(caplog):
    X, _ = blobs(50, separated_centers(2, 3), std=1.0)
    with caplog.at_level(logging.INFO, logger="smalgo.metrics"):
        kmeans.ALGORITHM.train(parse(k=2, feature_dim=3, eval_metrics='["ssd"]'), InMemoryData({"train": X, "test": X}))
    assert "test ssd <loss>=" in caplog.text and "test msd" not in caplog.text


# The regexes the platform reads these lines with (spec 1.11, 4.2): train:msd, test:msd, test:ssd.
PLATFORM_REGEXES = {
    "train:msd": r"#quality_metric: host=\S+, train msd <loss>=(\S+)",
    "test:msd": r"#quality_metric: host=\S+, test msd <loss>=(\S+)",
    "test:ssd": r"#quality_metric: host=\S+, test ssd <loss>=(\S+)",
}


def test_a_final_train_msd_line_the_platform_regex_reads(caplog):
    X, _ = blobs(50, separated_centers(2, 3), std=1.0)
    with caplog.at_level(logging.INFO, logger="smalgo.metrics"):
        kmeans.ALGORITHM.train(parse(k=2, feature_dim=3, epochs=2), InMemoryData({"train": X}))
    per_epoch = re.findall(r"epoch=1, train msd <loss>=(\S+)", caplog.text)
    final = re.findall(PLATFORM_REGEXES["train:msd"], caplog.text)
    assert final == per_epoch  # the last pass's value, on a line without epoch=


@pytest.mark.parametrize("objective", ["test:msd", "test:ssd"])
def test_the_tuning_objective_is_printed_even_when_eval_metrics_leaves_it_out(caplog, objective):
    X, _ = blobs(50, separated_centers(2, 3), std=1.0)
    others = {"test:msd": "ssd", "test:ssd": "msd"}
    hp = kmeans.ALGORITHM.hyperparameters.parse(
        {
            "k": "2",
            "feature_dim": "3",
            "eval_metrics": f'["{others[objective]}"]',
            "_tuning_objective_metric": objective,
        }
    )
    with caplog.at_level(logging.INFO, logger="smalgo.metrics"):
        kmeans.ALGORITHM.train(hp, InMemoryData({"train": X, "test": X}))
    assert re.search(PLATFORM_REGEXES[objective], caplog.text)


def test_an_objective_on_a_missing_channel_is_warned_about_at_the_start(caplog):
    X, _ = blobs(50, separated_centers(2, 3), std=1.0)
    hp = kmeans.ALGORITHM.hyperparameters.parse({"k": "2", "feature_dim": "3", "_tuning_objective_metric": "test:msd"})
    with caplog.at_level(logging.INFO):
        kmeans.ALGORITHM.train(hp, InMemoryData({"train": X}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "The tuning objective test:msd is measured on the test channel, which this job does not have" in w
        for w in warnings
    )
    assert caplog.text.index("The tuning objective") < caplog.text.index("#quality_metric")


# --------------------------------------------------------------------------- the model


def small_model(k: int = 3, d: int = 6) -> tuple[kmeans._kmeans.KMeansModel, np.ndarray]:
    X, _ = blobs(80, separated_centers(k, d), std=1.0)
    return kmeans.ALGORITHM.train(parse(k=k, feature_dim=d, mini_batch_size=100), InMemoryData({"train": X})), X


def test_predict_outputs_and_dtypes():
    model, X = small_model()
    out = model.predict(Batch(X))
    assert set(out) == {"closest_cluster", "distance_to_cluster"}
    for values in out.values():
        assert values.dtype == np.float32 and values.shape == (X.shape[0],)
    distances = np.linalg.norm(X[:, None, :].astype(np.float64) - model.centers[None].astype(np.float64), axis=2)
    np.testing.assert_array_equal(out["closest_cluster"], distances.argmin(axis=1))
    np.testing.assert_allclose(out["distance_to_cluster"], distances.min(axis=1), rtol=1e-5)


def test_predict_accepts_csr_batches():
    model, X = small_model()
    X[np.abs(X) < 5] = 0.0
    dense = model.predict(Batch(X))
    sparse = model.predict(Batch(sp.csr_matrix(X)))
    np.testing.assert_array_equal(sparse["closest_cluster"], dense["closest_cluster"])
    np.testing.assert_allclose(sparse["distance_to_cluster"], dense["distance_to_cluster"], rtol=1e-5)


def test_predict_with_the_wrong_width_is_a_user_error():
    model, X = small_model(d=6)
    with pytest.raises(UserError, match="expected 6 features, got 5"):
        model.predict(Batch(X[:, :5].copy()))


def test_save_load_round_trip(tmp_path):
    model, X = small_model()
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["algorithm"] == "kmeans" and meta["format_version"] == kmeans._kmeans.FORMAT_VERSION
    assert meta["hyperparameters"]["k"] == 3
    loaded = kmeans.ALGORITHM.load(tmp_path)
    before, after = model.predict(Batch(X)), loaded.predict(Batch(X))
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    np.load(tmp_path / "centers.npy", allow_pickle=False)  # plain arrays, no pickle


def test_loading_another_algorithms_model_is_a_user_error(tmp_path):
    model, _ = small_model()
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["algorithm"] = "pca"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not a kmeans model"):
        kmeans.ALGORITHM.load(tmp_path)
    with pytest.raises(UserError, match="missing"):
        kmeans.ALGORITHM.load(tmp_path / "nothing-here")


def test_module_contract():
    assert kmeans.ALGORITHM.name == "kmeans"
    assert kmeans.ALGORITHM.default_content_type == "application/x-recordio-protobuf"
    assert kmeans.ALGORITHM.content_types == ("application/x-recordio-protobuf", "text/csv")
    assert kmeans.ALGORITHM.channels == {"train": True, "test": False}


# --------------------------------------------------------------------------- InMemoryData


def test_in_memory_data_streams_batches_and_checks_the_width():
    X = np.arange(30, dtype=np.float64).reshape(10, 3)
    y = np.arange(10)
    data = InMemoryData({"train": (X, y), "sparse": sp.coo_matrix(X)})
    assert isinstance(data, TrainingData)
    assert data.has_channel("train") and not data.has_channel("test")
    batches = list(data.batches("train", 4, feature_dim=3))
    assert [b.n_rows for b in batches] == [4, 4, 2]
    assert all(b.X.dtype == np.float32 and b.X.flags.c_contiguous for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.y for b in batches]), y)
    sparse_batches = list(data.batches("sparse", 6))
    assert all(sp.isspmatrix_csr(b.X) and b.X.dtype == np.float32 for b in sparse_batches)
    with pytest.raises(UserError, match="expected 4"):
        data.batches("train", 4, feature_dim=4)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("blas", [True, False])
def test_assignment_paths_agree_with_a_direct_computation(monkeypatch, blas):
    from smalgo.algorithms.runtime import threads as row_threads

    if not blas:  # as without threadpoolctl: the numba kernel only
        monkeypatch.setattr(row_threads, "_blas_controller", None)
        monkeypatch.setattr(row_threads, "_blas_controller_ready", True)
    else:
        assert row_threads.blas_controller() is not None  # threadpoolctl is a dependency
    rng = np.random.default_rng(11)
    X = (rng.standard_normal((20_000, 20)) * 3 + 50).astype(np.float32)  # enough work for threads
    centers = (rng.standard_normal((60, 20)) * 3 + 50).astype(np.float32)
    labels, sq_distances = kmeans._kmeans._CenterTable(centers, X[:100].mean(axis=0)).nearest(X)
    X64 = X.astype(np.float64)
    exact = np.stack([((X64 - center) ** 2).sum(axis=1) for center in centers.astype(np.float64)], axis=1)
    np.testing.assert_array_equal(labels, exact.argmin(axis=1))
    np.testing.assert_allclose(sq_distances, exact.min(axis=1), rtol=1e-9)


def test_a_pool_replaced_by_a_larger_one_still_runs_work(monkeypatch):
    # Two threads of a server: one got the pool, the other grew it before the first submitted.
    from smalgo.recordio import parallel

    monkeypatch.setattr(parallel, "_pool", None)
    small = parallel.shared_pool(1)
    large = parallel.shared_pool(small._max_workers + 2)
    assert large is not small and large._max_workers == small._max_workers + 2
    assert small.submit(lambda: 42).result(timeout=10) == 42  # was RuntimeError: shut down
    assert parallel.shared_pool(1) is large


def test_the_pool_works_in_a_forked_child():
    """A gunicorn worker is a fork of a process that may already have used the pool: it inherits
    the pool object but not its threads, and would wait on them forever."""
    import os

    from smalgo.recordio import parallel

    assert parallel.shared_pool(2).submit(lambda: 1).result(timeout=10) == 1  # used before the fork
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never return into pytest
        try:
            ok = parallel.shared_pool(2).submit(lambda: 7).result(timeout=10) == 7
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
