"""Linear learner: hyperparameters, training (losses, weights, calibration, early stopping,
normalisation, sparse data), the model, and the job's refusals of bad labels and settings."""

import io
import json
import logging

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_user_failure, csv_text

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.linear_learner import ALGORITHM as LL
from smalgo.algorithms.linear_learner import _kernels, _settings
from smalgo.algorithms.linear_learner._metrics import binary_metrics
from smalgo.containers.job import run_training

D = 8


def parse(**values) -> dict:
    """Validated hyperparameters from keyword values, sent as SageMaker sends them (strings)."""
    hp = LL.hyperparameters.parse({"feature_dim": str(D), **{k: str(v) for k, v in values.items()}})
    LL.validate(hp)
    return hp


def train(channels: dict, **values):
    return LL.train(parse(**values), InMemoryData(channels))


def linear_data(n: int, seed: int = 0, *, noise: float = 1.0, positive_rate: float | None = None):
    """Features with uneven scales and offsets, a linear score, and binary labels from it (with
    logistic noise). positive_rate shifts the score so that about that share is positive."""
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, D)) * rng.uniform(0.5, 20, D) + rng.uniform(-50, 50, D)).astype(np.float32)
    score = ((X - X.mean(0)) / X.std(0)) @ np.linspace(-1.5, 1.5, D)
    if positive_rate is not None:
        score = score - np.quantile(score, 1 - positive_rate) * 1.0
    y = (score + noise * rng.logistic(size=n) > 0).astype(np.float32)
    return X, y, score


# --------------------------------------------------------------------------- hyperparameters


