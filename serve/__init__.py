"""smalgo.serve: the inference server, SageMaker's HTTP contract for an inference container.

    from smalgo.serve import create_app, serve
    app = create_app("/opt/ml/model")    # a Flask app; the model is loaded, checked and warmed
    serve()                              # gunicorn on 0.0.0.0:${SAGEMAKER_BIND_TO_PORT:-8080}

Modules: settings (environment), media (Content-Type / Accept), decoding and json_instances
(request bodies -> Batch), encoding (outputs -> response bodies), model (loading, warm-up),
app (the Flask routes), server (gunicorn).
"""

from .app import create_app
from .errors import RequestError
from .model import LoadedModel, ModelError, load_model
from .server import main, serve
from .settings import ServerSettings, SettingsError

__all__ = [
    "LoadedModel",
    "ModelError",
    "RequestError",
    "ServerSettings",
    "SettingsError",
    "create_app",
    "load_model",
    "main",
    "serve",
]
