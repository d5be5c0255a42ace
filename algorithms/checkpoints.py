"""Checkpoints of a mini-batch algorithm's training state (the shared driver's, training.py).

A job with a checkpoint directory (checkpointconfig.json's LocalPath) gets, at the end of every
pass, the state as it stands then:

    <checkpoint_dir>/smalgo-state.<epochs done>/
        state.json      {"format", "algorithm", "epochs_done", "stopped", "hyperparameters",
                         "metadata" (the state's small values), "arrays": {name: {file, bytes, sha256}},
                         "callbacks" (each training callback's values, or null: early stopping's)}
        <name>.npy      one per array, np.save(..., allow_pickle=False)

Atomicity: the files are written into a temporary directory beside it (.smalgo-state.*.tmp),
each fsync'ed, the directory renamed to its final name, then the parent directory fsync'ed: a
kill at any moment leaves either the new checkpoint whole or none of it (a leftover temporary
directory, removed by the next job). The newest checkpoint and one older are kept.

Resume: the newest smalgo-state.<n> is read whole and checked (every file's size and SHA-256,
the algorithm, the hyperparameters) before the state is touched; anything wrong is a UserError
naming the file. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError, os_error_text

logger = logging.getLogger(__name__)

FORMAT = "smalgo-training-state-1"
PREFIX = "smalgo-state."
STATE_FILE = "state.json"
_TEMPORARY_PREFIX = "." + PREFIX
_NAME = re.compile(r"^smalgo-state\.(\d+)$")
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_]+$")
# Hyperparameters that may change between the interrupted job and the one that resumes it.
RESUMABLE_CHANGES = frozenset({"epochs"})

# A state's checkpoint: its arrays by name, and small JSON-able values.
StateArrays = dict[str, np.ndarray]
StateMetadata = dict[str, Any]
# One training callback's values in a checkpoint (TrainingCallback.checkpoint_values), or None.
CallbackValues = dict[str, Any] | None


class CheckpointMismatch(ValueError):
    """A checkpoint's array or value does not fit the state restoring it (raised by
    `restore_checkpoint`; the driver names the checkpoint)."""


class CheckpointCorrupt(CheckpointMismatch):
    """A checkpoint's file is unreadable, truncated or corrupt."""


def take_array(arrays: Mapping[str, np.ndarray], name: str, like: np.ndarray) -> np.ndarray:
    """arrays[name], checked to have `like`'s shape and dtype (a copy the state may own)."""
    if name not in arrays:
        raise CheckpointMismatch(f"it has no array {name!r}")
    array = arrays[name]
    if array.shape != like.shape or array.dtype != like.dtype:
        raise CheckpointMismatch(
            f"its array {name!r} is {array.dtype}{list(array.shape)}, "
            f"this job's state needs {like.dtype}{list(like.shape)}"
        )
    return np.array(array, copy=True)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back whole."""

    path: Path
    epochs_done: int
    stopped: bool
    arrays: StateArrays
    metadata: StateMetadata
    callbacks: list[CallbackValues]


def _comparable(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters as JSON would give them back."""
    return json.loads(json.dumps(dict(hp), sort_keys=True, default=str))


