#!/usr/bin/env bash
# Creates the test-only venv holding MXNet 1.9.1 (tests/oracles/.venv-mxnet, git-ignored), the
# library AWS's built-in images write their model_algo-1 files with: the oracle the MXNet file
# tests check smalgo's reader and writer against. It never goes into the project's environment:
# MXNet was retired in 2023 and needs numpy < 1.24.
#   PYTHON   interpreter to build the venv from (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/.venv-mxnet"
"${PYTHON:-python3}" -m venv "${venv}"
"${venv}/bin/pip" install --disable-pip-version-check -q "mxnet==1.9.1" "numpy<1.24"
"${venv}/bin/python" -c "import mxnet, numpy; print(f'MXNet venv ready: mxnet {mxnet.__version__}, numpy {numpy.__version__}')"
