"""The LIBSVM decoder: `<label>[:<weight>] <index>:<value> ...` lines -> a float32 CSR matrix, the
labels and (when any line gives one) the instance weights. XGBoost's default training format and
one of its request formats (spec section 4.5.2).

Indices are zero-based, as XGBoost reads them: a file written with one-based indices has an empty
column 0, exactly as in AWS's XGBoost image (its abalone data: indices 1..8, 9 columns). The
width is the largest index + 1. Tokens are separated by spaces or tabs; lines end in '\\n',
'\\r\\n' or '\\r'; blank lines and `#` comments (to the end of the line) are skipped. Numbers
are read as the CSV decoder reads them (correctly rounded to a double, then cast to float32; the
rare cells it cannot settle in the kernel go to Python's float()); `qid:` tokens (ranking groups)
are refused, not silently dropped.

One numba pass over the bytes counts the lines and the `:` separators (an upper bound on the
entries), a second fills the arrays. A line that does not parse is a UserError naming the source
(file or request body), the 1-based line and the token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit

from smalgo.algorithms.errors import UserError
from smalgo.recordio import parallel

from .csv import _parse_special, _segment_bounds, _significant_digits, decimal_to_float32, parse_exponent

# Kernel statuses.
_OK, _BAD_LABEL, _BAD_WEIGHT, _BAD_INDEX, _BAD_VALUE, _NO_COLON, _QID = 0, 1, 2, 3, 4, 5, 6
_MESSAGES = {
    _BAD_LABEL: "the label is not a number",
    _BAD_WEIGHT: "the instance weight (after 'label:') is not a number",
    _BAD_INDEX: "the feature index is not a non-negative integer",
    _BAD_VALUE: "the feature value is not a number",
    _NO_COLON: "a feature must be written index:value",
    _QID: "qid (ranking groups) is not supported",
}
# Number kinds.
_NUM_OK, _NUM_SLOW, _NUM_BAD = 0, 1, 2
# Largest index accepted: CSR indices are int32.
_MAX_INDEX = 2**31 - 2


@njit(cache=True, nogil=True, inline="always")
def _token_end(c):
    # space, tab, ':', '\n', '\r', '#'
    return c == 32 or c == 9 or c == 58 or c == 10 or c == 13 or c == 35


@njit(cache=True, nogil=True, inline="always")
def _parse_number(buf, i, end):
    """(kind, value, next) of the number at buf[i], which ends at a separator (_token_end)."""
    start = i
    negative = False
    if i < end and (buf[i] == 45 or buf[i] == 43):
        negative = buf[i] == 45
        i += 1
    mantissa = np.uint64(0)
    digits_start = i
    # A byte below '0' wraps past 9 in uint64: one compare per digit, as the CSV decoder's loop.
    while i < end:
        digit = np.uint64(buf[i]) - np.uint64(48)
        if digit >= np.uint64(10):
            break
        mantissa = mantissa * np.uint64(10) + digit
        i += 1
    integer_end = i
    fraction_start = i
    if i < end and buf[i] == 46:
        i += 1
        fraction_start = i
        while i < end:
            digit = np.uint64(buf[i]) - np.uint64(48)
            if digit >= np.uint64(10):
                break
            mantissa = mantissa * np.uint64(10) + digit
            i += 1
    fraction_digits = i - fraction_start
    exp10 = -fraction_digits
    if integer_end - digits_start + fraction_digits > 19:
        mantissa, exp10 = _significant_digits(buf, digits_start, integer_end, fraction_start, i)
    value = np.float32(0.0)
    if integer_end == digits_start and fraction_digits == 0:
        n, value = _parse_special(buf, i, end)
        if n == 0 or (i + n < end and not _token_end(buf[i + n])):
            return _NUM_BAD, value, i
        if negative:
            return _NUM_SLOW, value, i + n  # Python keeps a negated NaN's sign
        return _NUM_OK, value, i + n
    if i < end and (buf[i] == 101 or buf[i] == 69):
        ok, exponent, i = parse_exponent(buf, i + 1, end)
        if not ok:
            return _NUM_BAD, value, i
        exp10 += exponent
    if i < end and not _token_end(buf[i]):
        return _NUM_BAD, value, i
    if i == start:
        return _NUM_BAD, value, i
    value, settled = decimal_to_float32(mantissa, exp10)
    kind = _NUM_OK if settled else _NUM_SLOW
    if negative:
        value = -value
    return kind, value, i


@njit(cache=True, nogil=True)
def _count(buf):
    """(lines that may hold a record, ':' bytes): upper bounds of rows and entries."""
    lines = 1
    colons = 0
    for k in range(buf.shape[0]):
        c = buf[k]
        if c == 10 or c == 13:
            lines += 1
        elif c == 58:
            colons += 1
    return lines, colons


@njit(cache=True, nogil=True)
def _skip_blanks(buf, i, end):
    while i < end and (buf[i] == 32 or buf[i] == 9):
        i += 1
    return i


@njit(cache=True, nogil=True)
def _line_stop(buf, i, end):
    """Index of the line end (or `end`) at or after i."""
    while i < end and buf[i] != 10 and buf[i] != 13:
        i += 1
    return i


@njit(cache=True, nogil=True, inline="always")
def _separator(c):
    # space, tab, '#', '\n', '\r': what ends a token (':' aside)
    return c == 32 or c == 9 or c == 35 or c == 10 or c == 13


@njit(cache=True, nogil=True, inline="always")
def _at_line_end(buf, i, end):
    """Whether buf[i] ends the line's tokens: the end, a line end or a comment."""
    return i == end or buf[i] == 10 or buf[i] == 13 or buf[i] == 35


