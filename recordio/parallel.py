"""Split a nogil numba kernel's rows over a few threads.

The kernels release the GIL, so plain threads run them in parallel. This costs nothing at
compile time, where numba's `parallel=True` made the inlined wire-format kernels several times
slower to compile, and small inputs (an inference request) stay on the calling thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

# Below this many rows per thread, a thread hand-off costs more than it saves.
MIN_ROWS_PER_THREAD = 16384

_THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    """The pool, made again in a forked child (a gunicorn worker inherits the pool object but
    none of its threads, and would wait for them forever)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="smalgo-recordio")
            _pool_pid = os.getpid()
        return _pool


def over_rows(n_rows: int, work: Callable[[int, int], T]) -> list[T]:
    """Call work(lo, hi) on consecutive row ranges covering 0..n_rows, in parallel when the
    input is large enough; results in row order. `work` must touch only its own rows."""
    parts = min(_THREADS, n_rows // MIN_ROWS_PER_THREAD)
    if parts <= 1:
        return [work(0, n_rows)]
    pool = _threads()
    bounds = [n_rows * i // parts for i in range(parts + 1)]
    futures = [pool.submit(work, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    return [f.result() for f in futures]


_writer: ThreadPoolExecutor | None = None
_writer_pid = -1


def submit_io(fn: Callable[..., T], *args) -> "Future[T]":
    """Run fn(*args) on a thread of its own, beside the row threads (for a write that overlaps
    the encoding of the next block)."""
    global _writer, _writer_pid
    with _pool_lock:
        if _writer is None or _writer_pid != os.getpid():
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smalgo-recordio-io")
            _writer_pid = os.getpid()
    return _writer.submit(fn, *args)