def test_defaults_as_documented():
    hp = LL.hyperparameters.parse({"predictor_type": "binary_classifier"})
    assert hp["epochs"] == 15 and hp["mini_batch_size"] == 1000 and hp["num_point_for_scaler"] == 10_000
    assert hp["early_stopping_patience"] == 3 and hp["early_stopping_tolerance"] == 0.001
    assert hp["init_method"] == "uniform" and hp["init_scale"] == 0.07 and hp["init_sigma"] == 0.01
    assert hp["target_precision"] == hp["target_recall"] == 0.8 and hp["quantile"] == 0.5
    assert hp["binary_classifier_model_selection_criteria"] == "accuracy" and hp["accuracy_top_k"] == 3
    assert hp["normalize_data"] is True and hp["use_bias"] is True and hp["use_lr_scheduler"] is True
    for name in ("learning_rate", "num_models", "optimizer", "loss", "wd", "l1", "momentum", "feature_dim"):
        assert hp[name] == "auto", name
    settings = _settings.model_settings(hp)
    assert settings.count == _settings.DEFAULT_NUM_MODELS and settings.optimizer == "adam"
    # Model 0 has the base settings; only auto values vary.
    assert settings.learning_rate[0] == 0.02 and settings.wd[0] == settings.l1[0] == 0
    assert len(set(settings.learning_rate)) == settings.count
    fixed = _settings.model_settings(parse(predictor_type="binary_classifier", learning_rate=0.5, wd=0.01))
    assert set(fixed.learning_rate) == {0.5} and set(fixed.wd) == {0.01} and len(set(fixed.l1)) > 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"predictor_type": "classifier"}, "Hyperparameter predictor_type"),
        ({"predictor_type": "multiclass_classifier"}, "Hyperparameter num_classes is missing"),
        ({"predictor_type": "multiclass_classifier", "num_classes": 2}, "Hyperparameter num_classes is 2"),
        ({"predictor_type": "binary_classifier", "loss": "squared_loss"}, "Hyperparameter loss: squared_loss does"),
        ({"predictor_type": "regressor", "loss": "logistic"}, "Hyperparameter loss: logistic does not fit"),
        ({"predictor_type": "multiclass_classifier", "num_classes": 3, "loss": "hinge_loss"}, "Hyperparameter loss"),
        ({"predictor_type": "binary_classifier", "loss": "cross_entropy"}, "Hyperparameter loss"),
        # The SageMaker SDK's own boundary cases.
        ({"predictor_type": "binary_classifier", "target_recall": 0}, "Hyperparameter target_recall"),
        ({"predictor_type": "binary_classifier", "target_precision": 1}, "Hyperparameter target_precision"),
        ({"predictor_type": "binary_classifier", "momentum": 1}, "Hyperparameter momentum"),
        ({"predictor_type": "binary_classifier", "lr_scheduler_factor": 0}, "Hyperparameter lr_scheduler_factor"),
        ({"predictor_type": "binary_classifier", "lr_scheduler_factor": 1}, "Hyperparameter lr_scheduler_factor"),
        ({"predictor_type": "regressor", "quantile": 1}, "Hyperparameter quantile"),
        ({"predictor_type": "binary_classifier", "wd": -1}, "Hyperparameter wd"),
        ({"predictor_type": "binary_classifier", "num_classes": 0}, "Hyperparameter num_classes"),
        ({"predictor_type": "binary_classifier", "positive_example_weight_mult": "0"}, "Hyperparameter positive"),
        ({"predictor_type": "binary_classifier", "positive_example_weight_mult": "heavy"}, "Hyperparameter positive"),
        ({"predictor_type": "binary_classifier", "binary_classifier_model_selection_criteria": "auc"}, "Hyperparam"),
        ({"predictor_type": "binary_classifier", "optimizer": "adagrad"}, "Hyperparameter optimizer"),
        ({"predictor_type": "binary_classifier", "epochs": 0}, "Hyperparameter epochs"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_them(values, message):
    with pytest.raises(UserError, match=message):
        parse(**values)


def test_older_criterion_names_and_explicit_auto_are_accepted():
    hp = parse(predictor_type="binary_classifier", binary_classifier_model_selection_criteria="f1", loss="auto")
    assert _settings.resolve_criterion(hp) == "f_beta"
    assert (
        _settings.resolve_criterion(
            parse(
                predictor_type="binary_classifier",
                **{"binary_classifier_model_selection_criteria": "cross_entropy_loss"},
            )
        )
        == "loss_function"
    )
    assert _settings.positive_example_weight_mult("Balanced") == "balanced"
    assert _settings.positive_example_weight_mult("2.5") == 2.5


# --------------------------------------------------------------------------- training


def test_binary_classifier_learns_and_reports_its_metrics(caplog):
    X, y, _ = linear_data(6000)
    with caplog.at_level(logging.INFO, logger="smalgo"):
        model = train(
            {"train": (X[:4000], y[:4000]), "validation": (X[4000:5000], y[4000:5000]), "test": (X[5000:], y[5000:])},
            predictor_type="binary_classifier",
            epochs=4,
            mini_batch_size=200,
            num_models=8,
        )
    out = model.predict(Batch(X[5000:]))
    assert set(out) == {"score", "predicted_label"}
    assert np.all((out["score"] >= 0) & (out["score"] <= 1))
    np.testing.assert_array_equal(out["predicted_label"], (out["score"] > model.threshold).astype(np.float32))
    assert np.mean(out["predicted_label"] == y[5000:]) > 0.8
    log = caplog.text
    for line in (
        "epoch=0, train binary_classification_cross_entropy_objective <loss>=",
        "epoch=3, validation binary_classification_cross_entropy_objective <loss>=",
        "validation binary_classification_cross_entropy_objective <loss>=",
        "test binary_classification_accuracy <score>=",
        "test binary_f_1.000 <score>=",
        "test precision <score>=",
        "test recall <score>=",
        "test roc_auc_score <score>=",
        "train binary_classification_accuracy <score>=",
    ):
        assert f"#quality_metric: host=algo-1, {line}" in log, line
    best = next(m for m in caplog.messages if m.startswith("Best model found for hyperparameters: "))
    settings = json.loads(best.split(": ", 1)[1])
    assert set(settings) >= {"optimizer", "learning_rate", "l1", "wd", "lr_scheduler_step", "lr_scheduler_factor"}
    assert "#throughput_metric: host=algo-1, train throughput=" in log


@pytest.mark.parametrize(
    ("criterion", "target", "reached"),
    [
        ("precision_at_target_recall", "target_recall", "recall"),
        ("recall_at_target_precision", "target_precision", "precision"),
    ],
)
def test_the_calibrated_threshold_reaches_the_target_on_validation(criterion, target, reached):
    X, y, _ = linear_data(8000, seed=1, noise=2.0)
    validation = (X[6000:], y[6000:])
    model = train(
        {"train": (X[:6000], y[:6000]), "validation": validation},
        predictor_type="binary_classifier",
        binary_classifier_model_selection_criteria=criterion,
        epochs=3,
        mini_batch_size=200,
        num_models=4,
        **{target: 0.95},
    )
    score = model.predict(Batch(validation[0]))["score"]
    assert binary_metrics(score, validation[1], None, threshold=model.threshold, beta=1)[reached] >= 0.95
    # And the threshold moved off the default to get there: down for recall, up for precision.
    assert (model.threshold < 0.5) if reached == "recall" else (model.threshold > 0.5)


def test_early_stopping_stops_before_epochs_when_validation_stalls(caplog):
    X, y, _ = linear_data(3000, seed=3, noise=0.3)
    with caplog.at_level(logging.INFO, logger="smalgo"):
        train(
            {"train": (X[:2000], y[:2000]), "validation": (X[2000:], y[2000:])},
            predictor_type="binary_classifier",
            epochs=40,
            mini_batch_size=100,
            num_models=2,
            early_stopping_patience=2,
            early_stopping_tolerance=0.01,
        )
    epochs = {
        line.split("epoch=")[1].split(",")[0] for line in caplog.messages if ", train " in line and "epoch=" in line
    }
    assert 3 <= len(epochs) < 40
    assert any(m.startswith("Early stopping after epoch") for m in caplog.messages)


def test_early_stopping_without_validation_follows_the_train_loss(caplog):
    X, y, _ = linear_data(2000, seed=4, noise=0.3)
    with caplog.at_level(logging.INFO, logger="smalgo"):
        train({"train": (X, y)}, predictor_type="binary_classifier", epochs=60, mini_batch_size=100, num_models=2)
    assert any("train:binary_classification_cross_entropy_objective has not improved" in m for m in caplog.messages)


def test_balanced_weights_find_the_rare_class_of_a_1_to_50_set():
    X, y, _ = linear_data(20_000, seed=5, noise=0.5, positive_rate=1 / 51)
    assert 0.01 < y.mean() < 0.03
    recalls = {}
    for weight in ("1.0", "balanced"):
        model = train(
            {"train": (X, y)},
            predictor_type="binary_classifier",
            positive_example_weight_mult=weight,
            # Keep the default threshold, so that the weighting alone moves the predictions.
            binary_classifier_model_selection_criteria="loss_function",
            epochs=3,
            mini_batch_size=500,
            num_models=2,
        )
        predicted = model.predict(Batch(X))["predicted_label"]
        recalls[weight] = float(predicted[y == 1].mean())
    assert recalls["balanced"] > 0.9 > recalls["1.0"] + 0.1, recalls


def test_auto_positive_weights_span_one_to_balanced():
    X, y, _ = linear_data(5000, seed=6, positive_rate=0.1)
    hp = parse(predictor_type="binary_classifier", positive_example_weight_mult="auto", num_models=6)
    state = LL.start(hp)
    from smalgo.algorithms.data import InMemoryData as Data

    for batch in Data({"train": (X, y)}).batches("train", 1000):
        state.update(batch)
    state.end_epoch()
    ratio = (y == 0).sum() / (y == 1).sum()
    assert state.positive_weights[0] == 1.0
    assert np.all((state.positive_weights >= 1.0) & (state.positive_weights <= ratio + 1e-9))


def regression_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, D)) * rng.uniform(0.5, 3, D) + 10).astype(np.float32)
    y = (1000 + X @ rng.normal(size=D) * 30).astype(np.float32)
    return X, y, rng


