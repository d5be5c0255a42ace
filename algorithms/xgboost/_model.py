"""The XGBoost model: one Booster (or several, an ensemble) in XGBoost's own file format, and the
outputs AWS's image answers with (spec section 4.5.8).

Files: `xgboost-model` (k-fold: `xgboost-model-<fold>`), written by `Booster.save_raw("ubj")`,
so that `xgboost.Booster().load_model(path)` reads them, as AWS's users do. Loading reads every
file of the directory whose name does not begin with '.' (AWS's rule), each as XGBoost's own
format (UBJSON, JSON or the legacy binary of XGBoost < 2); several files are an ensemble whose
predictions are averaged (a vote for multi:softmax and binary:hinge), unless
SAGEMAKER_INFERENCE_ENSEMBLE is set to anything but "true". A pickle is refused: AWS's image
unpickles every model file first, which runs whatever code the file holds. An operator who trusts
the file can opt in with SMALGO_XGBOOST_ALLOW_PICKLE=true.

Outputs: `score` (XGBoost's prediction: a probability, a value, or a vector of class
probabilities for multi:softprob), or with SAGEMAKER_INFERENCE_OUTPUT the keys it lists, each
computed as AWS's serve_utils does; a key the objective does not give is NaN (AWS's rule).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import xgboost as xgb

from smalgo.algorithms.batch import Batch
from smalgo.algorithms.errors import UserError

from ._legacy import is_legacy_binary, legacy_binary_to_json
from ._names import (
    ENSEMBLE_VARIABLE,
    FEWER_REQUEST_FEATURES,
    LABELS,
    MODEL_FILE,
    OUTPUT_VARIABLE,
    PICKLE_VARIABLE,
    PREDICTED_LABEL,
    PREDICTED_SCORE,
    PROBABILITIES,
    PROBABILITY,
    RAW_SCORE,
    RAW_SCORES,
    SELECTABLE_OUTPUTS,
)

logger = logging.getLogger(__name__)

_CLASSIFICATION = (PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES)
_NO_PROBABILITIES = (PREDICTED_LABEL, LABELS, RAW_SCORE, RAW_SCORES)
# The keys each objective gives (AWS's serve_utils.VALID_OBJECTIVES).
VALID_OUTPUTS: Mapping[str, tuple[str, ...]] = {
    "reg:squarederror": (PREDICTED_SCORE,),
    "reg:logistic": (PREDICTED_SCORE,),
    "reg:gamma": (PREDICTED_SCORE,),
    "reg:absoluteerror": (PREDICTED_SCORE,),
    "reg:tweedie": (PREDICTED_SCORE,),
    "binary:logistic": _CLASSIFICATION,
    "binary:logitraw": _NO_PROBABILITIES,
    "binary:hinge": _NO_PROBABILITIES,
    "multi:softmax": _NO_PROBABILITIES,
    "multi:softprob": _CLASSIFICATION,
}
# Predictions that are class labels: an ensemble votes instead of averaging.
_VOTING_OBJECTIVES = ("multi:softmax", "binary:hinge")
_PICKLE_PROTOCOL_BYTE = 0x80
# What a gzip file (model.tar.gz) begins with.
_GZIP_MAGIC = b"\x1f\x8b"


def selected_outputs(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """SAGEMAKER_INFERENCE_OUTPUT's keys ("predicted_label, probability" -> both, blanks and
    case ignored), or None when it is not set (then the model answers `score`)."""
    env = os.environ if environ is None else environ
    if OUTPUT_VARIABLE not in env:
        return None
    keys = tuple(key for key in env[OUTPUT_VARIABLE].replace(" ", "").lower().split(",") if key)
    if not keys:
        raise UserError(
            f"{OUTPUT_VARIABLE} is set but names no output; list some of {', '.join(SELECTABLE_OUTPUTS)} "
            f"(comma-separated), or unset it for the plain score."
        )
    return keys


@dataclass
class XGBoostModel:
    """Boosters trained on the same features (one, or a k-fold ensemble), the objective they were
    trained with, and the outputs predict() gives (None: `score`)."""

    boosters: list[xgb.Booster]
    outputs: tuple[str, ...] | None = None
    file_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.boosters:
            raise ValueError("an XGBoost model needs at least one booster")
        config = _config(self.boosters[0])
        learner = config.get("learner", {})
        self.objective = str(learner.get("objective", {}).get("name", ""))
        self.num_class = int(learner.get("learner_model_param", {}).get("num_class", "0") or 0)
        if not self.file_names:
            self.file_names = (
                [MODEL_FILE] if len(self.boosters) == 1 else [f"{MODEL_FILE}-{k}" for k in range(len(self.boosters))]
            )
        if self.outputs is not None:
            valid = VALID_OUTPUTS.get(self.objective)
            if valid is None:
                raise UserError(
                    f"{OUTPUT_VARIABLE} is set, but the model's objective {self.objective} has no selectable "
                    f"outputs; objectives that have them: {', '.join(VALID_OUTPUTS)}."
                )
            invalid = [key for key in self.outputs if key not in valid]
            if invalid:
                logger.warning(
                    "%s: %s not given by objective %s (answered as NaN); it gives: %s.",
                    OUTPUT_VARIABLE,
                    ", ".join(invalid),
                    self.objective,
                    ", ".join(valid),
                )

    @property
    def feature_dim(self) -> int:
        return max(booster.num_features() for booster in self.boosters)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        if not self.feature_dim - FEWER_REQUEST_FEATURES <= batch.n_features <= self.feature_dim:
            raise UserError(f"expected {self.feature_dim} features, got {batch.n_features}")
        matrix = to_dmatrix(batch.X)
        raw = self.raw_predictions(matrix)
        if self.outputs is None:
            return {"score": raw}
        return {key: self._selected(key, raw) for key in self.outputs}

    def raw_predictions(self, matrix: xgb.DMatrix) -> np.ndarray:
        """XGBoost's predictions (with each booster's best iteration), averaged or voted over an
        ensemble."""
        predictions = [_predict(booster, matrix) for booster in self.boosters]
        if len(predictions) == 1:
            return predictions[0]
        stacked = np.stack(predictions)
        if self.objective in _VOTING_OBJECTIVES:
            return _vote(stacked)
        return stacked.mean(axis=0, dtype=np.float64).astype(np.float32)

    def _selected(self, key: str, raw: np.ndarray) -> np.ndarray:
        """One selectable output for every row (AWS's serve_utils._get_<key>)."""
        n = raw.shape[0]
        objective = self.objective
        if key not in VALID_OUTPUTS.get(objective, ()):
            return np.full(n, np.nan, dtype=np.float32)
        if key == PREDICTED_SCORE:
            return raw
        if key == LABELS:
            classes = 2 if objective.startswith("binary:") else self.num_class
            return np.tile(np.arange(classes, dtype=np.float32), (n, 1))
        if objective == "multi:softprob":
            if key == PREDICTED_LABEL:
                return raw.argmax(axis=1).astype(np.float32)
            if key in (PROBABILITY, RAW_SCORE):
                return raw.max(axis=1)
            return raw  # probabilities, raw_scores
        if key == PREDICTED_LABEL:
            if objective == "binary:logistic":
                return (raw > 0.5).astype(np.float32)
            if objective == "binary:logitraw":
                return (raw > 0).astype(np.float32)
            return raw  # binary:hinge and multi:softmax predict the label itself
        if key in (PROBABILITY, RAW_SCORE):
            return raw
        # probabilities, raw_scores: [1 - p, p] (AWS writes raw_scores so for every binary objective)
        return np.column_stack([1.0 - raw, raw]).astype(np.float32)

    def save(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        for booster, name in zip(self.boosters, self.file_names, strict=True):
            # save_raw: UBJSON, XGBoost's own format, without the warning save_model gives for a
            # file name that has no .ubj extension.
            (model_dir / name).write_bytes(bytes(booster.save_raw("ubj")))


def to_dmatrix(X: np.ndarray | sp.csr_matrix, **fields) -> xgb.DMatrix:
    """A DMatrix of float32 rows, NaN as the missing value (XGBoost's default)."""
    return xgb.DMatrix(X, missing=np.nan, **fields)


def _predict(booster: xgb.Booster, matrix: xgb.DMatrix) -> np.ndarray:
    """Predictions with the booster's best iteration when early stopping left one (AWS's image:
    best_ntree_limit). A model trained here keeps only the trees up to it already."""
    best = booster.attr("best_iteration")
    rounds = booster.num_boosted_rounds()
    if best is not None and best.isdigit() and int(best) + 1 < rounds:
        return booster.predict(matrix, iteration_range=(0, int(best) + 1), validate_features=False)
    return booster.predict(matrix, validate_features=False)


def _vote(stacked: np.ndarray) -> np.ndarray:
    """The most frequent prediction of each row (the smallest on a tie, as scipy.stats.mode)."""
    values = np.sort(stacked, axis=0)
    result = np.empty(stacked.shape[1:], dtype=stacked.dtype)
    flat_values = values.reshape(values.shape[0], -1)
    out = result.reshape(-1)
    for column in range(flat_values.shape[1]):
        unique, counts = np.unique(flat_values[:, column], return_counts=True)
        out[column] = unique[np.argmax(counts)]
    return result


def _config(booster: xgb.Booster) -> dict:
    import json

    return json.loads(booster.save_config())


def model_file_paths(model_dir: Path) -> list[Path]:
    """The model files of a directory, as AWS's image finds them: every regular file whose name
    does not begin with '.' (dot-files are skipped with a warning), sorted by name; and not a gzip
    archive, which no XGBoost format is: the SageMaker SDK's local mode extracts model.tar.gz
    beside itself and mounts that folder as /opt/ml/model."""
    paths = []
    for path in sorted(Path(model_dir).iterdir()):
        if not path.is_file():
            continue
        if path.name.startswith("."):
            logger.warning("Ignoring the dot-file %s in the model directory.", path)
            continue
        with path.open("rb") as fp:
            if fp.read(2) == _GZIP_MAGIC:
                logger.info("Ignoring the archive %s in the model directory (its files are served).", path)
                continue
        paths.append(path)
    return paths


def load_boosters(model_dir: Path, environ: Mapping[str, str] | None = None) -> tuple[list[xgb.Booster], list[str]]:
    """The boosters of a model directory (one, or all of them as an ensemble), and their file
    names. UserError naming the file for a pickle (unless opted in) or a file XGBoost cannot read."""
    env = os.environ if environ is None else environ
    paths = model_file_paths(model_dir)
    if not paths:
        raise UserError(f"{model_dir} holds no model file (an XGBoost model is a file such as {MODEL_FILE}).")
    if env.get(ENSEMBLE_VARIABLE, "true") != "true" and len(paths) > 1:
        logger.info("%s is not true: serving only %s of %d model files.", ENSEMBLE_VARIABLE, paths[0].name, len(paths))
        paths = paths[:1]
    allow_pickle = env.get(PICKLE_VARIABLE, "").strip().lower() == "true"
    boosters = [_load_booster(path, allow_pickle=allow_pickle) for path in paths]
    return boosters, [path.name for path in paths]


def _load_booster(path: Path, *, allow_pickle: bool) -> xgb.Booster:
    with path.open("rb") as fp:
        first = fp.read(1)
    if first and first[0] == _PICKLE_PROTOCOL_BYTE:
        if not allow_pickle:
            raise UserError(
                f"{path} is a Python pickle. smalgo does not unpickle model files: unpickling runs "
                f"whatever code the file holds. Save the model with Booster.save_model (XGBoost's own "
                f"format, what AWS's image writes from version 1.3-1 on), or, if you trust the file, "
                f"set {PICKLE_VARIABLE}=true."
            )
        logger.warning("Unpickling %s, as %s=true allows: this runs any code the file holds.", path, PICKLE_VARIABLE)
        try:
            with path.open("rb") as fp:
                loaded = pickle.load(fp)  # noqa: S301 (the operator opted in, above)
        except Exception as exc:  # whatever the pickled object's own code raises
            raise UserError(
                f"{path} cannot be unpickled with XGBoost {xgb.__version__}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''} (a pickle holds a Booster in the format of the "
                f"XGBoost that wrote it; save it with Booster.save_model instead)."
            ) from None
        # A scikit-learn wrapper (XGBRegressor, ...) holds its Booster (AWS's image failed on
        # those: sagemaker-xgboost-container#389).
        booster = loaded.get_booster() if hasattr(loaded, "get_booster") else loaded
        if not isinstance(booster, xgb.Booster):
            raise UserError(f"{path} unpickles to a {type(loaded).__name__}, not an XGBoost Booster.")
        return booster
    return read_booster(path)


def read_booster(path: Path) -> xgb.Booster:
    """A Booster from a file in any of XGBoost's own formats (UBJSON, JSON, the legacy binary),
    told apart from the bytes, whatever the file's name; UserError naming the file."""
    return booster_from_bytes(path.read_bytes(), path)


def booster_from_bytes(data: bytes, path: Path) -> xgb.Booster:
    """read_booster of the bytes `data` read from `path`. A file that is not whole (model_damage)
    is refused before XGBoost's reader sees it: that reader trusts the lengths written in the
    file, and a truncated UBJSON or JSON model makes it read past the end of the buffer (measured
    with XGBoost 3.2: an empty file aborts the process, others crash it or exhaust its memory)."""
    if is_legacy_binary(data):
        # XGBoost 3.1+ no longer reads its legacy binary format (AWS's images before 1.3-1 wrote
        # it): converted to XGBoost's JSON model first, tree for tree.
        logger.info("%s is in XGBoost's legacy binary format: converting it to XGBoost's JSON model.", path)
        data = legacy_binary_to_json(data, name=str(path))
    else:
        damage = model_damage(data)
        if damage is not None:
            raise UserError(f"{path} is not an XGBoost model XGBoost {xgb.__version__} can read: {damage}.")
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except (xgb.core.XGBoostError, UnicodeDecodeError) as exc:  # the latter: a message with bytes not UTF-8
        raise UserError(
            f"{path} is not an XGBoost model XGBoost {xgb.__version__} can read: {str(exc).splitlines()[0]}"
        ) from None
    return booster


# UBJSON's markers of a number and the bytes of its payload (all big-endian); T, F, Z and N have none.
_UBJ_SIZES = {ord(marker): size for marker, size in zip("iUCIldLD", (1, 1, 1, 2, 4, 4, 8, 8), strict=True)}
_UBJ_NO_PAYLOAD = frozenset(b"TFZN")


class _Truncated(Exception):
    pass


def model_damage(data: bytes) -> str | None:
    """Why `data` (not the legacy binary format) cannot be one whole XGBoost model, or None: empty;
    JSON text that does not parse; UBJSON whose structure ends before the data does, or not at
    its end, or that has a marker XGBoost does not write; anything else (XGBoost would try it as
    UBJSON too, reading past its end as well)."""
    if not data:
        return "it is empty"
    if data[:1] != b"{":
        return "it is neither UBJSON nor JSON (both begin with '{') nor XGBoost's legacy binary format"
    following = data[1:].lstrip()[:1]
    if following in (b'"', b"}", b""):  # JSON text (as XGBoost tells the two apart)
        try:
            json.loads(data)
        except (ValueError, RecursionError) as exc:
            return f"it is not whole JSON ({exc})"
        return None
    return _ubjson_damage(data)


def _ubjson_damage(data: bytes) -> str | None:
    """model_damage of UBJSON as XGBoost writes and reads it: objects of keys sized by 'L' (an
    int64) up to '}'; arrays typed ('$<type>#L<count>', the values packed), counted ('#L<count>')
    or up to ']'; strings 'SL<size>'. Every size is checked against the bytes left, one step per
    value or key (a typed array, most of a model's bytes, is one step)."""
    end = len(data)
    pos = 0

    def size_at(at: int) -> int:  # an 'L'-marked int64 at `at`; the position after it
        if at + 9 > end:
            raise _Truncated
        if data[at] != ord("L"):
            raise ValueError(f"a size not marked L at byte {at}")
        size = int.from_bytes(data[at + 1 : at + 9], "big", signed=True)
        if size < 0:
            raise ValueError(f"a negative size at byte {at}")
        return size

    # The open containers, innermost last: "{" (an object), "]" (an array up to ']'), or the count
    # of values a counted array has left.
    stack: list[str | int] = []
    try:
        while True:
            # One value at pos.
            marker = data[pos]
            pos += 1
            if marker in _UBJ_SIZES:
                pos += _UBJ_SIZES[marker]
            elif marker in (ord("S"), ord("H")):
                pos += 9 + size_at(pos)
            elif marker == ord("{"):
                stack.append("{")
            elif marker == ord("["):
                if data[pos] == ord("$"):
                    kind = data[pos + 1]
                    if kind not in _UBJ_SIZES or data[pos + 2] != ord("#"):
                        raise ValueError(f"a typed array XGBoost does not write at byte {pos - 1}")
                    count = size_at(pos + 3)
                    pos += 12 + count * _UBJ_SIZES[kind]
                elif data[pos] == ord("#"):
                    stack.append(size_at(pos + 1))
                    pos += 10
                else:
                    stack.append("]")
            elif marker not in _UBJ_NO_PAYLOAD:
                raise ValueError(f"an unknown marker {chr(marker)!r} at byte {pos - 1}")
            if pos > end:
                raise _Truncated
            # Close what that value ended; move to the next value.
            while stack:
                top = stack[-1]
                if top == "{":
                    if data[pos] == ord("}"):
                        pos += 1
                        stack.pop()
                        continue
                    pos += 9 + size_at(pos)  # the key; its value follows
                    if pos > end:
                        raise _Truncated
                elif top == "]":
                    if data[pos] == ord("]"):
                        pos += 1
                        stack.pop()
                        continue
                elif top == 0:
                    stack.pop()
                    continue
                else:
                    stack[-1] = int(top) - 1
                break
            else:
                return None if pos == end else f"it goes on for {end - pos} bytes after the model's end"
    except (_Truncated, IndexError):
        return f"it is truncated: its {end} bytes end inside the model"
    except ValueError as exc:
        return f"it is damaged: {exc}"


def load_model(model_dir: Path, environ: Mapping[str, str] | None = None) -> XGBoostModel:
    """The model in `model_dir`, with the outputs SAGEMAKER_INFERENCE_OUTPUT selects."""
    boosters, names = load_boosters(model_dir, environ)
    return XGBoostModel(boosters, outputs=selected_outputs(environ), file_names=names)
