"""Where a decoder's bytes come from: a path, a binary file object (a FIFO too) or bytes in memory.

Every decoder (RecordIO here, CSV in smalgo.algorithms.formats; LIBSVM or Parquet next) reads
through `ByteSource`, which gives it either the whole input as a uint8 array (`memory`: bytes,
arrays, or a regular file memory-mapped, so that a large file is read in place, never held whole
nor copied chunk by chunk) or a stream to `readinto` its own buffers from (pipes, file objects,
empty or special files). How the bytes are then cut into records or lines is the decoder's
business. `describe_source` names a source for error messages.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Callable

import numpy as np


def describe_source(source) -> str | None:
    """A name for error messages: the path, or the file object's name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


def in_memory(data) -> np.ndarray:
    """The bytes of `data` (bytes, bytearray, memoryview or ndarray) as a uint8 array over the
    same memory, no copy; writable where `data` is."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def map_regular_file(file, sequential: bool = False, info: os.stat_result | None = None) -> np.ndarray | None:
    """A read-only uint8 array over a memory map of `file` (open for reading) when it is a
    non-empty regular file, else None (pipes, empty or special files). The map is not closed
    explicitly: it lives while a view of it does, and goes with the last, after the file itself
    may have been closed. `sequential` tells the OS that the bytes are read once, front to back:
    it reads ahead, and lets the pages already read go early. `info`: the file's fstat, if
    known."""
    info = os.fstat(file.fileno()) if info is None else info
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return None
    mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    if sequential and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_SEQUENTIAL)
    return np.frombuffer(mapped, dtype=np.uint8)


class ByteSource:
    """A decoder's input: `memory` (the whole input as a uint8 array, read-only when mapped from
    a file) when it is in memory or a regular file, else a stream read with `readinto`.

    `what` names the format in the TypeError for a source of no known kind; `sequential` is
    map_regular_file's; `open_error(error, path)`, when given, makes the exception raised when
    a path cannot be opened (else the OSError itself is raised). close() closes a file opened
    here (a memory map outlives it)."""

    def __init__(
        self,
        source,
        what: str,
        *,
        sequential: bool = False,
        open_error: Callable[[OSError, str], Exception] | None = None,
    ):
        self._owned = None
        self._file = None
        self.memory: np.ndarray | None = None
        self.mapped = False  # whether `memory` maps a file
        if isinstance(source, (bytes, bytearray, memoryview, np.ndarray)):
            self.memory = in_memory(source)
        elif isinstance(source, (str, os.PathLike)):
            try:
                self._owned = self._file = open(source, "rb", buffering=0)
                info = os.fstat(self._owned.fileno())
            except OSError as e:
                self.close()
                failure = open_error(e, os.fspath(source)) if open_error is not None else None
                if failure is None:
                    raise
                raise failure from e
            try:
                self.memory = map_regular_file(self._owned, sequential, info)
            except BaseException:
                self.close()
                raise
            self.mapped = self.memory is not None
        elif hasattr(source, "readinto") or hasattr(source, "read"):
            self._file = source
        else:
            raise TypeError(
                f"cannot read {what} from {type(source).__name__}: give a path, a binary file object or bytes"
            )

    def readinto(self, view: memoryview) -> int:
        """Fill as much of `view` as the stream gives before EOF; returns the byte count (less
        than len(view) only at EOF). Reading until full, rather than once, matters for pipes,
        whose reads return at most 64 KiB each."""
        file = self._file
        assert file is not None, "readinto() is for a stream; this source's bytes are in `memory`"
        total = 0
        target = len(view)
        while total < target:
            if hasattr(file, "readinto"):
                got = file.readinto(view[total:])
            else:
                data = file.read(target - total)
                got = len(data)
                view[total : total + got] = data
            if got is None:  # non-blocking file with nothing yet: wait like a blocking read
                continue
            if got == 0:
                break
            total += got
        return total

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
