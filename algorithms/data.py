"""What an algorithm reads its training data through.

`TrainingData` is the seam between the algorithms and the job layer: the job layer implements it
over `/opt/ml/input/data/<channel>` (File mode) and the `<channel>_<epoch>` FIFOs (Pipe mode);
`InMemoryData` implements it over arrays, for tests, benchmarks and library users. Algorithms see
only mini-batches, one pass at a time, so they can stream data larger than memory. `rebatch` cuts
a decoder's blocks into those mini-batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from .batch import Batch
from .errors import UserError


@runtime_checkable
class TrainingData(Protocol):
    """The channels of one training job."""

    def has_channel(self, channel: str) -> bool:
        """Whether the job was given this channel (e.g. an optional `test` channel)."""
        ...

    def batches(self, channel: str, batch_size: int, *, feature_dim: int | None = None) -> Iterator[Batch]:
        """One full pass over the channel, as mini-batches of at most batch_size rows. Each call
        starts a new pass (in Pipe mode the k-th call reads FIFO <channel>_<k>), so call it once
        per epoch. With feature_dim set, a batch of another width raises UserError naming the
        file."""
        ...


class InMemoryData:
    """`TrainingData` over in-memory arrays.

    `channels` maps a channel name to X, to (X, y) or to (X, y, w). X is a 2-D dense array or a
    scipy sparse matrix; it is converted once to float32 (dense: C-contiguous; sparse: CSR) so
    that every batch is a view or a cheap row slice, as a decoder would hand it over.
    """

    def __init__(self, channels: Mapping[str, object]) -> None:
        self._channels: dict[str, tuple] = {}
        for name, value in channels.items():
            X, y, w = _unpack(name, value)
            self._channels[name] = (X, y, w)

    def has_channel(self, channel: str) -> bool:
        return channel in self._channels

    def n_rows(self, channel: str) -> int:
        return self._channels[channel][0].shape[0]

    def batches(self, channel: str, batch_size: int, *, feature_dim: int | None = None) -> Iterator[Batch]:
        if channel not in self._channels:
            raise UserError(
                f"No data channel named {channel!r}; channels given: {', '.join(sorted(self._channels)) or 'none'}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        X, y, w = self._channels[channel]
        if feature_dim is not None and X.shape[1] != feature_dim:
            raise UserError(
                f"Channel {channel!r} (in-memory data) has {X.shape[1]} features per record; "
                f"expected {feature_dim} (hyperparameter feature_dim)."
            )
        return self._iterate(X, y, w, batch_size=batch_size)

    @staticmethod
    def _iterate(X, y, w, *, batch_size: int) -> Iterator[Batch]:
        n = X.shape[0]
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            yield Batch(
                X[start:stop],
                None if y is None else y[start:stop],
                None if w is None else w[start:stop],
            )


def _unpack(name: str, value: object) -> tuple:
    if isinstance(value, tuple):
        if not 1 <= len(value) <= 3:
            raise ValueError(f"channel {name!r}: expected X, (X, y) or (X, y, w)")
        X, y, w = (tuple(value) + (None, None))[:3]
    else:
        X, y, w = value, None, None
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
        X.sort_indices()
    else:
        X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"channel {name!r}: X must be 2-D, got shape {X.shape}")
    y = None if y is None else np.ascontiguousarray(y, dtype=np.float32).reshape(-1)
    w = None if w is None else np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    for label, v in (("y", y), ("w", w)):
        if v is not None and v.shape[0] != X.shape[0]:
            raise ValueError(f"channel {name!r}: {label} has {v.shape[0]} entries for {X.shape[0]} rows")
    return X, y, w


def rebatch(pieces: Iterable[tuple], batch_size: int) -> Iterator[tuple]:
    """Cut a stream of (X, y) or (X, y, w) pieces (y and w None or one value per row) into
    pieces of exactly batch_size rows, the last possibly smaller, whatever the pieces' sizes: what
    a decoder hands over in blocks of its own becomes the algorithm's mini-batches. A piece that
    holds a whole batch is passed on as a view; the rest are stacked. Every piece must agree on
    which of y and w it has."""
    pending: list[tuple] = []
    pending_rows = 0
    for piece in pieces:
        start, rows = 0, piece[0].shape[0]
        while start < rows:
            take = min(batch_size - pending_rows, rows - start)
            part = tuple(None if v is None else v[start : start + take] for v in piece)
            start += take
            if not pending and take == batch_size:
                yield part
                continue
            pending.append(part)
            pending_rows += take
            if pending_rows == batch_size:
                yield stack_rows(pending)
                pending, pending_rows = [], 0
    if pending:
        yield stack_rows(pending)


def stack_rows(parts: list[tuple]) -> tuple:
    """One (X, y[, w]) of the parts, in order; CSR when any part is sparse. Sparse parts of
    different widths (LIBSVM, whose width is each file's largest index + 1) are widened to the
    widest: the missing columns hold no entries."""
    if len(parts) == 1:
        return parts[0]
    Xs = [part[0] for part in parts]
    X: np.ndarray | sp.csr_matrix
    if any(sp.issparse(X) for X in Xs):
        width = max(X.shape[1] for X in Xs)
        Xs = [_widened(X if sp.issparse(X) else sp.csr_matrix(X), width) for X in Xs]
        X = sp.vstack(Xs, format="csr")
    else:
        X = np.concatenate(Xs)
    others = tuple(
        None if parts[0][k] is None else np.concatenate([part[k] for part in parts]) for k in range(1, len(parts[0]))
    )
    return (X, *others)


def _widened(X: sp.csr_matrix, width: int) -> sp.csr_matrix:
    if X.shape[1] == width:
        return X
    return sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], width))
