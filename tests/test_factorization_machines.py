"""Factorization machines (algorithms/factorization_machines): the kernels against the model's
definition, the optimizer step against MXNet's AdaGrad written out in numpy, the hyperparameters
(defaults, init-method conflicts, the SDK v2 estimator's maps), learning (beats Ridge on one-hot
features, binary metrics, sparse = dense, rows over threads), the job (RecordIO File and Pipe
mode, empty rows, a feature index beyond feature_dim, a CSV channel, bad labels), the model files
(top-N recommendations with numpy alone) and serving (sparse JSON instances, the SDK's
FactorizationMachinesPredictor)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_user_failure

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.factorization_machines import ALGORITHM as FM
from smalgo.algorithms.factorization_machines import _fm
from smalgo.algorithms.factorization_machines import _kernels as kernels
from smalgo.algorithms.runtime import threads as threads_module
from smalgo.containers.job import run_training
from smalgo.recordio import record_pb2, write_dense, write_sparse
from smalgo.recordio.framing import frame

SDK_HYPERPARAMETERS = Path(__file__).resolve().parent / "data" / "sdk_v2_hyperparameters"
RECORDIO = "application/x-recordio-protobuf"


def parse(**values) -> dict:
    hp = FM.hyperparameters.parse({k: str(v) for k, v in values.items()})
    FM.validate(hp)
    return hp


def train(channels: dict, **values):
    return FM.train(parse(**values), InMemoryData(channels))


def direct_outputs(X: np.ndarray, w0: float, w: np.ndarray, V: np.ndarray) -> np.ndarray:
    """y = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j by the definition, O(k d^2) a row."""
    n, d = X.shape
    out = np.full(n, w0, np.float64)
    for r in range(n):
        out[r] += X[r] @ w
        for i in range(d):
            for j in range(i + 1, d):
                out[r] += (V[i] @ V[j]) * X[r, i] * X[r, j]
    return out


def recommender_data(n: int, levels: int = 100, numeric: int = 3, rank: int = 4, seed: int = 0):
    """One-hot user and item fields plus numeric columns; label = rank-`rank` user x item
    interaction + 0.5 x numeric column 0 (if any) + N(0, 0.1^2). Returns (CSR X, y, interaction)."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, levels, n), rng.integers(0, levels, n)
    spread = rank**-0.25
    U, W = rng.normal(0, spread, (levels, rank)), rng.normal(0, spread, (levels, rank))
    Z = rng.normal(0, 1, (n, numeric)).astype(np.float32)
    interaction = np.einsum("ij,ij->i", U[users], W[items])
    y = interaction + (0.5 * Z[:, 0] if numeric else 0.0) + rng.normal(0, 0.1, n)
    columns = np.column_stack([users, levels + items, 2 * levels + np.tile(np.arange(numeric), (n, 1))])
    values = np.column_stack([np.ones((n, 2), np.float32), Z])
    indptr = np.arange(0, n * (2 + numeric) + 1, 2 + numeric)
    X = sp.csr_matrix((values.ravel(), columns.ravel(), indptr), shape=(n, 2 * levels + numeric), dtype=np.float32)
    return X, y.astype(np.float32), interaction


def train_binary(X, signal, **settings):
    """A binary classifier of label = signal > 0."""
    y = (signal > 0).astype(np.float32)
    return train({"train": (X, y)}, feature_dim=X.shape[1], predictor_type="binary_classifier", **settings)


FAST = {"num_factors": 4, "epochs": 6, "bias_lr": 0.1, "linear_lr": 0.1, "factors_lr": 0.1}
FAST_INIT = {"factors_init_sigma": 0.1, "linear_wd": 0, "factors_wd": 0}


# --------------------------------------------------------------------------- the kernels


