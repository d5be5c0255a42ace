"""JSON and JSON Lines request bodies -> a float32 matrix (dense, or CSR when any instance is
sparse), in the instance forms of the SageMaker inference docs (spec section 3.4).

An instance is any of
    {"features": [1.5, 16.0, 14.0, 23.0]}
    {"data": {"features": {"values": [1.5, 16.0, 14.0, 23.0]}}}
    {"data": {"features": {"keys": [26, 182], "shape": [2000], "values": [1, 4]}}}   (sparse)
    {"data": {"features": [1.5, 16.0, 14.0, 23.0]}}   (a bare array is a dense values list)
    [1.5, 16.0, 14.0, 23.0]
and may carry other keys ("configuration", ...), which are ignored.

application/json bodies: {"instances": [instance, ...]}, a single instance, or a list of
instances (a list of lists is what the SageMaker SDK's JSONSerializer makes of a 2-D array; a
flat list of numbers, of a 1-D array, is one instance). application/jsonlines: one instance per
line; blank lines are skipped.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import scipy.sparse as sp

from .errors import BAD_REQUEST, RequestError

_INSTANCE_FORMS = (
    '{"features": [...]}, {"data": {"features": {"values": [...]}}}, '
    '{"data": {"features": {"keys": [...], "shape": [N], "values": [...]}}} or a list of numbers'
)
_JSON_BODY = "application/json body"
_JSONLINES_BODY = "application/jsonlines body"


def decode_json(body: bytes, feature_dim: int):
    document = _parse(body, _JSON_BODY)
    if isinstance(document, dict):
        if "instances" in document:
            instances = document["instances"]
            if not isinstance(instances, list):
                _fail(f'{_JSON_BODY}: "instances" is {_json_type(instances)}; it must be a list of instances.')
            if not instances:
                _fail(f'{_JSON_BODY}: "instances" is empty; send at least one instance.')
            return _matrix(instances, feature_dim, lambda i: f"{_JSON_BODY}, instance {i}")
        if "features" in document or "data" in document:
            return _matrix([document], feature_dim, lambda i: _JSON_BODY)
        _fail(
            f'{_JSON_BODY}: an object with keys {_keys(document)}; expected {{"instances": [...]}} '
            f"or one instance: {_INSTANCE_FORMS}."
        )
    if isinstance(document, list):
        if not document:
            _fail(f"{_JSON_BODY}: an empty list; send at least one instance.")
        if _is_number(document[0]):
            return _matrix([document], feature_dim, lambda i: _JSON_BODY)
        return _matrix(document, feature_dim, lambda i: f"{_JSON_BODY}, instance {i}")
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
    return _matrix(instances, feature_dim, lambda i: f"{_JSONLINES_BODY}, line {line_numbers[i]}")


def _parse(text: bytes, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{what}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.")
    except UnicodeDecodeError as exc:
        _fail(f"{what}: not UTF-8 text (byte {exc.start}: {exc.reason}).")
    except RecursionError:
        _fail(f"{what}: nested too deeply to be an instance.")


def _matrix(instances: list, feature_dim: int, where):
    """The instances as rows; `where(i)` names instance i in messages."""
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
        return _dense(entries, where)
    return _csr(entries, feature_dim, where)


def _features_of(instance, where, i):
    if isinstance(instance, list):
        return instance
    if isinstance(instance, dict):
        if "features" in instance:
            features = instance["features"]
        elif isinstance(instance.get("data"), dict) and "features" in instance["data"]:
            features = instance["data"]["features"]
        else:
            _fail(f'{where(i)}: an object with keys {_keys(instance)} and no "features"; expected {_INSTANCE_FORMS}.')
        if isinstance(features, (list, dict)):
            return features
        _fail(
            f'{where(i)}: "features" is {_json_type(features)}; it must be a list of numbers or '
            f'{{"values": [...]}} (with "keys" and "shape" when sparse).'
        )
    _fail(f"{where(i)}: {_json_type(instance)}; expected {_INSTANCE_FORMS}.")


def _dense(rows: list, where) -> np.ndarray:
    try:
        X = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        X = None
    # Strings or nulls give a non-numeric array, nested lists a 3-D (or ragged) one: find the
    # first culprit for the message. np.array(rows, dtype=float32) would read "1.5" and null.
    if X is None or X.ndim != 2 or X.dtype.kind not in "iuf":
        for i, row in enumerate(rows):
            _check_numbers(row, where(i), "features")
        _fail(f"{where(0)}: the features are not numbers.")  # not reached: some value is bad
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
    _check_numbers(values, where, "values")
    key_array = np.array(keys, dtype=np.int64)
    order = np.argsort(key_array, kind="stable")
    key_array = key_array[order]
    repeated = np.flatnonzero(key_array[1:] == key_array[:-1])
    if repeated.size:
        _fail(f"{where}: key {int(key_array[repeated[0]])} appears more than once.")
    with np.errstate(over="ignore"):
        return key_array, np.array(values, dtype=np.float32)[order]


def _csr(entries: list, feature_dim: int, where) -> sp.csr_matrix:
    indptr = np.zeros(len(entries) + 1, dtype=np.int64)
    keys, values = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, list):  # a dense instance among sparse ones: keep its non-zeros
            row = _dense([entry], lambda _, i=i: where(i))[0]
            entry = (np.flatnonzero(row), row[row != 0])
        keys.append(entry[0])
        values.append(entry[1])
        indptr[i + 1] = indptr[i] + entry[0].shape[0]
    return sp.csr_matrix(
        (np.concatenate(values), np.concatenate(keys), indptr), shape=(len(entries), feature_dim), dtype=np.float32
    )


def _check_numbers(values: list, where: str, name: str) -> None:
    if not isinstance(values, list):
        _fail(f'{where}: "{name}" is {_json_type(values)}; it must be a list of numbers.')
    for j, value in enumerate(values):
        if not _is_number(value):
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            _fail(f"{where}: {name}[{j}] is {shown}, not a number.")
        if isinstance(value, int) and not -(2**1023) < value < 2**1023:
            _fail(f"{where}: {name}[{j}] is an integer too large for a number.")


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
