"""The contract every algorithm satisfies, and the facts it declares about itself.

An algorithm is one subpackage of `smalgo.algorithms` whose `__init__` makes one `Algorithm`
object, listed once in `registry.py`. Everything specific to it is declared on that object, so
that the job layer, the server, the images, the cache warm-up and the tests iterate over the
registry instead of keeping maps of their own:

    name, title              registry name ("kmeans"), as people write it ("k-means")
    hyperparameters          the declarative Schema (hyperparameters.py)
    channels                 channel name -> required
    content_types            accepted training content types; default_content_type when unset
    outputs                  the named arrays predict() returns, and whether each is a vector
    json_response_key        the list's key in an application/json answer ("predictions")
    model_files              the files a saved model consists of
    from_aws_arrays          its model from AWS's built-in image's model_algo-1, if it reads one
    from_aws_checkpoint      the same, for images whose model_algo-1 is a module-checkpoint zip
    finite_values_only       whether NaN and infinities in training data are refused
    float32_tensors_only     whether RecordIO training data must hold Float32 tensors only
    content_types_note       why only those content types, for the refusal of another
    has_gpu_path             whether some of its kernels run on a GPU (runtime/device.py)
    sample_job               a small job that exercises it (warm-up, image checks, demo, tests)
    native_model_files       models in its own file format, without model.json (XGBoost)
    fewer_request_features   how many fewer features than the model a CSV/RecordIO request may have
    resumes_from_checkpoints whether train() takes the job's checkpoint directory
    state_checkpoints        whether the driver checkpoints its StreamingState (and on several hosts)
    csv_vectors_quoted       whether CSV answers write a vector as one quoted "[a, b]" cell
    empty_request_no_content whether an empty request body is answered 204 (else 400)
    metric_definitions       the metrics SageMaker can read from its jobs' logs (name + regex)
    several_hosts            whether train() runs on every host of a job of several (`collective`)

Training: `train(hp, data, metrics=..., callbacks=...)` returns a `Model`. Mini-batch algorithms
derive from `StreamingAlgorithm` and only say how to start a `StreamingState`; the shared driver
(`training.py`) runs the passes. An algorithm that drives its own loop overrides `train` and
still reports through the `MetricWriter` it is given.

Models: `predict(Batch) -> {output name: array}` and `save(dir)`; the algorithm loads them back
from `ModelFiles` (model_files.py), read once by whoever needs the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from .batch import Batch
from .checkpoints import StateArrays, StateMetadata
from .data import TrainingData
from .errors import UserError
from .formats.content_types import RECORDIO_PROTOBUF
from .formats.mxnet_checkpoint import MXNetCheckpoint
from .hyperparameters import Schema
from .metrics import Metric, MetricDefinition, MetricWriter
from .model_files import METADATA_FILE, ModelFiles
from .training import TrainingCallback, train_streaming

# A parsed hyperparameter set, by canonical name (Schema.parse's result).
Hyperparameters = dict[str, Any]
# The arrays of an MXNet NDArray file, as AWS's built-in images save models: a list, or a dict.
AWSArrays = list[np.ndarray] | dict[str, np.ndarray]


@runtime_checkable
class Model(Protocol):
    """A trained model: predicts named outputs for a batch, saves itself to a directory."""

    @property
    def feature_dim(self) -> int:
        """The number of features every input row must have."""
        ...

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        """One entry per output name, each with one row per input row (1-D for a scalar per
        row, 2-D for a vector). Raises UserError for a batch of the wrong width."""
        ...

    def save(self, model_dir: Path) -> None:
        """Write the model's files into `model_dir` (model_files.save_model_files)."""
        ...


class Scorer(Protocol):
    """Accumulates a metric over a channel, batch by batch (test and validation scoring)."""

    def add(self, batch: Batch) -> None:
        """Take one non-empty batch into account."""
        ...

    def metrics(self) -> list[Metric]:
        """The metrics over every batch added; empty when no row was added."""
        ...