def _fsync(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateCheckpoints:
    """The checkpoints of one algorithm's training state in one directory."""

    def __init__(self, directory: Path, algorithm: str, hp: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.algorithm = algorithm
        self.hp = _comparable(hp)
        self.written: int | None = None  # the epochs_done of the last checkpoint this job wrote

    def existing(self) -> list[tuple[int, Path]]:
        """(epochs done, path) of every complete checkpoint, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            match = _NAME.match(entry.name)
            if match and entry.is_dir():
                found.append((int(match.group(1)), entry))
        return sorted(found, reverse=True)

    def remove_leftovers(self) -> None:
        """Temporary directories of a write that a kill interrupted: never a checkpoint."""
        if not self.directory.is_dir():
            return
        for entry in self.directory.iterdir():
            if entry.name.startswith(_TEMPORARY_PREFIX):
                logger.info("Removing %s, a checkpoint whose writing was interrupted.", entry)
                shutil.rmtree(entry, ignore_errors=True)

    def latest(self) -> Checkpoint | None:
        """The newest usable checkpoint, checked whole; None when there is none. One whose files
        are truncated or corrupt (a write or an upload that a kill cut short) is passed over, with
        a warning naming the file, for the next older; UserError naming the file when none is
        usable, and at once for one of another algorithm or other hyperparameters."""
        found = self.existing()
        if not found:
            return None
        refused = []
        for epochs_done, path in found:
            try:
                return self._read(path, epochs_done)
            except CheckpointCorrupt as exc:
                logger.warning("Not resuming from the checkpoint %s: %s.", path, exc)
                refused.append(f"{exc}")
            except CheckpointMismatch as exc:
                raise UserError(
                    f"Cannot resume from the checkpoint {exc}; remove {path} to train from the start."
                ) from None
        raise UserError(
            f"Cannot resume from the checkpoint {'; nor from '.join(refused)}; remove "
            f"{', '.join(str(path) for _, path in found)} to train from the start."
        )

    def _read(self, path: Path, epochs_done: int) -> Checkpoint:
        state_file = path / STATE_FILE
        try:
            header = json.loads(state_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise CheckpointCorrupt(f"{state_file}: it cannot be read ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointCorrupt(f"{state_file}: it is not an smalgo training state ({FORMAT})")
        if header.get("algorithm") != self.algorithm:
            raise CheckpointMismatch(
                f"{state_file}: it is a {header.get('algorithm')!r} state, and this job trains {self.algorithm!r}"
            )
        if header.get("epochs_done") != epochs_done:
            raise CheckpointCorrupt(
                f"{state_file}: it says epochs_done={header.get('epochs_done')!r}, not {epochs_done}"
            )
        theirs = header.get("hyperparameters")
        if not isinstance(theirs, dict):
            raise CheckpointCorrupt(f"{state_file}: it has no hyperparameters")
        changed = sorted(
            name
            for name in set(theirs) | set(self.hp)
            if name not in RESUMABLE_CHANGES and theirs.get(name) != self.hp.get(name)
        )
        if changed:
            described = ", ".join(f"{n}={theirs.get(n)!r} there, {self.hp.get(n)!r} here" for n in changed)
            raise CheckpointMismatch(
                f"{state_file}: it was written with other hyperparameters ({described}); only "
                f"{', '.join(sorted(RESUMABLE_CHANGES))} may change between a job and the one resuming it"
            )
        listed = header.get("arrays")
        metadata = header.get("metadata")
        callbacks = header.get("callbacks", [])
        if not isinstance(listed, dict) or not isinstance(metadata, dict):
            raise CheckpointCorrupt(f"{state_file}: it lists no arrays or metadata")
        if not (isinstance(callbacks, list) and all(v is None or isinstance(v, dict) for v in callbacks)):
            raise CheckpointCorrupt(f"{state_file}: its callbacks entry is not a list of objects")
        arrays: StateArrays = {}
        for name, entry in listed.items():
            if not (isinstance(name, str) and _ARRAY_NAME.match(name) and isinstance(entry, dict)):
                raise CheckpointCorrupt(f"{state_file}: its array entry {name!r} is not valid")
            array_file = path / f"{name}.npy"
            try:
                raw = array_file.read_bytes()
            except OSError as exc:
                raise CheckpointCorrupt(f"{array_file}: it cannot be read ({exc.strerror})") from None
            if len(raw) != entry.get("bytes") or hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
                raise CheckpointCorrupt(
                    f"{array_file}: it is truncated or corrupt "
                    f"(its size or SHA-256 is not the one {STATE_FILE} records)"
                )
            try:
                arrays[name] = np.load(array_file, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CheckpointCorrupt(f"{array_file}: it is not a NumPy array ({exc})") from None
        return Checkpoint(path, epochs_done, bool(header.get("stopped", False)), arrays, metadata, callbacks)

    def write(
        self,
        epochs_done: int,
        arrays: Mapping[str, np.ndarray],
        metadata: Mapping[str, Any],
        *,
        callbacks: Sequence[CallbackValues] = (),
        stopped: bool = False,
    ) -> Path:
        """Write the state after `epochs_done` passes atomically (and the training callbacks'
        values); keep it and one older. UserError naming the directory when it cannot be written
        (read-only, full)."""
        try:
            return self._write(epochs_done, arrays, metadata, callbacks=list(callbacks), stopped=stopped)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise UserError(
                f"Cannot write the checkpoint of the training state in {self.directory}: {os_error_text(exc)}{where}."
            ) from exc

    def _write(
        self,
        epochs_done: int,
        arrays: Mapping[str, np.ndarray],
        metadata: Mapping[str, Any],
        *,
        callbacks: list[CallbackValues],
        stopped: bool,
    ) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{PREFIX}{epochs_done}"
        temporary = Path(
            tempfile.mkdtemp(prefix=f"{_TEMPORARY_PREFIX}{epochs_done}.", suffix=".tmp", dir=self.directory)
        )
        try:
            listed = {}
            for name, array in arrays.items():
                assert _ARRAY_NAME.match(name), name
                array_file = temporary / f"{name}.npy"
                with array_file.open("wb") as out:
                    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
                    out.flush()
                    os.fsync(out.fileno())
                raw = array_file.read_bytes()
                listed[name] = {"file": array_file.name, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
            header = {
                "format": FORMAT,
                "algorithm": self.algorithm,
                "epochs_done": epochs_done,
                "stopped": stopped,
                "hyperparameters": self.hp,
                "metadata": dict(metadata),
                "arrays": listed,
                "callbacks": callbacks,
            }
            with (temporary / STATE_FILE).open("w", encoding="utf-8") as out:
                json.dump(header, out, sort_keys=True, indent=1)
                out.flush()
                os.fsync(out.fileno())
            _fsync(temporary, directory=True)
            if target.exists():  # the same epoch written again (a resumed job that stopped at once)
                shutil.rmtree(target)
            os.rename(temporary, target)
            _fsync(self.directory, directory=True)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        self.written = epochs_done
        for older, path in self.existing()[2:]:
            shutil.rmtree(path, ignore_errors=True)
            logger.debug("Removed the checkpoint %s (epoch %d): two newer ones are kept.", path, older)
        return target