@pytest.mark.parametrize("density", [1.0, 0.3], ids=["dense", "sparse"])
def test_the_o_k_nnz_kernel_equals_the_direct_pairwise_formula(density):
    rng = np.random.default_rng(1)
    d, k = 12, 5
    X = rng.normal(size=(40, d)).astype(np.float32) * (rng.random((40, d)) < density)
    X[3] = 0.0  # a row without non-zeros: w0 alone
    w0, w, V = np.float32(0.3), rng.normal(size=d).astype(np.float32), rng.normal(size=(d, k)).astype(np.float32)
    model = _fm.FactorizationMachinesModel(
        parse(feature_dim=d, num_factors=k, predictor_type="regressor"), w0=w0, w=w, V=V
    )
    expected = direct_outputs(X.astype(np.float64), 0.3, w.astype(np.float64), V.astype(np.float64))
    for given in (X, sp.csr_matrix(X)):
        np.testing.assert_allclose(model.raw_outputs(given), expected, rtol=2e-5, atol=2e-5)
    assert model.raw_outputs(X)[3] == np.float32(0.3)


def test_the_gradient_table_is_the_derivative_of_the_direct_loss():
    """accumulate_rows's gradient of sum_i r_i (y_i - yhat_i)^2 / 2, against central differences
    of the O(k d^2) definition, for every weight of every touched feature and for w0."""
    rng = np.random.default_rng(2)
    d, k, n = 6, 3, 8
    X = sp.random(n, d, density=0.5, format="csr", dtype=np.float32, random_state=2)
    X.data[:] = rng.normal(size=X.nnz).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    r = rng.uniform(0.5, 2.0, n).astype(np.float32)
    w0, w, V = 0.2, rng.normal(size=d), rng.normal(size=(d, k))
    slots, touched = np.full(d, -1, np.int32), np.zeros(X.nnz, np.int64)
    count = kernels.assign_slots(X.indices, 0, X.nnz, slots, touched)
    table, totals = np.zeros((count, k + 1), np.float32), np.zeros(3)
    kernels.accumulate_rows(
        X.indptr, X.indices, X.data, y, r, kernels.SQUARED, np.float32(w0), w.astype(np.float32),
        V.astype(np.float32), slots, 0, n, np.empty((n, k), np.float32), table, totals,
    )  # fmt: skip
    dense = X.toarray().astype(np.float64)

    def loss(w0_, w_, V_):
        return 0.5 * np.sum(r * (direct_outputs(dense, w0_, w_, V_) - y) ** 2)

    h = 1e-5
    for t in range(count):
        j = touched[t]
        for f in range(k + 1):
            plus, minus = (w.copy(), V.copy()), (w.copy(), V.copy())
            if f == k:
                plus[0][j] += h
                minus[0][j] -= h
            else:
                plus[1][j, f] += h
                minus[1][j, f] -= h
            numeric = (loss(w0, *plus) - loss(w0, *minus)) / (2 * h)
            assert table[t, f] == pytest.approx(numeric, rel=1e-3, abs=1e-4), (j, f)
    assert totals[0] == pytest.approx((loss(w0 + h, w, V) - loss(w0 - h, w, V)) / (2 * h), rel=1e-3)
    assert totals[2] == pytest.approx(r.sum())
    assert set(touched[:count]) == set(X.indices)
    assert (slots[touched[:count]] >= 0).all()


def numpy_adagrad_step(state, X: np.ndarray, y: np.ndarray, *, rescale, clip, eps):
    """MXNet's AdaGrad on the batch's mean-or-rescaled gradient, touched features only, in numpy:
    g = rescale * grad, clipped; h += g^2; p -= lr (g / sqrt(h + eps) + wd p)."""
    w0, w, V = state.w0.astype(np.float64), state.w.astype(np.float64), state.V.astype(np.float64)
    h0, hw, hV = state.h0.astype(np.float64), state.hw.astype(np.float64), state.hV.astype(np.float64)
    S = X @ V
    yhat = w0[0] + X @ w + 0.5 * np.sum(S**2 - (X**2) @ (V**2), axis=1)
    slope = yhat - y
    grad_w0 = slope.sum()
    grad_w = X.T @ slope
    grad_V = X.T @ (slope[:, None] * S) - V * ((X**2).T @ slope)[:, None]
    scale = rescale if rescale is not None else 1.0 / len(y)
    lrs, wds = state.lrs.astype(np.float64), state.wds.astype(np.float64)

    def step(p, h, g, group):
        g = g * scale
        if clip is not None:
            g = np.clip(g, -clip, clip)
        h = h + g * g
        return p - lrs[group] * (g / np.sqrt(h + eps) + wds[group] * p), h

    touched = np.flatnonzero((X != 0).any(axis=0))
    w0, h0 = step(w0, h0, grad_w0, kernels.BIAS)
    w[touched], hw[touched] = step(w[touched], hw[touched], grad_w[touched], kernels.LINEAR)
    V[touched], hV[touched] = step(V[touched], hV[touched], grad_V[touched], kernels.FACTORS)
    return w0, w, V, hw


