"""The CSV decoder: numeric CSV bytes -> float32 rows (+ a label column), streamed in mini-batches.

What it reads is what `numpy.loadtxt(path, delimiter=",", dtype=numpy.float32)` reads, value for
value and bit for bit: each cell is rounded correctly to a double and that double is cast to
float32 (not rounded straight to float32, which differs in rare double-rounding cases). Cells may
carry spaces or tabs around them, a leading '+' or '-', a fraction, an exponent, or be `nan`,
`inf`, `infinity` in any case. Lines end in '\\n', '\\r\\n' or '\\r'; the last one may lack its
end; empty (or blank) lines are skipped. Unlike loadtxt, '#' starts no comment: SageMaker CSV has
none, and a '#' in a data file is more likely a mistake we should report than text to drop.

How a cell becomes a number, without Python in the loop (numba, one pass over the bytes):
  * the first 19 significant digits go into a uint64 mantissa m, the decimal exponent into e;
  * m <= 2**53 and |e| <= 22: m and 10**|e| are exact doubles, so one IEEE multiply or divide
    is the correctly rounded double (Clinger's fast path);
  * otherwise d = m * 10**e is computed in doubles with a relative error below 2**-51; when
    every double within 2**-50 of d rounds to the same float32, that float32 is the answer
    (the correctly rounded double lies in that interval, and float32 midpoints are doubles);
  * the rare rest (a float32 rounding boundary too close to call, exponents beyond the double
    range, `-nan`) is recorded and converted afterwards by Python's correctly rounded float().

A file is read in chunks of whole lines (8 MiB); a large chunk is split at line boundaries between
threads, one per CPU (the kernel releases the GIL). Errors are UserErrors that name the file (or
payload), the 1-based line and column, and the cell.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np
from numba import njit

from smalgo.algorithms.data import rebatch
from smalgo.algorithms.errors import UserError
from smalgo.recordio import parallel
from smalgo.recordio.sources import ByteSource, describe_source, in_memory

# Bytes read per read() call while streaming: large enough that per-call overhead vanishes,
# small enough that a big file is never held whole.
DEFAULT_CHUNK_BYTES = 8 << 20

_EXACT_POW10 = np.array([10.0**e for e in range(23)], dtype=np.float64)  # all exact doubles
_APPROX_MIN_EXP, _APPROX_MAX_EXP = -300, 280  # m * 10**e stays a normal double for m < 10**19
# Correctly rounded doubles (float() of a decimal literal rounds correctly).
_POW10 = np.array([float(f"1e{e}") for e in range(_APPROX_MIN_EXP, _APPROX_MAX_EXP + 1)], dtype=np.float64)
# The computed double is within 3 roundings (2**-53 each) plus the truncation of digits beyond
# the 19th (< 10**-18) of the exact value; 2**-50 leaves a wide margin over that.
_INTERVAL = 2.0**-50

# Kernel status codes.
_FULL, _END, _SLOW_FULL, _BAD_CELL, _EMPTY_CELL, _WIDTH = 0, 1, 2, 3, 4, 5
# Cell kinds returned by _parse_cell.
_CELL_OK, _CELL_SLOW, _CELL_BAD, _CELL_EMPTY = 0, 1, 2, 3


# Byte classes, looked up rather than compared (fewer branches per cell): blanks are what loadtxt
# strips around a cell besides line ends (space, tab, vertical tab, form feed); a cell ends at a
# comma or a line end.
_BLANK, _CELL_END = 1, 2
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)
_BYTE_CLASS[[32, 9, 11, 12]] = _BLANK
_BYTE_CLASS[[44, 10, 13]] = _CELL_END


@njit(cache=True, nogil=True)
def _is_blank(c):
    return _BYTE_CLASS[c] == _BLANK


@njit(cache=True, nogil=True)
def _is_cell_end(c):
    return _BYTE_CLASS[c] == _CELL_END


@njit(cache=True, nogil=True)
def _lower(c):
    return c | 32 if 65 <= c <= 90 else c


@njit(cache=True, nogil=True)
def _match_word(buf, i, end, word):  # noqa: PLR0917 (numba kernel: positional arguments only)
    """Length of `word` (lower-case bytes) if buf[i:] starts with it case-insensitively, else 0."""
    n = len(word)
    if end - i < n:
        return 0
    for k in range(n):
        if _lower(buf[i + k]) != word[k]:
            return 0
    return n


_INF_WORD = np.frombuffer(b"inf", dtype=np.uint8)
_INFINITY_WORD = np.frombuffer(b"infinity", dtype=np.uint8)
_NAN_WORD = np.frombuffer(b"nan", dtype=np.uint8)


@njit(cache=True, nogil=True, inline="always")
def _parse_cell(buf, i, end):
    """Parse the cell starting at buf[i]. Returns (kind, value, token_start, token_end, next):
    `next` is the index of the ',' / line end / `end` that closes the cell."""
    while i < end and _is_blank(buf[i]):
        i += 1
    start = i
    if i == end or _is_cell_end(buf[i]):
        return _CELL_EMPTY, np.float32(0.0), start, i, i
    negative = False
    if buf[i] == 45 or buf[i] == 43:  # '-' or '+'
        negative = buf[i] == 45
        i += 1
    # All digits go into the mantissa at first (uint64 wraps silently past 19 digits); the rare
    # longer mantissa is re-read by _significant_digits. Fewer branches per byte than counting
    # significant digits as we go.
    mantissa = np.uint64(0)
    digits_start = i
    while i < end:
        digit = np.uint64(buf[i]) - np.uint64(48)  # wraps for bytes below '0': one compare
        if digit >= np.uint64(10):
            break
        mantissa = mantissa * np.uint64(10) + digit
        i += 1
    integer_end = i
    fraction_start = i
    if i < end and buf[i] == 46:  # '.'
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
    seen_digit = integer_end > digits_start or fraction_digits > 0
    if integer_end - digits_start + fraction_digits > 19:
        mantissa, exp10 = _significant_digits(buf, digits_start, integer_end, fraction_start, i)
    special = False
    value = np.float32(0.0)
    kind = _CELL_OK
    if not seen_digit:
        n, value = _parse_special(buf, i, end)
        if n == 0:
            return _CELL_BAD, value, start, i, i
        if negative and value != value:
            kind = _CELL_SLOW  # numba drops the sign of a negated NaN; Python keeps it
        i += n
        special = True
    elif i < end and (buf[i] == 101 or buf[i] == 69):  # 'e' or 'E'
        ok, exponent, i = parse_exponent(buf, i + 1, end)
        if not ok:
            return _CELL_BAD, value, start, i, i
        exp10 += exponent
    token_end = i
    while i < end and _is_blank(buf[i]):
        i += 1
    if i < end and not _is_cell_end(buf[i]):
        return _CELL_BAD, value, start, i, i
    if not special:
        value, settled = decimal_to_float32(mantissa, exp10)
        if not settled:
            kind = _CELL_SLOW
    if negative:
        value = -value
    return kind, value, start, token_end, i


@njit(cache=True, nogil=True, inline="always")
def parse_exponent(buf, i, end):
    """(ok, exponent, next) of the digits after an 'e' at buf[i] (a sign allowed first); not ok
    when no digit follows. The LIBSVM decoder shares it."""
    negative = False
    if i < end and (buf[i] == 45 or buf[i] == 43):
        negative = buf[i] == 45
        i += 1
    if i == end or not 48 <= buf[i] <= 57:
        return False, 0, i
    exponent = 0
    while i < end and 48 <= buf[i] <= 57:
        if exponent < 100000:  # saturate: far beyond any double's range either way
            exponent = exponent * 10 + (buf[i] - 48)
        i += 1
    return True, (-exponent if negative else exponent), i


@njit(cache=True, nogil=True, inline="always")
def decimal_to_float32(mantissa, exp10):
    """(value, settled): the float32 of the double nearest mantissa * 10**exp10, and whether it
    was settled here (the fast paths of the module docstring); when not, the caller leaves the
    number to Python's float(). The LIBSVM decoder shares it."""
    if mantissa == 0:
        return np.float32(0.0), True
    if mantissa <= np.uint64(9007199254740992) and -22 <= exp10 <= 22:
        exact = np.float64(mantissa)
        if exp10 >= 0:
            return np.float32(exact * _EXACT_POW10[exp10]), True
        return np.float32(exact / _EXACT_POW10[-exp10]), True
    if _APPROX_MIN_EXP <= exp10 <= _APPROX_MAX_EXP:
        approx = np.float64(mantissa) * _POW10[exp10 - _APPROX_MIN_EXP]
        low = np.float32(approx * (1.0 - _INTERVAL))
        high = np.float32(approx * (1.0 + _INTERVAL))
        if low == high:
            return low, True
    return np.float32(0.0), False


