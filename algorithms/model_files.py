"""A model directory: `model.json` (metadata) beside one `.npy` file per array, never pickle.

Every model is saved by `save_model_files(dir, metadata, arrays)` and read back by
`ModelFiles.read(dir)`, which reads model.json once; the algorithm named in it then builds its
model from the metadata and the arrays (`Algorithm.load_model`). The server reads a model
directory the same way, so model.json is parsed once per load.

model.json holds at least "algorithm" (the registry name), "format_version" and "arrays" (array
name -> file name); the rest is the algorithm's. Algorithms read it only through the typed
accessors (`integer`, `mapping`, `array`), so a damaged model (a list where a map belongs, a null
count, a truncated or pickled .npy, an array of complex numbers, strings, NaN or infinities) is a
UserError naming the file and the field, and `smalgo serve` refuses it in one line at start.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

METADATA_FILE = "model.json"


def save_model_files(model_dir: Path, metadata: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write `arrays` as <name>.npy and `metadata` (with "arrays" added) as model.json."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, array in arrays.items():
        files[name] = f"{name}.npy"
        np.save(model_dir / files[name], array, allow_pickle=False)
    document = dict(metadata, arrays=files)
    (model_dir / METADATA_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))


@dataclass(frozen=True)
class ModelFiles:
    """A model directory whose model.json has been read."""

    directory: Path
    metadata: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.directory / METADATA_FILE

    @property
    def algorithm(self) -> str:
        """The registry name model.json gives (lower-cased), or "" when it names none."""
        name = self.metadata.get("algorithm")
        return name.strip().lower() if isinstance(name, str) else ""

    @classmethod
    def read(cls, model_dir: Path) -> ModelFiles:
        """Read model.json; UserError naming the directory or file when it is missing, is not
        JSON or is not a JSON object."""
        model_dir = Path(model_dir)
        path = model_dir / METADATA_FILE
        if not model_dir.is_dir():
            raise UserError(f"Model directory {model_dir} does not exist: the model is missing.")
        try:
            metadata = json.loads(path.read_text())
        except FileNotFoundError:
            present = sorted(p.name for p in model_dir.iterdir())[:10]
            raise UserError(
                f"No smalgo model in {model_dir}: {METADATA_FILE} is missing (the directory holds: "
                f"{', '.join(present) or 'nothing'})."
            ) from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} cannot be read as JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise UserError(f"{path} holds {_describe(metadata)}, not a JSON object.")
        return cls(model_dir, metadata)

    def expect_algorithm(self, algorithm: str) -> None:
        """UserError unless this is a model of `algorithm` (a registry name)."""
        if self.algorithm != algorithm:
            raise UserError(f"{self.path} holds a {self.metadata.get('algorithm')!r} model, not a {algorithm} model.")

    def expect_format_version(self, format_version: int, title: str) -> None:
        """UserError unless the model's format is `format_version` (the one its algorithm, `title`,
        writes and reads)."""
        value = self.metadata.get("format_version")
        if isinstance(value, bool) or value != format_version:
            raise UserError(
                f'{self.path}: "format_version" is {_json(value)}; '
                f"this version of smalgo reads {title} models of version {format_version}."
            )

    def _arrays(self) -> dict[str, Any]:
        """model.json's "arrays" map (array name -> file name); {} when it has none."""
        arrays = self.metadata.get("arrays", {})
        if not isinstance(arrays, dict):
            raise UserError(
                f'{self.path}: "arrays" must be a JSON object (array name -> .npy file name), not {_describe(arrays)}.'
            )
        return arrays

    def has_array(self, name: str) -> bool:
        """Whether model.json lists an array `name` (UserError when its "arrays" is no map)."""
        return name in self._arrays()

    def array(self, name: str, shape: tuple[int, ...] | None = None, *, finite: bool = True) -> np.ndarray:
        """The array saved under `name`, loaded without pickle; UserError naming the file when it
        is missing, truncated or not a plain .npy array, holds anything but real numbers (complex
        numbers, strings, objects), holds NaN or infinities (unless not `finite`), or is not of
        `shape`."""
        arrays = self._arrays()
        if name not in arrays:
            raise UserError(f"{self.path} lists no {name!r} array.")
        file_name = arrays[name]
        if not isinstance(file_name, str) or not file_name or Path(file_name).name != file_name:
            raise UserError(
                f'{self.path}: "arrays"."{name}" must be the name of a .npy file in {self.directory}, '
                f"not {_json(file_name)}."
            )
        path = self.directory / file_name
        array = _read_npy(path)
        if array.dtype.kind not in _REAL_KINDS:
            what = _KIND_NAMES.get(array.dtype.kind, f"{array.dtype} values")
            raise UserError(f"{path} holds {what}; a smalgo model's arrays hold real numbers only.")
        if shape is not None and array.shape != shape:
            raise UserError(f"{path} has shape {array.shape}; {METADATA_FILE} implies {shape}.")
        if array.dtype.kind == "f" and finite:
            bad = ~np.isfinite(array)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise UserError(
                    f"{path} holds NaN or infinite values ({int(bad.sum())} of {array.size}, the first at "
                    f"index {first}); a smalgo model's arrays hold finite numbers only."
                )
        return array

    def integer(self, key: str) -> int:
        """A positive integer entry of model.json; UserError naming it otherwise."""
        value = self.metadata.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f'{self.path}: "{key}" must be a positive integer, not {_json(value)}.')
        return value

    def number(self, key: str) -> float:
        """A finite number entry of model.json; UserError naming it otherwise."""
        value = self.metadata.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f'{self.path}: "{key}" must be a finite number, not {_json(value)}.')
        return float(value)

    def mapping(self, key: str) -> dict[str, Any]:
        """An optional JSON-object entry of model.json ({} when absent); UserError naming it when
        it is anything else (a list, a string, null)."""
        if key not in self.metadata:
            return {}
        value = self.metadata[key]
        if not isinstance(value, dict):
            raise UserError(f'{self.path}: "{key}" must be a JSON object, not {_describe(value)}.')
        return value