@pytest.mark.parametrize(
    "options",
    [{}, {"rescale_grad": 0.05, "clip_gradient": 0.02, "eps": 0.001}],
    ids=["defaults", "rescale_clip_eps"],
)
def test_one_step_is_mxnet_adagrad_on_the_touched_features_only(options):
    rng = np.random.default_rng(3)
    d, k, n = 10, 3, 20
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, 7:] = 0.0  # features 7-9 untouched: no step, no weight decay
    y = rng.normal(size=n).astype(np.float32)
    hp = parse(
        feature_dim=d, num_factors=k, predictor_type="regressor", factors_init_sigma=0.5, linear_wd=0.1,
        factors_wd=0.2, bias_wd=0.05, linear_lr=0.3, factors_lr=0.2, **options,
    )  # fmt: skip
    state = FM.start(hp)
    state.w[:] = rng.normal(size=d)
    state.hw[:] = rng.uniform(0, 1, d)  # an accumulator that already has a history
    before_w, before_V = state.w.copy(), state.V.copy()
    expected = numpy_adagrad_step(
        state, X.astype(np.float64), y.astype(np.float64), rescale=options.get("rescale_grad"),
        clip=options.get("clip_gradient"), eps=options.get("eps", _fm.DEFAULT_EPS),
    )  # fmt: skip
    state.update(Batch(X, y))
    np.testing.assert_allclose(state.w0, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.w, expected[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state.V, expected[2], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state.hw, expected[3], rtol=1e-4, atol=1e-8)
    np.testing.assert_array_equal(state.w[7:], before_w[7:])
    np.testing.assert_array_equal(state.V[7:], before_V[7:])
    assert not np.allclose(state.w[:7], before_w[:7])


# --------------------------------------------------------------------------- hyperparameters


def test_defaults_as_documented():
    hp = parse(feature_dim=10, num_factors=4, predictor_type="regressor")
    assert {name: hp[name] for name in ("epochs", "mini_batch_size", "clip_gradient", "eps", "rescale_grad")} == {
        "epochs": 1,
        "mini_batch_size": 1000,
        "clip_gradient": None,
        "eps": None,
        "rescale_grad": None,
    }
    for group, lr, wd, sigma in (
        ("bias", 0.1, 0.01, 0.01),
        ("linear", 0.001, 0.001, 0.01),
        ("factors", 1e-4, 1e-5, 1e-3),
    ):
        assert (hp[f"{group}_lr"], hp[f"{group}_wd"], hp[f"{group}_init_method"]) == (lr, wd, "normal")
        assert hp[f"{group}_init_scale"] is hp[f"{group}_init_value"] is None
        assert _fm.DEFAULT_SIGMA[group] == sigma
    # The documented default sigma is what unset means: the initial factors' spread.
    state = FM.start(parse(feature_dim=20_000, num_factors=8, predictor_type="regressor"))
    assert np.std(state.V) == pytest.approx(0.001, rel=0.02)
    assert np.std(state.w) == pytest.approx(0.01, rel=0.02)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"factors_init_scale": 0.1}, "Hyperparameter factors_init_scale is given, but factors_init_method is normal"),
        (
            {"bias_init_method": "uniform", "bias_init_scale": 0.1, "bias_init_sigma": 0.1},
            "Hyperparameter bias_init_sigma is given, but bias_init_method is uniform",
        ),
        (
            {"linear_init_method": "constant", "linear_init_value": 1, "linear_init_scale": 0.1},
            "Hyperparameter linear_init_scale is given, but linear_init_method is constant",
        ),
        ({"factors_init_value": 0.5}, "factors_init_value applies to factors_init_method constant only"),
        ({"bias_init_method": "uniform"}, "Hyperparameter bias_init_method is uniform, which needs bias_init_scale"),
        ({"linear_init_method": "constant"}, "linear_init_method is constant, which needs linear_init_value"),
        ({"num_factors": 0}, "Hyperparameter num_factors: invalid value '0'"),
        ({"predictor_type": "multiclass_classifier"}, "Hyperparameter predictor_type: invalid value"),
        ({"factors_lr": -1}, "Hyperparameter factors_lr: invalid value '-1'"),
        ({"bias_init_method": "xavier"}, "Hyperparameter bias_init_method: invalid value 'xavier'"),
        ({"feature_dim": 1 << 26, "num_factors": 8}, "factor values is more than"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_them(values, message):
    with pytest.raises(UserError, match=message):
        parse(**{"feature_dim": 10, "num_factors": 4, "predictor_type": "regressor", **values})


def test_required_hyperparameters():
    with pytest.raises(
        UserError, match="Missing required hyperparameters: feature_dim .*; num_factors .*; predictor_type"
    ):
        FM.hyperparameters.parse({})


@pytest.mark.parametrize(
    ("method", "options", "check", "bias_check"),
    [
        ("constant", {"init_value": 0.25}, lambda a: (a == np.float32(0.25)).all(), lambda b: b == np.float32(0.25)),
        ("uniform", {"init_scale": 0.5}, lambda a: (np.abs(a) <= 0.5).all() and a.std() > 0.2, lambda b: abs(b) <= 0.5),
        ("normal", {"init_sigma": 2.0}, lambda a: 1.8 < a.std() < 2.2, lambda b: b != 0.0),
    ],
)
def test_each_init_method_sets_the_initial_weights(method, options, check, bias_check):
    values = {"feature_dim": 500, "num_factors": 4, "predictor_type": "regressor"}
    for group in _fm.GROUPS:
        values[f"{group}_init_method"] = method
        values.update({f"{group}_{name}": value for name, value in options.items()})
    state = FM.start(parse(**values))
    assert check(state.w) and check(state.V) and bias_check(state.w0[0])


def test_sdk_v2_estimator_hyperparameters_train_unchanged(make_job, caplog):
    """The exact maps the SageMaker Python SDK v2 FactorizationMachines(...) estimator sends
    (benchmarks/recordio/capture_sdk_hyperparameters.py), on sparse RecordIO with a test channel."""
    fixtures = sorted(SDK_HYPERPARAMETERS.glob("factorization_machines_*.json"))
    assert {p.stem for p in fixtures} >= {
        f"factorization_machines_{kind}" for kind in ("binary", "regressor", "explicit")
    }
    for fixture in fixtures:
        hyperparameters = json.loads(fixture.read_text())
        assert all(isinstance(v, str) for v in hyperparameters.values())
        d = int(hyperparameters["feature_dim"])
        X, y, interaction = recommender_data(1200, levels=(d - 3) // 2)
        if hyperparameters["predictor_type"] == "binary_classifier":
            y = (interaction > 0).astype(np.float32)
        job = make_job()
        job.write_config("hyperparameters.json", hyperparameters)
        job.channel("train", RECORDIO, files={"matrix_0.pbr": sparse_recordio(X, y)})
        job.channel("test", RECORDIO, files={"matrix_0.pbr": sparse_recordio(X[:200], y[:200])})
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="smalgo"):
            assert run_training(job.paths, "factorization-machines") == 0, f"{fixture.name}: {job.failure()}"
        FM.load(job.paths.model_dir)
        metric = "rmse" if hyperparameters["predictor_type"] == "regressor" else "binary_classification_accuracy"
        assert f"#quality_metric: host=algo-1, test {metric} <" in caplog.text, fixture.name


# --------------------------------------------------------------------------- learning


def test_beats_ridge_on_the_one_hot_features_by_a_wide_margin():
    from sklearn.linear_model import Ridge

    X, y, _ = recommender_data(30_000, levels=100)
    cut = 27_000
    model = train(
        {"train": (X[:cut], y[:cut])}, feature_dim=X.shape[1], predictor_type="regressor", **FAST, **FAST_INIT
    )
    ours = float(np.sqrt(np.mean((model.predict(Batch(X[cut:]))["score"] - y[cut:]) ** 2)))
    one_hot = X[:, :200]
    ridge = Ridge(alpha=1.0).fit(one_hot[:cut], y[:cut])
    theirs = float(np.sqrt(np.mean((ridge.predict(one_hot[cut:]) - y[cut:]) ** 2)))
    assert theirs > 0.9  # the interaction is most of the label's variance: no linear model sees it
    assert ours < 0.4 * theirs, (ours, theirs)


def test_binary_classifier_reports_the_spec_metrics_and_labels_from_one_half(caplog):
    X, _, interaction = recommender_data(20_000, levels=60)
    y = (interaction > 0).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="smalgo"):
        model = train(
            {"train": (X[:18_000], y[:18_000]), "test": (X[18_000:], y[18_000:])},
            feature_dim=X.shape[1],
            predictor_type="binary_classifier",
            **FAST,
            **FAST_INIT,
        )
    lines = [line for line in caplog.messages if line.startswith("#quality_metric")]
    assert [line.split(", ")[-1].split(" <")[0] for line in lines if "test" in line] == [
        "test binary_classification_accuracy",
        "test binary_classification_cross_entropy",
        "test binary_f_beta",
    ]
    for epoch in range(6):
        assert any(f"epoch={epoch}, train binary_classification_cross_entropy <loss>=" in line for line in lines)
    accuracy = float(next(line for line in lines if "test binary_classification_accuracy" in line).split("=")[-1])
    assert accuracy > 0.8
    out = model.predict(Batch(X[18_000:]))
    np.testing.assert_array_equal(out["predicted_label"], (out["score"] >= 0.5).astype(np.float32))
    # A score of exactly 0.5 (every weight 0) is a positive prediction.
    zero = _fm.FactorizationMachinesModel(model.hp, w0=np.zeros(1), w=np.zeros(X.shape[1]), V=np.zeros((X.shape[1], 4)))
    out = zero.predict(Batch(X[:3]))
    assert out["score"].tolist() == [0.5] * 3 and out["predicted_label"].tolist() == [1.0] * 3


