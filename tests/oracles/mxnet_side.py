"""Runs inside the MXNet 1.9.1 oracle venv (tests/oracles/setup_mxnet_env.sh), driven by
tests/test_mxnet_ndarray.py:

    python mxnet_side.py save OUT SPEC.npz [--dict]   # mx.nd.save of the arrays in SPEC.npz
    python mxnet_side.py load IN OUT.npz              # mx.nd.load, saved as .npz (names kept)
    python mxnet_side.py checkpoint-save OUT_ZIP SPEC.json
    python mxnet_side.py checkpoint-load IN_ZIP OUT.npz [DATA.npy]

In an .npz the arrays are named a0, a1, ... for a list, or by their names for a dict, and a
list of names in file order is kept under the key "__order__".

checkpoint-save writes model_algo-1 the way AWS's images do: the graph built with mx.sym,
mx.model.save_checkpoint, zipped. SPEC.json: "kind" (linear-learner: FullyConnected fc0 on data,
prefix mx-mod, beside the JSON files; factorization-machines: w0_weight, w1_weight (d, 1),
v (d, k), members renamed to symbol.json and params; factorization-machines-old:
Linear_Plus_Bias (FullyConnected) and v (k, d)), "arrays" (an .npz of the parameters by name),
"head" (the output op named out, or null for none), "extras" (other JSON members, by name).

checkpoint-load reads it back as AWS's examples do: unzip; linear learner
mx.module.Module.load('mx-mod', 0); factorization machines renamed to model-symbol.json and
model-0000.params, Module.load('./model', 0, False, label_names=['out_label']). OUT.npz holds
"arg:<name>" and "aux:<name>" arrays, "__symbol__" (the graph's JSON as MXNet writes it) and,
with DATA.npy, "__outputs__": the bound module's forward pass on those rows.
"""

import json
import os
import sys
import tempfile
import zipfile

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
    elif command == "checkpoint-save":
        checkpoint_save(path, npz)
    elif command == "checkpoint-load":
        checkpoint_load(path, npz, argv[3] if len(argv) > 3 else None)
    else:
        raise SystemExit(__doc__)


def graph(kind, arrays, head):
    data = mx.sym.var("data")
    if kind == "linear-learner":
        outputs = arrays["fc0_weight"].shape[0]
        no_bias = {} if "fc0_bias" in arrays else {"no_bias": True}
        net = mx.sym.FullyConnected(data, name="fc0", num_hidden=outputs, **no_bias)
    elif kind == "factorization-machines":
        d, k = arrays["v"].shape
        w1 = mx.sym.var("w1_weight", shape=(d, 1))
        w0 = mx.sym.var("w0_weight", shape=(1,))
        v = mx.sym.var("v", shape=(d, k))
        linear = mx.sym.broadcast_add(mx.sym.dot(data, w1), w0)
        xv = mx.sym.dot(data, v)
        pairwise = 0.5 * mx.sym.sum(
            mx.sym.square(xv) - mx.sym.dot(mx.sym.square(data), mx.sym.square(v)), axis=1, keepdims=True
        )
        net = linear + pairwise
    else:  # the older factorization machines: a FullyConnected linear part, v as (k, d)
        k, d = arrays["v"].shape
        linear = mx.sym.FullyConnected(data, name="Linear_Plus_Bias", num_hidden=1)
        v = mx.sym.var("v", shape=(k, d))
        xv = mx.sym.dot(data, v, transpose_b=True)
        x2v2 = mx.sym.dot(mx.sym.square(data), mx.sym.square(v), transpose_b=True)
        net = linear + 0.5 * mx.sym.sum(mx.sym.square(xv) - x2v2, axis=1, keepdims=True)
    if head is None:
        return net
    options = {"use_linear": True} if head == "SVMOutput" else {}
    return getattr(mx.sym, head)(net, name="out", **options)


def checkpoint_save(out_zip, spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    stored = np.load(spec["arrays"])
    arrays = {name: stored[name] for name in stored.files}
    kind = spec["kind"]
    symbol = graph(kind, arrays, spec.get("head"))
    arg_params = {name: mx.nd.array(array, dtype=array.dtype) for name, array in arrays.items()}
    with tempfile.TemporaryDirectory() as work:
        if kind == "linear-learner":
            mx.model.save_checkpoint(os.path.join(work, "mx-mod"), 0, symbol, arg_params, {})
            files = [(name, None) for name in spec.get("extras", {})]
            files += [("mx-mod-symbol.json", "mx-mod-symbol.json"), ("mx-mod-0000.params", "mx-mod-0000.params")]
        else:
            mx.model.save_checkpoint(os.path.join(work, "model"), 0, symbol, arg_params, {})
            files = [("symbol.json", "model-symbol.json"), ("params", "model-0000.params")]
            files += [(name, None) for name in spec.get("extras", {})]
        with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, saved in files:
                if saved is None:
                    archive.writestr(name, json.dumps(spec["extras"][name]))
                else:
                    archive.write(os.path.join(work, saved), name)


def checkpoint_load(in_zip, out_npz, data_path):
    with tempfile.TemporaryDirectory() as work:
        with zipfile.ZipFile(in_zip) as archive:
            archive.extractall(work)
        if os.path.exists(os.path.join(work, "symbol.json")):
            os.rename(os.path.join(work, "symbol.json"), os.path.join(work, "model-symbol.json"))
            os.rename(os.path.join(work, "params"), os.path.join(work, "model-0000.params"))
            module = mx.module.Module.load(os.path.join(work, "model"), 0, False, label_names=["out_label"])
        else:
            (symbol_file,) = [name for name in os.listdir(work) if name.endswith("-symbol.json")]
            module = mx.module.Module.load(os.path.join(work, symbol_file[: -len("-symbol.json")]), 0)
        arg_params, aux_params = module._arg_params, module._aux_params
        result = {f"arg:{name}": array.asnumpy() for name, array in arg_params.items()}
        result.update({f"aux:{name}": array.asnumpy() for name, array in aux_params.items()})
        result["__symbol__"] = np.array(module.symbol.tojson())
        if data_path is not None:
            X = np.load(data_path)
            module.bind(data_shapes=[("data", X.shape)], for_training=False)
            module.forward(mx.io.DataBatch([mx.nd.array(X)]), is_train=False)
            result["__outputs__"] = module.get_outputs()[0].asnumpy()
        np.savez(out_npz, **result)


if __name__ == "__main__":
    main(sys.argv[1:])
