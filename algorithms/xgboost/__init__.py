"""XGBoost (AWS's sagemaker-xgboost-container in algorithm mode, spec section 4.5): what the
algorithm declares, its hyperparameter schema (the container's ranges and aliases) and the checks
across hyperparameters, all before any data is read.

XGBoost itself trains (`xgboost.train`), imported only when a job or a model needs it (the
`cpu` extra installs the xgboost-cpu wheel, the `gpu` extra the CUDA one: the same module).
smalgo decodes the channels (CSV, LIBSVM, Parquet, RecordIO) with its own decoders into one
float32 matrix per channel, and wraps training with AWS's behaviours (`_train.py`). Models are
XGBoost's own `xgboost-model` files (`_model.py`), read and written as AWS's image does, so models
move both ways.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.contract import Algorithm, Hyperparameters, Model, Output, SampleJob
from smalgo.algorithms.data import TrainingData
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.content_types import CSV, LIBSVM, PARQUET, RECORDIO_PROTOBUF
from smalgo.algorithms.hyperparameters import Hyperparameter, Schema, tuning_objective
from smalgo.algorithms.metrics import MetricWriter, evaluation_definition
from smalgo.algorithms.model_files import ModelFiles
from smalgo.algorithms.runtime import device
from smalgo.algorithms.runtime.collective import SingleHost
from smalgo.algorithms.training import TrainingCallback

from ._metrics import AWS_METRICS, MAXIMIZED
from ._names import (
    FEWER_REQUEST_FEATURES,
    MAXIMIZE_METRICS,
    MODEL_FILE,
    NOT_XGBOOST_PARAMETERS,
    SELECTABLE_OUTPUTS,
    EarlyStoppingRule,
)

if TYPE_CHECKING:
    from ._model import XGBoostModel

logger = logging.getLogger(__name__)

NAME = "xgboost"
OBJECTIVES = (
    "binary:logistic",
    "binary:logitraw",
    "binary:hinge",
    "count:poisson",
    "multi:softmax",
    "multi:softprob",
    "rank:pairwise",
    "rank:ndcg",
    "rank:map",
    "reg:linear",
    "reg:squarederror",
    "reg:logistic",
    "reg:gamma",
    "reg:pseudohubererror",
    "reg:squaredlogerror",
    "reg:absoluteerror",
    "reg:tweedie",
    "survival:aft",
    "survival:cox",
)
# XGBoost's own evaluation metrics; `error@t`, `ndcg@n`, `map@n`, `pre@n` (and ndcg-/map-) too.
METRICS = (
    "rmse",
    "rmsle",
    "mae",
    "mape",
    "mphe",
    "logloss",
    "error",
    "merror",
    "mlogloss",
    "auc",
    "aucpr",
    "pre",
    "ndcg",
    "map",
    "poisson-nloglik",
    "gamma-nloglik",
    "cox-nloglik",
    "gamma-deviance",
    "tweedie-nloglik",
    "aft-nloglik",
    "interval-regression-accuracy",
)
# The metrics AWS's XGBoost image defines for tuning (its algorithm_mode/metrics.py, the
# documented list of spec 4.5.5), each read on the validation channel from the evaluation lines.
TUNING_METRICS = (
    "accuracy",
    "auc",
    "error",
    "f1",
    "logloss",
    "mae",
    "map",
    "merror",
    "mlogloss",
    "mse",
    "ndcg",
    "rmse",
)
_METRIC_WITH_ARGUMENT = re.compile(r"^(error@[0-9.]+|(ndcg|map|pre)(@[0-9]+)?-?|tweedie-nloglik@[0-9.]+)$")
# Values XGBoost 3 no longer knows, and what they mean there (each use is logged).
_LEGACY_OBJECTIVES = {"reg:linear": "reg:squarederror"}
_DROPPED = {
    "predictor": "XGBoost 3 picks the predictor from `device`",
    "single_precision_histogram": "XGBoost 3's GPU histograms are always single precision",
    "deterministic_histogram": "XGBoost 3's GPU histograms are always deterministic",
    "lambda_bias": "XGBoost 3's linear booster has no separate bias penalty",
    "dsplit": "XGBoost 3 splits rows across hosts by itself",
    "prob_buffer_row": "XGBoost 3 has no prediction buffer",
    "use_dask_gpu_training": "smalgo trains on one instance's GPU, without Dask",
}


def _float(name: str, description: str, **bounds) -> Hyperparameter:
    return Hyperparameter(name, "float", description=description, **bounds)


def _int(name: str, description: str, **bounds) -> Hyperparameter:
    return Hyperparameter(name, "int", description=description, **bounds)


def _choice(name: str, choices: tuple[str, ...], description: str) -> Hyperparameter:
    return Hyperparameter(name, "str", choices=choices, description=description)


def _unit(name: str, description: str, **options) -> Hyperparameter:
    return _float(name, description, minimum=0.0, maximum=1.0, **options)


def _open_unit(name: str, description: str) -> Hyperparameter:
    """(0, 1]"""
    return _unit(name, description, exclusive_minimum=True)


_TRUE_FALSE = ("true", "false")

HYPERPARAMETERS = Schema(
    (
        _int("num_round", "Boosting rounds.", required=True, minimum=1),
        _int("num_class", "Classes of a multi: objective.", minimum=2),
        _float("alpha", "L1 regularisation of the weights.", minimum=0.0, aliases=("reg_alpha",)),
        _float("base_score", "Initial prediction of every row.", minimum=0.0),
        _choice("booster", ("gbtree", "gblinear", "dart"), "Booster."),
        _open_unit("colsample_bylevel", "Columns sampled per level."),
        _open_unit("colsample_bynode", "Columns sampled per split."),
        _open_unit("colsample_bytree", "Columns sampled per tree."),
        _int("csv_weights", "1: CSV rows carry an instance weight after the label.", minimum=0, maximum=1),
        _choice("deterministic_histogram", _TRUE_FALSE, "GPU histograms (XGBoost 3: always deterministic)."),
        _int("early_stopping_rounds", "Rounds without improvement on validation before stopping.", minimum=1),
        _unit("eta", "Learning rate.", aliases=("learning_rate",)),
        Hyperparameter("eval_metric", "list", description="Evaluation metrics, comma-separated."),
        _float("gamma", "Minimum loss reduction of a split.", minimum=0.0, aliases=("min_split_loss",)),
        _choice("grow_policy", ("depthwise", "lossguide"), "How trees grow (hist)."),
        Hyperparameter("interaction_constraints", "str", description="Nested lists of feature indices."),
        _float("lambda", "L2 regularisation of the weights.", minimum=0.0, aliases=("reg_lambda",)),
        _unit("lambda_bias", "L2 on the linear booster's bias (XGBoost 3: ignored)."),
        _int("max_bin", "Histogram bins (hist).", minimum=0),
        _float("max_delta_step", "Largest step of a leaf value.", minimum=0.0),
        _int("max_depth", "Tree depth (0: unlimited).", minimum=0),
        _int("max_leaves", "Leaves per tree (lossguide).", minimum=0),
        _float("min_child_weight", "Minimum hessian of a child.", minimum=0.0),
        Hyperparameter("monotone_constraints", "str", description="A tuple of -1/0/1, one per feature."),
        _choice("normalize_type", ("tree", "forest"), "dart: tree weight normalisation."),
        _int("nthread", "Threads (default: all cores).", minimum=1),
        Hyperparameter(
            "objective", "str", default="reg:squarederror", choices=OBJECTIVES, description="Learning objective."
        ),
        _int("one_drop", "dart: always drop a tree.", minimum=0, maximum=1),
        _choice("process_type", ("default", "update"), "New trees, or updates of existing ones."),
        _unit("rate_drop", "dart: dropout rate."),
        _int("refresh_leaf", "updater refresh: update leaf values.", minimum=0, maximum=1),
        _choice("sample_type", ("uniform", "weighted"), "dart: sampling."),
        _float("scale_pos_weight", "Weight of positive examples.", minimum=0.0, exclusive_minimum=True),
        _int("seed", "Random seed.", minimum=-(2**31) + 1, maximum=2**31 - 2),
        _choice("single_precision_histogram", _TRUE_FALSE, "GPU histograms (XGBoost 3: always single precision)."),
        _float(
            "sketch_eps",
            "approx: sketch accuracy.",
            minimum=0.0,
            maximum=1.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
        ),
        _unit("skip_drop", "dart: probability of skipping dropout."),
        _open_unit("subsample", "Rows sampled per tree."),
        _choice("tree_method", ("auto", "exact", "approx", "hist", "gpu_hist"), "Tree construction."),
        _float(
            "tweedie_variance_power",
            "reg:tweedie: variance power.",
            minimum=1.0,
            maximum=2.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
        ),
        Hyperparameter("updater", "str", description="Comma-separated tree updaters."),
        _int("verbosity", "XGBoost's own messages.", minimum=0, maximum=3),
        _choice("dsplit", ("row", "col"), "Distributed split (XGBoost 3: ignored)."),
        _choice("predictor", ("auto", "cpu_predictor", "gpu_predictor"), "Predictor (XGBoost 3: from device)."),
        _int("num_parallel_tree", "Trees per round (random forests).", minimum=1),
        _choice("save_model_on_termination", _TRUE_FALSE, "Save the rounds done so far when the job is stopped."),
        _choice("aft_loss_distribution", ("normal", "logistic", "extreme"), "survival:aft distribution."),
        _float("aft_loss_distribution_scale", "survival:aft scale.", minimum=0.0),
        _choice("sampling_method", ("uniform", "gradient_based"), "Row sampling."),
        _float("prob_buffer_row", "(XGBoost 3: ignored).", minimum=1.0, exclusive_minimum=True),
        _choice("use_dask_gpu_training", _TRUE_FALSE, "Dask multi-GPU training (not in smalgo: ignored)."),
        _int("_kfold", "k-fold cross-validation: number of folds.", minimum=2),
        _int("_num_cv_round", "k-fold cross-validation: repeats.", minimum=1),
    )
)


def _metric_name(metric: str) -> str:
    return metric.split("@")[0].rstrip("-")


def _check_metric(metric: str, objective: str, *, where: str) -> None:
    if metric in AWS_METRICS:
        return  # computed by smalgo (_metrics.py), as AWS's image computes it
    if metric not in METRICS and not _METRIC_WITH_ARGUMENT.match(metric):
        raise UserError(
            f"{where}: {metric!r} is not an XGBoost metric; valid: {', '.join(METRICS)}, error@t, ndcg@n, map@n, "
            f"pre@n, and AWS's own {', '.join(AWS_METRICS)}."
        )
    name = _metric_name(metric)
    if name in ("auc", "aucpr") and not objective.startswith(("binary:", "rank:")):
        raise UserError(
            f"{where}: {metric} is only for binary: and rank: objectives, and the objective is {objective}."
        )
    if name == "aft-nloglik" and objective != "survival:aft":
        raise UserError(f"{where}: aft-nloglik is only for objective survival:aft, and the objective is {objective}.")


def tuning_metric(hp: Hyperparameters) -> str | None:
    """The metric `_tuning_objective_metric` names ("validation:auc" -> "auc"), or None."""
    objective = tuning_objective(hp)
    return objective[1] if objective else None


def early_stopping_metric(hp: Hyperparameters) -> str | None:
    """The metric early stopping watches: the tuner's, else the last eval_metric, else XGBoost's
    default for the objective (the last metric XGBoost reports)."""
    return tuning_metric(hp) or (hp["eval_metric"][-1] if hp["eval_metric"] else None)


def requested_metrics(hp: Hyperparameters) -> list[str]:
    """eval_metric, and the tuner's metric after it when eval_metric lacks it (AWS's union)."""
    metrics = list(hp["eval_metric"] or [])
    metric = tuning_metric(hp)
    if metric is not None and metric not in metrics:
        metrics.append(metric)
    return metrics


def aws_metrics(hp: Hyperparameters) -> list[str]:
    """The requested metrics that AWS's image computes itself (smalgo: _metrics.py), in order."""
    return [metric for metric in requested_metrics(hp) if metric in AWS_METRICS]


