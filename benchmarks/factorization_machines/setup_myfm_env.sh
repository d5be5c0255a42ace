#!/usr/bin/env bash
# Creates the benchmark-only venv holding myfm, the C++ factorization machine the benchmark
# compares against (benchmarks/.venv-myfm, git-ignored). myfm never goes into the project's
# environment. `make myfm-env` runs this; running it by hand is equivalent.
#   MYFM_SPEC   pip requirement for myfm (default: the version the benchmark was measured with)
#   PYTHON      interpreter to build the venv from (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/../.venv-myfm"
spec="${MYFM_SPEC:-myfm==0.4.0}"
"${PYTHON:-python3}" -m venv "${venv}"
"${venv}/bin/pip" install --disable-pip-version-check -q "${spec}" numpy scipy scikit-learn
"${venv}/bin/python" -c "import myfm, sklearn; print(f'myfm venv ready: myfm {myfm.__version__}, scikit-learn {sklearn.__version__}')"
