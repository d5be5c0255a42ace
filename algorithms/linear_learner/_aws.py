"""Linear learner models in the form AWS's `linear-learner` image saves them: model_algo-1, a zip
of an MXNet module checkpoint (formats/mxnet_checkpoint.py) named `mx-mod`, beside
`manifest.json` and `additional-params.json`.

What public material shows of AWS's file (docs/aws-models.md lists the sources): the parameters
are `fc0_weight` and `fc0_bias`, the weight and bias of a FullyConnected layer `fc0` on `data`
(MXNet's layout: weight (outputs, feature_dim), bias (outputs,)); users read them and predict
x . w + b on their raw features, in the label's unit, so AWS folds its normalisation into them;
the graph has a label variable `out_label` (users load it with `label_names=["out_label"]`), so
it ends in an output op named `out`. What it does not show: the contents of manifest.json and
additional-params.json, hence where AWS keeps the predictor type and a binary classifier's
calibrated threshold. So the reader takes, in this order:

* the predictor type: `predictor_type` in one of the zip's JSON files; else the graph's output
  op (LogisticRegressionOutput or sigmoid: a binary classifier with logistic loss, SVMOutput:
  one with hinge loss, SoftmaxOutput or softmax: multiclass, LinearRegressionOutput or
  MAERegressionOutput: a regressor); else multiclass when there are 3 outputs or more; else it
  refuses the file, saying so;
* the loss: `loss` in the JSON files, else what the output op says, else the predictor type's
  default (logistic, softmax_loss, squared_loss);
* the threshold: `threshold` in the JSON files, else the loss's default (0.5 for logistic, 0 for
  the hinge margin), as before calibration;
* the weight in either orientation ((outputs, feature_dim) as FullyConnected has it, or
  (feature_dim, outputs)), told apart by the bias's length; no fc0_bias: a zero bias.

Written back, a model is that graph (FullyConnected fc0, then `out`: LogisticRegressionOutput,
SVMOutput, SoftmaxOutput or LinearRegressionOutput, whose forward pass is the score AWS serves),
its raw-space weights (the scaler and label normalisation folded in: exact up to float32
rounding), and additional-params.json naming the predictor type, loss and threshold.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.mxnet_checkpoint import MXNetCheckpoint, SymbolGraph
from smalgo.algorithms.hyperparameters import AUTO, Schema

from ._linear_learner import LinearLearnerModel, Problem, Scaler
from ._settings import BINARY, LOSSES_BY_PREDICTOR, MULTICLASS, PREDICTOR_TYPES, REGRESSOR

logger = logging.getLogger(__name__)

PREFIX = "mx-mod"
SYMBOL_FILE = f"{PREFIX}-symbol.json"
PARAMS_FILE = f"{PREFIX}-0000.params"
MANIFEST_FILE = "manifest.json"
SETTINGS_FILE = "additional-params.json"
WEIGHT, BIAS = "fc0_weight", "fc0_bias"
IMPORTED_FROM = "AWS linear-learner model_algo-1"
# The graph's output ops, and what each says of the model: (predictor type, loss).
OUTPUT_OPS = {
    "LogisticRegressionOutput": (BINARY, "logistic"),
    "sigmoid": (BINARY, "logistic"),
    "SVMOutput": (BINARY, "hinge_loss"),
    "SoftmaxOutput": (MULTICLASS, "softmax_loss"),
    "softmax": (MULTICLASS, "softmax_loss"),
    "SoftmaxActivation": (MULTICLASS, "softmax_loss"),
    "LinearRegressionOutput": (REGRESSOR, AUTO),
    "MAERegressionOutput": (REGRESSOR, AUTO),
}


def model_from_checkpoint(
    hyperparameters: Schema, checkpoint: MXNetCheckpoint, *, source: str
) -> LinearLearnerModel | None:
    """The model AWS's linear learner saved as `checkpoint`, or None when it has no fc0_weight."""
    if WEIGHT not in checkpoint.arg_params:
        return None
    weight = _finite_float32(checkpoint.arg_params[WEIGHT], WEIGHT, source)
    bias = checkpoint.arg_params.get(BIAS)
    if weight.ndim != 2 or weight.size == 0:
        raise UserError(f"{source}: the AWS linear learner's {WEIGHT} is {weight.shape}, not a matrix.")
    if bias is not None:
        bias = _finite_float32(bias, BIAS, source).reshape(-1)
        outputs = bias.size
    else:
        outputs = _num_hidden(checkpoint) or weight.shape[0]
        bias = np.zeros(outputs, np.float32)
    if weight.shape[0] == outputs:
        weights = weight.T  # FullyConnected's (outputs, feature_dim)
    elif weight.shape[1] == outputs:
        weights = weight
    else:
        raise UserError(
            f"{source}: the AWS linear learner's {WEIGHT} {weight.shape} does not fit its {outputs} output(s) "
            f"({BIAS} {bias.shape})."
        )
    predictor_type, loss, threshold = _problem(checkpoint, outputs, source)
    feature_dim = weights.shape[0]
    raw = {"predictor_type": predictor_type, "loss": loss, "feature_dim": feature_dim}
    if predictor_type == MULTICLASS:
        raw["num_classes"] = outputs
    hp = hyperparameters.parse(raw)
    ignored = sorted(set(checkpoint.arg_params) - {WEIGHT, BIAS})
    if ignored:
        logger.warning(
            "%s: the parameters %s are not fc0's; the model is x . %s + %s without them.",
            source,
            ", ".join(ignored),
            WEIGHT,
            BIAS,
        )
    return LinearLearnerModel(
        hp,
        weights=weights,
        bias=bias,
        scaler=Scaler(np.zeros(feature_dim, np.float32), np.ones(feature_dim, np.float32)),
        threshold=Problem.of(hp).default_threshold if threshold is None else threshold,
        settings={"imported_from": IMPORTED_FROM, **({"ignored_parameters": ignored} if ignored else {})},
    )


