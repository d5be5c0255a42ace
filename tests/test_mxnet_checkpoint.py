"""The module-checkpoint zip AWS's linear learner and factorization machines save as model_algo-1,
without MXNet (algorithms/formats/mxnet_checkpoint.py): written and read back, and damaged,
truncated, flipped and hostile zips refused naming the zip and the member, never a crash and
never an allocation larger than the file could describe. (Against MXNet itself:
tests/test_aws_models.py.)"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smalgo.algorithms.formats.mxnet_checkpoint import (
    DEFLATE_MAX_RATIO,
    MAX_MEMBERS,
    MXNetCheckpoint,
    MXNetCheckpointError,
    SymbolGraph,
    is_checkpoint_zip,
    read_checkpoint_zip,
    write_checkpoint_zip,
)
from smalgo.algorithms.formats.mxnet_ndarray import MXNetFileError, write_ndarrays


def fc0_symbol() -> dict:
    graph = SymbolGraph()
    data = graph.variable("data")
    hidden = {"num_hidden": "1"}
    fc0 = graph.op(
        "FullyConnected",
        "fc0",
        [data, graph.variable("fc0_weight", hidden), graph.variable("fc0_bias", hidden)],
        attrs=hidden,
    )
    return graph.to_json(graph.op("LogisticRegressionOutput", "out", [fc0, graph.variable("out_label")]))


def sample_checkpoint() -> MXNetCheckpoint:
    rng = np.random.default_rng(5)
    return MXNetCheckpoint(
        symbol=fc0_symbol(),
        arg_params={"fc0_weight": rng.normal(size=(1, 7)).astype(np.float32), "fc0_bias": np.array([0.25], np.float32)},
        aux_params={"moving_mean": np.arange(3, dtype=np.float32)},
        extras={"additional-params.json": {"predictor_type": "binary_classifier"}, "manifest.json": {"epoch": 0}},
    )


def zip_of(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a name written twice, which one case wants
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


def members_of(checkpoint: MXNetCheckpoint) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(write_checkpoint_zip(checkpoint))) as archive:
        return [(name, archive.read(name)) for name in archive.namelist()]


VALID = write_checkpoint_zip(sample_checkpoint())
VALID_STORED = zip_of(members_of(sample_checkpoint()), zipfile.ZIP_STORED)
SYMBOL_BYTES = dict(members_of(sample_checkpoint()))["mx-mod-symbol.json"]
PARAMS_BYTES = dict(members_of(sample_checkpoint()))["mx-mod-0000.params"]


def test_a_checkpoint_reads_back_as_written():
    written = sample_checkpoint()
    read = read_checkpoint_zip(VALID, source="model_algo-1")
    assert read.symbol == written.symbol and read.extras == written.extras
    assert (read.symbol_file, read.params_file) == ("mx-mod-symbol.json", "mx-mod-0000.params")
    for ours, theirs in ((read.arg_params, written.arg_params), (read.aux_params, written.aux_params)):
        assert list(ours) == list(theirs)
        assert all(ours[n].tobytes() == theirs[n].tobytes() and ours[n].shape == theirs[n].shape for n in ours)
    assert read.head_ops() == ["LogisticRegressionOutput"]
    assert read.setting("predictor_type") == ("binary_classifier", "additional-params.json")
    assert read.describe() == "fc0_weight (1, 7), fc0_bias (1,), moving_mean (3,)"
    # The parameters are the NDArray dict mx.model.save_checkpoint writes: args, then auxs.
    assert PARAMS_BYTES == write_ndarrays(
        {"arg:fc0_weight": written.arg_params["fc0_weight"], "arg:fc0_bias": written.arg_params["fc0_bias"]}
        | {"aux:moving_mean": written.aux_params["moving_mean"]}
    )
    assert write_checkpoint_zip(read) == VALID  # same checkpoint, same bytes
    assert is_checkpoint_zip(VALID) and not is_checkpoint_zip(write_ndarrays([np.ones(1, np.float32)]))


def test_factorization_machines_member_names_and_nested_settings_are_read():
    data = zip_of(
        [
            ("symbol.json", SYMBOL_BYTES),
            ("params", PARAMS_BYTES),
            ("meta.json", json.dumps({"training_parameters": {"feature_dim": "7"}}).encode()),
            ("notes.txt", b"not json, not read"),
        ]
    )
    read = read_checkpoint_zip(data)
    assert (read.symbol_file, read.params_file) == ("symbol.json", "params")
    assert read.setting("feature_dim") == ("7", "meta.json") and read.setting("predictor_type") is None
    assert list(read.extras) == ["meta.json"]


def patched(
    data: bytes,
    member: str,
    *,
    compressed: int | None = None,
    size: int | None = None,
    flags: int | None = None,
    method: int | None = None,
) -> bytes:
    """`data` with the central directory entry of `member` declaring other sizes, flags or method."""
    out = bytearray(data)
    at = 0
    while True:
        at = out.index(b"PK\x01\x02", at)
        name_length = struct.unpack_from("<H", out, at + 28)[0]
        if out[at + 46 : at + 46 + name_length].decode() == member:
            break
        at += 4
    if flags is not None:
        struct.pack_into("<H", out, at + 8, flags)
    if method is not None:
        struct.pack_into("<H", out, at + 10, method)
    if compressed is not None:
        struct.pack_into("<I", out, at + 20, compressed)
    if size is not None:
        struct.pack_into("<I", out, at + 24, size)
    return bytes(out)


def compressed_size(data: bytes, member: str) -> int:
    return zipfile.ZipFile(io.BytesIO(data)).getinfo(member).compress_size


HOSTILE = {
    "not-a-zip": (b"PK\x03\x04rest of nothing", "not a readable zip"),
    "too-many-entries": (
        zip_of([(f"file{i}.txt", b"x") for i in range(MAX_MEMBERS + 1)]),
        f"the zip has {MAX_MEMBERS + 1} entries",
    ),
    "no-params": (
        zip_of([("mx-mod-symbol.json", SYMBOL_BYTES), ("manifest.json", b"{}")]),
        "no parameters member (<prefix>-0000.params or params, as Module.load reads it); it holds: "
        "mx-mod-symbol.json, manifest.json",
    ),
    "no-symbol": (zip_of([("mx-mod-0000.params", PARAMS_BYTES)]), "no graph member (<prefix>-symbol.json"),
    "two-symbols": (
        zip_of([("a-symbol.json", SYMBOL_BYTES), ("b-symbol.json", SYMBOL_BYTES), ("a-0000.params", PARAMS_BYTES)]),
        "2 graph members (a-symbol.json, b-symbol.json)",
    ),
    "same-name-twice": (
        zip_of([("params", PARAMS_BYTES), ("params", PARAMS_BYTES), ("symbol.json", SYMBOL_BYTES)]),
        "holds params more than once",
    ),
    "bad-symbol-json": (
        zip_of([("mx-mod-symbol.json", b'{"nodes": [}'), ("mx-mod-0000.params", PARAMS_BYTES)]),
        "member mx-mod-symbol.json is not JSON: Expecting value (line 1, column 12)",
    ),
    "bad-meta-json": (
        zip_of([("symbol.json", SYMBOL_BYTES), ("params", PARAMS_BYTES), ("meta.json", b"{'training_parameters'")]),
        "member meta.json is not JSON",
    ),
    "deep-json": (
        zip_of([("symbol.json", b"[" * 100_000), ("params", PARAMS_BYTES)]),
        "member symbol.json",
    ),
    "symbol-not-utf8": (
        zip_of([("symbol.json", b'{"nodes": "\xff"}'), ("params", PARAMS_BYTES)]),
        "member symbol.json is not UTF-8 (byte 11)",
    ),
    "symbol-without-nodes": (
        zip_of([("symbol.json", b'{"heads": []}'), ("params", PARAMS_BYTES)]),
        "symbol.json: not an MXNet symbol graph",
    ),
    "symbol-bad-input": (
        zip_of(
            [
                (
                    "symbol.json",
                    json.dumps(
                        {"nodes": [{"op": "null", "name": "a", "inputs": [[3, 0, 0]]}], "heads": [[0, 0, 0]]}
                    ).encode(),
                ),
                ("params", PARAMS_BYTES),
            ]
        ),
        "node 0 (a) has the bad input [3, 0, 0]",
    ),
    "symbol-bad-head": (
        zip_of([("symbol.json", json.dumps({"nodes": [], "heads": [[0, 0, 0]]}).encode()), ("params", PARAMS_BYTES)]),
        "the graph's heads [[0, 0, 0]] do not name its nodes",
    ),
    "params-a-list": (
        zip_of([("symbol.json", SYMBOL_BYTES), ("params", write_ndarrays([np.ones(2, np.float32)]))]),
        "params: a list of 1 arrays",
    ),
    "params-unprefixed": (
        zip_of([("symbol.json", SYMBOL_BYTES), ("params", write_ndarrays({"fc0_weight": np.ones(2, np.float32)}))]),
        "the parameter 'fc0_weight' is named neither arg:<name> nor aux:<name>",
    ),
    "params-truncated": (
        zip_of([("symbol.json", SYMBOL_BYTES), ("params", PARAMS_BYTES[:-5])]),
        "model_algo-1:params: not an MXNet NDArray file",
    ),
    "huge-declared-json": (
        patched(VALID_STORED, "manifest.json", size=2**31),
        "member manifest.json declares 2,147,483,648 bytes, more than 16,777,216",
    ),
    "declared-beyond-deflate": (
        patched(
            VALID, "mx-mod-0000.params", size=DEFLATE_MAX_RATIO * compressed_size(VALID, "mx-mod-0000.params") + 65
        ),
        "more than deflate can expand them to",
    ),
    "compressed-past-the-end": (
        patched(VALID, "mx-mod-0000.params", compressed=10**9),
        "member mx-mod-0000.params declares 1,000,000,000 bytes at byte offset",
    ),
    "stored-sizes-differ": (
        patched(VALID_STORED, "mx-mod-0000.params", size=compressed_size(VALID_STORED, "mx-mod-0000.params") + 1),
        "is stored but declares",
    ),
    "shorter-than-declared": (
        patched(VALID, "mx-mod-0000.params", size=len(PARAMS_BYTES) + 100),
        "member mx-mod-0000.params",
    ),
    "encrypted": (patched(VALID, "mx-mod-0000.params", flags=1), "member mx-mod-0000.params is encrypted"),
    "bzip2": (
        patched(VALID, "mx-mod-0000.params", method=12),
        "member mx-mod-0000.params uses compression method 12; only stored (0) and deflated (8) are read",
    ),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_damaged_and_hostile_zips_are_refused_naming_the_member(case):
    data, message = HOSTILE[case]
    with pytest.raises(MXNetCheckpointError if case != "params-truncated" else MXNetFileError) as error:
        read_checkpoint_zip(data, source="model_algo-1")
    assert str(error.value).startswith("model_algo-1")
    assert message in str(error.value)


def test_a_huge_declared_member_is_refused_before_anything_is_allocated():
    data = patched(VALID, "mx-mod-0000.params", size=2**32 - 1)
    tracemalloc.start()
    try:
        with pytest.raises(MXNetCheckpointError, match="mx-mod-0000.params declares 4,294,967,295 bytes"):
            read_checkpoint_zip(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _check_any(data: bytes, most_described: int) -> None:
    tracemalloc.start()
    try:
        try:
            checkpoint = read_checkpoint_zip(data)
        except MXNetFileError:
            checkpoint = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # zipfile's own bookkeeping aside, what is read is bounded by what the file's bytes can describe.
    assert peak <= 4 * most_described + (512 << 10)
    if checkpoint is not None:
        assert sum(a.nbytes for a in checkpoint.arg_params.values()) <= most_described


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
# A stored zip describes its own bytes; a deflated one at most DEFLATE_MAX_RATIO times them.
SEEDS = [(VALID_STORED, 1), (VALID, DEFLATE_MAX_RATIO)]


@FUZZ
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 10_000))
def test_truncations_never_crash(seed, cut):
    data, ratio = seed
    cut_data = data[: cut % (len(data) + 1)]
    _check_any(cut_data, ratio * len(cut_data))


@FUZZ
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4))
def test_byte_flips_never_crash(seed, flips):
    data, ratio = seed
    flipped = bytearray(data)
    for position, mask in flips:
        flipped[position % len(flipped)] ^= mask
    _check_any(bytes(flipped), ratio * len(flipped))


def test_the_graph_builder_writes_mxnets_json_form():
    graph = SymbolGraph()
    data = graph.variable("data")
    square = graph.op("square", "square0", [data])
    symbol = graph.to_json(graph.op("sum", "sum0", [square], attrs={"axis": "1"}))
    assert symbol == {
        "nodes": [
            {"op": "null", "name": "data", "inputs": []},
            {"op": "square", "name": "square0", "inputs": [[0, 0, 0]]},
            {"op": "sum", "name": "sum0", "attrs": {"axis": "1"}, "inputs": [[1, 0, 0]]},
        ],
        "arg_nodes": [0],
        "node_row_ptr": [0, 1, 2, 3],
        "heads": [[2, 0, 0]],
        "attrs": {"mxnet_version": ["int", 10901]},
    }
