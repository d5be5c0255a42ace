"""Parquet training files (XGBoost's `application/x-parquet`, spec section 4.5.2): the first column
is the label, the rest are the features, as in AWS's XGBoost image. Read with pyarrow (imported
only when a Parquet file is read: the other formats never need it) straight into float32 numpy
arrays, column by column; a null becomes NaN, XGBoost's missing value.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from smalgo.algorithms.errors import UserError


def read_parquet(source: Path | bytes, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a Parquet file (a path, or its bytes read from a pipe): X float32 C-contiguous,
    y float32. UserError naming the file when it is no Parquet file, has fewer than two columns
    or a column that is not numeric."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency of the images and the tests
        raise UserError(f"{name}: reading Parquet needs pyarrow, which this installation lacks.") from None
    try:
        table = pq.read_table(source if isinstance(source, Path) else io.BytesIO(source))
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{name} cannot be read as Parquet: {exc}") from None
    if table.num_columns < 2:
        raise UserError(
            f"{name} has {table.num_columns} column(s); Parquet training data needs the label "
            f"(first column) and at least one feature."
        )
    X = np.empty((table.num_rows, table.num_columns - 1), dtype=np.float32)
    y = np.empty(table.num_rows, dtype=np.float32)
    for k, column_name in enumerate(table.column_names):
        column = table.column(k)
        if not (
            pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)
        ):
            raise UserError(f"{name}: column {column_name!r} holds {column.type}, not numbers.")
        values = column.to_numpy(zero_copy_only=False)
        target = y if k == 0 else X[:, k - 1]
        target[:] = np.asarray(values, dtype=np.float64) if values.dtype == object else values
    return X, y
