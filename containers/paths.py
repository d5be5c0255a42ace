"""Where a SageMaker training job keeps things (spec/sagemaker-contract.md 1.2).

Everything hangs off one base directory: `/opt/ml` in a SageMaker container, or whatever
`SAGEMAKER_BASE_DIR` says (the variable the SageMaker training toolkit honours), or the directory
the local CLI laid a job out in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from smalgo.algorithms.errors import UserError

DEFAULT_BASE_DIR = "/opt/ml"
BASE_DIR_VARIABLE = "SAGEMAKER_BASE_DIR"


@dataclass(frozen=True)
class JobPaths:
    """The paths of one job under `base`."""

    base: Path
    config_dir: Path = field(init=False)
    hyperparameters_file: Path = field(init=False)
    inputdataconfig_file: Path = field(init=False)
    resourceconfig_file: Path = field(init=False)
    checkpointconfig_file: Path = field(init=False)
    default_checkpoint_dir: Path = field(init=False)
    data_dir: Path = field(init=False)
    model_dir: Path = field(init=False)
    output_dir: Path = field(init=False)
    output_data_dir: Path = field(init=False)
    failure_file: Path = field(init=False)
    success_file: Path = field(init=False)

    def __post_init__(self) -> None:
        base = Path(self.base)
        config, output = base / "input" / "config", base / "output"
        paths = {
            "base": base,
            "config_dir": config,
            "hyperparameters_file": config / "hyperparameters.json",
            "inputdataconfig_file": config / "inputdataconfig.json",
            "resourceconfig_file": config / "resourceconfig.json",
            "checkpointconfig_file": config / "checkpointconfig.json",
            # Where SageMaker syncs checkpoints when CheckpointConfig gives no LocalPath (spec 1.10).
            "default_checkpoint_dir": base / "checkpoints",
            "data_dir": base / "input" / "data",
            "model_dir": base / "model",
            "output_dir": output,
            "output_data_dir": output / "data",
            "failure_file": output / "failure",
            "success_file": output / "success",
        }
        for name, path in paths.items():
            object.__setattr__(self, name, path)  # a frozen dataclass sets its fields this way

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> JobPaths:
        """The job under $SAGEMAKER_BASE_DIR, else /opt/ml. A set value that names no existing
        directory is a UserError naming the variable (the job could not even write its failure
        file there)."""
        env = os.environ if environ is None else environ
        value = env.get(BASE_DIR_VARIABLE, "")
        if not value:
            return cls(Path(DEFAULT_BASE_DIR))
        if not Path(value).is_dir():
            why = "does not exist" if not os.path.lexists(value) else "is not a directory"
            raise UserError(
                f"{BASE_DIR_VARIABLE}={value!r} {why}; it must name the directory that holds the job's "
                f"input/, model/ and output/ (unset means {DEFAULT_BASE_DIR})."
            )
        return cls(Path(value))

    def channel_dir(self, channel: str) -> Path:
        """File (and FastFile) mode: the channel's files live under this directory."""
        return self.data_dir / channel

    def channel_pipe(self, channel: str, epoch: int) -> Path:
        """Pipe mode: the FIFO that carries pass `epoch` (0-based) over the channel."""
        return self.data_dir / f"{channel}_{epoch}"