@njit(cache=True, nogil=True)
def _parse_special(buf, i, end):
    """(length, value) of `inf`, `infinity` or `nan` (any case) at buf[i], or (0, 0.0)."""
    n = _match_word(buf, i, end, _INFINITY_WORD)
    if n == 0:
        n = _match_word(buf, i, end, _INF_WORD)
    if n > 0:
        return n, np.float32(np.inf)
    n = _match_word(buf, i, end, _NAN_WORD)
    if n > 0:
        return n, np.float32(np.nan)
    return 0, np.float32(0.0)


@njit(cache=True, nogil=True)
def _significant_digits(buf, digits_start, integer_end, fraction_start, fraction_end):  # noqa: PLR0917 (numba kernel: positional arguments only)
    """(mantissa, exp10) of a decimal with more than 19 digits: leading zeros skipped, the first
    19 significant digits kept (exact in uint64), the rest only counted into the exponent."""
    mantissa = np.uint64(0)
    kept = 0
    exp10 = 0
    for k in range(digits_start, integer_end):
        if kept < 19:
            mantissa = mantissa * np.uint64(10) + np.uint64(buf[k] - 48)
            if mantissa != 0:
                kept += 1
        else:
            exp10 += 1
    for k in range(fraction_start, fraction_end):
        if kept < 19:
            mantissa = mantissa * np.uint64(10) + np.uint64(buf[k] - 48)
            exp10 -= 1
            if mantissa != 0:
                kept += 1
    return mantissa, exp10