def test_regressor_reports_train_rmse_each_epoch_and_test_rmse(caplog):
    X, y, _ = recommender_data(3000, levels=30)
    with caplog.at_level(logging.INFO, logger="smalgo"):
        model = train(
            {"train": (X, y), "test": (X[:500], y[:500])}, feature_dim=X.shape[1], predictor_type="regressor",
            num_factors=3, epochs=3, mini_batch_size=200,
        )  # fmt: skip
    assert set(model.predict(Batch(X[:2]))) == {"score"}
    train_rmse = [float(m.split("=")[-1]) for m in caplog.messages if "train rmse <loss>=" in m]
    assert len(train_rmse) == 3 and train_rmse[2] < train_rmse[0]
    test_rmse = float(next(m for m in caplog.messages if "test rmse <loss>=" in m).split("=")[-1])
    expected = np.sqrt(np.mean((model.predict(Batch(X[:500]))["score"] - y[:500]) ** 2))
    assert test_rmse == pytest.approx(expected, rel=1e-5)


def test_dense_batches_train_the_model_of_their_sparse_form():
    X, y, _ = recommender_data(1000, levels=20)
    settings = dict(feature_dim=X.shape[1], predictor_type="regressor", mini_batch_size=100, **FAST)
    sparse = train({"train": (X, y)}, **settings)
    dense = train({"train": (X.toarray(), y)}, **settings)
    np.testing.assert_array_equal(dense.V, sparse.V)
    np.testing.assert_array_equal(dense.w, sparse.w)