@njit(cache=True, nogil=True)
def _first_token_is_pair(buf, i, stop):
    """Whether the token at buf[i] is index:value (an unlabelled request line), not a label."""
    while i < stop and not _separator(buf[i]):
        if buf[i] == 58:
            return True
        i += 1
    return False


@njit(cache=True, nogil=True)
def _fill(buf, indptr, indices, data, y, w, slow, label_optional):  # noqa: PLR0917 (numba kernel: positional arguments only)
    """Parse every line (with `label_optional`, a line whose first token is index:value has no
    label: an inference request's). Returns (status, rows, entries, weighted, slow count, line, line start,
    token start); on an error, the 1-based line, its start and the failing token's start.
    `slow` holds (array id, position, token start, token end) of the numbers left to Python:
    array id 0 labels, 1 weights, 2 values."""
    end = buf.shape[0]
    i = 0
    line = 0
    row = 0
    nnz = 0
    n_slow = 0
    weighted = False
    while i < end:
        line += 1
        line_start = i
        i = _skip_blanks(buf, i, end)
        if _at_line_end(buf, i, end):  # a blank line or a comment
            i = _line_stop(buf, i, end)
        else:
            y[row] = np.nan
            w[row] = 1.0
            if not (label_optional and _first_token_is_pair(buf, i, end)):
                token = i
                kind, value, i = _parse_number(buf, i, end)
                if kind == _NUM_BAD:
                    return _BAD_LABEL, row, nnz, weighted, n_slow, line, line_start, token
                if kind == _NUM_SLOW:
                    slow[n_slow, 0], slow[n_slow, 1], slow[n_slow, 2], slow[n_slow, 3] = 0, row, token, i
                    n_slow += 1
                y[row] = value
                if i < end and buf[i] == 58:  # label:weight
                    token = i + 1
                    kind, value, i = _parse_number(buf, i + 1, end)
                    if kind == _NUM_BAD or (i < end and buf[i] == 58):
                        return _BAD_WEIGHT, row, nnz, weighted, n_slow, line, line_start, token
                    if kind == _NUM_SLOW:
                        slow[n_slow, 0], slow[n_slow, 1], slow[n_slow, 2], slow[n_slow, 3] = 1, row, token, i
                        n_slow += 1
                    w[row] = value
                    weighted = True
            while True:
                i = _skip_blanks(buf, i, end)
                if _at_line_end(buf, i, end):
                    break
                token = i
                if end - i >= 4 and buf[i] == 113 and buf[i + 1] == 105 and buf[i + 2] == 100 and buf[i + 3] == 58:
                    return _QID, row, nnz, weighted, n_slow, line, line_start, token
                index = 0
                while i < end:
                    digit = np.uint64(buf[i]) - np.uint64(48)
                    if digit >= np.uint64(10):
                        break
                    if index <= _MAX_INDEX:
                        index = index * 10 + np.int64(digit)
                    i += 1
                if i == token or index > _MAX_INDEX or (i < end and not _token_end(buf[i])):
                    # Not an index: a malformed index if the token has a ':', else no pair at all.
                    j = token
                    has_colon = False
                    while j < end and not _separator(buf[j]):
                        has_colon = has_colon or buf[j] == 58
                        j += 1
                    status = _BAD_INDEX if has_colon else _NO_COLON
                    return status, row, nnz, weighted, n_slow, line, line_start, token
                if i == end or buf[i] != 58:
                    return _NO_COLON, row, nnz, weighted, n_slow, line, line_start, token
                value_start = i + 1
                kind, value, i = _parse_number(buf, i + 1, end)
                if kind == _NUM_BAD or (i < end and buf[i] == 58):
                    return _BAD_VALUE, row, nnz, weighted, n_slow, line, line_start, value_start
                if kind == _NUM_SLOW:
                    slow[n_slow, 0], slow[n_slow, 1], slow[n_slow, 2], slow[n_slow, 3] = 2, nnz, value_start, i
                    n_slow += 1
                indices[nnz] = index
                data[nnz] = value
                nnz += 1
            row += 1
            indptr[row] = nnz
            i = _line_stop(buf, i, end)  # past a trailing comment
        # the line end: '\n', '\r\n' or '\r'
        if i < end and buf[i] == 13 and i + 1 < end and buf[i + 1] == 10:
            i += 2
        elif i < end:
            i += 1
    return _OK, row, nnz, weighted, n_slow, line, 0, 0


