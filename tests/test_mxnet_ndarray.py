"""MXNet's NDArray file format without MXNet (algorithms/formats/mxnet_ndarray.py): AWS's own
model_algo-1 files, both ways against MXNet 1.9.1 itself (its own venv, tests/oracles/), and
truncated, flipped and hostile files."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smalgo.algorithms.formats.mxnet_ndarray import (
    DTYPES,
    LIST_MAGIC,
    NDARRAY_V2_MAGIC,
    MXNetFileError,
    read_ndarrays,
    write_ndarrays,
)

REPO = Path(__file__).resolve().parents[1]
AWS_MODELS = REPO.parent / "shared" / "testdata" / "aws-builtin-models"
MXNET_PYTHON = REPO / "tests" / "oracles" / ".venv-mxnet" / "bin" / "python"
MXNET_SIDE = REPO / "tests" / "oracles" / "mxnet_side.py"


def aws_model(folder: str) -> bytes:
    return (AWS_MODELS / folder / "model_algo-1").read_bytes()


@pytest.mark.parametrize("folder", sorted(p.name for p in AWS_MODELS.iterdir()))
def test_aws_model_files_read_and_write_back_byte_identical(folder):
    data = aws_model(folder)
    arrays = read_ndarrays(data, source=folder)
    assert write_ndarrays(arrays) == data


def test_aws_model_file_contents():
    (centers,) = read_ndarrays(aws_model("kmeans-ahmed-gaal"))
    assert centers.shape == (7, 8) and centers.dtype == np.float32
    np.testing.assert_allclose(centers[0, :2], [0.258064777, -0.165894613], rtol=1e-7)
    pca = read_ndarrays(aws_model("pca-renejra"))
    assert list(pca) == ["s", "v", "mean"]
    assert (pca["s"].shape, pca["v"].shape, pca["mean"].shape) == ((25,), (26, 25), (1, 26))
    assert pca["s"][:1].tobytes() == bytes.fromhex("0000c0ff") and np.all(np.diff(pca["s"][1:]) >= 0)


# --- against MXNet 1.9.1 ------------------------------------------------------------------------


def mxnet(*args: str) -> None:
    if not MXNET_PYTHON.exists():
        pytest.fail(
            f"The MXNet oracle environment {MXNET_PYTHON.parent.parent} is missing: create it with "
            "`bash tests/oracles/setup_mxnet_env.sh` (or `make mxnet-env`)."
        )
    result = subprocess.run([str(MXNET_PYTHON), str(MXNET_SIDE), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {
        "centers": rng.normal(size=(7, 8)).astype(np.float32),
        "weights": rng.normal(size=(5,)),
        "half": rng.normal(size=(2, 3, 4)).astype(np.float16),
        "counts": rng.integers(0, 255, size=(3, 1), dtype=np.uint8),
        "ids": rng.integers(-(2**31), 2**31 - 1, size=(6,), dtype=np.int32),
        "small": rng.integers(-128, 127, size=(4,), dtype=np.int8),
        "big": rng.integers(-(2**62), 2**62, size=(2, 2), dtype=np.int64),
        "nan": np.array([np.nan, np.inf, -0.0, 1e-45], np.float32),
    }
    return arrays


@pytest.mark.parametrize("as_dict", [False, True], ids=["list", "dict"])
def test_files_mxnet_writes_read_bit_identical(tmp_path, as_dict):
    arrays = sample_arrays()
    np.savez(tmp_path / "spec.npz", __order__=np.array(list(arrays)), **arrays)
    mxnet("save", str(tmp_path / "saved.nd"), str(tmp_path / "spec.npz"), *(["--dict"] if as_dict else []))
    data = (tmp_path / "saved.nd").read_bytes()
    read = read_ndarrays(data)
    assert isinstance(read, dict) == as_dict
    assert list(read) == list(arrays) if as_dict else len(read) == len(arrays)
    for ours, theirs in zip(read.values() if as_dict else read, arrays.values(), strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and ours.tobytes() == theirs.tobytes()
    assert write_ndarrays(read) == data  # and we write what MXNet wrote, byte for byte


@pytest.mark.parametrize("as_dict", [False, True], ids=["list", "dict"])
def test_files_we_write_mxnet_loads_bit_identical(tmp_path, as_dict):
    arrays = sample_arrays()
    (tmp_path / "ours.nd").write_bytes(write_ndarrays(arrays if as_dict else list(arrays.values())))
    mxnet("load", str(tmp_path / "ours.nd"), str(tmp_path / "loaded.npz"))
    loaded = np.load(tmp_path / "loaded.npz")
    names = [str(n) for n in loaded["__order__"]]
    assert names == (list(arrays) if as_dict else [f"a{i}" for i in range(len(arrays))])
    for name, expected in zip(names, arrays.values(), strict=True):
        assert loaded[name].dtype == expected.dtype and loaded[name].tobytes() == expected.tobytes()


# --- damaged and hostile files ------------------------------------------------------------------


def header(n: int) -> bytes:
    return struct.pack("<QQQ", LIST_MAGIC, 0, n)


def array_head(shape, flag=0, magic=NDARRAY_V2_MAGIC, storage=0) -> bytes:
    return struct.pack(f"<IiI{len(shape)}q", magic, storage, len(shape), *shape) + struct.pack("<iii", 1, 0, flag)


VALID = write_ndarrays({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2)})


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "the file ends inside the header (16 bytes needed, 0 left) (at byte offset 0)"),
        (struct.pack("<QQQ", 0x113, 0, 0), "the magic number is 0x113, not 0x112 (at byte offset 0)"),
        (header(2**60), "the number of arrays is 1,152,921,504,606,846,976, more than the 0 bytes left"),
        (header(1) + array_head([2], magic=0x1234) + b"\0" * 8, "array 0 starts with 0x1234"),
        (header(1) + array_head([2], storage=2) + b"\0" * 8, "only dense arrays (0) are read"),
        (header(1) + struct.pack("<IiI", NDARRAY_V2_MAGIC, 0, 1000) + b"\0" * 40, "1,000 dimensions (at most 32)"),
        (header(1) + array_head([-1, 2]) + b"\0" * 8, "shape (-1, 2) has a negative dimension"),
        (header(1) + array_head([2**40, 2**40]) + b"\0" * 8, "the file ends inside array 0's"),
        (header(1) + array_head([2], flag=12) + b"\0" * 8, "dtype flag 12, which is none of"),
        (header(1) + array_head([2]) + b"\0" * 8 + struct.pack("<Q", 2) + b"\0" * 16, "2 names for 1 arrays"),
        (header(1) + array_head([1]) + b"\0" * 4 + struct.pack("<QQ", 1, 1) + b"\xff", "name 0 is not UTF-8"),
        (VALID + b"x", "1 bytes follow the last name"),
        (VALID[:-1], "the length of name 1 is 1, more than the 0 bytes left can hold"),
        (VALID.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00b", b"\x01\x00\x00\x00\x00\x00\x00\x00a"), "same name"),
    ],
    ids=[
        "empty",
        "magic",
        "huge-count",
        "array-magic",
        "sparse",
        "ndim",
        "negative-dim",
        "huge-shape",
        "dtype",
        "names-count",
        "name-utf8",
        "trailing",
        "truncated-name",
        "duplicate-name",
    ],
)
def test_damaged_files_are_refused_naming_the_offset(data, message):
    with pytest.raises(MXNetFileError, match="byte offset") as error:
        read_ndarrays(data, source="model_algo-1")
    assert str(error.value).startswith("model_algo-1: not an MXNet NDArray file: ")
    assert message in str(error.value)


def test_writer_refuses_what_mxnet_cannot_hold():
    with pytest.raises(ValueError, match="no dtype for complex64"):
        write_ndarrays([np.zeros(2, np.complex64)])
    with pytest.raises(ValueError, match="0-d array"):
        write_ndarrays([np.float32(1.0)])
    big_endian = np.arange(3, dtype=">f4")
    assert read_ndarrays(write_ndarrays([big_endian]))[0].tolist() == [0.0, 1.0, 2.0]


def _check_any(data: bytes) -> None:
    try:
        arrays = read_ndarrays(data)
    except MXNetFileError:
        return
    values = arrays.values() if isinstance(arrays, dict) else arrays
    # Everything read comes from the file's own bytes: nothing larger than it was allocated.
    assert sum(a.nbytes for a in values) <= len(data)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
SEEDS = [VALID, aws_model("pca-renejra"), aws_model("kmeans-jesamkim")]


@FUZZ
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 10_000))
def test_truncations_never_crash(seed, cut):
    _check_any(seed[: cut % (len(seed) + 1)])


@FUZZ
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4))
def test_byte_flips_never_crash(seed, flips):
    data = bytearray(seed)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    _check_any(bytes(data))


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    _check_any(header(1) + data)


def test_every_dtype_flag_is_mshadows():
    assert {flag: dtype.name for flag, dtype in DTYPES.items()} == {
        0: "float32",
        1: "float64",
        2: "float16",
        3: "uint8",
        4: "int32",
        5: "int8",
        6: "int64",
        7: "bool",
    }
