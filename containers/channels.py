"""A training job's data channels: checked against the algorithm before any data is read, then
read as mini-batches in File or Pipe mode (the job layer's `TrainingData`).

File (and FastFile) mode: every regular file under input/data/<channel>/, at any depth, in sorted
order, except names beginning with '.' or '_' (hidden files, `_SUCCESS` markers and the like,
at any depth). Pipe mode: one FIFO input/data/<channel>_<pass> per pass, which SageMaker may
create only when the pass starts, so we wait for it.

A pass reads the channel's files one after another as one stream of rows, and cuts it into
batches of exactly `batch_size` rows (the last may be smaller) whatever the file boundaries, so a
model trained in File mode equals one trained in Pipe mode, where SageMaker concatenates the
files into the FIFO.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from smalgo.algorithms.batch import Batch, first_non_finite, non_finite_hint
from smalgo.algorithms.contract import Algorithm
from smalgo.algorithms.data import rebatch
from smalgo.algorithms.errors import UserError, os_error_text
from smalgo.algorithms.formats.content_types import ContentType, parse_content_type
from smalgo.algorithms.formats.csv import iter_csv_blocks
from smalgo.algorithms.formats.libsvm import decode_libsvm
from smalgo.algorithms.formats.parquet import read_parquet
from smalgo.recordio import RecordIOError
from smalgo.recordio import iter_batches as iter_recordio_batches

from .config import ChannelConfig
from .paths import JobPaths

logger = logging.getLogger(__name__)

INPUT_MODES = ("File", "FastFile", "Pipe")
PIPE_WAIT_VARIABLE = "SMALGO_PIPE_WAIT_SECONDS"
# SageMaker creates pass k's FIFO once pass k-1 has been read; its S3 download may take a while.
DEFAULT_PIPE_WAIT_SECONDS = 600.0
_PIPE_POLL_SECONDS = 0.05


def pipe_wait_setting(environ: Mapping[str, str] | None = None) -> float:
    """SMALGO_PIPE_WAIT_SECONDS (of `environ`, default os.environ): how long to wait for a pass's
    FIFO, a finite number of seconds >= 0; DEFAULT_PIPE_WAIT_SECONDS when unset or empty. Any
    other value is a UserError naming the variable."""
    env = os.environ if environ is None else environ
    text = env.get(PIPE_WAIT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_PIPE_WAIT_SECONDS
    try:
        seconds = float(text) if "_" not in text else math.nan
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UserError(
            f"{PIPE_WAIT_VARIABLE}={env[PIPE_WAIT_VARIABLE]!r} is not a waiting time; valid values: a finite "
            f"number of seconds >= 0 (unset means {DEFAULT_PIPE_WAIT_SECONDS:g})."
        )
    return seconds


@dataclass(frozen=True)
class Channel:
    """A channel that passed the checks: its decoded content type and where its data is."""

    name: str
    content_type: ContentType
    pipe_mode: bool
    paths: JobPaths
    files: tuple[Path, ...] = ()  # File mode only
    # A job of several hosts: (this host's rank, the number of hosts). A ShardedByS3Key channel
    # holds this host's share of the files already, and may hold none; a FullyReplicated one
    # holds every record on every host, of which this host takes every hosts-th row, from its
    # rank on, so that the hosts together read each row once.
    hosts: tuple[int, int] = (0, 1)
    sharded: bool = False

    @property
    def directory(self) -> Path:
        """File mode: where the channel's files are."""
        return self.paths.channel_dir(self.name)

    def pipe(self, epoch: int) -> Path:
        """Pipe mode: the FIFO of pass `epoch` (0-based)."""
        return self.paths.channel_pipe(self.name, epoch)

    def describe(self) -> str:
        where = (
            f"Pipe mode, one FIFO per pass: {self.pipe(0)}, {self.pipe(1).name}, ..."
            if self.pipe_mode
            else f"File mode, {len(self.files)} file(s) under {self.directory}"
        )
        return f"channel {self.name}: {self.content_type}, {where}"