def xgboost_parameters(hp: Hyperparameters, *, use_gpu: bool) -> dict[str, Any]:
    """The parameters xgboost.train gets: the hyperparameters XGBoost knows, legacy values mapped
    to what XGBoost 3 means by them (each logged), the tuner's metric added to eval_metric."""
    params: dict[str, Any] = {}
    for name, value in hp.items():
        if value is None or name in NOT_XGBOOST_PARAMETERS:
            continue
        if name in _DROPPED:
            logger.info("Hyperparameter %s=%s is not passed to XGBoost: %s.", name, value, _DROPPED[name])
            continue
        params[name] = value
    objective = params["objective"]
    if objective in _LEGACY_OBJECTIVES:
        params["objective"] = _LEGACY_OBJECTIVES[objective]
        logger.info("objective %s is %s in XGBoost 3 (the same loss, renamed).", objective, params["objective"])
    # XGBoost's own metrics; AWS's (custom_metrics) go to xgboost.train's custom_metric.
    native = [metric for metric in requested_metrics(hp) if metric not in AWS_METRICS]
    if native:
        params["eval_metric"] = native
    else:
        params.pop("eval_metric", None)
    if params.get("tree_method") == "gpu_hist":
        params["tree_method"] = "hist"
        logger.info("tree_method gpu_hist is tree_method hist with device cuda in XGBoost 3.")
        if not use_gpu:
            logger.warning("tree_method=gpu_hist, but no CUDA GPU is usable here: training on the CPU.")
    if use_gpu:
        params["device"] = "cuda"
    return params


