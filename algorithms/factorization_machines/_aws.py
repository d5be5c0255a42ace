"""Factorization machines models in the form AWS's `factorization-machines` image saves them:
model_algo-1, a zip of an MXNet module checkpoint (formats/mxnet_checkpoint.py) whose members
are `symbol.json`, `params` and `meta.json`.

What public material shows of AWS's file (docs/aws-models.md lists the sources): the parameters
are `w0_weight` (the bias, (1,)), `w1_weight` (the linear weights, (feature_dim, 1)) and `v` (the
factors, (feature_dim, num_factors)); older images named the first two `Linear_Plus_Bias_bias`
and `Linear_Plus_Bias_weight` ((1, feature_dim), a FullyConnected layer's) and kept `v` as
(num_factors, feature_dim). meta.json holds `training_parameters` with `feature_dim`. The graph
has a label variable `out_label`. Not shown: the rest of meta.json and the graph's ops, hence
where the predictor type is. So the reader takes it from `predictor_type` in the zip's JSON
files (training_parameters, where AWS's hyperparameters would be), else from the graph's output
op (LogisticRegressionOutput or sigmoid: binary_classifier; LinearRegressionOutput: regressor),
else it refuses the file saying so. Either naming is read; `v` in either orientation, told apart
by feature_dim.

Written back, a model is w0 + x . w1 + 0.5 sum((x v)^2 - x^2 v^2) as an MXNet graph ending in
`out` (LogisticRegressionOutput for a binary classifier: its forward pass is the score),
the parameters under the newer names, and meta.json's training_parameters (the model's
hyperparameters, as strings as SageMaker passes them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.mxnet_checkpoint import MXNetCheckpoint, SymbolGraph
from smalgo.algorithms.hyperparameters import Schema

from ._fm import BINARY, PREDICTOR_TYPES, REGRESSOR, FactorizationMachinesModel

SYMBOL_FILE, PARAMS_FILE, META_FILE = "symbol.json", "params", "meta.json"
BIAS, LINEAR, FACTORS = "w0_weight", "w1_weight", "v"
OLD_BIAS, OLD_LINEAR = "Linear_Plus_Bias_bias", "Linear_Plus_Bias_weight"
OUTPUT_OPS = {
    "LogisticRegressionOutput": BINARY,
    "sigmoid": BINARY,
    "LinearRegressionOutput": REGRESSOR,
}


def model_from_checkpoint(
    hyperparameters: Schema, checkpoint: MXNetCheckpoint, *, source: str
) -> FactorizationMachinesModel | None:
    """The model AWS's factorization machines saved as `checkpoint`, or None when it has none of
    their parameter names."""
    arg = checkpoint.arg_params
    if not {BIAS, LINEAR, OLD_BIAS, OLD_LINEAR} & set(arg):
        return None
    newer = bool({BIAS, LINEAR} & set(arg))
    names = (BIAS, LINEAR, FACTORS) if newer else (OLD_BIAS, OLD_LINEAR, FACTORS)
    missing = [name for name in names if name not in arg]
    if missing:
        raise UserError(
            f"{source}: an AWS factorization machines model has {', '.join(names)}; this one lacks "
            f"{', '.join(missing)} (it has {checkpoint.describe()})."
        )
    w0, w, V = (_finite_float32(arg[name], name, source) for name in names)
    if w0.size != 1 or w.ndim > 2 or (w.ndim == 2 and 1 not in w.shape) or V.ndim != 2:
        raise UserError(
            f"{source}: the AWS factorization machines model's {names[0]} {w0.shape}, {names[1]} {w.shape} and "
            f"v {V.shape} are not a bias, a vector and a matrix."
        )
    w = w.reshape(-1)
    feature_dim = w.size
    # Newer images keep v as (feature_dim, num_factors), older ones as (num_factors, feature_dim).
    if V.shape == (feature_dim, feature_dim):
        factors = V if newer else V.T
    elif V.shape[0] == feature_dim:
        factors = V
    elif V.shape[1] == feature_dim:
        factors = V.T
    else:
        raise UserError(
            f"{source}: the AWS factorization machines model's v {V.shape} does not fit its {feature_dim} "
            f"linear weights ({names[1]} {arg[names[1]].shape})."
        )
    _check_feature_dim(checkpoint, feature_dim, source)
    hp = hyperparameters.parse(
        {
            "feature_dim": feature_dim,
            "num_factors": factors.shape[1],
            "predictor_type": _predictor_type(checkpoint, source),
        }
    )
    return FactorizationMachinesModel(hp, w0=w0.reshape(1), w=w, V=factors)


def checkpoint_of(model: FactorizationMachinesModel) -> MXNetCheckpoint:
    """`model` as AWS's image saves one."""
    feature_dim, num_factors = model.V.shape
    training_parameters = {name: _as_hyperparameter(value) for name, value in model.hp.items() if value is not None}
    return MXNetCheckpoint(
        symbol=symbol(feature_dim, num_factors, model.predictor_type),
        arg_params={BIAS: model.w0.reshape(1), LINEAR: model.w.reshape(feature_dim, 1), FACTORS: model.V},
        extras={META_FILE: {"training_parameters": training_parameters}},
        symbol_file=SYMBOL_FILE,
        params_file=PARAMS_FILE,
    )


