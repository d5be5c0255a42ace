"""The Flask app: SageMaker's inference HTTP contract (spec section 2.3) over one loaded model.

    GET  /ping                   200 once the model is loaded (it is loaded before the app exists)
    GET  /execution-parameters   batch transform settings
    POST /invocations            decode by Content-Type, predict, encode by Accept

A request the server cannot serve gets a 4xx whose JSON body names the problem and where it is;
nothing a client sends causes a 500, and a 500 (a bug) logs its traceback. Either way the
worker goes on serving.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import BinaryIO

from flask import Flask, Response, request
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from smalgo.algorithms.errors import UserError
from smalgo.recordio import RecordIOError

from .decoding import decode_request
from .encoding import encode_response
from .errors import BAD_REQUEST, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, RequestError
from .media import request_media_type, response_media_type
from .model import LoadedModel, load_model
from .settings import ServerSettings
from .worker import DRAIN_FACTOR, SpilledBody

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json"
_READ_BYTES = 1 << 20


def create_app(model_dir: str | Path | None = None, settings: ServerSettings | None = None) -> Flask:
    """Load and check the model (ModelError if it cannot be served), warm it up, and return
    the app. `settings` default to the environment's; `model_dir` overrides theirs."""
    settings = settings or ServerSettings.from_environment(model_dir)
    model = load_model(model_dir if model_dir is not None else settings.model_dir, settings.expected_algorithm)
    app = Flask(__name__)
    app.extensions["smalgo.model"] = model

    execution_parameters = json.dumps(
        {
            "MaxConcurrentTransforms": settings.max_concurrent_transforms,
            "BatchStrategy": settings.batch_strategy,
            "MaxPayloadInMB": settings.max_payload_mb,
        }
    )

    @app.get("/ping")
    def ping():
        # The model was loaded and warmed before the app was made: nothing is left to check.
        return Response(status=200)

    @app.get("/execution-parameters")
    def get_execution_parameters():
        return Response(execution_parameters, status=200, content_type=JSON_TYPE)

    def invocation(environ: dict) -> tuple[int, bytes, str | None]:
        """POST /invocations: (status, body, Content-Type)."""
        try:
            # The body is read before the headers are judged: a refused request then leaves
            # nothing unread, and its keep-alive connection can carry the next one (gunicorn
            # closes it when more than 64 KiB of a body are left on the socket).
            body = read_body(environ, settings)
            if body == b"" and model.algorithm.empty_request_no_content:
                return 204, b"", None
            answer, content_type = invoke(
                model, settings, content_type=environ.get("CONTENT_TYPE"), accept=environ.get("HTTP_ACCEPT"), body=body
            )
        except RequestError as exc:
            return exc.status, error_body(exc.status, exc.message), JSON_TYPE
        return 200, answer, content_type

    @app.post("/invocations")
    def invocations():
        # InvocationsFirst answers POST /invocations before Flask sees it; the route is here for
        # Flask's own dispatch (app.test_request_context, other methods answered 405).
        status, body, content_type = invocation(request.environ)
        return Response(body, status=status, content_type=content_type)

    app.wsgi_app = InvocationsFirst(app.wsgi_app, invocation)  # type: ignore[method-assign]

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Unknown paths and methods: JSON like every other answer, not Werkzeug's HTML page.
        return error_response(exc.code or 500, f"{request.method} {request.path}: {exc.description}")

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        logger.exception("Internal error on %s %s", request.method, request.path)
        return error_response(
            500, f"Internal server error ({type(exc).__name__}); the traceback is in the server's log."
        )

    return app


def invoke(
    model: LoadedModel,
    settings: ServerSettings,
    *,
    content_type: str | None,
    accept: str | None,
    body: bytes | BinaryIO,
) -> tuple[bytes, str]:
    """One /invocations request: (response body, its Content-Type), or RequestError. `body`: the
    bytes, or a file holding them (a body the worker spilled to disk, read from its start)."""
    media_type = request_media_type(content_type)
    answer_type = response_media_type(accept, settings.default_accept)
    if body == b"":
        raise RequestError(BAD_REQUEST, f"The request body is empty; send at least one record as {media_type}.")
    try:
        batch = decode_request(
            body,
            media_type,
            model.feature_dim,
            finite_values_only=model.algorithm.finite_values_only,
            fewer_features=model.algorithm.fewer_request_features,
        )
        outputs = model.predict(batch)
        del batch  # a large request's rows go before its answer is written
    except (UserError, RecordIOError, ValueError) as exc:
        # Decoders raise RequestError for everything they know of; this is the model refusing
        # a batch it was given, which is still about the request.
        raise RequestError(
            BAD_REQUEST, f"The {model.algorithm.name} model cannot score this {media_type} request: {exc}"
        ) from None
    return encode_response(
        outputs,
        answer_type,
        json_key=model.algorithm.json_response_key,
        batch_mode=settings.batch_mode,
        csv_vectors_quoted=model.algorithm.csv_vectors_quoted,
    )


