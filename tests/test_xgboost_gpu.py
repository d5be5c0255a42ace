"""XGBoost on a GPU: the GPU image's XGBoost (the CUDA build) trains with device=cuda when a GPU is
usable, tree_method=gpu_hist asks for it, and the model predicts as the CPU's hist model does
(within the float rounding of a different summation order). Skipped with "no CUDA GPU" where
XGBoost has no CUDA build (the xgboost-cpu wheel of CI and the CPU image) or no GPU is there."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import xgboost as xgb
from conftest import real_cuda_gpu

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.data import InMemoryData
from smalgo.algorithms.registry import get_algorithm

XGB = get_algorithm("xgboost")
pytestmark = pytest.mark.usefixtures("fresh_device_state")


def usable_gpu() -> bool:
    return bool(xgb.build_info().get("USE_CUDA")) and real_cuda_gpu()


def train(**raw):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200_000, 28)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(np.float32)
    hp = XGB.hyperparameters.parse({"num_round": "50", "objective": "binary:logistic", **raw})
    XGB.validate(hp)
    return XGB.train(hp, InMemoryData({"train": (X, y)})), X


def test_gpu_hist_trains_on_the_gpu_and_predicts_as_the_cpu(monkeypatch, caplog):
    if not usable_gpu():
        pytest.skip("no CUDA GPU")
    with caplog.at_level(logging.INFO):
        gpu_model, X = train(tree_method="gpu_hist")
    assert "tree_method gpu_hist is tree_method hist with device cuda" in caplog.text
    booster = gpu_model.boosters[0]
    import json

    assert json.loads(booster.save_config())["learner"]["generic_param"]["device"].startswith("cuda")
    monkeypatch.setenv("SMALGO_DEVICE", "cpu")
    cpu_model, _ = train(tree_method="hist")
    gpu, cpu = gpu_model.predict(Batch(X[:5000]))["score"], cpu_model.predict(Batch(X[:5000]))["score"]
    # The same algorithm, histograms summed in another order: equal to a few float32 ulps mostly.
    assert np.mean(np.abs(gpu - cpu)) < 1e-3
    assert np.mean((gpu > 0.5) == (cpu > 0.5)) > 0.99


def test_without_a_usable_gpu_gpu_hist_trains_on_the_cpu(caplog):
    if usable_gpu():
        pytest.skip("a CUDA GPU is here: the test above covers it")
    with caplog.at_level(logging.WARNING):
        model, X = train(tree_method="gpu_hist", num_round="3")
    assert "tree_method=gpu_hist, but no CUDA GPU is usable here: training on the CPU" in caplog.text
    assert model.predict(Batch(X[:10]))["score"].shape == (10,)