@njit(cache=True, nogil=True)
def _skip_line_end(buf, i, end):
    """Index after the line end at buf[i] ('\\n', '\\r\\n' or '\\r')."""
    if buf[i] == 13 and i + 1 < end and buf[i + 1] == 10:
        return i + 2
    return i + 1


@njit(cache=True, nogil=True)
def _fill_rows(buf, pos, end, X, y, row, label_size, slow):  # noqa: PLR0917 (numba kernel: positional arguments only)
    """Parse whole lines of buf[pos:end] into X[row:], y[row:] until X is full or buf is consumed.

    X has feature columns only; with label_size 1 the first cell of a line goes to y.
    Cells left for Python are recorded in `slow` as (row, column, token_start, token_end); when
    it is full the kernel stops before the current line and reports _SLOW_FULL.
    Returns (status, pos, row, lines, error_line_start, error_column, recorded) where
    `lines` counts line ends consumed, and on an error pos/lines point at the line that failed.
    (A slow buffer passed in, not grown here: growing it inside the loop costs ~20% speed.)
    """
    columns = X.shape[1] + label_size
    capacity = X.shape[0]
    n_slow = 0
    lines = 0
    while pos < end:
        i = pos
        while i < end and _is_blank(buf[i]):
            i += 1
        if i == end or buf[i] == 10 or buf[i] == 13:  # a blank line: skipped, as loadtxt does
            if i < end:
                i = _skip_line_end(buf, i, end)
                lines += 1
            pos = i
            continue
        if row == capacity:
            return _FULL, pos, row, lines, pos, 0, n_slow
        line_start = pos
        column = 0
        i = pos
        while True:
            kind, value, token_start, token_end, i = _parse_cell(buf, i, end)
            if kind == _CELL_BAD:
                return _BAD_CELL, line_start, row, lines, line_start, column, n_slow
            if kind == _CELL_EMPTY:
                return _EMPTY_CELL, line_start, row, lines, line_start, column, n_slow
            if column >= columns:
                return _WIDTH, line_start, row, lines, line_start, column, n_slow
            if kind == _CELL_SLOW:
                if n_slow == slow.shape[0]:
                    # Full: stop before this line, so the caller can resolve these and resume.
                    return _SLOW_FULL, line_start, row, lines, line_start, 0, n_slow
                slow[n_slow, 0] = row
                slow[n_slow, 1] = column
                slow[n_slow, 2] = token_start
                slow[n_slow, 3] = token_end
                n_slow += 1
            if column < label_size:
                y[row] = value
            else:
                X[row, column - label_size] = value
            column += 1
            if i < end and buf[i] == 44:  # ',': another cell follows
                i += 1
                continue
            break
        if column != columns:
            return _WIDTH, line_start, row, lines, line_start, column, n_slow
        if i < end:
            i = _skip_line_end(buf, i, end)
            lines += 1
        pos = i
        row += 1
    return _END, pos, row, lines, pos, 0, n_slow


