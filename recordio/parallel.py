"""Split a nogil numba kernel's rows over a few threads.

The kernels release the GIL, so plain threads run them in parallel. This costs nothing at
compile time, where numba's `parallel=True` made the inlined wire-format kernels several times
slower to compile, and small inputs (an inference request) stay on the calling thread.
"""

from __future__ import annotations

import itertools
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


def over_row_pieces(n_rows: int, work: Callable[[int, int], T], min_rows: int,
                    stop: Callable[[T], bool]) -> list[T]:
    """Like `over_rows`, for memory-bound work with a cost per call: threads (one per
    `min_rows` rows, at most one per core) take small consecutive pieces of at least
    min_rows / 4 rows in turn, each its next piece as soon as it finishes one. On a shared
    machine a thread whose core is taken by another process for a while then holds up one small
    piece, not half of the rows: with a fixed half each, such stalls made one read in ten
    several times slower. Once a piece's result satisfies `stop`, no more pieces start and the
    results (in row order) cover only the pieces that ran."""
    threads = min(_THREADS, n_rows // max(1, min_rows))
    if threads <= 1:
        return [work(0, n_rows)]
    pieces = max(threads, min(32 * threads, n_rows // max(1, min_rows // 4)))
    bounds = [n_rows * i // pieces for i in range(pieces + 1)]
    results: list = [None] * pieces
    next_piece = itertools.count()  # next() on a count is atomic under the GIL
    stopped = threading.Event()

    def take_pieces() -> None:
        while not stopped.is_set():
            i = next(next_piece)
            if i >= pieces:
                return
            results[i] = result = work(bounds[i], bounds[i + 1])
            if stop(result):
                stopped.set()

    for future in [_threads().submit(take_pieces) for _ in range(threads)]:
        future.result()
    return [r for r in results if r is not None]


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
