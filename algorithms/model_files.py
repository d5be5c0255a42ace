"""A model directory: `model.json` (metadata) beside one `.npy` file per array, never pickle.

Every model is saved by `save_model_files(dir, metadata, arrays)` and read back by
`ModelFiles.read(dir)`, which reads model.json once; the algorithm named in it then builds its
model from the metadata and the arrays (`Algorithm.load_model`). The server reads a model
directory the same way, so model.json is parsed once per load.

model.json holds at least "algorithm" (the registry name), "format_version" and "arrays" (array
name -> file name); the rest is the algorithm's.
"""

from __future__ import annotations

import json
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
            raise UserError(f"{path} holds no JSON object.")
        return cls(model_dir, metadata)

    def expect_algorithm(self, algorithm: str) -> None:
        """UserError unless this is a model of `algorithm` (a registry name)."""
        if self.algorithm != algorithm:
            raise UserError(f"{self.path} holds a {self.metadata.get('algorithm')!r} model, not a {algorithm} model.")

    def expect_format_version(self, format_version: int, title: str) -> None:
        """UserError unless the model's format is `format_version` (the one its algorithm, `title`,
        writes and reads)."""
        if self.metadata.get("format_version") != format_version:
            raise UserError(
                f"{self.path} has format version {self.metadata.get('format_version')!r}; "
                f"this version of smalgo reads {title} models of version {format_version}."
            )

    def has_array(self, name: str) -> bool:
        arrays = self.metadata.get("arrays")
        return isinstance(arrays, dict) and name in arrays

    def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The array saved under `name` (loaded without pickle); UserError naming the file when
        it is missing, unreadable or not of `shape`."""
        arrays = self.metadata.get("arrays")
        if not isinstance(arrays, dict) or not isinstance(arrays.get(name), str):
            raise UserError(f"{self.path} lists no {name!r} array.")
        path = self.directory / arrays[name]
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} cannot be read as a .npy array: {exc}") from None
        if shape is not None and array.shape != shape:
            raise UserError(f"{path} has shape {array.shape}; {METADATA_FILE} implies {shape}.")
        return array

    def integer(self, key: str) -> int:
        """A positive integer entry of model.json; UserError naming it otherwise."""
        value = self.metadata.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{self.path}: {key} must be a positive integer, not {value!r}.")
        return value