class StreamingState(Protocol):
    """What a mini-batch algorithm keeps between batches (init / update / finalize)."""

    def update(self, batch: Batch) -> None:
        """Consume one non-empty mini-batch."""
        ...

    def end_epoch(self) -> list[Metric]:
        """The train metrics of the pass that just ended (logged with its epoch number)."""
        ...

    def current_model(self) -> Model:
        """The model as it stands after a pass, which the driver scores on the validation
        channel (a Model, or whatever the algorithm's scorer takes: linear learner's candidates,
        all of its models at once)."""
        ...

    def finalize(self) -> tuple[Model, list[Metric]]:
        """The model, and train metrics that only the finished model can give."""
        ...


@runtime_checkable
class CheckpointableState(Protocol):
    """A StreamingState that can be checkpointed at the end of a pass (checkpoints.py): the
    states of the algorithms whose `state_checkpoints` is true have these two methods. A state
    without them is not checkpointed (the default: StreamingAlgorithm.state_checkpoints False)."""

    def checkpoint_arrays(self) -> tuple[StateArrays, StateMetadata]:
        """The state at the end of a pass (after `end_epoch` and the validation scoring): its
        arrays by name (letters, digits, _) and small JSON-able values. They may be the state's own
        arrays: the driver writes them before the state changes again."""
        ...

    def restore_checkpoint(self, arrays: StateArrays, metadata: StateMetadata) -> None:
        """Make a fresh state (start()) the one checkpoint_arrays gave; CheckpointMismatch
        (checkpoints.take_array) for an array or value that does not fit, before changing
        anything: never half-restored."""
        ...


@dataclass(frozen=True)
class Output:
    """One named output of predict(): a scalar per row, a vector per row, or (vector None)
    either, by the model (linear learner's score: a vector of class probabilities for a
    multiclass classifier). A model may give a subset of its algorithm's outputs (a linear
    learner regressor gives no predicted_label)."""

    name: str
    vector: bool | None = False