@njit(cache=True, nogil=True)
def _first_line_columns(buf, pos, end):
    """(columns, line_start) of the first non-blank line in buf[pos:end]; columns 0 if none."""
    while pos < end:
        i = pos
        while i < end and _is_blank(buf[i]):
            i += 1
        if i < end and buf[i] != 10 and buf[i] != 13:
            columns = 1
            while i < end and buf[i] != 10 and buf[i] != 13:
                if buf[i] == 44:
                    columns += 1
                i += 1
            return columns, pos
        pos = _skip_line_end(buf, i, end) if i < end else end
    return 0, end


class CsvLayout:
    """How many cells each line must have, and why, so that a wrong width reads clearly.

    The width comes from `feature_dim` (plus the label column), where `feature_dim_source` says
    where that came from, or else from the first line of the data (`first_line`)."""

    def __init__(
        self,
        label_size: int,
        feature_dim: int | None = None,
        *,
        feature_dim_source: str = "",
        first_line: int | None = None,
    ):
        if label_size not in (0, 1):
            raise ValueError(f"label_size must be 0 or 1, not {label_size}")
        self.label_size = label_size
        self.feature_dim = feature_dim
        self.feature_dim_source = feature_dim_source or f"hyperparameter feature_dim={feature_dim}"
        self.first_line = first_line

    @property
    def columns(self) -> int | None:
        return None if self.feature_dim is None else self.feature_dim + self.label_size

    def width_error(self, where: str, found: int) -> str:
        message = f"{where}: {found} column{'s' if found != 1 else ''}, expected {self.columns}"
        if self.first_line is not None:
            return message + f" as on line {self.first_line}."
        message += f": {self.feature_dim} features ({self.feature_dim_source})"
        if self.label_size:
            message += (
                " plus 1 label column first, because ContentType text/csv means label_size=1 "
                "unless it says text/csv;label_size=0"
            )
        return message + "."


