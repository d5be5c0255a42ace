"""Laying out a SageMaker-style training job in a local directory, so that `smalgo train` on a
laptop runs exactly the code path a SageMaker container runs, with SAGEMAKER_BASE_DIR=DIR:

    DIR/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json
    DIR/input/data/<channel>/...   (symbolic links to the user's files; nothing is copied)
                                   (a Pipe-mode channel gets no files: its FIFOs are fed by the
                                   caller, e.g. with pipe_feeder.PipeFeeder)
    DIR/model/  DIR/output/
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from smalgo.algorithms.errors import UserError

from .config import LOCAL_HOST
from .paths import JobPaths

# Marks a directory as laid out by us, so that a second run may clear it and nothing else is.
MARKER = ".smalgo-local-job"


def lay_out_job(
    directory: Path,
    *,
    hyperparameters: dict[str, str],
    channels: dict[str, Path],
    content_type: str | None,
    pipe_channels: tuple[str, ...] = (),
) -> JobPaths:
    """Write a job under `directory` (created if needed; a directory of an earlier local job is
    cleared first). `channels` maps a channel name to a file or a directory of files, in File
    mode; `pipe_channels` names channels in Pipe mode."""
    directory = directory.resolve()
    _prepare(directory)
    paths = JobPaths(directory)
    paths.config_dir.mkdir(parents=True)
    paths.data_dir.mkdir(parents=True)
    paths.model_dir.mkdir()
    paths.output_dir.mkdir()

    channel_settings = {}
    for name, source in channels.items():
        source = source.resolve()
        if not source.exists():
            raise UserError(f"--{name} {source}: no such file or directory.")
        if source.is_dir():
            # The channel directory is the user's directory itself, so its sub-folders keep working.
            paths.channel_dir(name).symlink_to(source, target_is_directory=True)
        else:
            paths.channel_dir(name).mkdir()
            (paths.channel_dir(name) / source.name).symlink_to(source)
        channel_settings[name] = _channel_settings("File", content_type)
    for name in pipe_channels:
        channel_settings[name] = _channel_settings("Pipe", content_type)

    _write_json(paths.hyperparameters_file, hyperparameters)
    _write_json(paths.inputdataconfig_file, channel_settings)
    _write_json(
        paths.resourceconfig_file, {"current_host": LOCAL_HOST, "hosts": [LOCAL_HOST], "network_interface_name": "eth0"}
    )
    return paths


def _channel_settings(input_mode: str, content_type: str | None) -> dict[str, str]:
    settings = {"TrainingInputMode": input_mode, "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    if content_type:
        settings["ContentType"] = content_type
    return settings


def _prepare(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise UserError(
                f"--output {directory} is a directory that is not empty and was not made by smalgo train; "
                f"pick a new or empty directory."
            )
        for part in ("input", "model", "output"):
            target = directory / part
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("Laid out by `smalgo train`; a later run with the same --output replaces it.\n")


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