@pytest.mark.parametrize(
    ("loss", "extra"),
    [
        ("quantile_loss", {"quantile": 0.9}),
        ("quantile_loss", {"quantile": 0.2}),
    ],
)
def test_quantile_loss_puts_that_share_of_labels_below_the_prediction(loss, extra):
    X, base, rng = regression_data(12_000, seed=7)
    y = (base + rng.normal(0, 50, len(base))).astype(np.float32)
    model = train(
        {"train": (X[:10_000], y[:10_000])},
        predictor_type="regressor",
        loss=loss,
        epochs=6,
        mini_batch_size=200,
        num_models=4,
        **extra,
    )
    below = np.mean(y[10_000:] <= model.predict(Batch(X[10_000:]))["score"])
    assert abs(below - extra["quantile"]) < 0.03, below


@pytest.mark.parametrize("loss", ["absolute_loss", "huber_loss", "eps_insensitive_absolute_loss"])
def test_robust_losses_ignore_outliers_that_pull_squared_loss_away(loss):
    X, base, rng = regression_data(10_000, seed=8)
    y = base + rng.normal(0, 5, len(base)).astype(np.float32)
    # One label in ten is far too high: squared loss chases the mean, robust losses the median.
    outliers = rng.random(len(y)) < 0.1
    y = np.where(outliers, y + 3000, y).astype(np.float32)
    errors = {}
    for name in ("squared_loss", loss):
        model = train(
            {"train": (X, y)},
            predictor_type="regressor",
            loss=name,
            epochs=5,
            mini_batch_size=200,
            num_models=4,
            huber_delta=50,
            loss_insensitivity=1,
        )
        clean = ~outliers
        errors[name] = float(np.median(np.abs(model.predict(Batch(X[clean]))["score"] - base[clean])))
    assert errors[loss] < 30 < errors["squared_loss"], errors


