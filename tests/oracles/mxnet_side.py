"""Runs inside the MXNet 1.9.1 oracle venv (tests/oracles/setup_mxnet_env.sh), driven by
tests/test_mxnet_ndarray.py:

    python mxnet_side.py save OUT SPEC.npz [--dict]   # mx.nd.save of the arrays in SPEC.npz
    python mxnet_side.py load IN OUT.npz              # mx.nd.load, saved as .npz (names kept)

In an .npz the arrays are named a0, a1, ... for a list, or by their names for a dict, and a
list of names in file order is kept under the key "__order__".
"""

import sys

import mxnet as mx
import numpy as np


def main(argv):
    command, path, npz = argv[:3]
    if command == "save":
        stored = np.load(npz)
        order = [str(name) for name in stored["__order__"]]
        arrays = [mx.nd.array(stored[name], dtype=stored[name].dtype) for name in order]
        mx.nd.save(path, dict(zip(order, arrays, strict=True)) if "--dict" in argv else arrays)
    elif command == "load":
        loaded = mx.nd.load(path)
        if isinstance(loaded, dict):
            order = list(loaded)
            arrays = {name: loaded[name].asnumpy() for name in order}
        else:
            order = [f"a{i}" for i in range(len(loaded))]
            arrays = {name: array.asnumpy() for name, array in zip(order, loaded, strict=True)}
        np.savez(npz, __order__=np.array(order), **arrays)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
