#!/usr/bin/env bash
# The wheels the images install from (make wheelhouse), and the build contexts of the images:
#
#   wheelhouse/cpu   smalgo with the `cpu` extra (xgboost-cpu)  (containers/Dockerfile)
#   wheelhouse/gpu   the same with the `gpu` extra: XGBoost,  (containers/Dockerfile.gpu)
#                    numba-cuda and the CUDA runtime wheels
#   wheelhouse/build setuptools, to build the smalgo wheel again offline
#
#   containers/build_wheelhouse.sh                  fetch everything (needs PyPI)
#   containers/build_wheelhouse.sh --smalgo-only    rebuild only the smalgo wheel, offline
#
# Wheels are fetched for the images' Python (CPython 3.11, manylinux x86_64), whichever Python
# runs this, and pinned to the versions installed in the project's environment ($PYTHON, whose
# tests they passed); what that environment lacks (the GPU packages) resolves to the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WHEELHOUSE=${WHEELHOUSE:-wheelhouse}
FLAVOURS=(cpu gpu)

build_smalgo_wheel() {  # into each flavour's directory, from wheelhouse/build alone
    for flavour in "${FLAVOURS[@]}"; do
        rm -f "$WHEELHOUSE/$flavour"/smalgo-*.whl
        "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-index \
            --find-links "$WHEELHOUSE/build" --wheel-dir "$WHEELHOUSE/$flavour" .
    done
}

if [ "${1:-}" = "--smalgo-only" ]; then
    if [ ! -f "$WHEELHOUSE/.complete" ]; then
        echo "wheelhouse: $WHEELHOUSE is missing or incomplete; run make wheelhouse (it needs PyPI)" >&2
        exit 1
    fi
    build_smalgo_wheel
    exit 0
fi

platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 36); do  # glibc 2.17 .. 2.36 (Debian bookworm's)
    platforms+=(--platform "manylinux_2_${minor}_x86_64")
done
installed=$(mktemp)
constraints=$(mktemp)
trap 'rm -f "$installed" "$constraints"' EXIT
"$PYTHON" -m pip freeze --exclude-editable | grep -v '^smalgo' > "$installed" || true
cp "$installed" "$constraints"

# From scratch, so that no wheel of an earlier resolution lingers for pip to pick in the image.
rm -rf "$WHEELHOUSE"
mkdir -p "$WHEELHOUSE/build" "${FLAVOURS[@]/#/$WHEELHOUSE/}"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$WHEELHOUSE/build" --only-binary=:all: \
    "$(sed -n 's/^requires = \["\(setuptools[^"]*\)"\]/\1/p' pyproject.toml)"
build_smalgo_wheel
for flavour in "${FLAVOURS[@]}"; do
    dest="$WHEELHOUSE/$flavour"
    wheel=$(ls "$dest"/smalgo-*.whl)
    extra="[$flavour]"  # cpu: xgboost-cpu; gpu: XGBoost's CUDA build, numba-cuda and CUDA
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$dest" \
        --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" \
        --constraint "$constraints" "smalgo$extra @ file://$PWD/$wheel"
    echo "wheelhouse: $dest: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
    if [ "$flavour" = cpu ]; then
        # The GPU wheelhouse keeps the CPU one's versions, and only those: the project's
        # environment may hold test-only builds of GPU packages (numba-cuda for the CUDA
        # simulator) that the `gpu` extra's CUDA 12 pins would contradict.
        names=$(ls "$dest"/*.whl | xargs -n1 basename | sed 's/-.*//' | tr 'A-Z_.' 'a-z--')
        awk -F'==' -v names="$names" '
            BEGIN { split(names, list, "\n"); for (i in list) keep[list[i]] = 1 }
            { name = tolower($1); gsub(/[_.]/, "-", name); if (name in keep) print }' "$installed" > "$constraints"
        # XGBoost's CUDA build, of the version the CPU images' xgboost-cpu has (the tests ran it).
        sed -n 's/^xgboost[-_]cpu==/xgboost==/Ip' "$installed" >> "$constraints"
    fi
done
touch "$WHEELHOUSE/.complete"
