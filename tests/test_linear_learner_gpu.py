"""Linear learner on a GPU: the numba-cuda training step (algorithms/linear_learner/_cuda.py)
against the CPU's, and the hook that chooses the device for a job.

No GPU is needed: the jobs run in numba's CUDA simulator, in one subprocess (NUMBA_ENABLE_CUDASIM
must be set before numba.cuda is first imported, and the simulator runs each GPU thread as a
Python thread, so the jobs are small: 300 rows of 5 features, 2-4 models, 2 passes). Each job
trains twice on the same data, SMALGO_DEVICE=cpu and SMALGO_DEVICE=gpu (the threshold lowered so
that the GPU takes it), and the whole training state is compared. The one test that needs a
real GPU runs where numba.cuda finds one and is skipped with "no CUDA GPU" elsewhere.

Tolerances: the two paths do the same float32 arithmetic in a different order (the CPU's BLAS
and numpy's pairwise sums against one thread's running sum per output; CUDA's exp and log
against numpy's), a few float32 ulps (1e-7 relative) per operation. Over 6 updates, with adam's
and rmsprop's division by the root of the second moment amplifying a gradient's relative error
at most a few times, weights and moments agree to rtol 1e-4 plus atol 5e-5 (weights here are
0.01 to 1; the largest difference seen is 8e-6, on a bias, whose gradient is a column sum of
cancelling terms; the margin covers another machine's BLAS, which rounds the CPU's products
differently), the float64 loss sums to rtol 1e-5 (seen: 3e-7 relative).
"""

from __future__ import annotations

import json
import textwrap
import time

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import fake_probe, real_cuda_gpu, run_in_cuda_simulator

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.linear_learner import ALGORITHM
from smalgo.algorithms.linear_learner import _linear_learner as ll_module

RTOL, ATOL = 1e-4, 5e-5
LOSS_RTOL = 1e-5


# A GPU probe nobody else has made, and no SMALGO_DEVICE, for every test here.
pytestmark = pytest.mark.usefixtures("fresh_device_state")


def _train_state(hp: dict, X, y, *, batch_rows: int = 100):
    parsed = ALGORITHM.hyperparameters.parse(hp)
    ALGORITHM.validate(parsed)
    state = ALGORITHM.start(parsed)
    for start in range(0, X.shape[0], batch_rows):
        state.update(Batch(X[start : start + batch_rows], y[start : start + batch_rows]))
    state.end_epoch()
    return state


# --------------------------------------------------------------------------- the hook, without a GPU


def test_has_gpu_path():
    assert ALGORITHM.has_gpu_path is True


def test_small_jobs_never_look_for_a_gpu_and_large_ones_without_one_train_on_the_cpu(monkeypatch):
    probes = fake_probe(monkeypatch, False, "no driver")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    hp = {"predictor_type": "binary_classifier", "mini_batch_size": "100", "num_models": "2"}
    assert 100 * 4 * 2 < ll_module.MIN_GPU_WORK
    assert _train_state(hp, X, y)._gpu is None
    assert probes == []
    monkeypatch.setattr(ll_module, "MIN_GPU_WORK", 1)
    assert _train_state(hp, X, y)._gpu is None
    assert probes == [1]


def test_sparse_jobs_never_look_for_a_gpu(monkeypatch):
    probes = fake_probe(monkeypatch, True, "Fake GPU, compute capability 9.0")
    monkeypatch.setattr(ll_module, "MIN_GPU_WORK", 1)
    X = sp.random(200, 4, density=0.5, format="csr", dtype=np.float32, random_state=1)
    y = (np.asarray(X.sum(axis=1)).ravel() > 0.5).astype(np.float32)
    state = _train_state({"predictor_type": "binary_classifier", "mini_batch_size": "100", "num_models": "2"}, X, y)
    assert state._gpu is None
    assert probes == []


def test_forced_gpu_without_gpu_fails_when_training_starts(monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "gpu")
    fake_probe(monkeypatch, False, "no driver")
    monkeypatch.setattr(ll_module, "MIN_GPU_WORK", 1)
    X = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    with pytest.raises(UserError, match="SMALGO_DEVICE=gpu, but no CUDA GPU can be used: no driver"):
        _train_state({"predictor_type": "regressor", "mini_batch_size": "10", "num_models": "2"}, X, X[:, 0].copy())


