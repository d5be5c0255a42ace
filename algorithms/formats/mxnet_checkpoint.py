"""MXNet's module checkpoint in a zip, as AWS's linear learner and factorization machines save
`model_algo-1`, read and written without MXNet.

A module checkpoint (`mx.model.save_checkpoint`, read by `mx.model.load_checkpoint` and
`mx.module.Module.load(prefix, epoch)`) is two files: `<prefix>-symbol.json`, the graph as
`Symbol.tojson()` writes it, and `<prefix>-<epoch:04d>.params`, an NDArray dict file
(formats/mxnet_ndarray.py) whose keys are `arg:<name>` and `aux:<name>`. AWS's images put the
two in a zip with small JSON files of their own:

* linear learner: `mx-mod-symbol.json`, `mx-mod-0000.params`, `manifest.json`,
  `additional-params.json`. Sources: the listing `unzip model_algo-1` prints in Julien Simon's
  "Learn Amazon SageMaker" (2nd ed., ch. 11); AWS's developer guide, "How linear learner works",
  step 4 (`mx.module.Module.load('mx-mod', 0)`, `_arg_params['fc0_weight']`, `['fc0_bias']`);
  public code that unzips AWS's file and removes exactly those four names; a Lambda handler that
  loads it with `label_names=["out_label"]`.
* factorization machines: `symbol.json`, `params`, `meta.json` (no prefix: users rename them to
  `model-symbol.json` / `model-0000.params` before `Module.load('./model', 0, False,
  label_names=['out_label'])`). Sources: AWS's blog "Extending Amazon SageMaker factorization
  machines algorithm to predict top x recommendations" and its notebook; public serving code
  that reads `meta.json["training_parameters"]["feature_dim"]`.

What the JSON files other than the symbol hold is not public (beyond FM's training_parameters);
they are kept parsed, by name, in `MXNetCheckpoint.extras`, and `setting()` looks a key up in
them. The reader accepts either member naming (any prefix and epoch) so that both algorithms'
zips, and a checkpoint a user zipped by hand, read the same way.

The reader trusts nothing in the zip: at most MAX_MEMBERS entries, only stored or deflated
members, each member's declared size checked against its limit, against the bytes the file has
for it and against what deflate can expand them to before anything is read, and never more than
the declared size read; every failure is an `MXNetCheckpointError` naming the zip and the
member.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .mxnet_ndarray import MXNetFileError, read_ndarrays, write_ndarrays

ZIP_MAGIC = b"PK\x03\x04"
# What Module.load reads: <prefix>-symbol.json and <prefix>-<epoch:04d>.params (linear learner's
# names), or factorization machines' bare symbol.json and params.
SYMBOL_NAME = re.compile(r"(?:.+-)?symbol\.json")
PARAMS_NAME = re.compile(r"(?:.+-\d{4}\.)?params")
# AWS's zips hold four files at most; a zip of more entries is not one of theirs.
MAX_MEMBERS = 64
MAX_JSON_BYTES = 16 << 20
MAX_PARAMS_BYTES = 4 << 30
# deflate expands a byte at most about 1032-fold: a member that declares more is lying.
DEFLATE_MAX_RATIO = 1032
_LOCAL_HEADER_BYTES = 30
_CHUNK = 1 << 20
# The version MXNet 1.9.1 stamps on the graphs it writes.
MXNET_VERSION = 10901
# Everything zipfile and zlib raise on a damaged or hostile archive.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    UnicodeDecodeError,
)


class MXNetCheckpointError(MXNetFileError):
    """A zip that is not a well-formed MXNet module checkpoint; the message names the member."""


@dataclass
class MXNetCheckpoint:
    """A module checkpoint: the graph (parsed symbol JSON), its parameters, the zip's other JSON
    files (parsed, by member name) and the member names the graph and parameters go by."""

    symbol: dict[str, Any]
    arg_params: dict[str, np.ndarray]
    aux_params: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    symbol_file: str = "mx-mod-symbol.json"
    params_file: str = "mx-mod-0000.params"

    def head_ops(self) -> list[str]:
        """The ops of the nodes whose outputs are the graph's ("LogisticRegressionOutput", ...)."""
        nodes = self.symbol["nodes"]
        return [str(nodes[head[0]]["op"]) for head in self.symbol["heads"]]

    def nodes(self, op: str) -> list[dict[str, Any]]:
        """The graph's nodes of op `op`."""
        return [node for node in self.symbol["nodes"] if node["op"] == op]

    def setting(self, key: str) -> tuple[Any, str] | None:
        """(value, member name) of the first `key` in the zip's other JSON files, looked for at
        their top level first, then in the objects they hold (meta.json's training_parameters),
        three levels deep at most; None where none has it."""
        for member, document in self.extras.items():
            found = _find_key(document, key)
            if found is not None:
                return found[0], member
        return None

    def describe(self) -> str:
        """Its parameters, for messages: "fc0_weight (1, 5), fc0_bias (1,)"."""
        params = [*self.arg_params.items(), *self.aux_params.items()]
        return ", ".join(f"{name} {array.shape}" for name, array in params) or "no parameters"