# dtype kinds of real numbers: signed and unsigned integers, floats.
_REAL_KINDS = "iuf"
_KIND_NAMES = {
    "b": "booleans",
    "c": "complex numbers",
    "S": "bytes",
    "U": "strings",
    "V": "structured records",
    "M": "dates",
    "m": "time spans",
    "O": "Python objects",
}


def _read_npy(path: Path) -> np.ndarray:
    """The plain array in the .npy file `path`; UserError naming the file (never pickle, and never
    numpy's advice to allow it)."""
    try:
        with path.open("rb") as fp:
            if fp.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                raise UserError(f"{path} is not a .npy file (it does not start with the .npy signature).")
            fp.seek(0)
            try:
                array = np.lib.format.read_array(fp, allow_pickle=False)
            except (ValueError, EOFError) as exc:
                if "pickle" in str(exc).lower():
                    raise UserError(
                        f"{path} is not a plain numeric .npy array (it would need pickle, which smalgo never loads)."
                    ) from None
                raise UserError(f"{path} is truncated or damaged: {_one_line(str(exc))}") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read as a .npy array: {exc.strerror or exc}") from None
    if not isinstance(array, np.ndarray):
        raise UserError(f"{path} is not a plain numeric .npy array.")
    return array


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _json(value: Any) -> str:
    """`value` as model.json spells it (null, true, [1, 2]), cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: Any) -> str:
    """What a JSON value is, for a message: 'null', 'a list ([1, 2])', 'a string ("x")'."""
    if value is None:
        return "null"
    kind = {list: "a list", str: "a string", bool: "a boolean", dict: "an object"}.get(type(value))
    if kind is None:
        kind = "a number"
    return f"{kind} ({_json(value)})"
