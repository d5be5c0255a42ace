"""Declarative hyperparameter schemas.

Lenient about encoding, strict about meaning. SageMaker hands every value over as a string, and
clients encode them differently: the Python SDK's first-party estimators write `str(value)`
(`"10"`, `"True"`, lists as JSON), framework estimators JSON-encode each value (`"\\"10\\""`), AWS
docs and the tuner write lowercase booleans. All of these parse. An unknown name, a value of the
wrong type, a value out of range or a missing required one is a `UserError` that names the
hyperparameter, quotes the value and states what would be valid.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

AUTO = "auto"

logger = logging.getLogger(__name__)

# Injected by SageMaker Automatic Model Tuning into every tuning job's training jobs: the metric
# the tuning job optimises, as "<channel>:<metric>" ("test:msd", "validation:auc").
TUNING_OBJECTIVE = "_tuning_objective_metric"
PLATFORM_HYPERPARAMETERS = (TUNING_OBJECTIVE,)
# Names that begin with this are AWS's images' hidden settings (`_num_gpus`, `_kvstore`,
# `_log_level`, ...), which job descriptions copied from AWS's jobs carry: accepted and ignored
# with a log line, unless the algorithm declares one (XGBoost's `_kfold`). Any other unknown
# name is refused.
HIDDEN_PREFIX = "_"

_KINDS = ("int", "float", "bool", "str", "list")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter.

    kind: "int", "float", "bool", "str" (usually with `choices`) or "list" (of `item_kind`).
    minimum/maximum: inclusive bounds, unless `exclusive_minimum`/`exclusive_maximum`.
    allow_auto: the string "auto" is accepted and returned as `AUTO` for the algorithm to resolve.
    aliases: other names accepted for it (the value is stored under `name`).
    """

    name: str
    kind: str
    default: Any = None
    required: bool = False
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    allow_auto: bool = False
    item_kind: str = "str"
    aliases: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown hyperparameter kind {self.kind!r} for {self.name}")

    def valid_values(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind == "list":
            what = f"a JSON list of {self.item_kind}"
            if self.choices:
                what += " drawn from " + ", ".join(map(str, self.choices))
        elif self.choices:
            what = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "bool":
            what = "true or false"
        else:
            what = {"int": "an integer", "float": "a number", "str": "a string"}[self.kind]
            bounds = []
            if self.minimum is not None:
                bounds.append((">" if self.exclusive_minimum else ">=") + f" {_fmt(self.minimum)}")
            if self.maximum is not None:
                bounds.append(("<" if self.exclusive_maximum else "<=") + f" {_fmt(self.maximum)}")
            if bounds:
                what += " " + " and ".join(bounds)
        if self.allow_auto:
            what += ", or auto"
        return what

    def parse(self, raw: Any) -> Any:
        """The typed value of `raw`, or a UserError that names this hyperparameter."""
        value = _unwrap_json_string(raw)
        if isinstance(value, str) and value.strip().lower() == AUTO:
            if self.allow_auto:
                return AUTO
            self._reject(raw, "auto is not accepted here")
        if self.kind == "list":
            parsed = self._parse_list(raw, value)
        else:
            parsed = self._parse_scalar(raw, value, kind=self.kind)
        return parsed

    def _parse_list(self, raw: Any, value: Any) -> list:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text)
            except ValueError:
                # `msd` or `msd,ssd`: a bare list the way a person would type it.
                value = [part.strip().strip("'\"") for part in text.strip("[]").split(",") if part.strip()]
        if not isinstance(value, (list, tuple)) or not value:
            self._reject(raw, "expected a non-empty list")
        items = [
            self._parse_scalar(raw, _unwrap_json_string(v), kind=self.item_kind, check_choices=False) for v in value
        ]
        if self.choices:
            for item in items:
                if item not in self.choices:
                    self._reject(raw, f"{item!r} is not allowed")
        return items

    def _parse_scalar(self, raw: Any, value: Any, *, kind: str, check_choices: bool = True) -> Any:
        result: Any
        if kind == "bool":
            if isinstance(value, bool):
                result = value
            elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                result = value.strip().lower() in _TRUE
            elif isinstance(value, int) and value in (0, 1):
                result = bool(value)
            else:
                self._reject(raw)
            return result
        if kind == "int":
            result = _as_int(value)
            if result is None:
                self._reject(raw)
        elif kind == "float":
            result = _as_float(value)
            if result is None:
                self._reject(raw)
        else:
            if not isinstance(value, str):
                value = str(value)
            result = value.strip()
        if check_choices and self.choices and result not in self.choices:
            # Categorical values are matched case-insensitively: `KMeans++` means `kmeans++`.
            folded = {str(c).lower(): c for c in self.choices}
            if isinstance(result, str) and result.lower() in folded:
                return folded[result.lower()]
            self._reject(raw)
        if kind in ("int", "float"):
            self._check_range(raw, result)
        return result

    def _check_range(self, raw: Any, number: float) -> None:
        lo, hi = self.minimum, self.maximum
        if lo is not None and (number < lo or (self.exclusive_minimum and number == lo)):
            self._reject(raw)
        if hi is not None and (number > hi or (self.exclusive_maximum and number == hi)):
            self._reject(raw)

    def _reject(self, raw: Any, why: str = "") -> None:
        shown = raw if isinstance(raw, str) else json.dumps(raw) if _jsonable(raw) else repr(raw)
        detail = f" ({why})" if why else ""
        raise UserError(f"Hyperparameter {self.name}: invalid value {shown!r}{detail}; expected {self.valid_values()}.")


