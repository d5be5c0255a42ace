"""SDK v2 side of the RecordIO benchmark. Runs ONLY under the SDK venv (benchmarks/.venv-sdk).

Invoked by run.py as a subprocess; not meant to be run by hand, but it can be:

    benchmarks/.venv-sdk/bin/python benchmarks/recordio/sdk_side.py SPEC.json

SPEC.json (written by run.py) names the input arrays (.npy, produced by run.py so both sides see
identical data), the files to write, the repeats, and the files written by other
implementations that the SDK should decode for the cross-check. Results go to spec["result"] as
JSON: wall-clock seconds of each timed repeat, measured here around the SDK's own work only
(data loading, process start-up and imports are not timed).

What is timed, as an SDK user would do it:
  write: open(path, "wb") + write_numpy_to_dense_tensor / write_spmatrix_to_sparse_tensor
         (the CSR matrix is passed as-is; the SDK calls .tocsr() and .getrow() itself) + close.
  read:  open(path, "rb") + read_records(f) (every Record parsed into a protobuf object) +
         turning the Records into arrays: dense -> float32 (n, d) ndarray and float32 labels;
         sparse -> scipy CSR float32 (n, d) built from each record's keys/values, plus labels
         (np.fromiter per record; see records_to_arrays).
         "read_records_s" additionally reports the read_records part alone.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def _load_sdk():
    import logging

    logging.disable(logging.INFO)  # sagemaker.config prints INFO lines on import
    import sagemaker
    from google.protobuf import __version__ as pb_version
    from google.protobuf.internal import api_implementation
    from sagemaker.amazon.common import (
        read_records,
        write_numpy_to_dense_tensor,
        write_spmatrix_to_sparse_tensor,
    )

    info = {
        "sagemaker": sagemaker.__version__,
        "protobuf": pb_version,
        "protobuf_backend": api_implementation.Type(),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    return read_records, write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor, info


read_records, write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor, SDK_INFO = _load_sdk()


def load_case(case):
    y = np.load(case["labels"])
    if case["kind"] == "dense":
        X = np.load(case["X"])
    else:
        z = np.load(case["X"])
        X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    return X, y


def sdk_write(kind, path, X, y):
    with open(path, "wb") as f:
        if kind == "dense":
            write_numpy_to_dense_tensor(f, X, y)
        else:
            write_spmatrix_to_sparse_tensor(f, X, y)


def records_to_arrays(kind, records):
    """Turn parsed Records into arrays the way a user of the SDK would.

    np.fromiter over each record's repeated field was the fastest of the natural conversions
    we tried (np.array over the list of containers, list.extend + np.array, per-row np.array),
    so the SDK is not handicapped by a slow conversion.
    """
    n = len(records)
    y = np.empty(n, dtype=np.float32)
    if kind == "dense":
        X = None
        for i, r in enumerate(records):
            v = r.features["values"].float32_tensor.values
            if X is None:
                X = np.empty((n, len(v)), dtype=np.float32)
            X[i] = np.fromiter(v, np.float32, len(v))
            y[i] = r.label["values"].float32_tensor.values[0]
        return (np.empty((0, 0), np.float32) if X is None else X), y
    data, indices = [], []
    indptr = np.zeros(n + 1, dtype=np.int64)
    d = 0
    for i, r in enumerate(records):
        t = r.features["values"].float32_tensor
        v, k = t.values, t.keys
        data.append(np.fromiter(v, np.float32, len(v)))
        indices.append(np.fromiter(k, np.int64, len(k)))
        indptr[i + 1] = indptr[i] + len(v)
        if i == 0:
            d = int(t.shape[0])
        y[i] = r.label["values"].float32_tensor.values[0]
    X = sp.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int64),
            indptr,
        ),
        shape=(n, d),
    )
    return X, y


def sdk_read(kind, path):
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        records = read_records(f)
    t1 = time.perf_counter()
    X, y = records_to_arrays(kind, records)
    return X, y, t1 - t0


def save_arrays(kind, out_path, X, y):
    if kind == "dense":
        np.savez(out_path, X=X, y=y)
    else:
        X = X.tocsr()
        np.savez(out_path, data=X.data, indices=X.indices, indptr=X.indptr, shape=np.array(X.shape), y=y)


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    result = {"info": SDK_INFO, "cases": {}}
    for name, case in spec["cases"].items():
        kind = case["kind"]
        X, y = load_case(case)
        res = {"write_s": [], "read_s": [], "read_records_s": []}
        path = case["sdk_file"]

        # Untimed warm-up on a small slice (imports, first-call costs), same as the other impls.
        warm = case["sdk_file"] + ".warmup"
        sdk_write(kind, warm, X[:200], y[:200])
        sdk_read(kind, warm)
        os.remove(warm)

        for _ in range(spec["repeats_write"]):
            t0 = time.perf_counter()
            sdk_write(kind, path, X, y)
            res["write_s"].append(time.perf_counter() - t0)
        for _ in range(spec["repeats_read"]):
            t0 = time.perf_counter()
            Xr, yr, t_rr = sdk_read(kind, path)
            res["read_s"].append(time.perf_counter() - t0)
            res["read_records_s"].append(t_rr)
            del Xr, yr
        res["file_bytes"] = os.path.getsize(path)

        # Cross-check: decode files written by the other implementations; run.py compares.
        res["decoded"] = {}
        for impl, other_path in case.get("decode", {}).items():
            Xo, yo, _ = sdk_read(kind, other_path)
            out = os.path.join(spec["workdir"], f"sdk_decoded_{name}_{impl}.npz")
            save_arrays(kind, out, Xo, yo)
            res["decoded"][impl] = out
        result["cases"][name] = res
        print(
            f"[sdk] {name}: write {sorted(res['write_s'])} s, read {sorted(res['read_s'])} s",
            file=sys.stderr,
            flush=True,
        )

    with open(spec["result"], "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
