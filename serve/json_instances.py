"""JSON and JSON Lines request bodies -> a float32 matrix (dense, or CSR when any instance is
sparse), in the instance forms of the SageMaker inference docs (spec section 3.4).

An instance is any of
    {"features": [1.5, 16.0, 14.0, 23.0]}
    {"data": {"features": {"values": [1.5, 16.0, 14.0, 23.0]}}}
    {"data": {"features": {"keys": [26, 182], "shape": [2000], "values": [1, 4]}}}   (sparse)
    {"data": {"features": [1.5, 16.0, 14.0, 23.0]}}   (a bare array is a dense values list)
    [1.5, 16.0, 14.0, 23.0]
and may carry other keys ("configuration", ...), which are ignored. What PCA answers is read as
instances too, so that an inference pipeline can pass it on: {"projections": [{"projection":
[...]}, ...]} (JSON) and {"projection": [...]} lines (JSON Lines).

application/json bodies: {"instances": [instance, ...]}, a single instance, or a list of
instances (a list of lists is what the SageMaker SDK's JSONSerializer makes of a 2-D array; a
flat list of numbers, of a 1-D array, is one instance). application/jsonlines: one instance per
line; blank lines are skipped.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from .errors import BAD_REQUEST, RequestError

_INSTANCE_FORMS = (
    '{"features": [...]}, {"data": {"features": {"values": [...]}}}, '
    '{"data": {"features": {"keys": [...], "shape": [N], "values": [...]}}} or a list of numbers'
)
# The list of instances in a JSON body: a request's, or PCA's answer's (an inference pipeline).
_INSTANCE_LISTS = ("instances", "projections")
# An instance's features: a request's, or a row of PCA's answer.
_FEATURE_KEYS = ("features", "projection")
_JSON_BODY = "application/json body"
_JSONLINES_BODY = "application/jsonlines body"


def decode_json(body: bytes, feature_dim: int):
    document = _parse(body, _JSON_BODY)
    booleans = _may_hold_booleans(body)
    if isinstance(document, dict):
        list_key = next((key for key in _INSTANCE_LISTS if key in document), None)
        if list_key is not None:
            instances = document[list_key]
            if not isinstance(instances, list):
                _fail(f'{_JSON_BODY}: "{list_key}" is {_json_type(instances)}; it must be a list of instances.')
            if not instances:
                _fail(f'{_JSON_BODY}: "{list_key}" is empty; send at least one instance.')
            return _matrix(instances, feature_dim, lambda i: f"{_JSON_BODY}, instance {i}", booleans=booleans)
        if any(key in document for key in _FEATURE_KEYS) or "data" in document:
            return _matrix([document], feature_dim, lambda i: _JSON_BODY, booleans=booleans)
        _fail(
            f'{_JSON_BODY}: an object with keys {_keys(document)}; expected {{"instances": [...]}} '
            f"or one instance: {_INSTANCE_FORMS}."
        )
    if isinstance(document, list):
        if not document:
            _fail(f"{_JSON_BODY}: an empty list; send at least one instance.")
        if _is_number(document[0]):
            return _matrix([document], feature_dim, lambda i: _JSON_BODY, booleans=booleans)
        return _matrix(document, feature_dim, lambda i: f"{_JSON_BODY}, instance {i}", booleans=booleans)
    _fail(
        f'{_JSON_BODY}: {_json_type(document)}; expected {{"instances": [...]}}, a list of instances, '
        f"or one instance: {_INSTANCE_FORMS}."
    )


def decode_jsonlines(body: bytes, feature_dim: int):
    instances, line_numbers = [], []
    for number, line in enumerate(body.split(b"\n"), 1):
        if line.strip():
            instances.append(_parse(line, f"{_JSONLINES_BODY}, line {number}"))
            line_numbers.append(number)
    if not instances:
        _fail(f"{_JSONLINES_BODY} holds no records: every line is blank.")
    return _matrix(
        instances,
        feature_dim,
        lambda i: f"{_JSONLINES_BODY}, line {line_numbers[i]}",
        booleans=_may_hold_booleans(body),
    )


def _may_hold_booleans(body: bytes) -> bool:
    """False when the body has no JSON true or false anywhere: its dense rows then need no
    value-by-value look for booleans (numpy reads True among floats as 1.0)."""
    return b"true" in body or b"false" in body


def _parse(text: bytes, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{what}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.")
    except UnicodeDecodeError as exc:
        _fail(f"{what}: not UTF-8 text (byte {exc.start}: {exc.reason}).")
    except RecursionError:
        _fail(f"{what}: nested too deeply to be an instance.")


def _matrix(instances: list, feature_dim: int, where, *, booleans: bool = True):
    """The instances as rows; `where(i)` names instance i in messages. `booleans`: whether
    the body may hold a JSON boolean (then every dense value is looked at)."""
    entries: list[Any] = []  # a list of values (dense) or a (keys, values) pair (sparse), per instance
    for i, instance in enumerate(instances):
        features = _features_of(instance, where, i)
        if isinstance(features, list):
            values, keys, shape = features, None, None
        else:
            values, keys, shape = features.get("values"), features.get("keys"), features.get("shape")
            if not isinstance(values, list):
                _fail(f'{where(i)}: "values" is {_json_type(values)}; it must be a list of numbers.')
            if shape is not None and shape != [feature_dim]:
                _fail(
                    f'{where(i)}: "shape" is {json.dumps(shape)}, but the model takes {feature_dim} features '
                    f"(shape [{feature_dim}])."
                )
        if keys is None:
            if len(values) != feature_dim:
                _fail(
                    f"{where(i)}: {len(values)} feature{'s' if len(values) != 1 else ''}; "
                    f"the model takes {feature_dim}."
                )
            entries.append(values)
        else:
            entries.append(_sparse_entry(keys, values, feature_dim=feature_dim, where=where(i)))
    if all(isinstance(entry, list) for entry in entries):
        return _dense(entries, where, booleans=booleans)
    return _csr(entries, feature_dim, where, booleans=booleans)


def _features_of(instance, where, i):
    if isinstance(instance, list):
        return instance
    if isinstance(instance, dict):
        key = next((key for key in _FEATURE_KEYS if key in instance), None)
        if key is not None:
            features = instance[key]
        elif isinstance(instance.get("data"), dict) and "features" in instance["data"]:
            features = instance["data"]["features"]
        else:
            _fail(f'{where(i)}: an object with keys {_keys(instance)} and no "features"; expected {_INSTANCE_FORMS}.')
        if isinstance(features, (list, dict)):
            return features
        _fail(
            f'{where(i)}: "{key or "features"}" is {_json_type(features)}; it must be a list of numbers or '
            f'{{"values": [...]}} (with "keys" and "shape" when sparse).'
        )
    _fail(f"{where(i)}: {_json_type(instance)}; expected {_INSTANCE_FORMS}.")


def _dense(rows: list, where, *, booleans: bool = True) -> np.ndarray:
    try:
        X = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        X = None
    # Strings or nulls give a non-numeric array, nested lists a 3-D (or ragged) one, integers
    # beyond 64 bits an object array, and booleans among numbers read as 1.0 and 0.0: then
    # every value is looked at, the first culprit named, and integers read as the floats they
    # are. np.array(rows, dtype=float32) would read "1.5", null and true.
    if X is None or X.ndim != 2 or X.dtype.kind not in "iuf" or booleans:
        X = np.array([_numbers(row, where(i), "features") for i, row in enumerate(rows)], dtype=np.float64)
    with np.errstate(over="ignore"):  # beyond float32: inf, as the CSV decoder reads 1e39
        return np.ascontiguousarray(X, dtype=np.float32)


def _sparse_entry(keys, values: list, *, feature_dim: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(keys, list):
        _fail(f'{where}: "keys" is {_json_type(keys)}; it must be a list of feature indices.')
    if len(keys) != len(values):
        _fail(f'{where}: "keys" has {len(keys)} entries but "values" has {len(values)}; they go in pairs.')
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    for index, key in enumerate(keys):
        if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < feature_dim:
            _fail(
                f"{where}: keys[{index}] is {json.dumps(key)}; keys are feature indices from 0 to "
                f"{feature_dim - 1} (the model takes {feature_dim} features)."
            )
    value_array = np.array(_numbers(values, where, "values"), dtype=np.float64)
    key_array = np.array(keys, dtype=np.int64)
    order = np.argsort(key_array, kind="stable")
    key_array = key_array[order]
    repeated = np.flatnonzero(key_array[1:] == key_array[:-1])
    if repeated.size:
        _fail(f"{where}: key {int(key_array[repeated[0]])} appears more than once.")
    with np.errstate(over="ignore"):
        return key_array, value_array.astype(np.float32)[order]


def _csr(entries: list, feature_dim: int, where, *, booleans: bool) -> sp.csr_matrix:
    indptr = np.zeros(len(entries) + 1, dtype=np.int64)
    keys, values = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, list):  # a dense instance among sparse ones: keep its non-zeros
            row = _dense([entry], lambda _, i=i: where(i), booleans=booleans)[0]
            entry = (np.flatnonzero(row), row[row != 0])
        keys.append(entry[0])
        values.append(entry[1])
        indptr[i + 1] = indptr[i] + entry[0].shape[0]
    return sp.csr_matrix(
        (np.concatenate(values), np.concatenate(keys), indptr), shape=(len(entries), feature_dim), dtype=np.float32
    )


def _numbers(values: list, where: str, name: str) -> list[float]:
    """`values` as floats, or RequestError naming the first that is no number. A JSON true or
    false is refused, not read as 1 or 0; an integer is read as the float it is (rounded to a
    double, as the CSV decoder reads one, and beyond the double range as an infinity)."""
    if not isinstance(values, list):
        _fail(f'{where}: "{name}" is {_json_type(values)}; it must be a list of numbers.')
    numbers = []
    for j, value in enumerate(values):
        if isinstance(value, float):
            numbers.append(value)
        elif isinstance(value, bool):
            _fail(f"{where}: {name}[{j}] is {json.dumps(value)}, a boolean, not a number; send 1 or 0 instead.")
        elif isinstance(value, int):
            try:
                numbers.append(float(value))
            except OverflowError:
                numbers.append(math.inf if value > 0 else -math.inf)
        else:
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            _fail(f"{where}: {name}[{j}] is {shown}, not a number.")
    return numbers


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _keys(document: dict) -> str:
    keys = list(document)[:5]
    return "[" + ", ".join(json.dumps(k) for k in keys) + (", ..." if len(document) > 5 else "") + "]"


def _fail(message: str):
    raise RequestError(BAD_REQUEST, message)
