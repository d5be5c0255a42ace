"""Threads for the algorithms' hot loops: row chunks spread over the process's one fork-safe
pool (smalgo.recordio.parallel.shared_pool), and single-threaded BLAS inside it.

numba kernels and BLAS calls release the GIL, so plain threads run them in parallel. BLAS runs
one thread per worker of ours: OpenBLAS's own threads, on cores that other processes also use,
took 1.5-19 s for a k-means assignment that single-threaded BLAS does in 0.26-0.35 s. A numba
`parallel=True` region per mini-batch, by contrast, waits for every worker to be scheduled:
0.85-1.3 s over 100 batches of 5,000 rows on a busy machine, against 0.48-0.75 s on one thread.
"""

from __future__ import annotations

import contextlib
import itertools

import numba

from smalgo.recordio import parallel

# Multiply-adds below which a call runs on the calling thread alone (about a millisecond of
# work: handing chunks to another thread costs tens of microseconds, more on a busy machine).
MIN_THREADED_WORK = 1 << 23
# Smallest row chunk handed to a thread.
_MIN_CHUNK_ROWS = 256

_blas_controller = None
_blas_controller_ready = False


def can_limit_blas_threads() -> bool:
    """Whether single_threaded_blas() really limits BLAS (threadpoolctl is installed)."""
    return blas_controller() is not None


def single_threaded_blas():
    """A context in which BLAS calls run on the calling thread (threadpoolctl), or a no-op
    context without threadpoolctl. Small products issued one after another (seeding) and
    products issued from several threads at once (assignment) are both slowed badly by
    OpenBLAS's own threads when the cores are busy: 1.5-19 s instead of 0.26-0.35 s for the
    500,000 x 50 x 160 assignment, measured with other jobs on the machine."""
    controller = blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def blas_controller():
    """threadpoolctl's controller when threadpoolctl is installed, else None (the numba path)."""
    global _blas_controller, _blas_controller_ready
    if not _blas_controller_ready:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_controller = None
        else:
            _blas_controller = ThreadpoolController()
        _blas_controller_ready = True
    return _blas_controller


def run_in_row_chunks(rows_kernel, args, n_rows: int, *, work: int, make_scratch) -> None:
    """Call rows_kernel(*args, start, stop, scratch) over 0..n_rows in chunks, on this thread and
    on up to numba.get_num_threads() - 1 helpers (which respects NUMBA_NUM_THREADS);
    make_scratch(chunk_rows) gives each thread its scratch buffers (and may collect them, to
    sum per-thread partial results afterwards). `work` (multiply-adds) decides whether helpers
    are worth waking. Also used by PCA, whose per-chunk BLAS products profit the same way."""
    helpers = numba.get_num_threads() - 1
    if helpers < 1 or work < MIN_THREADED_WORK or n_rows < 2 * _MIN_CHUNK_ROWS:
        rows_kernel(*args, 0, n_rows, make_scratch(n_rows))
        return
    # A few chunks per thread, so that a thread that starts late still gets a share.
    chunk = max(_MIN_CHUNK_ROWS, -(-n_rows // (4 * (helpers + 1))))
    starts = range(0, n_rows, chunk)
    claims = itertools.count()  # next() on a count is atomic under the GIL

    def work_through_chunks() -> None:
        scratch = None
        for claim in claims:
            if claim >= len(starts):
                return
            if scratch is None:
                scratch = make_scratch(chunk)
            start = starts[claim]
            rows_kernel(*args, start, min(n_rows, start + chunk), scratch)

    pool = parallel.shared_pool(helpers)
    futures = [pool.submit(work_through_chunks) for _ in range(min(helpers, len(starts) - 1))]
    try:
        work_through_chunks()
    finally:
        for future in futures:
            if not future.cancel():
                future.result()