@pytest.mark.parametrize("loss", ["eps_insensitive_squared_loss", "eps_insensitive_absolute_loss"])
def test_errors_within_loss_insensitivity_cost_nothing(loss):
    X, base, rng = regression_data(6000, seed=17)
    y = (base + rng.normal(0, 5, len(base))).astype(np.float32)
    spread = {}
    for insensitivity in (0.01, 1e6):
        model = train(
            {"train": (X, y)},
            predictor_type="regressor",
            loss=loss,
            loss_insensitivity=insensitivity,
            epochs=4,
            mini_batch_size=200,
            num_models=2,
        )
        spread[insensitivity] = float(np.sqrt(np.mean((model.predict(Batch(X))["score"] - y) ** 2)))
    # With every error inside the insensitive band the models never move from their start
    # (the label's mean); with a narrow band they fit the signal.
    assert spread[0.01] < 10 and spread[1e6] > 0.9 * float(np.std(y)), spread


def test_squared_loss_regression_matches_least_squares_and_normalises_the_label(caplog):
    X, base, rng = regression_data(10_000, seed=9)
    y = (base + rng.normal(0, 10, len(base))).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="smalgo"):
        model = train({"train": (X, y)}, predictor_type="regressor", epochs=8, mini_batch_size=100, num_models=8)
    A = np.column_stack([X, np.ones(len(X))]).astype(np.float64)
    coefficients = np.linalg.lstsq(A, y, rcond=None)[0]
    best_rmse = np.sqrt(np.mean((A @ coefficients - y) ** 2))
    rmse = np.sqrt(np.mean((model.predict(Batch(X))["score"] - y) ** 2))
    assert rmse < 1.02 * best_rmse
    assert model.scaler.label_scale > 100  # the label (std ~ 200) was normalised
    assert "#quality_metric: host=algo-1, train mse <loss>=" in caplog.text