@dataclass(frozen=True)
class Schema:
    """An algorithm's hyperparameters. `extra_allowed` names undocumented keys that clients send
    and that are accepted and ignored (k-means: `force_dense`, always sent by the Python SDK)."""

    parameters: tuple[Hyperparameter, ...]
    extra_allowed: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [p.name for p in self.parameters] + [a for p in self.parameters for a in p.aliases]
        if len(names) != len(set(names)):
            raise ValueError("duplicate hyperparameter name or alias in schema")

    def __getitem__(self, name: str) -> Hyperparameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate `raw` (as read from hyperparameters.json) and return every hyperparameter of
        the schema by its canonical name, defaults filled in (None where there is none), plus
        the platform's own (`_tuning_objective_metric`) when given, as the string it is."""
        by_name = {p.name: p for p in self.parameters}
        by_name.update({a: p for p in self.parameters for a in p.aliases})
        ignored = set(PLATFORM_HYPERPARAMETERS) | set(self.extra_allowed)
        hidden = sorted(k for k in raw if k.startswith(HIDDEN_PREFIX) and k not in by_name and k not in ignored)
        if hidden:
            logger.info(
                "Ignoring hyperparameter%s %s: hidden settings of AWS's own images (their names begin with "
                "_), which smalgo has no use for.",
                "s" if len(hidden) > 1 else "",
                ", ".join(hidden),
            )
            ignored |= set(hidden)
        unknown = sorted(k for k in raw if k not in by_name and k not in ignored)
        if unknown:
            known = ", ".join(sorted(p.name for p in self.parameters))
            raise UserError(
                f"Unknown hyperparameter{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; this algorithm accepts: {known}."
            )
        values: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        for key, raw_value in raw.items():
            if key in ignored:
                continue
            p = by_name[key]
            if p.name in given_as:
                raise UserError(f"Hyperparameter {p.name} is given twice (as {given_as[p.name]} and as {key}).")
            given_as[p.name] = key
            values[p.name] = p.parse(raw_value)
        missing = [p.name for p in self.parameters if p.required and p.name not in values]
        if missing:
            raise UserError(
                f"Missing required hyperparameter{'s' if len(missing) > 1 else ''}: "
                + "; ".join(f"{name} ({self[name].valid_values()})" for name in missing)
                + "."
            )
        for p in self.parameters:
            values.setdefault(p.name, p.default)
        for name in PLATFORM_HYPERPARAMETERS:
            if name in raw:
                values[name] = str(_unwrap_json_string(raw[name]))
        return values


def tuning_objective(hp: Mapping[str, Any]) -> tuple[str, str] | None:
    """(channel, metric) of the tuning job's objective ("test:msd" -> ("test", "msd"); a value
    without a channel gives ("", value)), or None outside a tuning job."""
    value = hp.get(TUNING_OBJECTIVE)
    if not value:
        return None
    channel, separator, metric = str(value).partition(":")
    return (channel, metric) if separator else ("", channel)


# Every algorithm that is told the width of its data declares it the same way.
FEATURE_DIM = Hyperparameter(
    "feature_dim", "int", required=True, minimum=1, description="Number of features in the input data."
)


def _unwrap_json_string(raw: Any) -> Any:
    """`"\\"10\\""` (a JSON-encoded string, as framework estimators send) -> `"10"`."""
    value = raw
    for _ in range(3):
        if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                break
        else:
            break
    return value


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if "_" in text:  # Python reads "1_0" as 10; nobody writing a hyperparameter means that
            return None
        try:
            return int(text)
        except ValueError:
            number = _as_float(text)
            # "10.0" and "1e3" name integers; "10.5" does not.
            return int(number) if number is not None and number.is_integer() else None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        if "_" in value:  # as in _as_int: "1_0.5" is not 10.5
            return None
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