def read_body(environ: dict, settings: ServerSettings) -> bytes | BinaryIO:
    """The request body, or RequestError: 413 past the payload limit, 400 for a body that breaks
    HTTP's framing (a malformed chunk, a body that ends before its Content-Length or its last
    chunk: the part that arrived is never scored), 415 for a Content-Encoding other than identity
    (a compressed body read as plain text would be garbage, not an error). Read from the WSGI
    stream directly: Werkzeug's wrappers cost more than a small request's decoding, and its limit
    on chunked bodies truncates them silently instead of refusing them. A body the worker spilled
    to a file (worker.SPILL_BYTES) is that file, for the decoders to read in pieces: never a
    bytes object of hundreds of MB beside the rows decoded from it."""
    stream = environ["wsgi.input"]
    try:
        if isinstance(stream, SpilledBody):
            body: bytes | BinaryIO = _spilled_body(stream, environ, settings)
        else:
            body = _read_framed_body(environ, settings)
    except NoMoreData:
        raise _chunks_incomplete() from None
    except ParseException as exc:
        raise _chunks_malformed(str(exc)) from None
    encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestError(
            UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r} is not supported; send the body "
            f"uncompressed (no Content-Encoding, or identity).",
        )
    return body


def _read_framed_body(environ: dict, settings: ServerSettings) -> bytes:
    stream = environ["wsgi.input"]
    limit = settings.max_payload_bytes
    length = environ.get("CONTENT_LENGTH", "").strip()
    if length:
        if not length.isdigit():
            raise RequestError(BAD_REQUEST, f"Content-Length {length!r} is not a number of bytes.")
        if int(length) > limit:
            if int(length) <= DRAIN_FACTOR * limit:
                _discard(stream, int(length))  # so that the connection stays usable
            raise _too_large(settings, f" ({int(length):,} bytes)")
        body = stream.read(int(length))
        if len(body) < int(length):
            raise _length_incomplete(int(length), len(body))
        return body
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length, and a server that does not end the stream for us: nothing to read safely
    # Chunked: read one byte past the limit to know whether the body goes past it.
    parts, size = [], 0
    while size <= limit:
        part = stream.read(min(limit + 1 - size, _READ_BYTES))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        _discard(stream, (DRAIN_FACTOR - 1) * limit)
        raise _too_large(settings, "")
    return b"".join(parts)


def _spilled_body(body: SpilledBody, environ: dict, settings: ServerSettings) -> BinaryIO:
    """The file of a body the worker wrote to disk as it came, checked as _read_framed_body
    checks the bytes it reads (the worker noted what broke the framing, and counted the bytes past
    the limit without keeping them)."""
    length = environ.get("CONTENT_LENGTH", "").strip()
    if body.framing_error is not None:
        raise _chunks_malformed(body.framing_error)
    if body.size > settings.max_payload_bytes:
        raise _too_large(settings, f" ({int(length):,} bytes)" if length.isdigit() else "")
    if not body.complete:
        raise _length_incomplete(int(length), body.size) if length.isdigit() else _chunks_incomplete()
    return body.file


def _length_incomplete(length: int, received: int) -> RequestError:
    return RequestError(
        BAD_REQUEST,
        f"The request body is incomplete: Content-Length is {length:,} bytes, "
        f"but the connection ended after {received:,}.",
    )


def _chunks_incomplete() -> RequestError:
    return RequestError(
        BAD_REQUEST,
        "The request body is incomplete: the connection ended inside a chunk or before the last (zero-length) chunk.",
    )


def _chunks_malformed(problem: str) -> RequestError:
    return RequestError(BAD_REQUEST, f"The request body's chunked encoding is malformed: {problem}.")


def _discard(stream, n_bytes: int) -> None:
    while n_bytes > 0:
        part = stream.read(min(n_bytes, _READ_BYTES))
        if not part:
            return
        n_bytes -= len(part)


def _too_large(settings: ServerSettings, size: str) -> RequestError:
    return RequestError(
        PAYLOAD_TOO_LARGE,
        f"The request body{size} is over the {settings.max_payload_mb} MB "
        f"({settings.max_payload_bytes:,}-byte) limit on request bodies "
        f"(SAGEMAKER_MAX_PAYLOAD_IN_MB); split the records over several requests.",
    )


def error_body(status: int, message: str) -> bytes:
    """The JSON body of a refusal (serve/errors.py), logged unless a 500 (logged with its
    traceback already)."""
    if status < 500:
        logger.info("%d: %s", status, message)
    return json.dumps({"error": message, "status": status}).encode()


def error_response(status: int, message: str) -> Response:
    return Response(error_body(status, message), status=status, content_type=JSON_TYPE)


class InvocationsFirst:
    """WSGI in front of Flask that answers POST /invocations itself and hands every other
    request to Flask. Flask's request context, routing and Response objects cost about 40 us a
    request (measured in-process: 112 us for a one-record CSV request through Flask, 53 us for a
    bare Flask app that only reads the body), as much as decoding and scoring the record; the
    endpoint's one hot path does without them. The status lines are Werkzeug's, as Flask's."""

    def __init__(self, flask_app, invocation) -> None:
        self.flask_app = flask_app
        self.invocation = invocation

    def __call__(self, environ: dict, start_response):
        if environ.get("PATH_INFO") != "/invocations" or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_app(environ, start_response)
        try:
            status, body, content_type = self.invocation(environ)
        except Exception as exc:  # a bug: logged with its traceback, answered as Flask's handler does
            logger.exception("Internal error on POST /invocations")
            status = 500
            body = error_body(
                500, f"Internal server error ({type(exc).__name__}); the traceback is in the server's log."
            )
            content_type = JSON_TYPE
        headers = [("Content-Length", str(len(body)))] if status != 204 else []
        if content_type:
            headers.append(("Content-Type", content_type))
        start_response(_STATUS_LINES[status], headers)
        return [body]


_STATUS_LINES = {code: f"{code} {phrase.upper()}" for code, phrase in HTTP_STATUS_CODES.items()}