def symbol(feature_dim: int, num_factors: int, predictor_type: str) -> dict[str, Any]:
    """The graph of w0 + x . w1 + 0.5 sum((x v)^2 - x^2 v^2, axis 1), ending in `out`, with the
    nodes MXNet 1.9.1 writes for that expression (names included), so that Module.load binds it:
    the parameters' shapes are in their __shape__ attributes, since dot cannot infer them."""
    graph = SymbolGraph()
    data = graph.variable("data")
    linear = graph.op("dot", "dot0", [data, graph.variable(LINEAR, {"__shape__": str((feature_dim, 1))})])
    biased = graph.op("broadcast_add", "broadcast_add0", [linear, graph.variable(BIAS, {"__shape__": "(1,)"})])
    v = graph.variable(FACTORS, {"__shape__": str((feature_dim, num_factors))})
    xv_squared = graph.op("square", "square0", [graph.op("dot", "dot1", [data, v])])
    x2_v2 = graph.op("dot", "dot2", [graph.op("square", "square1", [data]), graph.op("square", "square2", [v])])
    difference = graph.op("elemwise_sub", "_minus0", [xv_squared, x2_v2])
    summed = graph.op("sum", "sum0", [difference], attrs={"axis": "1", "keepdims": "True"})
    pairwise = graph.op("_mul_scalar", "_mulscalar0", [summed], attrs={"scalar": "0.5"})
    total = graph.op("elemwise_add", "_plus0", [biased, pairwise])
    op = "LogisticRegressionOutput" if predictor_type == BINARY else "LinearRegressionOutput"
    return graph.to_json(graph.op(op, "out", [total, graph.variable("out_label")]))


def _predictor_type(checkpoint: MXNetCheckpoint, source: str) -> str:
    named = checkpoint.setting("predictor_type")
    if named is not None:
        if named[0] not in PREDICTOR_TYPES:
            raise UserError(
                f"{source}: {named[1]} names predictor_type {named[0]!r}, none of {', '.join(PREDICTOR_TYPES)}."
            )
        return str(named[0])
    from_graph = next((OUTPUT_OPS[op] for op in checkpoint.head_ops() if op in OUTPUT_OPS), None)
    if from_graph is None:
        raise UserError(
            f"{source}: cannot tell whether this AWS factorization machines model is a binary classifier or a "
            f"regressor: none of its JSON files ({', '.join(checkpoint.extras) or 'none'}) names a predictor_type, "
            f"and its graph ends in {', '.join(checkpoint.head_ops())}, none of {', '.join(OUTPUT_OPS)}."
        )
    return from_graph


def _check_feature_dim(checkpoint: MXNetCheckpoint, feature_dim: int, source: str) -> None:
    named = checkpoint.setting("feature_dim")
    if named is None:
        return
    value, member = named
    try:
        declared = int(str(value))
    except ValueError:
        raise UserError(f"{source}: {member} gives feature_dim {value!r}, not an integer.") from None
    if declared != feature_dim:
        raise UserError(
            f"{source}: {member} gives feature_dim {declared}, but the model's weights are for {feature_dim} features."
        )


def _as_hyperparameter(value: Any) -> str:
    """A value as SageMaker passes hyperparameters: a string ("10", "0.01", "true")."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _finite_float32(array: np.ndarray, name: str, source: str) -> np.ndarray:
    if array.dtype.kind != "f" or not np.isfinite(array).all():
        problem = "NaN or infinite values" if array.dtype.kind == "f" else f"{array.dtype} values"
        raise UserError(
            f"{source}: the AWS factorization machines model's {name} {array.shape} holds {problem}; it holds floats."
        )
    return array.astype(np.float32, copy=False)