def decode_libsvm(
    payload: bytes | bytearray | memoryview | np.ndarray, *, name: str = "LIBSVM payload", label_optional: bool = False
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray | None]:
    """(X, y, w) of a LIBSVM payload: X a float32 CSR matrix of largest index + 1 columns (sorted
    indices; a repeated index is summed, as scipy does), y float32 labels, w float32 weights or
    None when no line gives one. `name` is what errors call the payload (a file's path). With
    `label_optional` (inference requests), a line that starts with index:value has no label (NaN).

    A large payload is split at line starts between threads (the CSV decoder's threads; the
    kernels release the GIL), each parsing its segment into arrays of its own."""
    buf = payload if isinstance(payload, np.ndarray) else np.frombuffer(payload, dtype=np.uint8)
    bounds = _segment_bounds(buf, 0, buf.shape[0])
    if len(bounds) == 2:
        segments = [_parse_segment(buf, label_optional=label_optional)]
    else:
        pool = parallel.shared_pool(len(bounds) - 1)
        futures = [
            pool.submit(_parse_segment, buf[start:stop], label_optional=label_optional)
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        segments = [future.result() for future in futures]
    lines_before = 0
    for segment, start in zip(segments, bounds, strict=False):
        if segment.failure is not None:
            status, line, line_start, token = segment.failure
            raise _error(
                buf, status, name=name, line=lines_before + line, line_start=start + line_start, token=start + token
            )
        lines_before += segment.lines
    width = max((segment.width for segment in segments), default=0)
    if len(segments) == 1:
        one = segments[0]
        indptr, indices, data, y, w = one.indptr, one.indices, one.data, one.y, one.w
    else:
        offsets = np.cumsum([0] + [segment.indices.shape[0] for segment in segments])
        indptr = np.concatenate([[0]] + [seg.indptr[1:] + offsets[k] for k, seg in enumerate(segments)])
        indices = np.concatenate([segment.indices for segment in segments])
        data = np.concatenate([segment.data for segment in segments])
        y = np.concatenate([segment.y for segment in segments])
        w = np.concatenate([segment.w for segment in segments])
    if indices.shape[0] < _MAX_INDEX:
        indptr = indptr.astype(np.int32)  # as the indices: scipy would otherwise copy both to int64
    X = sp.csr_matrix((data, indices, indptr), shape=(y.shape[0], width))
    if not X.has_sorted_indices:
        X.sum_duplicates()  # sorts too
    weighted = any(segment.weighted for segment in segments)
    return X, y, (w if weighted else None)


@dataclass
class _Segment:
    """One segment's arrays (exactly sized), or its failure (status, line, line start, token
    start; positions within the segment)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    y: np.ndarray
    w: np.ndarray
    weighted: bool
    lines: int
    width: int
    failure: tuple[int, int, int, int] | None = None


def _parse_segment(buf: np.ndarray, *, label_optional: bool) -> _Segment:
    lines, colons = _count(buf)
    indptr = np.zeros(lines + 1, dtype=np.int64)
    indices = np.empty(colons, dtype=np.int32)
    data = np.empty(colons, dtype=np.float32)
    y = np.empty(lines, dtype=np.float32)
    w = np.empty(lines, dtype=np.float32)
    # Each slow number needs a ':' or a line of its own, so this many rows always suffice.
    slow = np.empty((lines + colons, 4), dtype=np.int64)
    status, rows, nnz, weighted, n_slow, line, line_start, token = _fill(
        buf, indptr, indices, data, y, w, slow, label_optional
    )
    if status != _OK:
        empty = np.empty(0, dtype=np.float32)
        return _Segment(indptr[:1], indices[:0], empty, empty, empty, False, line, 0, (status, line, line_start, token))
    for array_id, position, start, stop in slow[:n_slow].tolist():
        target = (y, w, data)[array_id]
        with np.errstate(over="ignore"):  # 1e400 -> inf, as the CSV decoder reads it
            target[position] = np.float32(float(bytes(buf[start:stop]).decode("ascii")))
    width = int(indices[:nnz].max()) + 1 if nnz else 0
    # A segment that ends without a line end still counted its last line.
    return _Segment(indptr[: rows + 1], indices[:nnz], data[:nnz], y[:rows], w[:rows], weighted, line, width)


def _error(buf: np.ndarray, status: int, *, name: str, line: int, line_start: int, token: int) -> UserError:
    stop = int(_line_stop(buf, line_start, buf.shape[0]))
    text = bytes(buf[line_start:stop]).decode("utf-8", "replace")
    shown = text if len(text) <= 80 else text[:77] + "..."
    column = token - line_start + 1
    return UserError(
        f"{name}, line {line}, column {column}: {_MESSAGES[status]} in {shown!r}; LIBSVM lines are "
        f"'<label>[:<weight>] <index>:<value> ...' with zero-based indices."
    )
