"""Where a SageMaker training job keeps things (spec/sagemaker-contract.md 1.2).

Everything hangs off one base directory: `/opt/ml` in a SageMaker container, or whatever
`SAGEMAKER_BASE_DIR` says (the variable the SageMaker training toolkit honours; the local CLI sets
it to its job directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_DIR = "/opt/ml"
BASE_DIR_VARIABLE = "SAGEMAKER_BASE_DIR"


@dataclass(frozen=True)
class JobPaths:
    base: Path

    @classmethod
    def from_environment(cls) -> "JobPaths":
        return cls(Path(os.environ.get(BASE_DIR_VARIABLE) or DEFAULT_BASE_DIR))

    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def inputdataconfig_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def resourceconfig_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def checkpointconfig_file(self) -> Path:
        return self.config_dir / "checkpointconfig.json"

    @property
    def data_dir(self) -> Path:
        return self.base / "input" / "data"

    def channel_dir(self, channel: str) -> Path:
        """File (and FastFile) mode: the channel's files live under this directory."""
        return self.data_dir / channel

    def channel_pipe(self, channel: str, epoch: int) -> Path:
        """Pipe mode: the FIFO that carries pass `epoch` (0-based) over the channel."""
        return self.data_dir / f"{channel}_{epoch}"

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def success_file(self) -> Path:
        return self.output_dir / "success"
