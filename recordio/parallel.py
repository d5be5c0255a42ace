"""The process's CPU count and its one fork-safe thread pool, and row ranges spread over it.

The numba kernels (RecordIO's here, the CSV parser's and the algorithms' above) release the GIL,
so plain threads run them in parallel. This costs nothing at compile time, where numba's
`parallel=True` made the inlined wire-format kernels several times slower to compile, and small
inputs (an inference request) stay on the calling thread. This module is the bottom of the
package graph so that every package can share it: `available_cpus()` is the one CPU count and
`shared_pool()` the one pool, used by RecordIO's `over_rows` / `over_row_pieces`, the CSV
decoder and smalgo.algorithms.runtime.threads.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# Below this many rows per thread, a thread hand-off costs more than it saves.
MIN_ROWS_PER_THREAD = 16384


def available_cpus() -> int:
    """The CPUs this process may run on (a container's cpuset, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


# Threads RecordIO's row loops split their rows over (more stop paying for memory-bound work).
_THREADS = min(8, available_cpus())

_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def shared_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool, with at least `threads` threads (callers submit no more tasks than
    they asked for, and no task waits on another task of the pool): created on first use, grown
    when a caller needs more, and made again after a fork (a forked child, e.g. a gunicorn
    worker, inherits the pool object but not its threads, and would wait on them forever)."""
    global _pool, _pool_pid
    with _pool_lock:
        forked = _pool_pid != os.getpid()
        if _pool is None or forked or _pool._max_workers < threads:
            # The pool being replaced is not shut down: another thread (a server's request) may
            # have just got it and be about to submit, which a shut-down pool refuses with
            # RuntimeError. Once nobody holds it, its idle threads exit by themselves.
            size = threads if _pool is None or forked else max(threads, _pool._max_workers)
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="smalgo")
            _pool_pid = os.getpid()
        return _pool


def over_rows(n_rows: int, work: Callable[[int, int], T]) -> list[T]:
    """Call work(lo, hi) on consecutive row ranges covering 0..n_rows, in parallel when the
    input is large enough; results in row order. `work` must touch only its own rows."""
    parts = min(_THREADS, n_rows // MIN_ROWS_PER_THREAD)
    if parts <= 1:
        return [work(0, n_rows)]
    pool = shared_pool(parts)
    bounds = [n_rows * i // parts for i in range(parts + 1)]
    futures = [pool.submit(work, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]
    return [f.result() for f in futures]


def over_row_pieces(n_rows: int, work: Callable[[int, int], T], min_rows: int, *, stop: Callable[[T], bool]) -> list[T]:
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

    pool = shared_pool(threads)
    for future in [pool.submit(take_pieces) for _ in range(threads)]:
        future.result()
    return [r for r in results if r is not None]


# The I/O thread stays an executor of its own, not a task on the shared pool: a write there
# would take a thread that the encoding of the next block (over_rows, sized to the pool) waits
# for, so one piece of every block would queue behind the write and the overlap be lost; a
# pipe whose reader is slow would hold a pool thread (and every user of the pool) for as long.
# One thread also keeps writes in submission order.
_writer: ThreadPoolExecutor | None = None
_writer_pid = -1


def submit_io(fn: Callable[..., T], *args) -> Future[T]:
    """Run fn(*args) on a thread of its own, beside the row threads (for a write that overlaps
    the encoding of the next block); made again after a fork, as the shared pool is."""
    global _writer, _writer_pid
    with _pool_lock:
        if _writer is None or _writer_pid != os.getpid():
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smalgo-recordio-io")
            _writer_pid = os.getpid()
    return _writer.submit(fn, *args)
