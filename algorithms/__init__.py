"""smalgo.algorithms: the data model, input decoders, hyperparameter schemas and the algorithms.

Every algorithm is one module here with the same shape (see ARCHITECTURE.md):

    NAME: str                          registry name ("kmeans", "pca")
    HYPERPARAMETERS: Schema            the declarative schema
    DEFAULT_CONTENT_TYPE: str          used when a channel's ContentType is absent
    CONTENT_TYPES: tuple[str, ...]     accepted training content types (canonical media types)
    CHANNELS: dict[str, bool]          channel name -> required
    validate(hp) -> None               cross-hyperparameter checks, before any data is read
    train(hp, data) -> Model           streams mini-batches from `data` (a TrainingData)
    Model.save(dir) / load_model(dir)  JSON metadata + .npy arrays, never pickle
    Model.predict(Batch) -> dict[str, np.ndarray]   named outputs, one row per input row

This package knows nothing of HTTP or of /opt/ml.
"""
