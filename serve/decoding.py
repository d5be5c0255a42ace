"""Request bodies -> `Batch`: CSV, JSON, JSON Lines, RecordIO-protobuf (dense and sparse) and
LIBSVM (label optional; the width is the largest index + 1, widened to the model's).

Every decoder checks the feature count against the model's exactly, and raises RequestError 400
naming the line, record or instance that is wrong. The one exception is an algorithm's declared
`fewer_request_features` (XGBoost's: AWS's image accepts CSV and RecordIO requests with one fewer
feature, because a model trained on LIBSVM with one-based indices has an empty feature 0; the
same tolerance let a missing column through unnoticed, sagemaker-xgboost-container#410, so it is
the algorithm's declaration, never the default).
"""

from __future__ import annotations

import io
import re
from typing import BinaryIO

import numpy as np

from smalgo import recordio
from smalgo.algorithms.batch import Batch, first_non_finite, non_finite_hint
from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.csv import iter_csv_blocks
from smalgo.algorithms.formats.libsvm import decode_libsvm

from .errors import BAD_REQUEST, RequestError
from .json_instances import decode_json, decode_jsonlines
from .media import CSV, JSON, JSONLINES, LIBSVM, RECORDIO_PROTOBUF

# CSV bodies up to this size whose bytes are all plain decimal notation are parsed by Python's
# float(). A call into the numba decoder has a fixed cost (12 us measured alone, ~40 us inside a
# request, where its caches are cold) that float() (~0.2 us a cell) reaches at about 100 cells;
# a single record of a few features is ~5x cheaper this way. Anything else (and any doubt) goes
# to the decoder, which also writes the error messages.
SMALL_CSV_BYTES = 1024
_PLAIN_DECIMAL_CSV = re.compile(rb"[0-9.eE+\-,\r\n]*")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def decode_request(
    body: bytes | BinaryIO,
    media_type: str,
    feature_dim: int,
    *,
    finite_values_only: bool = False,
    fewer_features: int = 0,
) -> Batch:
    """Decode a non-empty request body of a canonical media type (see media.py) into a Batch
    of at least one row with `feature_dim` features (CSV and RecordIO: down to `feature_dim -
    fewer_features`; LIBSVM: up to feature_dim, widened to it). With `finite_values_only` (the
    model's algorithm declares it), NaN and infinities (numbers beyond float32 read as inf) are
    refused with a 400 naming the row and column, whatever the format.

    `body` may be a file positioned at the body's start (a large body the worker spilled to
    disk): CSV and RecordIO are decoded from it a few MB at a time, so that memory holds the
    rows, not the text as well; JSON, JSON Lines and LIBSVM are parsed from the bytes, read
    whole (their parsers take nothing else, and their parsed form outweighs the text anyway)."""
    if media_type == CSV:
        if isinstance(body, bytes):
            for width in range(feature_dim, feature_dim - fewer_features - 1, -1):
                X = _decode_small_csv(body, width)
                if X is not None:
                    return Batch(X)  # plain decimal numbers within the float32 range: finite
        if fewer_features:
            X = _within(_decode_csv_with_decoder(body, None), feature_dim, fewer_features, what="text/csv body")
        else:
            X = _decode_csv_with_decoder(body, feature_dim)
    elif media_type == JSON:
        X = decode_json(_whole(body), feature_dim)
    elif media_type == JSONLINES:
        X = decode_jsonlines(_whole(body), feature_dim)
    elif media_type == RECORDIO_PROTOBUF:
        if fewer_features:
            X = _within(
                decode_recordio(body, None), feature_dim, fewer_features, what="application/x-recordio-protobuf body"
            )
        else:
            X = decode_recordio(body, feature_dim)
    elif media_type == LIBSVM:
        X = decode_libsvm_request(_whole(body), feature_dim)
    else:  # media.py lets no other type through
        raise AssertionError(f"no decoder for {media_type}")
    if finite_values_only:
        found = first_non_finite(X)
        if found is not None:
            row, column, value = found
            raise RequestError(
                BAD_REQUEST,
                f"{_locate(body, media_type, row=row, column=column)}: {np.float32(value)} is not a finite number"
                f"{non_finite_hint(value)}; this model takes finite numbers only.",
            )
    return Batch(X)


def _whole(body: bytes | BinaryIO) -> bytes:
    """The body's bytes, for the parsers that take nothing else (JSON, JSON Lines, LIBSVM)."""
    return body if isinstance(body, bytes) else body.read()


def _within(X, feature_dim: int, fewer_features: int, *, what: str):
    """X when its width is feature_dim or at most `fewer_features` less; RequestError otherwise."""
    if not feature_dim - fewer_features <= X.shape[1] <= feature_dim:
        raise RequestError(
            BAD_REQUEST,
            f"{what} has {X.shape[1]} features per record; the model takes {feature_dim} "
            f"(or {feature_dim - fewer_features} to {feature_dim - 1}, for a model with unused leading features).",
        )
    return X


def decode_libsvm_request(body: bytes, feature_dim: int):
    """LIBSVM lines, each `[label] index:value ...` (a label is allowed and ignored), as a CSR
    matrix of the model's width; RequestError naming the line that does not parse or an index
    beyond the model's features."""
    try:
        X, _, _ = decode_libsvm(body, name="text/libsvm body", label_optional=True)
    except UserError as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None
    if X.shape[0] == 0:
        raise RequestError(BAD_REQUEST, "text/libsvm body holds no records: every line is blank.")
    if X.shape[1] > feature_dim:
        raise RequestError(
            BAD_REQUEST,
            f"text/libsvm body has feature index {X.shape[1] - 1}; the model's features are 0 to {feature_dim - 1}.",
        )
    X.resize((X.shape[0], feature_dim))
    return X