# --------------------------------------------------------------------------- the CUDA simulator

# Runs with NUMBA_ENABLE_CUDASIM=1; argv[1] is a directory for its results: <job>.npz with each
# device's state after training, driver.npz for a whole train() with validation, facts.json.
_SIMULATOR_SCRIPT = textwrap.dedent("""
    import json, logging, os, sys, time
    import numpy as np
    import scipy.sparse as sp

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    out = sys.argv[1]
    from smalgo.algorithms.batch import Batch
    from smalgo.algorithms.data import InMemoryData
    from smalgo.algorithms.linear_learner import ALGORITHM as ll
    from smalgo.algorithms.linear_learner import _linear_learner as L

    facts = {"numba_cuda_after_importing": "numba.cuda" in sys.modules}
    import numba
    from smalgo.algorithms.linear_learner import _cuda
    facts["simulator"] = bool(numba.config.ENABLE_CUDASIM)
    # Few simulated threads (each is a Python thread), and grids smaller than the work, so that
    # every grid-stride loop goes round more than once.
    _cuda._THREADS_PER_BLOCK = 16
    _cuda._MAX_BLOCKS = 3
    L.MIN_GPU_WORK = 1  # the simulator is far too slow for jobs the real threshold sends

    gpu_batches = []
    real_train = _cuda.GpuModels.train
    def counting_train(self, X, *args):
        gpu_batches.append(X.shape[0])
        return real_train(self, X, *args)
    _cuda.GpuModels.train = counting_train

    rng = np.random.default_rng(7)
    n, d = 300, 5
    X = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d) + rng.uniform(-2.0, 2.0, d)).astype(np.float32)
    signal = (X - X.mean(axis=0)) / X.std(axis=0) @ rng.normal(size=d)
    labels = {
        "binary": (signal + rng.logistic(size=n) > 0.5).astype(np.float32),
        "regression": (3.0 * signal + 10.0 + rng.normal(size=n)).astype(np.float32),
        "multiclass": np.digitize(signal + 0.3 * rng.logistic(size=n), [-0.7, 0.7]).astype(np.float32),
    }
    row_weights = rng.uniform(0.2, 2.0, n).astype(np.float32)

    def train(choice, hp, y, *, weighted, epochs, sparse_batch):
        os.environ["SMALGO_DEVICE"] = choice
        parsed = ll.hyperparameters.parse({"mini_batch_size": "100", "num_point_for_scaler": "150", **hp})
        ll.validate(parsed)
        state = ll.start(parsed)
        losses = []
        for epoch in range(epochs):
            for start in range(0, n, 100):
                rows = slice(start, start + 100)
                batch_X = X[rows]
                if sparse_batch and epoch == 1 and start == 100:
                    batch_X = sp.csr_matrix(batch_X)
                state.update(Batch(batch_X, y[rows], row_weights[rows] if weighted else None))
                if sparse_batch and epoch == 1 and start == 100:
                    state.update(Batch(X[:0], y[:0]))  # an empty batch: a step with no gradient, on the CPU
            losses.append(state.end_epoch()[0].value)
        candidates = state.current_model()
        arrays = {"losses": np.array(losses), "candidate_weights": candidates.weights.copy()}
        facts[f"{choice}_on_gpu"] = state._gpu is not None
        if state._gpu is not None:
            state._gpu.download(state._training_state())  # the moments too, for the comparison
        arrays.update({k: np.array(v, copy=True) for k, v in state._training_state().items()})
        return arrays

    jobs = {
        "logistic_adam_l1_wd": ({"predictor_type": "binary_classifier", "num_models": "3", "optimizer": "adam",
                                 "l1": "0.01", "wd": "0.001", "lr_scheduler_step": "2",
                                 "lr_scheduler_factor": "0.5"}, "binary", {}),
        "hinge_sgd_momentum_balanced_no_bias": ({"predictor_type": "binary_classifier", "loss": "hinge_loss",
                                                 "num_models": "2", "optimizer": "sgd", "momentum": "0.9",
                                                 "positive_example_weight_mult": "balanced",
                                                 "use_bias": "false"}, "binary", {}),
        "squared_rmsprop_wd": ({"predictor_type": "regressor", "num_models": "2", "optimizer": "rmsprop",
                                "wd": "0.01"}, "regression", {}),
        "huber_sgd_row_weights": ({"predictor_type": "regressor", "loss": "huber_loss", "huber_delta": "2.0",
                                   "num_models": "2", "optimizer": "sgd", "momentum": "0.5"}, "regression",
                                  {"weighted": True}),
        "softmax_adam_class_weights_l1": ({"predictor_type": "multiclass_classifier", "num_classes": "3",
                                           "num_models": "2", "optimizer": "adam", "l1": "0.001",
                                           "balance_multiclass_weights": "true"}, "multiclass", {}),
        "logistic_positive_weight_sparse_batch": ({"predictor_type": "binary_classifier", "num_models": "2",
                                                   "positive_example_weight_mult": "2.5"}, "binary",
                                                  {"sparse_batch": True}),
        "absolute_uncentred": ({"predictor_type": "regressor", "loss": "absolute_loss", "num_models": "2",
                                "unbias_data": "false"}, "regression", {"epochs": 1}),
        "quantile": ({"predictor_type": "regressor", "loss": "quantile_loss", "quantile": "0.8",
                      "num_models": "2"}, "regression", {"epochs": 1}),
        "eps_insensitive_squared": ({"predictor_type": "regressor", "loss": "eps_insensitive_squared_loss",
                                     "loss_insensitivity": "0.5", "num_models": "2"}, "regression", {"epochs": 1}),
        "eps_insensitive_absolute": ({"predictor_type": "regressor", "loss": "eps_insensitive_absolute_loss",
                                      "loss_insensitivity": "0.5", "num_models": "2"}, "regression", {"epochs": 1}),
    }
    seconds = {}
    for name, (hp, kind, options) in jobs.items():
        options = {"weighted": False, "epochs": 2, "sparse_batch": False, **options}
        started = time.perf_counter()
        cpu = train("cpu", hp, labels[kind], **options)
        facts[name + "_gpu_batches_on_cpu"] = len(gpu_batches)
        gpu = train("gpu", hp, labels[kind], **options)
        facts[name + "_gpu_batches"] = len(gpu_batches) - facts[name + "_gpu_batches_on_cpu"]
        gpu_batches.clear()
        facts[name + "_devices"] = [facts.pop("cpu_on_gpu"), facts.pop("gpu_on_gpu")]
        seconds[name] = round(time.perf_counter() - started, 2)
        np.savez(os.path.join(out, name + ".npz"), **{f"cpu_{k}": v for k, v in cpu.items()},
                 **{f"gpu_{k}": v for k, v in gpu.items()})

    # The whole driver: validation each pass (current_model), selection, the final model.
    started = time.perf_counter()
    hp = ll.hyperparameters.parse({"predictor_type": "binary_classifier", "num_models": "3", "epochs": "2",
                                   "mini_batch_size": "100", "num_point_for_scaler": "150"})
    arrays = {}
    for choice in ("cpu", "gpu"):
        os.environ["SMALGO_DEVICE"] = choice
        data = InMemoryData({"train": (X[:200], labels["binary"][:200]),
                             "validation": (X[200:], labels["binary"][200:])})
        model = ll.train(hp, data)
        arrays[f"{choice}_weights"], arrays[f"{choice}_bias"] = model.weights, model.bias
        arrays[f"{choice}_threshold"] = np.array(model.threshold)
        arrays[f"{choice}_score"] = model.predict(Batch(X))["score"]
    facts["driver_gpu_batches"] = len(gpu_batches)
    seconds["driver"] = round(time.perf_counter() - started, 2)
    facts["seconds"] = seconds
    np.savez(os.path.join(out, "driver.npz"), **arrays)
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(facts, f)
""")

