"""Which device the algorithms' kernels run on: the CPU, or a CUDA GPU through numba-cuda.

The environment variable SMALGO_DEVICE chooses:

    auto (default)  the GPU when numba-cuda finds a usable one, else the CPU
    cpu             the CPU, without looking for a GPU
    gpu             the GPU; a UserError when there is none, rather than a job that quietly
                    runs on the CPU at a fraction of the speed the user paid for

Looking for a GPU imports numba.cuda (about a second) and initialises the CUDA driver, so it
happens at most once per process, on first need: this module imports nothing of numba.cuda, and
CPU-only users who never ask pay nothing. `forget_gpu_probe()` drops the cached answer (tests).

The driver is initialised in the process that asks; a process forked after that cannot use the
GPU (CUDA is not fork-safe). The k-means dispatch therefore asks only for batches large enough
to be worth a GPU, which the server's warm-up in gunicorn's master, before it forks, never is.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping

from smalgo.algorithms.errors import UserError

ENV_VARIABLE = "SMALGO_DEVICE"
CHOICES = ("auto", "cpu", "gpu")
# What the NVIDIA driver installs, and what the NVIDIA container toolkit mounts into a container.
CUDA_DRIVER_LIBRARY = "libcuda.so.1"

logger = logging.getLogger("smalgo.device")

# (whether a usable GPU was found, its description or why none was found); None until probed.
_gpu_probe: tuple[bool, str] | None = None
# The last device choice logged, so that each process logs its device once (again only if the
# choice changes, e.g. a test that sets SMALGO_DEVICE).
_logged_choice: str | None = None


def requested_device(environ: Mapping[str, str] | None = None) -> str:
    """SMALGO_DEVICE (of `environ`, default os.environ), lower-cased: one of CHOICES ("auto"
    when unset or empty)."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_VARIABLE, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise UserError(
            f"{ENV_VARIABLE}={env[ENV_VARIABLE]!r} is not a device; "
            f"valid values: {', '.join(CHOICES)} (unset means auto)."
        )
    return value


def gpu_available() -> bool:
    """Whether numba-cuda is importable and finds a usable CUDA GPU (probed once per process)."""
    return _probe_gpu()[0]


def use_gpu() -> bool:
    """Whether the kernels that have a GPU version should use it, per SMALGO_DEVICE.
    Raises UserError for a bad value, and for `gpu` when no GPU can be used."""
    requested = requested_device()
    if requested == "cpu":
        _log_choice("cpu", f"the CPU ({ENV_VARIABLE}=cpu)")
        return False
    available = gpu_available()
    detail = _probe_gpu()[1]
    if requested == "gpu" and not available:
        raise UserError(
            f"{ENV_VARIABLE}=gpu, but no CUDA GPU can be used: {detail}. "
            f"Run on a GPU instance, or set {ENV_VARIABLE}=auto or cpu."
        )
    if available:
        _log_choice("gpu", f"the GPU: {detail} ({ENV_VARIABLE}={requested})")
    else:
        _log_choice("cpu", f"the CPU ({ENV_VARIABLE}=auto; no CUDA GPU: {detail})")
    return available


def forget_gpu_probe() -> None:
    """Drop the cached probe and log state, so the next call looks for a GPU again."""
    global _gpu_probe, _logged_choice
    _gpu_probe = None
    _logged_choice = None


def driver_problem() -> str | None:
    """Why the CUDA driver library cannot be loaded, or None. Cheap, and safe before a fork (it
    only loads the library; it initialises nothing), so a server can check it at start-up."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return None
    try:
        ctypes.CDLL(CUDA_DRIVER_LIBRARY)
    except OSError as exc:
        return f"no CUDA driver ({CUDA_DRIVER_LIBRARY} cannot be loaded: {exc})"
    return None


def _probe_gpu() -> tuple[bool, str]:
    global _gpu_probe
    if _gpu_probe is None:
        _gpu_probe = _look_for_gpu()
    return _gpu_probe


def _look_for_gpu() -> tuple[bool, str]:
    # Without the driver library there is no GPU to find: say so in microseconds, before the
    # second-long import of numba.cuda (a CPU instance running the GPU image, the test venv).
    # The CUDA simulator needs no driver.
    problem = driver_problem()
    if problem:
        return False, problem
    # Any exception means "no GPU": a missing package, a missing libcuda or NVVM, a driver too
    # old for the toolkit, no device visible in the container all surface as different types.
    try:
        from numba import cuda
    except Exception as exc:
        return False, f"numba-cuda cannot be imported ({type(exc).__name__}: {exc})"
    try:
        if not cuda.is_available():
            why = cuda.cuda_error() or "the CUDA driver or NVVM was not found"
            return False, f"numba.cuda.is_available() is False ({why})"
        return True, _describe(cuda.get_current_device())
    except Exception as exc:
        return False, f"numba.cuda failed to open the GPU ({type(exc).__name__}: {exc})"


def _describe(gpu) -> str:
    # The simulator's device has no name; older numba-cuda bindings give the name as bytes.
    name = getattr(gpu, "name", "the CUDA simulator")
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    major, minor = gpu.compute_capability
    return f"{name}, compute capability {major}.{minor}"


def _log_choice(choice: str, message: str) -> None:
    global _logged_choice
    if _logged_choice != choice:
        _logged_choice = choice
        logger.info("Kernels with a GPU version run on %s.", message)