@dataclass(frozen=True)
class SampleJob:
    """A small job that exercises an algorithm: the cache warm-up trains it in every input form
    and mode, the image checks train and serve it, the demo and the serve tests use it.

    hyperparameters: for data with `feature_dim` features; the feature count hyperparameter
        itself is filled in by `hyperparameters_for`.
    variants: hyperparameter overrides that select other kernels (each trained by the warm-up).
    bad_hyperparameter: (name, value) that the job must refuse, naming the hyperparameter.
    content_type: how the demo hands it the sample (CSV or RecordIO-protobuf).
    labelled: whether its training data carry a label.
    """

    hyperparameters: Mapping[str, str]
    bad_hyperparameter: tuple[str, str]
    variants: Sequence[Mapping[str, str]] = ()
    content_type: str = RECORDIO_PROTOBUF
    labelled: bool = False

    def hyperparameters_for(
        self, algorithm: Algorithm, feature_dim: int, variant: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The sample's hyperparameters (plus `variant`) for data of `feature_dim` features, as
        SageMaker writes them: every value a string."""
        values = dict(self.hyperparameters)
        if algorithm.feature_dim_hyperparameter:
            values[algorithm.feature_dim_hyperparameter] = str(feature_dim)
        values.update(variant or {})
        return values


class Algorithm(ABC):
    """One algorithm: its declared facts (class attributes) and how it trains and loads.

    Subclasses set every attribute below that has no default and implement `train` (or derive
    from StreamingAlgorithm) and `load_model`."""

    name: ClassVar[str]
    title: ClassVar[str]
    hyperparameters: ClassVar[Schema]
    channels: ClassVar[Mapping[str, bool]] = {"train": True, "test": False}
    content_types: ClassVar[tuple[str, ...]]
    default_content_type: ClassVar[str] = RECORDIO_PROTOBUF
    outputs: ClassVar[tuple[Output, ...]]
    json_response_key: ClassVar[str] = "predictions"
    model_files: ClassVar[tuple[str, ...]]
    # NaN and infinities in training data: refused (naming file, record and feature), or passed
    # on for the algorithm to read as missing values.
    finite_values_only: ClassVar[bool] = True
    # RecordIO-protobuf training data: Float32 tensors only, a Float64 or Int32 tensor refused
    # naming the record (AWS's factorization machines), or every tensor type read as float32.
    float32_tensors_only: ClassVar[bool] = False
    # Why these content types alone, said when a channel's ContentType is refused ("" says nothing).
    content_types_note: ClassVar[str] = ""
    has_gpu_path: ClassVar[bool] = False
    # The hyperparameter that states the number of features (checked once against the data).
    feature_dim_hyperparameter: ClassVar[str | None] = "feature_dim"
    sample_job: ClassVar[SampleJob]
    # Models saved in the algorithm's own file format instead of model.json + .npy (XGBoost's
    # `xgboost-model`, written by Booster.save_model, so that AWS's image and ours read each
    # other's models): glob patterns of the file names that mark such a model directory, read by
    # `load_native_model`. Empty: every model has a model.json.
    native_model_files: ClassVar[tuple[str, ...]] = ()
    # A CSV or RecordIO request may have this many fewer features than the model (AWS's XGBoost
    # image allows one fewer: a model trained on LIBSVM with one-based indices has an empty
    # feature 0 that CSV requests leave out). 0: exactly the model's features.
    fewer_request_features: ClassVar[int] = 0
    # Whether train() takes `checkpoint_dir`, the job's checkpointconfig.json LocalPath (XGBoost
    # writes xgboost-checkpoint.<i> there and resumes from the newest).
    resumes_from_checkpoints: ClassVar[bool] = False
    # CSV answers: a vector output as one quoted cell, "[0.1, 0.9]", as AWS's XGBoost image writes
    # its selectable outputs; otherwise one cell per number.
    csv_vectors_quoted: ClassVar[bool] = False
    # An empty request body: 204 No Content, as AWS's XGBoost image answers it; otherwise a 400
    # naming the problem.
    empty_request_no_content: ClassVar[bool] = False
    # The metrics SageMaker can read from this algorithm's job logs, for CloudWatch and Automatic
    # Model Tuning: the platform's names ("test:msd") and regexes (metrics.py's *_definition) that
    # match the lines its jobs print. `smalgo metric-definitions` and smalgo.sagemaker publish them.
    metric_definitions: ClassVar[tuple[MetricDefinition, ...]] = ()
    # Whether train() runs on every host of a job of several (resourceconfig.json's hosts) and
    # takes the job's `collective` (runtime/collective.py): a StreamingAlgorithm's state then has
    # `combine(collective)` and its scorers `combine(collective)` (training.py); a state that
    # exchanges within a pass too (linear learner fits its scaler on every host's first rows) also
    # has `join(collective)`, called before the first pass. Without it a job of several hosts is
    # refused, naming the algorithm.
    several_hosts: ClassVar[bool] = False

    def validate(self, hp: Hyperparameters) -> None:  # noqa: B027 (an optional hook, deliberately empty here)
        """Checks that involve several hyperparameters, before any data is read; UserError
        naming them. `hp` is Schema.parse's result. This default checks nothing (a deliberate
        no-op): an algorithm whose hyperparameters are independent need not override it."""

    def feature_dim(self, hp: Hyperparameters) -> int | None:
        """The number of features the data must have, when the hyperparameters say it."""
        if self.feature_dim_hyperparameter is None:
            return None
        return int(hp[self.feature_dim_hyperparameter])

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(output.name for output in self.outputs)

    @abstractmethod
    def train(
        self,
        hp: Hyperparameters,
        data: TrainingData,
        *,
        metrics: MetricWriter | None = None,
        callbacks: Iterable[TrainingCallback] = (),
    ) -> Model:
        """Train on `data`'s channels with validated hyperparameters; report through `metrics`
        (a writer for this host, algo-1, by default)."""

    @abstractmethod
    def load_model(self, files: ModelFiles) -> Model:
        """The model saved in `files` (already read and checked to be this algorithm's); UserError
        naming the file for a format version it does not read or an array that does not fit."""

    def from_aws_arrays(self, arrays: AWSArrays, *, source: str) -> Model | None:
        """The model that AWS's built-in image of this algorithm saved as `arrays` (its
        model_algo-1, an MXNet NDArray list or dict: aws_models.py), or None when they are not
        that image's layout; UserError naming `source` for its layout with arrays that do not fit.
        None by default: no AWS model of this algorithm is read."""
        return None

    def to_aws_arrays(self, model: Model) -> AWSArrays:
        """`model` as the arrays AWS's built-in image saves in model_algo-1."""
        raise UserError(f"{self.title} models have no AWS model_algo-1 form in smalgo.")

    def from_aws_checkpoint(self, checkpoint: MXNetCheckpoint, *, source: str) -> Model | None:
        """The model that AWS's built-in image of this algorithm saved as the MXNet module
        checkpoint `checkpoint` (model_algo-1 as a zip: linear learner, factorization machines;
        formats/mxnet_checkpoint.py), or None when its parameters are not that image's; UserError
        naming `source` for that image's parameters that do not fit. None by default."""
        return None

    def to_aws_checkpoint(self, model: Model) -> MXNetCheckpoint:
        """`model` as the module checkpoint AWS's built-in image zips into model_algo-1 (for the
        algorithms whose model_algo-1 is a zip; the others have to_aws_arrays)."""
        raise UserError(f"{self.title} models have no AWS module-checkpoint form in smalgo.")

    def load_native_model(self, model_dir: Path) -> Model:
        """The model saved in `model_dir` in the algorithm's own format (native_model_files)."""
        raise UserError(f"{model_dir} holds no model.json, and {self.name} models always have one.")

    def holds_native_model(self, model_dir: Path) -> bool:
        """Whether `model_dir` has no model.json and a file named as native_model_files says."""
        model_dir = Path(model_dir)
        if not self.native_model_files or (model_dir / METADATA_FILE).exists() or not model_dir.is_dir():
            return False
        return any(any(model_dir.glob(pattern)) for pattern in self.native_model_files)

    def load(self, model_dir: str | Path) -> Model:
        """The model saved in `model_dir` by this algorithm (reads model.json once, or the
        algorithm's own files)."""
        if self.holds_native_model(Path(model_dir)):
            return self.load_native_model(Path(model_dir))
        files = ModelFiles.read(Path(model_dir))
        files.expect_algorithm(self.name)
        return self.load_model(files)


