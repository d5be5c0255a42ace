"""MXNet's NDArray file format (`mx.nd.save` / `mx.nd.load`), read and written without MXNet.

AWS's built-in images save models with it: k-means' `model_algo-1` is a list holding the k x d
centers, PCA's a dict of `mean`, `v` and `s`, and the parameters inside linear learner's and
factorization machines' module-checkpoint zips (`mx-mod-0000.params`) are a dict too. MXNet was
retired in 2023 and does not install beside current numpy, so users (and we) need the format
without it. Layout, little-endian, as MXNet 1.9.1 writes it:

    u64 0x112 (list magic), u64 0 (reserved), u64 N (arrays)
    N times: u32 0xF993FAC9 (NDArray v2 magic), i32 storage type (0: dense),
             u32 ndim, ndim x i64 dims, i32 device type (1: cpu), i32 device id,
             i32 dtype flag, then the values in C order
    u64 number of names (0 for a list, else N), each: u64 length, UTF-8 bytes

The reader trusts nothing in the file: every count, dimension and length is checked against the
bytes that are left before anything is allocated, so that a truncated or hostile file gives a
`MXNetFileError` naming the byte offset, never a crash or an allocation the file could not fill.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

LIST_MAGIC = 0x112
NDARRAY_V2_MAGIC = 0xF993FAC9
DENSE_STORAGE = 0
CPU_DEVICE = 1
# mshadow's type flags.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
}
FLAGS = {dtype: flag for flag, dtype in DTYPES.items()}
# MXNet's shapes have at most this many dimensions (mshadow's kMaxDim is far below it).
MAX_NDIM = 32
# Bytes an array takes at least (magic, storage, ndim, device type and id, dtype flag).
_MIN_ARRAY_BYTES = 24


class MXNetFileError(ValueError):
    """A file that is not a well-formed MXNet NDArray file; the message names the byte offset."""


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.offset = 0
        self.source = source

    def fail(self, message: str, offset: int | None = None) -> MXNetFileError:
        at = self.offset if offset is None else offset
        return MXNetFileError(f"{self.source}: not an MXNet NDArray file: {message} (at byte offset {at})")

    @property
    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, what: str) -> memoryview:
        if size > self.left:
            raise self.fail(f"the file ends inside {what} ({size:,} bytes needed, {self.left:,} left)")
        piece = self.data[self.offset : self.offset + size]
        self.offset += size
        return piece

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def count(self, what: str, each_at_least: int) -> int:
        """A u64 count of items that each take at least `each_at_least` bytes."""
        at = self.offset
        (n,) = self.unpack("<Q", what)
        if n * each_at_least > self.left:
            raise self.fail(f"{what} is {n:,}, more than the {self.left:,} bytes left can hold", at)
        return n


def read_ndarrays(data: bytes, *, source: str = "MXNet file") -> list[np.ndarray] | dict[str, np.ndarray]:
    """The arrays of an `mx.nd.save` file: a list, or a dict in file order when it names them.
    `source` names the file in errors. Arrays are read-only views into `data` where aligned,
    else copies."""
    reader = _Reader(data, source)
    magic, _reserved = reader.unpack("<QQ", "the header")
    if magic != LIST_MAGIC:
        raise reader.fail(f"the magic number is {magic:#x}, not {LIST_MAGIC:#x}", 0)
    n = reader.count("the number of arrays", _MIN_ARRAY_BYTES)
    arrays = [_read_array(reader, index) for index in range(n)]
    names_at = reader.offset
    named = reader.count("the number of names", 8)
    if named not in (0, n):
        raise reader.fail(f"{named:,} names for {n:,} arrays", names_at)
    names = []
    for index in range(named):
        length = reader.count(f"the length of name {index}", 1)
        raw = reader.take(length, f"name {index}")
        try:
            names.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            raise reader.fail(f"name {index} is not UTF-8", reader.offset - length) from None
    if reader.left:
        raise reader.fail(f"{reader.left:,} bytes follow the last name")
    if not named:
        return arrays
    if len(set(names)) != len(names):
        raise reader.fail("two arrays have the same name", names_at)
    return dict(zip(names, arrays, strict=True))


def _read_array(reader: _Reader, index: int) -> np.ndarray:
    at = reader.offset
    what = f"array {index}"
    magic, storage = reader.unpack("<Ii", f"{what}'s header")
    if magic != NDARRAY_V2_MAGIC:
        raise reader.fail(f"{what} starts with {magic:#x}, not the NDArray magic {NDARRAY_V2_MAGIC:#x}", at)
    if storage != DENSE_STORAGE:
        raise reader.fail(f"{what} has storage type {storage}; only dense arrays (0) are read", at + 4)
    (ndim,) = reader.unpack("<I", f"{what}'s shape")
    if ndim > MAX_NDIM:
        raise reader.fail(f"{what} has {ndim:,} dimensions (at most {MAX_NDIM})", reader.offset - 4)
    dims_at = reader.offset
    shape = reader.unpack(f"<{ndim}q", f"{what}'s shape")
    if any(d < 0 for d in shape):
        raise reader.fail(f"{what}'s shape {shape} has a negative dimension", dims_at)
    _device_type, _device_id, flag = reader.unpack("<iii", f"{what}'s header")
    dtype = DTYPES.get(flag)
    if dtype is None:
        raise reader.fail(f"{what} has dtype flag {flag}, which is none of {sorted(DTYPES)}", reader.offset - 4)
    size = 1
    for d in shape:
        size *= d  # Python ints: no overflow, and bounded below before any allocation
    values = reader.take(size * dtype.itemsize, f"{what}'s {size:,} values ({dtype.name})")
    array = np.frombuffer(values, dtype=dtype).reshape(shape)
    return array if array.flags.aligned else array.copy()


def write_ndarrays(arrays: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> bytes:
    """The bytes `mx.nd.save` writes for a list (or dict, in its order) of dense arrays on the
    CPU. ValueError for a dtype MXNet has no flag for or a 0-d array (MXNet 1.x shapes need one
    dimension at least)."""
    names = list(arrays) if isinstance(arrays, Mapping) else []
    values = list(arrays.values()) if isinstance(arrays, Mapping) else list(arrays)
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(values))]
    for index, array in enumerate(values):
        array = np.asarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        flag = FLAGS.get(np.dtype(dtype))
        if flag is None:
            raise ValueError(f"array {index}: MXNet has no dtype for {array.dtype}")
        if array.ndim == 0:
            raise ValueError(f"array {index}: a 0-d array (MXNet 1.x arrays have one dimension at least)")
        parts.append(struct.pack(f"<IiI{array.ndim}q", NDARRAY_V2_MAGIC, DENSE_STORAGE, array.ndim, *array.shape))
        parts.append(struct.pack("<iii", CPU_DEVICE, 0, flag))
        parts.append(np.ascontiguousarray(array, dtype=DTYPES[flag]).tobytes())
    parts.append(struct.pack("<Q", len(names)))
    for name in names:
        encoded = str(name).encode("utf-8")
        parts.append(struct.pack("<Q", len(encoded)) + encoded)
    return b"".join(parts)
