"""Every RecordIO file under ../shared/testdata reads as ../shared/testdata/README.md says."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from recordio_helpers import TESTDATA

from smalgo import recordio

SDK = TESTDATA / "sagemaker-python-sdk"
XGB = TESTDATA / "sagemaker-xgboost-container" / "data" / "recordio_protobuf"


def _both_paths(path):
    fast = recordio.read(path)
    slow = recordio.read(path, fast=False)
    X, y = fast
    Xs, ys = slow
    assert type(X) is type(Xs)
    dense = X.toarray() if sp.issparse(X) else X
    assert np.array_equal(dense, Xs.toarray() if sp.issparse(Xs) else Xs)
    assert (y is None and ys is None) or np.array_equal(y, ys)
    return fast


def test_sdk_dense_matrix():
    X, y = _both_paths(SDK / "matrix_0.pbr")
    assert isinstance(X, np.ndarray) and X.shape == (100, 784) and X.dtype == np.float32
    assert y is None
    assert np.isfinite(X).all() and X.any()


def test_sdk_sparse_nips():
    X, y = _both_paths(SDK / "nips-train_1.pbr")
    assert sp.isspmatrix_csr(X) and X.shape == (350, 12419) and X.dtype == np.float32
    assert y is None and X.nnz > 0


@pytest.mark.parametrize("name", ["train.pb", "pb_files/train.pb"])
def test_xgboost_dense_int32(name):
    X, y = _both_paths(XGB / name)
    assert isinstance(X, np.ndarray) and X.shape == (5, 5)
    assert y.shape == (5,) and y.dtype == np.float32


def test_xgboost_sparse_int32():
    X, y = _both_paths(XGB / "sparse" / "train.pb")
    assert sp.issparse(X) and X.shape == (5, 5) and y.shape == (5,)


def test_xgboost_single_feature_label():
    X, y = _both_paths(XGB / "single_feature_label.pb")
    assert X.shape == (1, 1) and X.toarray().tolist() == [[0.0]]
    assert y.tolist() == [0.0]


def test_xgboost_sparse_edge_cases():
    files = sorted((XGB / "sparse_edge_cases").glob("*.pbr"))
    assert len(files) == 8
    rows = 0
    for path in files:
        X, y = _both_paths(path)
        assert sp.issparse(X) and X.shape[1] == 3 and y.shape == (X.shape[0],)
        rows += X.shape[0]
    assert rows == 25
    X, _ = recordio.read(XGB / "sparse_edge_cases" / "single_value_center.pbr")
    assert X.toarray().tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_sdk_non_record_payloads_rejected():
    with pytest.raises(recordio.RecordIOError, match="not a valid aialgs.data.Record"):
        recordio.read(SDK / "first_10_rows_recordio", fast=False)