def _xgboost():
    """The xgboost module; UserError when this installation lacks it."""
    try:
        import xgboost
    except ImportError:
        raise UserError(
            "XGBoost is not installed: install smalgo with its cpu extra (pip install 'smalgo[cpu]', the "
            "xgboost-cpu wheel) or its gpu extra (the CUDA build); the smalgo-xgboost images have it."
        ) from None
    return xgboost


def _xgboost_has_cuda() -> bool:
    return bool(_xgboost().build_info().get("USE_CUDA"))


class XGBoost(Algorithm):
    name = NAME
    title = "XGBoost"
    several_hosts = True
    hyperparameters = HYPERPARAMETERS
    channels = {"train": True, "validation": False}
    content_types = (LIBSVM, CSV, PARQUET, RECORDIO_PROTOBUF)
    default_content_type = LIBSVM
    # score: XGBoost's prediction (a vector for multi:softprob); the rest are the outputs that
    # SAGEMAKER_INFERENCE_OUTPUT selects.
    outputs = (
        Output("score", vector=None),
        Output("predicted_label"),
        Output("labels", vector=True),
        Output("probability"),
        Output("probabilities", vector=True),
        Output("raw_score"),
        Output("raw_scores", vector=True),
        Output("predicted_score"),
    )
    model_files = (MODEL_FILE,)
    native_model_files = (f"{MODEL_FILE}*",)
    fewer_request_features = FEWER_REQUEST_FEATURES
    resumes_from_checkpoints = True
    csv_vectors_quoted = True
    empty_request_no_content = True
    # NaN is XGBoost's missing value.
    finite_values_only = False
    has_gpu_path = True
    feature_dim_hyperparameter = None
    sample_job = SampleJob(
        hyperparameters={"num_round": "10", "objective": "binary:logistic", "max_depth": "3", "eval_metric": "auc"},
        bad_hyperparameter=("num_class", "3"),
        variants=({"tree_method": "exact"}, {"objective": "reg:squarederror", "eval_metric": "rmse"}),
        content_type=CSV,
        labelled=True,
    )
    metric_definitions = tuple(evaluation_definition("validation", metric) for metric in TUNING_METRICS)

    def validate(self, hp: Hyperparameters) -> None:
        objective = hp["objective"]
        multi = objective.startswith("multi:")
        if multi and hp["num_class"] is None:
            raise UserError(f"Hyperparameter num_class is required with objective {objective} (the number of classes).")
        if not multi and hp["num_class"] is not None:
            raise UserError(
                f"Hyperparameter num_class: {hp['num_class']} is only for multi:softmax and multi:softprob, "
                f"and the objective is {objective}."
            )
        for metric in hp["eval_metric"] or ():
            _check_metric(metric, objective, where="Hyperparameter eval_metric")
        metric = tuning_metric(hp)
        if metric is not None:
            _check_metric(metric, objective, where="Hyperparameter _tuning_objective_metric")
        for name in ("interaction_constraints", "monotone_constraints"):
            if hp[name] is not None:
                _check_constraints(name, hp[name])
        if hp["_num_cv_round"] is not None and hp["_kfold"] is None:
            raise UserError("Hyperparameter _num_cv_round repeats k-fold cross-validation; set _kfold too.")

    def train(
        self,
        hp: Hyperparameters,
        data: TrainingData,
        *,
        metrics: MetricWriter | None = None,
        callbacks: Iterable[TrainingCallback] = (),
        checkpoint_dir: Path | None = None,
        collective: SingleHost | None = None,
    ) -> Model:
        """On several hosts (`collective`), XGBoost's own distributed training: each host builds
        the matrix of its rows and xgboost.train runs in the communicator the job joined, so
        the quantile sketch, the histograms and the evaluation metrics are reduced across the
        hosts by XGBoost, and every host ends with the same booster. Checkpoints: the first host
        writes them; every host resumes from its own copy, the same on every host (train_booster)."""
        _xgboost()
        from ._model import XGBoostModel
        from ._train import matrix_of, read_channel, train_booster, train_matrix_of

        writer = metrics or MetricWriter()
        several = collective is not None and collective.hosts > 1
        if several:
            if hp["_kfold"] is not None:
                raise UserError(
                    "Hyperparameter _kfold (cross-validation) trains on one instance only; set InstanceCount "
                    "to 1, or leave _kfold out."
                )
        validating = data.has_channel("validation")
        early_stopping = None
        if hp["early_stopping_rounds"] is not None:
            if not validating:
                raise UserError(
                    "Hyperparameter early_stopping_rounds needs a validation channel to watch; add one, "
                    "or leave early_stopping_rounds out."
                )
            # None: XGBoost's default metric of the objective, the last it reports.
            metric = early_stopping_metric(hp)
            maximize = (
                _metric_name(metric) in MAXIMIZE_METRICS or metric in MAXIMIZED
                if metric
                else hp["objective"].startswith("rank:")
            )
            early_stopping = EarlyStoppingRule(metric, int(hp["early_stopping_rounds"]), maximize)
        # The exact method has no GPU version; a CPU-only XGBoost (the xgboost-cpu wheel) none at all.
        use_gpu = hp["tree_method"] != "exact" and _xgboost_has_cuda() and device.use_gpu()
        params = xgboost_parameters(hp, use_gpu=use_gpu)
        csv_weights = hp["csv_weights"] == 1
        train = read_channel(data, "train", csv_weights=csv_weights, may_be_empty=several)
        validation = (
            read_channel(data, "validation", csv_weights=csv_weights, may_be_empty=several) if validating else None
        )
        width = max(train.n_features, validation.n_features if validation is not None else 0)
        if several:
            assert collective is not None
            train, validation, width = _share_of_the_hosts(collective, train, validation, width=width)
        logger.info(
            "Train matrix%s: %d rows, %d columns%s.",
            " (this host's rows)" if several else "",
            train.n_rows,
            width,
            f"; validation: {validation.n_rows} rows" if validation is not None else "",
        )
        save_on_termination = hp["save_model_on_termination"] == "true"
        if hp["_kfold"] is not None:
            return self._cross_validate(
                hp,
                params,
                train,
                validation=validation,
                writer=writer,
                early_stopping=early_stopping,
                checkpoint_dir=checkpoint_dir,
            )
        # One host: a QuantileDMatrix for hist (train_matrix_of); several keep the DMatrix.
        dtrain = matrix_of(train, width) if several else train_matrix_of(train, width, params)
        evals = [(dtrain, "train")]
        if validation is not None:
            evals.append((matrix_of(validation, width), "validation"))
        booster = train_booster(
            params,
            dtrain,
            num_round=int(hp["num_round"]),
            evals=evals,
            writer=writer,
            early_stopping=early_stopping,
            checkpoint_dir=checkpoint_dir,
            save_on_termination=save_on_termination,
            aws_metrics=aws_metrics(hp),
            collective=collective if several else None,
        )
        model = XGBoostModel([booster])
        for callback in callbacks:
            callback.after_training(model)
        return model

    def _cross_validate(self, hp, params, train, *, validation, writer, early_stopping, checkpoint_dir) -> XGBoostModel:
        """k-fold mode: train + validation together, one booster per fold (xgboost-model-<fold>)."""
        from smalgo.algorithms.batch import Batch
        from smalgo.algorithms.data import stack_rows

        from ._model import XGBoostModel
        from ._train import fold_indices, matrix_of, mean_cv_line, train_booster

        folds, repeats = int(hp["_kfold"]), int(hp["_num_cv_round"] or 1)
        if validation is not None:
            X, y, w = stack_rows([(train.X, train.y, train.w), (validation.X, validation.y, validation.w)])
            everything = Batch(X, y, w)
        else:
            everything = train
        full = matrix_of(everything)
        labels = everything.y
        assert labels is not None
        stratified = hp["num_class"] is not None or hp["objective"].startswith("binary:")
        writer_results = []
        boosters = []
        logger.info("%d round(s) of %d-fold cross-validation over %d rows.", repeats, folds, everything.n_rows)
        seed = int(hp["seed"] or 0)
        for number, (train_rows, validation_rows) in enumerate(
            fold_indices(labels, folds=folds, repeats=repeats, stratified=stratified, seed=seed)
        ):
            logger.info("Cross-validation fold %d.", number % folds + 1)
            results: dict = {}
            fold_train, fold_validation = full.slice(train_rows), full.slice(validation_rows)
            fold_params = dict(params)
            booster = train_booster(
                fold_params,
                fold_train,
                num_round=int(hp["num_round"]),
                evals=[(fold_train, "train"), (fold_validation, "validation")],
                writer=_Recorder(writer, results),
                early_stopping=early_stopping,
                checkpoint_dir=None if checkpoint_dir is None else checkpoint_dir / f"model-{number}",
                save_on_termination=False,
                aws_metrics=aws_metrics(hp),
            )
            boosters.append(booster)
            writer_results.append(results)
            if len(boosters) % folds == 0:
                writer.line(mean_cv_line(int(hp["num_round"]), writer_results[-folds:]))
        if repeats > 1:
            writer.line(mean_cv_line(int(hp["num_round"]), writer_results))
        return XGBoostModel(boosters)

    def load_model(self, files: ModelFiles) -> Model:
        raise UserError(f"{files.path}: an XGBoost model is an {MODEL_FILE} file, not a model.json.")

    def load_native_model(self, model_dir: Path) -> Model:
        _xgboost()
        from ._model import load_model

        return load_model(model_dir)