def checkpoint_of(model: LinearLearnerModel) -> MXNetCheckpoint:
    """`model` as AWS's image saves one: raw-space weights under the names AWS's has."""
    W, b = model.raw_space_weights()
    problem = model.problem
    settings: dict[str, Any] = {
        "predictor_type": problem.predictor_type,
        "loss": problem.loss,
        "feature_dim": model.feature_dim,
    }
    if problem.predictor_type == MULTICLASS:
        settings["num_classes"] = problem.num_classes
    if problem.predictor_type == BINARY:
        settings["threshold"] = model.threshold
    manifest = {
        "format": "MXNet module checkpoint (mx.module.Module.load)",
        "prefix": PREFIX,
        "epoch": 0,
        "files": [SYMBOL_FILE, PARAMS_FILE, SETTINGS_FILE],
        "written_by": "smalgo export-aws",
    }
    return MXNetCheckpoint(
        symbol=symbol(W.shape[1], problem.predictor_type, problem.loss),
        arg_params={WEIGHT: np.ascontiguousarray(W.T), BIAS: np.ascontiguousarray(b)},
        extras={SETTINGS_FILE: settings, MANIFEST_FILE: manifest},
        symbol_file=SYMBOL_FILE,
        params_file=PARAMS_FILE,
    )


def symbol(outputs: int, predictor_type: str, loss: str) -> dict[str, Any]:
    """The graph: FullyConnected fc0 on data, then the output op `out` whose forward pass is the
    score (sigmoid for logistic loss, the margin for hinge loss, softmax, the value)."""
    graph = SymbolGraph()
    data = graph.variable("data")
    hidden = {"num_hidden": str(outputs)}
    weight, bias = graph.variable(WEIGHT, hidden), graph.variable(BIAS, hidden)
    fc0 = graph.op("FullyConnected", "fc0", [data, weight, bias], attrs=hidden)
    if predictor_type == BINARY:
        op, attrs = ("LogisticRegressionOutput", None) if loss == "logistic" else ("SVMOutput", {"use_linear": "True"})
    else:
        op, attrs = ("SoftmaxOutput", None) if predictor_type == MULTICLASS else ("LinearRegressionOutput", None)
    # MXNet names an output op's label variable <op name>_label and gives it the op's attrs.
    label = graph.variable("out_label", attrs)
    return graph.to_json(graph.op(op, "out", [fc0, label], attrs=attrs))