class StreamingAlgorithm(Algorithm):
    """A mini-batch algorithm: a state updated batch by batch, pass after pass, then finalised
    into a model. The shared driver (training.py) runs the passes, the metric lines and the
    validation and test scoring."""

    def epochs(self, hp: Hyperparameters) -> int:
        """Passes over the train channel."""
        return int(hp.get("epochs", 1))

    def batch_rows(self, hp: Hyperparameters) -> int:
        """Rows per mini-batch handed to `StreamingState.update`."""
        return int(hp["mini_batch_size"])

    # The shared driver takes the job's checkpoint directory (and says so when it does not use it).
    resumes_from_checkpoints = True
    # Whether start()'s state is a CheckpointableState: the driver then writes it after every pass
    # into the job's checkpoint directory and resumes from the newest one (checkpoints.py).
    state_checkpoints: ClassVar[bool] = False
    # The same on several hosts: only when the first host's checkpoint after `combine` is every
    # host's (PCA's sums, the averaged models of FM and linear learner; k-means's holds every
    # host's own streaming centers, by rank).
    state_checkpoints_on_several_hosts: ClassVar[bool] = False

    @abstractmethod
    def start(self, hp: Hyperparameters) -> StreamingState:
        """A fresh training state."""

    @abstractmethod
    def scorer(self, model: Model, hp: Hyperparameters, channel: str) -> Scorer:
        """Scores `model` on a test or validation channel."""

    # The shared driver is every mini-batch algorithm's train().
    train = train_streaming


def check_width(batch: Batch, feature_dim: int) -> None:
    """UserError when a batch (a request, or a test channel's rows) has another width than the
    model's; the decoders have already named the file or request."""
    if batch.n_features != feature_dim:
        raise UserError(f"expected {feature_dim} features, got {batch.n_features}")