def _share_of_the_hosts(collective: SingleHost, train: Batch, validation: Batch | None, *, width: int):
    """This host's train and validation rows as matrices as wide as every host's widest (LIBSVM
    data may be narrower on a host whose largest index is smaller; a host without rows has no
    width at all); UserError when no host has a train record."""
    widths = collective.all_gather(np.array([[width, train.n_rows]], dtype=np.int64))
    width = max(int(row[0, 0]) for row in widths)
    if sum(int(row[0, 1]) for row in widths) == 0:
        raise UserError("The train channel has no records on any host.")

    def widened(batch: Batch) -> Batch:
        if batch.n_rows:
            return batch
        logger.info("This host has no rows of a channel; it takes part in training without them.")
        return Batch(np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=np.float32), None)

    return widened(train), None if validation is None else widened(validation), width


class _Recorder(MetricWriter):
    """A MetricWriter that also keeps each data set's metric values (k-fold's summary line)."""

    def __init__(self, writer: MetricWriter, results: dict) -> None:
        super().__init__(writer.host)
        self.results = results

    def evaluation(self, iteration, evals_log) -> str:
        for data, values in evals_log.items():
            for metric, log in values.items():
                self.results.setdefault(data, {})[metric] = [float(v) for v in log]
        return super().evaluation(iteration, evals_log)


def _check_constraints(name: str, text: str) -> None:
    """interaction_constraints: nested lists of integers; monotone_constraints: a tuple or list of
    -1, 0, 1. Parsed as JSON (with parentheses as brackets), never eval'ed (AWS's image evals)."""
    try:
        value = json.loads(text.replace("(", "[").replace(")", "]"))
    except ValueError:
        value = None
    if name == "monotone_constraints":
        ok = isinstance(value, list) and all(v in (-1, 0, 1) and not isinstance(v, bool) for v in value)
        expected = "a tuple of -1, 0 and 1, one per feature, e.g. (1,0,-1)"
    else:
        ok = isinstance(value, list) and all(
            isinstance(group, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in group)
            for group in value
        )
        expected = "nested lists of feature indices, e.g. [[1,2],[3,4,5]]"
    if not ok:
        raise UserError(f"Hyperparameter {name}: invalid value {text!r}; expected {expected}.")


ALGORITHM = XGBoost()

__all__ = ["ALGORITHM", "NAME", "SELECTABLE_OUTPUTS", "XGBoost"]