def _find_key(document: Any, key: str) -> tuple[Any] | None:
    level = [document]
    for _ in range(3):
        objects = [item for item in level if isinstance(item, dict)]
        for item in objects:
            if key in item:
                return (item[key],)
        level = [value for item in objects for value in item.values()]
    return None


def is_checkpoint_zip(data: bytes) -> bool:
    """Whether `data` starts as a zip does (AWS's NDArray files start with 0x112)."""
    return bytes(data[:4]) == ZIP_MAGIC


# --------------------------------------------------------------------------- reading


def read_checkpoint_zip(data: bytes, *, source: str = "model_algo-1") -> MXNetCheckpoint:
    """The module checkpoint in the zip `data`; `source` names the zip in errors."""
    reader = _ZipReader(data, source)
    symbol_info = reader.the_member(SYMBOL_NAME, "graph", "<prefix>-symbol.json or symbol.json")
    params_info = reader.the_member(PARAMS_NAME, "parameters", "<prefix>-0000.params or params")
    symbol = _check_symbol(reader.json(symbol_info), f"{source}:{symbol_info.filename}")
    params_source = f"{source}:{params_info.filename}"
    params = read_ndarrays(reader.read(params_info, MAX_PARAMS_BYTES), source=params_source)
    if not isinstance(params, dict):
        raise MXNetCheckpointError(
            f"{params_source}: a list of {len(params)} arrays; a checkpoint's parameters are a dict "
            "of arg:<name> and aux:<name>."
        )
    arg_params: dict[str, np.ndarray] = {}
    aux_params: dict[str, np.ndarray] = {}
    for key, array in params.items():
        kind, _, name = key.partition(":")
        if kind not in ("arg", "aux") or not name:
            raise MXNetCheckpointError(
                f"{params_source}: the parameter {key!r} is named neither arg:<name> nor aux:<name>, "
                "as mx.model.save_checkpoint names them."
            )
        (arg_params if kind == "arg" else aux_params)[name] = array
    extras = {
        info.filename: reader.json(info)
        for info in reader.top
        if info.filename.endswith(".json") and info not in (symbol_info, params_info)
    }
    return MXNetCheckpoint(
        symbol,
        arg_params,
        aux_params,
        extras,
        symbol_file=symbol_info.filename,
        params_file=params_info.filename,
    )


