"""K-means on a GPU: device choice (SMALGO_DEVICE), the numba-cuda assignment kernel against the
CPU kernels, and the hook that sends large dense batches to it.

No GPU is needed: the kernel and the hook run in numba's CUDA simulator, in one subprocess
(NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, and the simulator runs
each GPU thread as a Python thread, so the data stay small). The one test that needs a real GPU
runs where numba.cuda finds one and is skipped with "no CUDA GPU" elsewhere.
"""

from __future__ import annotations

import ctypes.util
import json
import logging
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import fake_probe, real_cuda_gpu, run_in_cuda_simulator

from smalgo.algorithms import kmeans
from smalgo.algorithms.batch import Batch
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.kmeans import _kernels as kernels
from smalgo.algorithms.runtime import device

# A GPU probe nobody else has made, and no SMALGO_DEVICE, for every test here.
pytestmark = pytest.mark.usefixtures("fresh_device_state")


# --------------------------------------------------------------------------- device choice


@pytest.mark.parametrize("value", [None, "", "auto", "AUTO", " auto "])
def test_auto_without_gpu_uses_the_cpu(monkeypatch, value):
    if value is not None:
        monkeypatch.setenv("SMALGO_DEVICE", value)
    fake_probe(monkeypatch, False, "no driver")
    assert device.requested_device() == "auto"
    assert device.use_gpu() is False


def test_auto_with_gpu_uses_it(monkeypatch):
    fake_probe(monkeypatch, True, "Fake GPU, compute capability 9.0")
    assert device.use_gpu() is True


def test_cpu_never_looks_for_a_gpu(monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "cpu")
    probes = fake_probe(monkeypatch, True, "Fake GPU, compute capability 9.0")
    assert device.use_gpu() is False
    assert probes == []


def test_gpu_with_gpu_uses_it(monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "Gpu")
    fake_probe(monkeypatch, True, "Fake GPU, compute capability 9.0")
    assert device.use_gpu() is True


def test_gpu_without_gpu_is_a_user_error_that_says_why(monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "gpu")
    fake_probe(monkeypatch, False, "numba.cuda.is_available() is False (CUDA_ERROR_NO_DEVICE)")
    with pytest.raises(UserError) as error:
        device.use_gpu()
    message = str(error.value)
    assert "SMALGO_DEVICE=gpu" in message
    assert "no CUDA GPU can be used" in message
    assert "CUDA_ERROR_NO_DEVICE" in message
    assert "SMALGO_DEVICE=auto or cpu" in message


def test_bad_value_is_a_user_error_naming_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "tpu")
    probes = fake_probe(monkeypatch, True, "Fake GPU, compute capability 9.0")
    with pytest.raises(UserError) as error:
        device.use_gpu()
    assert str(error.value) == "SMALGO_DEVICE='tpu' is not a device; valid values: auto, cpu, gpu (unset means auto)."
    assert probes == []


def test_probe_runs_once_until_forgotten(monkeypatch):
    probes = fake_probe(monkeypatch, False, "no driver")
    for _ in range(3):
        assert device.gpu_available() is False
        assert device.use_gpu() is False
    assert len(probes) == 1
    device.forget_gpu_probe()
    device.gpu_available()
    assert len(probes) == 2


def test_device_is_logged_once_with_the_gpu_name(monkeypatch, caplog):
    fake_probe(monkeypatch, True, "Fake GPU, compute capability 9.0")
    with caplog.at_level(logging.INFO, logger="smalgo.device"):
        device.use_gpu()
        device.use_gpu()
    lines = [r.getMessage() for r in caplog.records if r.name == "smalgo.device"]
    assert lines == [
        "Kernels with a GPU version run on the GPU: Fake GPU, compute capability 9.0 (SMALGO_DEVICE=auto)."
    ]


def test_device_log_says_why_auto_chose_the_cpu(monkeypatch, caplog):
    fake_probe(monkeypatch, False, "numba-cuda cannot be imported (ModuleNotFoundError: No module named 'numba.cuda')")
    with caplog.at_level(logging.INFO, logger="smalgo.device"):
        device.use_gpu()
    assert [r.getMessage() for r in caplog.records if r.name == "smalgo.device"] == [
        "Kernels with a GPU version run on the CPU (SMALGO_DEVICE=auto; no CUDA GPU: numba-cuda cannot be "
        "imported (ModuleNotFoundError: No module named 'numba.cuda'))."
    ]


class _NumbaCudaWhoseProbeFails:
    @staticmethod
    def is_available():
        raise RuntimeError("cuInit failed: libcuda.so.1 is too old")


