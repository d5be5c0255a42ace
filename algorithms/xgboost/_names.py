"""Names XGBoost's declaration and its modules share, kept apart from the modules that import
xgboost: the registry imports the declaration, and an installation without XGBoost (smalgo
without its `cpu` or `gpu` extra) must still import it."""

from dataclasses import dataclass

MODEL_FILE = "xgboost-model"
# A request may have one feature fewer than the model (AWS's image's rule: a model trained on
# LIBSVM with one-based indices has an empty feature 0, which CSV requests leave out).
FEWER_REQUEST_FEATURES = 1
PICKLE_VARIABLE = "SMALGO_XGBOOST_ALLOW_PICKLE"
ENSEMBLE_VARIABLE = "SAGEMAKER_INFERENCE_ENSEMBLE"
OUTPUT_VARIABLE = "SAGEMAKER_INFERENCE_OUTPUT"

PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES = "predicted_label", "labels", "probability", "probabilities"
RAW_SCORE, RAW_SCORES, PREDICTED_SCORE = "raw_score", "raw_scores", "predicted_score"
SELECTABLE_OUTPUTS = (PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES, PREDICTED_SCORE)

# Metrics where larger is better (AWS's xgb_constants.XGB_MAXIMIZE_METRICS, XGBoost's own names).
MAXIMIZE_METRICS = ("auc", "aucpr", "map", "ndcg", "pre", "interval-regression-accuracy")
# The hyperparameters that are smalgo's or AWS's, not XGBoost's.
NOT_XGBOOST_PARAMETERS = (
    "num_round",
    "csv_weights",
    "early_stopping_rounds",
    "save_model_on_termination",
    "_kfold",
    "_num_cv_round",
    "_tuning_objective_metric",
)


@dataclass(frozen=True)
class EarlyStoppingRule:
    """Stop after `rounds` rounds without improvement of `metric` (None: the last metric XGBoost
    reports) on the validation channel."""

    metric: str | None
    rounds: int
    maximize: bool