def test_rows_over_threads_give_the_model_of_one_thread(monkeypatch):
    """A batch's rows split over threads, each thread with a gradient table of its own: the
    step of one thread up to the order of the sums."""
    import numba

    X, y, _ = recommender_data(4000, levels=30)
    settings = dict(feature_dim=X.shape[1], predictor_type="regressor", mini_batch_size=2000, **FAST)
    one = train({"train": (X, y)}, **settings)
    monkeypatch.setattr(threads_module, "MIN_THREADED_WORK", 0)
    calls = []
    real = kernels.accumulate_rows

    def counting(*args):
        calls.append(args[11] - args[10])  # stop - start
        return real(*args)

    monkeypatch.setattr(kernels, "accumulate_rows", counting)
    previous = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        split = train({"train": (X, y)}, **settings)
    finally:
        numba.set_num_threads(previous)
    if numba.config.NUMBA_NUM_THREADS > 1:
        assert max(calls) < 2000  # the rows of a batch were split
    np.testing.assert_allclose(split.V, one.V, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(split.w0, one.w0, rtol=1e-4, atol=1e-5)


def test_a_job_that_diverges_fails_saying_so():
    X, y, _ = recommender_data(500, levels=10)
    with pytest.raises(UserError, match="Training diverged"):
        train(
            {"train": (X, y * 1e30)},
            feature_dim=X.shape[1],
            predictor_type="regressor",
            num_factors=2,
            factors_lr=1e30,
            mini_batch_size=100,
        )


# --------------------------------------------------------------------------- the job


def sparse_recordio(X, y=None) -> bytes:
    buffer = io.BytesIO()
    write_sparse(buffer, sp.csr_matrix(X), y)
    return buffer.getvalue()


def record(keys, values, shape, label) -> bytes:
    """One RecordIO record of a sparse Float32 row, as bytes."""
    message = record_pb2.Record()
    tensor = message.features["values"].float32_tensor
    tensor.keys.extend(keys)
    tensor.values.extend(values)
    tensor.shape.extend(shape)
    message.label["values"].float32_tensor.values.append(label)
    return frame(message.SerializeToString())


def test_recordio_job_with_empty_sparse_rows_trains_and_scores_them(job, caplog):
    X, y, _ = recommender_data(600, levels=10)
    X = X.tolil()
    X[[5, 77, 300]] = 0.0  # rows with no non-zeros at all
    X = X.tocsr()
    X.eliminate_zeros()
    assert (np.diff(X.indptr)[[5, 77, 300]] == 0).all()
    job.hyperparameters(
        feature_dim=X.shape[1], num_factors=4, predictor_type="regressor", mini_batch_size=100, epochs=2
    )
    job.channel("train", RECORDIO, files={"train.pbr": sparse_recordio(X, y)})
    job.channel("test", RECORDIO, files={"test.pbr": sparse_recordio(X[:100], y[:100])})
    with caplog.at_level(logging.INFO, logger="smalgo"):
        assert run_training(job.paths, "factorization-machines") == 0, job.failure()
    assert job.model_files() == ["V.npy", "model.json", "w.npy", "w0.npy"]
    model = FM.load(job.paths.model_dir)
    score = model.predict(Batch(X[[5, 6]]))["score"]
    assert score[0] == model.w0[0] and np.isfinite(score).all()
    assert "#quality_metric: host=algo-1, test rmse <loss>=" in caplog.text


def test_a_feature_index_beyond_feature_dim_fails_the_job_naming_the_record(job):
    payload = record([1, 2], [1.0, 1.0], [], 1.0) + record([3, 12], [1.0, 0.5], [], 0.0) + record([], [], [], 1.0)
    job.hyperparameters(feature_dim=10, num_factors=2, predictor_type="binary_classifier")
    job.channel("train", RECORDIO, files={"train.pbr": payload})
    failure = assert_user_failure(job, run_training(job.paths, "factorization-machines"), "Channel train:")
    assert "record 1" in failure and "key 12 is outside the width 10 (set by feature_dim=10)" in failure


def test_a_csv_channel_is_refused_saying_what_to_send(job):
    job.hyperparameters(feature_dim=3, num_factors=2, predictor_type="regressor")
    job.channel("train", "text/csv", files={"train.csv": "1,0,1,0\n"})
    failure = assert_user_failure(
        job, run_training(job.paths, "factorization-machines"), "Channel train: ContentType 'text/csv' is not accepted"
    )
    assert "accepted: application/x-recordio-protobuf" in failure
    assert (
        "which CSV cannot carry. Convert the data with the SageMaker SDK's write_spmatrix_to_sparse_tensor" in failure
    )


@pytest.mark.parametrize(
    ("features", "label", "kind"),
    [
        ("float64_tensor", "float32_tensor", "Float64Tensor"),
        ("int32_tensor", "float32_tensor", "Int32Tensor"),
        ("float32_tensor", "float64_tensor", "Float64Tensor"),
    ],
)
def test_non_float32_tensors_are_refused_naming_the_record(job, features, label, kind):
    def row(key: int, *, odd: bool) -> bytes:
        message = record_pb2.Record()
        values = getattr(message.features["values"], features if odd else "float32_tensor")
        values.keys.append(key)
        values.values.append(1)
        getattr(message.label["values"], label if odd else "float32_tensor").values.append(1)
        return frame(message.SerializeToString())

    payload = row(1, odd=False) + row(2, odd=False) + row(4, odd=True) + row(3, odd=False)
    job.hyperparameters(feature_dim=5, num_factors=2, predictor_type="regressor")
    job.channel("train", RECORDIO, files={"train.pbr": payload})
    failure = assert_user_failure(job, run_training(job.paths, "factorization-machines"), "Channel train:")
    assert "record 2 at byte offset" in failure and f"its features or label are {kind} values" in failure
    assert "reads Float32Tensor features and labels only: write the data from float32 arrays" in failure


def test_bad_labels_fail_the_job_naming_the_record(job):
    X, _, interaction = recommender_data(300, levels=10)
    y = (interaction > 0).astype(np.float32)
    y[250] = 2.0
    job.hyperparameters(feature_dim=X.shape[1], num_factors=2, predictor_type="binary_classifier", mini_batch_size=100)
    job.channel("train", RECORDIO, files={"train.pbr": sparse_recordio(X, y)})
    assert_user_failure(
        job,
        run_training(job.paths, "factorization-machines"),
        "Record 251 of the train channel has label 2.0; expected 0 or 1",
    )


def test_unlabelled_records_fail_the_job(job):
    X, _, _ = recommender_data(50, levels=10)
    job.hyperparameters(feature_dim=X.shape[1], num_factors=2, predictor_type="regressor")
    job.channel("train", RECORDIO, files={"train.pbr": sparse_recordio(X)})
    assert_user_failure(
        job, run_training(job.paths, "factorization-machines"), "The train channel's records carry no label"
    )


def test_pipe_mode_gives_the_model_of_file_mode(make_job):
    from smalgo.containers.pipe_feeder import PipeFeeder

    X, y, _ = recommender_data(600, levels=10)
    payload = io.BytesIO()
    write_dense(payload, X.toarray(), y)  # dense records, the other form
    hp = {
        "feature_dim": X.shape[1],
        "num_factors": 3,
        "predictor_type": "regressor",
        "epochs": 2,
        "mini_batch_size": 100,
    }
    file_job = make_job().hyperparameters(**hp).channel("train", RECORDIO, files={"train.pbr": payload.getvalue()})
    assert run_training(file_job.paths, "factorization-machines") == 0, file_job.failure()
    pipe_job = make_job().hyperparameters(**hp).channel("train", RECORDIO, mode="Pipe")
    with PipeFeeder(pipe_job.paths.data_dir, "train", payload.getvalue()) as feeder:
        assert run_training(pipe_job.paths, "factorization-machines") == 0, pipe_job.failure()
    assert feeder.passes_written == 2
    for name in ("w0.npy", "w.npy", "V.npy"):
        np.testing.assert_array_equal(
            np.load(file_job.paths.model_dir / name), np.load(pipe_job.paths.model_dir / name)
        )


# --------------------------------------------------------------------------- the model files


def test_top_n_recommendations_from_the_model_files_with_numpy_alone(tmp_path):
    """docs/factorization-machines.md's recipe: score every item for one user from w0.npy,
    w.npy and V.npy, and it agrees with the model's own predictions."""
    X, y, _ = recommender_data(5000, levels=40, numeric=0)
    model = train({"train": (X, y)}, feature_dim=X.shape[1], predictor_type="regressor", **FAST, **FAST_INIT)
    model.save(tmp_path)
    metadata = json.loads((tmp_path / "model.json").read_text())
    assert metadata["arrays"] == {"w0": "w0.npy", "w": "w.npy", "V": "V.npy"}
    assert (metadata["feature_dim"], metadata["num_factors"], metadata["predictor_type"]) == (80, 4, "regressor")

    # The recipe, as documented: user u is feature u, item i is feature 40 + i.
    w0, w, V = (np.load(tmp_path / f"{name}.npy") for name in ("w0", "w", "V"))
    user, items = 7, np.arange(40, 80)
    scores = w0[0] + w[user] + w[items] + V[items] @ V[user]
    top = items[np.argsort(-scores)[:5]] - 40

    rows = sp.csr_matrix(
        (np.ones(80), (np.repeat(np.arange(40), 2), np.column_stack([np.full(40, user), items]).ravel()))
    )
    served = model.predict(Batch(sp.csr_matrix(rows, dtype=np.float32)))["score"]
    np.testing.assert_allclose(scores, served, rtol=1e-5, atol=1e-5)
    assert list(top) == list(np.argsort(-served)[:5])


def test_a_model_loads_back_and_predicts_the_same(tmp_path):
    X, y, _ = recommender_data(500, levels=10)
    model = train_binary(X, y, num_factors=3)
    model.save(tmp_path)
    loaded = FM.load(tmp_path)
    for name, values in model.predict(Batch(X)).items():
        np.testing.assert_array_equal(loaded.predict(Batch(X))[name], values)
    metadata = json.loads((tmp_path / "model.json").read_text())
    metadata["format_version"] = 2
    (tmp_path / "model.json").write_text(json.dumps(metadata))
    with pytest.raises(UserError, match="reads factorization machines models of version 1"):
        FM.load(tmp_path)


# --------------------------------------------------------------------------- serving


def test_sparse_and_dense_json_instances_and_every_answer_format(tmp_path):
    from smalgo.serve import create_app

    X, _, interaction = recommender_data(2000, levels=15)
    model = train_binary(X, interaction, **FAST)
    model.save(tmp_path)
    client = create_app(tmp_path).test_client()
    rows = X[:4]
    expected = model.predict(Batch(rows))
    instances = [
        {"data": {"features": {"keys": row.indices.tolist(), "shape": [X.shape[1]], "values": row.data.tolist()}}}
        for row in rows
    ]
    instances[1] = {"features": rows[1].toarray()[0].tolist()}  # a dense instance among them
    body = json.dumps({"instances": instances})
    answer = client.post(
        "/invocations", data=body, headers={"Content-Type": "application/json", "Accept": "application/json"}
    )
    assert answer.status_code == 200, answer.data
    predictions = answer.get_json()["predictions"]
    assert [sorted(p) for p in predictions] == [["predicted_label", "score"]] * 4
    np.testing.assert_allclose([p["score"] for p in predictions], expected["score"], rtol=1e-6)
    assert [p["predicted_label"] for p in predictions] == expected["predicted_label"].tolist()
    lines = "".join(json.dumps(instance) + "\n" for instance in instances)
    for accept, check in (
        ("application/jsonlines", lambda text: [json.loads(line)["score"] for line in text.splitlines()]),
        ("text/csv", lambda text: [float(line.split(",")[0]) for line in text.splitlines()]),
    ):
        answer = client.post(
            "/invocations", data=lines, headers={"Content-Type": "application/jsonlines", "Accept": accept}
        )
        assert answer.status_code == 200, answer.data
        np.testing.assert_allclose(check(answer.get_data(as_text=True)), expected["score"], rtol=1e-6)
    answer = client.post(
        "/invocations", data=sparse_recordio(rows), headers={"Content-Type": RECORDIO, "Accept": RECORDIO}
    )
    from smalgo.recordio import decode_response

    decoded = decode_response(answer.data)
    np.testing.assert_array_equal(decoded["score"], expected["score"])
    np.testing.assert_array_equal(decoded["predicted_label"], expected["predicted_label"])