class _NumbaCudaWithoutDevice:
    @staticmethod
    def is_available():
        return False

    @staticmethod
    def cuda_error():
        return "CUDA_ERROR_NO_DEVICE"


def _install_numba_cuda(monkeypatch, module) -> None:
    import numba

    monkeypatch.setitem(sys.modules, "numba.cuda", module)
    monkeypatch.setattr(numba, "cuda", module, raising=False)


@pytest.fixture
def driver_library_loads(monkeypatch):
    """Lets the probe past its driver-library check (no libcuda here): any library that loads."""
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(device, "CUDA_DRIVER_LIBRARY", ctypes.util.find_library("c") or "libc.so.6")


def test_probe_without_the_driver_library_does_not_import_numba_cuda(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(device, "CUDA_DRIVER_LIBRARY", "libcuda-that-does-not-exist.so.1")
    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # an import would fail the probe differently
    available, why = device._look_for_gpu()
    assert available is False
    assert why.startswith("no CUDA driver (libcuda-that-does-not-exist.so.1 cannot be loaded: ")


def test_probe_turns_a_missing_numba_cuda_into_no_gpu(monkeypatch, driver_library_loads):
    import numba

    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # makes `from numba import cuda` fail
    monkeypatch.delattr(numba, "cuda", raising=False)
    available, why = device._look_for_gpu()
    assert available is False
    assert why.startswith("numba-cuda cannot be imported (ModuleNotFoundError: ")


def test_probe_turns_a_failing_driver_into_no_gpu(monkeypatch, driver_library_loads):
    _install_numba_cuda(monkeypatch, _NumbaCudaWhoseProbeFails)
    assert device._look_for_gpu() == (
        False,
        "numba.cuda failed to open the GPU (RuntimeError: cuInit failed: libcuda.so.1 is too old)",
    )


def test_probe_reports_the_drivers_reason_for_no_gpu(monkeypatch, driver_library_loads):
    _install_numba_cuda(monkeypatch, _NumbaCudaWithoutDevice)
    assert device._look_for_gpu() == (False, "numba.cuda.is_available() is False (CUDA_ERROR_NO_DEVICE)")


# --------------------------------------------------------------------------- the hook, without a GPU


@pytest.fixture
def cpu_assignments(monkeypatch) -> list[int]:
    """Rows of each dense batch the CPU kernel assigns."""
    calls: list[int] = []
    real = kernels.assign_dense

    def counting(X, *args):
        calls.append(X.shape[0])
        return real(X, *args)

    monkeypatch.setattr(kernels, "assign_dense", counting)
    return calls


def test_without_gpu_large_batches_stay_on_the_cpu_and_small_ones_never_probe(monkeypatch, cpu_assignments):
    probes = fake_probe(monkeypatch, False, "no driver")
    rng = np.random.default_rng(3)
    model = kmeans._kmeans.KMeansModel(rng.normal(size=(4, 3)))
    model.predict(Batch(rng.normal(size=(kmeans._kmeans.MIN_GPU_ROWS - 1, 3)).astype(np.float32)))
    assert probes == []
    for _ in range(2):
        model.predict(Batch(rng.normal(size=(kmeans._kmeans.MIN_GPU_ROWS, 3)).astype(np.float32)))
    assert probes == [1]
    assert cpu_assignments == [
        kmeans._kmeans.MIN_GPU_ROWS - 1,
        kmeans._kmeans.MIN_GPU_ROWS,
        kmeans._kmeans.MIN_GPU_ROWS,
    ]


def test_forced_gpu_without_gpu_fails_the_first_large_batch(monkeypatch):
    monkeypatch.setenv("SMALGO_DEVICE", "gpu")
    fake_probe(monkeypatch, False, "no driver")
    model = kmeans._kmeans.KMeansModel(np.eye(3))
    model.predict(Batch(np.zeros((10, 3), dtype=np.float32)))  # too small to look for a GPU
    with pytest.raises(UserError, match="SMALGO_DEVICE=gpu, but no CUDA GPU can be used: no driver"):
        model.predict(Batch(np.zeros((kmeans._kmeans.MIN_GPU_ROWS, 3), dtype=np.float32)))


# --------------------------------------------------------------------------- the CUDA simulator

# Runs with NUMBA_ENABLE_CUDASIM=1; argv[1] is a directory for its results: one .npz per
# comparison of the GPU kernel with the CPU kernel, hook.npz and facts.json for the hook.
_SIMULATOR_SCRIPT = textwrap.dedent("""
    import json, logging, os, sys
    import numpy as np
    import scipy.sparse as sp

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    out = sys.argv[1]
    from smalgo.algorithms.kmeans import _kernels as kernels
    from smalgo.algorithms.runtime import device
    from smalgo.algorithms import kmeans
    from smalgo.algorithms.batch import Batch

    facts = {"numba_cuda_after_importing_kmeans": "numba.cuda" in sys.modules}
    os.environ["SMALGO_DEVICE"] = "cpu"
    kmeans._kmeans.KMeansModel(np.eye(3)).predict(Batch(np.ones((kmeans._kmeans.MIN_GPU_ROWS, 3), np.float32)))
    facts["numba_cuda_after_cpu_predict"] = "numba.cuda" in sys.modules

    import numba
    from smalgo.algorithms.kmeans import _cuda as _kmeans_cuda
    facts["simulator"] = bool(numba.config.ENABLE_CUDASIM)

    def compare(name, X, centers, shift, seeded=None):
        X = np.ascontiguousarray(X, dtype=np.float32)
        table = kmeans._kmeans._CenterTable(centers, np.asarray(shift, np.float32), seeded)
        excluded = table.shifted_sq_norms == kernels.UNSEEDED_SQ_NORM
        n = X.shape[0]
        cpu_labels, gpu_labels = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        cpu_sq, gpu_sq = np.full(n, np.nan), np.full(n, np.nan)
        kernels.assign_dense(X, table.shift, table.shifted_t_m2, table.shifted_sq_norms, table.centers,
                             cpu_labels, cpu_sq)
        _kmeans_cuda.assign_dense_gpu(X, table.centers, excluded, gpu_labels, gpu_sq)
        np.savez(os.path.join(out, name + ".npz"), X=X, centers=table.centers, excluded=excluded,
                 cpu_labels=cpu_labels, cpu_sq=cpu_sq, gpu_labels=gpu_labels, gpu_sq=gpu_sq)

    rng = np.random.default_rng(11)
    X = rng.normal(100.0, 3.0, (300, 8))  # far from the origin: the CPU works on shifted values
    compare("random", X, rng.normal(100.0, 3.0, (7, 8)), X.mean(axis=0))
    X = rng.normal(0.0, 1.0, (64, 5))
    compare("one_center", X, rng.normal(0.0, 1.0, (1, 5)), X.mean(axis=0))
    X = rng.normal(0.0, 4.0, (200, 1))
    compare("one_feature", X, rng.normal(0.0, 4.0, (4, 1)), X.mean(axis=0))
    # Excluded centers sit on rows of X: they would win those rows if they counted.
    X = rng.normal(0.0, 1.0, (200, 6))
    centers = rng.normal(0.0, 1.0, (8, 6))
    centers[[1, 4, 7]] = X[[5, 6, 7]]
    seeded = np.ones(8, bool)
    seeded[[1, 4, 7]] = False
    compare("excluded", X, centers, X.mean(axis=0), seeded)
    compare("all_excluded", X[:20], centers[:2], X.mean(axis=0), np.zeros(2, bool))
    # Small integers: float32 is exact, so rows midway between centers tie exactly on the CPU
    # too; center 4 duplicates center 0 and must never win.
    grid = np.array([(a, b) for a in range(-1, 4) for b in range(-1, 4)], np.float64)
    corners = np.array([(0, 0), (2, 0), (0, 2), (2, 2), (0, 0)], np.float64)
    compare("ties", np.tile(grid, (3, 1)), corners, (1.0, 1.0))

    # The hook: predictions and a training update, on the GPU (counted) and on the CPU.
    gpu_calls = []
    real_assign = _kmeans_cuda.assign_dense_gpu
    def counting_assign(X, *args):
        gpu_calls.append(X.shape[0])
        return real_assign(X, *args)
    _kmeans_cuda.assign_dense_gpu = counting_assign
    kmeans._kmeans.MIN_GPU_ROWS = 256  # the simulator is too slow for the real threshold's batches

    model = kmeans._kmeans.KMeansModel(rng.normal(0.0, 5.0, (6, 4)))
    X = rng.normal(0.0, 5.0, (300, 4)).astype(np.float32)
    seeded = np.array([True, False, True, True, False, True])
    arrays = {}

    def run_on(choice):
        os.environ["SMALGO_DEVICE"] = choice
        arrays.update({f"{choice}_{k}": v for k, v in model.predict(Batch(X)).items()})
        labels, sq = kmeans._kmeans._CenterTable(model.centers, model.centers.mean(axis=0), seeded).nearest(X)
        arrays[f"{choice}_excluded_labels"], arrays[f"{choice}_excluded_sq"] = labels, sq
        state = kmeans._kmeans.StreamingKMeans(12, 4, init_method="random", half_life_time_size=0,
                                                  rng=np.random.default_rng(7))
        losses = [state.update(Batch(X)), state.update(Batch(X[::-1].copy()))]
        arrays[f"{choice}_losses"] = np.array(losses)
        arrays[f"{choice}_centers"], arrays[f"{choice}_counts"] = state.centers, state.counts

    run_on("cpu")
    facts["gpu_calls_on_cpu"] = list(gpu_calls)
    run_on("gpu")
    facts["gpu_calls_on_gpu"] = list(gpu_calls)
    model.predict(Batch(X[:255]))
    model.predict(Batch(sp.csr_matrix(X)))
    facts["gpu_calls_after_small_and_sparse"] = list(gpu_calls)
    np.savez(os.path.join(out, "hook.npz"), **arrays)
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(facts, f)
""")

_SIMULATED_CASES = ("random", "one_center", "one_feature", "excluded", "all_excluded", "ties")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Runs _SIMULATOR_SCRIPT once; returns (results directory, its stderr)."""
    out = tmp_path_factory.mktemp("cudasim")
    stderr = run_in_cuda_simulator(_SIMULATOR_SCRIPT, out)
    return out, stderr


def exact_nearest(X, centers, excluded):
    """Reference: the first of the smallest float64 distances among the centers not excluded
    (center 0 when all are)."""
    sq = ((X.astype(np.float64)[:, None, :] - centers.astype(np.float64)[None, :, :]) ** 2).sum(axis=2)
    if excluded.all():
        labels = np.zeros(X.shape[0], dtype=np.int64)
    else:
        labels = np.argmin(np.where(excluded, np.inf, sq), axis=1)
    return labels, sq[np.arange(X.shape[0]), labels]


@pytest.mark.parametrize("case", _SIMULATED_CASES)
def test_simulated_gpu_kernel_matches_the_cpu_kernel(simulated, case):
    out, _ = simulated
    r = np.load(out / f"{case}.npz")
    np.testing.assert_array_equal(r["gpu_labels"], r["cpu_labels"])
    np.testing.assert_allclose(r["gpu_sq"], r["cpu_sq"], rtol=1e-6, atol=0)
    labels, sq = exact_nearest(r["X"], r["centers"], r["excluded"])
    np.testing.assert_array_equal(r["gpu_labels"], labels)
    np.testing.assert_allclose(r["gpu_sq"], sq, rtol=1e-12, atol=0)
    assert (r["gpu_sq"] >= 0).all()


def test_simulated_excluded_centers_never_win(simulated):
    out, _ = simulated
    r = np.load(out / "excluded.npz")
    assert np.flatnonzero(r["excluded"]).tolist() == [1, 4, 7]
    assert not np.isin(r["gpu_labels"], [1, 4, 7]).any()
    assert (r["gpu_sq"][5:8] > 0).all()  # the rows under the excluded centers went elsewhere
    r = np.load(out / "all_excluded.npz")
    assert (r["gpu_labels"] == 0).all()


def test_simulated_ties_go_to_the_lowest_center_index(simulated):
    out, _ = simulated
    r = np.load(out / "ties.npz")
    X, labels = r["X"], r["gpu_labels"]
    row = {tuple(x): label for x, label in zip(X.tolist(), labels.tolist(), strict=True)}
    assert row[(1.0, 1.0)] == 0  # equidistant to all four corners (and to the duplicate, 4)
    assert row[(1.0, 0.0)] == 0  # between centers 0 and 1
    assert row[(2.0, 1.0)] == 1  # between centers 1 and 3
    assert row[(1.0, 2.0)] == 2  # between centers 2 and 3
    assert row[(0.0, 0.0)] == 0  # on centers 0 and 4
    assert 4 not in labels


def test_simulator_run_used_the_simulator_and_kmeans_imports_no_numba_cuda_on_the_cpu(simulated):
    out, stderr = simulated
    facts = json.loads((out / "facts.json").read_text())
    assert facts["simulator"] is True
    assert facts["numba_cuda_after_importing_kmeans"] is False
    assert facts["numba_cuda_after_cpu_predict"] is False
    assert "smalgo.device: Kernels with a GPU version run on the CPU (SMALGO_DEVICE=cpu)." in stderr
    assert "smalgo.device: Kernels with a GPU version run on the GPU: " in stderr
    assert "compute capability" in stderr


def test_simulated_hook_sends_large_dense_batches_to_the_gpu_kernel(simulated):
    out, _ = simulated
    facts = json.loads((out / "facts.json").read_text())
    assert facts["gpu_calls_on_cpu"] == []
    # predict, the table with excluded centers, two training updates; then nothing for a batch
    # below the threshold or a sparse one.
    assert facts["gpu_calls_on_gpu"] == [300, 300, 300, 300]
    assert facts["gpu_calls_after_small_and_sparse"] == [300, 300, 300, 300]


def test_simulated_hook_gives_the_cpu_answers(simulated):
    out, _ = simulated
    r = np.load(out / "hook.npz")
    np.testing.assert_array_equal(r["gpu_closest_cluster"], r["cpu_closest_cluster"])
    np.testing.assert_allclose(r["gpu_distance_to_cluster"], r["cpu_distance_to_cluster"], rtol=1e-6)
    np.testing.assert_array_equal(r["gpu_excluded_labels"], r["cpu_excluded_labels"])
    assert not np.isin(r["gpu_excluded_labels"], [1, 4]).any()
    np.testing.assert_allclose(r["gpu_excluded_sq"], r["cpu_excluded_sq"], rtol=1e-6)
    np.testing.assert_allclose(r["gpu_losses"], r["cpu_losses"], rtol=1e-6)
    np.testing.assert_allclose(r["gpu_centers"], r["cpu_centers"], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(r["gpu_counts"], r["cpu_counts"])


# --------------------------------------------------------------------------- a real GPU


def test_real_gpu_matches_the_cpu_on_a_large_batch(monkeypatch):
    if not real_cuda_gpu():
        pytest.skip("no CUDA GPU")
    from smalgo.algorithms.kmeans import _cuda as _kmeans_cuda

    rng = np.random.default_rng(5)
    X = rng.normal(5.0, 2.0, (200_000, 50)).astype(np.float32)
    centers = rng.normal(5.0, 2.0, (20, 50)).astype(np.float32)
    seeded = np.ones(20, bool)
    seeded[[3, 17]] = False
    table = kmeans._kmeans._CenterTable(centers, X[:1000].mean(axis=0), seeded)
    cpu_labels, gpu_labels = np.empty(X.shape[0], np.int64), np.empty(X.shape[0], np.int64)
    cpu_sq, gpu_sq = np.empty(X.shape[0]), np.empty(X.shape[0])
    kernels.assign_dense(X, table.shift, table.shifted_t_m2, table.shifted_sq_norms, table.centers, cpu_labels, cpu_sq)
    _kmeans_cuda.assign_dense_gpu(X, table.centers, ~seeded, gpu_labels, gpu_sq)
    np.testing.assert_array_equal(gpu_labels, cpu_labels)
    np.testing.assert_allclose(gpu_sq, cpu_sq, rtol=1e-6)
    assert not np.isin(gpu_labels, [3, 17]).any()

    gpu_calls = []
    real_assign = _kmeans_cuda.assign_dense_gpu
    monkeypatch.setattr(
        _kmeans_cuda, "assign_dense_gpu", lambda X, *args: gpu_calls.append(X.shape[0]) or real_assign(X, *args)
    )
    model = kmeans._kmeans.KMeansModel(centers)
    monkeypatch.setenv("SMALGO_DEVICE", "cpu")
    on_cpu = model.predict(Batch(X))
    monkeypatch.setenv("SMALGO_DEVICE", "gpu")
    on_gpu = model.predict(Batch(X))
    assert gpu_calls == [X.shape[0]]
    np.testing.assert_array_equal(on_gpu["closest_cluster"], on_cpu["closest_cluster"])
    np.testing.assert_allclose(on_gpu["distance_to_cluster"], on_cpu["distance_to_cluster"], rtol=1e-6)


def test_sparse_batches_are_never_sent_to_the_gpu(monkeypatch, cpu_assignments):
    # In-process: the hook must not even ask for a GPU for a sparse batch.
    probes = fake_probe(monkeypatch, True, "Fake GPU, compute capability 9.0")
    model = kmeans._kmeans.KMeansModel(np.eye(3))
    X = sp.random(kmeans._kmeans.MIN_GPU_ROWS, 3, density=0.5, format="csr", dtype=np.float32, random_state=1)
    model.predict(Batch(X))
    assert probes == []
    assert cpu_assignments == []