class _ZipReader:
    """The zip's entries, and each member's bytes read only after its declared sizes are checked."""

    def __init__(self, data: bytes, source: str) -> None:
        self.size = len(data)
        self.source = source
        try:
            self.archive = zipfile.ZipFile(io.BytesIO(data))
            infos = self.archive.infolist()
        except _ZIP_ERRORS as exc:
            raise MXNetCheckpointError(f"{source}: not a readable zip: {exc}") from None
        if len(infos) > MAX_MEMBERS:
            raise MXNetCheckpointError(
                f"{source}: the zip has {len(infos):,} entries; a module checkpoint has a few (at most {MAX_MEMBERS})."
            )
        self.names = [info.filename for info in infos]
        if len(set(self.names)) != len(self.names):
            twice = sorted({name for name in self.names if self.names.count(name) > 1})
            raise MXNetCheckpointError(f"{source}: the zip holds {', '.join(twice)} more than once.")
        # Only the zip's top level counts: nothing is ever extracted to a path.
        self.top = [info for info in infos if "/" not in info.filename and "\\" not in info.filename]

    def the_member(self, pattern: re.Pattern, what: str, looked_for: str) -> zipfile.ZipInfo:
        found = [info for info in self.top if pattern.fullmatch(info.filename)]
        if len(found) == 1:
            return found[0]
        if not found:
            listed = ", ".join(self.names[:10]) or "nothing"
            more = f" and {len(self.names) - 10:,} more" if len(self.names) > 10 else ""
            raise MXNetCheckpointError(
                f"{self.source}: the zip has no {what} member ({looked_for}, as Module.load reads it); "
                f"it holds: {listed}{more}."
            )
        raise MXNetCheckpointError(
            f"{self.source}: the zip has {len(found)} {what} members ({', '.join(i.filename for i in found)}); "
            "a module checkpoint has one."
        )

    def read(self, info: zipfile.ZipInfo, limit: int) -> bytearray:
        """The member's bytes, after checking what it declares against `limit` and the file."""
        where = f"{self.source}: member {info.filename}"
        if info.flag_bits & 0x1:
            raise MXNetCheckpointError(f"{where} is encrypted.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise MXNetCheckpointError(
                f"{where} uses compression method {info.compress_type}; only stored (0) and deflated (8) are read."
            )
        if info.file_size > limit:
            raise MXNetCheckpointError(f"{where} declares {info.file_size:,} bytes, more than {limit:,}.")
        if info.header_offset + _LOCAL_HEADER_BYTES + info.compress_size > self.size:
            raise MXNetCheckpointError(
                f"{where} declares {info.compress_size:,} bytes at byte offset {info.header_offset:,}, past the end "
                f"of the {self.size:,}-byte zip."
            )
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise MXNetCheckpointError(
                f"{where} is stored but declares {info.compress_size:,} bytes stored for {info.file_size:,}."
            )
        if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 64:
            raise MXNetCheckpointError(
                f"{where} declares {info.file_size:,} bytes from {info.compress_size:,} compressed, more than "
                "deflate can expand them to."
            )
        content = bytearray(info.file_size)
        view = memoryview(content)
        done = 0
        try:
            with self.archive.open(info) as member:
                while done < info.file_size:
                    piece = member.read(min(_CHUNK, info.file_size - done))
                    if not piece:
                        break
                    view[done : done + len(piece)] = piece
                    done += len(piece)
                # Reading on to the end makes zipfile check the CRC; a longer member stops here.
                extra = member.read(1)
        except _ZIP_ERRORS as exc:
            raise MXNetCheckpointError(f"{where}: {exc}") from None
        if done != info.file_size or extra:
            longer = "more" if extra else f"only {done:,}"
            raise MXNetCheckpointError(f"{where} declares {info.file_size:,} bytes but holds {longer}.")
        return content

    def json(self, info: zipfile.ZipInfo) -> Any:
        content = self.read(info, MAX_JSON_BYTES)
        where = f"{self.source}: member {info.filename}"
        try:
            return json.loads(content.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise MXNetCheckpointError(f"{where} is not UTF-8 (byte {exc.start:,}).") from None
        except json.JSONDecodeError as exc:
            raise MXNetCheckpointError(
                f"{where} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from None
        except RecursionError:
            raise MXNetCheckpointError(f"{where} nests its JSON too deeply.") from None


def _check_symbol(symbol: Any, where: str) -> dict[str, Any]:
    """The graph, checked to be what head_ops() and nodes() can walk: nodes with an op, a name
    and inputs naming earlier nodes, heads naming nodes."""
    if not isinstance(symbol, dict) or not isinstance(symbol.get("nodes"), list):
        raise MXNetCheckpointError(f"{where}: not an MXNet symbol graph (no list of nodes).")
    nodes = symbol["nodes"]
    for index, node in enumerate(nodes):
        if not (
            isinstance(node, dict)
            and isinstance(node.get("op"), str)
            and isinstance(node.get("name"), str)
            and isinstance(node.get("inputs", []), list)
        ):
            raise MXNetCheckpointError(f"{where}: node {index} is not an object with an op, a name and inputs.")
        for entry in node.get("inputs", []):
            if not (_is_entry(entry) and entry[0] < index):
                raise MXNetCheckpointError(f"{where}: node {index} ({node['name']}) has the bad input {entry!r}.")
    heads = symbol.get("heads")
    if not isinstance(heads, list) or not heads or not all(_is_entry(h) and h[0] < len(nodes) for h in heads):
        raise MXNetCheckpointError(f"{where}: the graph's heads {heads!r} do not name its nodes.")
    return symbol


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) in (2, 3)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in entry)
    )


# --------------------------------------------------------------------------- writing


class SymbolGraph:
    """A graph in the JSON form `Symbol.tojson()` writes, built node by node: variables (op
    "null"; attrs such as "__shape__") and ops, each taking earlier nodes' first outputs."""

    def __init__(self) -> None:
        self._nodes: list[dict[str, Any]] = []

    def variable(self, name: str, attrs: dict[str, str] | None = None) -> int:
        return self._add({"op": "null", "name": name, **({"attrs": attrs} if attrs else {}), "inputs": []})

    def op(self, op: str, name: str, inputs: list[int], *, attrs: dict[str, str] | None = None) -> int:
        return self._add(
            {"op": op, "name": name, **({"attrs": attrs} if attrs else {}), "inputs": [[i, 0, 0] for i in inputs]}
        )

    def _add(self, node: dict[str, Any]) -> int:
        self._nodes.append(node)
        return len(self._nodes) - 1

    def to_json(self, head: int) -> dict[str, Any]:
        """The graph whose output is `head`'s."""
        return {
            "nodes": self._nodes,
            "arg_nodes": [i for i, node in enumerate(self._nodes) if node["op"] == "null"],
            "node_row_ptr": list(range(len(self._nodes) + 1)),  # every node here has one output
            "heads": [[head, 0, 0]],
            "attrs": {"mxnet_version": ["int", MXNET_VERSION]},
        }


def write_checkpoint_zip(checkpoint: MXNetCheckpoint) -> bytes:
    """The zip of `checkpoint`: its other JSON files, its graph and its parameters (the
    parameters as `mx.model.save_checkpoint` writes them, args then auxs), deflated, with fixed
    dates so that the same checkpoint is the same bytes."""
    params = {f"arg:{name}": array for name, array in checkpoint.arg_params.items()}
    params.update({f"aux:{name}": array for name, array in checkpoint.aux_params.items()})
    members = [
        *((name, _json_bytes(document)) for name, document in checkpoint.extras.items()),
        (checkpoint.symbol_file, _json_bytes(checkpoint.symbol)),
        (checkpoint.params_file, write_ndarrays(params)),
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def _json_bytes(document: Any) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")
