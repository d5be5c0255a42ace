"""Models that AWS's built-in images write, and ours in their form.

AWS's images save a model as `model_algo-1` (inside the job's `model.tar.gz`): an MXNet NDArray
file (formats/mxnet_ndarray.py) whose layout is the algorithm's own (k-means: a list holding the
centers; PCA: a dict of mean, v and s), or a zip of an MXNet module checkpoint
(formats/mxnet_checkpoint.py: linear learner's fc0_weight and fc0_bias; factorization machines'
w0_weight, w1_weight and v). Each algorithm says whether a set of arrays (or a checkpoint) is
its layout and how it becomes its model (`Algorithm.from_aws_arrays`, `from_aws_checkpoint`) and
back (`to_aws_arrays`, `to_aws_checkpoint`); this module finds the file in a model directory or
archive, tells by its content and parameters which algorithm wrote it, and writes ours back as
AWS's image would read it.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from .contract import Algorithm, Model
from .errors import UserError
from .formats.mxnet_checkpoint import is_checkpoint_zip, read_checkpoint_zip, write_checkpoint_zip
from .formats.mxnet_ndarray import MXNetFileError, read_ndarrays, write_ndarrays
from .registry import ALGORITHMS

AWS_MODEL_FILE = "model_algo-1"
AWS_ARCHIVE = "model.tar.gz"
# The largest model_algo-1 taken out of an archive (its header says its size before it is read).
MAX_MODEL_BYTES = 4 << 30


def aws_model_path(model_dir: Path) -> Path | None:
    """AWS's model in `model_dir`: its model_algo-1, else its model.tar.gz, else None."""
    model_dir = Path(model_dir)
    return next((model_dir / name for name in (AWS_MODEL_FILE, AWS_ARCHIVE) if (model_dir / name).is_file()), None)


def holds_aws_model(model_dir: Path) -> bool:
    """Whether `model_dir` has AWS's model_algo-1 or a model.tar.gz."""
    return aws_model_path(model_dir) is not None


def read_aws_model_file(path: Path) -> tuple[bytes, str]:
    """(the bytes of model_algo-1, a name for it in messages). `path`: model_algo-1 itself, an
    archive holding it at its top (model.tar.gz, as a user downloads it from S3), or a directory
    holding either."""
    path = Path(path)
    if path.is_dir():
        found = aws_model_path(path)
        if found is None:
            raise UserError(f"{path} holds neither {AWS_MODEL_FILE} nor {AWS_ARCHIVE}.")
        path = found
    if not path.is_file():
        raise UserError(f"{path} does not exist.")
    if not tarfile.is_tarfile(path):
        return path.read_bytes(), str(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and m.name.lstrip("./") == AWS_MODEL_FILE), None)
            if member is None:
                names = ", ".join(m.name for m in tar.getmembers()[:10]) or "nothing"
                raise UserError(f"{path} holds no {AWS_MODEL_FILE} at its top (it holds: {names}).")
            if member.size > MAX_MODEL_BYTES:
                raise UserError(f"{path}: {AWS_MODEL_FILE} is {member.size:,} bytes, more than a model can be.")
            extracted = tar.extractfile(member)
            assert extracted is not None  # a regular file
            return extracted.read(), f"{path}:{member.name}"
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{path} cannot be read as a tar archive: {exc}") from None


def load_aws_model(path: Path, expected_algorithm: str | None = None) -> tuple[Algorithm, Model]:
    """The algorithm that wrote the AWS model at `path` (as read_aws_model_file takes it) and the
    model as ours. With `expected_algorithm` (an image's), only that one is tried. UserError
    naming the file for what no algorithm here reads."""
    data, source = read_aws_model_file(path)
    candidates = [ALGORITHMS[expected_algorithm]] if expected_algorithm in ALGORITHMS else list(ALGORITHMS.values())
    if is_checkpoint_zip(data):
        return _load_aws_checkpoint(data, source, candidates)
    try:
        arrays = read_ndarrays(data, source=source)
    except MXNetFileError as exc:
        raise UserError(str(exc)) from None
    for algorithm in candidates:
        model = algorithm.from_aws_arrays(arrays, source=source)
        if model is not None:
            return algorithm, model
    if isinstance(arrays, dict):
        layout = "a dict of " + ", ".join(f"{name} {array.shape}" for name, array in arrays.items())
    else:
        layout = f"a list of {len(arrays)} array(s) of shapes " + ", ".join(str(a.shape) for a in arrays)
    readers = [a.title for a in candidates if type(a).from_aws_arrays is not Algorithm.from_aws_arrays]
    wanted = " or ".join(readers) or candidates[0].title
    raise UserError(f"{source} holds {layout}, which is not the layout of an AWS {wanted} model.")


def _load_aws_checkpoint(data: bytes, source: str, candidates: list[Algorithm]) -> tuple[Algorithm, Model]:
    """A model_algo-1 that is a zip: the algorithm whose parameters the checkpoint holds."""
    try:
        checkpoint = read_checkpoint_zip(data, source=source)
    except MXNetFileError as exc:
        raise UserError(str(exc)) from None
    for algorithm in candidates:
        model = algorithm.from_aws_checkpoint(checkpoint, source=source)
        if model is not None:
            return algorithm, model
    readers = [a.title for a in candidates if type(a).from_aws_checkpoint is not Algorithm.from_aws_checkpoint]
    wanted = " or ".join(readers) or candidates[0].title
    raise UserError(
        f"{source} is an MXNet module checkpoint whose parameters are {checkpoint.describe()}, which are not "
        f"those of an AWS {wanted} model."
    )


def save_aws_model(algorithm: Algorithm, model: Model, out_dir: Path) -> None:
    """Write `model` as AWS's image of `algorithm` saves it: model_algo-1 (an NDArray file, or a
    module-checkpoint zip for the algorithms that save one), and model.tar.gz holding it (what a
    SageMaker model's ModelDataUrl points to)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if type(algorithm).to_aws_checkpoint is not Algorithm.to_aws_checkpoint:
        data = write_checkpoint_zip(algorithm.to_aws_checkpoint(model))
    else:
        data = write_ndarrays(algorithm.to_aws_arrays(model))
    (out_dir / AWS_MODEL_FILE).write_bytes(data)
    with tarfile.open(out_dir / AWS_ARCHIVE, "w:gz") as tar:
        info = tarfile.TarInfo(AWS_MODEL_FILE)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
