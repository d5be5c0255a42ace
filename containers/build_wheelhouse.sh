#!/usr/bin/env bash
# make wheelhouse: the wheels the images install from, offline.
#
#   wheelhouse/cpu   smalgo and its dependencies             (containers/Dockerfile)
#   wheelhouse/gpu   the same with the `gpu` extra: XGBoost,  (containers/Dockerfile.gpu)
#                    numba-cuda and the CUDA runtime wheels
#
# Wheels are fetched for the images' Python (CPython 3.11, manylinux x86_64), whichever Python
# runs this, and pinned to the versions installed in the project's environment ($PYTHON, whose
# tests they passed); what that environment lacks (the GPU packages) resolves to the newest.
# Once the wheelhouse exists, `make images` needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WHEELHOUSE=${WHEELHOUSE:-wheelhouse}

platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 36); do  # glibc 2.17 .. 2.36 (Debian bookworm's)
    platforms+=(--platform "manylinux_2_${minor}_x86_64")
done

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PYTHON" -m pip freeze --exclude-editable | grep -v '^smalgo' > "$constraints" || true

for flavour in cpu gpu; do
    dest="$WHEELHOUSE/$flavour"
    mkdir -p "$dest"
    rm -f "$dest"/smalgo-*.whl
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$dest" .
    wheel=$(ls "$dest"/smalgo-*.whl)
    requirement="smalgo @ file://$PWD/$wheel"
    [ "$flavour" = gpu ] && requirement="smalgo[gpu] @ file://$PWD/$wheel"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$dest" \
        --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" \
        --constraint "$constraints" "$requirement"
    echo "wheelhouse: $dest: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
done
