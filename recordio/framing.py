"""RecordIO framing (MXNet/dmlc-core), streamed from paths, file objects, pipes or bytes.

    frame   := magic:u32le  lrecord:u32le  payload[length]  zero padding to a 4-byte boundary
    magic   = 0xCED7230A
    lrecord = cflag << 29 | length      (cflag 0: whole record, 1: first part, 2: middle, 3: last)

dmlc-core's writer splits a payload wherever the magic word appears at a 4-aligned offset inside
it, drops that word and writes the pieces with cflag 1/2/3; the reader puts the magic back
between the parts. We read such records the same way and, like the SageMaker SDK, write cflag 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numba
import numpy as np

from .errors import RecordIOError
from .sources import ByteSource, describe_source

MAGIC = 0xCED7230A
MAGIC_BYTES = MAGIC.to_bytes(4, "little")
MAX_PAYLOAD = (1 << 29) - 1
HEADER_SIZE = 8

# Reads happen in chunks of this size; a record larger than a chunk grows the buffer, but only
# as its bytes actually arrive, so a header that lies about its length costs nothing.
DEFAULT_CHUNK_SIZE = 8 << 20
# Frames handled per scan call; bounds the bookkeeping arrays independently of the chunk size.
_FRAMES_PER_SCAN = 1 << 16

# scan_frames status codes
_OK = 0
_BAD_MAGIC = 1
_BAD_CFLAG = 2
_BAD_SEQUENCE = 3
_FRAMES_FULL = 4


@numba.njit(cache=True, nogil=True, inline="always")
def read_u32(buf, pos):
    """The little-endian word at offset pos (any alignment: LLVM makes it one load). The
    offsets added are uint8 so that pos keeps its type, signed or unsigned (uint64 + int64 is
    float64 in numba, which cannot index)."""
    return (
        np.uint32(buf[pos])
        | (np.uint32(buf[pos + np.uint8(1)]) << np.uint32(8))
        | (np.uint32(buf[pos + np.uint8(2)]) << np.uint32(16))
        | (np.uint32(buf[pos + np.uint8(3)]) << np.uint32(24))
    )


@numba.njit(cache=True, nogil=True)
def scan_frames(buf, end, header_pos, payload_pos, payload_len, cflags):  # noqa: PLR0917 (numba kernel: positional arguments only)
    """Scan the frames in buf[0:end]; fill the arrays (one entry per frame) and return
    (n_frames, consumed, status, status_pos). Only frames of logical records that end inside
    buf[0:end] are reported; `consumed` is where the first unfinished logical record starts."""
    capacity = header_pos.shape[0]
    pos = 0
    n = 0
    n_complete = 0
    consumed = 0
    in_multipart = False
    while True:
        if end - pos < 8:
            return n_complete, consumed, _OK, pos
        magic = read_u32(buf, pos)
        if magic != np.uint32(0xCED7230A):
            return n_complete, consumed, _BAD_MAGIC, pos
        lrecord = read_u32(buf, pos + 4)
        cflag = np.int64(lrecord >> np.uint32(29))
        length = np.int64(lrecord & np.uint32(0x1FFFFFFF))
        if cflag > 3:
            return n_complete, consumed, _BAD_CFLAG, pos
        if in_multipart == (cflag == 0 or cflag == 1):
            return n_complete, consumed, _BAD_SEQUENCE, pos
        padded = (length + 3) & ~np.int64(3)
        if end - pos - 8 < padded:
            return n_complete, consumed, _OK, pos
        if n == capacity:
            return n_complete, consumed, _FRAMES_FULL, pos
        header_pos[n] = pos
        payload_pos[n] = pos + 8
        payload_len[n] = length
        cflags[n] = cflag
        n += 1
        pos += 8 + padded
        in_multipart = cflag == 1 or cflag == 2
        if not in_multipart:
            n_complete = n
            consumed = pos


@dataclass
class RecordSpan:
    """Complete logical records found in one chunk: record i's payload is
    buf[starts[i]:starts[i] + lengths[i]]; it is record number first_index + i of the stream and
    its first frame header sits at stream byte offset offsets[i]."""

    buf: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    first_index: int
    # True when buf is not reused for later spans (an in-memory or memory-mapped input, or
    # reassembled multi-part records), so the span may be decoded after the next one is read.
    stable: bool = False

    def __len__(self) -> int:
        return self.starts.shape[0]

    def payload(self, i: int) -> bytes:
        return self.buf[self.starts[i] : self.starts[i] + self.lengths[i]].tobytes()


def iter_record_spans(source, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[RecordSpan]:
    """Yield the complete logical records of `source`, chunk by chunk, without reading the whole
    input at once (an in-memory source is scanned in place). A yielded span is valid only until
    the next one is requested."""
    name = describe_source(source)
    src = open_source(source)
    try:
        yield from _spans(src, name, chunk_size)
    finally:
        src.close()


def open_source(source) -> ByteSource:
    """`source` (a path, a binary file object or bytes) as RecordIO reads it: a path that
    cannot be opened is a RecordIOError naming it."""
    return ByteSource(source, "RecordIO", open_error=_cannot_open)


def _cannot_open(error: OSError, path: str) -> RecordIOError:
    return RecordIOError(f"cannot open: {error.strerror}", source=path)


def _spans(src: ByteSource, name: str | None, chunk_size: int) -> Iterator[RecordSpan]:
    header_pos = np.empty(_FRAMES_PER_SCAN, np.int64)
    payload_pos = np.empty(_FRAMES_PER_SCAN, np.int64)
    payload_len = np.empty(_FRAMES_PER_SCAN, np.int64)
    cflags = np.empty(_FRAMES_PER_SCAN, np.int64)
    record_index = 0
    if src.memory is not None:
        buf, filled, eof = src.memory, src.memory.shape[0], True
    else:
        buf, filled, eof = np.empty(chunk_size, np.uint8), 0, False
    base = 0  # stream offset of buf[0]
    start = 0  # where unscanned data begins in buf
    while True:
        if not eof and filled < buf.shape[0]:
            # buf.data is memoryview(buf); numpy's stubs declare ndarray a Buffer only from Python 3.12.
            got = src.readinto(buf.data[filled:])
            filled += got
            eof = filled < buf.shape[0]
        view_start = start
        view = buf[view_start:filled]
        # Kernels see every buffer as read-only, whatever its origin (bytes, a mapping, a chunk
        # buffer), so numba compiles each of them once instead of once per buffer kind.
        view.flags.writeable = False
        n, consumed, status, status_pos = scan_frames(view, view.shape[0], header_pos, payload_pos, payload_len, cflags)
        if n:
            span = _logical_records(
                view,
                header_pos[:n],
                payload_pos[:n],
                payload_len=payload_len[:n],
                cflags=cflags[:n],
                view_offset=base + start,
                first_index=record_index,
            )
            span.stable = span.stable or src.memory is not None
            record_index += len(span)
            yield span
            start += consumed
        if status in (_BAD_MAGIC, _BAD_CFLAG, _BAD_SEQUENCE):
            raise RecordIOError(
                _FRAME_ERRORS[status](buf, view_start + status_pos),
                record_index,
                byte_offset=base + view_start + status_pos,
                source=name,
            )
        if status == _FRAMES_FULL:
            if n == 0:  # one logical record with more parts than the arrays hold
                header_pos, payload_pos, payload_len, cflags = (
                    np.empty(2 * a.shape[0], np.int64) for a in (header_pos, payload_pos, payload_len, cflags)
                )
            continue
        if start == filled and eof:
            return
        if eof:
            if n:
                continue
            raise RecordIOError(
                _truncation_reason(buf[start:filled]), record_index, byte_offset=base + start, source=name
            )
        # Keep the unfinished record, drop what was consumed; grow only when it fills the buffer.
        remaining = filled - start
        if start == 0 and remaining == buf.shape[0]:
            grown = np.empty(2 * buf.shape[0], np.uint8)
            grown[:remaining] = buf[:remaining]
            buf = grown
        elif start:
            buf[:remaining] = buf[start:filled]
        base += start
        start, filled = 0, remaining


def _logical_records(view, header_pos, payload_pos, *, payload_len, cflags, view_offset, first_index) -> RecordSpan:
    if not cflags.any():
        return RecordSpan(view, payload_pos.copy(), payload_len.copy(), header_pos + view_offset, first_index)
    # Multi-part records (rare): rebuild every payload of this span into one new buffer, putting
    # the magic word back between parts as dmlc-core's reader does.
    pieces, starts, lengths, offsets = [], [], [], []
    pos = 0
    record: list[bytes] = []
    for h, p, ln, cf in zip(header_pos, payload_pos, payload_len, cflags, strict=True):
        if cf in (0, 1):
            offsets.append(int(h) + view_offset)
        record.append(view[p : p + ln].tobytes())
        if cf in (0, 3):
            payload = MAGIC_BYTES.join(record)
            pieces.append(payload)
            starts.append(pos)
            lengths.append(len(payload))
            pos += len(payload)
            record = []
    buf = np.frombuffer(b"".join(pieces), np.uint8)
    return RecordSpan(
        buf,
        np.array(starts, np.int64),
        np.array(lengths, np.int64),
        np.array(offsets, np.int64),
        first_index,
        stable=True,
    )


def _bad_magic(buf, pos) -> str:
    found = bytes(buf[pos : pos + 4]).hex(" ")
    return f"bad magic number {found} (expected 0a 23 d7 ce, RecordIO magic 0xCED7230A): not RecordIO, or misaligned"


def _bad_cflag(buf, pos) -> str:
    lrecord = int.from_bytes(bytes(buf[pos + 4 : pos + 8]), "little")
    return f"invalid continuation flag {lrecord >> 29} in frame header (valid: 0-3)"


def _bad_sequence(buf, pos) -> str:
    lrecord = int.from_bytes(bytes(buf[pos + 4 : pos + 8]), "little")
    cflag = lrecord >> 29
    if cflag in (0, 1):
        return f"continuation flag {cflag} starts a new record inside an unfinished multi-part record"
    return f"continuation flag {cflag} continues a multi-part record that was never started"


_FRAME_ERRORS = {_BAD_MAGIC: _bad_magic, _BAD_CFLAG: _bad_cflag, _BAD_SEQUENCE: _bad_sequence}


def _truncation_reason(rest: np.ndarray) -> str:
    if rest.shape[0] < HEADER_SIZE:
        return f"truncated: {rest.shape[0]} byte(s) at the end of the input are not a whole frame header"
    lrecord = int.from_bytes(bytes(rest[4:8]), "little")
    length = lrecord & MAX_PAYLOAD
    needed = HEADER_SIZE + ((length + 3) & ~3)
    if rest.shape[0] < needed:
        return (
            f"truncated: the frame header announces a {length}-byte payload "
            f"({needed} bytes with header and padding) but the input ends after {rest.shape[0]} bytes"
        )
    return "truncated: the input ends inside a multi-part record (no frame with continuation flag 3)"


def frame(payload: bytes) -> bytes:
    """One cflag-0 frame around `payload`, padded to 4 bytes."""
    n = len(payload)
    return frame_header(n) + payload + b"\0" * (-n % 4)


def frame_header(n: int) -> bytes:
    """The header of a cflag-0 frame around an n-byte payload."""
    if n > MAX_PAYLOAD:
        raise RecordIOError(f"a record of {n} bytes is too large for RecordIO (at most {MAX_PAYLOAD})")
    return MAGIC_BYTES + n.to_bytes(4, "little")


class Sink:
    """Where writers put bytes: a path (created or truncated) or a binary file object."""

    def __init__(self, dest):
        self._owned = None
        if isinstance(dest, (str, os.PathLike)):
            self._owned = open(dest, "wb")
            self._file: BinaryIO = self._owned
        elif hasattr(dest, "write"):
            self._file = dest
        else:
            raise TypeError(f"cannot write RecordIO to {type(dest).__name__}: give a path or a binary file object")

    def write(self, data) -> None:
        self._file.write(data)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