def test_hinge_loss_scores_are_margins_and_multiclass_softmax_gives_probabilities():
    X, y, score = linear_data(4000, seed=10, noise=0.2)
    model = train(
        {"train": (X, y)},
        predictor_type="binary_classifier",
        loss="hinge_loss",
        epochs=3,
        mini_batch_size=100,
        num_models=2,
    )
    out = model.predict(Batch(X))
    assert out["score"].min() < -1 and out["score"].max() > 1  # margins, not probabilities
    assert np.mean(out["predicted_label"] == y) > 0.9
    classes = np.digitize(score, [-1.0, 0.0, 1.0]).astype(np.float32)
    multi = train(
        {"train": (X, classes)},
        predictor_type="multiclass_classifier",
        num_classes=4,
        balance_multiclass_weights=True,
        epochs=4,
        mini_batch_size=100,
        num_models=2,
    )
    out = multi.predict(Batch(X))
    assert out["score"].shape == (4000, 4)
    np.testing.assert_allclose(out["score"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["predicted_label"], out["score"].argmax(axis=1))
    assert np.mean(out["predicted_label"] == classes) > 0.8


def test_sparse_batches_train_the_same_models_as_dense_ones():
    rng = np.random.default_rng(11)
    dense = np.where(rng.random((3000, D)) < 0.3, rng.normal(size=(3000, D)), 0).astype(np.float32)
    y = (dense @ np.linspace(-2, 2, D) > 0).astype(np.float32)
    # Sparse data are scaled, not centred; asking dense data for the same makes the two equal.
    common = {"predictor_type": "binary_classifier", "epochs": 2, "num_models": 3, "unbias_data": False}
    from_dense = train({"train": (dense, y)}, **common)
    from_sparse = train({"train": (sp.csr_matrix(dense), y)}, **common)
    np.testing.assert_allclose(from_sparse.weights, from_dense.weights, rtol=1e-4, atol=1e-5)
    for X in (dense, sp.csr_matrix(dense)):
        np.testing.assert_allclose(
            from_sparse.predict(Batch(X))["score"], from_dense.predict(Batch(dense))["score"], atol=1e-5
        )


def test_sparse_training_never_densifies(monkeypatch):
    rng = np.random.default_rng(12)
    X = sp.random(2000, 5000, density=0.002, format="csr", dtype=np.float32, random_state=rng)
    y = (np.asarray(X.sum(axis=1)).ravel() > 0.01).astype(np.float32)

    def refuse(*args, **kwargs):
        raise AssertionError("a sparse batch was densified")

    monkeypatch.setattr(sp.csr_matrix, "toarray", refuse)
    monkeypatch.setattr(sp.csr_matrix, "todense", refuse)
    hp = LL.hyperparameters.parse({"predictor_type": "binary_classifier", "feature_dim": "5000", "epochs": "1"})
    model = LL.train(hp, InMemoryData({"train": (X, y), "validation": (X[:500], y[:500])}))
    assert model.predict(Batch(X[:10]))["score"].shape == (10,)
    assert not model.scaler.centred


def test_normalisation_is_folded_into_the_served_weights():
    X, y, _ = linear_data(3000, seed=13)
    model = train({"train": (X, y)}, predictor_type="binary_classifier", epochs=1, num_models=1)
    scaler = model.scaler
    assert scaler.centred and np.all(scaler.scale != 1)
    by_hand = ((X - scaler.mean) / scaler.scale) @ model.weights[:, 0] + model.bias[0]
    np.testing.assert_allclose(model.predict(Batch(X))["score"], 1 / (1 + np.exp(-by_hand)), rtol=1e-4, atol=1e-6)


def test_a_mini_batch_larger_than_the_channel_is_one_batch(caplog):
    X, y, _ = linear_data(300, seed=14)
    with caplog.at_level(logging.INFO, logger="smalgo"):
        train({"train": (X, y)}, predictor_type="binary_classifier", epochs=1, mini_batch_size=5000, num_models=1)
    assert "mini_batch_size 5000 is larger than the train channel's 300 records" in caplog.text


def test_l1_sets_weights_of_useless_features_to_zero():
    rng = np.random.default_rng(15)
    X = rng.normal(size=(5000, D)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] > 0).astype(np.float32)
    # sgd: adam's steps are as large for a noise gradient as for a real one, so its proximal l1
    # step rarely wins; sgd's shrink (learning rate x l1) outweighs a noise gradient's step.
    model = train(
        {"train": (X, y)}, predictor_type="binary_classifier", optimizer="sgd", l1=0.05, epochs=3, num_models=1
    )
    assert np.all(model.weights[2:, 0] == 0) and np.all(model.weights[:2, 0] != 0)


def test_optimizer_step_matches_the_textbook_adam_update():
    W = np.array([[0.5, -0.2], [1.0, 1.0]], np.float32)
    grad = np.array([[0.1, -0.3]], np.float32)  # the gradient of row 1 only (a lazy, sparse update)
    first, second = np.zeros_like(W), np.zeros_like(W)
    W_raw = W.copy()
    kernels = _kernels
    kernels.update_rows(
        W, np.array([1]), 1, grad, np.zeros(2, np.float32), np.zeros(2, np.float32), np.full(2, 0.5, np.float32),
        first, second, np.full(2, 0.01), np.zeros(2), np.zeros(2), kernels.ADAM, 0.0, 0.9, 0.999, 1, W_raw,
    )  # fmt: skip
    # Step 1: m_hat = g, v_hat = g^2 (g = raw gradient x inverse scale 0.5), so every weight of
    # the row moves by lr * sign(g); row 0 is untouched.
    np.testing.assert_allclose(W, [[0.5, -0.2], [0.99, 1.01]], rtol=1e-5)
    np.testing.assert_allclose(W_raw, [[0.5, -0.2], [0.495, 0.505]], rtol=1e-5)
    np.testing.assert_array_equal(first[0], 0)


# --------------------------------------------------------------------------- the job


def job_with(job, X, y, **hyperparameters):
    job.hyperparameters(feature_dim=X.shape[1], **hyperparameters)
    job.channel("train", "text/csv", files={"train.csv": csv_text(X, y)})
    return job


@pytest.mark.parametrize(
    ("predictor", "bad_label", "message"),
    [
        ({"predictor_type": "binary_classifier"}, 2.0, "Record 7 of the train channel has label 2.0; expected 0 or 1"),
        (
            {"predictor_type": "multiclass_classifier", "num_classes": 3},
            3.0,
            "Record 7 of the train channel has label 3.0; expected an integer from 0 to 2",
        ),
        ({"predictor_type": "regressor"}, float("nan"), "Record 7 of the train channel has label nan"),
    ],
)
def test_bad_labels_fail_the_job_naming_the_record(job, predictor, bad_label, message):
    X, y, _ = linear_data(50)
    y[6] = bad_label
    failure = assert_user_failure(job, run_training(job_with(job, X, y, **predictor).paths, "linear-learner"), message)
    assert len(failure) <= 1024


