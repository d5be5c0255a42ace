"""The benchmark's data: `rows` x `features` float32 values around 8 Gaussian centers, dense or
sparse (each value kept with probability `density`), and a 0/1 label from a linear rule, so that
every algorithm learns something real. Written as the channel files a training job reads
(RecordIO-protobuf and CSV) and as inference request bodies (1 and 1,000 records)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from smalgo.algorithms.contract import Algorithm
from smalgo.algorithms.formats.content_types import CSV, RECORDIO_PROTOBUF
from smalgo.recordio import write_dense, write_sparse

CENTERS = 8
# Rows of the short job each training run starts with, untimed (numba's cache is loaded then).
WARMUP_ROWS = 1000
RECORDIO = "recordio"
CSV_FORM = "csv"
FORMS = (RECORDIO, CSV_FORM)


@dataclass(frozen=True)
class DataSet:
    X: np.ndarray | sp.csr_matrix
    labels: np.ndarray

    @property
    def rows(self) -> int:
        return self.X.shape[0]

    @property
    def features(self) -> int:
        return self.X.shape[1]

    @property
    def sparse(self) -> bool:
        return sp.issparse(self.X)

    def head(self, rows: int) -> DataSet:
        return DataSet(self.X[:rows], self.labels[:rows])

    def dense(self) -> np.ndarray:
        if isinstance(self.X, sp.csr_matrix):
            return self.X.toarray()
        return np.asarray(self.X)


def generate(rows: int, features: int, *, density: float = 1.0, seed: int = 0) -> DataSet:
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-5.0, 5.0, (CENTERS, features)).astype(np.float32)
    X = centers[rng.integers(0, CENTERS, rows)] + rng.normal(0.0, 1.0, (rows, features)).astype(np.float32)
    weights = rng.normal(0.0, 1.0, features).astype(np.float32)
    if density < 1.0:
        X = sp.csr_matrix(X * (rng.random((rows, features)) < density), dtype=np.float32)
    scores = np.asarray(X @ weights).ravel()
    labels = (scores > np.median(scores)).astype(np.float32)
    return DataSet(X, labels)


def csv_content_type(algorithm: Algorithm) -> str | None:
    """The CSV content type the algorithm's jobs read (label first when it learns from labels),
    or None when it reads no CSV (factorization machines: RecordIO-protobuf only)."""
    if CSV not in algorithm.content_types:
        return None
    return CSV if algorithm.sample_job.labelled else f"{CSV};label_size=0"


def content_type(algorithm: Algorithm, form: str) -> str | None:
    if form == RECORDIO:
        return RECORDIO_PROTOBUF
    return csv_content_type(algorithm)


def write_channel_file(data: DataSet, path: Path, form: str, *, labelled: bool) -> Path:
    """One training channel file: RecordIO-protobuf records with their label, or CSV lines with
    the label first when `labelled`."""
    if form == RECORDIO:
        if data.sparse:
            write_sparse(str(path), data.X, data.labels)
        else:
            write_dense(str(path), data.X, data.labels)
        return path
    columns = data.dense()
    if labelled:
        columns = np.column_stack([data.labels, columns])
    _write_csv(columns, path)
    return path


def _write_csv(values: np.ndarray, path: Path) -> None:
    """pyarrow's CSV writer (a dependency already, for Parquet): ten times numpy.savetxt's speed."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    table = pa.table({f"c{i}": values[:, i] for i in range(values.shape[1])})
    pa_csv.write_csv(table, str(path), pa_csv.WriteOptions(include_header=False))


def request_body(data: DataSet, form: str) -> bytes:
    """An inference request of every row of `data`, without labels."""
    if form == RECORDIO:
        buffer = io.BytesIO()
        if data.sparse:
            write_sparse(buffer, data.X)
        else:
            write_dense(buffer, np.asarray(data.X))
        return buffer.getvalue()
    path_free = io.StringIO()
    np.savetxt(path_free, data.dense(), delimiter=",", fmt="%.7g")
    return path_free.getvalue().encode()
