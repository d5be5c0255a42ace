"""Factorization machines on a GPU: the numba-cuda step (algorithms/factorization_machines/
_cuda.py) against the CPU's, and the device choice.

No GPU is needed: the jobs run in numba's CUDA simulator, in one subprocess (NUMBA_ENABLE_CUDASIM
must be set before numba.cuda is first imported, and the simulator runs each GPU thread as a
Python thread, so the jobs are small: 240 rows of 30 features, 2 passes). Each job trains twice
on the same batches, SMALGO_DEVICE=cpu and SMALGO_DEVICE=gpu, and the weights, the AdaGrad
accumulators and the pass's loss are compared. The test that needs a real GPU runs where
numba.cuda finds one and is skipped with "no CUDA GPU" elsewhere.

Tolerances: the GPU adds a feature's gradient over the rows with atomic adds in another order
than the CPU's row loop, a few float32 ulps per sum; AdaGrad divides by the root of the summed
squares, so a weight's relative error stays of the order of its gradient's. Over 6 steps the
weights agree to rtol 1e-4 plus atol 1e-5, the loss sums to rtol 1e-5.
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
from smalgo.algorithms.factorization_machines import ALGORITHM, _fm

RTOL, ATOL = 1e-4, 1e-5
LOSS_RTOL = 1e-5

pytestmark = pytest.mark.usefixtures("fresh_device_state")


def _first_batch_on(hp: dict, X) -> object:
    state = ALGORITHM.start(ALGORITHM.hyperparameters.parse(hp))
    state.update(Batch(X, np.ones(X.shape[0], np.float32)))
    return state._gpu


def test_small_jobs_never_look_for_a_gpu_and_large_ones_without_one_train_on_the_cpu(monkeypatch):
    probes = fake_probe(monkeypatch, False, "no driver")
    assert ALGORITHM.has_gpu_path is True
    hp = {"feature_dim": "4", "num_factors": "2", "predictor_type": "regressor"}
    X = np.eye(4, dtype=np.float32)
    assert 3 * 4 * 3 < _fm.MIN_GPU_WORK
    assert _first_batch_on(hp, X) is None and probes == []
    monkeypatch.setattr(_fm, "MIN_GPU_WORK", 1)
    assert _first_batch_on(hp, X) is None and probes == [1]


def test_forced_gpu_without_gpu_fails_when_training_starts(monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "gpu")
    fake_probe(monkeypatch, False, "no driver")
    monkeypatch.setattr(_fm, "MIN_GPU_WORK", 1)
    with pytest.raises(UserError, match="SMALGO_DEVICE=gpu, but no CUDA GPU can be used: no driver"):
        _first_batch_on({"feature_dim": "3", "num_factors": "2", "predictor_type": "regressor"}, np.eye(3))


# Runs with NUMBA_ENABLE_CUDASIM=1; argv[1] is a directory for <job>.npz and facts.json.
_SIMULATOR_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import scipy.sparse as sp

    out = sys.argv[1]
    from smalgo.algorithms.batch import Batch
    from smalgo.algorithms.factorization_machines import ALGORITHM as fm
    from smalgo.algorithms.factorization_machines import _cuda
    from smalgo.algorithms.factorization_machines import _fm

    facts = {}
    _fm.MIN_GPU_WORK = 1  # the simulator is far too slow for jobs the real threshold sends
    # Few simulated threads (each is a Python thread), and grids smaller than the work, so that
    # every grid-stride loop goes round more than once.
    _cuda._THREADS_PER_BLOCK = 8
    _cuda._MAX_BLOCKS = 3

    rng = np.random.default_rng(5)
    n, d = 240, 30
    X = sp.random(n, d, density=0.2, format="csr", dtype=np.float32, random_state=5)
    X.data[:] = rng.normal(size=X.nnz).astype(np.float32)
    X[7] = 0.0  # a row without non-zeros
    X.eliminate_zeros()
    signal = X @ rng.normal(size=d) + (X @ rng.normal(size=(d, 2))).prod(axis=1)
    labels = {
        "regressor": signal.astype(np.float32),
        "binary_classifier": (signal > 0).astype(np.float32),
    }
    row_weights = rng.uniform(0.5, 2.0, n).astype(np.float32)

    def train(choice, hp, *, dense, weighted):
        os.environ["SMALGO_DEVICE"] = choice
        parsed = fm.hyperparameters.parse({"feature_dim": str(d), "mini_batch_size": "80", **hp})
        fm.validate(parsed)
        state = fm.start(parsed)
        y = labels[hp["predictor_type"]]
        losses = []
        for epoch in range(2):
            for start in range(0, n, 80):
                rows = slice(start, start + 80)
                batch_X = X[rows].toarray() if dense else X[rows]
                state.update(Batch(batch_X, y[rows], row_weights[rows] if weighted else None))
            losses.append(state.end_epoch()[0].value)
        facts[f"{choice}_on_gpu"] = state._gpu is not None
        model = state.current_model()
        return {"losses": np.array(losses), "w0": model.w0, "w": model.w, "V": model.V}

    jobs = {
        "regressor_sparse": ({"predictor_type": "regressor", "num_factors": "3", "factors_lr": "0.05",
                              "linear_lr": "0.05", "factors_init_sigma": "0.001"}, {"dense": False, "weighted": True}),
        "binary_dense_clip_rescale": ({"predictor_type": "binary_classifier", "num_factors": "2",
                                       "factors_lr": "0.1", "clip_gradient": "0.5", "rescale_grad": "0.02",
                                       "eps": "1e-4", "factors_wd": "0.01", "bias_init_method": "constant",
                                       "bias_init_value": "0.2"}, {"dense": True, "weighted": False}),
    }
    for name, (hp, options) in jobs.items():
        cpu = train("cpu", hp, **options)
        gpu = train("gpu", hp, **options)
        np.savez(os.path.join(out, name + ".npz"), **{f"cpu_{k}": v for k, v in cpu.items()},
                 **{f"gpu_{k}": v for k, v in gpu.items()})
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(facts, f)
""")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("fm_cuda_simulator")
    run_in_cuda_simulator(_SIMULATOR_SCRIPT, out)
    return out, json.loads((out / "facts.json").read_text())


