"""The data model every algorithm consumes: one mini-batch of rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import scipy.sparse as sp


@dataclass
class Batch:
    """A mini-batch of rows.

    X: float32, either a C-contiguous 2-D `numpy.ndarray` or a `scipy.sparse.csr_matrix`.
    y: 1-D float32 labels, or None when the data carries none.
    w: 1-D float32 per-row weights, or None (all rows weigh 1).
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray | None = None
    w: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.X.ndim != 2:
            raise ValueError(f"Batch.X must be 2-D, got shape {self.X.shape}")
        n = self.X.shape[0]
        for name in ("y", "w"):
            v = getattr(self, name)
            if v is not None and (v.ndim != 1 or v.shape[0] != n):
                raise ValueError(f"Batch.{name} must be 1-D with {n} entries, got shape {v.shape}")

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.X)

    def dense_X(self) -> np.ndarray:
        """X as a dense C-contiguous float32 array (densifies a sparse batch)."""
        if sp.issparse(self.X):
            return np.ascontiguousarray(cast("sp.csr_matrix", self.X).toarray(), dtype=np.float32)
        return np.ascontiguousarray(self.X, dtype=np.float32)


def first_non_finite(X: np.ndarray | sp.csr_matrix) -> tuple[int, int, float] | None:
    """(row, column, value) of the first NaN or infinite value of a 2-D float array or CSR
    matrix, in row-major order, or None when every value is finite. Training (for algorithms
    with `finite_values_only`) and the server share it, so both refuse the same values."""
    values = X.data if sp.issparse(X) else X
    finite = np.isfinite(values)
    if finite.all():
        return None
    first_bad = int(np.argmin(finite.reshape(-1)))  # the first False
    if sp.issparse(X):
        csr = cast("sp.csr_matrix", X)
        row = int(np.searchsorted(csr.indptr, first_bad, side="right")) - 1
        return row, int(csr.indices[first_bad]), float(csr.data[first_bad])
    row, column = divmod(first_bad, X.shape[1])
    return row, column, float(X[row, column])


def non_finite_hint(value: float) -> str:
    """What to add to a message about a non-finite value: an infinity may be a number too
    large for float32, which the decoders read as inf."""
    return " (a number beyond the float32 range, about 3.4e38, reads as inf)" if math.isinf(value) else ""