def _locate(body: bytes | BinaryIO, media_type: str, *, row: int, column: int) -> str:
    """Where row `row` (blank lines not counted), column `column` of a decoded body is, in
    the body's own terms: the line of CSV and JSON Lines, the instance of JSON, the record of
    RecordIO (0-based, as RecordIO errors count them)."""
    if media_type == CSV:
        return f"text/csv body, line {_line_number(body, row)}, column {column + 1}"
    if media_type == JSONLINES:
        line = _line_number(body, row, line_ends_at_lf_only=True, blank=_ASCII_WHITESPACE)
        return f"application/jsonlines body, line {line}, feature {column}"
    if media_type == JSON:
        return f"application/json body, instance {row}, feature {column}"
    if media_type == LIBSVM:
        return f"text/libsvm body, line {_line_number(body, row)}, feature {column}"
    return f"application/x-recordio-protobuf body: record {row}, feature {column}"


# What bytes.strip() strips (str.strip() would strip more: Latin-1's no-break space too).
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"


def _line_number(body: bytes | BinaryIO, row: int, *, line_ends_at_lf_only: bool = False, blank: str = " \t") -> int:
    """The 1-based number of the line of row `row` (0-based) of a line-based body, where lines
    made only of `blank` characters (which the decoders skip) hold no row. Lines end at \\n, \\r\\n
    and \\r (CSV, LIBSVM), or at \\n only (JSON Lines). A file is read line by line, up to the row."""
    if isinstance(body, bytes):
        lines = body.split(b"\n") if line_ends_at_lf_only else body.splitlines()
        return [n for n, line in enumerate(lines, 1) if line.strip(blank.encode())][row]
    body.seek(0)
    # Latin-1 maps every byte to one character; newline=None ends lines where splitlines() does.
    text = io.TextIOWrapper(body, encoding="latin-1", newline="\n" if line_ends_at_lf_only else None)
    try:
        for number, line in enumerate(text, 1):
            if line.strip(blank + "\r\n"):
                if not row:
                    return number
                row -= 1
    finally:
        text.detach()  # the file is the worker's to close
    raise IndexError(f"the body has fewer rows than were decoded from it (row {row} more)")


def _decode_csv_with_decoder(body: bytes | BinaryIO, feature_dim: int | None) -> np.ndarray:
    """One record per line, `feature_dim` numbers per record, no label column: the numba
    decoder, for what the small-body path (_decode_small_csv) leaves to it."""
    try:
        blocks = [
            X
            for X, _ in iter_csv_blocks(
                body,
                label_size=0,
                feature_dim=feature_dim,
                name="text/csv body",
                feature_dim_source="the model's feature_dim",
            )
        ]
    except UserError as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None
    if not blocks:
        raise RequestError(BAD_REQUEST, "text/csv body holds no records: every line is blank.")
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _decode_small_csv(body: bytes, feature_dim: int) -> np.ndarray | None:
    """The fast path for small bodies; None when the decoder must decide. Reads exactly what
    the decoder reads (each cell rounded to a double, then to float32): on these bytes both
    accept the same cells, and Python's float() rounds correctly."""
    if len(body) > SMALL_CSV_BYTES or not _PLAIN_DECIMAL_CSV.fullmatch(body):
        return None
    cells = []
    n_rows = 0
    for line in body.splitlines():  # \n, \r\n and \r, as the decoder; it skips empty lines too
        if line:
            row = line.split(b",")
            if len(row) != feature_dim:
                return None
            cells += row
            n_rows += 1
    if not n_rows:
        return None
    try:
        values = list(map(float, cells))
    except ValueError:
        return None
    if max(values) > _FLOAT32_MAX or min(values) < -_FLOAT32_MAX:
        return None  # overflows float32: the decoder's business (it gives inf, without a warning)
    return np.array(values, dtype=np.float32).reshape(n_rows, feature_dim)


# The output of another built-in that an inference pipeline passes on as the next one's input:
# PCA's answer, its rows under this label key.
PIPELINE_FEATURES_KEY = "projection"


def _pipeline_rows(body: bytes | BinaryIO, feature_dim: int | None) -> np.ndarray | None:
    """The `projection` vectors of a RecordIO answer of PCA's, as rows; None when `body` is
    not such an answer (the caller then reports why it is not a request either)."""
    try:
        outputs = recordio.decode_response(body, vector_keys=(PIPELINE_FEATURES_KEY,))
    except recordio.RecordIOError:
        return None
    if set(outputs) != {PIPELINE_FEATURES_KEY}:
        return None
    X = np.ascontiguousarray(outputs[PIPELINE_FEATURES_KEY], dtype=np.float32)
    if feature_dim is not None and X.shape[1] != feature_dim:
        raise RequestError(
            BAD_REQUEST,
            f"application/x-recordio-protobuf body: its records' {PIPELINE_FEATURES_KEY!r} vectors have "
            f"{X.shape[1]} values; the model takes {feature_dim} features.",
        )
    return X


def decode_recordio(body: bytes | BinaryIO, feature_dim: int | None):
    """One aialgs.data.Record per row, dense or sparse; labels, if any, are ignored. Records
    whose features map is empty and whose label map holds `projection` (PCA's answer, passed on
    by an inference pipeline) give that vector as their row."""
    try:
        X, _ = recordio.read(body, feature_dim=feature_dim)
    except recordio.RecordIOError as exc:
        if not isinstance(body, bytes):
            body.seek(0)
        X = _pipeline_rows(body, feature_dim)
        if X is None:
            raise RequestError(BAD_REQUEST, f"application/x-recordio-protobuf body: {exc}") from None
    if X.shape[0] == 0:
        raise RequestError(BAD_REQUEST, "application/x-recordio-protobuf body holds no records.")
    return X