@pytest.mark.parametrize("job", ["regressor_sparse", "binary_dense_clip_rescale"])
def test_simulated_gpu_step_matches_the_cpu(simulated, job):
    out, facts = simulated
    assert facts == {"cpu_on_gpu": False, "gpu_on_gpu": True}
    r = np.load(out / f"{job}.npz")
    for name in ("w0", "w", "V"):
        np.testing.assert_allclose(r[f"gpu_{name}"], r[f"cpu_{name}"], rtol=RTOL, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(r["gpu_losses"], r["cpu_losses"], rtol=LOSS_RTOL)
    assert np.abs(r["cpu_V"]).max() > 0.01  # trained: the factors moved far from their start (sigma 0.001)


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_real_gpu_training_matches_the_cpu(monkeypatch, dense):
    if not real_cuda_gpu():
        pytest.skip("no CUDA GPU")
    rng = np.random.default_rng(3)
    n, levels = 20_000, 200
    users, items = rng.integers(0, levels, n), rng.integers(0, levels, n)
    U, W = rng.normal(0, 0.7, (levels, 4)), rng.normal(0, 0.7, (levels, 4))
    y = (np.einsum("ij,ij->i", U[users], W[items]) + rng.normal(0, 0.1, n)).astype(np.float32)
    X = sp.csr_matrix(
        (np.ones(2 * n, np.float32), np.column_stack([users, levels + items]).ravel(), np.arange(0, 2 * n + 1, 2)),
        shape=(n, 2 * levels),
    )
    hp = ALGORITHM.hyperparameters.parse(
        {
            "feature_dim": str(2 * levels),
            "num_factors": "16",
            "predictor_type": "regressor",
            "factors_lr": "0.05",
            "linear_lr": "0.05",
            "factors_init_sigma": "0.1",
        }  # fmt: skip
    )
    # 1,000-row batches of 2 one-hots, k 16: below MIN_GPU_WORK, which is lowered so that the GPU
    # takes them.
    monkeypatch.setattr(_fm, "MIN_GPU_WORK", 1)
    results = {}
    for choice in ("cpu", "gpu"):
        monkeypatch.setenv("SMALGO_DEVICE", choice)
        state = ALGORITHM.start(hp)
        started = time.perf_counter()
        for start in range(0, n, 1000):
            rows = slice(start, start + 1000)
            state.update(Batch(X[rows].toarray() if dense else X[rows], y[rows]))
        loss = state.end_epoch()[0].value
        model = state.current_model()
        results[choice] = (model.V.copy(), model.w.copy(), loss, time.perf_counter() - started)
        assert (state._gpu is not None) == (choice == "gpu")
    print(f"one pass of 20,000 rows, k 16: cpu {results['cpu'][3]:.3f} s, gpu {results['gpu'][3]:.3f} s")
    # 20 steps on 1,000-row batches: float32 sums of up to 1,000 terms in another order.
    np.testing.assert_allclose(results["gpu"][0], results["cpu"][0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(results["gpu"][1], results["cpu"][1], rtol=1e-3, atol=1e-4)
    assert results["gpu"][2] == pytest.approx(results["cpu"][2], rel=1e-4)
