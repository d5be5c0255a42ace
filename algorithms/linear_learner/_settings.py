"""What the hyperparameters resolve to: the predictor type's loss, and the settings of each of
the `num_models` models trained side by side.

AWS documents that linear learner trains several models in parallel "with varied objectives
(L1/L2, optimizer settings)" and picks the best on validation, and its logs name what varies:
`Best model found for hyperparameters: {"optimizer": "adam", "learning_rate": ..., "l1": ...,
"wd": ..., "lr_scheduler_step": ..., "lr_scheduler_factor": ..., "lr_scheduler_minimum_lr":
...}`. The values `auto` resolves to are not published (spec section 7), so these are ours:

* A value the user sets is used by every model; only the `auto` ones vary from model to model.
* Model 0 always has the base settings below; models 1.. draw theirs from a fixed-seed generator,
  so a job is deterministic:
    learning_rate  base: adam 0.02, rmsprop 0.01, sgd 0.1; others log-uniform over base/10 .. base*5
    wd, l1         base 0; others 0 for half of the models, else log-uniform over 1e-7 .. 1e-2
    scheduler      base step 100, factor 0.99, minimum_lr 1e-5 (the values the 2017 Spark
                   docstring gives); others step log-uniform 10 .. 1000, factor uniform
                   0.95 .. 0.999, minimum_lr log-uniform 1e-6 .. 1e-4
    positive_example_weight_mult=auto (binary): model 0 weighs positives 1, the others
                   r ** u with r = negatives / positives in the scaler sample (`balanced`) and
                   u uniform over 0 .. 1, so the models span "as given" to "balanced".
* num_models = auto is 32 (the packing AWS's logs show: models 0 to 31), and 1 in a job that
  SageMaker's automatic model tuning started (as AWS documents).
* optimizer = auto is adam (as documented); momentum = auto is 0 (sgd without momentum),
  beta_1 / beta_2 = auto are 0.9 / 0.999, bias_lr_mult = auto is 10, bias_wd_mult = auto 0
  (no bias regularisation, as documented).
* num_calibration_samples = auto is 100,000 rows: enough to place a threshold to within about
  0.3 % of the rows, at 400 kB per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.hyperparameters import AUTO, TUNING_OBJECTIVE

from . import _kernels as kernels

BINARY = "binary_classifier"
MULTICLASS = "multiclass_classifier"
REGRESSOR = "regressor"
PREDICTOR_TYPES = (BINARY, MULTICLASS, REGRESSOR)

LOSSES = {
    "logistic": kernels.LOGISTIC,
    "hinge_loss": kernels.HINGE,
    "squared_loss": kernels.SQUARED,
    "absolute_loss": kernels.ABSOLUTE,
    "eps_insensitive_squared_loss": kernels.EPS_SQUARED,
    "eps_insensitive_absolute_loss": kernels.EPS_ABSOLUTE,
    "quantile_loss": kernels.QUANTILE,
    "huber_loss": kernels.HUBER,
    "softmax_loss": kernels.SOFTMAX,
}
LOSSES_BY_PREDICTOR = {
    BINARY: ("logistic", "hinge_loss"),
    MULTICLASS: ("softmax_loss",),
    REGRESSOR: (
        "squared_loss",
        "absolute_loss",
        "eps_insensitive_squared_loss",
        "eps_insensitive_absolute_loss",
        "quantile_loss",
        "huber_loss",
    ),
}
# The name of each loss's `<name>_objective` metric line. Observed in AWS's logs:
# binary_classification_cross_entropy_objective, mse_objective, multiclass_cross_entropy_objective.
OBJECTIVE_METRICS = {
    "logistic": "binary_classification_cross_entropy_objective",
    "hinge_loss": "binary_classification_hinge_loss_objective",
    "squared_loss": "mse_objective",
    "absolute_loss": "absolute_loss_objective",
    "eps_insensitive_squared_loss": "eps_insensitive_squared_loss_objective",
    "eps_insensitive_absolute_loss": "eps_insensitive_absolute_loss_objective",
    "quantile_loss": "quantile_loss_objective",
    "huber_loss": "huber_loss_objective",
    "softmax_loss": "multiclass_cross_entropy_objective",
}
# How a regression loss scales with the label's unit: loss(a r) = a ** degree loss(r) (with the
# loss's own parameter scaled alike), so that a loss computed on normalised labels converts back.
LOSS_DEGREE = {
    "squared_loss": 2,
    "absolute_loss": 1,
    "eps_insensitive_squared_loss": 2,
    "eps_insensitive_absolute_loss": 1,
    "quantile_loss": 1,
    "huber_loss": 2,
}
# The hyperparameter each loss takes its number from; None for the parameter-free ones.
LOSS_PARAMETER = {
    "hinge_loss": "margin",
    "eps_insensitive_squared_loss": "loss_insensitivity",
    "eps_insensitive_absolute_loss": "loss_insensitivity",
    "quantile_loss": "quantile",
    "huber_loss": "huber_delta",
}
# Older names of binary_classifier_model_selection_criteria that the SageMaker SDK still accepts.
CRITERION_ALIASES = {"f1": "f_beta", "cross_entropy_loss": "loss_function"}

DEFAULT_NUM_MODELS = 32
# What SageMaker's automatic model tuning adds to the hyperparameters of each job it starts.
DEFAULT_CALIBRATION_SAMPLES = 100_000
BASE_LEARNING_RATE = {"adam": 0.02, "rmsprop": 0.01, "sgd": 0.1}
OPTIMIZERS = {"sgd": kernels.SGD, "adam": kernels.ADAM, "rmsprop": kernels.RMSPROP}
BASE_SCHEDULER = {"lr_scheduler_step": 100, "lr_scheduler_factor": 0.99, "lr_scheduler_minimum_lr": 1e-5}
SEED = 0x11_1EA2


def resolve_loss(hp: dict[str, Any]) -> str:
    loss = hp["loss"]
    if loss == AUTO:
        return {BINARY: "logistic", MULTICLASS: "softmax_loss", REGRESSOR: "squared_loss"}[hp["predictor_type"]]
    return loss


def resolve_criterion(hp: dict[str, Any]) -> str:
    criterion = hp["binary_classifier_model_selection_criteria"]
    return CRITERION_ALIASES.get(criterion, criterion)


def _auto(value: Any, default: Any) -> Any:
    return default if value == AUTO else value


@dataclass(frozen=True)
class ModelSettings:
    """The settings of the M models trained together: one entry per model where they vary."""

    optimizer: str
    learning_rate: np.ndarray
    wd: np.ndarray
    l1: np.ndarray
    lr_scheduler_step: np.ndarray
    lr_scheduler_factor: np.ndarray
    lr_scheduler_minimum_lr: np.ndarray
    # Exponent u of the balanced ratio for positive_example_weight_mult=auto (binary), else None.
    positive_weight_exponent: np.ndarray | None
    momentum: float
    beta_1: float
    beta_2: float
    bias_lr_mult: float
    bias_wd_mult: float

    @property
    def count(self) -> int:
        return int(self.learning_rate.shape[0])

    def describe(self, model: int, positive_weight: float | None = None) -> dict[str, Any]:
        """Model `model`'s varied settings, as AWS's "Best model found" line lists them."""
        described: dict[str, Any] = {
            "optimizer": self.optimizer,
            "learning_rate": float(self.learning_rate[model]),
            "l1": float(self.l1[model]),
            "wd": float(self.wd[model]),
            "lr_scheduler_step": int(self.lr_scheduler_step[model]),
            "lr_scheduler_factor": float(self.lr_scheduler_factor[model]),
            "lr_scheduler_minimum_lr": float(self.lr_scheduler_minimum_lr[model]),
        }
        if positive_weight is not None:
            described["positive_example_weight_mult"] = positive_weight
        return described


def num_models(hp: dict[str, Any]) -> int:
    """num_models, resolved: auto is DEFAULT_NUM_MODELS, or 1 in a job of an automatic model
    tuning job (SageMaker's tuner, not the models packed in one job, explores the settings
    then; AWS documents the same)."""
    if hp["num_models"] != AUTO:
        return int(hp["num_models"])
    return 1 if hp.get(TUNING_OBJECTIVE) else DEFAULT_NUM_MODELS


def model_settings(hp: dict[str, Any]) -> ModelSettings:
    """Resolve `auto` and draw the per-model variations (see the module docstring)."""
    count = num_models(hp)
    rng = np.random.default_rng(SEED)
    optimizer = _auto(hp["optimizer"], "adam")

    def varied(name: str, base: float, draw) -> np.ndarray:
        if hp[name] != AUTO:
            return np.full(count, float(hp[name]))
        values = np.array([base] + [draw() for _ in range(count - 1)], dtype=np.float64)
        return values[:count]

    def log_uniform(low: float, high: float):
        return lambda: float(np.exp(rng.uniform(np.log(low), np.log(high))))

    def sometimes_zero(low: float, high: float):
        draw = log_uniform(low, high)
        return lambda: 0.0 if rng.random() < 0.5 else draw()

    base_lr = BASE_LEARNING_RATE[optimizer]
    learning_rate = varied("learning_rate", base_lr, log_uniform(base_lr / 10, base_lr * 5))
    wd = varied("wd", 0.0, sometimes_zero(1e-7, 1e-2))
    l1 = varied("l1", 0.0, sometimes_zero(1e-7, 1e-2))
    step = varied("lr_scheduler_step", BASE_SCHEDULER["lr_scheduler_step"], lambda: round(log_uniform(10, 1000)()))
    factor = varied("lr_scheduler_factor", BASE_SCHEDULER["lr_scheduler_factor"], lambda: rng.uniform(0.95, 0.999))
    minimum = varied("lr_scheduler_minimum_lr", BASE_SCHEDULER["lr_scheduler_minimum_lr"], log_uniform(1e-6, 1e-4))
    exponent = None
    if hp["predictor_type"] == BINARY and positive_example_weight_mult(str(hp["positive_example_weight_mult"])) == AUTO:
        exponent = np.concatenate([[0.0], rng.uniform(0.0, 1.0, size=count - 1)])[:count]
    return ModelSettings(
        optimizer=optimizer,
        learning_rate=learning_rate,
        wd=wd,
        l1=l1,
        lr_scheduler_step=step.astype(np.int64),
        lr_scheduler_factor=factor,
        lr_scheduler_minimum_lr=minimum,
        positive_weight_exponent=exponent,
        momentum=float(_auto(hp["momentum"], 0.0)),
        beta_1=float(_auto(hp["beta_1"], 0.9)),
        beta_2=float(_auto(hp["beta_2"], 0.999)),
        bias_lr_mult=float(_auto(hp["bias_lr_mult"], 10.0)),
        bias_wd_mult=float(_auto(hp["bias_wd_mult"], 0.0)),
    )


def positive_example_weight_mult(value: str) -> float | str:
    """balanced, auto, or the positive float the string states; UserError otherwise."""
    text = value.strip().lower()
    if text in ("balanced", AUTO):
        return text
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise UserError(
            f"Hyperparameter positive_example_weight_mult: invalid value {value!r}; "
            "expected a positive number, balanced or auto."
        )
    return number


def calibration_samples(hp: dict[str, Any]) -> int:
    return DEFAULT_CALIBRATION_SAMPLES if hp["num_calibration_samples"] == AUTO else int(hp["num_calibration_samples"])


def normalization(hp: dict[str, Any]) -> dict[str, bool | None]:
    """Which normalisations apply: features scaled and centred, label scaled and centred.
    `auto` for unbias_data is decided per data kind by the trainer (dense: centred; sparse:
    only scaled, which keeps its updates lazy), hence None here."""
    regression = hp["predictor_type"] == REGRESSOR
    use_bias = hp["use_bias"]
    normalize_label = regression and _auto(hp["normalize_label"], True)
    return {
        "normalize_data": bool(_auto(hp["normalize_data"], True)),
        "unbias_data": (None if hp["unbias_data"] == AUTO else bool(hp["unbias_data"])) if use_bias else False,
        "normalize_label": bool(normalize_label),
        "unbias_label": bool(regression and use_bias and _auto(hp["unbias_label"], True)),
    }