def test_a_bad_label_in_a_later_batch_is_named_by_its_record_number(job):
    # Batch 3 of 100 rows, held with the others until the normalisation statistics are known.
    X, y, _ = linear_data(300)
    y[250] = 2.0
    job_with(job, X, y, predictor_type="binary_classifier", mini_batch_size=100)
    assert_user_failure(job, run_training(job.paths, "linear-learner"), "Record 251 of the train channel has label 2.0")


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"predictor_type": "binary_classifier", "loss": "squared_loss"}, "Hyperparameter loss: squared_loss"),
        ({"predictor_type": "multiclass_classifier"}, "Hyperparameter num_classes is missing"),
    ],
)
def test_bad_settings_fail_the_job_before_reading_data(job, hyperparameters, message):
    X, y, _ = linear_data(50)
    job_with(job, X, y, **hyperparameters)
    (job.paths.channel_dir("train") / "train.csv").write_text("not,a,number\n")  # never read
    assert_user_failure(job, run_training(job.paths, "linear-learner"), message)


def test_pipe_mode_gives_the_model_of_file_mode(make_job):
    from smalgo.containers.pipe_feeder import PipeFeeder
    from smalgo.recordio import write_dense

    X, y, _ = linear_data(600, seed=18)
    buffer = io.BytesIO()
    write_dense(buffer, X, y)
    hp = {"feature_dim": D, "predictor_type": "binary_classifier", "epochs": 2, "mini_batch_size": 100}
    content_type = "application/x-recordio-protobuf"
    file_job = make_job().hyperparameters(**hp).channel("train", content_type, files={"train.pbr": buffer.getvalue()})
    assert run_training(file_job.paths, "linear-learner") == 0, file_job.failure()
    pipe_job = make_job().hyperparameters(**hp).channel("train", content_type, mode="Pipe")
    with PipeFeeder(pipe_job.paths.data_dir, "train", buffer.getvalue()) as feeder:
        assert run_training(pipe_job.paths, "linear-learner") == 0, pipe_job.failure()
    assert feeder.passes_written == 2  # train_0 and train_1: one FIFO per epoch
    for name in ("weights.npy", "bias.npy", "feature_mean.npy", "feature_scale.npy"):
        np.testing.assert_array_equal(
            np.load(file_job.paths.model_dir / name), np.load(pipe_job.paths.model_dir / name)
        )


def test_unlabelled_data_fail_the_job(job):
    X, _, _ = linear_data(50)
    job.hyperparameters(feature_dim=D, predictor_type="binary_classifier")
    job.channel("train", "text/csv;label_size=0", files={"train.csv": csv_text(X)})
    assert_user_failure(job, run_training(job.paths, "linear-learner"), "The train channel's records carry no label")


def test_packed_models_too_large_for_memory_are_refused_before_training():
    with pytest.raises(UserError, match="feature_dim 3000000 x num_models 32 = 96000000 weights"):
        LL.validate(LL.hyperparameters.parse({"predictor_type": "binary_classifier", "feature_dim": "3000000"}))
    with pytest.raises(UserError, match="x num_classes 1000 = .* lower num_models"):
        LL.validate(
            LL.hyperparameters.parse(
                {"predictor_type": "multiclass_classifier", "num_classes": "1000", "feature_dim": "5000"}
            )
        )


def test_a_job_whose_every_model_diverges_fails_saying_so():
    X, y, _ = linear_data(2000, seed=16)
    X[:, 0] *= 1e30  # unscaled (normalize_data=false), sgd at a huge rate overflows
    with pytest.raises(UserError, match="Training diverged: every one of the 2 models"):
        train(
            {"train": (X, y)},
            predictor_type="binary_classifier",
            normalize_data=False,
            optimizer="sgd",
            learning_rate=1e10,
            num_models=2,
            epochs=2,
        )


def test_a_tuning_job_trains_one_model_unless_num_models_is_set():
    tuned = LL.hyperparameters.parse(
        {"predictor_type": "binary_classifier", "_tuning_objective_metric": "validation:objective_loss"}
    )
    assert tuned["_tuning_objective_metric"] == "validation:objective_loss"
    assert _settings.model_settings(tuned).count == 1
    assert _settings.model_settings(dict(tuned, num_models=4)).count == 4