def check_channels(
    algorithm: Algorithm,
    configs: dict[str, ChannelConfig],
    paths: JobPaths,
    *,
    hosts: tuple[int, int] = (0, 1),
) -> dict[str, Channel]:
    """Check inputdataconfig.json's channels against what `algorithm` reads, without reading any
    data: known channel names, required ones present, content types and input modes accepted,
    and in File mode a channel directory holding at least one data file (on one of several
    hosts (`hosts`: rank, count) a ShardedByS3Key channel may hold none)."""
    declared = algorithm.channels
    listing = ", ".join(f"{name} ({'required' if required else 'optional'})" for name, required in declared.items())
    unknown = sorted(set(configs) - set(declared))
    if unknown:
        raise UserError(
            f"Channel{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in inputdataconfig.json "
            f"{'are' if len(unknown) > 1 else 'is'} not read by {algorithm.name}; its channels are: {listing}."
        )
    missing = [name for name, required in declared.items() if required and name not in configs]
    if missing:
        raise UserError(
            f"Required channel {', '.join(missing)} is missing from inputdataconfig.json; "
            f"{algorithm.name} reads: {listing}."
        )
    channels = {}
    for name, config in configs.items():
        content_type = parse_content_type(
            config.content_type,
            algorithm.content_types,
            algorithm.default_content_type,
            channel=name,
            why=algorithm.content_types_note,
        )
        if config.input_mode not in INPUT_MODES:
            raise UserError(
                f"Channel {name}: TrainingInputMode {config.input_mode!r} is not one of {', '.join(INPUT_MODES)}."
            )
        pipe_mode = config.input_mode == "Pipe"
        if config.record_wrapper_type not in (None, "None"):
            raise UserError(
                f"Channel {name}: RecordWrapperType {config.record_wrapper_type!r} is not supported; "
                f"set it to None (for RecordIO-protobuf data, set ContentType "
                f"application/x-recordio-protobuf instead)."
            )
        if config.compression_type not in (None, "None") and not pipe_mode:
            # SageMaker decompresses only what it streams into a pipe.
            raise UserError(
                f"Channel {name}: CompressionType {config.compression_type!r} works only in Pipe mode; "
                f"in {config.input_mode} mode, store the data uncompressed."
            )
        sharded = hosts[1] > 1 and config.s3_distribution_type == "ShardedByS3Key"
        if pipe_mode:
            channel = Channel(name, content_type, True, paths, hosts=hosts, sharded=sharded)
        else:
            directory = paths.channel_dir(name)
            files = tuple(list_data_files(directory)) if directory.is_dir() else ()
            if sharded and not files:
                logger.info(
                    "Channel %s is ShardedByS3Key over %d hosts and this host's shard holds no files: "
                    "this host takes part without %s data.",
                    name,
                    hosts[1],
                    name,
                )
            elif not directory.is_dir():
                raise UserError(f"Channel {name} has no data: its directory {directory} does not exist.")
            elif not files:
                raise UserError(
                    f"Channel {name} has no data: {directory} holds no data files "
                    f"(names beginning with '.' or '_' are skipped)."
                )
            channel = Channel(name, content_type, False, paths, files, hosts=hosts, sharded=sharded)
        channels[name] = channel
        logger.info("Input %s", channel.describe())
    return channels


def list_data_files(directory: Path) -> list[Path]:
    """The regular files under `directory` at any depth, sorted by their path within it, skipping
    every file or folder whose name begins with '.' or '_'. Symbolic links are followed, to
    files and to folders (a link back to a folder that contains it is skipped with a warning,
    not followed around the cycle); a link whose target does not exist is a UserError naming
    it, and anything else that is not a regular file (a FIFO, a socket) is skipped with a
    warning."""
    found: list[Path] = []
    _collect(Path(directory), (os.path.realpath(directory),), found)
    return sorted(found, key=lambda p: p.relative_to(directory).parts)


def _collect(folder: Path, ancestors: tuple[str, ...], found: list[Path]) -> None:
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise UserError(f"Cannot list the data folder {folder}: {os_error_text(exc)}.") from exc
    for name in names:
        if name.startswith((".", "_")):
            continue
        path = folder / name
        if path.is_symlink() and not path.exists():
            raise UserError(
                f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                f"restore its target or remove the link."
            )
        if path.is_dir():
            real = os.path.realpath(path)
            if real in ancestors:
                logger.warning("Skipped %s: a symbolic link to %s, a folder that contains it (a cycle).", path, real)
                continue
            _collect(path, (*ancestors, real), found)
        elif path.is_file():
            found.append(path)
        else:
            logger.warning("Skipped %s: not a regular file, a folder or a link to one.", path)