_JOBS = (
    "logistic_adam_l1_wd",
    "hinge_sgd_momentum_balanced_no_bias",
    "squared_rmsprop_wd",
    "huber_sgd_row_weights",
    "softmax_adam_class_weights_l1",
    "logistic_positive_weight_sparse_batch",
    "absolute_uncentred",
    "quantile",
    "eps_insensitive_squared",
    "eps_insensitive_absolute",
)
_ONE_PASS_JOBS = ("absolute_uncentred", "quantile", "eps_insensitive_squared", "eps_insensitive_absolute")
_STATE = ("weights", "W_raw", "first_moment", "second_moment", "bias", "bias_first_moment", "bias_second_moment")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Runs _SIMULATOR_SCRIPT once; returns (results directory, facts, its stderr)."""
    out = tmp_path_factory.mktemp("llcudasim")
    stderr = run_in_cuda_simulator(_SIMULATOR_SCRIPT, out)
    return out, json.loads((out / "facts.json").read_text()), stderr


def test_simulator_run_used_the_simulator_and_the_gpu(simulated):
    _, facts, stderr = simulated
    assert facts["simulator"] is True
    assert facts["numba_cuda_after_importing"] is False
    assert "Kernels with a GPU version run on the GPU: " in stderr
    assert "Linear learner trains on the GPU." in stderr


@pytest.mark.parametrize("job", _JOBS)
def test_simulated_gpu_training_matches_the_cpu(simulated, job):
    out, facts, _ = simulated
    assert facts[f"{job}_devices"] == [False, True]
    assert facts[f"{job}_gpu_batches_on_cpu"] == 0
    epochs = 1 if job in _ONE_PASS_JOBS else 2
    # 3 batches a pass, all on the GPU but the sparse one (and the empty one beside it).
    assert facts[f"{job}_gpu_batches"] == 3 * epochs - (job == "logistic_positive_weight_sparse_batch")
    r = np.load(out / f"{job}.npz")
    for name in (*_STATE, "candidate_weights"):
        np.testing.assert_allclose(r[f"gpu_{name}"], r[f"cpu_{name}"], rtol=RTOL, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(r["gpu_shift"], r["cpu_shift"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(r["gpu_losses"], r["cpu_losses"], rtol=LOSS_RTOL)
    assert np.abs(r["cpu_weights"]).max() > 0.05  # trained: the weights are not all near zero
    if "no_bias" in job:
        assert (r["gpu_bias"] == 0).all()
    if "l1" in job:
        assert (r["cpu_weights"] == 0).any() == (r["gpu_weights"] == 0).any()


def test_simulated_driver_selects_the_same_model(simulated):
    out, facts, _ = simulated
    assert facts["driver_gpu_batches"] == 4  # 2 batches of 100 train rows x 2 passes
    r = np.load(out / "driver.npz")
    np.testing.assert_allclose(r["gpu_weights"], r["cpu_weights"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(r["gpu_bias"], r["cpu_bias"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(r["gpu_threshold"], r["cpu_threshold"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(r["gpu_score"], r["cpu_score"], rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- a real GPU


@pytest.mark.parametrize(
    "hp",
    [
        {"predictor_type": "binary_classifier", "optimizer": "adam", "l1": "0.001"},
        {"predictor_type": "multiclass_classifier", "num_classes": "4", "optimizer": "sgd", "momentum": "0.9"},
    ],
    ids=["logistic_adam", "softmax_sgd"],
)
def test_real_gpu_training_matches_the_cpu(monkeypatch, hp):
    if not real_cuda_gpu():
        pytest.skip("no CUDA GPU")
    rng = np.random.default_rng(3)
    n, d = 20_000, 200
    X = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d) + rng.uniform(-2.0, 2.0, d)).astype(np.float32)
    signal = (X - X.mean(axis=0)) / X.std(axis=0) @ rng.normal(size=d) / np.sqrt(d)
    if hp["predictor_type"] == "binary_classifier":
        y = (signal + rng.logistic(size=n) > 0).astype(np.float32)
    else:
        y = np.digitize(signal + 0.3 * rng.logistic(size=n), [-0.7, 0.0, 0.7]).astype(np.float32)
    hp = {**hp, "mini_batch_size": "1000", "num_models": "32"}  # above MIN_GPU_WORK: no threshold lowered
    results = {}
    for choice in ("cpu", "gpu"):
        monkeypatch.setenv("SMALGO_DEVICE", choice)
        started = time.perf_counter()
        state = _train_state(hp, X, y, batch_rows=1000)
        seconds = time.perf_counter() - started
        assert (state._gpu is not None) == (choice == "gpu")
        results[choice] = (state.current_model().weights.copy(), state.bias.copy(), seconds)
    print(f"one pass of 20,000 x 200, 32 models: cpu {results['cpu'][2]:.3f} s, gpu {results['gpu'][2]:.3f} s")
    # 20 updates on 1,000-row batches: float32 sums of 1,000 terms in another order.
    np.testing.assert_allclose(results["gpu"][0], results["cpu"][0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(results["gpu"][1], results["cpu"][1], rtol=1e-3, atol=1e-4)
