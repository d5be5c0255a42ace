#!/usr/bin/env bash
# Creates the benchmark-only venv holding the SageMaker Python SDK v2 (benchmarks/.venv-sdk,
# git-ignored). The SDK never goes into the project's environment: it pins its own protobuf.
# smalgo is installed there too, editable with its `sagemaker` extra (as a user's
# `pip install 'smalgo[sagemaker]'`), for the tests of smalgo.sagemaker (tests/sdk_estimators.py).
# run.py calls this on first use; running it by hand is equivalent.
#   SAGEMAKER_SPEC   pip requirement for the SDK (default: the version the README reports)
#   PYTHON           interpreter to build the venv from (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/../.venv-sdk"
repo="$(cd "${here}/../.." && pwd)"
spec="${SAGEMAKER_SPEC:-sagemaker==2.257.7}"
"${PYTHON:-python3}" -m venv "${venv}"
"${venv}/bin/pip" install --disable-pip-version-check -q "${spec}" numpy scipy -e "${repo}[sagemaker]"
# -P: not the current directory first on sys.path, where the repository's sagemaker/ folder
# (smalgo.sagemaker) would stand in for the SDK.
"${venv}/bin/python" -P - <<'PY'
import os
os.environ["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"
import logging; logging.disable(logging.INFO)
import sagemaker, google.protobuf
from sagemaker.amazon.common import read_records, write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor
import smalgo.sagemaker
print(f"SDK venv ready: sagemaker {sagemaker.__version__}, protobuf {google.protobuf.__version__}, smalgo.sagemaker")
PY