class ChannelData:
    """`TrainingData` over the checked channels of a job (smalgo.algorithms.data.TrainingData)."""

    def __init__(
        self,
        channels: dict[str, Channel],
        *,
        finite_values_only: bool = True,
        pipe_wait_seconds: float | None = None,
        float32_only: bool = False,
    ):
        self.channels = channels
        self.finite_values_only = finite_values_only
        # RecordIO-protobuf: refuse Float64 and Int32 tensors (Algorithm.float32_tensors_only).
        self.float32_only = float32_only
        if pipe_wait_seconds is None:
            pipe_wait_seconds = pipe_wait_setting()
        self.pipe_wait_seconds = pipe_wait_seconds
        self.passes: dict[str, int] = {name: 0 for name in channels}

    def has_channel(self, channel: str) -> bool:
        return channel in self.channels

    def batches(self, channel: str, batch_size: int, *, feature_dim: int | None = None) -> Iterator[Batch]:
        if channel not in self.channels:
            raise UserError(f"No data channel named {channel!r}; this job has: {', '.join(sorted(self.channels))}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        # Counted at the call, not when iteration starts: the k-th call is pass k, FIFO <channel>_<k>.
        epoch = self.passes[channel]
        self.passes[channel] += 1
        return self._one_pass(self.channels[channel], epoch, batch_size=batch_size, feature_dim=feature_dim)

    def _one_pass(self, channel: Channel, epoch: int, *, batch_size: int, feature_dim: int | None) -> Iterator[Batch]:
        rows = 0
        pieces = self._decode(channel, epoch, batch_size=batch_size, feature_dim=feature_dim)
        rank, hosts = channel.hosts
        if hosts > 1 and not channel.sharded:
            pieces = _every_nth_row(pieces, start=rank, step=hosts)
        for X, y, w in rebatch(pieces, batch_size):
            rows += X.shape[0]
            yield Batch(X, y, w)
        where = f"pipe {channel.pipe(epoch).name}" if channel.pipe_mode else f"{len(channel.files)} file(s)"
        if hosts > 1:
            where += (
                ", this host's shard (ShardedByS3Key)"
                if channel.sharded
                else f", this host's rows of {hosts} (FullyReplicated: rows {rank}, {rank + hosts}, ...)"
            )
        logger.info("Channel %s, pass %d: %s, %d records", channel.name, epoch + 1, where, rows)
        if rows == 0 and hosts > 1:
            # The job's hosts together may still have rows: the training driver checks the total.
            logger.info(
                "Channel %s: this host has no records in pass %d; it takes part without them.", channel.name, epoch + 1
            )
        elif rows == 0:
            if channel.pipe_mode:
                where = f"its pipe {channel.pipe(epoch)} delivered no records (pass {epoch + 1})"
            else:
                where = f"the {len(channel.files)} file(s) under {channel.directory} hold no records"
            raise UserError(f"Channel {channel.name} has no data: {where}.")

    def _sources(self, channel: Channel, epoch: int) -> Iterator[tuple[Path | BinaryIO, str]]:
        """(source, name for errors) for each file of one pass, in order; a pipe is opened here."""
        if not channel.pipe_mode:
            for path in channel.files:
                yield path, str(path)
            return
        pipe = channel.pipe(epoch)
        _wait_for(pipe, timeout=self.pipe_wait_seconds, channel=channel.name, epoch=epoch)
        try:
            stream = open(pipe, "rb", buffering=0)  # noqa: SIM115 (closed below, after the pass)
        except OSError as exc:
            raise UserError(
                f"Channel {channel.name} is in Pipe mode, but its pipe {pipe} for pass {epoch + 1} cannot "
                f"be opened: {os_error_text(exc)}."
            ) from exc
        with stream:
            yield stream, str(pipe)

    def _decode(
        self, channel: Channel, epoch: int, *, batch_size: int, feature_dim: int | None
    ) -> Iterator[tuple[np.ndarray | sp.csr_matrix, np.ndarray | None, np.ndarray | None]]:
        """(X, y, w) pieces of one pass, checked: every piece as wide as the channel (feature_dim
        when given, else the width of the first piece), labelled like the first, finite. LIBSVM
        pieces are as wide as their largest index + 1, so they are only checked against
        feature_dim (the pieces are widened to the widest when stacked)."""
        width = feature_dim
        width_source = f"hyperparameter feature_dim={feature_dim}"
        labelled: bool | None = None
        width_from_data = channel.content_type.is_libsvm
        for source, name in self._sources(channel, epoch):
            pieces = _pieces(
                channel,
                source,
                name=name,
                batch_size=batch_size,
                feature_dim=feature_dim,
                width=width,
                width_source=width_source,
                float32_only=self.float32_only,
            )
            first_record = 0
            for X, y, w in _named_os_errors(pieces, name=name, channel=channel.name):
                if width_from_data:
                    if feature_dim is not None and X.shape[1] > feature_dim:
                        raise UserError(
                            f"{name}: records {first_record} to {first_record + X.shape[0] - 1} have feature "
                            f"index {X.shape[1] - 1}, beyond the {feature_dim} features of {width_source}."
                        )
                elif width is None:
                    width, width_source = X.shape[1], f"the width of {name}, the first data of channel {channel.name}"
                elif X.shape[1] != width:
                    raise UserError(
                        f"{name}: records {first_record} to {first_record + X.shape[0] - 1} have "
                        f"{X.shape[1]} features, expected {width} ({width_source})."
                    )
                if labelled is None:
                    labelled = y is not None
                elif labelled != (y is not None):
                    raise UserError(
                        f"Channel {channel.name}: {name} has records {'without' if labelled else 'with'} labels, "
                        f"but the channel's earlier records {'have' if labelled else 'have no'} labels; "
                        f"all files of a channel must agree."
                    )
                if self.finite_values_only:
                    _check_finite(X, name=name, first_record=first_record, content_type=channel.content_type)
                first_record += X.shape[0]
                yield X, y, w


def _every_nth_row(pieces, *, start: int, step: int):
    """The rows start, start + step, start + 2 step, ... of a stream of (X, y, w) pieces."""
    offset = 0  # rows of the stream before this piece
    for X, y, w in pieces:
        first = (start - offset) % step
        offset += X.shape[0]
        if first < X.shape[0]:
            yield X[first::step], None if y is None else y[first::step], None if w is None else w[first::step]


def _pieces(
    channel: Channel,
    source,
    *,
    name: str,
    batch_size: int,
    feature_dim: int | None,
    width: int | None,
    width_source: str,
    float32_only: bool = False,
):
    """The (X, y, w) pieces of one file or pipe, by the channel's content type (w: LIBSVM's
    `label:weight`; None for the others, whose weights, if any, are a column the algorithm
    reads: XGBoost's csv_weights)."""
    content_type = channel.content_type
    if content_type.is_csv:
        for X, y in iter_csv_blocks(
            source, content_type.label_size or 0, width, name=name, feature_dim_source=width_source
        ):
            yield X, y, None
    elif content_type.is_libsvm:
        # A LIBSVM file is decoded whole: its width is its largest index, known only at its end.
        yield decode_libsvm(_read_all(source), name=name)
    elif content_type.is_parquet:
        X, y = read_parquet(source if isinstance(source, Path) else _read_all(source), name=name)
        yield X, y, None
    else:
        for X, y in _recordio_pieces(
            source, batch_size=batch_size, feature_dim=feature_dim, channel=channel.name, float32_only=float32_only
        ):
            yield X, y, None


def _read_all(source: Path | BinaryIO) -> bytes:
    if isinstance(source, Path):
        return source.read_bytes()
    return source.read()


def _named_os_errors(pieces, *, name: str, channel: str):
    """`pieces`, with an OSError while reading them (a file that cannot be opened or read) turned
    into a UserError naming the file and the OS error."""
    try:
        yield from pieces
    except OSError as exc:
        raise UserError(f"Channel {channel}: cannot read {name}: {os_error_text(exc)}.") from exc


def _recordio_pieces(source, *, batch_size: int, feature_dim: int | None, channel: str, float32_only: bool):
    try:
        yield from iter_recordio_batches(source, batch_size, feature_dim=feature_dim, float32_only=float32_only)
    except RecordIOError as exc:
        # The message already names the file, the record and its byte offset.
        raise UserError(f"Channel {channel}: {exc}") from exc


def _wait_for(pipe: Path, *, timeout: float, channel: str, epoch: int) -> None:
    deadline = time.monotonic() + timeout
    while not pipe.exists():
        if time.monotonic() >= deadline:
            raise UserError(
                f"Channel {channel} is in Pipe mode, but its pipe {pipe} for pass {epoch + 1} did not "
                f"appear within {timeout:g} s."
            )
        time.sleep(_PIPE_POLL_SECONDS)


def _check_finite(X, *, name: str, first_record: int, content_type: ContentType) -> None:
    """UserError naming the first NaN or infinite feature value of a piece. The CSV decoder
    reads `nan`, `inf` and out-of-range numbers such as 1e39 (as inf), as numpy.loadtxt does,
    and RecordIO carries any float; k-means and PCA have no meaning for them and failed deep
    inside as internal errors. An algorithm that reads NaN as a missing value (XGBoost) declares
    finite_values_only = False and skips this check. The server refuses the same values
    (`first_non_finite` is shared)."""
    found = first_non_finite(X)
    if found is None:
        return
    row, column, value = found
    record = first_record + row
    if content_type.is_csv:
        where = (
            f"{name}, data row {record + 1} (blank lines not counted), "
            f"column {column + 1 + (content_type.label_size or 0)}"
        )
    else:
        where = f"{name}: record {record}, feature {column}"
    raise UserError(
        f"{where}: {np.float32(value)} is not a finite number{non_finite_hint(value)}; "
        "training data must hold finite numbers."
    )
