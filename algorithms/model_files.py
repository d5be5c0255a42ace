"""A model directory's metadata: model.json beside the .npy arrays (never pickle).

Every algorithm writes `model.json` with at least "algorithm" (its registry name) and
"format_version"; the server reads "algorithm" to pick the module that loads the rest.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from .errors import UserError

METADATA_FILE = "model.json"


def write_metadata(model_dir: pathlib.Path, meta: dict[str, Any]) -> None:
    (pathlib.Path(model_dir) / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def read_metadata(model_dir: pathlib.Path, algorithm: str, format_version: int, title: str) -> dict[str, Any]:
    """model.json of a `title` model (e.g. "k-means") written by `algorithm` in
    `format_version`; a UserError naming the file for anything else."""
    meta_path = pathlib.Path(model_dir) / METADATA_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise UserError(f"No {title} model in {model_dir}: {METADATA_FILE} is missing.") from None
    except ValueError as exc:
        raise UserError(f"{meta_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("algorithm") != algorithm:
        found = meta.get("algorithm") if isinstance(meta, dict) else None
        raise UserError(f"{meta_path} holds a {found!r} model, not a {algorithm} model.")
    if meta.get("format_version") != format_version:
        raise UserError(f"{meta_path} has format version {meta.get('format_version')!r}; "
                        f"this version of smalgo reads version {format_version}.")
    return meta


def load_array(model_dir: pathlib.Path, name: str) -> np.ndarray:
    return np.load(pathlib.Path(model_dir) / name, allow_pickle=False)