def decode_csv(
    payload: bytes | bytearray | memoryview,
    label_size: int = 0,
    feature_dim: int | None = None,
    *,
    name: str = "CSV payload",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode an in-memory CSV payload (an inference request body, a small file) at once.

    Returns (X, y): X float32 (rows, features) C-contiguous; y float32 (rows,) with label_size 1,
    else None. With `feature_dim`, every line must have feature_dim + label_size cells.
    """
    blocks = list(_iter_blocks(_MemorySource(in_memory(payload)), CsvLayout(label_size, feature_dim), name))
    return _concatenate(blocks, label_size, feature_dim or 0)


def iter_csv_batches(
    source: str | os.PathLike | BinaryIO | bytes, batch_size: int, label_size: int = 0, **options: Any
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Stream (X, y) mini-batches of `batch_size` rows (the last may be smaller) from a CSV file:
    iter_csv_blocks (which `options` go to: feature_dim, name, ...) cut by `rebatch`.

    `source` is a path, a binary file object (a FIFO opened 'rb' works: short reads are fine) or
    bytes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    yield from rebatch(iter_csv_blocks(source, label_size, **options), batch_size)


def iter_csv_blocks(
    source: str | os.PathLike | BinaryIO | bytes,
    label_size: int = 0,
    feature_dim: int | None = None,
    *,
    name: str | None = None,
    feature_dim_source: str = "",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Stream a CSV file as (X, y) blocks of whole lines, one block per `chunk_bytes` read (or
    per thread's share of it), so a file of any size is never held whole.

    `name` is what errors call the source (default: the path). With `feature_dim`, every line
    must have feature_dim + label_size cells, and `feature_dim_source` says where feature_dim came
    from (default "hyperparameter feature_dim=N"); without it the first line sets the width.
    """
    layout = CsvLayout(label_size, feature_dim, feature_dim_source=feature_dim_source)
    # A mapped file is parsed in place, without copying each chunk into a buffer first; the OS
    # reads ahead and lets parsed pages go early.
    src = ByteSource(source, "CSV", sequential=True)
    try:
        reader: _StreamSource | _MemorySource
        if src.memory is None:
            reader = _StreamSource(src, chunk_bytes)
        else:  # bytes in memory are parsed at once, a mapped file in chunks as a stream would be
            reader = _MemorySource(src.memory, chunk_bytes if src.mapped else None)
        if not name:
            # A stream's name that is no path (an fd's number) still names it.
            name = describe_source(source) or (
                "CSV payload" if src.memory is not None else str(getattr(source, "name", "CSV stream"))
            )
        yield from _iter_blocks(reader, layout, name)
    finally:
        src.close()


def read_csv(
    source: str | os.PathLike | BinaryIO | bytes,
    label_size: int = 0,
    feature_dim: int | None = None,
    *,
    name: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole CSV file as one (X, y), read in chunks like iter_csv_blocks."""
    blocks = list(iter_csv_blocks(source, label_size, feature_dim, name=name))
    return _concatenate(blocks, label_size, feature_dim or 0)


def _concatenate(blocks, label_size: int, width: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """One (X, y) of the blocks; (0 x width) arrays when there are none."""
    if not blocks:
        return np.empty((0, width), dtype=np.float32), (np.empty(0, dtype=np.float32) if label_size else None)
    if len(blocks) == 1:
        return blocks[0]
    X = np.concatenate([X for X, _ in blocks])
    return X, (np.concatenate([y for _, y in blocks]) if label_size else None)


class _MemorySource:
    """Bytes already in memory (a payload, or a memory-mapped file: a ByteSource's `memory`),
    served in windows of about `chunk_bytes` that end at a line end, as a stream would serve
    them (all at once if None)."""

    def __init__(self, buffer: np.ndarray, chunk_bytes: int | None = None):
        self.buffer = buffer
        self.chunk_bytes = max(chunk_bytes or len(self.buffer), 1)
        self.start = 0  # first byte not yet parsed

    def refill(self) -> int:
        """Where parsing goes on (nothing to read: the bytes stay where they are)."""
        return self.start

    def complete_end(self) -> int:
        size = len(self.buffer)
        window = self.chunk_bytes
        while self.start + window < size:
            end = _last_line_end(self.buffer, self.start, self.start + window)
            if end > self.start:
                return end
            window *= 2  # a line longer than the window
        return size

    def exhausted(self, pos: int) -> bool:
        return pos >= len(self.buffer)


class _StreamSource:
    """A growable byte buffer over a ByteSource's stream: refill() adds at least one whole line
    (or EOF). `start` is the first byte the parser has not consumed; refill() drops what lies
    before it."""

    def __init__(self, source: ByteSource, chunk_bytes: int):
        self.source = source
        self._bytes = bytearray(max(chunk_bytes, 1))
        self.start = 0
        self.filled = 0  # bytes of data in the buffer
        self.eof = False
        self.refill()

    @property
    def buffer(self) -> np.ndarray:
        return np.frombuffer(self._bytes, dtype=np.uint8)

    def refill(self) -> int:
        """Drop the consumed bytes, then read until the buffer is full (and holds a whole line:
        it grows for a longer line) or the stream ends; returns where parsing goes on (0)."""
        if self.start:
            tail = self.filled - self.start
            self._bytes[:tail] = self._bytes[self.start : self.filled]
            self.start, self.filled = 0, tail
        while not self.eof:
            if self.filled == len(self._bytes):
                if self.complete_end() > 0:
                    break
                # A line longer than the buffer: grow it. A new bytearray, because a numpy view
                # of the old one may still exist and forbids resizing it in place.
                grown = bytearray(2 * len(self._bytes))
                grown[: self.filled] = self._bytes
                self._bytes = grown
            with memoryview(self._bytes) as whole, whole[self.filled :] as view:
                n = self.source.readinto(view)
                self.eof = n < len(view)
            self.filled += n
        return self.start

    def complete_end(self) -> int:
        """End of the last whole line in the buffer (everything, at EOF)."""
        if self.eof:
            return self.filled
        return _last_line_end(self.buffer, self.start, self.filled)

    def exhausted(self, pos: int) -> bool:
        return self.eof and pos >= self.filled


# Below this many bytes a chunk is parsed by one thread: splitting costs more than it saves.
_MIN_SEGMENT_BYTES = 1 << 20


CSV_THREADS_VARIABLE = "SMALGO_CSV_THREADS"


def csv_threads_setting(environ: Mapping[str, str] | None = None) -> int | None:
    """SMALGO_CSV_THREADS (of `environ`, default os.environ) as a positive integer; None when
    unset or empty. Any other value is a UserError naming the variable."""
    env = os.environ if environ is None else environ
    configured = env.get(CSV_THREADS_VARIABLE, "").strip()
    if not configured:
        return None
    if not (configured.isascii() and configured.isdigit()) or int(configured) < 1:
        raise UserError(
            f"{CSV_THREADS_VARIABLE}={env[CSV_THREADS_VARIABLE]!r} is not a thread count; valid values: "
            f"an integer >= 1 (unset means the CPUs this process may use)."
        )
    return int(configured)


def _parse_threads() -> int:
    """Threads that parse one chunk: SMALGO_CSV_THREADS, else the CPUs this process may use."""
    return csv_threads_setting() or parallel.available_cpus()


def _iter_blocks(source, layout: CsvLayout, name: str) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The streaming loop: hands each chunk's whole lines to the kernel (split between threads
    at line boundaries when the chunk is large; the kernel releases the GIL), yields one block per
    segment, and turns the first failure into a UserError with its file, line and column."""
    line_number = 1  # 1-based number of the line at `pos`
    pos = 0
    while True:
        buf, end = source.buffer, source.complete_end()
        if layout.columns is None:
            columns, line_start = _first_line_columns(buf, pos, end)
            if columns:
                first_line = line_number + _count_line_ends(buf, pos, line_start)
                if columns <= layout.label_size:
                    raise UserError(
                        f"{name}, line {first_line}: 1 column, which is the label (ContentType "
                        f"text/csv means label_size=1 unless it says text/csv;label_size=0), "
                        f"leaving no features."
                    )
                layout = CsvLayout(layout.label_size, columns - layout.label_size, first_line=first_line)
        if layout.columns is None:  # nothing but blank lines so far
            line_number += _count_line_ends(buf, pos, end)
        else:
            bounds = _segment_bounds(buf, pos, end)
            segments = list(zip(bounds[:-1], bounds[1:], strict=True))
            if len(segments) == 1:
                results = [_parse_segment(buf, pos, end, layout=layout)]
            else:
                pool = parallel.shared_pool(_parse_threads())
                # list() runs every segment before the loop moves on: the defaults only pin them.
                results = list(
                    pool.map(
                        lambda se, buf=buf, layout=layout: _parse_segment(buf, se[0], se[1], layout=layout), segments
                    )
                )
            for X, y, lines, failure in results:
                if failure is not None:
                    status, line_start, column, lines_before = failure
                    raise _error(
                        status,
                        buf,
                        line_start,
                        column=column,
                        line_number=line_number + lines_before,
                        layout=layout,
                        name=name,
                    )
                line_number += lines
                if len(X):
                    yield X, y
        pos = end
        if source.exhausted(pos):
            return
        source.start = pos
        del buf  # the numpy view must go before refill() may replace the bytes under it
        pos = source.refill()


def _segment_bounds(buf, pos: int, end: int) -> list[int]:
    """[pos, ..., end]: split points at line starts, one segment per thread."""
    count = min(_parse_threads(), max(1, (end - pos) // _MIN_SEGMENT_BYTES))
    bounds = [pos]
    for k in range(1, count):
        split = _next_line_start(buf, pos + (end - pos) * k // count, end)
        if bounds[-1] < split < end:
            bounds.append(split)
    bounds.append(end)
    return bounds


def _parse_segment(buf, start: int, end: int, *, layout: CsvLayout):
    """Parse buf[start:end] (whole lines) into a new block.

    Returns (X, y, lines, failure): `lines` is the number of line ends consumed; `failure` is
    None or (status, line_start, column, lines before the failing line)."""
    # Every row takes at least 2 bytes per column (a digit and a comma or line end), which
    # bounds the rows without a counting pass over the bytes (~10% of the parse). The
    # over-allocation costs address space only: pages never written are never committed.
    columns, feature_dim = layout.columns, layout.feature_dim
    assert columns is not None and feature_dim is not None  # _iter_blocks parses once the width is known
    capacity = (end - start + 1) // (2 * columns) + 1
    X = np.empty((capacity, feature_dim), dtype=np.float32)
    y = np.empty(capacity if layout.label_size else 0, dtype=np.float32)
    # Room for at least one line's cells, so that every kernel call gets past one line.
    slow_cells = np.empty((max(1024, columns), 4), dtype=np.int64)
    row = lines = 0
    pos = start
    while True:
        status, pos, row, new_lines, line_start, column, n_slow = _fill_rows(
            buf, pos, end, X, y, row, layout.label_size, slow_cells
        )
        _resolve_slow_cells(buf, slow_cells[:n_slow], X, y=y, label_size=layout.label_size)
        if status >= _BAD_CELL:
            return X[:0], y[:0], lines, (status, line_start, column, lines + new_lines)
        lines += new_lines
        if status == _END:
            return X[:row], (y[:row] if layout.label_size else None), lines, None
        if status == _FULL:  # not expected (capacity is an upper bound), but never write past X
            X = np.concatenate([X, np.empty_like(X)])
            y = np.concatenate([y, np.empty_like(y)])


def _resolve_slow_cells(buf, slow, X, *, y, label_size) -> None:
    """Cells the kernel could not round with certainty: Python's float() rounds correctly."""
    for row, column, start, end in slow.tolist():
        with np.errstate(over="ignore"):  # 1e39 -> inf, silently, as loadtxt does
            value = np.float32(float(bytes(buf[start:end])))
        if column < label_size:
            y[row] = value
        else:
            X[row, column - label_size] = value


@njit(cache=True, nogil=True)
def _count_line_ends(buf, pos, end):
    """Line ends in buf[pos:end], a '\r\n' counting once."""
    count = 0
    for i in range(pos, end):
        c = buf[i]
        if c == 10 or (c == 13 and not (i + 1 < end and buf[i + 1] == 10)):
            count += 1
    return count


@njit(cache=True, nogil=True)
def _last_line_end(buf, start, end):
    """Index after the last line end in buf[start:end], or `start` if there is none. A '\r' in
    the last byte does not count: it may be half of a '\r\n' whose '\n' lies beyond `end`."""
    i = end - 1
    if i >= start and buf[i] == 13:
        i -= 1
    while i >= start:
        if buf[i] == 10 or buf[i] == 13:
            return i + 1
        i -= 1
    return start


@njit(cache=True, nogil=True)
def _next_line_start(buf, i, end):
    while i < end and buf[i] != 10 and buf[i] != 13:
        i += 1
    return _skip_line_end(buf, i, end) if i < end else end


def _error(status, buf, line_start, *, column, line_number, layout: CsvLayout, name) -> UserError:
    line = bytes(buf[line_start : _line_end(buf, line_start)])
    cells = line.split(b",")
    where = f"{name}, line {line_number}"
    if status == _WIDTH:
        return UserError(layout.width_error(where, len(cells)))
    cell = cells[column].strip() if column < len(cells) else b""
    where += f", column {column + 1}"
    if status == _EMPTY_CELL:
        # No hint to write nan: k-means and PCA refuse NaN (finite_values_only), in training and inference.
        return UserError(f"{where}: empty cell; every cell must hold a number.")
    shown = cell.decode("utf-8", errors="replace")
    if len(shown) > 60:
        shown = shown[:60] + "..."
    hint = ""
    if shown.startswith("\ufeff"):
        # Excel and pandas (encoding="utf-8-sig") write one; the cell then looks like a number.
        hint = " (it begins with a UTF-8 byte order mark: save the file as CSV without one)"
    elif line_number == 1:
        # Worded for training files and request bodies alike (`name` says which this is).
        hint = " (CSV data has no header row: the first line must hold numbers)"
    return UserError(f"{where}: {shown!r} is not a number{hint}.")


@njit(cache=True, nogil=True)
def _line_end(buf, i):
    while i < len(buf) and buf[i] != 10 and buf[i] != 13:
        i += 1
    return i