def _problem(checkpoint: MXNetCheckpoint, outputs: int, source: str) -> tuple[str, str, float | None]:
    """(predictor type, loss, threshold or None) as the zip's JSON files and graph say them."""
    from_graph = next((OUTPUT_OPS[op] for op in checkpoint.head_ops() if op in OUTPUT_OPS), None)
    named = checkpoint.setting("predictor_type")
    if named is not None:
        predictor_type, member = named
        if predictor_type not in PREDICTOR_TYPES:
            raise UserError(
                f"{source}: {member} names predictor_type {predictor_type!r}, none of {', '.join(PREDICTOR_TYPES)}."
            )
    elif from_graph is not None:
        predictor_type = from_graph[0]
    elif outputs >= 3:
        predictor_type = MULTICLASS
    else:
        raise UserError(
            f"{source}: cannot tell whether this AWS linear learner model is a binary classifier or a regressor: "
            f"none of its JSON files ({', '.join(checkpoint.extras) or 'none'}) names a predictor_type, and its "
            f"graph ends in {', '.join(checkpoint.head_ops())}, none of {', '.join(OUTPUT_OPS)}."
        )
    if (outputs >= 3) != (predictor_type == MULTICLASS) or outputs == 2:
        has = "3 or more outputs" if predictor_type == MULTICLASS else "one output"
        raise UserError(f"{source}: a {predictor_type} has {has}; this AWS linear learner model has {outputs}.")
    loss = from_graph[1] if from_graph is not None and from_graph[0] == predictor_type else AUTO
    named_loss = checkpoint.setting("loss")
    if named_loss is not None:
        if named_loss[0] != AUTO and named_loss[0] not in LOSSES_BY_PREDICTOR[predictor_type]:
            raise UserError(
                f"{source}: {named_loss[1]} names loss {named_loss[0]!r}, which a {predictor_type} does not have "
                f"({', '.join(LOSSES_BY_PREDICTOR[predictor_type])})."
            )
        loss = named_loss[0]
    threshold = None
    named_threshold = checkpoint.setting("threshold")
    if named_threshold is not None and predictor_type == BINARY:
        value, member = named_threshold
        try:
            threshold = float(value)
        except (TypeError, ValueError):
            threshold = math.nan
        if isinstance(value, bool) or not math.isfinite(threshold):
            raise UserError(f"{source}: {member} gives the threshold {value!r}, not a finite number.")
    return predictor_type, loss, threshold


def _num_hidden(checkpoint: MXNetCheckpoint) -> int | None:
    for node in checkpoint.nodes("FullyConnected"):
        if node["name"] == "fc0":
            attrs = node.get("attrs") or node.get("attr") or node.get("param") or {}
            value = str(attrs.get("num_hidden", ""))
            return int(value) if value.isdigit() and int(value) > 0 else None
    return None


def _finite_float32(array: np.ndarray, name: str, source: str) -> np.ndarray:
    if array.dtype.kind != "f" or not np.isfinite(array).all():
        problem = "NaN or infinite values" if array.dtype.kind == "f" else f"{array.dtype} values"
        raise UserError(f"{source}: the AWS linear learner's {name} {array.shape} holds {problem}; it holds floats.")
    return array.astype(np.float32, copy=False)
